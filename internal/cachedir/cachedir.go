// Package cachedir is ppkit's on-disk cache: where it is (Root) and the lock that guards a
// directory in it while one process changes it (Lock). It is a leaf: every package that keeps
// files between runs (stgit's tests, harness, mvneta-emu, tests, ci) reads the one root and
// takes the one kind of lock from here, whatever its place in the data flow.
package cachedir

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Root returns ppkit's cache root: $PPKIT_CACHE if set, else $XDG_CACHE_HOME/ppkit, else
// ~/.cache/ppkit.
func Root() (string, error) {
	if d := os.Getenv("PPKIT_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cache dir: %w (set PPKIT_CACHE)", err)
	}
	return filepath.Join(d, "ppkit"), nil
}

// FileLock is an exclusive flock held on a lock file while ppkit changes a shared directory
// (a work tree, a build directory, a cache entry); the kernel releases it when the process dies.
type FileLock struct{ f *os.File }

// Lock takes the exclusive flock on path, creating the file. While another process holds it,
// it says so once on progress and polls, so that cancelling ctx ends the wait.
func Lock(ctx context.Context, path string, progress io.Writer) (*FileLock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	start, told := time.Now(), false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			if told && progress != nil {
				fmt.Fprintf(progress, "got %s after %s\n", path, time.Since(start).Round(time.Second))
			}
			return &FileLock{f: f}, nil
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !told && progress != nil {
			fmt.Fprintf(progress, "waiting for another ppkit holding %s\n", path)
		}
		told = true
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Unlock releases the lock; it is safe to call more than once.
func (l *FileLock) Unlock() {
	if l != nil && l.f != nil {
		unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
		l.f.Close()
		l.f = nil
	}
}
