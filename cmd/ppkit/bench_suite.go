package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/tests/procedure"
	"github.com/ppkit/ppkit/tests/verdict"
)

// benchTestGoal is issue 15's goal for a warm `ppkit test multicast tcp` at T = 10 s (the
// floor is 2 × (10 s + a boot)).
const benchTestGoal = 30 * time.Second

// benchSuite is what `ppkit bench test`, `trace` and `throughput` share: the procedures and
// their traffic time, on patches/ (or --series) and the kernel compared with (throughput's
// --compare), with the caches warm and a directory for the boards' artifacts.
type benchSuite struct {
	procs   []string
	time    time.Duration
	asJSON  bool
	warming time.Duration // building (or finding) the kernel, image and QEMU: not timed
	cfg     procedure.Config
}

// newBenchSuite parses the flags of a suite benchmark (fs may carry the benchmark's own, which
// check, when not nil, judges after parsing), then warms the caches of the series under test
// and of compare's kernel. Bad input is said before anything is built.
func newBenchSuite(ctx context.Context, fs *flag.FlagSet, args []string, defaultProcs []string, compare *string, check func() error, stderr io.Writer) (*benchSuite, error) {
	series := pathFlag(fs, "series", "patches", "stg series `directory` under test")
	d := fs.Duration("time", 10*time.Second, "traffic time per procedure")
	asJSON := fs.Bool("json", false, "print the figures as JSON")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	procs := fs.Args()
	if len(procs) == 0 {
		procs = defaultProcs
	}
	if _, err := procedure.LookupProcedures(procs); err != nil {
		return nil, usageErrorf("%v", err)
	}
	if _, err := os.Stat(filepath.Join(*series, "series")); err != nil {
		return nil, usageErrorf("no stg series in %s; pass --series DIR", *series)
	}
	kernel, err := seriesKernel(*series)
	if err != nil {
		return nil, usageErrorf("--series %s: %v", *series, err)
	}
	var others []procedure.Kernel
	if compare != nil {
		if *compare == "" {
			return nil, usageErrorf("--compare: give the kernel to compare with (baseline or a series DIR)")
		}
		k, err := seriesKernel(*compare)
		if err != nil {
			return nil, usageErrorf("--compare %s: %v", *compare, err)
		}
		if k == kernel {
			return nil, usageErrorf("--compare %s: that is the kernel under test", *compare)
		}
		others = append(others, k)
	}
	if check != nil {
		if err := check(); err != nil {
			return nil, err
		}
	}
	warm := time.Now()
	fmt.Fprintln(stderr, "bench: warming the caches (kernel, image, QEMU); not timed")
	launcher := &procedure.HarnessLauncher{}
	for _, k := range append([]procedure.Kernel{kernel}, others...) {
		if _, err := harness.Build(ctx, launcher.Spec(k, stderr)); err != nil {
			return nil, err
		}
	}
	artifacts, err := harness.TempDir(strings.ReplaceAll(strings.TrimPrefix(fs.Name(), "ppkit "), " ", ""))
	if err != nil {
		return nil, err
	}
	return &benchSuite{procs: procs, time: *d, asJSON: *asJSON, warming: time.Since(warm),
		cfg: procedure.Config{Procedures: procs, Kernel: kernel, Compare: others, Options: procedure.Options{Duration: *d, RateMbit: 1000},
			ArtifactDir: artifacts, Launcher: launcher, Model: verdict.CheckTraceWithModel, Progress: stderr}}, nil
}

// close removes the suite's artifacts (the boards' traces and tool output: a benchmark keeps
// only its figures).
func (b *benchSuite) close() { os.RemoveAll(b.cfg.ArtifactDir) }

// benchSuiteProcs are the procedures `bench test` and `bench trace` run by default.
var benchSuiteProcs = []string{"multicast", "tcp"}

// runBenchTest is `ppkit bench test`: the wall time of a warm `ppkit test` (default: multicast
// and tcp, 10 s of traffic each) on patches/, with each phase's share. Everything the run
// needs is built (or found in the cache) first, untimed, so the figure is what a developer
// waits for on a warm machine.
func runBenchTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	b, err := newBenchSuite(ctx, newFlagSet("bench test", stderr), args, benchSuiteProcs, nil, nil, stderr)
	if err != nil {
		return err
	}
	procs := b.procs
	defer b.close()
	start := time.Now()
	sum, err := procedure.Run(ctx, b.cfg)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	// Where the time went, phase by phase over all procedures (verdict.Result.Phases).
	var names []string
	phases := map[string]time.Duration{}
	for _, r := range sum.Results {
		for _, ph := range r.Phases {
			if _, ok := phases[ph.Name]; !ok {
				names = append(names, ph.Name)
			}
			phases[ph.Name] += ph.Duration
		}
	}
	if b.asJSON {
		shares := map[string]float64{}
		for n, d := range phases {
			shares[n+"_s"] = d.Seconds()
		}
		return json.NewEncoder(stdout).Encode(map[string]any{"procedures": procs, "traffic_s": b.time.Seconds(),
			"warm_test_s": elapsed.Seconds(), "goal_s": benchTestGoal.Seconds(), "cache_warmup_s": b.warming.Seconds(),
			"phases": shares, "pass": sum.Pass})
	}
	for _, n := range names {
		fmt.Fprintf(stdout, "  %-8s %6.1f s  %3.0f%%\n", n, phases[n].Seconds(), 100*phases[n].Seconds()/elapsed.Seconds())
	}
	verdict := "meets"
	if elapsed > benchTestGoal {
		verdict = "misses"
	}
	fmt.Fprintf(stdout, "warm ppkit test %v (%s traffic each): %.1f s, %s the %.0f s goal (ratio %.2f); verdict pass=%v\n",
		procs, b.time, elapsed.Seconds(), verdict, benchTestGoal.Seconds(), elapsed.Seconds()/benchTestGoal.Seconds(), sum.Pass)
	if !sum.Pass {
		return failf("the procedures did not pass: the figure is not a valid measurement")
	}
	return nil
}

