package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ppkit/ppkit/stgit"
)

// CheckBuilder is the stgit.Builder of `ppkit series check`: it builds the checked tree after each
// patch with ppkit's own kernel config (tinyconfig + harness/config), out of tree and
// incrementally, in a build directory of the cache keyed by the tree and the config. The tree
// itself is only read.
type CheckBuilder struct {
	Debug    bool
	Jobs     int
	Cache    string    // default CacheDir()
	Progress io.Writer // nil: discarded
}

var _ stgit.Builder = (*CheckBuilder)(nil)

// Build implements stgit.Builder.
func (b *CheckBuilder) Build(ctx context.Context, tree string, patch stgit.Patch) error {
	progress := b.Progress
	if progress == nil {
		progress = io.Discard
	}
	cache := b.Cache
	if cache == "" {
		var err error
		if cache, err = CacheDir(); err != nil {
			return err
		}
	}
	abs, err := filepath.Abs(tree)
	if err != nil {
		return err
	}
	fragment := KernelConfigFragment(b.Debug)
	sum := sha256.Sum256(append([]byte(kernelRecipe+"\x00"+abs+"\x00"), fragment...))
	dir := filepath.Join(cache, "build", "check-"+filepath.Base(abs)+"-"+hex.EncodeToString(sum[:])[:16])
	lock, err := lockFile(dir+".lock", progress)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "ppkit-check.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	kb := &kernelBuild{ctx: ctx, work: abs, dir: dir, cache: cache, jobs: b.Jobs, log: logf, progress: progress}
	if err := kb.configure(fragment); err != nil {
		return fmt.Errorf("build after patch %d %s: %w (log: %s)", patch.Index, patch.Name, err, logf.Name())
	}
	fmt.Fprintf(progress, "kernel: building after patch %d %s\n", patch.Index, patch.Name)
	if err := kb.make("Image"); err != nil {
		return fmt.Errorf("build after patch %d %s: %w (log: %s)", patch.Index, patch.Name, err, logf.Name())
	}
	return nil
}
