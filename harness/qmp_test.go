package harness

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// qmpPeer is the QEMU end of a QMP socket, scripted: it greets, accepts qmp_capabilities and
// answers each later command with reply(cmd) (nil: never answer).
func qmpPeer(t *testing.T, reply func(cmd string, w *bufio.Writer)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		w := bufio.NewWriter(c)
		w.WriteString(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}` + "\r\n")
		w.Flush()
		// QMP is a JSON stream: commands carry no newline.
		dec := json.NewDecoder(c)
		for {
			var req struct {
				Execute string `json:"execute"`
			}
			if err := dec.Decode(&req); err != nil {
				return
			}
			if req.Execute == "qmp_capabilities" {
				w.WriteString(`{"return": {}}` + "\r\n")
				w.Flush()
				continue
			}
			reply(req.Execute, w)
			w.Flush()
		}
	}()
	return sock
}

func TestQMPEventBeforeReplyDoesNotBlock(t *testing.T) {
	sock := qmpPeer(t, func(cmd string, w *bufio.Writer) {
		// QEMU sends the POWERDOWN event before system_powerdown's reply: an undrained event
		// channel would block go-qemu here.
		w.WriteString(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}` + "\r\n")
		w.WriteString(`{"return": {"status": "running", "running": true}}` + "\r\n")
	})
	c, err := dialQMP(sock, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	for i := 0; i < 3; i++ {
		st, err := c.status(2 * time.Second)
		if err != nil || st != "running" {
			t.Fatalf("status #%d = %q, %v", i, st, err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(c.eventNames()) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := c.eventNames(); len(got) != 3 || got[0] != "POWERDOWN" {
		t.Errorf("events %v, want 3 POWERDOWN", got)
	}
}

func TestQMPTimeoutBreaksTheMonitor(t *testing.T) {
	asked := make(chan string, 1)
	sock := qmpPeer(t, func(cmd string, w *bufio.Writer) { asked <- cmd }) // never answers
	c, err := dialQMP(sock, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	start := time.Now()
	_, err = c.run("query-status", nil, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no reply within") {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("timeout took %s", time.Since(start))
	}
	if got := <-asked; got != "query-status" {
		t.Errorf("peer got %q", got)
	}
	// A late reply would answer the wrong command: the monitor refuses further use.
	if _, err := c.run("stop", nil, time.Second); err == nil || !strings.Contains(err.Error(), "unusable") {
		t.Errorf("second command: err = %v, want the monitor marked unusable", err)
	}
}

func TestQMPNoGreeting(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			time.Sleep(3 * time.Second)
			c.Close()
		}
	}()
	if _, err := dialQMP(sock, 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "no greeting") {
		t.Errorf("err = %v, want no greeting", err)
	}
}
