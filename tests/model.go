package tests

import (
	"context"
	"errors"
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

// ErrModelNotWired is returned until gomodel offers a trace-checking API to call: a run can
// then not be judged, and says so, instead of passing.
var ErrModelNotWired = errors.New("model not wired: gomodel has no Go API to check a kernel trace yet " +
	"(issue 2, check-trace); tests.CheckTraceWithModel must call it")

// CheckTraceWithModel is the ModelChecker `ppkit test` uses: the trace goes through gomodel's
// trace checker. It fails with ErrModelNotWired until that API exists.
func CheckTraceWithModel(ctx context.Context, in ModelInput) (*ModelReport, error) {
	return nil, &InfraError{Err: ErrModelNotWired}
}

// ModelReady says whether CheckTraceWithModel can judge a trace, so `ppkit test` can refuse to
// boot anything when it cannot.
func ModelReady() error { return ErrModelNotWired }
