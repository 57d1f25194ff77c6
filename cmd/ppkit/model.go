package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/gomodel/rawtrace"
)

func init() {
	register(&command{
		name:    "model",
		summary: "run, explore or trace-check the page_pool / SKB return-hook reference model",
		run:     runModel,
	})
}

const modelUsage = `usage:
  ppkit model run FILE [--variant V] [--coalesce C] [--json]
  ppkit model explore --variant V [--coalesce C] [--ops N] [--seed S] [--json]
  ppkit model check-trace FILE [--packets N] [--json]

variants: none, prerfc, rfc, upstream, series (the shipped patches/); coalesce strategies (rfc
only): unhandled (default), release, fraglist, reject. A variant may also be a single-change
mutant of series, as named in tests/fixtures/mutants: ` + "%s" + `.
The scenario language is described in gomodel/README.md.`

func runModel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(stderr, modelUsage+"\n", strings.Join(gomodel.MutantNames(), ", "))
		if len(args) == 0 {
			return usageErrorf("")
		}
		return nil
	}
	switch args[0] {
	case "run":
		return modelRun(args[1:], stdout, stderr)
	case "explore":
		return modelExplore(ctx, args[1:], stdout, stderr)
	case "check-trace":
		return modelCheckTrace(args[1:], stdout, stderr)
	}
	return usageErrorf("unknown model subcommand %q: use run, explore or check-trace", args[0])
}

func modelWriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// modelEmit prints a model result v as JSON or, with printText, as text; a result that did not
// pass exits 1 without a further message (the output said why).
func modelEmit(w io.Writer, asJSON bool, v any, printText func(), passed bool) error {
	if asJSON {
		if err := modelWriteJSON(w, v); err != nil {
			return err
		}
	} else {
		printText()
	}
	if !passed {
		return silentFailure
	}
	return nil
}

// modelLineError turns a gomodel.LineError (file:line) or NotATraceError into exit 2: the input
// is not what the command reads.
func modelLineError(err error) error {
	var le *gomodel.LineError
	if errors.As(err, &le) {
		return usageErrorf("%s", le.Error())
	}
	var nt *gomodel.NotATraceError
	if errors.As(err, &nt) {
		return usageErrorf("%s", nt.Error())
	}
	return err
}

func modelRun(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("model run", stderr)
	variant := fs.String("variant", "", "run under this variant, overriding the file's `variant` line")
	coalesce := fs.String("coalesce", "", "rfc coalesce strategy: unhandled, release, fraglist, reject")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErrorf("model run takes one scenario FILE, got %d arguments", fs.NArg())
	}
	file := fs.Arg(0)
	f, err := os.Open(file)
	if err != nil {
		return usageErrorf("%v", err)
	}
	defer f.Close()
	sc, err := gomodel.ParseScenario(f, file)
	if err != nil {
		return modelLineError(err)
	}
	cfg := sc.Config
	source := "from the file's variant line"
	switch {
	case *variant != "":
		if cfg, err = gomodel.ParseVariant(*variant, *coalesce); err != nil {
			return usageErrorf("%v", err)
		}
		source = "from --variant"
		if sc.Pinned && cfg != sc.Config {
			source = fmt.Sprintf("from --variant, overriding the file's %s", sc.Config)
		}
	case *coalesce != "":
		if !sc.Pinned {
			return usageErrorf("--coalesce needs a variant: add --variant rfc")
		}
		if cfg, err = gomodel.ParseVariant(sc.Config.Variant.String(), *coalesce); err != nil {
			return usageErrorf("%v", err)
		}
		source = fmt.Sprintf("the file's variant with --coalesce, overriding %s", sc.Config)
	case !sc.Pinned:
		return usageErrorf("%s: no variant: add a line such as `variant rfc release` at the top, or pass --variant", file)
	}
	res, err := gomodel.Run(sc, cfg)
	if err != nil {
		return modelLineError(err)
	}
	return modelEmit(stdout, *asJSON, res, func() { modelPrintRun(stdout, res, source) }, res.Passed)
}

func modelPrintViolations(w io.Writer, vs []gomodel.Violation) {
	for _, v := range vs {
		fmt.Fprintf(w, "  line %d: %s: %s\n", v.Line, v.Name, v.Detail)
		fmt.Fprintf(w, "    caused by: %s\n", v.Op)
		if v.Page != "" {
			fmt.Fprintf(w, "    history of %s:\n", v.Page)
			for _, h := range v.History {
				fmt.Fprintf(w, "      %s\n", h)
			}
		}
	}
}

