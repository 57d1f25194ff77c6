//go:build e2e

package main

// The commands a newcomer types: the README's "First steps" block run verbatim from the
// checkout root, Ctrl-C at random moments of every phase of `ppkit test`, and a run killed
// outright followed by one that must clean up after it. They run the real binary, built as
// `make build` builds it, on the real emulated board.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/internal/cachedir"
	"github.com/ppkit/ppkit/stgit"
)

// needBoard requires what a ppkit test on the emulated board needs (under CI=true a missing
// tool fails the test).
func needBoard(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"stg", "aarch64-linux-gnu-gcc", "iperf", "ip", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces)")
	}
	if len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("missing: %s (run harness/install-deps.sh)", strings.Join(missing, ", "))
		}
		t.Skipf("missing: %s", strings.Join(missing, ", "))
	}
}

func checkoutRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "README.md")); err != nil {
		t.Fatal(err)
	}
	return root
}

var buildOnce sync.Once

// builtPPKit builds bin/ppkit in the checkout, as `make build` does, once per test binary.
func builtPPKit(t *testing.T) string {
	t.Helper()
	root := checkoutRoot(t)
	var err error
	var out []byte
	buildOnce.Do(func() {
		cmd := exec.Command("go", "build", "-o", "bin/ppkit", "./cmd/ppkit")
		cmd.Dir = root
		out, err = cmd.CombinedOutput()
	})
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(root, "bin", "ppkit")
}