// runBenchTrace is `ppkit bench trace`: what tracing costs the traffic. Each procedure runs
// traced (as `ppkit test` runs it) and untraced on fresh boards, --rounds times with the order
// alternated, and the median throughput ratio is printed (issue 15's goal: at least 0.8 for
// multicast and tcp).
func runBenchTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench trace", stderr)
	rounds := fs.Int("rounds", 3, "rounds of a traced and an untraced run per procedure, the order alternated (one pair moves by as much as the cost)")
	b, err := newBenchSuite(ctx, fs, args, benchSuiteProcs, nil, func() error {
		if *rounds < 1 {
			return usageErrorf("--rounds %d: want at least 1", *rounds)
		}
		return nil
	}, stderr)
	if err != nil {
		return err
	}
	defer b.close()
	costs, err := procedure.MeasureTraceCost(ctx, b.cfg, *rounds)
	if err != nil {
		return err
	}
	if b.asJSON {
		return json.NewEncoder(stdout).Encode(map[string]any{"traffic_s": b.time.Seconds(), "rounds": *rounds, "costs": costs, "goal_ratio": benchTraceGoal})
	}
	fmt.Fprintf(stdout, "traced over untraced throughput, %d alternated rounds of %s per procedure\n", *rounds, b.time)
	fmt.Fprintf(stdout, "%-10s %6s %11s  %-28s %-28s %s\n", "procedure", "median", "min–max", "traced Mbit/s, by round", "untraced", "goal")
	pass := true
	for _, c := range costs {
		goal := "met"
		if c.Ratio < benchTraceGoal {
			goal = "NOT MET"
		}
		var traced, untraced []float64
		for _, r := range c.Rounds {
			traced, untraced = append(traced, r.Traced.BitsPerSecond/1e6), append(untraced, r.Untraced.BitsPerSecond/1e6)
		}
		if c.Missing > 0 {
			goal += fmt.Sprintf(" (%d of %d rounds measured nothing)", c.Missing, len(c.Rounds))
		}
		fmt.Fprintf(stdout, "%-10s %6.2f %5.2f–%-5.2f  %-28s %-28s ≥ %.1f %s\n", c.Procedure, c.Ratio, c.Min, c.Max,
			mbitList(traced), mbitList(untraced), benchTraceGoal, goal)
		pass = pass && c.Pass
		if c.Missing == len(c.Rounds) {
			return failf("%s: no round measured a throughput on both sides", c.Procedure)
		}
	}
	if !pass {
		return failf("a traced run did not pass: the figures are not a valid measurement")
	}
	return nil
}

// mbitList prints each round's Mbit/s, "135/143/140".
func mbitList(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, "/")
}

// benchTraceGoal is issue 15's floor for traced over untraced throughput.
const benchTraceGoal = 0.8

// runBenchThroughput is `ppkit bench throughput`: the series' untraced throughput against
// another kernel's (--compare), in --rounds alternated rounds per procedure (default: every
// procedure), judged by a sign test per procedure and with Holm's correction over all of them
// (procedure.CompareThroughput). It answers issue 16's "not lower than V1 in any procedure",
// which one run each cannot on a noisy machine.
func runBenchThroughput(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench throughput", stderr)
	compare := fs.String("compare", "", "the kernel to compare with: `baseline` or a series DIR")
	rounds := fs.Int("rounds", 5, "alternated rounds per procedure (a sign test can call a difference from 5 rounds on for one procedure, from 8 for twelve after Holm's correction)")
	b, err := newBenchSuite(ctx, fs, args, procedure.DefaultProcedures, compare, func() error {
		if *rounds < 1 {
			return usageErrorf("--rounds %d: want at least 1", *rounds)
		}
		return nil
	}, stderr)
	if err != nil {
		return err
	}
	defer b.close()
	cmp, err := procedure.CompareThroughput(ctx, b.cfg, *rounds)
	if err != nil {
		return err // interrupted: a part of the rounds is no figure
	}
	if b.asJSON {
		if jerr := json.NewEncoder(stdout).Encode(map[string]any{"traffic_s": b.time.Seconds(), "rounds": *rounds,
			"significance": procedure.Significance, "comparisons": cmp}); jerr != nil {
			return jerr
		}
	} else {
		fmt.Fprintf(stdout, "untraced throughput of %s over %s, %d alternated rounds of %s per procedure\n",
			b.cfg.Kernel, b.cfg.Compare[0], *rounds, b.time)
		fmt.Fprintf(stdout, "%-13s %7s %13s %9s %8s  %-20s %s\n", "procedure", "median", "min–max", "lower/n", "p", "finding", "over all (Holm)")
		for _, c := range cmp {
			missing := ""
			if c.Missing > 0 {
				missing = fmt.Sprintf(" (%d rounds measured nothing)", c.Missing)
			}
			fmt.Fprintf(stdout, "%-13s %7.3f %6.3f–%-6.3f %5d/%-3d %8.3f  %-20s %s%s\n", c.Procedure, c.Median, c.Min, c.Max,
				c.Lower, len(c.Ratios), c.P, c.Finding, c.FamilyFinding, missing)
		}
	}
	return nil
}
