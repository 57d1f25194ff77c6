package gomodel

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/internal/testfile"
)

const markedTrace = `# tracer: nop
  ip-5 [000] ....   1.000001: page_pool_state_hold: page_pool=aa page=bb pfn=1 hold=1
  ip-5 [000] ....   1.000002: tracing_mark_write: ppkit: multicast begin
  ip-5 [001] ....   1.000004: page_pool_state_hold: page_pool=aa page=bc pfn=2 hold=2
  ip-5 [000] ....   1.000003: page_pool_skb_return: page_pool=aa page=bb pfn=1
  ip-5 [000] ....   1.000005: tracing_mark_write: ppkit: multicast end
  ip-5 [000] ....   1.000006: tracing_mark_write: ppkit: other begin
CPU:1 [LOST 7 EVENTS]
  ip-5 [000] ....   2.000001: page_pool_state_release: page_pool=aa page=bb pfn=1 release=1
  ip-5 [000] ....   2.000002: page_pool_state_release: page_pool=aa page=bc pfn=2 release=2
  ip-5 [000] ....   2.000003: page_pool_release: page_pool=aa inflight=0 hold=2 release=2 cnt=0
  ip-5 [000] ....   3.000001: page_pool_state_hold: page_pool=aa page=bb pfn=1 hold=1
`

func TestTraceFigures(t *testing.T) {
	rep, err := CheckTrace(strings.NewReader(markedTrace), TraceOptions{Procedure: "multicast"})
	if err != nil {
		t.Fatal(err)
	}
	f := rep.Figures
	if f.Holds != 3 || f.Releases != 2 || f.SKBReturns != 1 || f.HoldsInWindow != 1 || f.LostEvents != 7 || rep.LostEvents != 1 {
		t.Errorf("figures %+v", f)
	}
	if f.WindowStart != 1.000002 || f.WindowEnd != 1.000005 {
		t.Errorf("window %v..%v", f.WindowStart, f.WindowEnd)
	}
	// The markers are ignored lines, not events: the report's counts stay the model's.
	if rep.Events != 7 || rep.Ignored != 3 {
		t.Errorf("events %d ignored %d", rep.Events, rep.Ignored)
	}
	if len(rep.Pools) != 2 || rep.Pools[1].Pool != "aa#2" {
		t.Fatalf("pools %+v", rep.Pools)
	}
	p := rep.Pools[0]
	want := []InflightPoint{{1.000001, 1}, {1.000004, 2}, {2.000001, 1}, {2.000002, 0}, {2.000003, 0}}
	if len(p.Timeline) != len(want) {
		t.Fatalf("timeline %v", p.Timeline)
	}
	for i := range want {
		if p.Timeline[i] != want[i] {
			t.Errorf("timeline[%d] = %v, want %v", i, p.Timeline[i], want[i])
		}
	}
	if !p.Destroyed || p.FinalInflight() != 0 || rep.Pools[1].FinalInflight() != 0 || rep.Pools[1].Destroyed {
		t.Errorf("pools %+v", rep.Pools)
	}
	// Without a procedure there is no window.
	rep, err = CheckTrace(strings.NewReader(markedTrace), TraceOptions{})
	if err != nil || rep.Figures.HoldsInWindow != 0 || rep.Figures.WindowStart != 0 || rep.Ignored != 3 {
		t.Errorf("no procedure: %+v, %v", rep.Figures, err)
	}
}

