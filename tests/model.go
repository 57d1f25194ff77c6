package tests

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/ppkit/ppkit/gomodel"
)

// ModelInput is what the reference model needs to judge one procedure.
type ModelInput struct {
	Procedure string
	Kernel    Kernel
	// TracePath is the guest's ftrace text (trace_pipe) for the whole procedure.
	TracePath string
	// RxPackets is the number of packets the board's NIC received in the traffic window, for
	// the per-packet figures.
	RxPackets int64
}

// ModelReport is the model's verdict on a trace and its prediction of the figures.
type ModelReport struct {
	Violations []ModelViolation `json:"violations"`
	Predicted  ModelFigures     `json:"predicted"`
}

// ModelViolation is one invariant the trace broke (gomodel's names: foreign-page-returned,
// double-return, use-after-free, dma-mapped-page-freed, refcount-underflow, inflight-leak,
// pool-page-in-frag), with the operation and page history in Detail.
type ModelViolation struct {
	Name   string `json:"name"`
	Detail string `json:"detail"`
}

// ModelFigures are the model's predictions of the figures ppkit reports.
type ModelFigures struct {
	Holds           int64   `json:"holds"`
	HoldsInWindow   int64   `json:"holds_in_window"`
	SlowPathPer1000 float64 `json:"slow_path_per_1000"`
	SKBReturns      int64   `json:"skb_returns"`
	Releases        int64   `json:"releases"`
	FinalInflight   int64   `json:"final_inflight"`
}

// ModelChecker replays a procedure's trace through the reference model.
type ModelChecker func(ctx context.Context, in ModelInput) (*ModelReport, error)

// CheckTraceWithModel is the ModelChecker `ppkit test` uses: the trace is replayed through
// gomodel.CheckTrace, whose violations become the verdict and whose per-pool figures are the
// model's account of the run. A trace the model cannot read is an error, never a pass.
func CheckTraceWithModel(ctx context.Context, in ModelInput) (*ModelReport, error) {
	f, err := os.Open(in.TracePath)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	defer f.Close()
	rep, err := gomodel.CheckTrace(f, gomodel.TraceOptions{File: in.TracePath, Packets: in.RxPackets})
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	return modelReport(rep), nil
}

// modelReport converts gomodel's trace report.
func modelReport(rep *gomodel.TraceReport) *ModelReport {
	out := &ModelReport{Violations: []ModelViolation{}}
	for _, v := range rep.Violations {
		detail := v.Detail
		if v.Page != "" {
			detail = v.Page + ": " + detail
		}
		if v.Line > 0 {
			detail = fmt.Sprintf("trace line %d: %s", v.Line, detail)
		}
		if len(v.History) > 0 {
			detail += "\nhistory:\n  " + strings.Join(v.History, "\n  ")
		}
		out.Violations = append(out.Violations, ModelViolation{Name: v.Name, Detail: detail})
	}
	p := &out.Predicted
	for _, pool := range rep.Pools {
		p.Holds += int64(pool.Holds)
		p.Releases += int64(pool.Releases)
		p.SKBReturns += int64(pool.SkbReturns)
		p.FinalInflight += pool.Inflight
	}
	// gomodel counts every slow-path allocation of the trace, the ring fill at open included.
	p.SlowPathPer1000 = rep.SlowPathPer1k
	return out
}

// ModelReady says whether CheckTraceWithModel can judge a trace.
func ModelReady() error { return nil }
