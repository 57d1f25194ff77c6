package harness

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConsoleBufferWaitFor(t *testing.T) {
	file, err := os.Create(filepath.Join(t.TempDir(), "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	var live bytes.Buffer
	c := newConsoleBuffer(file, &live)
	exited := make(chan struct{})
	go func() {
		c.write([]byte("[    0.1] booting\nppkit: gu"))
		time.Sleep(20 * time.Millisecond)
		c.write([]byte("est ready after 0.9s\n")) // the marker arrives split across reads
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.waitFor(ctx, []byte(ReadyMarker), exited); err != nil {
		t.Fatalf("waitFor: %v", err)
	}
	c.close()
	data, _ := os.ReadFile(file.Name())
	if !strings.Contains(string(data), "ppkit: guest ready") || live.String() != string(data) {
		t.Errorf("file %q, live %q", data, live.String())
	}
	if err := c.waitFor(ctx, []byte("never"), exited); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("after close: err = %v, want QEMU exited", err)
	}

	c2 := newConsoleBuffer(nil, nil)
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if err := c2.waitFor(short, []byte("never"), make(chan struct{})); err != context.DeadlineExceeded {
		t.Errorf("deadline: err = %v", err)
	}
}
