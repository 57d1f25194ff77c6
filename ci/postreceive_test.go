package ci

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ppkit/ppkit/internal/cachedir"
	"github.com/ppkit/ppkit/stgit/stgtest"
)

// buildPPKit builds the ppkit command into dir and returns its path.
func buildPPKit(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "ppkit")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/ppkit/ppkit/cmd/ppkit")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ppkit: %v\n%s", err, out)
	}
	return bin
}

// hookRepo creates a bare repository with ci/post-receive installed, configured to run ppkit
// and keep its runs in ciDir, and a clone of it to push from.
func hookRepo(t *testing.T, ppkit, ciDir string, config ...string) (bare, work string) {
	t.Helper()
	root := t.TempDir()
	bare = filepath.Join(root, "srv", "linux.git")
	stgtest.Git(t, root, "init", "-q", "--bare", bare)
	hook, err := os.ReadFile("post-receive")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bare, "hooks", "post-receive"), hook, 0o755); err != nil {
		t.Fatal(err)
	}
	stgtest.Git(t, bare, "config", "ppkit.ci.bin", ppkit)
	stgtest.Git(t, bare, "config", "ppkit.ci.dir", ciDir)
	for i := 0; i+1 < len(config); i += 2 {
		stgtest.Git(t, bare, "config", config[i], config[i+1])
	}
	work = filepath.Join(root, "work")
	stgtest.Git(t, root, "clone", "-q", bare, work)
	return bare, work
}

// refsOf lists every ref of a repository with its object, and the repository's files that hold
// refs or configuration, so that any write to them shows.
func refsOf(t *testing.T, repo string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(stgtest.Git(t, repo, "for-each-ref", "--format=%(refname) %(objectname)"))
	b.WriteString(stgtest.Git(t, repo, "worktree", "list", "--porcelain"))
	for _, f := range []string{"HEAD", "packed-refs", "config", "objects/info/alternates", "shallow", "index"} {
		data, err := os.ReadFile(filepath.Join(repo, f))
		if err == nil {
			b.WriteString(f + ":\n" + string(data))
		}
	}
	return b.String()
}

