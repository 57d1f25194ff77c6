//go:build e2e

package ci

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/internal/cachedir"
	"github.com/ppkit/ppkit/tests/report"
)

// needBench requires what a ppkit ci run on the emulated board needs, plus extra tools.
func needBench(t *testing.T, extra ...string) {
	t.Helper()
	for _, tool := range append(append(extra, "qemu-system-aarch64", "iperf", "ip"), DefaultTools...) {
		_, err := exec.LookPath(tool)
		need(t, tool, err)
	}
	_, err := os.Stat(harness.DefaultKernelTarball)
	need(t, "linux-source-5.10", err)
	if os.Geteuid() != 0 {
		need(t, "root (network namespaces, tap devices)", os.ErrPermission)
	}
}

// gitIn runs git in dir with a pinned identity and without the caller's repository variables.
func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=Jane Dev", "-c", "user.email=jane@example.org",
		"-c", "commit.gpgsign=false", "-c", "init.defaultBranch=master"}, args...)...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// commitSeries replaces the work tree's patches/ with the series in src and commits it on a new
// branch.
func commitSeries(t *testing.T, work, branch, src string) {
	t.Helper()
	gitIn(t, work, "checkout", "-q", "--orphan", branch)
	gitIn(t, work, "rm", "-rf", "-q", "--ignore-unmatch", ".")
	if err := copyDir(src, filepath.Join(work, "patches")); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(work, "patches", "README.md"))
	gitIn(t, work, "add", "patches")
	gitIn(t, work, "commit", "-q", "-m", "series: "+filepath.Base(src))
}

// stopWorker stops a hook worker still running when the test ends (it failed or timed out):
// SIGTERM to its process group lets ppkit ci remove its QEMU, namespaces and temporary trees.
func stopWorker(t *testing.T, ciDir string) {
	// A worker that wrote its last status is about to exit by itself.
	pid := waitWorkerGone(ciDir, 10*time.Second)
	if pid == 0 {
		return
	}
	t.Logf("stopping the hook worker %d", pid)
	syscall.Kill(-pid, syscall.SIGTERM)
	waitWorkerGone(ciDir, time.Minute)
}

// TestPostReceiveGoodAndBadSeries is the acceptance test of the CI pipeline: a bare repository
// with ci/post-receive installed receives two branches in one push — the series of patches/ and
// its known-bad variant series-v2-coalesce-mixes-refs of tests/fixtures — and the hook's detached
// runs of `ppkit ci` (series check with per-patch arm64 builds, the tcp-slowread procedure on the
// mvneta board, the model)
// leave one passing and one failing result, each with its JUnit file, while the repository's
// refs stay exactly as pushed. The variant is V2's (six of its seven patches are those of
// patches/; the fourth differs in net/core/skbuff.c only), so its per-patch builds recompile
// one file each on a cold machine, where a V1 variant recompiled much of the kernel per patch.
func TestPostReceiveGoodAndBadSeries(t *testing.T) {
	good, _ := filepath.Abs(filepath.Join("..", "patches"))
	bad, _ := filepath.Abs(filepath.Join("..", "tests", "fixtures", "series-v2-coalesce-mixes-refs"))
	for _, dir := range []string{good, bad} {
		_, err := os.Stat(filepath.Join(dir, "series"))
		need(t, "the series "+dir, err)
	}
	needBench(t, "flock", "setsid", "timeout")

	ppkit := buildPPKit(t, t.TempDir())
	ciDir := filepath.Join(t.TempDir(), "ci")
	bare, work := hookRepo(t, ppkit, ciDir, "ppkit.ci.args", "--time 10s tcp-slowread", "ppkit.ci.timeout", "100m")
	cache, err := cachedir.Root()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(StateDir(cache, bare)) })
	t.Cleanup(func() { stopWorker(t, ciDir) })

	commitSeries(t, work, "good", good)
	commitSeries(t, work, "coalesce-mixes-refs", bad)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	push := exec.CommandContext(ctx, "git", "push", "origin", "good", "coalesce-mixes-refs")
	push.Dir = work
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("git push: %v\n%s", err, out)
	}
	pushed := refsOf(t, bare)

	for _, tc := range []struct {
		branch  string
		exit    string
		verdict string
	}{
		{"good", "0", VerdictPass},
		{"coalesce-mixes-refs", "1", VerdictFail},
	} {
		st := waitStatus(t, ciDir, tc.branch, 110*time.Minute)
		run := st[len(st)-1]
		log, _ := os.ReadFile(filepath.Join(run, "ci.log"))
		if st[0] != tc.exit || st[1] != tc.verdict {
			t.Errorf("%s: status %v, want exit %s %s; ci.log:\n%s", tc.branch, st, tc.exit, tc.verdict, log)
		}
		data, err := os.ReadFile(filepath.Join(run, "result.json"))
		if err != nil {
			t.Fatalf("%s: %v", tc.branch, err)
		}
		var res RunResult
		if err := json.Unmarshal(data, &res); err != nil {
			t.Fatalf("%s: result.json: %v", tc.branch, err)
		}
		summary, _ := os.ReadFile(filepath.Join(run, "summary.md"))
		t.Logf("%s: exit %s, %s\n%s", tc.branch, st[0], st[1], summary)
		x, err := os.ReadFile(filepath.Join(run, "junit.xml"))
		if err != nil {
			t.Fatalf("%s: %v", tc.branch, err)
		}
		var doc report.JUnitSuites
		if err := xml.Unmarshal(x, &doc); err != nil {
			t.Fatalf("%s: junit.xml: %v", tc.branch, err)
		}
		slowreadFailed := false
		for _, s := range doc.Suites {
			for _, c := range s.Cases {
				if c.Name == "tcp-slowread" && strings.HasPrefix(s.Name, "ppkit test series") && c.Failure != nil {
					slowreadFailed = true
				}
			}
		}
		switch tc.verdict {
		case VerdictPass:
			if doc.Failures != 0 || doc.Errors != 0 || res.Check == nil || !res.Check.OK || res.Tests == nil || !res.Tests.Pass {
				t.Errorf("good: junit %d failures %d errors; result stage %s: %s", doc.Failures, doc.Errors, res.Stage, res.Message)
			}
			if res.Stored == "" {
				t.Errorf("good: the passing run was not stored as the reference")
			}
		case VerdictFail:
			// The variant builds and is clean: it must fail in the procedures, on the kernel.
			if res.Stage != StageTest || !slowreadFailed || res.Check == nil || !res.Check.OK {
				t.Errorf("coalesce-mixes-refs: stage %s, tcp-slowread failed in JUnit %v: %s", res.Stage, slowreadFailed, res.Message)
			}
			if !strings.Contains(res.Message, "dma-mapped-page-freed") && !strings.Contains(res.Message, "inflight-leak") {
				t.Errorf("coalesce-mixes-refs failed without dma-mapped-page-freed or inflight-leak: %s", res.Message)
			}
		}
		if _, err := os.Stat(filepath.Join(run, "report", "index.html")); err != nil {
			t.Errorf("%s: no report: %v", tc.branch, err)
		}
	}
	if after := refsOf(t, bare); after != pushed {
		t.Errorf("the CI runs changed the pushed repository:\nafter push:\n%s\nafter runs:\n%s", pushed, after)
	}
	wlog, _ := os.ReadFile(filepath.Join(ciDir, "worker.log"))
	t.Logf("worker.log:\n%s", wlog)
}
