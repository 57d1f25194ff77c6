package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/ci"
	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/stgit"
	"github.com/ppkit/ppkit/stgit/stgtest"
	"github.com/ppkit/ppkit/tests/procedure"
)

// ciScratch is a scratch kernel-like git repository (tiny Kbuild-like Makefile, the real
// checkpatch.pl of Linux 5.10) whose master holds three commits on top of base, made with the
// real stg; patch 2 does not compile when broken is set.
func ciScratch(t *testing.T, broken bool) (kernel, base string) {
	t.Helper()
	// stgtest reads the real cache root at init: the 5.10 scripts are extracted once there.
	stgtest.Hermetic(t)
	stgtest.Require(t, "make", "perl", "aarch64-linux-gnu-gcc")
	t.Setenv("PPKIT_CACHE", t.TempDir()) // ci's stored results stay inside the test
	kernel = stgtest.KernelRepo(t)
	stgtest.AddKernelScripts(t, kernel)
	base = strings.TrimSpace(stgtest.Git(t, kernel, "rev-parse", "HEAD"))
	ps := stgtest.DefaultPatches(3)
	if broken {
		// Patch 2 breaks the build and patch 3 repairs it: only a per-patch build sees it.
		ps[1].Line = "int skb_counter_3 = ;"
		ps[2].Replace, ps[2].Line = 4, "int skb_counter_3 = 3;"
	}
	stgtest.Stack(t, kernel, ps)
	stgtest.Stg(t, kernel, "commit", "--all") // plain commits, as a pushed kernel branch has
	return kernel, base
}

// setCIHooks gives `ppkit ci` the Kbuild-like stand-in builder of stgit (the scratch kernel has
// no arm64 Kconfig) and, when launch is set, a launcher; they are reset when the test ends.
func setCIHooks(t *testing.T, launch func(tree string) procedure.Launcher) {
	t.Helper()
	old := ciHooks
	t.Cleanup(func() { ciHooks = old })
	ciHooks.builder = func(tree string, log io.Writer) (stgit.Builder, func(), error) {
		out, err := os.MkdirTemp("", "ppkit-ci-test-build-")
		if err != nil {
			return nil, nil, err
		}
		return &stgit.MakeBuilder{OutDir: out, Jobs: 1, Log: log}, func() { os.RemoveAll(out) }, nil
	}
	ciHooks.launcher = launch
	ciHooks.tools = []string{"git", "stg", "perl", "make", "aarch64-linux-gnu-gcc"}
}

func readCIResult(t *testing.T, out string) *ci.RunResult {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res ci.RunResult
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("result.json: %v\n%s", err, data)
	}
	return &res
}

