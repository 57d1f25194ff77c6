package harness

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
)

// maxConsole bounds the console kept in memory; the file keeps everything.
const maxConsole = 32 << 20

// consoleBuffer collects the serial console: in memory (for the parser and waiters), in a file,
// and optionally to a live writer.
type consoleBuffer struct {
	mu      sync.Mutex
	buf     []byte
	file    *os.File
	live    io.Writer
	changed chan struct{} // closed and replaced on every write
	done    bool
}

func newConsoleBuffer(file *os.File, live io.Writer) *consoleBuffer {
	return &consoleBuffer{file: file, live: live, changed: make(chan struct{})}
}

func (c *consoleBuffer) copyFrom(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			c.write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (c *consoleBuffer) write(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buf)+len(p) <= maxConsole {
		c.buf = append(c.buf, p...)
	}
	if c.file != nil {
		c.file.Write(p)
	}
	if c.live != nil {
		c.live.Write(p)
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *consoleBuffer) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.file != nil {
		c.file.Close()
		c.file = nil
	}
	c.done = true
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *consoleBuffer) bytes() []byte {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.buf...)
}

// waitFor waits until the console contains marker, the guest has exited, or ctx ends.
func (c *consoleBuffer) waitFor(ctx context.Context, marker []byte, exited <-chan struct{}) error {
	for {
		c.mu.Lock()
		found := bytes.Contains(c.buf, marker)
		done := c.done
		changed := c.changed
		c.mu.Unlock()
		if found {
			return nil
		}
		if done {
			return errors.New("QEMU exited")
		}
		select {
		case <-changed:
		case <-exited:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