func modelPrintRun(w io.Writer, res *gomodel.ScenarioResult, source string) {
	fmt.Fprintf(w, "scenario %s, variant %s (%s)\n", res.File, res.Variant, source)
	if len(res.Violations) == 0 {
		fmt.Fprintln(w, "violations: none")
	} else {
		fmt.Fprintf(w, "violations: %d\n", len(res.Violations))
		modelPrintViolations(w, res.Violations)
	}
	fmt.Fprintln(w, "pools:")
	for _, p := range res.Pools {
		state := modelPoolLife(p.Destroyed, p.Freed)
		fmt.Fprintf(w, "  %s: hold %d release %d inflight %d, alloc cache %d, ptr_ring %d, %s\n",
			p.Name, p.Hold, p.Release, p.Inflight, p.Cache, p.Ring, state)
		for _, x := range append(append([]string{}, p.Warnings...), p.CritErrors...) {
			fmt.Fprintf(w, "    kernel log: %s\n", x)
		}
	}
	failed := 0
	fmt.Fprintln(w, "expectations:")
	for _, e := range res.Expectations {
		if e.OK {
			fmt.Fprintf(w, "  ok    line %d: %s\n", e.Line, e.Text)
		} else {
			failed++
			fmt.Fprintf(w, "  FAIL  line %d: %s (got %s)\n", e.Line, e.Text, e.Got)
		}
	}
	if failed == 0 {
		fmt.Fprintf(w, "PASS: all %d expectations hold\n", len(res.Expectations))
	} else {
		fmt.Fprintf(w, "FAIL: %d of %d expectations do not hold\n", failed, len(res.Expectations))
	}
}

func modelExplore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("model explore", stderr)
	variant := fs.String("variant", "", "variant to explore: none, prerfc, rfc, upstream (required)")
	coalesce := fs.String("coalesce", "", "rfc coalesce strategy: unhandled (default), release, fraglist, reject")
	ops := fs.Int("ops", 1_000_000, "operations to run before giving up")
	seed := fs.Int64("seed", 0, "PRNG seed (default: from the clock; always printed)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErrorf("model explore takes no arguments, got %q", strings.Join(fs.Args(), " "))
	}
	if *variant == "" {
		return usageErrorf("model explore needs --variant none|prerfc|rfc|upstream")
	}
	cfg, err := gomodel.ParseVariant(*variant, *coalesce)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if *ops <= 0 {
		return usageErrorf("--ops must be positive, not %d", *ops)
	}
	seedSet := false
	fs.Visit(func(f *flag.Flag) { seedSet = seedSet || f.Name == "seed" })
	if !seedSet {
		*seed = time.Now().UnixNano() & 0x7fffffff
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "exploring variant %s, seed %d, up to %d operations\n", cfg, *seed, *ops)
	}
	start := time.Now()
	opts := gomodel.ExploreOptions{Config: cfg, Ops: *ops, Seed: *seed, Context: ctx}
	if !*asJSON && *ops > 2_000_000 {
		opts.Progress = func(done, episodes int64) {
			fmt.Fprintf(stderr, "explored %d of %d operations (%d episodes)\n", done, *ops, episodes)
		}
	}
	res := gomodel.Explore(opts)
	elapsed := time.Since(start)
	if *asJSON {
		if err := modelWriteJSON(stdout, res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "ran %d operations in %d episodes (%.2fs, %.2f M ops/s), seed %d\n",
			res.Ops, res.Episodes, elapsed.Seconds(), float64(res.Ops)/elapsed.Seconds()/1e6, res.Seed)
		if res.Interrupted {
			fmt.Fprintf(stdout, "interrupted after %d operations\n", res.Ops)
		}
		if !res.Found {
			fmt.Fprintf(stdout, "no violation found in variant %s\n", cfg)
		} else {
			fmt.Fprintf(stdout, "found %d kind(s) of violation, most severe first\n", len(res.Findings))
			for i, f := range res.Findings {
				fmt.Fprintf(stdout, "\n[%d] VIOLATION %s, first in episode %d (%d operations), minimal scenario of %d operations:\n",
					i+1, f.Target, f.Episode, f.FoundAfter, f.Minimal)
				modelPrintViolations(stdout, f.Violations)
				fmt.Fprintln(stdout, "--- minimal scenario (save it; `ppkit model run FILE` exits 1 on it) ---")
				fmt.Fprint(stdout, f.Scenario)
				fmt.Fprintln(stdout, "--- end ---")
			}
		}
	}
	if res.Found {
		return silentFailure
	}
	if res.Interrupted {
		return failf("interrupted before %d operations: no verdict", *ops)
	}
	return nil
}

