package procedure

import (
	"testing"

	"github.com/ppkit/ppkit/tests/verdict"
)

func TestJudgeTraceCost(t *testing.T) {
	mbit := func(traced, untraced float64) TraceCostRound {
		return TraceCostRound{Traced: verdict.Traffic{BitsPerSecond: traced * 1e6}, Untraced: verdict.Traffic{BitsPerSecond: untraced * 1e6}}
	}
	for _, tc := range []struct {
		name            string
		rounds          []TraceCostRound
		ratio, min, max float64
		missing         int
	}{
		{"median of three", []TraceCostRound{mbit(80, 100), mbit(90, 100), mbit(50, 100)}, 0.8, 0.5, 0.9, 0},
		{"even: mean of the middle two", []TraceCostRound{mbit(50, 100), mbit(100, 100)}, 0.75, 0.5, 1, 0},
		{"a run that measured nothing has no ratio", []TraceCostRound{mbit(0, 100), mbit(90, 100), mbit(70, 100)}, 0.8, 0.7, 0.9, 1},
		{"a rate against packets has no ratio", []TraceCostRound{
			{Traced: verdict.Traffic{BitsPerSecond: 9e7}, TracedPackets: 10, UntracedPackets: 20}, mbit(60, 100)}, 0.6, 0.6, 0.6, 1},
		{"packets when neither reports a rate", []TraceCostRound{{TracedPackets: 30, UntracedPackets: 40}}, 0.75, 0.75, 0.75, 0},
		{"nothing measured", []TraceCostRound{mbit(0, 0)}, 0, 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := judgeTraceCost("tcp", tc.rounds, true)
			if c.Ratio != tc.ratio || c.Min != tc.min || c.Max != tc.max || c.Missing != tc.missing || len(c.Rounds) != len(tc.rounds) {
				t.Errorf("got ratio %v (%v–%v), %d missing of %d; want %v (%v–%v), %d missing", c.Ratio, c.Min, c.Max, c.Missing, len(c.Rounds),
					tc.ratio, tc.min, tc.max, tc.missing)
			}
		})
	}
}
