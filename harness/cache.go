package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// CacheDir returns ppkit's cache root: $PPKIT_CACHE if set, else $XDG_CACHE_HOME/ppkit, else
// ~/.cache/ppkit.
func CacheDir() (string, error) {
	if d := os.Getenv("PPKIT_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cache dir: %w (set PPKIT_CACHE)", err)
	}
	return filepath.Join(d, "ppkit"), nil
}

// cacheAndProgress fills in the defaults of an entry point's options: the cache root
// (CacheDir()) and a progress writer that discards.
func cacheAndProgress(cache string, progress io.Writer) (string, io.Writer, error) {
	if progress == nil {
		progress = io.Discard
	}
	if cache == "" {
		var err error
		if cache, err = CacheDir(); err != nil {
			return "", nil, err
		}
	}
	return cache, progress, nil
}

// hasher builds cache keys from labelled parts, so that two different inputs never collide by
// concatenation.
type hasher struct{ h io.Writer }

func newHasher() (*hasher, func() string) {
	h := sha256.New()
	return &hasher{h: h}, func() string { return hex.EncodeToString(h.Sum(nil))[:20] }
}

func (k *hasher) add(label string, data []byte) {
	fmt.Fprintf(k.h, "%s\x00%d\x00", label, len(data))
	k.h.Write(data)
}

// FileLock is an exclusive flock held on a lock file while ppkit changes a shared directory
// (a work tree, a build directory, a cache entry); the kernel releases it when the process dies.
type FileLock struct{ f *os.File }

// LockFile takes the exclusive flock on path, creating the file. While another process holds it,
// it says so once on progress and polls, so that cancelling ctx ends the wait.
func LockFile(ctx context.Context, path string, progress io.Writer) (*FileLock, error) {
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