func modelCheckTrace(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("model check-trace", stderr)
	packets := fs.Int64("packets", 0, "packets the traced run received: report slow-path allocations and skb returns per 1000 packets")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErrorf("model check-trace takes one trace FILE (a copy of /sys/kernel/tracing/trace) or a ppkit test artifact DIR (cpuN.raw, formats.tar), got %d arguments", fs.NArg())
	}
	if *packets < 0 {
		return usageErrorf("--packets must not be negative, not %d", *packets)
	}
	file := fs.Arg(0)
	opts := gomodel.TraceOptions{File: file, Packets: *packets}
	if st, err := os.Stat(file); err == nil && st.IsDir() {
		rep, err := modelCheckPages(file, opts)
		if err != nil {
			return err
		}
		return modelEmit(stdout, *asJSON, rep, func() { modelPrintTrace(stdout, rep) }, rep.Passed)
	}
	f, err := os.Open(file)
	if err != nil {
		return usageErrorf("%v", err)
	}
	defer f.Close()
	rep, err := gomodel.CheckTrace(f, opts)
	if err != nil {
		return modelLineError(err)
	}
	return modelEmit(stdout, *asJSON, rep, func() { modelPrintTrace(stdout, rep) }, rep.Passed)
}

// modelCheckPages replays a trace kept as ring-buffer pages: a `ppkit test` artifact
// directory with cpuN.raw and formats.tar (the raw transport's).
func modelCheckPages(dir string, opts gomodel.TraceOptions) (*gomodel.TraceReport, error) {
	ff, err := os.Open(filepath.Join(dir, "formats.tar"))
	if err != nil {
		return nil, usageErrorf("%s: no formats.tar: give a trace file, or a ppkit test artifact directory with cpuN.raw and formats.tar", dir)
	}
	fm, err := rawtrace.ReadFormatsTar(ff, "")
	ff.Close()
	if err != nil {
		return nil, usageErrorf("%s: %v", dir, err)
	}
	var streams []io.Reader
	for i := 0; ; i++ {
		f, err := os.Open(filepath.Join(dir, fmt.Sprintf("cpu%d.raw", i)))
		if err != nil {
			break
		}
		defer f.Close()
		streams = append(streams, rawtrace.NewFileReader(f))
	}
	if len(streams) == 0 {
		return nil, usageErrorf("%s: no cpu0.raw: give a trace file, or a ppkit test artifact directory with cpuN.raw and formats.tar", dir)
	}
	rep, _, err := rawtrace.Replay(streams, fm, opts)
	var pe *rawtrace.PageError
	var de *rawtrace.DecodeError
	switch {
	case errors.As(err, &pe) || errors.As(err, &de):
		return nil, usageErrorf("%s: %v", dir, err)
	case err != nil:
		return nil, modelLineError(err)
	}
	return rep, nil
}

// modelPoolLife says where a pool is in its life: page_pool_destroy() defers the shutdown
// while pages are still in flight, and frees the pool when the last one comes back.
func modelPoolLife(destroyed, freed bool) string {
	switch {
	case freed:
		return "destroyed and freed"
	case destroyed:
		return "destroyed, shutdown waiting for inflight pages"
	}
	return "alive"
}

func modelPrintTrace(w io.Writer, rep *gomodel.TraceReport) {
	fmt.Fprintf(w, "trace %s: %d lines, %d page_pool/kmem events replayed, %d other lines ignored\n",
		rep.File, rep.Lines, rep.Events, rep.Ignored)
	fmt.Fprintln(w, "pools:")
	if len(rep.Pools) == 0 {
		fmt.Fprintln(w, "  none (no page_pool events: is the page_pool:* tracepoint group enabled?)")
	}
	for _, p := range rep.Pools {
		state := modelPoolLife(p.Destroyed, p.Freed)
		complete := "traced from its first allocation"
		if !p.Complete {
			complete = "trace started after its first allocation"
		}
		fmt.Fprintf(w, "  %s: %d slow-path allocations (hold events), %d releases, inflight %d (hold_cnt %d, release_cnt %d), %d skb returns, %d pages held at the end, %d freed while held; %s; %s\n",
			p.Pool, p.Holds, p.Releases, p.Inflight, p.HoldCounter, p.ReleaseCounter, p.SKBReturns, p.Held, p.FreedWhileHeld, state, complete)
	}
	if rep.Packets > 0 {
		fmt.Fprintf(w, "per 1000 packets (%d packets): %.2f slow-path allocations, %.2f skb returns\n", rep.Packets, rep.SlowPathPer1k, rep.ReturnsPer1k)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if len(rep.Violations) == 0 {
		fmt.Fprintln(w, "PASS: no violation")
		return
	}
	fmt.Fprintf(w, "FAIL: %d violation(s)\n", len(rep.Violations))
	modelPrintViolations(w, rep.Violations)
}
