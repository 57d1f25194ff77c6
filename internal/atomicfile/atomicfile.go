// Package atomicfile writes a file so that a reader, or a ppkit interrupted halfway, sees the
// old content or the new one, never a part: a temporary file beside it, renamed over it. Every
// file ppkit keeps between runs (stored CI results, mail state, cache stamps) is written so. It is
// a leaf.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes data to path with permissions perm, creating path's directory if needed.
func Write(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), perm)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