func TestLostCount(t *testing.T) {
	for in, want := range map[string]int64{"CPU:0 [LOST 12 EVENTS]": 12, "CPU:0 [LOST x EVENTS]": 1,
		"[LOST 99999999999999999999 EVENTS]": 1, "CPU:3 [LOST 0 EVENTS]": 0} {
		if got := lostCount([]byte(in)); got != want {
			t.Errorf("lostCount(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestTraceStreamDrained(t *testing.T) {
	s := NewTraceStream(TraceOptions{Procedure: "multicast"})
	lines := strings.Split(strings.TrimSuffix(markedTrace, "\n"), "\n")
	for i, l := range lines {
		if err := s.Line([]byte(l)); err != nil {
			t.Fatal(err)
		}
		// Drained after the pool's page_pool_release with inflight 0 (line 11), and no more
		// once a new pool takes the freed address.
		if got, want := s.Drained(), i == 10; got != want {
			t.Errorf("after line %d: drained %v, want %v", i+1, got, want)
		}
	}
	rep, err := s.Finish()
	if err != nil || rep.Figures.Holds != 3 || len(rep.Pools) != 2 {
		t.Fatalf("finish: %+v, %v", rep, err)
	}
	// A trace without page_pool events: the report comes with the error.
	s = NewTraceStream(TraceOptions{})
	s.Line([]byte("CPU:0 [LOST 3 EVENTS]"))
	rep, err = s.Finish()
	var nt *NotATraceError
	if !errors.As(err, &nt) || rep == nil || rep.Figures.LostEvents != 3 {
		t.Errorf("no pool events: %+v, %v", rep, err)
	}
	if err := NewTraceStream(TraceOptions{}).Line([]byte("a\x00b")); !errors.As(err, &nt) {
		t.Errorf("NUL: %v", err)
	}
}

// FuzzTraceStream: a trace fed line by line, asking Drained in between (which replays what
// is held back early), gives the same totals as ReadTrace, and figures that add up.
func FuzzTraceStream(f *testing.F) {
	files, _ := filepath.Glob("testdata/traces/*.trace")
	for i, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(i%4))
	}
	real, _ := filepath.Glob("testdata/traces/*.trace.gz") // real guest traces with the kprobe events
	for i, file := range real {
		f.Add(testfile.Gunzip(f, file), uint8(i%4))
	}
	f.Add([]byte(markedTrace), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, every uint8) {
		rep, err := ReadTrace(bytes.NewReader(data), TraceOptions{File: "fuzz.trace", Procedure: "multicast"})
		var nt *NotATraceError
		if err != nil && !errors.As(err, &nt) {
			return
		}
		if rep == nil {
			if err == nil || !strings.Contains(err.Error(), "NUL") {
				t.Fatalf("no report with %v", err)
			}
			return
		}
		var holds, releases, skb int64
		for _, p := range rep.Pools {
			holds += int64(p.Holds)
			releases += int64(p.Releases)
			skb += int64(p.SKBReturns)
			if p.Holds+p.Releases > 0 && len(p.Timeline) == 0 {
				t.Fatalf("pool %s: no timeline points for %d holds and %d releases", p.Pool, p.Holds, p.Releases)
			}
			// Three points a step at most; an event replayed late, out of the trace's order,
			// may open its step again and come back to the one it interrupted.
			perStep := map[int64]int{}
			for _, pt := range p.Timeline {
				step := int64(math.Round(pt.Time*1e9)) / int64(TimelineStep)
				if perStep[step]++; perStep[step] > 3*(1+2*rep.Reordered) {
					t.Fatalf("pool %s: %d timeline points in the step of %v s: %v", p.Pool, perStep[step], pt.Time, p.Timeline)
				}
			}
		}
		fg := rep.Figures
		if holds != fg.Holds || releases != fg.Releases || skb != fg.SKBReturns || fg.HoldsInWindow > fg.Holds || fg.LostEvents < 0 {
			t.Fatalf("inconsistent figures %+v", fg)
		}
		if len(data) > 1<<16 {
			return
		}
		s := NewTraceStream(TraceOptions{File: "fuzz.trace", Procedure: "multicast"})
		lines := bytes.Split(data, []byte("\n"))
		if len(lines[len(lines)-1]) == 0 {
			lines = lines[:len(lines)-1]
		}
		for i, l := range lines {
			if err := s.Line(l); err != nil {
				t.Fatalf("line %d: %v, not by ReadTrace", i+1, err)
			}
			if every > 0 && i%int(every) == 0 {
				s.Drained()
			}
		}
		srep, _ := s.Finish()
		sf := srep.Figures
		if sf.Holds != fg.Holds || sf.Releases != fg.Releases || sf.SKBReturns != fg.SKBReturns || sf.LostEvents != fg.LostEvents || srep.Lines != rep.Lines {
			t.Fatalf("stream figures %+v, ReadTrace %+v", sf, fg)
		}
	})
}

