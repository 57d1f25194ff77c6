//go:build e2e

package main

// Who broke, decided once: a board that dies or hangs mid-procedure is a kernel failure
// (exit 1, JUnit <failure>), for ppkit test and ppkit ci alike; a host that lacks a tool or a
// QEMU that is not there is an infrastructure error (exit 2, <error>).

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// junitKinds counts the <failure> and <error> elements of a JUnit file.
func junitKinds(t *testing.T, path string) (failures, errors int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("JUnit: %v", err)
	}
	var doc struct {
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("JUnit %s: %v", path, err)
	}
	return doc.Failures, doc.Errors
}

var userQMPRe = regexp.MustCompile(`QMP for you on (\S+)`)

// breakBoard kills or stops the board of a running ppkit once traffic flows.
func breakBoard(t *testing.T, r *ppkitRun, how string, within time.Duration) {
	t.Helper()
	if !r.waitFor("traffic for", within) {
		t.Fatalf("no traffic:\n%s", lastLinesOf(r.stderr(), 30))
	}
	time.Sleep(2 * time.Second)
	switch how {
	case "kill":
		m := qemuPidRe.FindStringSubmatch(r.stderr())
		if m == nil {
			t.Fatalf("no QEMU pid in:\n%s", r.stderr())
		}
		pid, _ := strconv.Atoi(m[1])
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	case "stop":
		m := userQMPRe.FindStringSubmatch(r.stderr())
		if m == nil {
			t.Fatalf("no user QMP socket in:\n%s", r.stderr())
		}
		mon, err := qmp.NewSocketMonitor("unix", m[1], 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := mon.Connect(); err != nil {
			t.Fatal(err)
		}
		defer mon.Disconnect()
		if _, err := mon.Run([]byte(`{"execute":"stop"}`)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBoardDiesOrHangsIsAKernelFailure(t *testing.T) {
	needBoard(t)
	for _, how := range []string{"kill", "stop"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			junit := filepath.Join(dir, "junit.xml")
			r := startPPKit(t, "test", "multicast", "--time", "30s", "--junit", junit, "--report", filepath.Join(dir, "report"))
			breakBoard(t, r, how, 10*time.Minute)
			broken := time.Now()
			select {
			case <-r.done:
			case <-time.After(3 * time.Minute):
				t.Fatalf("ppkit still running 3 min after the board broke:\n%s", lastLinesOf(r.stderr(), 30))
			}
			t.Logf("%s: exit %d %s after the board broke", how, r.cmd.ProcessState.ExitCode(), r.exited.Sub(broken).Round(time.Millisecond))
			if code := r.cmd.ProcessState.ExitCode(); code != 1 {
				t.Errorf("exit %d, want 1 (the kernel failed):\n%s", code, lastLinesOf(r.stderr(), 30))
			}
			if f, e := junitKinds(t, junit); f != 1 || e != 0 {
				t.Errorf("JUnit: %d failures, %d errors; want 1 failure", f, e)
			}
			data, _ := os.ReadFile(filepath.Join(dir, "report", "results.json"))
			var sum struct {
				Verdict string
				Results []struct {
					Verdict string
					Reasons []struct{ Kind, Detail string }
				}
			}
			if err := json.Unmarshal(data, &sum); err != nil || len(sum.Results) != 1 {
				t.Fatalf("results.json: %v %s", err, data)
			}
			res := sum.Results[0]
			if sum.Verdict != "fail" || res.Verdict != "fail" || len(res.Reasons) == 0 || res.Reasons[0].Kind != "kernel-failure" {
				t.Errorf("verdict %s / %s, reasons %+v; want fail with kernel-failure first", sum.Verdict, res.Verdict, res.Reasons)
			}
			if left := r.leftovers(); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}

// TestCIBoardKilledExits1: ppkit ci reads the same verdict: a board killed mid-procedure fails
// the series (exit 1), it is not an infrastructure error.
func TestCIBoardKilledExits1(t *testing.T) {
	needBoard(t)
	out := t.TempDir()
	r := startPPKit(t, "ci", "--repo", checkoutRoot(t), "--ref", "HEAD", "--out", out, "--threshold", "-1", "--time", "30s", "multicast")
	// ppkit ci checks the series first: six prefix builds, minutes when they are not cached.
	breakBoard(t, r, "kill", 40*time.Minute)
	<-r.done
	if code := r.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("ppkit ci: exit %d, want 1:\n%s", code, lastLinesOf(r.stderr(), 30))
	}
	if f, e := junitKinds(t, filepath.Join(out, "junit.xml")); f == 0 || e != 0 {
		t.Errorf("junit.xml: %d failures, %d errors; want failures only", f, e)
	}
}

// hostWithout makes a PATH directory holding every program of the host's PATH but the named
// ones: a host on which they are not installed.
func hostWithout(t *testing.T, missing ...string) string {
	t.Helper()
	bin := t.TempDir()
	skip := map[string]bool{}
	for _, m := range missing {
		skip[m] = true
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if skip[e.Name()] {
				continue
			}
			if _, err := os.Lstat(filepath.Join(bin, e.Name())); err == nil {
				continue // an earlier PATH entry wins, as in a shell
			}
			os.Symlink(filepath.Join(dir, e.Name()), filepath.Join(bin, e.Name()))
		}
	}
	return bin
}

// TestHostFaultsAreInfrastructure: a host without ssh/scp (the tcp procedure copies a file to
// the board with scp) and a QEMU that is not there: exit 2, JUnit <error>.
func TestHostFaultsAreInfrastructure(t *testing.T) {
	needBoard(t)
	t.Run("no scp", func(t *testing.T) {
		junit := filepath.Join(t.TempDir(), "junit.xml")
		cmd := exec.Command(builtPPKit(t), "test", "tcp", "--time", "5s", "--junit", junit)
		cmd.Dir = checkoutRoot(t)
		cmd.Env = append(os.Environ(), "PATH="+hostWithout(t, "scp", "ssh"))
		out, err := cmd.CombinedOutput()
		removeKeptArtifacts(t, string(out))
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Fatalf("exit %d (%v), want 2:\n%s", code, err, lastLinesOf(string(out), 30))
		}
		if f, e := junitKinds(t, junit); f != 0 || e != 1 {
			t.Errorf("JUnit: %d failures, %d errors; want 1 error", f, e)
		}
		if !strings.Contains(string(out), "scp is not installed on this host") {
			t.Errorf("no line naming scp:\n%s", lastLinesOf(string(out), 20))
		}
	})
	t.Run("no QEMU", func(t *testing.T) {
		cmd := exec.Command(builtPPKit(t), "boot", "--baseline", "--qemu", "/nonexistent/qemu-system-aarch64", "--run", "true")
		cmd.Dir = checkoutRoot(t)
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "not found") {
			t.Fatalf("exit %d, want 2 naming the missing QEMU:\n%s", code, lastLinesOf(string(out), 20))
		}
	})
}
