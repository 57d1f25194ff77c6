package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/ppkit/ppkit/internal/cachedir"
)

// cacheAndProgress fills in the defaults of an entry point's options: the cache root
// (cachedir.Root()) and a progress writer that discards.
func cacheAndProgress(cache string, progress io.Writer) (string, io.Writer, error) {
	if progress == nil {
		progress = io.Discard
	}
	if cache == "" {
		var err error
		if cache, err = cachedir.Root(); err != nil {
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
