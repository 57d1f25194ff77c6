package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ppkit/ppkit/ci"
	"github.com/ppkit/ppkit/stgit"
	"github.com/ppkit/ppkit/tests/procedure"
)

func init() {
	register(&command{
		name:    "ci",
		summary: "test a pushed ref: series check, procedures, figures against the last result; JUnit and a summary",
		run:     runCI,
	})
}

// ciHooks replace the builder, the launcher and the tool list of `ppkit ci` in this package's
// tests; nil keeps ci's defaults (harness.SeriesBuilder, procedure.HarnessLauncher, ci.DefaultTools).
var ciHooks struct {
	builder  func(tree string, log io.Writer) (stgit.Builder, func(), error)
	launcher func(tree string) procedure.Launcher
	tools    []string
}

func runCI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ci", stderr)
	repo := pathFlag(fs, "repo", "", "the git `repository` that received the push (bare or not; only read)")
	ref := fs.String("ref", "", "the branch, tag or commit to test (`REF`)")
	base := fs.String("base", "", "upstream commit of a kernel tree's series, and the ref whose stored figures are compared (default: REF's own last passing run)")
	design := fs.String("design", "", "the model variant a kernel tree's series implements (`NAME`: series or upstream; a patches/ directory says it in its model-variant file)")
	out := pathFlag(fs, "out", "out", "output `directory`: junit.xml, summary.md, result.json, report/, series/")
	kernel := pathFlag(fs, "kernel", "", "kernel git `tree` a patches/ series applies to (default: git config ppkit.kernel, else linux-source-5.10)")
	threshold := fs.Float64("threshold", ci.DefaultThreshold*100, "fail when a figure is more than `PCT` percent worse than the stored result (negative: do not compare)")
	timeFlag := fs.String("time", "30s", "traffic time per iperf run (`T`)")
	rate := fs.String("rate", "1000", "UDP send rate in Mbit/s (`R`)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ppkit ci --repo DIR --ref REF [--base REF --design NAME] [--out DIR] [--threshold PCT] [PROCEDURE...]")
		fmt.Fprintln(stderr, "exit status: 0 pass, 1 the series failed (check, procedures, boot, regression), 2 infrastructure error or bad usage")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, err := procedure.LookupProcedures(fs.Args()); err != nil {
		return usageErrorf("%v", err)
	}
	d, err := parseTestDuration(*timeFlag)
	if err != nil {
		return usageErrorf("--time %q: %v", *timeFlag, err)
	}
	r, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSuffix(*rate, "M"), "m"))
	if err != nil || r <= 0 {
		return usageErrorf("--rate %q: want a positive number of Mbit/s, e.g. 1000", *rate)
	}
	tools := ciHooks.tools
	if tools == nil {
		tools = ci.DefaultTools
	}
	res, err := ci.Run(ctx, ci.Options{Repo: *repo, Ref: *ref, Base: *base, Design: *design, Out: *out, Kernel: *kernel,
		Threshold: *threshold / 100, Procedures: fs.Args(), TestOptions: procedure.Options{Duration: d, RateMbit: r},
		NewBuilder: ciHooks.builder, NewLauncher: ciHooks.launcher, Tools: tools, Progress: stderr})
	var ue *ci.UsageError
	if errors.As(err, &ue) {
		return usageErrorf("%v", ue)
	}
	if err != nil {
		return &exitError{code: ci.ExitInfra, err: err}
	}
	abs, _ := filepath.Abs(*out)
	fmt.Fprintf(stdout, "%s %s @ %.12s: %s\n", strings.ToUpper(res.Verdict), res.Ref, res.Commit, ciOneLine(res))
	fmt.Fprintf(stdout, "summary: %s\njunit:   %s\n", filepath.Join(abs, "summary.md"), filepath.Join(abs, "junit.xml"))
	switch res.ExitCode {
	case ci.ExitPass:
		return nil
	case ci.ExitFail:
		return failf("%s: %s", res.Stage, res.Message)
	}
	return &exitError{code: ci.ExitInfra, err: fmt.Errorf("infrastructure error in %s: %s", res.Stage, res.Message)}
}

func ciOneLine(res *ci.RunResult) string {
	if res.Message != "" {
		return res.Stage + ": " + res.Message
	}
	var parts []string
	for _, s := range res.Stages {
		if s.Detail != "" {
			parts = append(parts, s.Detail)
		}
	}
	return strings.Join(parts, "; ")
}
