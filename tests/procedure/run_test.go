package procedure_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/tests/procedure"
	"github.com/ppkit/ppkit/tests/procedure/boardtest"
	"github.com/ppkit/ppkit/tests/report"
	"github.com/ppkit/ppkit/tests/verdict"
)

func runFake(t *testing.T, b *boardtest.Board, p procedure.Procedure, model verdict.ModelChecker) *verdict.Result {
	t.Helper()
	boardtest.FastTimers(t)
	tb := boardtest.NewTestbed(b)
	dir := t.TempDir()
	helpers := map[string]string{}
	for _, h := range p.Helpers() {
		helpers[h] = filepath.Join(dir, "helper-"+h)
		os.WriteFile(helpers[h], []byte("x"), 0o755)
	}
	res := &verdict.Result{Procedure: p.Name()}
	procedure.RunProcedure(context.Background(), tb, p, res, procedure.ProcedureConfig{Options: procedure.Options{Duration: time.Second, RateMbit: 10},
		Dir: dir, Helpers: helpers, Model: model, Kernel: procedure.Kernel{Series: "/src/patches", Design: "series"}})
	artifacts := []string{"trace.txt", "console.txt"}
	if len(res.Reasons) == 0 || (res.Reasons[0].Kind != verdict.ReasonProcedure && res.Reasons[0].Kind != verdict.ReasonInfra) {
		artifacts = append(artifacts, "before-snmp.txt", "after-interface.txt")
	}
	for _, f := range artifacts {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("artifact %s missing: %v", f, err)
		}
	}
	return res
}

func TestRunProcedureClean(t *testing.T) {
	b := boardtest.NewBoard()
	res := runFake(t, b, &procedure.Multicast{}, boardtest.OKModel)
	if !res.Pass {
		t.Fatalf("reasons %v", res.Reasons)
	}
	f := res.Figures
	if f.Packets != 2000 || f.SlowPathAllocs != 6 || f.SlowPathPer1000 != 3 || f.SKBReturns != 10 || f.Holds != 70 {
		t.Errorf("figures %+v", f)
	}
	if res.Traffic.Datagrams != 26753-22 || len(res.Pools) != 1 || !res.Pools[0].Destroyed {
		t.Errorf("traffic %+v pools %+v", res.Traffic, res.Pools)
	}
	if !strings.Contains(strings.Join(res.Notes, "\n"), "ethtool -S eth1") {
		t.Errorf("the missing ethtool is not noted: %v", res.Notes)
	}
	// Order: helpers copied, link down before tracing, trace reader, link up, ping, listener
	// and server, begin marker, end marker, link down, tracing off.
	order := []string{"copy ", "ip link set dev eth1 down", "buffer_size_kb", "trace_pipe", "ip addr flush dev eth1",
		"ping -c 3 -i 0.05 -W 2 192.168.200.2", "pktlisten", "iperf -s -u -B 226.94.1.1 -i 1", "multicast begin", "multicast end", "ip link set dev eth1 down", "echo 0 > /sys/kernel/tracing/tracing_on"}
	i := 0
	for _, cmd := range b.Ran {
		if i < len(order) && strings.Contains(cmd, order[i]) {
			i++
		}
	}
	if i != len(order) {
		t.Errorf("step %q not reached in order; commands:\n%s", order[i], strings.Join(b.Ran, "\n"))
	}
}

func TestRunProcedureVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*boardtest.Board)
		model verdict.ModelChecker
		proc  procedure.Procedure
		kind  string
	}{
		{"inflight leak", func(b *boardtest.Board) { b.Leak = 2 }, boardtest.OKModel, &procedure.Multicast{}, verdict.ReasonInflight},
		{"console report", func(b *boardtest.Board) {
			b.Console = []verdict.ConsoleReport{{Title: "BUG: Bad page state in process swapper/0", Report: "BUG: Bad page state…"}}
		}, boardtest.OKModel, &procedure.Multicast{}, verdict.ReasonConsole},
		{"model error", func(*boardtest.Board) {}, func(ctx context.Context, in verdict.ModelInput) (*verdict.ModelReport, error) {
			return nil, errors.New("model: trace line 9: malformed")
		}, &procedure.Multicast{}, verdict.ReasonModelError},
		{"model sees the leak", func(b *boardtest.Board) { b.Leak = 1 }, verdict.CheckTraceWithModel, &procedure.Multicast{}, verdict.ReasonViolation},
		{"model violation", func(*boardtest.Board) {}, func(ctx context.Context, in verdict.ModelInput) (*verdict.ModelReport, error) {
			return &verdict.ModelReport{Violations: []verdict.ModelViolation{{Name: "foreign-page-returned", Detail: "pfn 4100"}}}, nil
		}, &procedure.Multicast{}, verdict.ReasonViolation},
		{"no traffic", func(b *boardtest.Board) { b.Packets = 0 }, boardtest.OKModel, &procedure.Multicast{}, verdict.ReasonNoTraffic},
		{"no ping across the link", func(b *boardtest.Board) { b.NoLink = true }, boardtest.OKModel, &procedure.Multicast{}, verdict.ReasonProcedure},
		{"copy without iptables", func(*boardtest.Board) {}, boardtest.OKModel, &procedure.Copy{}, verdict.ReasonProcedure},
		{"forward without a second client", func(*boardtest.Board) {}, boardtest.OKModel, &procedure.Forward{}, verdict.ReasonProcedure},
		{"kernel dies: the model still judges the trace", func(b *boardtest.Board) { b.DieInRun = true }, verdict.CheckTraceWithModel,
			&procedure.Multicast{}, verdict.ReasonViolation},
		{"kernel dies: console report", func(b *boardtest.Board) { b.DieInRun = true }, verdict.CheckTraceWithModel, &procedure.Multicast{}, verdict.ReasonConsole},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := boardtest.NewBoard()
			tc.setup(b)
			res := runFake(t, b, tc.proc, tc.model)
			if res.Pass {
				t.Fatal("passed")
			}
			found := false
			for _, r := range res.Reasons {
				found = found || r.Kind == tc.kind
			}
			if !found {
				t.Errorf("reasons %v lack %s", res.Reasons, tc.kind)
			}
			// The trace reader is always stopped, even after an early failure.
			if b.TraceReaderRunning() {
				t.Error("trace reader left running")
			}
		})
	}
}

