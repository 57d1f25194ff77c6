//go:build e2e

package procedure

import (
	"context"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/tests/report"
	"github.com/ppkit/ppkit/tests/verdict"
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
func runBoard(t *testing.T, k Kernel, procs ...string) *verdict.Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	dir := t.TempDir()
	l := &recordingLauncher{Launcher: &HarnessLauncher{}}
	sum, err := Run(ctx, Config{Procedures: procs, Kernel: k, Options: Options{Duration: 5 * time.Second, RateMbit: 100},
		ArtifactDir: dir, Launcher: l, Progress: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range sum.Results {
		if !r.Pass {
			logArtifacts(t, r.Artifacts)
		}
	}
	l.checkGone(t)
	return sum
}

// recordingLauncher remembers the client namespaces of the testbeds it launched, so the test
// can check that each was removed (other ppkit runs on the machine may hold their own).
type recordingLauncher struct {
	Launcher
	namespaces []string
}

func (l *recordingLauncher) Launch(ctx context.Context, k Kernel, progress io.Writer) (Testbed, error) {
	tb, err := l.Launcher.Launch(ctx, k, progress)
	if err == nil {
		if c, ok := tb.Client().(*NetnsClient); ok {
			l.namespaces = append(l.namespaces, c.Namespace)
		}
		if pt, ok := tb.(PeerTestbed); ok {
			if c, ok := pt.Peer().Client.(*NetnsClient); ok {
				l.namespaces = append(l.namespaces, c.Namespace)
			}
		}
	}
	return tb, err
}

func (l *recordingLauncher) checkGone(t *testing.T) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range l.namespaces {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == ns {
				t.Errorf("namespace %s left behind", ns)
			}
		}
	}
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
	report.WriteTable(&b, sum.Results)
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

// seriesDir returns a series directory of the repository. Until the series lands (issue 6)
// the directory has no series file: that fails under CI=true and skips elsewhere, like any
// missing prerequisite.
func seriesDir(t *testing.T, rel string) string {
	t.Helper()
	abs, err := filepath.Abs(rel)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(abs, "series")); err != nil {
		msg := rel + " has no stg series yet (want " + rel + "/series)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return abs
}

func hasReason(r *verdict.Result, kind string, names ...string) bool {
	for _, reason := range r.Reasons {
		if reason.Kind != kind {
			continue
		}
		if len(names) == 0 {
			return true
		}
		for _, n := range names {
			if strings.HasPrefix(reason.Detail, n+":") {
				return true
			}
		}
	}
	return false
}

// Acceptance: `ppkit test` passes every procedure on patches/ (V2) and on V1, the head-only
// design kept as a fixture so that both stay comparable.
func TestE2EBoardSeriesPasses(t *testing.T) {
	requireBoard(t)
	for _, dir := range []string{"../../patches", "../fixtures/series-v1-head-only"} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			sum := runBoard(t, Kernel{Series: seriesDir(t, dir)})
			var b strings.Builder
			report.WriteTable(&b, sum.Results)
			t.Logf("\n%s", b.String())
			if len(sum.Results) != len(DefaultProcedures) {
				t.Fatalf("%d results", len(sum.Results))
			}
			for _, r := range sum.Results {
				if !r.Pass {
					t.Errorf("%s: %v", r.Procedure, r.Reasons)
				}
			}
		})
	}
}

