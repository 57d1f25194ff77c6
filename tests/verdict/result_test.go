package verdict

import (
	"errors"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/gomodel"
)

func cleanEvidence() Evidence {
	return Evidence{
		Traffic: Traffic{Bytes: 1 << 20, BitsPerSecond: 9e8, Datagrams: 700},
		Before:  Snapshot{Interface: InterfaceCounters{RxPackets: 100}},
		After:   Snapshot{Interface: InterfaceCounters{RxPackets: 2100}},
		Trace: &TraceFigures{TraceFigures: gomodel.TraceFigures{Holds: 520, Releases: 520, SKBReturns: 1990, HoldsInWindow: 8}, DMASyncs: 2510, Puts: 1990, Pools: []*PoolFigures{
			{Pool: "p1", Holds: 520, Releases: 520, SKBReturns: 1990, Destroyed: true, FinalInflight: 0},
		}},
		Model: &ModelReport{Predicted: ModelFigures{HoldsInWindow: 8, SlowPathPer1000: 4, SKBReturns: 1990, Releases: 520}},
	}
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Evidence)
		kinds []string // reasons expected, in order; none means pass
	}{
		{"clean", func(*Evidence) {}, nil},
		{"no packets at the NIC", func(e *Evidence) { e.After.Interface.RxPackets = 100 }, []string{ReasonNoTraffic}},
		{"receiver saw nothing", func(e *Evidence) { e.Traffic.Bytes = 0 }, []string{ReasonNoTraffic}},
		{"console report", func(e *Evidence) {
			e.Console = []ConsoleReport{{Title: "WARNING: CPU: 0 PID: 9 at net/core/page_pool.c:277 page_pool_inflight"}}
		}, []string{ReasonConsole}},
		{"inflight after destroy", func(e *Evidence) { e.Trace.Pools[0].FinalInflight = 3 }, []string{ReasonInflight}},
		{"pool never destroyed", func(e *Evidence) { e.Trace.Pools[0].Destroyed = false }, []string{ReasonInflight}},
		{"model violation", func(e *Evidence) {
			e.Model.Violations = []ModelViolation{{Name: "foreign-page-returned", Detail: "page 7 returned to p1\nhistory: …"}}
		}, []string{ReasonViolation}},
		{"many violations of one kind are counted, not listed", func(e *Evidence) {
			for i := 0; i < 1000; i++ {
				e.Model.Violations = append(e.Model.Violations, ModelViolation{Name: "dma-mapped-page-freed", Detail: "pfn"})
			}
			e.Model.Violations = append(e.Model.Violations, ModelViolation{Name: "inflight-leak", Detail: "pool p1"})
		}, []string{ReasonViolation, ReasonViolation, ReasonViolation, ReasonViolation, ReasonViolation,
			ReasonViolation, ReasonViolation}},
		{"model error", func(e *Evidence) { e.Model, e.ModelErr = nil, errors.New("model: trace line 3: bad pfn") }, []string{ReasonModelError}},
		{"model not run", func(e *Evidence) { e.Model = nil }, []string{ReasonModelError}},
		{"lost events", func(e *Evidence) { e.Overrun = 12 }, []string{ReasonTraceLost}},
		{"lost events: violations are withheld, not listed", func(e *Evidence) {
			e.Overrun = 12
			e.Model.Violations = []ModelViolation{{Name: "dma-mapped-page-freed"}, {Name: "use-after-free"}}
		}, []string{ReasonTraceLost, ReasonTraceLost}},
		{"no page_pool at all", func(e *Evidence) { e.Trace.Pools = nil }, []string{ReasonTraceLost}},
		{"no trace", func(e *Evidence) { e.Trace = nil }, []string{ReasonTraceLost}},
		{"pool pages never synced for the device", func(e *Evidence) { e.Trace.DMASyncs = 0 }, []string{ReasonInfra}},
		{"procedure error", func(e *Evidence) {
			e.Procedure = errors.New("setup: nothing listens on tcp port 5001 on the board after 10 s")
		}, []string{ReasonProcedure}},
		{"kernel crashed at boot", func(e *Evidence) {
			*e = Evidence{BootError: errors.New("launch the board: boot: Kernel panic - not syncing: Attempted to kill init!")}
		}, []string{ReasonBoot}},
		{"infrastructure", func(e *Evidence) {
			*e = Evidence{InfraError: errors.New("launch the board: qemu exited")}
		}, []string{ReasonInfra}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := cleanEvidence()
			tc.edit(&ev)
			res := &Result{Procedure: "multicast"}
			Judge(res, ev)
			var kinds []string
			for _, r := range res.Reasons {
				kinds = append(kinds, r.Kind)
			}
			if strings.Join(kinds, ",") != strings.Join(tc.kinds, ",") {
				t.Errorf("reasons %v, want %v", res.Reasons, tc.kinds)
			}
			if res.Pass != (len(tc.kinds) == 0) {
				t.Errorf("pass %v with reasons %v", res.Pass, res.Reasons)
			}
		})
	}
}

func TestJudgeFigures(t *testing.T) {
	res := &Result{}
	Judge(res, cleanEvidence())
	f := res.Figures
	if f.Packets != 2000 || f.SlowPathAllocs != 8 || f.SlowPathPer1000 != 4 || f.SKBReturns != 1990 || f.Releases != 520 || f.BitsPerSecond != 9e8 {
		t.Errorf("figures %+v", f)
	}
	if len(res.Pools) != 1 || res.Model == nil {
		t.Errorf("pools %v model %v", res.Pools, res.Model)
	}
}

func TestJudgeCountsRepeatedViolations(t *testing.T) {
	ev := cleanEvidence()
	for i := 0; i < 1000; i++ {
		ev.Model.Violations = append(ev.Model.Violations, ModelViolation{Name: "dma-mapped-page-freed", Detail: "pfn"})
	}
	res := &Result{Procedure: "tcp"}
	Judge(res, ev)
	if n := len(res.Reasons); n != violationsListed+1 {
		t.Fatalf("%d reasons, want %d", n, violationsListed+1)
	}
	if last := res.Reasons[len(res.Reasons)-1].Detail; last != "dma-mapped-page-freed: 995 more like these" {
		t.Fatalf("last reason %q", last)
	}
}

// TestJudgeNamesAMemberWithoutTraffic: a combined procedure fails when one member moved
// nothing, even when the others did, and the reason names that member.
func TestJudgeNamesAMemberWithoutTraffic(t *testing.T) {
	res := &Result{}
	ev := Evidence{Traffic: Traffic{Bytes: 1000, Members: []MemberTraffic{{Procedure: "tcp", Bytes: 1000}, {Procedure: "splice"}}},
		Model: &ModelReport{}}
	ev.After.Interface.RxPackets = 10
	Judge(res, ev)
	var named []string
	for _, r := range res.Reasons {
		if r.Kind == ReasonNoTraffic {
			named = append(named, r.Detail)
		}
	}
	if res.Pass || len(named) != 1 || !strings.Contains(named[0], "member splice") {
		t.Errorf("no-traffic reasons %q (all: %v)", named, res.Reasons)
	}
}
