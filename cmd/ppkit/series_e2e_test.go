//go:build e2e

package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/stgit"
	"github.com/ppkit/ppkit/stgit/stgtest"
)

// seriesFixture exports a 4-patch series from one scratch kernel and returns a fresh kernel
// with the same base and the patches/ directory.
func seriesFixture(t *testing.T) (kernel, patches string) {
	t.Helper()
	stgtest.Hermetic(t)
	src := stgtest.KernelRepo(t)
	stgtest.Stack(t, src, stgtest.DefaultPatches(4))
	patches = filepath.Join(t.TempDir(), "patches")
	stgtest.Stg(t, src, "export", "-d", patches)
	return stgtest.KernelRepo(t), patches
}

func TestSeriesApplyListExport(t *testing.T) {
	kernel, patches := seriesFixture(t)
	series := filepath.Join(patches, "series")
	if code, _, stderr := ppkit(t, "series", "apply", "--kernel", kernel, "--series", series, "--branch", "pp"); code != 0 {
		t.Fatalf("apply: %d %s", code, stderr)
	}
	code, stdout, stderr := ppkit(t, "series", "list", "--kernel", kernel, "--json")
	if code != 0 {
		t.Fatalf("list: %d %s", code, stderr)
	}
	var ps []stgit.StackPatch
	if err := json.Unmarshal([]byte(stdout), &ps); err != nil || len(ps) != 4 || !ps[3].Top {
		t.Fatalf("list --json: %v %s", err, stdout)
	}
	if code, _, stderr := ppkit(t, "series", "goto", "--kernel", kernel, "2"); code != 0 {
		t.Fatalf("goto: %s", stderr)
	}
	out := filepath.Join(t.TempDir(), "exported")
	if code, _, stderr := ppkit(t, "series", "export", "--kernel", kernel, "--dir", out); code != 0 {
		t.Fatalf("export: %s", stderr)
	}
	s, err := stgit.ReadSeries(filepath.Join(out, "series"))
	if err != nil || len(s.Patches) != 2 {
		t.Fatalf("exported after goto 2: %+v %v", s, err)
	}
	orig, _ := os.ReadFile(filepath.Join(patches, s.Patches[1]))
	again, _ := os.ReadFile(filepath.Join(out, s.Patches[1]))
	if string(orig) != string(again) {
		t.Fatalf("round trip changed %s:\n%s\n---\n%s", s.Patches[1], orig, again)
	}
}

func TestSeriesBadInputChangesNothing(t *testing.T) {
	kernel, patches := seriesFixture(t)
	series := filepath.Join(patches, "series")
	// Patch 3 no longer applies: the tree moved under it.
	path := filepath.Join(kernel, stgtest.BaseFile)
	data, _ := os.ReadFile(path)
	stgtest.WriteFile(t, kernel, stgtest.BaseFile, strings.Replace(string(data), "int skb_counter_6;", "int skb_counter_6 = 66;", 1))
	stgtest.Git(t, kernel, "commit", "-q", "-am", "move the tree")
	unreadable := filepath.Join(t.TempDir(), "series")
	os.WriteFile(unreadable, []byte("missing-patch\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"patch does not apply", []string{"series", "apply", "--kernel", kernel, "--series", series}, "patch net-foo-patch-number-3 does not apply: net/core/skbuff.c hunk #1"},
		{"series names a missing patch", []string{"series", "apply", "--kernel", kernel, "--series", unreadable}, "missing-patch"},
		{"no series file", []string{"series", "apply", "--kernel", kernel, "--series", filepath.Join(patches, "nope")}, "read series file"},
		{"export without stack", []string{"series", "export", "--kernel", kernel, "--dir", patches}, "no stg stack"},
		{"not a tree", []string{"series", "list", "--kernel", t.TempDir()}, "not a git work tree"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := stgtest.Snapshot(t, kernel, patches)
			code, _, stderr := ppkit(t, tc.args...)
			if code == 0 || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want one line with %q", code, stderr, tc.want)
			}
			if stgtest.Snapshot(t, kernel, patches) != before {
				t.Fatal("patches/, the stack or the tree changed")
			}
		})
	}
}

func TestSeriesCheckJSON(t *testing.T) {
	stgtest.Hermetic(t)
	stgtest.Require(t, "make", "perl", "aarch64-linux-gnu-gcc")
	kernel := stgtest.KernelRepo(t)
	stgtest.AddKernelScripts(t, kernel)
	ps := stgtest.DefaultPatches(2)
	ps[1].Replace, ps[1].Line = 4, "int skb_counter_3 = ;" // breaks the build
	stgtest.Stack(t, kernel, ps)
	patches := filepath.Join(t.TempDir(), "patches")
	if code, _, stderr := ppkit(t, "series", "export", "--kernel", kernel, "--dir", patches); code != 0 {
		t.Fatalf("export: %s", stderr)
	}
	useMakeBuilder(t)
	before := stgtest.Snapshot(t, kernel, patches)
	code, stdout, stderr := ppkit(t, "series", "check", "--kernel", kernel, "--series", filepath.Join(patches, "series"), "--json")
	if code != 1 || !strings.Contains(stderr, "1 of 2 patches fail the check: net-foo-patch-number-2") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var rep stgit.CheckReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if rep.OK || len(rep.Patches) != 2 || !rep.Patches[0].Built || rep.Patches[1].Built {
		t.Fatalf("report %+v", rep)
	}
	if stgtest.Snapshot(t, kernel, patches) != before {
		t.Fatal("check changed the tree or patches/")
	}
}

// useMakeBuilder makes `ppkit series check` compile the touched objects of the scratch tree
// (which is no Linux tree the harness could build) for the rest of the test.
func useMakeBuilder(t *testing.T) {
	saved := seriesBuilder
	t.Cleanup(func() { seriesBuilder = saved })
	seriesBuilder = func(_ context.Context, _ *stgit.Repo, _ string, _ *stgit.Series, log io.Writer) (stgit.Builder, func(), error) {
		return &stgit.MakeBuilder{OutDir: t.TempDir(), Log: log}, func() {}, nil
	}
}
