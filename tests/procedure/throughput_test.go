package procedure

import (
	"math"
	"testing"

	"github.com/ppkit/ppkit/tests/verdict"
)

func TestJudgeRatios(t *testing.T) {
	for _, tc := range []struct {
		name          string
		ratios        []float64
		finding       string
		median, p     float64
		lower, higher int
	}{
		{"none", nil, FindingNoDifference, 0, 1, 0, 0},
		{"five lower", []float64{0.9, 0.95, 0.97, 0.99, 0.8}, FindingLower, 0.95, 1.0 / 32, 5, 0},
		{"four of five lower", []float64{0.9, 0.95, 1.02, 0.99, 0.8}, FindingNoDifference, 0.95, 6.0 / 32, 4, 1},
		{"five higher", []float64{1.1, 1.2, 1.01, 1.3, 1.05}, FindingHigher, 1.1, 1.0 / 32, 0, 5},
		{"even median", []float64{0.9, 1.1, 1.2, 0.8}, FindingNoDifference, 1.0, 11.0 / 16, 2, 2},
		// A tie is neither side: four lower of four decided rounds is 1/16, not enough.
		{"tie", []float64{1, 0.9, 0.9, 0.9, 0.9}, FindingNoDifference, 0.9, 1.0 / 16, 4, 0},
		{"six of seven higher", []float64{1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 0.9}, FindingNoDifference, 1.1, 8.0 / 128, 1, 6},
		{"seven of eight lower", []float64{0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 1.1}, FindingLower, 0.9, 9.0 / 256, 7, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := JudgeRatios(tc.ratios)
			if j.Finding != tc.finding || math.Abs(j.Median-tc.median) > 1e-9 || math.Abs(j.P-tc.p) > 1e-9 ||
				j.Lower != tc.lower || j.Higher != tc.higher {
				t.Errorf("JudgeRatios(%v) = %+v; want finding %q median %v p %v lower %d higher %d",
					tc.ratios, j, tc.finding, tc.median, tc.p, tc.lower, tc.higher)
			}
		})
	}
}

// Holm over a family: the smallest p must beat α/m, the next α/(m−1), and so on; the first that
// does not stops the rest.
func TestHolmFindings(t *testing.T) {
	mk := func(finding string, p float64) ThroughputComparison {
		return ThroughputComparison{ThroughputJudgement: ThroughputJudgement{Finding: finding, P: p}}
	}
	for _, tc := range []struct {
		name string
		in   []ThroughputComparison
		want []string
	}{
		{"empty", nil, nil},
		{"one procedure keeps its finding", []ThroughputComparison{mk(FindingLower, 1.0/32)}, []string{FindingLower}},
		// Twelve procedures, five rounds: 1/32 is above 0.05/12, so nothing survives.
		{"twelve at five rounds", append([]ThroughputComparison{mk(FindingLower, 1.0/32)},
			func() []ThroughputComparison {
				var out []ThroughputComparison
				for i := 0; i < 11; i++ {
					out = append(out, mk(FindingNoDifference, 0.5))
				}
				return out
			}()...), append([]string{FindingNoDifference}, func() []string {
			var out []string
			for i := 0; i < 11; i++ {
				out = append(out, FindingNoDifference)
			}
			return out
		}()...)},
		// Three procedures, eight rounds: 1/256 < 0.05/3, 1/256 < 0.05/2, 9/256 < 0.05/1.
		{"three at eight rounds", []ThroughputComparison{mk(FindingHigher, 9.0/256), mk(FindingLower, 1.0/256), mk(FindingLower, 1.0/256)},
			[]string{FindingHigher, FindingLower, FindingLower}},
		// 0.03 is above 0.05/2: it and the larger 0.04, below 0.05 alone, are kept out.
		{"step-down stops at the first kept-out", []ThroughputComparison{mk(FindingLower, 0.001), mk(FindingLower, 0.04), mk(FindingLower, 0.03)},
			[]string{FindingLower, FindingNoDifference, FindingNoDifference}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			HolmFindings(tc.in)
			for i, c := range tc.in {
				if c.FamilyFinding != tc.want[i] {
					t.Errorf("comparison %d (p %v, %s): family finding %q, want %q", i, c.P, c.Finding, c.FamilyFinding, tc.want[i])
				}
			}
		})
	}
}

// The ratio is the kernel under test over the reference whichever ran first: Run puts its
// Compare kernel in References, and odd rounds swap which one that is.
func TestRoundRatioDirection(t *testing.T) {
	res := func(bps float64) *verdict.Result {
		return &verdict.Result{Traffic: verdict.Traffic{BitsPerSecond: bps}}
	}
	summary := func(results, references float64) *verdict.Summary {
		return &verdict.Summary{Results: []*verdict.Result{res(results)},
			References: []verdict.Reference{{Results: []*verdict.Result{res(references)}}}}
	}
	// The kernel moves 200 Mbit/s, the reference 100.
	if r, ok := roundRatio(summary(200e6, 100e6), false); !ok || r != 2 {
		t.Errorf("reference first (kernel in Results): ratio %v %v, want 2", r, ok)
	}
	if r, ok := roundRatio(summary(100e6, 200e6), true); !ok || r != 2 {
		t.Errorf("kernel first (kernel in References): ratio %v %v, want 2", r, ok)
	}
	if _, ok := roundRatio(summary(0, 200e6), false); ok {
		t.Error("a run that measured nothing gave a ratio")
	}
}