// readmeFirstSteps returns the command lines of the README's "First steps" block.
func readmeFirstSteps(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(checkoutRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "## First steps")
	if !ok {
		t.Fatal("README.md has no '## First steps' section")
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README.md's First steps have no ```sh block")
	}
	var lines []string
	for _, l := range strings.Split(block, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// prefixCache returns a PPKIT_CACHE in which the whole series has no built kernel: series
// check applies every patch to the work tree and builds it, which is where a relative patch
// path broke (a cached kernel is never applied). The shorter prefixes are the real cache's
// (built there first when they are not yet: `ppkit ci`'s series check builds the same ones), so
// the test costs one rebuild, not seven. It shares the real cache's import of linux-source-5.10,
// its work tree and build directories (under their lock; the build stays incremental) and ccache.
func prefixCache(t *testing.T, root string) string {
	t.Helper()
	ctx := context.Background()
	patches := filepath.Join(root, "patches", "series")
	s, err := stgit.ReadSeries(patches)
	if err != nil {
		t.Fatal(err)
	}
	real, err := cachedir.Root()
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	for _, shared := range []string{"src", "ccache", "work", "build"} {
		os.MkdirAll(filepath.Join(real, shared), 0o755)
		if err := os.Symlink(filepath.Join(real, shared), filepath.Join(cache, shared)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(cache, "kernel"), 0o755); err != nil {
		t.Fatal(err)
	}
	for upto := 1; upto < len(s.Patches); upto++ {
		k, err := harness.BuildKernel(ctx, harness.KernelOptions{Series: patches, Upto: upto, Progress: testWriter{t}})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(k.Dir, filepath.Join(cache, "kernel", k.Key)); err != nil {
			t.Fatal(err)
		}
	}
	return cache
}

// TestREADMEFirstSteps runs every line of the README's First steps block as a newcomer types
// it: through sh, from the checkout root, with relative paths. A cached machine cannot hide a
// broken default: `series check` finds the whole series unbuilt.
func TestREADMEFirstSteps(t *testing.T) {
	needBoard(t)
	root := checkoutRoot(t)
	builtPPKit(t)
	lines := readmeFirstSteps(t)
	if len(lines) < 5 {
		t.Fatalf("First steps: %d lines, want the whole block", len(lines))
	}
	for _, line := range lines {
		if !strings.HasPrefix(line, "bin/ppkit ") {
			t.Fatalf("First steps line %q: every line runs bin/ppkit from the checkout root", line)
		}
		t.Run(strings.TrimPrefix(line, "bin/ppkit "), func(t *testing.T) {
			cmd := exec.Command("sh", "-c", line)
			cmd.Dir = root
			cmd.Env = os.Environ()
			if strings.HasPrefix(line, "bin/ppkit series check") {
				cmd.Env = append(cmd.Env, "PPKIT_CACHE="+prefixCache(t, root))
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			err := cmd.Run()
			t.Logf("%s: %v in %s\n%s", line, err, time.Since(start).Round(time.Second), lastLinesOf(stdout.String(), 12))
			if err != nil {
				t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", line, err, lastLinesOf(stdout.String(), 40), lastLinesOf(stderr.String(), 40))
			}
			if strings.HasPrefix(line, "bin/ppkit series check") {
				s, err := stgit.ReadSeries(filepath.Join(root, "patches"))
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(stdout.String(), fmt.Sprintf("all %d patches pass", len(s.Patches))) ||
					!strings.Contains(stderr.String(), "kernel: building") {
					t.Errorf("series check did not build and pass every prefix:\n%s\n%s", stdout.String(), lastLinesOf(stderr.String(), 20))
				}
			}
		})
	}
}

func lastLinesOf(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// ppkitRun is a ppkit process started by a test, with its stderr followed line by line.
type ppkitRun struct {
	cmd    *exec.Cmd
	tag    string // pid.start, as its namespaces and temporary directories are named
	mu     sync.Mutex
	lines  []string
	seen   chan string // every stderr line
	done   chan struct{}
	err    error
	exited time.Time
}

func startPPKit(t *testing.T, args ...string) *ppkitRun {
	t.Helper()
	return startPPKitEnv(t, nil, args...)
}

// startPPKitEnv starts ppkit with env added to this process's environment.
func startPPKitEnv(t *testing.T, env []string, args ...string) *ppkitRun {
	t.Helper()
	cmd := exec.Command(builtPPKit(t), args...)
	cmd.Dir = checkoutRoot(t)
	cmd.Env = append(os.Environ(), env...)
	// Its own process group, as a shell job has: a group signal reaches ppkit and the
	// children it did not put in groups of their own, and never this test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &ppkitRun{cmd: cmd, seen: make(chan string, 4096), done: make(chan struct{})}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	r.tag = fmt.Sprintf("%d.%s", cmd.Process.Pid, f[19])
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			r.mu.Lock()
			r.lines = append(r.lines, sc.Text())
			r.mu.Unlock()
			select {
			case r.seen <- sc.Text():
			default:
			}
		}
		r.err = cmd.Wait()
		r.exited = time.Now()
		close(r.seen)
		close(r.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	})
	return r
}

func (r *ppkitRun) stderr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

// waitFor waits for a stderr line containing s; false if ppkit exited first or timeout passed.
func (r *ppkitRun) waitFor(s string, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-r.seen:
			if !ok {
				return false
			}
			if strings.Contains(l, s) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

var qemuPidRe = regexp.MustCompile(`boot: QEMU pid (\d+)`)

// leftovers lists what a run with this tag left: its QEMU processes, namespaces, temporary
// directories and any tap device in the host's namespace.
func (r *ppkitRun) leftovers() []string {
	var left []string
	for _, m := range qemuPidRe.FindAllStringSubmatch(r.stderr(), -1) {
		pid, _ := strconv.Atoi(m[1])
		if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(data, []byte("qemu")) {
			left = append(left, "QEMU pid "+m[1])
		}
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.Contains(e.Name(), "-"+r.tag+"-") {
				left = append(left, "netns "+e.Name())
			}
		}
	}
	if ents, err := os.ReadDir(os.TempDir()); err == nil {
		for _, e := range ents {
			if strings.Contains(e.Name(), "-"+r.tag+"-") {
				left = append(left, "dir "+e.Name())
			}
		}
	}
	if out, err := exec.Command("ip", "-o", "link", "show", "type", "tun").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		left = append(left, "tap in the host namespace: "+string(bytes.TrimSpace(out)))
	}
	return left
}

// phases of `ppkit test multicast`: the stderr line that starts each, and how long after it the
// interrupt may come (drawn at random). With the raw transport the drain takes 0.2–1 s and the
// check and the teardown after it 0.1–0.4 s (session 15: an interrupt drawn up to 1 s into the
// check came after ppkit had exited in three tries of four; the one that came 25 ms before
// the exit found the namespace's removal, which died of the group's SIGINT).
var testPhases = []struct {
	name, line string
	within     time.Duration
}{
	{"boot", "boot: QEMU pid", 1500 * time.Millisecond},
	{"setup", "boot: guest ready over SSH", 3 * time.Second},
	{"traffic", "traffic for", 10 * time.Second},
	{"drain", "waiting for the pools to drain", 1 * time.Second},
	{"check", "checking it", 400 * time.Millisecond},
}

// TestInterruptTestMulticast: SIGINT at ten random moments of `ppkit test multicast` — in
// boot, setup, traffic, trace drain and check — each time to the process or, as a terminal's
// Ctrl-C does, to its whole process group: ppkit exits 130 within 5 s and leaves no QEMU
// process, namespace, tap or temporary directory.
func TestInterruptTestMulticast(t *testing.T) {
	needBoard(t)
	seed := time.Now().UnixNano()
	if s := os.Getenv("PPKIT_INTERRUPT_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d (PPKIT_INTERRUPT_SEED=%d replays these moments)", seed, seed)
	rnd := rand.New(rand.NewSource(seed))
	// The kernel, image and QEMU are built before the tries, so that each try boots at once.
	if code, _, stderr := ppkit(t, "kernel", "build", "--series", filepath.Join(checkoutRoot(t), "patches")); code != 0 {
		t.Fatalf("kernel build: %s", stderr)
	}
	for try := 0; try < 10; try++ {
		phase := testPhases[try%len(testPhases)]
		delay := time.Duration(rnd.Int63n(int64(phase.within)))
		group := rnd.Intn(2) == 0
		name := fmt.Sprintf("%d-%s+%s", try, phase.name, delay.Round(time.Millisecond))
		if group {
			name += "-group"
		}
		t.Run(name, func(t *testing.T) {
			r := startPPKit(t, "test", "multicast", "--time", "10s")
			if !r.waitFor(phase.line, 5*time.Minute) {
				t.Fatalf("phase %s (%q) never came:\n%s", phase.name, phase.line, lastLinesOf(r.stderr(), 30))
			}
			time.Sleep(delay)
			sent := time.Now()
			target := r.cmd.Process.Pid
			if group {
				target = -target
			}
			syscall.Kill(target, syscall.SIGINT)
			select {
			case <-r.done:
			case <-time.After(30 * time.Second):
				t.Fatalf("ppkit still running 30 s after SIGINT:\n%s", lastLinesOf(r.stderr(), 30))
			}
			took := r.exited.Sub(sent)
			code := r.cmd.ProcessState.ExitCode()
			t.Logf("exit %d %s after SIGINT", code, took.Round(time.Millisecond))
			if took > 5*time.Second {
				t.Errorf("ppkit took %s to exit after SIGINT (at most 5 s):\n%s", took, lastLinesOf(r.stderr(), 30))
			}
			// The run may have finished just before the signal arrived: then it passed (0).
			if code != exitInterrupted && code != 0 {
				t.Errorf("exit %d, want %d:\n%s", code, exitInterrupted, lastLinesOf(r.stderr(), 30))
			}
			if code == exitInterrupted && !strings.Contains(r.stderr(), "interrupted") {
				t.Errorf("no 'interrupted' line:\n%s", lastLinesOf(r.stderr(), 10))
			}
			if strings.Contains(r.stderr(), "stopped at once") {
				t.Errorf("a wait ignored the interrupt (ppkit had to abandon):\n%s", lastLinesOf(r.stderr(), 20))
			}
			if left := r.leftovers(); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}

// TestKilledRunIsCleanedUp: after kill -9 of a running `ppkit test`, its namespace and
// temporary directories stay (nothing can remove them then) and its QEMU dies with it; the
// next `ppkit test` removes them, says so, and passes.
func TestKilledRunIsCleanedUp(t *testing.T) {
	needBoard(t)
	r := startPPKit(t, "test", "multicast", "--time", "20s")
	if !r.waitFor("traffic for", 5*time.Minute) {
		t.Fatalf("no traffic:\n%s", lastLinesOf(r.stderr(), 30))
	}
	r.cmd.Process.Kill()
	<-r.done
	// QEMU is killed by the kernel when its parent dies (PR_SET_PDEATHSIG); give it a moment.
	deadline := time.Now().Add(5 * time.Second)
	var left []string
	for {
		left = r.leftovers()
		qemu := false
		for _, l := range left {
			qemu = qemu || strings.HasPrefix(l, "QEMU")
		}
		if !qemu || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Two namespaces: the client's and the second client's (forward's peer).
	var namespaces []string
	for _, l := range left {
		if strings.HasPrefix(l, "QEMU") {
			t.Errorf("QEMU outlived the killed ppkit: %s", l)
		}
		if strings.HasPrefix(l, "netns ") {
			namespaces = append(namespaces, strings.TrimPrefix(l, "netns "))
		}
	}
	if len(namespaces) != 2 {
		t.Fatalf("the killed run left %d namespaces, want the client's and the second client's (%v)", len(namespaces), left)
	}
	next := startPPKit(t, "test", "multicast", "--time", "5s")
	<-next.done
	if code := next.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the next ppkit test: exit %d:\n%s", code, lastLinesOf(next.stderr(), 40))
	}
	for _, netns := range namespaces {
		if !strings.Contains(next.stderr(), "cleanup: removed the network namespace "+netns) {
			t.Errorf("the next run did not say it removed %s:\n%s", netns, lastLinesOf(next.stderr(), 40))
		}
	}
	if left := r.leftovers(); len(left) > 0 {
		t.Errorf("still left after the next run: %v", left)
	}
}
