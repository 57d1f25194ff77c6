package cachedir

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRoot(t *testing.T) {
	t.Setenv("PPKIT_CACHE", "rel/cache")
	got, err := Root()
	if err != nil || !filepath.IsAbs(got) || !strings.HasSuffix(got, "/rel/cache") {
		t.Errorf("PPKIT_CACHE=rel/cache: %q, %v; want it made absolute", got, err)
	}
	t.Setenv("PPKIT_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if got, err := Root(); err != nil || got != "/xdg/ppkit" {
		t.Errorf("XDG_CACHE_HOME=/xdg: %q, %v", got, err)
	}
}

// A held lock makes the second taker say it waits and give up when its context ends; once
// released, the lock can be taken again.
func TestLockWaitsAndCancels(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "x.lock")
	first, err := Lock(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var progress strings.Builder
	if _, err := Lock(ctx, path, &progress); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock while held: %v, want the context's deadline", err)
	}
	if !strings.Contains(progress.String(), "waiting for another ppkit holding "+path) {
		t.Errorf("progress %q does not say what it waits for", progress.String())
	}
	first.Unlock()
	first.Unlock() // twice is fine
	again, err := Lock(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	again.Unlock()
}
