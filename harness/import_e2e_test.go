//go:build e2e

package harness

import (
	"context"
	"testing"

	"github.com/ppkit/ppkit/stgit"
)

// The harness's import of linux-source-5.10 is the commit patches/series says it applies on,
// on every machine (patches/README.md's recipe).
func TestTarballImportIsTheSeriesBase(t *testing.T) {
	s, err := stgit.ReadSeries("../patches/series")
	if err != nil {
		t.Fatal(err)
	}
	src, err := tarballKernelSource(context.Background(), t.TempDir(), DefaultKernelTarball, nil)
	if err != nil {
		t.Fatal(err)
	}
	if src.commit != s.Base {
		t.Fatalf("import commit %s, the series applies on %s", src.commit, s.Base)
	}
}
