//go:build e2e

package stgit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ppkit/ppkit/stgit/stgtest"
)

// exportedSeries makes a kernel repo with a stack of n patches, exports it with the real stg to
// a patches/ directory and returns (kernel dir, patches dir).
func exportedSeries(t *testing.T, n int) (string, string) {
	t.Helper()
	stgtest.Hermetic(t)
	src := stgtest.KernelRepo(t)
	stgtest.Stack(t, src, stgtest.DefaultPatches(n))
	patches := filepath.Join(t.TempDir(), "patches")
	stgtest.Stg(t, src, "export", "-d", patches)
	return src, patches
}

func TestApplyImportsSeriesOnNewBranch(t *testing.T) {
	ctx := context.Background()
	src, patches := exportedSeries(t, 4)
	kernel := stgtest.KernelRepo(t) // same base content, same dates: same base commit
	s, err := ReadSeries(filepath.Join(patches, "series"))
	if err != nil {
		t.Fatal(err)
	}
	if head := strings.TrimSpace(stgtest.Git(t, kernel, "rev-parse", "HEAD")); head != s.Base {
		t.Fatalf("scratch bases differ: %s vs %s", head, s.Base)
	}
	if len(s.Patches) != 4 || s.Base == "" {
		t.Fatalf("series = %+v", s)
	}
	r, err := Open(ctx, kernel)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(ctx, s, "series"); err != nil {
		t.Fatal(err)
	}
	ps, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 4 || !ps[3].Top || ps[0].Subject != "net: foo: patch number 1" {
		t.Fatalf("list = %+v", ps)
	}
	if got, want := stgtest.Git(t, kernel, "rev-parse", "HEAD^{tree}"), stgtest.Git(t, src, "rev-parse", "HEAD^{tree}"); got != want {
		t.Fatalf("applied tree %s, want %s", got, want)
	}
	if err := r.Goto(ctx, "2"); err != nil {
		t.Fatal(err)
	}
	ps, _ = r.List(ctx)
	if !ps[1].Top || ps[2].Applied {
		t.Fatalf("after goto 2: %+v", ps)
	}
	if base, err := r.Base(ctx); err != nil || base != s.Base {
		t.Fatalf("base = %q, %v; want %s", base, err, s.Base)
	}
	if err := r.Goto(ctx, "nope"); err == nil || !strings.Contains(err.Error(), "no patch") {
		t.Fatalf("goto nope: %v", err)
	}
}

func TestApplyRejectedPatchLeavesTreeUnchanged(t *testing.T) {
	ctx := context.Background()
	_, patches := exportedSeries(t, 4)
	kernel := stgtest.KernelRepo(t)
	// The tree moved under patch 3: its context line changed.
	stgtest.WriteFile(t, kernel, stgtest.BaseFile, strings.Replace(readFile(t, filepath.Join(kernel, stgtest.BaseFile)), "int skb_counter_6;", "int skb_counter_6 = 66;", 1))
	stgtest.Git(t, kernel, "commit", "-q", "-am", "move the tree")
	before := stgtest.Snapshot(t, kernel, patches)
	s, err := ReadSeries(filepath.Join(patches, "series"))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := Open(ctx, kernel)
	for _, branch := range []string{"", "series"} {
		err = r.Apply(ctx, s, branch)
		var ae *ApplyError
		if !errors.As(err, &ae) {
			t.Fatalf("apply: %v, want an ApplyError", err)
		}
		msg := err.Error()
		if ae.Patch != "net-foo-patch-number-3" || !strings.Contains(msg, "net/core/skbuff.c hunk #1") || !strings.Contains(msg, "@@ -") || strings.Contains(msg, "\n") {
			t.Fatalf("error %q does not name the patch and hunk in one line", msg)
		}
		if after := stgtest.Snapshot(t, kernel, patches); after != before {
			t.Fatalf("tree changed:\n%s\n---\n%s", before, after)
		}
	}
}