// --compare baseline,DIR: every procedure runs on each reference, then on the kernel under
// test, and the table has a column and a ratio for each.
func TestRunCompareTwoReferences(t *testing.T) {
	boardtest.FastTimers(t)
	l := &boardtest.Launcher{}
	sum, err := procedure.Run(context.Background(), procedure.Config{Procedures: []string{"multicast"}, Kernel: procedure.Kernel{Series: "/src/v2", Design: "upstream"},
		Compare: []procedure.Kernel{{Baseline: true}, {Series: "/src/v1", Design: "series"}}, Options: procedure.Options{Duration: time.Second, RateMbit: 10},
		ArtifactDir: t.TempDir(), Launcher: l, Model: boardtest.OKModel, CacheRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Testbeds) != 3 || len(sum.References) != 2 || sum.References[0].Kernel != "baseline" || sum.References[1].Kernel != "series /src/v1" ||
		len(sum.All()) != 3 || sum.All()[2] != sum.Results[0] {
		t.Fatalf("testbeds %d, references %+v", len(l.Testbeds), sum.References)
	}
	for _, r := range sum.References {
		if len(r.Comparison) == 0 || r.Comparison[0].Procedure != "multicast" {
			t.Errorf("comparison against %s: %+v", r.Kernel, r.Comparison)
		}
	}
	// Each result says its kernel's design: where the probes read struct page.
	var designs []string
	for _, r := range sum.All() {
		designs = append(designs, r.Design)
	}
	if strings.Join(designs, " ") != "none series upstream" {
		t.Errorf("designs %q, want none series upstream", designs)
	}
	var b strings.Builder
	report.WriteComparison(&b, sum)
	head, _, _ := strings.Cut(b.String(), "\n")
	if f := strings.Fields(head); strings.Join(f, " ") != "PROCEDURE FIGURE baseline v1 v2 v2/baseline v2/v1" {
		t.Errorf("comparison header %q", head)
	}
	if !strings.Contains(b.String(), "slow_path_per_1000") {
		t.Errorf("comparison:\n%s", b.String())
	}
}

func TestRunCompareBaseline(t *testing.T) {
	boardtest.FastTimers(t)
	l := &boardtest.Launcher{}
	sum, err := procedure.Run(context.Background(), procedure.Config{Procedures: []string{"tcp"}, Kernel: procedure.Kernel{Series: "/src/patches", Design: "series"},
		Compare: []procedure.Kernel{{Baseline: true}}, Options: procedure.Options{Duration: time.Second, RateMbit: 10}, ArtifactDir: t.TempDir(),
		Launcher: l, Model: boardtest.OKModel, CacheRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Testbeds) != 2 || !l.Testbeds[0].Closed || !l.Testbeds[1].Closed {
		t.Errorf("testbeds %d, closed %v", len(l.Testbeds), l.Testbeds)
	}
	if !sum.Pass || len(sum.References) != 1 || len(sum.References[0].Results) != 1 || len(sum.Results) != 1 {
		t.Fatalf("summary pass=%v references=%d results=%d: %+v %v", sum.Pass, len(sum.References), len(sum.Results),
			sum.References, sum.Results[0].Reasons)
	}
	var slow *verdict.FigureChange
	comparison := sum.References[0].Comparison
	for i := range comparison {
		if comparison[i].Figure == "slow_path_per_1000" {
			slow = &comparison[i]
		}
	}
	if slow == nil || slow.Previous != 1000 || slow.Current != 3 {
		t.Errorf("slow-path comparison %+v", slow)
	}
	if !strings.Contains(strings.Join(sum.Results[0].Traffic.Notes, " "), "scp: 8388608 bytes") {
		t.Errorf("the scp step did not run: %v", sum.Results[0].Traffic.Notes)
	}
}

func TestRunLaunchFailure(t *testing.T) {
	sum, err := procedure.Run(context.Background(), procedure.Config{Procedures: []string{"multicast", "tcp"}, Kernel: procedure.Kernel{Baseline: true},
		Options: procedure.DefaultOptions, ArtifactDir: t.TempDir(), Launcher: &boardtest.Launcher{Fail: errors.New("qemu: no mvneta device")},
		Model: boardtest.OKModel, CacheRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Pass || len(sum.Results) != 2 || sum.Results[0].Reasons[0].Kind != verdict.ReasonInfra || len(sum.Results[0].Reasons) != 1 {
		t.Errorf("summary %+v / %v", sum, sum.Results[0].Reasons)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]procedure.Config{
		"unknown procedure": {Procedures: []string{"nope"}, Launcher: &boardtest.Launcher{}, Options: procedure.DefaultOptions},
		"no launcher":       {Options: procedure.DefaultOptions},
		"zero duration":     {Launcher: &boardtest.Launcher{}, Options: procedure.Options{RateMbit: 1}},
	} {
		if _, err := procedure.Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestDefragExpiresQueuesBeforeTheDrain: fragment queues of lost datagrams hold pool heads until
// ipfrag_time; defrag shortens it before any traffic, so that the pool drain judges a leak, not
// the reassembly timer.
func TestDefragExpiresQueuesBeforeTheDrain(t *testing.T) {
	b := boardtest.NewBoard()
	res := runFake(t, b, &procedure.Defrag{}, boardtest.OKModel)
	if !res.Pass {
		t.Fatalf("reasons %v", res.Reasons)
	}
	set, server := -1, -1
	for i, cmd := range b.Ran {
		switch {
		case strings.Contains(cmd, "ipfrag_time") && set < 0:
			set = i
		case strings.Contains(cmd, "iperf -s -u -l 8000") && server < 0:
			server = i
		}
	}
	if set < 0 || server < 0 || set > server {
		t.Errorf("ipfrag_time set at step %d, server started at %d; commands:\n%s", set, server, strings.Join(b.Ran, "\n"))
	}
}
