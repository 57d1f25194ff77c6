package harness

import (
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

// fileLock is an exclusive flock held on a lock file while ppkit changes a shared directory
// (a work tree, a build directory); it is released when the process dies.
type fileLock struct{ f *os.File }

func lockFile(path string, progress io.Writer) (*fileLock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if progress != nil {
			fmt.Fprintf(progress, "waiting for another ppkit holding %s\n", path)
		}
		start := time.Now()
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if progress != nil {
			fmt.Fprintf(progress, "got %s after %s\n", path, time.Since(start).Round(time.Second))
		}
	}
	return &fileLock{f: f}, nil
}

func (l *fileLock) Unlock() {
	if l != nil && l.f != nil {
		unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
		l.f.Close()
		l.f = nil
	}
}
