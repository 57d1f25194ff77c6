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
	// Ratio is the median of the rounds' ratios, Min and Max their range; Missing counts the
	// rounds in which a run measured nothing (no rate and no packets), which have no ratio.
	Ratio   float64 `json:"ratio"`
	Missing int     `json:"missing,omitempty"`
	Min     float64 `json:"min"`
	Max     float64 `json:"max"`
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
		var rs []TraceCostRound
		pass := true
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
			rs = append(rs, TraceCostRound{Traced: traced.Traffic, Untraced: untraced.Traffic,
				TracedPackets: traced.Figures.Packets, UntracedPackets: untraced.Figures.Packets})
			pass = pass && traced.Pass
		}
		out = append(out, judgeTraceCost(p.Name(), rs, pass))
	}
	return out, nil
}

// judgeTraceCost is a procedure's cost from its rounds: each round's ratio, and the median and
// range of those that measured something on both sides.
func judgeTraceCost(procedure string, rounds []TraceCostRound, pass bool) TraceCost {
	c := TraceCost{Procedure: procedure, Rounds: rounds, Pass: pass}
	var ratios []float64
	for i := range c.Rounds {
		r := &c.Rounds[i]
		r.Ratio = throughputRatio(r.Traced, r.Untraced, r.TracedPackets, r.UntracedPackets)
		if r.Ratio == 0 || (r.Traced.BitsPerSecond == 0) != (r.Untraced.BitsPerSecond == 0) {
			c.Missing++ // as roundRatio: no figure, or a rate against a packet count
			continue
		}
		ratios = append(ratios, r.Ratio)
	}
	if len(ratios) > 0 {
		c.Ratio, c.Min, c.Max = median(ratios), slices.Min(ratios), slices.Max(ratios)
	}
	return c
}
