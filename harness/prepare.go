package harness

import (
	"context"
	"fmt"
	"io"

	mvnetaemu "github.com/ppkit/ppkit/mvneta-emu"
)

// A board is assembled one way: Spec says what it is made of, Build builds (or finds in the
// cache) each part, Prepare builds and boots. `ppkit boot`, `ppkit test`, `ppkit bench` and
// `ppkit ci` all go through them.

// Spec is what a board is made of.
type Spec struct {
	Kernel KernelOptions
	Image  ImageOptions
	// Boot is how the board boots: memory, NICs, command line, timeouts. Build sets its Kernel
	// and Image; an empty QEMU means the QEMU with the mvneta model (package mvnetaemu).
	Boot BootOptions
	// Progress goes to each step whose own Progress is nil.
	Progress io.Writer
}

// Build builds what is missing of the board — the mvneta QEMU, the kernel, the guest image,
// each cached by the hash of its inputs — and returns the boot options with all three set.
func Build(ctx context.Context, s Spec) (BootOptions, error) {
	progress := func(w io.Writer) io.Writer {
		if w != nil {
			return w
		}
		return s.Progress
	}
	bo := s.Boot
	if bo.QEMU == "" {
		qemu, err := mvnetaemu.Binary(ctx, mvnetaemu.Options{Progress: progress(nil)})
		if err != nil {
			return bo, fmt.Errorf("mvneta QEMU: %w", err)
		}
		bo.QEMU = qemu
	}
	ko := s.Kernel
	ko.Progress = progress(ko.Progress)
	k, err := BuildKernel(ctx, ko)
	if err != nil {
		what := "Debian's linux-source-5.10"
		if ko.Tree != "" {
			what = ko.Tree
		}
		if ko.Series != "" {
			what += " with the series " + ko.Series
		}
		return bo, fmt.Errorf("kernel (%s): %w", what, err)
	}
	im := s.Image
	im.Progress = progress(im.Progress)
	img, err := BuildImage(ctx, im)
	if err != nil {
		return bo, fmt.Errorf("guest image: %w", err)
	}
	bo.Kernel, bo.Image = k, img
	bo.Progress = progress(bo.Progress)
	return bo, nil
}

// Prepare is Build, then Boot: a booted board, connected over SSH, with its test NICs.
func Prepare(ctx context.Context, s Spec) (*VM, error) {
	bo, err := Build(ctx, s)
	if err != nil {
		return nil, err
	}
	return Boot(ctx, bo)
}
