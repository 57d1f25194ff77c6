package verdict

import (
	"slices"
	"strings"
	"testing"
)

func compared(proc string, f Figures) *Result {
	return &Result{Procedure: proc, Kernel: "series /s", Pass: true, Verdict: VerdictPass, Figures: f}
}

// figs: 10000 packets at bps, with slow-path, SKB-return and release counts.
func figs(bps float64, slow, skbRet, rel int64) Figures {
	return Figures{Packets: 10000, BitsPerSecond: bps, SlowPathAllocs: slow, SlowPathPer1000: float64(slow) / 10,
		SKBReturns: skbRet, Releases: rel}
}

func TestCompareFigures(t *testing.T) {
	base := figs(900e6, 100, 9000, 50) // 10 slow/1000, 900 returns/1000, 5 releases/1000
	for _, tc := range []struct {
		name      string
		cur       Figures
		threshold float64
		regressed []string // figures flagged
	}{
		{"unchanged", base, 0.2, nil},
		{"throughput 15% lower is within 20%", figs(765e6, 100, 9000, 50), 0.2, nil},
		{"throughput 25% lower", figs(675e6, 100, 9000, 50), 0.2, []string{"throughput_bps"}},
		{"throughput 25% lower within a 30% threshold", figs(675e6, 100, 9000, 50), 0.3, nil},
		{"throughput higher is better", figs(2e9, 100, 9000, 50), 0.2, nil},
		{"slow path doubled", figs(900e6, 200, 9000, 50), 0.2, []string{"slow_path_per_1000"}},
		{"slow path halved is better", figs(900e6, 50, 9000, 50), 0.2, nil},
		{"fewer SKB returns", figs(900e6, 100, 5000, 50), 0.2, []string{"skb_returns_per_1000"}},
		{"releases up 60% but under the absolute floor of 1/1000", figs(900e6, 100, 9000, 58), 0.2, nil},
		{"releases tripled", figs(900e6, 100, 9000, 150), 0.2, []string{"releases_per_1000"}},
		{"two figures at once", figs(600e6, 300, 9000, 50), 0.2, []string{"slow_path_per_1000", "throughput_bps"}},
		{"a negative threshold reports and flags nothing", figs(600e6, 300, 0, 500), -1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := CompareFigures([]*Result{compared("multicast", base)}, []*Result{compared("multicast", tc.cur)}, tc.threshold)
			if len(lines) != len(comparedFigures) {
				t.Fatalf("%d lines, want %d", len(lines), len(comparedFigures))
			}
			var got []string
			for _, l := range lines {
				if l.Regression {
					got = append(got, l.Figure)
				}
			}
			slices.Sort(got)
			if strings.Join(got, ",") != strings.Join(tc.regressed, ",") {
				t.Errorf("regressed %v, want %v; lines %+v", got, tc.regressed, lines)
			}
		})
	}
}

func TestCompareFiguresZeroAndMissing(t *testing.T) {
	prev := []*Result{compared("tcp", figs(900e6, 0, 0, 0)), compared("gone", figs(1, 1, 1, 1))}
	cur := []*Result{compared("tcp", figs(900e6, 5, 0, 30)), compared("new", figs(1, 1, 1, 1))}
	lines := CompareFigures(prev, cur, 0.2)
	byName := map[string]FigureChange{}
	for _, l := range lines {
		if l.Procedure != "tcp" {
			t.Fatalf("compared %s, present in one run only", l.Procedure)
		}
		byName[l.Figure] = l
	}
	// From 0: slow path 0 → 0.5/1000 is under the floor; releases 0 → 3/1000 is a regression.
	if byName["slow_path_per_1000"].Regression || !byName["releases_per_1000"].Regression {
		t.Errorf("lines %+v", lines)
	}
	// A zero reference has no ratio.
	if l := byName["releases_per_1000"]; l.Ratio != 0 || l.Worse != 0 || l.Current != 3 {
		t.Errorf("releases from 0: %+v", l)
	}
}

// --compare baseline: the ratio series/baseline of each figure, per 1000 packets where the
// figure is a count (the two kernels receive different numbers of packets).
func TestCompareFiguresRatio(t *testing.T) {
	base := []*Result{{Procedure: "multicast", Figures: Figures{Packets: 1000, SlowPathPer1000: 1000, Releases: 1000}}}
	series := []*Result{{Procedure: "multicast", Figures: Figures{Packets: 2000, SlowPathPer1000: 20, SKBReturns: 1090, Releases: 20}}}
	got := map[string]FigureChange{}
	for _, l := range CompareFigures(base, series, -1) {
		got[l.Figure] = l
	}
	if r := got["slow_path_per_1000"].Ratio; r != 0.02 {
		t.Errorf("slow-path ratio %v, want 0.02", r)
	}
	if l := got["releases_per_1000"]; l.Previous != 1000 || l.Current != 10 || l.Ratio != 0.01 {
		t.Errorf("releases per 1000 packets %+v, want 1000 → 10 (ratio 0.01)", l)
	}
	if l := got["skb_returns_per_1000"]; l.Ratio != 0 || l.Previous != 0 || l.Current != 545 {
		t.Errorf("skb returns %+v: a zero baseline has no ratio", l)
	}
}