func TestApplyRefusesDirtyTreeAndBadSeries(t *testing.T) {
	ctx := context.Background()
	_, patches := exportedSeries(t, 2)
	kernel := stgtest.KernelRepo(t)
	r, _ := Open(ctx, kernel)

	if _, err := ReadSeries(filepath.Join(patches, "nope")); err == nil || !strings.Contains(err.Error(), "read series file") {
		t.Fatalf("missing series: %v", err)
	}
	os.Chmod(filepath.Join(patches, "series"), 0)
	if os.Geteuid() != 0 {
		if _, err := ReadSeries(filepath.Join(patches, "series")); err == nil {
			t.Fatal("unreadable series accepted")
		}
	}
	os.Chmod(filepath.Join(patches, "series"), 0o644)
	os.Remove(filepath.Join(patches, "net-foo-patch-number-2"))
	if _, err := ReadSeries(filepath.Join(patches, "series")); err == nil || !strings.Contains(err.Error(), "net-foo-patch-number-2") {
		t.Fatalf("series with a missing patch: %v", err)
	}
	stgtest.Stg(t, patches, "--version") // keep stg in the loop even here
	s := &Series{File: filepath.Join(patches, "series"), Patches: []string{"net-foo-patch-number-1"}}
	stgtest.WriteFile(t, kernel, "MAINTAINERS", "dirty\n")
	before := stgtest.Snapshot(t, kernel)
	if err := r.Apply(ctx, s, ""); err == nil || !strings.Contains(err.Error(), "uncommitted changes") {
		t.Fatalf("dirty tree: %v", err)
	}
	if stgtest.Snapshot(t, kernel) != before {
		t.Fatal("dirty tree changed")
	}
}

