package harness

import (
	"context"

	"github.com/ppkit/ppkit/stgit"
)

// SeriesBuilder is the stgit.Builder of `ppkit series check` and `ppkit ci`: after patch N of
// the check it builds the first N patches of Kernel.Series with BuildKernel (Upto: N). That is
// the tree content the check's work tree has, built with the arm64 config ppkit boots and
// through the harness's own work tree and cache, so that builds stay incremental from patch to
// patch and from run to run, a prefix built before is never rebuilt, and the build of the whole
// series is the kernel `ppkit test` boots.
type SeriesBuilder struct {
	// Kernel says what to build; Series must be set, Upto is set per patch.
	Kernel KernelOptions
}

var _ stgit.Builder = (*SeriesBuilder)(nil)

// Build implements stgit.Builder. The check's own work tree is not built: its content is the
// series prefix the harness applies to the same base.
func (b *SeriesBuilder) Build(ctx context.Context, _ string, patch stgit.Patch) error {
	o := b.Kernel
	o.Upto = patch.Index
	_, err := BuildKernel(ctx, o)
	return err
}
