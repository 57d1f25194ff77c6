package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/internal/owned"
	"github.com/ppkit/ppkit/stgit"
	"github.com/ppkit/ppkit/tests/mutation"
	"github.com/ppkit/ppkit/tests/procedure"
	"github.com/ppkit/ppkit/tests/report"
	"github.com/ppkit/ppkit/tests/verdict"
)

func init() {
	register(&command{
		name:    "test",
		summary: "boot the series on the emulated mvneta board, run the traffic procedures, model-check the traces",
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			return runTest(ctx, args, stdout, stderr, defaultTestDeps())
		},
	})
}

// testDeps are the pieces `ppkit test` joins; tests of this file replace them.
type testDeps struct {
	// launcher returns the board launcher for the command line, or an error naming what is
	// missing.
	launcher func(o *testOptions) (procedure.Launcher, error)
	// modelReady says whether the model can judge a trace.
	modelReady func() error
	model      verdict.ModelChecker
}

func defaultTestDeps() testDeps {
	return testDeps{
		launcher: func(o *testOptions) (procedure.Launcher, error) {
			if o.board != "" {
				return &procedure.SSHLauncher{URL: o.board, ClientIface: o.clientIf, Deploy: o.deploy}, nil
			}
			return &procedure.HarnessLauncher{}, nil
		},
		modelReady: verdict.ModelReady,
		model:      verdict.CheckTraceWithModel,
	}
}

// testOptions are `ppkit test`'s parsed command line.
type testOptions struct {
	procedures []string
	kernel     procedure.Kernel
	compare    []procedure.Kernel // --compare: the kernels run first and compared with
	junit      string
	json       bool
	report     string
	options    procedure.Options
	// mutants is --mutants: "all" or a comma-separated list of the suite's names ("": none).
	mutants    string
	mutantsDir string
	// board is --board (a real board's ssh:// URL, "" for the emulated board) and clientIf
	// --client-if, the host's NIC cabled to it.
	board, clientIf string
	deploy          bool // --deploy: boot the kernel under test on the board
}

// seriesKernel is the kernel of "baseline" or of the stg series in dir. The series is the
// user's input: a series file naming a missing patch is said here, in one line, not found by
// the kernel build under the board launch.
func seriesKernel(dir string) (procedure.Kernel, error) {
	if dir == "baseline" {
		return procedure.Kernel{Baseline: true}, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "series")); err != nil {
		return procedure.Kernel{}, fmt.Errorf("no stg series in %s (want %s)", dir, filepath.Join(dir, "series"))
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return procedure.Kernel{}, err
	}
	if _, err := stgit.ReadSeries(abs); err != nil {
		return procedure.Kernel{}, err
	}
	k := procedure.Kernel{Series: abs}
	v, err := k.Variant()
	if err != nil {
		return procedure.Kernel{}, err
	}
	k.Design = v.String() // read once: Run and the procedures take it from here
	return k, nil
}

