package procedure

import (
	"context"

	"github.com/ppkit/ppkit/tests/verdict"
)

// TraceCost is what tracing costs one procedure's traffic: the same procedure on fresh boards
// of one kernel, traced (a full `ppkit test` run) and untraced.
type TraceCost struct {
	Procedure string          `json:"procedure"`
	Traced    verdict.Traffic `json:"traced"`
	Untraced  verdict.Traffic `json:"untraced"`
	// TracedPackets and UntracedPackets are what the board's NIC received in the window.
	TracedPackets   int64 `json:"traced_packets"`
	UntracedPackets int64 `json:"untraced_packets"`
	// Pass is the traced run's verdict: a cost measured on a failing run means little.
	Pass bool `json:"pass"`
	// Ratio is the traced throughput over the untraced (packets when a tool reports no rate).
	Ratio float64 `json:"ratio"`
}

// MeasureTraceCost runs cfg's procedures traced and then untraced and pairs their traffic.
func MeasureTraceCost(ctx context.Context, cfg Config) ([]TraceCost, error) {
	traced, err := Run(ctx, cfg)
	if err != nil {
		return nil, err
	}
	cfg.Untraced = true
	untraced, err := Run(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var out []TraceCost
	for i, r := range traced.Results {
		if i >= len(untraced.Results) {
			break
		}
		u := untraced.Results[i]
		c := TraceCost{Procedure: r.Procedure, Traced: r.Traffic, Untraced: u.Traffic,
			TracedPackets: r.Figures.Packets, UntracedPackets: u.Figures.Packets, Pass: r.Pass}
		c.Ratio = throughputRatio(c.Traced, c.Untraced, c.TracedPackets, c.UntracedPackets)
		out = append(out, c)
	}
	return out, nil
}