type junitDoc struct {
	Failures int `xml:"failures,attr"`
	Errors   int `xml:"errors,attr"`
	Suites   []struct {
		Name  string `xml:"name,attr"`
		Cases []struct {
			Name    string    `xml:"name,attr"`
			Failure *struct{} `xml:"failure"`
			Error   *struct{} `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func readJUnit(t *testing.T, out string) junitDoc {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "junit.xml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc junitDoc
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("junit.xml: %v\n%s", err, data)
	}
	return doc
}

// TestCIPatch2DoesNotBuild is the acceptance test: `ppkit ci` on a ref whose patch 2 does not
// build fails in the series check and names patch 2 — for a kernel branch (base..ref, exported
// through stg) and for a repository holding patches/ — and the repositories are untouched.
func TestCIPatch2DoesNotBuild(t *testing.T) {
	for _, mode := range []string{ci.ModeKernelTree, ci.ModePatches} {
		t.Run(mode, func(t *testing.T) {
			kernel, base := ciScratch(t, true)
			setCIHooks(t, func(string) procedure.Launcher {
				t.Error("the test stage ran after a failed series check")
				return nil
			})
			repo, args := kernel, []string{"--base", base, "--design", "series"}
			if mode == ci.ModePatches {
				// A repository holding the series in patches/, as ppkit's own does.
				repo = filepath.Join(t.TempDir(), "series-repo")
				stgtest.Git(t, filepath.Dir(repo), "init", "-q", repo)
				stgtest.Stg(t, kernel, "uncommit", "-n", "3")
				stgtest.Stg(t, kernel, "export", "-d", filepath.Join(repo, "patches"))
				stgtest.Git(t, repo, "add", "patches")
				stgtest.Git(t, repo, "commit", "-q", "-m", "the series")
				args = []string{"--kernel", kernel}
			}
			before := stgtest.Snapshot(t, repo)
			out := filepath.Join(t.TempDir(), "out")
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"ci", "--repo", repo, "--ref", "master", "--out", out}, args...), &stdout, &stderr)
			if code != 1 {
				t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
			}
			if after := stgtest.Snapshot(t, repo); after != before {
				t.Error("ppkit ci changed the repository")
			}
			last := strings.TrimSpace(stderr.String())
			last = last[strings.LastIndex(last, "\n")+1:]
			for _, want := range []string{"ppkit ci: series-check:", "patch 2/3 net-foo-patch-number-2", "build"} {
				if !strings.Contains(last, want) {
					t.Errorf("last line %q lacks %q", last, want)
				}
			}
			res := readCIResult(t, out)
			if res.Verdict != ci.VerdictFail || res.ExitCode != 1 || res.Stage != ci.StageCheck || res.Mode != mode {
				t.Fatalf("result: verdict %s exit %d stage %s mode %s", res.Verdict, res.ExitCode, res.Stage, res.Mode)
			}
			if res.Check == nil || len(res.Check.Patches) != 3 {
				t.Fatalf("check report: %+v", res.Check)
			}
			for i, p := range res.Check.Patches {
				buildErr := false
				for _, f := range p.Findings {
					buildErr = buildErr || f.Check == "build" && f.Severity == "error"
				}
				if buildErr != (i == 1) {
					t.Errorf("patch %d %s: build error %v, findings %+v", i+1, p.Name, buildErr, p.Findings)
				}
			}
			if got := res.Series.Patches; len(got) != 3 {
				t.Errorf("series: %v", got)
			}
			doc := readJUnit(t, out)
			failed := map[string]bool{}
			for _, s := range doc.Suites {
				for _, c := range s.Cases {
					if c.Failure != nil {
						failed[s.Name+"/"+c.Name] = true
					}
				}
			}
			if !failed["ppkit series check/2 net-foo-patch-number-2"] || !failed["ppkit ci refs/heads/master/series-check"] || len(failed) != 2 || doc.Errors != 0 {
				t.Errorf("junit failures %v, errors %d", failed, doc.Errors)
			}
			summary, _ := os.ReadFile(filepath.Join(out, "summary.md"))
			for _, want := range []string{"— FAIL (exit 1)", "| series-check | **FAIL** |", "| 2 | net-foo-patch-number-2 | net: foo: patch number 2 | **FAIL** |", "| test | skipped |"} {
				if !bytes.Contains(summary, []byte(want)) {
					t.Errorf("summary.md lacks %q:\n%s", want, summary)
				}
			}
		})
	}
}

// ciUnlaunchable is a board that cannot be launched, with the error the harness returns.
type ciUnlaunchable struct{ err error }

func (l ciUnlaunchable) Launch(context.Context, procedure.Kernel, io.Writer) (procedure.Testbed, error) {
	return nil, l.err
}

// TestCIExitCodes: after a clean series check, a board the harness could not start is an
// infrastructure error (exit 2, JUnit <error>), while a kernel that panicked while booting is a
// verdict on the series (exit 1, JUnit <failure>), as syzkaller tells InfraError from BootError.
func TestCIExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		code      int
		verdict   string
		junitFail bool
	}{
		{"qemu-missing", &harness.InfraError{Err: errors.New("exec: qemu-system-aarch64: not found")}, 2, ci.VerdictInfra, false},
		{"kernel-panics-at-boot", &harness.GuestError{Title: "Kernel panic - not syncing: Attempted to kill init!"}, 1, ci.VerdictFail, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kernel, base := ciScratch(t, false)
			launches := 0
			setCIHooks(t, func(tree string) procedure.Launcher {
				launches++
				return ciUnlaunchable{err: tc.err}
			})
			before := stgtest.Snapshot(t, kernel)
			out := filepath.Join(t.TempDir(), "out")
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"ci", "--repo", kernel, "--ref", "master", "--base", base, "--design", "series", "--out", out, "--time", "1s", "tcp"}, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, &stdout, &stderr)
			}
			if stgtest.Snapshot(t, kernel) != before {
				t.Error("ppkit ci changed the repository")
			}
			if launches != 1 {
				t.Errorf("launcher created %d times", launches)
			}
			res := readCIResult(t, out)
			if res.Verdict != tc.verdict || res.Stage != ci.StageTest || res.ExitCode != tc.code {
				t.Fatalf("result: verdict %s stage %s exit %d: %s", res.Verdict, res.Stage, res.ExitCode, res.Message)
			}
			if res.Check == nil || !res.Check.OK {
				t.Fatalf("the series check should pass: %+v", res.Check)
			}
			if res.Tests == nil || len(res.Tests.Results) != 1 || res.Tests.Results[0].Pass {
				t.Fatalf("tests: %+v", res.Tests)
			}
			if res.Stored != "" {
				t.Errorf("a failed run was stored as the reference: %s", res.Stored)
			}
			doc := readJUnit(t, out)
			if (doc.Failures > 0) != tc.junitFail || (doc.Errors > 0) == tc.junitFail {
				t.Errorf("junit failures %d errors %d", doc.Failures, doc.Errors)
			}
			if _, err := os.Stat(filepath.Join(out, "report", "index.html")); err != nil {
				t.Errorf("no report: %v", err)
			}
		})
	}
}

// TestCIUsage: bad input is one clear line, exit 2, and no output directory.
func TestCIUsage(t *testing.T) {
	stgtest.Hermetic(t)
	t.Setenv("PPKIT_CACHE", t.TempDir())
	repo := filepath.Join(t.TempDir(), "r")
	stgtest.Git(t, filepath.Dir(repo), "init", "-q", repo)
	stgtest.WriteFile(t, repo, "README", "x\n")
	stgtest.Git(t, repo, "add", ".")
	stgtest.Git(t, repo, "commit", "-q", "-m", "x")
	notRepo := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ref", "master"}, "--repo DIR is required"},
		{[]string{"--repo", repo}, "--ref REF is required"},
		{[]string{"--repo", notRepo, "--ref", "master"}, "is not a git repository"},
		{[]string{"--repo", repo, "--ref", "nosuchbranch"}, "--ref nosuchbranch does not name a commit"},
		{[]string{"--repo", repo, "--ref", "master", "--base", "nope"}, "--base nope does not name a commit"},
		{[]string{"--repo", repo, "--ref", "master", "nosuchprocedure"}, "nosuchprocedure"},
		{[]string{"--repo", repo, "--ref", "master", "--time", "0"}, "--time"},
	} {
		out := filepath.Join(t.TempDir(), "out")
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append([]string{"ci", "--out", out}, tc.args...), &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%v: wrote %s", tc.args, out)
		}
	}
}
