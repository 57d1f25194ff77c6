package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/ppkit/ppkit/harness"
)

func init() {
	register(&command{name: "bench", summary: "measure: `bench boot` (boot-to-SSH-ready, cached build), `bench nic` (mvneta vs virtio-net), `bench test` (warm ppkit test, by phase), `bench trace` (traffic traced vs untraced), `bench throughput` (the series vs another kernel, alternated rounds)", run: runBench})
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "boot":
			return runBenchBoot(ctx, args[1:], stdout, stderr)
		case "nic":
			return runBenchNIC(ctx, args[1:], stdout, stderr)
		case "test":
			return runBenchTest(ctx, args[1:], stdout, stderr)
		case "trace":
			return runBenchTrace(ctx, args[1:], stdout, stderr)
		case "throughput":
			return runBenchThroughput(ctx, args[1:], stdout, stderr)
		}
	}
	return usageErrorf("usage: ppkit bench boot [-n N] [--json] | ppkit bench nic [flags] | ppkit bench test [--time T] [PROCEDURE...] | ppkit bench trace [--rounds N] [--time T] [PROCEDURE...] | ppkit bench throughput --compare baseline|DIR [--rounds N] [--time T] [PROCEDURE...]")
}

// runBenchBoot is `ppkit bench boot`: the median boot-to-SSH-ready over N boots, and the time of
// a cached kernel build with no change.
func runBenchBoot(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench boot", stderr)
	var bf bootFlags
	bf.register(fs)
	n := fs.Int("n", 5, "number of boots")
	asJSON := fs.Bool("json", false, "print the figures as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n < 1 {
		return usageErrorf("bench boot: -n must be at least 1")
	}
	spec, err := bf.spec(ctx, io.Discard)
	if err != nil {
		return err
	}
	// Build once (harness.Prepare's first half), then time the boots alone.
	opts, err := harness.Build(ctx, spec)
	if err != nil {
		return err
	}
	// The kernel is cached now: time the no-change build as ppkit kernel build does it.
	start := time.Now()
	if _, err := harness.BuildKernel(ctx, spec.Kernel); err != nil {
		return err
	}
	cached := time.Since(start)

	var boots []time.Duration
	for i := 0; i < *n; i++ {
		vm, err := harness.Boot(ctx, opts)
		if err != nil {
			return bootFailure(stderr, err)
		}
		boots = append(boots, vm.BootTime)
		fmt.Fprintf(stderr, "bench: boot %d/%d: SSH ready in %s\n", i+1, *n, vm.BootTime.Round(time.Millisecond))
		if err := vm.Poweroff(ctx); err != nil {
			return err
		}
	}
	sorted := slices.Clone(boots)
	slices.Sort(sorted)
	median := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		median = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	if *asJSON {
		ms := make([]int64, len(boots))
		for i, b := range boots {
			ms[i] = b.Milliseconds()
		}
		return json.NewEncoder(stdout).Encode(map[string]any{
			"boot_to_ssh_ms": ms, "boot_to_ssh_median_ms": median.Milliseconds(),
			"cached_kernel_build_ms": cached.Milliseconds(), "boot_goal_ms": 5000, "cached_build_goal_ms": 2000,
		})
	}
	fmt.Fprintf(stdout, "boot-to-SSH-ready: median %s over %d boots (min %s, max %s; goal <= 5s)\n",
		median.Round(time.Millisecond), len(boots), sorted[0].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond))
	fmt.Fprintf(stdout, "cached kernel build (no change): %s (goal <= 2s)\n", cached.Round(time.Millisecond))
	return nil
}
