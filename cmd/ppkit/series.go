package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/stgit"
)

func init() {
	register(&command{
		name:    "series",
		summary: "manage the stg series in patches/: apply, export, list, goto, check",
		run:     runSeries,
	})
}

// seriesBuilder returns the Builder of the bisectability check of `ppkit series check` and a
// cleanup func: the harness's arm64 build of each series prefix on the stack's base commit, with
// the config ppkit boots. Tests of scratch (non-Linux) trees replace it with stgit.MakeBuilder.
// On ppkit's own import of linux-source-5.10 (tree ""), the builds are those of `ppkit kernel
// build` and `ppkit test`.
var seriesBuilder = func(ctx context.Context, repo *stgit.Repo, tree string, s *stgit.Series, progress io.Writer) (stgit.Builder, func(), error) {
	k := harness.KernelOptions{Tree: tree, Series: s.File, Progress: progress}
	if tree != "" {
		base, err := repo.CheckBase(ctx, s)
		if err != nil {
			return nil, nil, err
		}
		k.Commit = base
	}
	return &harness.SeriesBuilder{Kernel: k}, func() {}, nil
}

const seriesUsage = `usage: ppkit series COMMAND --kernel DIR [flags]

commands:
  apply   import patches/series onto the kernel tree's stack; atomic: when a patch fails, stg
          fails or Ctrl-C comes, the branch, the stack and stg's metadata are as before
  export  write the applied patches back to patches/ (atomically); unapplied ones are named on
          stderr and in a comment of the series file (--complete refuses such a stack)
  list    list the stack's patches, applied and unapplied
  goto    make patch NAME (or number N) the top of the stack
  check   check every patch: Signed-off-by, subject form, checkpatch.pl --strict, bisectable build
          (in a temporary work tree; without --kernel or git config ppkit.kernel, on ppkit's
          import of Debian's linux-source-5.10)
`

