package verdict

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ppkit/ppkit/gomodel"
)

// ModelInput is what the reference model needs to judge one procedure.
type ModelInput struct {
	Procedure string
	Kernel    string // Result.Kernel: "baseline" or "series DIR"
	// TracePath is the guest's ftrace text (trace_pipe) for the whole procedure, when the
	// trace came as text; Raw the trace as ring-buffer pages, when it came raw.
	TracePath string
	Raw       *RawTrace
	// RxPackets is the number of packets the board's NIC received in the traffic window, for
	// the per-packet figures.
	RxPackets int64
}

// ModelReport is the model's verdict on a trace and its prediction of the figures.
type ModelReport struct {
	Violations []ModelViolation `json:"violations"`
	Predicted  ModelFigures     `json:"predicted"`
	// Trace is the figures of the same replay (the runner reports them): one parse of the
	// trace gives both the violations and every figure, with the same pools.
	Trace *TraceFigures `json:"-"`
}

// ModelViolation is one invariant the trace broke (gomodel's names: foreign-page-returned,
// double-return, use-after-free, dma-mapped-page-freed, refcount-underflow, inflight-leak,
// pool-page-in-frag), with the operation and page history in Detail.
type ModelViolation struct {
	Name   string `json:"name"`
	Detail string `json:"detail"`
	// Line is the trace line of the causing event, Pfn the page involved (0: none).
	Line int    `json:"line,omitempty"`
	Pfn  uint64 `json:"pfn,omitempty"`
}

// Culprit is the first violation of one kind with the whole life of its page in the trace:
// every event naming the pfn, from the pool's allocation of it (its last page_pool_state_hold
// before the violation) to the violation.
type Culprit struct {
	Violation string              `json:"violation"`
	Detail    string              `json:"detail"`
	Pfn       uint64              `json:"pfn"`
	Line      int                 `json:"line"`
	History   []gomodel.PageEvent `json:"history"`
	// Omitted counts the events left out of a very long history (its middle).
	Omitted int `json:"omitted,omitempty"`
}

// culpritHistoryMax bounds a culprit's history: a page recycled through the hook thousands of
// times keeps its first and last events.
const culpritHistoryMax = 200

// Culprits reads the trace once more for the first violation of each kind that names a page.
func Culprits(tracePath string, m *ModelReport) ([]Culprit, error) {
	if m == nil {
		return nil, nil
	}
	var out []Culprit
	upto := map[uint64]int{}
	seen := map[string]bool{}
	for _, v := range m.Violations {
		if seen[v.Name] || v.Pfn == 0 || v.Line == 0 {
			continue
		}
		seen[v.Name] = true
		out = append(out, Culprit{Violation: v.Name, Detail: firstLine(v.Detail), Pfn: v.Pfn, Line: v.Line})
		upto[v.Pfn] = max(upto[v.Pfn], v.Line)
	}
	if len(out) == 0 {
		return nil, nil
	}
	f, err := os.Open(tracePath)
	if err != nil {
		return nil, fmt.Errorf("culprit pages: %w", err)
	}
	defer f.Close()
	hist, err := gomodel.PageHistories(f, upto)
	if err != nil {
		return nil, fmt.Errorf("culprit pages: %w", err)
	}
	for i := range out {
		c := &out[i]
		var evs []gomodel.PageEvent
		for _, e := range hist[c.Pfn] {
			if e.Line > c.Line {
				break
			}
			if e.Event == "page_pool_state_hold" {
				evs = evs[:0] // a new life: the pool allocated the page (again)
			}
			evs = append(evs, e)
		}
		if len(evs) > culpritHistoryMax {
			head := culpritHistoryMax / 10
			c.Omitted = len(evs) - culpritHistoryMax
			evs = append(evs[:head:head], evs[len(evs)-(culpritHistoryMax-head):]...)
		}
		c.History = evs
	}
	return out, nil
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

// ModelChecker replays a procedure's trace through the reference model. Its report's Trace
// holds the trace's figures; with an error, the report may still be returned for them (a
// trace without page_pool events has figures but nothing to judge).
type ModelChecker func(ctx context.Context, in ModelInput) (*ModelReport, error)

// CheckTraceWithModel is the ModelChecker `ppkit test` uses: the trace is replayed once
// through gomodel.ReadTrace, whose violations become the verdict, whose per-pool figures are
// the model's account of the run, and whose TraceFigures are the figures ppkit reports. A trace
// the model cannot read is an error, never a pass; for a trace without page_pool events the
// error comes with a report that holds only the figures.
func CheckTraceWithModel(ctx context.Context, in ModelInput) (*ModelReport, error) {
	opts := gomodel.TraceOptions{File: in.TracePath, Packets: in.RxPackets, Procedure: in.Procedure}
	var tf *TraceFigures
	var rep *gomodel.TraceReport
	var err error
	if in.Raw != nil {
		opts.File = "raw trace"
		tf, rep, err = in.Raw.replay(ctx, opts)
	} else {
		var f *os.File
		if f, err = os.Open(in.TracePath); err != nil {
			return nil, fmt.Errorf("model: %w", err)
		}
		defer f.Close()
		tf, rep, err = readTrace(ctxReader{ctx, f}, opts)
	}
	if err != nil {
		if tf != nil {
			return &ModelReport{Violations: []ModelViolation{}, Trace: tf}, fmt.Errorf("model: %w", err)
		}
		return nil, fmt.Errorf("model: %w", err)
	}
	m := modelReport(rep)
	m.Trace = tf
	return m, nil
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
		mv := ModelViolation{Name: v.Name, Detail: detail, Line: v.Line}
		fmt.Sscanf(v.Page, "pfn %d", &mv.Pfn)
		out.Violations = append(out.Violations, mv)
	}
	p := &out.Predicted
	for _, pool := range rep.Pools {
		p.Holds += int64(pool.Holds)
		p.Releases += int64(pool.Releases)
		p.SKBReturns += int64(pool.SKBReturns)
		p.FinalInflight += pool.Inflight
	}
	// gomodel counts every slow-path allocation of the trace, the ring fill at open included.
	p.SlowPathPer1000 = rep.SlowPathPer1k
	return out
}

// ctxReader ends a read of a large trace when ctx ends: the model and the parsers are pure and
// know no context, and a Ctrl-C must not wait for a 400 MB replay.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ModelReady says whether CheckTraceWithModel can judge a trace.
func ModelReady() error { return nil }