func TestExportIsAtomicAndKeepsForeignFiles(t *testing.T) {
	ctx := context.Background()
	stgtest.Hermetic(t)
	kernel := stgtest.KernelRepo(t)
	stgtest.Stack(t, kernel, stgtest.DefaultPatches(3))
	patches := filepath.Join(t.TempDir(), "patches")
	r, _ := Open(ctx, kernel)
	if err := r.Export(ctx, patches); err != nil {
		t.Fatal(err)
	}
	stgtest.WriteFile(t, patches, "README.md", "the series\n")
	stgtest.Stg(t, kernel, "delete", "net-foo-patch-number-3")
	stgtest.Stg(t, kernel, "rename", "net-foo-patch-number-2", "net-foo-second")
	if err := r.Export(ctx, patches); err != nil {
		t.Fatal(err)
	}
	s, err := ReadSeries(filepath.Join(patches, "series"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.Patches, ",") != "net-foo-patch-number-1,net-foo-second" {
		t.Fatalf("series %v", s.Patches)
	}
	entries, _ := os.ReadDir(patches)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "README.md,net-foo-patch-number-1,net-foo-second,series" {
		t.Fatalf("patches/ holds %v", names)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(patches), ".export-*"))
	if len(left) != 0 {
		t.Fatalf("temporary export dirs left: %v", left)
	}
	// A failing export (no applied patch) leaves patches/ as it was.
	before := stgtest.Snapshot(t, kernel, patches)
	stgtest.Stg(t, kernel, "pop", "-a")
	before = stgtest.Snapshot(t, kernel, patches)
	if err := r.Export(ctx, patches); err == nil {
		t.Fatal("export of an empty stack succeeded")
	}
	if stgtest.Snapshot(t, kernel, patches) != before {
		t.Fatal("failed export changed patches/")
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestApplyRollsBackAnInterruptedImport makes stg die after importing the first patch (as a
// killed import would) and checks that Apply puts the tree, branches, refs and config back.
func TestApplyRollsBackAnInterruptedImport(t *testing.T) {
	ctx := context.Background()
	_, patches := exportedSeries(t, 3)
	real, err := exec.LookPath("stg")
	if err != nil {
		t.Fatal(err)
	}
	shim := t.TempDir()
	stgtest.WriteFile(t, shim, "stg", `#!/bin/sh
if [ "$1" = import ]; then
	first=$(grep -v '^#' "$3" | head -1)
	`+real+` import "$(dirname "$3")/$first" || exit 1
	echo "stg import: interrupted" >&2
	exit 1
fi
exec `+real+` "$@"
`)
	os.Chmod(filepath.Join(shim, "stg"), 0o755)
	t.Setenv("PATH", shim+string(os.PathListSeparator)+os.Getenv("PATH"))
	s, err := ReadSeries(filepath.Join(patches, "series"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, branch string }{{"new stack on the branch", ""}, {"new branch", "series"}, {"existing stack", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			kernel := stgtest.KernelRepo(t)
			if tc.name == "existing stack" {
				stgtest.Stack(t, kernel, []stgtest.Patch{{Name: "mine", Subject: "net: mine", File: "net/core/page_pool.c", Line: "int mine;"}})
			}
			before := stgtest.Snapshot(t, kernel)
			r, _ := Open(ctx, kernel)
			err := r.Apply(ctx, s, tc.branch)
			if err == nil || !strings.Contains(err.Error(), "interrupted") {
				t.Fatalf("apply: %v", err)
			}
			if after := stgtest.Snapshot(t, kernel); after != before {
				t.Fatalf("not rolled back:\n%s", lineDiff(before, after))
			}
		})
	}
}

// stackState is what "as before" means for a stack: every ref, stg's view of the stack, and
// the stack files under .git/patches.
func stackState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(stgtest.Git(t, dir, "for-each-ref", "--format=%(refname) %(objectname)"))
	b.WriteString(stgtest.Run(t, dir, "git", "symbolic-ref", "HEAD"))
	b.WriteString(stgtest.Git(t, dir, "status", "--porcelain", "--untracked-files=all"))
	series := exec.Command("stg", "series", "-a")
	series.Dir = dir
	out, err := series.CombinedOutput()
	fmt.Fprintf(&b, "stg series: %v\n%s", err, out)
	b.WriteString(stgtest.Snapshot(t, dir))
	return b.String()
}

// TestApplyBadPatchNameRollsBack imports a series whose second patch stg 0.19 crashes on (a
// name ending in .lock): the real stg fails mid-import, and the stack, its files and refs are
// as before; stg series, pop and push still work.
func TestApplyBadPatchNameRollsBack(t *testing.T) {
	ctx := context.Background()
	_, patches := exportedSeries(t, 3)
	os.Rename(filepath.Join(patches, "net-foo-patch-number-2"), filepath.Join(patches, "net-foo-2.lock"))
	stgtest.WriteFile(t, patches, "series", "net-foo-patch-number-1\nnet-foo-2.lock\nnet-foo-patch-number-3\n")
	s, err := ReadSeries(filepath.Join(patches, "series"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, branch string }{{"existing stack", ""}, {"new stack", ""}, {"new branch", "pp"}} {
		t.Run(tc.name, func(t *testing.T) {
			kernel := stgtest.KernelRepo(t)
			if tc.name == "existing stack" {
				stgtest.Stack(t, kernel, []stgtest.Patch{{Name: "mine", Subject: "net: mine", File: "net/core/page_pool.c", Line: "int mine;"}})
			}
			before := stackState(t, kernel)
			r, _ := Open(ctx, kernel)
			err := r.Apply(ctx, s, tc.branch)
			if err == nil || !strings.Contains(err.Error(), "net-foo-2.lock") || !strings.Contains(err.Error(), "rename it") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("apply: %v", err)
			}
			if after := stackState(t, kernel); after != before {
				t.Fatalf("not rolled back:\n%s", lineDiff(before, after))
			}
			if tc.name == "existing stack" {
				stgtest.Stg(t, kernel, "pop")
				stgtest.Stg(t, kernel, "push")
			}
		})
	}
}

// TestApplyCtrlC sends SIGINT to a real ppkit process (built from this tree) at random points
// of an 80-patch 'ppkit series apply', ten times: each time the stack is as before (refs, stg
// series, stack files), and stg pop/push still work; a run that finished before the signal has
// the whole series.
func TestApplyCtrlC(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 80-patch imports take minutes")
	}
	stgtest.Require(t, "go")
	bin := filepath.Join(t.TempDir(), "ppkit")
	build := exec.Command("go", "build", "-o", bin, "github.com/ppkit/ppkit/cmd/ppkit")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	stgtest.Hermetic(t)
	src := stgtest.KernelRepo(t)
	ps := make([]stgtest.Patch, 80)
	for i := range ps {
		ps[i] = stgtest.Patch{
			Name:    fmt.Sprintf("pp-%02d", i+1),
			Subject: fmt.Sprintf("net: page_pool: step %d", i+1),
			File:    fmt.Sprintf("net/core/pp%02d.c", i+1),
			Line:    fmt.Sprintf("int pp_step_%d;", i+1),
		}
	}
	stgtest.Stack(t, src, ps)
	patches := filepath.Join(t.TempDir(), "patches")
	stgtest.Stg(t, src, "export", "-d", patches)
	series := filepath.Join(patches, "series")

	kernel := stgtest.KernelRepo(t)
	stgtest.Stack(t, kernel, []stgtest.Patch{{Name: "mine", Subject: "net: mine", File: "net/core/page_pool.c", Line: "int mine;"}})
	stgtest.Stg(t, kernel, "pop")
	stgtest.Stg(t, kernel, "push")
	before := stackState(t, kernel)
	apply := func(delay time.Duration) (code int, stderr string, took time.Duration) {
		cmd := exec.Command(bin, "series", "apply", "--kernel", kernel, "--series", series)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if delay >= 0 {
			time.AfterFunc(delay, func() { cmd.Process.Signal(os.Interrupt) })
		}
		err := cmd.Wait()
		took = time.Since(start)
		if err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatal(err)
			}
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return -int(ws.Signal()), errb.String(), took
			}
			return ee.ExitCode(), errb.String(), took
		}
		return 0, errb.String(), took
	}
	// One full run measures how long the import takes; then it is undone with stg.
	code, stderr, full := apply(-1)
	if code != 0 {
		t.Fatalf("full apply: exit %d: %s", code, stderr)
	}
	if n := strings.Count(stgtest.Stg(t, kernel, "series", "-a"), "\n"); n != 81 {
		t.Fatalf("full apply left %d patches", n)
	}
	t.Logf("a full apply takes %v", full)
	undo := []string{"delete"}
	for i := len(ps); i >= 1; i-- {
		undo = append(undo, fmt.Sprintf("pp-%02d", i))
	}
	stgtest.Stg(t, kernel, undo...)
	// Deleting patches leaves the stack log ref and stack files of a different history: start
	// the comparison from the state after the undo.
	before = stackState(t, kernel)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	interrupted, early := 0, 0
	for try := 0; try < 10; try++ {
		delay := time.Duration(rng.Int63n(int64(full) * 4 / 5))
		code, stderr, _ := apply(delay)
		after := stackState(t, kernel)
		switch {
		case code == -int(syscall.SIGINT) && stderr == "" && after == before:
			// The signal came before ppkit's handler was installed (the first milliseconds
			// of the process, while the Go runtime and package initialisers run): the
			// default action ended it before it had read or changed anything, the way a
			// shell expects a Ctrl-C'd program to end.
			early++
		case code == 0:
			// The signal came after the import had finished: the whole series is there.
			if n := strings.Count(stgtest.Stg(t, kernel, "series", "-a"), "\n"); n != 81 {
				t.Fatalf("try %d (SIGINT after %v): exit 0 with %d patches", try, delay, n)
			}
			stgtest.Stg(t, kernel, undo...)
			before = stackState(t, kernel)
		default:
			interrupted++
			if after != before {
				t.Fatalf("try %d (SIGINT after %v, exit %d, %q): the stack changed:\n%s", try, delay, code, stderr, lineDiff(before, after))
			}
			// ppkit acknowledges the signal at once, then says how it ended: exit 130.
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != 130 || len(lines) > 2 || !strings.Contains(lines[len(lines)-1], "interrupted") ||
				(len(lines) == 2 && !strings.Contains(lines[0], "stopping, and removing what this run made")) {
				t.Fatalf("try %d: exit %d, stderr %q; want 130, the acknowledgement and one line saying it was interrupted", try, code, stderr)
			}
			series := stgtest.Stg(t, kernel, "series", "-a")
			head := stgtest.Git(t, kernel, "rev-parse", "HEAD")
			stgtest.Stg(t, kernel, "pop")
			stgtest.Stg(t, kernel, "push")
			if stgtest.Stg(t, kernel, "series", "-a") != series || stgtest.Git(t, kernel, "rev-parse", "HEAD") != head {
				t.Fatalf("try %d: stg pop/push do not work on the restored stack", try)
			}
			// pop and push append to stg's stack log: compare the next try with this state.
			before = stackState(t, kernel)
		}
		t.Logf("try %d: SIGINT after %v: exit %d %s", try, delay, code, strings.TrimSpace(stderr))
	}
	if interrupted < 5 {
		t.Fatalf("only %d of 10 tries were interrupted mid-apply (%d before the handler)", interrupted, early)
	}
}

