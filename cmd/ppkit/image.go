package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ppkit/ppkit/harness"
)

func init() {
	register(&command{name: "image", summary: "build the guest initramfs (busybox, dropbear, iperf) from Debian arm64 packages", run: runImage})
}

func runImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "build" {
		return usageErrorf("usage: ppkit image build")
	}
	fs := newFlagSet("image build", stderr)
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("image build: unexpected argument %q", fs.Arg(0))
	}
	img, err := harness.BuildImage(ctx, harness.ImageOptions{Progress: stderr})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, img.Initramfs)
	return nil
}
