//go:build e2e

package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The real board: the harness's 5.10 kernel on the mvneta QEMU, booted by HarnessLauncher,
// driven by the procedures, traced, and judged by gomodel. Builds are cached; a cold run builds
// the kernel and QEMU first (several minutes on 2 cores).

func requireBoard(t *testing.T) {
	t.Helper()
	requireTool(t, "ip", "iperf", "aarch64-linux-gnu-gcc", "scp", "apt-get", "dpkg-deb")
}

// runBoard runs procedures with HarnessLauncher and returns the summary; artifacts are kept
// under the test's temporary directory and logged on failure.
func runBoard(t *testing.T, k Kernel, procs ...string) *Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	dir := t.TempDir()
	sum, err := Run(ctx, Config{Procedures: procs, Kernel: k, Options: Options{Duration: 5 * time.Second, RateMbit: 100},
		ArtifactDir: dir, Launcher: &HarnessLauncher{}, Progress: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range sum.Results {
		if !r.Pass {
			logArtifacts(t, r.Artifacts)
		}
	}
	// No QEMU of ours and no namespace may remain.
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "ppkit") {
		t.Errorf("namespaces left behind: %s", out)
	}
	return sum
}

func logArtifacts(t *testing.T, dir string) {
	t.Helper()
	for _, f := range []string{"iperf-server.txt", "iperf-client.txt", "pktlisten.txt", "console.txt"} {
		if data, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
			t.Logf("--- %s\n%s", f, tail(data, 3000))
		}
	}
	if data, err := os.ReadFile(filepath.Join(dir, "trace.txt")); err == nil {
		t.Logf("--- trace.txt: %d bytes, last lines:\n%s", len(data), tail(data, 1500))
	}
}

// The baseline kernel (stock 5.10 mvneta, which releases every page from its pool) moves
// multicast and TCP traffic, the trace shows its pools drain to 0, and the model finds nothing.
func TestE2EBoardBaseline(t *testing.T) {
	requireBoard(t)
	sum := runBoard(t, Kernel{Baseline: true}, "multicast", "tcp")
	var b strings.Builder
	WriteTable(&b, sum.Results)
	t.Logf("\n%s", b.String())
	for _, r := range sum.Results {
		if !r.Pass {
			t.Errorf("%s: %v", r.Procedure, r.Reasons)
			continue
		}
		if r.Figures.Packets == 0 || len(r.Pools) == 0 || r.Model == nil {
			t.Errorf("%s: packets %d, pools %d, model %v", r.Procedure, r.Figures.Packets, len(r.Pools), r.Model)
		}
		// Stock 5.10: a slow-path allocation for about every received packet, no SKB hook.
		if r.Figures.SKBReturns != 0 || r.Figures.SlowPathPer1000 < 500 {
			t.Errorf("%s: baseline figures %+v", r.Procedure, r.Figures)
		}
	}
}