func runSeries(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, seriesUsage)
		if len(args) == 0 {
			return usageErrorf("missing series command")
		}
		return nil
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("series "+sub, stderr)
	kernel := pathFlag(fs, "kernel", "", "the kernel git `tree` that holds (or will hold) the stg stack")
	var seriesFile, dir, branch *string
	var jsonOut, noBuild, complete *bool
	switch sub {
	case "apply":
		seriesFile = pathFlag(fs, "series", filepath.Join("patches", "series"), "series `file` to import")
		branch = fs.String("branch", "", "create (or use) this `branch` for the stack instead of the checked-out one")
	case "export":
		dir = pathFlag(fs, "dir", "patches", "`directory` to write the series to")
		complete = fs.Bool("complete", false, "refuse a stack with unapplied patches instead of exporting the applied ones")
	case "list":
		jsonOut = fs.Bool("json", false, "print JSON")
	case "goto":
	case "check":
		seriesFile = pathFlag(fs, "series", filepath.Join("patches", "series"), "series `file` to check")
		jsonOut = fs.Bool("json", false, "print the report as JSON")
		noBuild = fs.Bool("no-build", false, "skip the bisectability build")
	default:
		fmt.Fprint(stderr, seriesUsage)
		return usageErrorf("unknown series command %q; use apply, export, list, goto or check", sub)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// check works on a temporary work tree; with no tree named it checks on ppkit's import of
	// linux-source-5.10. The other commands change or read the user's stack: they need one.
	userTree := *kernel
	if userTree == "" {
		userTree = harness.ConfiguredKernelTree(ctx)
	}
	if userTree == "" && sub != "check" {
		return usageErrorf("--kernel DIR is required: the kernel git tree of the stg stack")
	}
	// A bad series file is the user's input: said at once, before a kernel tree is opened (or
	// imported, which takes minutes on a fresh machine).
	var series *stgit.Series
	if seriesFile != nil {
		var err error
		if series, err = stgit.ReadSeries(*seriesFile); err != nil {
			return usageErrorf("%v", err)
		}
	}
	stackTree := userTree
	if stackTree == "" {
		var err error
		if stackTree, err = harness.LinuxSourceTree(ctx, "", stderr); err != nil {
			return failf("%v", err)
		}
	}
	repo, err := stgit.Open(ctx, stackTree)
	if err != nil {
		return failf("%v", err)
	}
	switch sub {
	case "apply":
		if fs.NArg() != 0 {
			return usageErrorf("apply takes no arguments")
		}
		s := series
		if err := repo.Apply(ctx, s, *branch); err != nil {
			return failf("%v", err)
		}
		// The series is applied: a Ctrl-C now must not turn that into a failure.
		ps, err := repo.List(context.WithoutCancel(ctx))
		if err != nil {
			return failf("%v", err)
		}
		fmt.Fprintf(stdout, "applied %d patches of %s; the stack has %d\n", len(s.Patches), *seriesFile, len(ps))
	case "export":
		if fs.NArg() != 0 {
			return usageErrorf("export takes no arguments")
		}
		ps, err := repo.List(ctx)
		if err != nil {
			return failf("%v", err)
		}
		var unapplied []string
		for _, p := range ps {
			if !p.Applied {
				unapplied = append(unapplied, p.Name)
			}
		}
		export := repo.ExportApplied
		if *complete {
			export = repo.Export
		}
		if err := export(ctx, *dir); err != nil {
			return failf("%v", err)
		}
		if len(unapplied) > 0 {
			fmt.Fprintf(stderr, "ppkit series export: %d of %d patches are not applied and were not exported: %s ('stg push -a' and export again; --complete refuses such a stack)\n",
				len(unapplied), len(ps), strings.Join(unapplied, ", "))
		}
		s, err := stgit.ReadSeries(filepath.Join(*dir, "series"))
		if err != nil {
			return failf("%v", err)
		}
		fmt.Fprintf(stdout, "exported %d patches to %s\n", len(s.Patches), *dir)
	case "list":
		if fs.NArg() != 0 {
			return usageErrorf("list takes no arguments")
		}
		ps, err := repo.List(ctx)
		if err != nil {
			return failf("%v", err)
		}
		if *jsonOut {
			if ps == nil {
				ps = []stgit.StackPatch{}
			}
			return seriesWriteJSON(stdout, ps)
		}
		for i, p := range ps {
			mark := "-"
			switch {
			case p.Top:
				mark = ">"
			case p.Applied:
				mark = "+"
			}
			fmt.Fprintf(stdout, "%s %2d %s  %s\n", mark, i+1, p.Name, p.Subject)
		}
	case "goto":
		if fs.NArg() != 1 {
			return usageErrorf("goto takes one patch name or number")
		}
		if err := repo.Goto(ctx, fs.Arg(0)); err != nil {
			return failf("%v", err)
		}
	case "check":
		if fs.NArg() != 0 {
			return usageErrorf("check takes no arguments")
		}
		return seriesCheck(ctx, repo, userTree, series, *jsonOut, *noBuild, stdout, stderr)
	}
	return nil
}

func seriesCheck(ctx context.Context, repo *stgit.Repo, tree string, s *stgit.Series, jsonOut, noBuild bool, stdout, stderr io.Writer) error {
	opts := stgit.CheckOptions{Progress: stderr}
	if !noBuild {
		b, cleanup, err := seriesBuilder(ctx, repo, tree, s, stderr)
		if err != nil {
			return failf("build set-up: %v", err)
		}
		defer cleanup()
		opts.Builder = b
	}
	rep, err := repo.Check(ctx, s, opts)
	if err != nil {
		return failf("%v", err)
	}
	if jsonOut {
		if err := seriesWriteJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		for _, p := range rep.Patches {
			verdict := "ok  "
			if !p.OK() {
				verdict = "FAIL"
			}
			fmt.Fprintf(stdout, "%s %d/%d %s: %s\n", verdict, p.Index, len(s.Patches), p.Name, p.Subject)
			for _, f := range p.Findings {
				fmt.Fprintf(stdout, "       %-7s %-10s %s\n", f.Severity, f.Check, f.Message)
			}
		}
	}
	if !rep.OK {
		var bad []string
		for _, p := range rep.Patches {
			if !p.OK() {
				bad = append(bad, p.Name)
			}
		}
		return failf("%d of %d patches fail the check: %s", len(bad), len(s.Patches), strings.Join(bad, ", "))
	}
	if !jsonOut {
		fmt.Fprintf(stdout, "all %d patches pass\n", len(s.Patches))
	}
	return nil
}

func seriesWriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