// waitStatus waits until the hook's worker wrote the status of branch (the worker runs
// detached, so the test polls its output).
// waitWorkerGone waits, at most within, until the hook's worker process (worker.pid) has
// exited; it returns the worker's pid while it still runs, else 0.
func waitWorkerGone(ciDir string, within time.Duration) int {
	data, err := os.ReadFile(filepath.Join(ciDir, "worker.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0
	}
	for deadline := time.Now().Add(within); time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil; {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

func waitStatus(t *testing.T, ciDir, branch string, within time.Duration) []string {
	t.Helper()
	path := filepath.Join(ciDir, "runs", strings.ReplaceAll(branch, "/", "%2F"), "status")
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(path); err == nil {
			return strings.Fields(string(data))
		}
		time.Sleep(200 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(ciDir, "worker.log"))
	t.Fatalf("no status for %s after %s; worker.log:\n%s", branch, within, log)
	return nil
}

// TestPostReceiveQueuesDetachedRuns: a push returns while the worker waits for the CI lock
// (the hook never blocks the push on a run); each pushed branch gets one queued job, a deleted
// branch none; once the lock is free the jobs run one by one, each leaving a log, JUnit,
// summary and result in its own directory; the repository's refs are never written.
func TestPostReceiveQueuesDetachedRuns(t *testing.T) {
	ppkit := buildPPKit(t, t.TempDir()) // before Hermetic, which gives Go an empty HOME
	stgtest.Hermetic(t)
	stgtest.Require(t, "flock", "setsid", "timeout")
	ciDir := filepath.Join(t.TempDir(), "ci")
	// The worker writes a run's status before it logs "done" and looks at the queue again:
	// the directory is removed only once it has exited.
	t.Cleanup(func() { waitWorkerGone(ciDir, 30*time.Second) })
	bare, work := hookRepo(t, ppkit, ciDir, "ppkit.ci.args", "--time 1s tcp")

	// Three branches that are not a series: ppkit ci fails them in its series stage, fast.
	stgtest.WriteFile(t, work, "README", "not a kernel\n")
	stgtest.Git(t, work, "add", ".")
	stgtest.Git(t, work, "commit", "-q", "-m", "readme")
	stgtest.Git(t, work, "branch", "topic/a")
	stgtest.Git(t, work, "branch", "doomed")
	stgtest.WriteFile(t, work, "patches/series", "# no patches yet\n")
	stgtest.Git(t, work, "checkout", "-q", "-b", "empty-series")
	stgtest.Git(t, work, "add", ".")
	stgtest.Git(t, work, "commit", "-q", "-m", "an empty series")
	// The first push (of doomed) runs the hook too; let its worker finish before the test.
	stgtest.Git(t, work, "push", "-q", "origin", "doomed")
	waitStatus(t, ciDir, "doomed", 2*time.Minute)

	// Hold the CI lock, as a long run would.
	lock, err := cachedir.Lock(context.Background(), filepath.Join(ciDir, "lock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	push := exec.CommandContext(ctx, "git", "push", "origin", "topic/a", "empty-series", ":doomed")
	push.Dir = work
	out, err := push.CombinedOutput()
	if err != nil {
		t.Fatalf("git push (blocked by the hook?): %v\n%s", err, out)
	}
	for _, want := range []string{"remote: ppkit ci: queued refs/heads/topic/a", "remote: ppkit ci: queued refs/heads/empty-series"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("push output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "queued refs/heads/doomed") {
		t.Errorf("a deleted branch was queued:\n%s", out)
	}
	pushed := refsOf(t, bare)
	queue, _ := os.ReadDir(filepath.Join(ciDir, "queue"))
	var names []string
	for _, e := range queue {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if strings.Join(names, " ") != "empty-series topic%2Fa" {
		t.Fatalf("queue while the lock is held: %v", names)
	}
	if _, err := os.Stat(filepath.Join(ciDir, "runs", "topic%2Fa")); err == nil {
		t.Fatal("a run started while another held the lock")
	}

	lock.Unlock()
	for _, branch := range []string{"topic/a", "empty-series"} {
		st := waitStatus(t, ciDir, branch, 2*time.Minute)
		if len(st) != 4 || st[0] != "1" || st[1] != VerdictFail {
			log, _ := os.ReadFile(filepath.Join(st[len(st)-1], "ci.log"))
			t.Errorf("%s: status %v, want exit 1 and a failed verdict; ci.log:\n%s", branch, st, log)
			continue
		}
		latest := filepath.Join(ciDir, "runs", strings.ReplaceAll(branch, "/", "%2F"), "latest")
		if real, _ := filepath.EvalSymlinks(latest); real != st[3] {
			t.Errorf("%s: latest -> %s, status names %s", branch, real, st[3])
		}
		for _, f := range []string{"ci.log", "junit.xml", "summary.md", "result.json"} {
			if _, err := os.Stat(filepath.Join(latest, f)); err != nil {
				t.Errorf("%s: %v", branch, err)
			}
		}
		log, _ := os.ReadFile(filepath.Join(latest, "ci.log"))
		if !strings.Contains(string(log), "series") {
			t.Errorf("%s: ci.log does not say why the series stage failed:\n%s", branch, log)
		}
	}
	wlog, _ := os.ReadFile(filepath.Join(ciDir, "worker.log"))
	t.Logf("worker.log:\n%s", wlog)
	if after := refsOf(t, bare); after != pushed {
		t.Errorf("the CI runs changed the pushed repository:\nafter push:\n%s\nafter runs:\n%s", pushed, after)
	}
	if left, _ := os.ReadDir(filepath.Join(ciDir, "queue")); len(left) != 0 {
		t.Errorf("queue not empty: %v", left)
	}
}
