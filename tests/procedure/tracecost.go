package procedure

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ppkit/ppkit/tests/verdict"
)

// TraceCost is what tracing costs one procedure's traffic: the same procedure on fresh boards
// of one kernel, traced (a full `ppkit test` run) and untraced, in rounds that alternate which
// of the two goes first. One pair says little on a noisy machine: TCG's speed moves by 10–20 %
// from run to run, as much as the cost being measured.
type TraceCost struct {
	Procedure string           `json:"procedure"`
	Rounds    []TraceCostRound `json:"rounds"`
	// Ratio is the median of the rounds' ratios, Min and Max their range.
	Ratio float64 `json:"ratio"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	// Pass: every traced run passed; a cost measured on a failing run means little.
	Pass bool `json:"pass"`
}

// TraceCostRound is one traced run and one untraced run of a procedure, back to back.
type TraceCostRound struct {
	Traced   verdict.Traffic `json:"traced"`
	Untraced verdict.Traffic `json:"untraced"`
	// TracedPackets and UntracedPackets are what the board's NIC received in the window.
	TracedPackets   int64 `json:"traced_packets"`
	UntracedPackets int64 `json:"untraced_packets"`
	// Ratio is the traced throughput over the untraced (packets when a tool reports no rate).
	Ratio float64 `json:"ratio"`
}

// MeasureTraceCost runs each of cfg's procedures traced and untraced, rounds times, the
// untraced run first in odd rounds, and pairs their traffic.
func MeasureTraceCost(ctx context.Context, cfg Config, rounds int) ([]TraceCost, error) {
	if rounds < 1 {
		return nil, errors.New("a trace cost needs at least one round")
	}
	procs, err := LookupProcedures(cfg.Procedures)
	if err != nil {
		return nil, err
	}
	var out []TraceCost
	for _, p := range procs {
		c := TraceCost{Procedure: p.Name(), Pass: true}
		var ratios []float64
		for round := 0; round < rounds; round++ {
			var traced, untraced *verdict.Result
			for i := 0; i < 2; i++ {
				one := cfg
				one.Procedures = []string{p.Name()}
				one.Untraced = (i == 0) == (round%2 == 1)
				s, err := Run(ctx, one)
				if err != nil {
					return out, err
				}
				if ctx.Err() != nil {
					return out, ctx.Err() // an interrupted round measured nothing
				}
				if len(s.Results) != 1 {
					return out, fmt.Errorf("%s: a run gave %d results, want 1", p.Name(), len(s.Results))
				}
				if one.Untraced {
					untraced = s.Results[0]
				} else {
					traced = s.Results[0]
				}
			}
			r := TraceCostRound{Traced: traced.Traffic, Untraced: untraced.Traffic,
				TracedPackets: traced.Figures.Packets, UntracedPackets: untraced.Figures.Packets}
			r.Ratio = throughputRatio(r.Traced, r.Untraced, r.TracedPackets, r.UntracedPackets)
			c.Rounds = append(c.Rounds, r)
			ratios = append(ratios, r.Ratio)
			c.Pass = c.Pass && traced.Pass
		}
		c.Ratio, c.Min, c.Max = median(ratios), slices.Min(ratios), slices.Max(ratios)
		out = append(out, c)
	}
	return out, nil
}