func parseTestArgs(args []string, stderr io.Writer) (*testOptions, error) {
	fs := newFlagSet("test", stderr)
	series := pathFlag(fs, "series", "", "series directory to test (default patches/)")
	baseline := fs.Bool("baseline", false, "test the kernel without the series")
	junit := pathFlag(fs, "junit", "", "write JUnit XML to `FILE`")
	jsonOut := fs.Bool("json", false, "print the results as JSON instead of a table")
	report := pathFlag(fs, "report", "", "write an HTML report, results.json, junit.xml and the artifacts to `DIR`")
	compare := fs.String("compare", "", "also run these kernels first and print the ratio of each figure: `baseline`, a series DIR, or both (baseline,DIR)")
	timeFlag := fs.String("time", "30s", "traffic time per iperf run (`T`: 10s, 1m, or seconds)")
	rate := fs.String("rate", "1000", "UDP send rate in Mbit/s (`R`: 1000 or 1000M)")
	seed := fs.String("seed", "", "replay the draw of mixed (its members, start order and offsets, GRO, RPS) from seed `N`, printed by an earlier run (default: a new seed)")
	mutants := fs.String("mutants", "", "run the mutation suite instead: `all` or NAME,NAME (a real mutant must fail a procedure, an equivalent one pass them all)")
	mutantsDir := pathFlag(fs, "mutants-dir", mutation.DefaultMutantsDir, "the mutation suite's `directory` (MUTANTS and one directory per mutant)")
	board := fs.String("board", "", "run on a real board reached over SSH, `ssh://[USER@]HOST[:PORT]`, booted with the kernel under test (see README: real board)")
	clientIf := fs.String("client-if", "", "with --board: this host's `IFACE` cabled to the board's mvneta port (moved into ppkit's client namespace for the run)")
	deploy := fs.Bool("deploy", false, "with --board: when the board runs another kernel, boot the kernel under test on it (an extlinux entry in its /boot, a reboot, the build id checked)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ppkit test [PROCEDURE...] [--series DIR | --baseline] [--junit FILE] [--json] [--report DIR] [--compare baseline|DIR|baseline,DIR] [--time T] [--rate R] [--seed N]")
		fmt.Fprintln(stderr, "       ppkit test --mutants all|NAME,... [--series DIR] [--time T] [PROCEDURE...]")
		fmt.Fprintln(stderr, "       ppkit test --board ssh://root@HOST --client-if IFACE [--deploy] [--series DIR | --baseline] [PROCEDURE...]")
		fmt.Fprintln(stderr, "procedures: "+strings.Join(procedure.DefaultProcedures, ", ")+" (default: all)")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	o := &testOptions{procedures: fs.Args(), junit: *junit, json: *jsonOut, report: *report, mutants: *mutants, mutantsDir: *mutantsDir}
	if o.mutants != "" && (*baseline || *compare != "") {
		return nil, usageErrorf("--mutants derives its kernels from --series; drop --baseline and --compare")
	}
	procs, err := procedure.LookupProcedures(o.procedures)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	if *deploy && *board == "" {
		return nil, usageErrorf("--deploy boots the kernel on a real board: give the board, --board ssh://root@HOST --client-if IFACE")
	}
	if o.board, o.clientIf, o.deploy = *board, *clientIf, *deploy; o.board != "" || o.clientIf != "" {
		if o.procedures, err = boardProcedures(o, procs, *compare != "", stderr); err != nil {
			return nil, err
		}
	}
	switch {
	case *series != "" && *baseline:
		return nil, usageErrorf("--series and --baseline exclude each other; give one")
	case *compare != "" && *baseline:
		return nil, usageErrorf("--compare compares the series under test with other kernels; drop --baseline")
	}
	if *compare != "" {
		for _, c := range strings.Split(*compare, ",") {
			k, err := seriesKernel(c)
			if err != nil {
				return nil, usageErrorf("--compare %s: %v", c, err)
			}
			o.compare = append(o.compare, k)
		}
	}
	if *baseline {
		o.kernel = procedure.Kernel{Baseline: true}
	} else {
		dir := *series
		switch {
		case dir == "" && *mutants != "":
			// The suite's mutants replace patches of the series it derives from.
			if dir, err = mutation.SuiteSeries(*mutantsDir); err != nil {
				return nil, usageErrorf("--mutants: %v", err)
			}
		case dir == "":
			dir = "patches"
		}
		if _, err := os.Stat(filepath.Join(dir, "series")); err != nil {
			return nil, usageErrorf("no stg series in %s (want %s); pass --series DIR or run from the ppkit checkout", dir, filepath.Join(dir, "series"))
		}
		if o.kernel, err = seriesKernel(dir); err != nil {
			return nil, usageErrorf("--series %s: %v", dir, err)
		}
	}
	for _, k := range o.compare {
		if k == o.kernel {
			return nil, usageErrorf("--compare %s: that is the kernel under test", k)
		}
	}
	d, err := parseTestDuration(*timeFlag)
	if err != nil {
		return nil, usageErrorf("--time %q: %v", *timeFlag, err)
	}
	r, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSuffix(*rate, "M"), "m"))
	if err != nil || r <= 0 {
		return nil, usageErrorf("--rate %q: want a positive number of Mbit/s, e.g. 1000", *rate)
	}
	o.options = procedure.Options{Duration: d, RateMbit: r}
	if *seed != "" {
		if o.options.Seed, err = strconv.ParseInt(*seed, 10, 64); err != nil || o.options.Seed <= 0 {
			return nil, usageErrorf("--seed %q: want the positive number an earlier run printed (\"seed N\")", *seed)
		}
		if !slices.ContainsFunc(procs, procedure.DrawsFromSeed) {
			return nil, usageErrorf("--seed draws only mixed: name it, e.g. ppkit test mixed --seed %s", *seed)
		}
	}
	return o, nil
}

