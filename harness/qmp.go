package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// qmpClient wraps go-qemu's socket monitor with what it lacks: a timeout on every command, a
// goroutine that always drains events (an undrained event channel blocks command replies), and a
// "broken" state after a timeout, because a late reply would otherwise answer the next command.
type qmpClient struct {
	mon *qmp.SocketMonitor

	mu     sync.Mutex
	broken error
	events []qmp.Event
	done   chan struct{}
}

func dialQMP(socket string, timeout time.Duration) (*qmpClient, error) {
	mon, err := qmp.NewSocketMonitor("unix", socket, timeout)
	if err != nil {
		return nil, fmt.Errorf("qmp dial %s: %w", socket, err)
	}
	connected := make(chan error, 1)
	go func() { connected <- mon.Connect() }()
	select {
	case err := <-connected:
		if err != nil {
			return nil, fmt.Errorf("qmp handshake: %w", err)
		}
	case <-time.After(timeout):
		mon.Disconnect()
		return nil, fmt.Errorf("qmp handshake: no greeting within %s", timeout)
	}
	c := &qmpClient{mon: mon, done: make(chan struct{})}
	events, _ := mon.Events(nil)
	go func() {
		defer close(c.done)
		for e := range events {
			c.mu.Lock()
			if len(c.events) < 1000 {
				c.events = append(c.events, e)
			}
			c.mu.Unlock()
		}
	}()
	return c, nil
}

// run executes one QMP command (with optional arguments) and returns its "return" value.
func (c *qmpClient) run(command string, args any, timeout time.Duration) (json.RawMessage, error) {
	c.mu.Lock()
	broken := c.broken
	c.mu.Unlock()
	if broken != nil {
		return nil, fmt.Errorf("qmp %s: monitor unusable after an earlier failure: %w", command, broken)
	}
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	type result struct {
		out []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		out, err := c.mon.Run(raw)
		ch <- result{out, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, r.err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
		}
		if err := json.Unmarshal(r.out, &resp); err != nil {
			return nil, fmt.Errorf("qmp %s: reply %q: %w", command, r.out, err)
		}
		return resp.Return, nil
	case <-time.After(timeout):
		err := fmt.Errorf("qmp %s: no reply within %s", command, timeout)
		c.mu.Lock()
		c.broken = err
		c.mu.Unlock()
		return nil, err
	}
}

// status returns the VM run state ("running", "paused", "shutdown", ...).
func (c *qmpClient) status(timeout time.Duration) (string, error) {
	out, err := c.run("query-status", nil, timeout)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", fmt.Errorf("qmp query-status: %w", err)
	}
	return st.Status, nil
}

// eventNames returns the names of the events seen so far, oldest first.
func (c *qmpClient) eventNames() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, len(c.events))
	for i, e := range c.events {
		names[i] = e.Event
	}
	return names
}

func (c *qmpClient) close() {
	c.mu.Lock()
	if c.broken == nil {
		c.broken = errors.New("monitor closed")
	}
	c.mu.Unlock()
	done := make(chan struct{})
	go func() { c.mon.Disconnect(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}
