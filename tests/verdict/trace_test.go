package verdict

import (
	"context"
	"os"
	"strings"
	"testing"
)

// testdata/trace/two-pools-5.10-format.txt is written in Linux 5.10's ftrace text format (the
// TP_printk strings of include/trace/events/{page_pool,skb,kmem}.h and trace_print_context's
// prefix): two pools, a marked traffic window with SKB-hook returns and two slow-path
// allocations, a lost-events note, and a pool that is destroyed with one page still inflight.
func TestParseTraceFigures(t *testing.T) {
	f, err := os.Open("testdata/trace/two-pools-5.10-format.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tf, err := ParseTraceFigures(f, "multicast")
	if err != nil {
		t.Fatal(err)
	}
	if tf.Holds != 15 || tf.Releases != 14 || tf.SKBReturns != 8 || tf.HoldsInWindow != 2 || tf.LostEvents != 3 {
		t.Errorf("totals holds=%d releases=%d skb=%d window=%d lost=%d", tf.Holds, tf.Releases, tf.SKBReturns, tf.HoldsInWindow, tf.LostEvents)
	}
	if tf.WindowStart == 0 || tf.WindowEnd <= tf.WindowStart {
		t.Errorf("window %v..%v", tf.WindowStart, tf.WindowEnd)
	}
	data, _ := os.ReadFile("testdata/trace/two-pools-5.10-format.txt")
	if tf.Lines != int64(strings.Count(string(data), "\n")) {
		t.Errorf("%d lines", tf.Lines)
	}
	if len(tf.Pools) != 2 {
		t.Fatalf("%d pools", len(tf.Pools))
	}
	p1, p2 := tf.Pools[0], tf.Pools[1]
	if p1.Pool != "00000000c0ffee01" || p1.Holds != 8 || p1.Releases != 8 || p1.SKBReturns != 8 || !p1.Destroyed || p1.FinalInflight != 0 {
		t.Errorf("pool 1 %+v", *p1)
	}
	if p2.Holds != 7 || p2.Releases != 6 || !p2.Destroyed || p2.FinalInflight != 1 {
		t.Errorf("pool 2 %+v", *p2)
	}
	// The timeline peaks at 8 for pool 1 and ends with the kernel's figure.
	var peak int64
	for _, pt := range p1.Timeline {
		peak = max(peak, pt.Inflight)
	}
	if peak != 8 || p1.Timeline[len(p1.Timeline)-1].Inflight != 0 {
		t.Errorf("pool 1 timeline peak %d end %+v", peak, p1.Timeline[len(p1.Timeline)-1])
	}
	if len(tf.Undestroyed()) != 0 {
		t.Errorf("undestroyed %v", tf.Undestroyed())
	}
}

func TestParseTraceFiguresLines(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		holds    int64
		wantErr  bool
	}{
		{"tgid column", "   <idle>-0       (      0) [001] ..s1   100.000001: page_pool_state_hold: page_pool=00000000aa page=00000000bb pfn=1 hold=1\n", 1, false},
		{"no flags column", "  ip-5 [000]   100.000001: page_pool_state_hold: page_pool=aa page=bb pfn=1 hold=1\n", 1, false},
		{"header comments", "# tracer: nop\n#\n#           TASK-PID     CPU#  ||||   TIMESTAMP  FUNCTION\n", 0, false},
		{"hold without pool", "  ip-5 [000] ....   1.000001: page_pool_state_hold: page=bb pfn=1 hold=1\n", 0, true},
		{"release without inflight", "  ip-5 [000] ....   1.000001: page_pool_release: page_pool=aa hold=1\n", 0, true},
		{"bad inflight", "  ip-5 [000] ....   1.000001: page_pool_release: page_pool=aa inflight=x\n", 0, true},
		{"comm with spaces and dashes", "  kworker/u4:2-foo-77 [000] ....   1.000001: page_pool_state_hold: page_pool=aa page=bb pfn=1 hold=1\n", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tf, err := ParseTraceFigures(strings.NewReader(tc.in), "x")
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if err == nil && tf.Holds != tc.holds {
				t.Errorf("holds %d, want %d", tf.Holds, tc.holds)
			}
		})
	}
}

func TestUndestroyed(t *testing.T) {
	in := "  ip-5 [000] ....   1.000001: page_pool_state_hold: page_pool=aa page=bb pfn=1 hold=1\n"
	tf, err := ParseTraceFigures(strings.NewReader(in), "x")
	if err != nil {
		t.Fatal(err)
	}
	if u := tf.Undestroyed(); len(u) != 1 || u[0] != "aa" {
		t.Errorf("undestroyed %v", u)
	}
}

