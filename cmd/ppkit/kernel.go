package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/stgit"
)

func init() {
	register(&command{name: "kernel", summary: "build the arm64 guest kernel with the series (cached by input hash)", run: runKernel})
}

// kernelFlags are the flags that choose a kernel, shared by kernel build, boot and bench.
type kernelFlags struct {
	tree     string
	series   string
	baseline bool
	upto     int
	debug    bool
	jobs     int
}

func (k *kernelFlags) register(fs *flag.FlagSet) {
	pathFlagVar(fs, &k.tree, "kernel", "", "user kernel git tree to build (read-only; default: git config ppkit.kernel, else Debian's linux-source-5.10)")
	pathFlagVar(fs, &k.series, "series", "", "stg-exported series directory to apply (default: patches/ when it holds a series)")
	fs.BoolVar(&k.baseline, "baseline", false, "build without any series")
	fs.IntVar(&k.upto, "upto", 0, "apply only the first N patches of the series")
	fs.BoolVar(&k.debug, "debug", false, "add KASAN, DEBUG_VM, PAGE_OWNER and lockdep (harness/config/debug.config)")
	fs.IntVar(&k.jobs, "j", 0, "parallel make jobs (default: number of CPUs)")
}

func (k *kernelFlags) options(ctx context.Context, progress io.Writer) (harness.KernelOptions, error) {
	if k.baseline && k.series != "" {
		return harness.KernelOptions{}, usageErrorf("--baseline and --series exclude each other")
	}
	if k.upto != 0 && k.baseline {
		return harness.KernelOptions{}, usageErrorf("--upto applies to a series; drop --baseline")
	}
	if k.upto < 0 {
		return harness.KernelOptions{}, usageErrorf("--upto must be positive")
	}
	series := k.series
	if series != "" {
		if _, err := os.Stat(filepath.Join(series, "series")); err != nil {
			if st, serr := os.Stat(series); serr != nil || st.IsDir() {
				return harness.KernelOptions{}, usageErrorf("no stg series in %s (want %s); pass --series DIR or --baseline", series, filepath.Join(series, "series"))
			}
		}
	} else if !k.baseline {
		if _, err := os.Stat(filepath.Join("patches", "series")); err == nil {
			if series, err = filepath.Abs("patches"); err != nil {
				return harness.KernelOptions{}, usageErrorf("patches: %v", err)
			}
		} else {
			fmt.Fprintln(progress, "kernel: no patches/series here; building the baseline (pass --series DIR for a series)")
		}
	}
	if series != "" {
		if _, err := stgit.ReadSeries(series); err != nil {
			return harness.KernelOptions{}, usageErrorf("%v", err)
		}
	}
	tree := k.tree
	if tree == "" {
		tree = harness.ConfiguredKernelTree(ctx)
	}
	return harness.KernelOptions{Tree: tree, Series: series, Upto: k.upto, Debug: k.debug, Jobs: k.jobs, Progress: progress}, nil
}

func runKernel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "build" {
		return usageErrorf("usage: ppkit kernel build [--series DIR | --baseline] [--upto N] [--debug] [--kernel DIR]")
	}
	fs := newFlagSet("kernel build", stderr)
	var kf kernelFlags
	kf.register(fs)
	asJSON := fs.Bool("json", false, "print the result as JSON (image, config, key, patches, cached, elapsed_ms)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("kernel build: unexpected argument %q", fs.Arg(0))
	}
	opts, err := kf.options(ctx, stderr)
	if err != nil {
		return err
	}
	k, err := harness.BuildKernel(ctx, opts)
	if err != nil {
		return err
	}
	state := "built"
	if k.Cached {
		state = "cached"
	}
	fmt.Fprintf(stderr, "kernel: %s in %s (%d patches)\n", state, k.Elapsed.Round(1e6), len(k.Patches))
	if *asJSON {
		return json.NewEncoder(stdout).Encode(map[string]any{
			"image": k.Image, "config": k.Config, "system_map": k.SystemMap, "build_log": k.BuildLog,
			"key": k.Key, "patches": k.Patches, "cached": k.Cached, "elapsed_ms": k.Elapsed.Milliseconds(),
		})
	}
	fmt.Fprintln(stdout, k.Image)
	return nil
}