// boardProcedures checks --board and --client-if and returns the procedures to run on the
// real board: those named, or the default set without the ones that need a second NIC.
func boardProcedures(o *testOptions, procs []procedure.Procedure, compare bool, stderr io.Writer) ([]string, error) {
	switch {
	case o.board == "":
		return nil, usageErrorf("--client-if names the host's NIC cabled to a real board: give the board too, --board ssh://root@HOST")
	case o.clientIf == "":
		return nil, usageErrorf("--board needs --client-if IFACE: this host's NIC cabled to the board's mvneta port (ip link lists them)")
	case o.mutants != "" || compare:
		return nil, usageErrorf("--board runs the kernel the board booted; --compare and --mutants need one kernel after another: run once per kernel, booting each on the board")
	}
	if _, err := harness.ParseBoardURL(o.board); err != nil {
		return nil, usageErrorf("--board: %v", err)
	}
	if _, err := net.InterfaceByName(o.clientIf); err != nil {
		return nil, usageErrorf("--client-if %s: no such interface on this host (ip link lists them)", o.clientIf)
	}
	var names, dropped []string
	for _, p := range procs {
		if procedure.NeedsPeer(p) {
			if len(o.procedures) > 0 {
				return nil, usageErrorf("%s needs a second NIC of the board with a second client behind it: the emulated board has one, --board does not", p.Name())
			}
			dropped = append(dropped, p.Name())
			continue
		}
		names = append(names, p.Name())
	}
	if len(dropped) > 0 {
		fmt.Fprintf(stderr, "board: not running %s (it needs a second NIC of the board with a client behind it)\n", strings.Join(dropped, ", "))
	}
	return names, nil
}

// parseTestDuration accepts a Go duration ("10s", "1m") or a bare number of seconds.
func parseTestDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		s = strconv.Itoa(n) + "s"
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("want a duration such as 10s or 30")
	}
	if d < time.Second {
		return 0, fmt.Errorf("want at least 1s")
	}
	return d, nil
}