// Acceptance: with the series, multicast's and tcp's slow-path allocations per 1000 packets are
// far lower than on the baseline kernel, measured in one --compare run (tcp: V2 recycles the
// heads TCP coalesces, which V1 released).
func TestE2EBoardCompareBaseline(t *testing.T) {
	requireBoard(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	l := &recordingLauncher{Launcher: &HarnessLauncher{}}
	sum, err := Run(ctx, Config{Procedures: []string{"multicast", "tcp"}, Kernel: Kernel{Series: seriesDir(t, "../../patches")},
		Compare: []Kernel{{Baseline: true}}, Options: Options{Duration: 10 * time.Second, RateMbit: 100}, ArtifactDir: t.TempDir(),
		Launcher: l, Progress: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	l.checkGone(t)
	var b strings.Builder
	report.WriteComparison(&b, sum)
	t.Logf("\n%s", b.String())
	if !sum.Pass {
		t.Fatalf("baseline %v, series %v", sum.References[0].Results[0].Reasons, sum.Results[0].Reasons)
	}
	// The functional claim: the series recycles pages, so it allocates on the slow path far
	// less than the baseline, which allocates once per packet. How much less is a performance
	// figure, which depends on the machine's load (19.3x with three boards sharing two cores,
	// 20x and more alone): it is measured and reported, not asserted in a timed test.
	for _, l := range sum.References[0].Comparison {
		if l.Figure == "slow_path_per_1000" && !(l.Previous >= 999 && l.Current*4 <= l.Previous) {
			t.Errorf("%s: slow-path allocations per 1000 packets: baseline %.1f, series %.1f: the series does not recycle", l.Procedure, l.Previous, l.Current)
		}
	}
}

// Acceptance: each known-bad fixture fails the procedure that drives its bug, with the
// violation that names it (tests/fixtures/README.md):
//   - series-prerfc (V1's pre-RFC placement) returns kmalloc'd pskb_copy() heads to the pool:
//     copy fails with foreign-page-returned, or a console report of the bad page;
//   - series-no-coalesce-fix (V1 without patch 3) lets skb_try_coalesce() steal page_pool
//     heads: tcp fails with dma-mapped-page-freed or inflight-leak;
//   - series-v2-coalesce-mixes-refs (V2 without the pp_recycle rule in skb_try_coalesce()):
//     TCP's collapsed receive queue (plain skbs tcp_collapse() allocated) takes page_pool heads
//     as frags and frees them with put_page(); tcp-slowread, whose reader falls behind so the
//     queue is collapsed all the time, fails with dma-mapped-page-freed or inflight-leak (the
//     tcp procedure collapses only when the board happens to fall behind: it passed this
//     fixture in one 10 s run).
func TestE2EBoardKnownBadFails(t *testing.T) {
	requireBoard(t)
	for _, tc := range []struct {
		fixture, procedure string
		violations         []string
		console, inflight  bool // also accepted: a console report, the inflight check
	}{
		{"series-prerfc", "copy", []string{"foreign-page-returned"}, true, false},
		{"series-no-coalesce-fix", "tcp", []string{"dma-mapped-page-freed", "inflight-leak"}, false, true},
		{"series-v2-coalesce-mixes-refs", "tcp-slowread", []string{"dma-mapped-page-freed", "inflight-leak"}, false, true},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			sum := runBoard(t, Kernel{Series: seriesDir(t, "../fixtures/"+tc.fixture)}, tc.procedure)
			r := sum.Results[0]
			t.Logf("%s on %s: %v", tc.procedure, tc.fixture, r.Reasons)
			caught := hasReason(r, verdict.ReasonViolation, tc.violations...) ||
				tc.console && hasReason(r, verdict.ReasonConsole) || tc.inflight && hasReason(r, verdict.ReasonInflight)
			if r.Pass || !caught {
				t.Errorf("want %v (console report %t, inflight %t), got %v", tc.violations, tc.console, tc.inflight, r.Reasons)
			}
		})
	}
}

// kernelOrder records the kernels of the testbeds launched, in order.
type kernelOrder struct {
	Launcher
	kernels []string
}

func (l *kernelOrder) Launch(ctx context.Context, k Kernel, progress io.Writer) (Testbed, error) {
	l.kernels = append(l.kernels, k.String())
	return l.Launcher.Launch(ctx, k, progress)
}

// `ppkit bench throughput`'s measurement: V2 against V1, untraced, in rounds whose order flips
// (reference first, then the kernel first), each round a ratio of two real measurements.
func TestE2EBoardCompareThroughput(t *testing.T) {
	requireBoard(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	v2, v1 := Kernel{Series: seriesDir(t, "../../patches")}, Kernel{Series: seriesDir(t, "../fixtures/series-v1-head-only")}
	rec := &recordingLauncher{Launcher: &HarnessLauncher{}}
	order := &kernelOrder{Launcher: rec}
	cmp, err := CompareThroughput(ctx, Config{Procedures: []string{"multicast"}, Kernel: v2, Compare: []Kernel{v1},
		Options: Options{Duration: 3 * time.Second, RateMbit: 100}, ArtifactDir: t.TempDir(), Launcher: order, Progress: testLog{t}}, 2)
	if err != nil {
		t.Fatal(err)
	}
	rec.checkGone(t)
	if want := []string{v1.String(), v2.String(), v2.String(), v1.String()}; !slices.Equal(order.kernels, want) {
		t.Errorf("boards launched for %v, want %v (reference first, then the kernel first)", order.kernels, want)
	}
	if len(cmp) != 1 {
		t.Fatalf("%d comparisons, want 1 (multicast)", len(cmp))
	}
	c := cmp[0]
	t.Logf("%+v", c)
	if c.Procedure != "multicast" || c.Kernel != v2.String() || c.Reference != v1.String() {
		t.Errorf("comparison of %s: %s over %s", c.Procedure, c.Kernel, c.Reference)
	}
	if len(c.Ratios) != 2 || c.Missing != 0 {
		t.Fatalf("ratios %v, %d rounds missing: want 2 measured rounds", c.Ratios, c.Missing)
	}
	for _, r := range c.Ratios {
		if !(r > 0) || math.IsInf(r, 0) {
			t.Errorf("ratio %v: not a ratio of two measured throughputs", r)
		}
	}
	if c.Median != (c.Ratios[0]+c.Ratios[1])/2 || c.Finding != FindingNoDifference {
		t.Errorf("judgement %+v of two rounds: want their mean as median and no difference shown (two rounds cannot show one)", c.ThroughputJudgement)
	}
}