func FuzzParseTraceFigures(f *testing.F) {
	data, _ := os.ReadFile("testdata/trace/two-pools-5.10-format.txt")
	f.Add(data)
	f.Add([]byte("CPU:0 [LOST 9 EVENTS]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tf, err := ParseTraceFigures(strings.NewReader(string(data)), "multicast")
		if err != nil {
			return
		}
		var holds, releases int64
		for _, p := range tf.Pools {
			holds += p.Holds
			releases += p.Releases
		}
		if holds != tf.Holds || releases != tf.Releases || tf.HoldsInWindow > tf.Holds {
			t.Fatalf("inconsistent totals %+v", tf)
		}
	})
}

// The same trace through the reference model: pool 2 is destroyed with a page still inflight,
// and nothing else is wrong.
func TestCheckTraceWithModelFixture(t *testing.T) {
	rep, err := CheckTraceWithModel(context.Background(), ModelInput{Procedure: "multicast",
		TracePath: "testdata/trace/two-pools-5.10-format.txt", RxPackets: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Violations) != 1 || rep.Violations[0].Name != "inflight-leak" || !strings.Contains(rep.Violations[0].Detail, "c0ffee02") {
		t.Fatalf("violations %+v", rep.Violations)
	}
	p := rep.Predicted
	if p.Holds != 15 || p.Releases != 14 || p.SKBReturns != 8 || p.FinalInflight != 1 {
		t.Errorf("predicted %+v", p)
	}
	if _, err := CheckTraceWithModel(context.Background(), ModelInput{TracePath: "testdata/nonexistent"}); err == nil {
		t.Error("no error for a missing trace")
	}
}

// A pool created at the address of a destroyed one is a new pool.
func TestParseTraceFiguresPoolReuse(t *testing.T) {
	in := `  ip-5 [000] ....   1.000001: page_pool_state_hold: page_pool=aa page=bb pfn=1 hold=1
  ip-5 [000] ....   1.000002: page_pool_state_hold: page_pool=aa page=bc pfn=2 hold=2
  ip-5 [000] ....   1.000003: page_pool_state_release: page_pool=aa page=bb pfn=1 release=1
  ip-5 [000] ....   1.000004: page_pool_state_release: page_pool=aa page=bc pfn=2 release=2
  ip-5 [000] ....   1.000005: page_pool_release: page_pool=aa inflight=0 hold=2 release=2 cnt=0
  ip-5 [000] ....   2.000001: page_pool_state_hold: page_pool=aa page=bb pfn=1 hold=1
  ip-5 [000] ....   2.000002: page_pool_release: page_pool=aa inflight=1 hold=1 release=0 cnt=0
`
	tf, err := ParseTraceFigures(strings.NewReader(in), "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(tf.Pools) != 2 || tf.Pools[1].Pool != "aa#2" || tf.Pools[0].FinalInflight != 0 || tf.Pools[1].FinalInflight != 1 || tf.Pools[1].Holds != 1 {
		for _, p := range tf.Pools {
			t.Logf("%+v", *p)
		}
		t.Fatal("pool reuse not split")
	}
}

// One replay: the model's report carries the figures; a trace without page_pool events keeps
// its figures beside the model error, so the verdict says both.
func TestCheckTraceWithModelFigures(t *testing.T) {
	m, err := CheckTraceWithModel(context.Background(), ModelInput{Procedure: "multicast",
		TracePath: "testdata/trace/two-pools-5.10-format.txt", RxPackets: 2000})
	if err != nil || m.Trace == nil || m.Trace.HoldsInWindow != 2 || m.Trace.LostEvents != 3 || len(m.Trace.Pools) != 2 {
		t.Fatalf("report %+v, %v", m, err)
	}
	empty := t.TempDir() + "/trace.txt"
	if err := os.WriteFile(empty, []byte("# tracer: nop\nCPU:0 [LOST 4 EVENTS]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var ev Evidence
	ev.SetModel(CheckTraceWithModel(context.Background(), ModelInput{Procedure: "multicast", TracePath: empty}))
	if ev.ModelErr == nil || ev.Model != nil || ev.Trace == nil || len(ev.Trace.Pools) != 0 || ev.Trace.LostEvents != 4 {
		t.Fatalf("no pool events: %+v", ev)
	}
	res := &Result{}
	Judge(res, ev)
	if !res.HasReason(ReasonTraceLost) || !res.HasReason(ReasonModelError) {
		t.Errorf("reasons %v", res.Reasons)
	}
}