func runTest(ctx context.Context, args []string, stdout, stderr io.Writer, deps testDeps) error {
	o, err := parseTestArgs(args, stderr)
	if err != nil {
		return err
	}
	var mutants []mutation.Mutant
	if o.mutants != "" {
		if mutants, err = selectMutants(o); err != nil {
			return err
		}
	}
	// Refuse to start when a piece is missing: never boot a board whose run cannot be judged.
	var missing []string
	launcher, lerr := deps.launcher(o)
	if lerr != nil {
		missing = append(missing, lerr.Error())
	}
	if err := deps.modelReady(); err != nil {
		missing = append(missing, err.Error())
	}
	if len(missing) > 0 {
		// Nothing could be judged: the host is at fault, not the kernel (exit 2).
		return &exitError{code: verdict.VerdictInfra.ExitCode(), err: fmt.Errorf("cannot run: %s", strings.Join(missing, "; "))}
	}
	artifacts := o.report
	if artifacts == "" {
		if artifacts, err = harness.TempDir("test"); err != nil {
			return fmt.Errorf("artifact directory: %w", err)
		}
	}
	cfg := procedure.Config{Procedures: o.procedures, Kernel: o.kernel, Compare: o.compare,
		Options: o.options, ArtifactDir: artifacts, Launcher: launcher, Model: deps.model, TraceText: o.report != "", Progress: stderr}
	if mutants != nil {
		return runMutants(ctx, o, cfg, mutants, artifacts, stdout, stderr)
	}
	sum, err := procedure.Run(ctx, cfg)
	if err != nil {
		// Nothing was judged: the configuration or the host (a board running another kernel).
		if o.report == "" {
			os.RemoveAll(artifacts)
		}
		return &exitError{code: verdict.VerdictInfra.ExitCode(), err: err}
	}
	if sum.Interrupted && o.report == "" {
		os.RemoveAll(artifacts) // the caller says "interrupted"; a temporary directory is not kept
	}
	if o.json {
		if err := report.WriteJSON(stdout, sum); err != nil {
			return err
		}
	} else {
		report.WriteTable(stdout, sum.All())
		if len(sum.References) > 0 {
			fmt.Fprintln(stdout)
			report.WriteComparison(stdout, sum)
		}
	}
	if o.junit != "" {
		f, err := os.Create(o.junit)
		if err != nil {
			return fmt.Errorf("--junit: %w", err)
		}
		werr := report.WriteJUnit(f, sum.All())
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("--junit: %w", werr)
		}
	}
	if o.report != "" {
		if err := report.WriteReportDir(o.report, sum); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "report: %s\n", filepath.Join(o.report, "index.html"))
	}
	if !sum.Pass {
		if o.report == "" && !sum.Interrupted {
			kept, err := owned.Keep(artifacts)
			if err != nil {
				fmt.Fprintf(stderr, "%v\n", err)
			}
			fmt.Fprintf(stderr, "artifacts kept in %s\n", kept)
		}
		// One verdict decides the exit status: 1 the kernel failed, 2 the run could not be
		// judged (verdict.Verdict.ExitCode).
		return &exitError{code: sum.Verdict.ExitCode(), err: errors.New("")}
	}
	if o.report == "" {
		os.RemoveAll(artifacts)
	}
	return nil
}

// selectMutants reads the suite and picks --mutants' names.
func selectMutants(o *testOptions) ([]mutation.Mutant, error) {
	all, err := mutation.ReadMutants(o.mutantsDir, o.kernel.Series)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	if o.mutants == "all" {
		return all, nil
	}
	byName := map[string]mutation.Mutant{}
	var names []string
	for _, m := range all {
		byName[m.Name] = m
		names = append(names, m.Name)
	}
	var out []mutation.Mutant
	for _, n := range strings.Split(o.mutants, ",") {
		m, ok := byName[strings.TrimSpace(n)]
		if !ok {
			return nil, usageErrorf("--mutants: no mutant %q in %s (known: %s)", n, o.mutantsDir, strings.Join(names, ", "))
		}
		out = append(out, m)
	}
	return out, nil
}

// runMutants runs the mutation suite and prints its table (or JSON): exit 0 when every real
// mutant is killed and every equivalent one passes, 1 otherwise, 2 when a run was unjudged.
func runMutants(ctx context.Context, o *testOptions, cfg procedure.Config, mutants []mutation.Mutant, artifacts string, stdout, stderr io.Writer) error {
	rep, err := mutation.RunMutants(ctx, mutation.MutantConfig{Mutants: mutants, Patches: o.kernel.Series, Config: cfg})
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		mutation.WriteMutationTable(stdout, rep)
	}
	if o.report == "" && rep.OK() {
		os.RemoveAll(artifacts)
	} else {
		if o.report == "" {
			kept, err := owned.Keep(artifacts)
			if err != nil {
				fmt.Fprintf(stderr, "%v\n", err)
			}
			artifacts = kept
		}
		fmt.Fprintf(stderr, "artifacts of every mutant's runs: %s\n", artifacts)
	}
	switch {
	case rep.OK():
		return nil
	case rep.Unjudged > 0 && rep.Killed+rep.Passed+rep.Unjudged == rep.Real+rep.Equivalent:
		return &exitError{code: 2, err: errors.New("")}
	}
	return &exitError{code: 1, err: errors.New("")}
}
