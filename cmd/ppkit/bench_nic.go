package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/tests/procedure"
)

// runBenchNIC is `ppkit bench nic`: iperf TCP client → guest over the mvneta model vs over
// virtio-net in one guest and one run, and 64-byte UDP packet rates. bench.go dispatches to it.
func runBenchNIC(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench nic", stderr)
	var kf kernelFlags
	kf.register(fs)
	rounds := fs.Int("rounds", 3, "iperf TCP runs per NIC (alternating; medians are compared)")
	dur := fs.Duration("t", 5*time.Second, "duration of each iperf run")
	asJSON := fs.Bool("json", false, "print the figures as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErrorf("bench nic: unexpected argument %q", fs.Arg(0))
	}
	if *rounds < 1 || *dur < time.Second {
		return usageErrorf("bench nic: --rounds must be >= 1 and -t >= 1s")
	}
	kopts, err := kf.options(ctx, stderr)
	if err != nil {
		return err
	}
	res, err := procedure.BenchNIC(ctx, procedure.NICBenchOptions{
		Board:  harness.Spec{Kernel: kopts, Boot: harness.BootOptions{MemoryMB: 1024}, Progress: stderr},
		Rounds: *rounds, Duration: *dur, Progress: stderr,
	})
	if err != nil {
		return bootFailure(stderr, err)
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	verdict := "meets"
	if res.TCPRatio < res.Goal {
		verdict = "BELOW"
	}
	fmt.Fprintf(stdout, "TCP client→guest: mvneta %.1f Mbit/s, virtio-net %.1f Mbit/s (medians of %d): ratio %.2f, %s the goal %.2f\n",
		res.Mvneta.TCPRxMed, res.Virtio.TCPRxMed, *rounds, res.TCPRatio, verdict, res.Goal)
	fmt.Fprintf(stdout, "64-byte UDP client→guest: mvneta %.0f pps (%.0f%% lost), virtio-net %.0f pps (%.0f%% lost)\n",
		res.Mvneta.UDP64RxPPS, res.Mvneta.UDP64Loss*100, res.Virtio.UDP64RxPPS, res.Virtio.UDP64Loss*100)
	return nil
}
