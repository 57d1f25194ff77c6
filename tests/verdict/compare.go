package verdict

import "sort"

// FigureChange is one figure of one procedure in two runs: a reference (the baseline kernel of
// `ppkit test --compare baseline`, or the stored run `ppkit ci` compares with) and this run.
type FigureChange struct {
	Procedure string `json:"procedure"`
	Figure    string `json:"figure"`
	// Previous is the reference run's figure, Current this run's.
	Previous float64 `json:"previous"`
	Current  float64 `json:"current"`
	// Ratio is Current/Previous; 0 when Previous is 0.
	Ratio float64 `json:"ratio"`
	// Worse is the relative change in the figure's bad direction (0.25: 25% worse; negative:
	// better); 0 when Previous is 0.
	Worse float64 `json:"worse"`
	// Regression: worse than the threshold CompareFigures was given, and than the figure's floor.
	Regression bool `json:"regression"`
}

// comparedFigure is a figure two runs are compared on.
type comparedFigure struct {
	name         string
	higherBetter bool
	// floor is the smallest absolute change that can count as a regression, so that noise
	// around a tiny figure (0.2 → 0.5 slow-path allocations per 1000 packets) is not one.
	floor float64
	get   func(Figures) float64
}

func per1000(n int64, packets int64) float64 {
	if packets <= 0 {
		return 0
	}
	return float64(n) * 1000 / float64(packets)
}

// comparedFigures are the figures compared between runs, in order. Counts that grow with the
// traffic are compared per 1000 received packets: two runs never receive the same number.
var comparedFigures = []comparedFigure{
	{"throughput_bps", true, 0, func(f Figures) float64 { return f.BitsPerSecond }},
	{"slow_path_per_1000", false, 1, func(f Figures) float64 { return f.SlowPathPer1000 }},
	{"skb_returns_per_1000", true, 1, func(f Figures) float64 { return per1000(f.SKBReturns, f.Packets) }},
	{"releases_per_1000", false, 1, func(f Figures) float64 { return per1000(f.Releases, f.Packets) }},
}

// CompareFigures pairs the procedures of two runs and compares each figure; a figure that moved
// in its bad direction by more than threshold (relative) and more than its floor (absolute) is a
// regression. A negative threshold flags none (`--compare baseline` reports, it does not
// judge). Procedures present in only one run are not compared.
func CompareFigures(previous, current []*Result, threshold float64) []FigureChange {
	prev := map[string]*Result{}
	for _, r := range previous {
		prev[r.Procedure] = r
	}
	var out []FigureChange
	for _, c := range current {
		p, ok := prev[c.Procedure]
		if !ok {
			continue
		}
		for _, f := range comparedFigures {
			l := FigureChange{Procedure: c.Procedure, Figure: f.name, Previous: f.get(p.Figures), Current: f.get(c.Figures)}
			worseBy := l.Current - l.Previous // absolute change in the bad direction
			if f.higherBetter {
				worseBy = -worseBy
			}
			if l.Previous != 0 {
				l.Ratio = l.Current / l.Previous
				l.Worse = worseBy / l.Previous
				if l.Previous < 0 {
					l.Worse = -l.Worse
				}
				l.Regression = l.Worse > threshold && worseBy > f.floor
			} else {
				l.Regression = worseBy > f.floor
			}
			l.Regression = l.Regression && threshold >= 0
			out = append(out, l)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Procedure < out[j].Procedure })
	return out
}