// TestExportPartialStack: a stack with unapplied patches is refused by Export with their names;
// ExportApplied writes the applied ones and says in the series file what it left out.
func TestExportPartialStack(t *testing.T) {
	ctx := context.Background()
	stgtest.Hermetic(t)
	kernel := stgtest.KernelRepo(t)
	stgtest.Stack(t, kernel, stgtest.DefaultPatches(4))
	stgtest.Stg(t, kernel, "pop", "-n", "2")
	r, _ := Open(ctx, kernel)
	patches := filepath.Join(t.TempDir(), "patches")
	err := r.Export(ctx, patches)
	var pe *PartialStackError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "net-foo-patch-number-3, net-foo-patch-number-4") || !strings.Contains(err.Error(), "stg push -a") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("export of a partly applied stack: %v", err)
	}
	if _, err := os.Stat(patches); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused export wrote patches/")
	}
	if err := r.ExportApplied(ctx, patches); err != nil {
		t.Fatal(err)
	}
	series := readFile(t, filepath.Join(patches, "series"))
	if !strings.HasSuffix(series, "# Not exported (not applied): net-foo-patch-number-3 net-foo-patch-number-4\n") {
		t.Fatalf("series file:\n%s", series)
	}
	s, err := ReadSeries(filepath.Join(patches, "series"))
	if err != nil || strings.Join(s.Patches, ",") != "net-foo-patch-number-1,net-foo-patch-number-2" {
		t.Fatalf("%+v %v", s, err)
	}
}