// The report lists pools in the order the replay meets them. The parser meets a new address
// when it reads the line, but a freed pool's reused address only when the replay reaches it:
// here pool cc's line comes first in the file, yet its event (on CPU 1) is later than aa#2's.
func TestPoolsInReplayOrder(t *testing.T) {
	const trace = `  ip-5 [000] ....   1.000001: page_pool_state_hold: page_pool=aa page=bb pfn=1 hold=1
  ip-5 [000] ....   1.000002: page_pool_state_release: page_pool=aa page=bb pfn=1 release=1
  ip-5 [000] ....   1.000003: page_pool_release: page_pool=aa inflight=0 hold=1 release=1 cnt=0
  ip-6 [001] ....   1.000009: page_pool_state_hold: page_pool=cc page=bd pfn=3 hold=1
  ip-5 [000] ....   1.000004: page_pool_state_hold: page_pool=aa page=bc pfn=2 hold=1
`
	rep, err := CheckTrace(strings.NewReader(trace), TraceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range rep.Pools {
		names = append(names, p.Pool)
	}
	if strings.Join(names, " ") != "aa aa#2 cc" {
		t.Fatalf("pools %v, want aa aa#2 cc", names)
	}
}

// CPUs increment a pool's release counter side by side and take their event's timestamp
// after it, so in timestamp order the counter can skip a value that the other CPU's event
// brings a moment later (a real tcp-rps trace: 545, 547 on CPU 0, then 546 on CPU 1): that is
// not a lost event. A value that never comes is.
func TestReleaseCounterAcrossCPUs(t *testing.T) {
	const head = `  ip-5 [000] ....   1.000001: page_pool_state_hold: page_pool=aa page=b1 pfn=1 hold=1
  ip-5 [000] ....   1.000002: page_pool_state_hold: page_pool=aa page=b2 pfn=2 hold=2
  ip-5 [000] ....   1.000003: page_pool_state_hold: page_pool=aa page=b3 pfn=3 hold=3
  ip-5 [000] ..s.   1.000010: page_pool_state_release: page_pool=aa page=b1 pfn=1 release=1
  ip-5 [000] ..s.   1.000011: page_pool_state_release: page_pool=aa page=b3 pfn=3 release=3
`
	for _, tc := range []struct {
		name, tail string
		lost       bool
	}{
		{"the skipped value comes from the other CPU", "  ip-6 [001] ....   1.000011: page_pool_state_release: page_pool=aa page=b2 pfn=2 release=2\n", false},
		{"the skipped value never comes", "", true},
	} {
		rep, err := CheckTrace(strings.NewReader(head+tc.tail), TraceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		lost := strings.Contains(strings.Join(rep.Notes, "\n"), "release counter jumps from 1 to 3 (1 values never came): events were lost")
		if lost != tc.lost || rep.Pools[0].ReleaseCounter != 3 {
			t.Errorf("%s: notes %q, release counter %d", tc.name, rep.Notes, rep.Pools[0].ReleaseCounter)
		}
	}
}

// TestTimelineSteps: of each TimelineStep the Timeline keeps the lowest, the highest and the
// last point, in trace order, each once.
func TestTimelineSteps(t *testing.T) {
	ms := uint64(TimelineStep)
	for _, tc := range []struct {
		name string
		in   []stepPoint
		want []InflightPoint
	}{
		{"one point", []stepPoint{{5 * ms, 1}}, []InflightPoint{{0.005, 1}}},
		{"low, high and last of a step", []stepPoint{{ms + 1e5, 1}, {ms + 2e5, 5}, {ms + 3e5, 0}, {ms + 4e5, 2}},
			[]InflightPoint{{0.0012, 5}, {0.0013, 0}, {0.0014, 2}}},
		{"the first of equal lows and highs", []stepPoint{{0, 3}, {1, 3}, {2, 4}, {3, 4}, {4, 3}},
			[]InflightPoint{{0, 3}, {2e-9, 4}, {4e-9, 3}}},
		{"the last is the high", []stepPoint{{0, 3}, {1, 2}, {2, 4}}, []InflightPoint{{1e-9, 2}, {2e-9, 4}}},
		{"steps apart", []stepPoint{{0, 1}, {ms, 2}, {ms + 1, 1}, {3 * ms, 0}},
			[]InflightPoint{{0, 1}, {0.001, 2}, {0.001000001, 1}, {0.003, 0}}},
		{"a late point opens its step again", []stepPoint{{2 * ms, 4}, {ms, 3}, {2*ms + 1, 5}},
			[]InflightPoint{{0.002, 4}, {0.001, 3}, {0.002000001, 5}}},
	} {
		var p poolTraceState
		for _, pt := range tc.in {
			p.inflight(pt.ts, pt.inflight)
		}
		p.flushStep()
		if fmt.Sprint(p.Timeline) != fmt.Sprint(tc.want) {
			t.Errorf("%s: timeline %v, want %v", tc.name, p.Timeline, tc.want)
		}
	}
}
