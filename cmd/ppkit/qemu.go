package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	mvnetaemu "github.com/ppkit/ppkit/mvneta-emu"
)

func init() {
	register(&command{
		name:    "qemu",
		summary: "build (or find in the cache) the QEMU with the mvneta NIC model",
		run:     runQemu,
	})
}

func runQemu(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "build" && args[0] != "path") {
		fmt.Fprintln(stderr, "usage: ppkit qemu build [--jobs N] [--cache DIR] [--json]")
		fmt.Fprintln(stderr, "       ppkit qemu path [--cache DIR]   (prints the cached binary, never builds)")
		return usageErrorf("qemu: want the subcommand build or path")
	}
	sub := args[0]
	fs := newFlagSet("qemu "+sub, stderr)
	cache := pathFlag(fs, "cache", "", "ppkit cache directory (default ~/.cache/ppkit)")
	jobs := fs.Int("jobs", 0, "parallel compile jobs (default: number of CPUs)")
	asJSON := fs.Bool("json", false, "print {\"binary\": PATH} instead of the bare path")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErrorf("qemu %s: unexpected argument %q", sub, fs.Arg(0))
	}
	var path string
	if sub == "path" {
		p, ok := mvnetaemu.CachedBinary(*cache)
		if !ok {
			return failf("no mvneta QEMU is cached for the current model; run 'ppkit qemu build'")
		}
		path = p
	} else {
		p, err := mvnetaemu.Build(ctx, mvnetaemu.Options{CacheDir: *cache, Jobs: *jobs, Progress: stderr})
		if err != nil {
			return err
		}
		path = p
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(map[string]string{"binary": path, "device": mvnetaemu.DeviceName})
	}
	fmt.Fprintln(stdout, path)
	return nil
}
