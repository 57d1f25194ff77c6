package verdict

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/gomodel/rawtrace"
)

// Trace event names this package counts. The first four are Linux 5.10's page_pool events; the
// series adds page_pool_skb_return when the SKB hook hands a page back to its pool.
const (
	EventStateHold    = "page_pool_state_hold"
	EventStateRelease = "page_pool_state_release"
	EventPoolRelease  = "page_pool_release"
	EventSKBReturn    = "page_pool_skb_return"
	EventMarker       = "tracing_mark_write"
)

// TraceFigures are the figures a guest's ftrace text shows, per pool and in total. They come
// from gomodel's replay of the trace (gomodel.ReadTrace), the same parse and the same pools
// as the model's violations: events in timestamp order, and a pool address that is reused
// after its pool was freed (page_pool_release with inflight=0) is a new pool, "ADDR#2".
type TraceFigures struct {
	Pools []*PoolFigures `json:"pools"` // in order of first appearance
	// The totals over the whole trace, the window's holds and the lost events, as gomodel's
	// replay counts them.
	gomodel.TraceFigures
	Lines int64 `json:"lines"`
	// DMASyncs and Puts count the events of gomodel.TraceEventsSystem: arch_sync_dma_for_device
	// and page_pool_put_page, DirectPuts those with allow_direct.
	DMASyncs   int64 `json:"dma_syncs,omitempty"`
	Puts       int64 `json:"puts,omitempty"`
	DirectPuts int64 `json:"direct_puts,omitempty"`
}

// PoolFigures is one page_pool as seen in the trace (pools are named by the hashed %p pointer
// the kernel prints).
type PoolFigures struct {
	Pool       string `json:"pool"`
	Holds      int64  `json:"holds"`
	Releases   int64  `json:"releases"`
	SKBReturns int64  `json:"skb_returns"`
	// Destroyed is true once a page_pool_release event (printed by every destroy attempt) was
	// seen; FinalInflight is the inflight the last one printed.
	Destroyed     bool  `json:"destroyed"`
	FinalInflight int64 `json:"final_inflight"`
	// Timeline is inflight (holds − releases) after each hold or release, and the kernel's own
	// figure at each page_pool_release.
	Timeline []InflightPoint `json:"-"`
}

// InflightPoint is a pool's inflight at a trace timestamp (seconds since boot).
type InflightPoint = gomodel.InflightPoint

func markerText(procedure, edge string) string { return gomodel.MarkerText(procedure, edge) }

// ParseTraceFigures reads ftrace text (from trace or trace_pipe) through gomodel's replay and
// returns its figures. procedure names the markers ("ppkit: NAME begin"/"end") that delimit
// the traffic window; with no markers, HoldsInWindow stays 0. A trace without page_pool events
// gives figures without pools, not an error; a malformed line of a known event is an error.
func ParseTraceFigures(r io.Reader, procedure string) (*TraceFigures, error) {
	tf, _, err := readTrace(r, gomodel.TraceOptions{Procedure: procedure})
	if tf != nil {
		return tf, nil // with a *gomodel.NotATraceError: figures without pools
	}
	return nil, err
}

// RawTrace is a trace as the kernel's ring-buffer pages (the raw transport): a file of pages
// a CPU (index = CPU) and the formats of the events in them.
type RawTrace struct {
	CPUs    []string
	Formats *rawtrace.Formats
}

// replay is readTrace for the pages: rawtrace decodes them into the same replay.
func (r *RawTrace) replay(ctx context.Context, opts gomodel.TraceOptions) (*TraceFigures, *gomodel.TraceReport, error) {
	streams, done, err := r.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer done()
	rep, _, err := rawtrace.Replay(streams, r.Formats, opts)
	return traceResult(rep, err)
}

// WriteText writes the pages as ftrace text into path (rawtrace.WriteText: line N is the
// replay's line N), whole or not at all.
func (r *RawTrace) WriteText(ctx context.Context, path string) error {
	streams, done, err := r.open(ctx)
	if err != nil {
		return err
	}
	defer done()
	f, err := os.CreateTemp(filepath.Dir(path), ".trace-*.txt")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	err = rawtrace.WriteText(f, streams, r.Formats)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write the trace as text: %w", err)
	}
	return os.Rename(f.Name(), path)
}

// open opens the CPUs' files for one pass; done closes them.
func (r *RawTrace) open(ctx context.Context) (streams []io.Reader, done func(), err error) {
	var files []*os.File
	done = func() {
		for _, f := range files {
			f.Close()
		}
	}
	for _, p := range r.CPUs {
		f, err := os.Open(p)
		if err != nil {
			done()
			return nil, nil, fmt.Errorf("raw trace: %w", err)
		}
		files = append(files, f)
		streams = append(streams, rawtrace.NewFileReader(ctxReader{ctx, f}))
	}
	return streams, done, nil
}

// readTrace replays a trace once: the model's report and the figures from it. For a trace the
// model has nothing to judge in (no page_pool event: a *gomodel.NotATraceError, returned), the
// figures are still set and the report is nil; for any other error both are nil.
func readTrace(r io.Reader, opts gomodel.TraceOptions) (*TraceFigures, *gomodel.TraceReport, error) {
	return traceResult(gomodel.ReadTrace(r, opts))
}

// traceResult is readTrace's result of a replay's report and error.
func traceResult(rep *gomodel.TraceReport, err error) (*TraceFigures, *gomodel.TraceReport, error) {
	var nt *gomodel.NotATraceError
	switch {
	case rep != nil && errors.As(err, &nt):
		return figuresOf(rep), nil, err
	case err != nil:
		return nil, nil, err
	}
	return figuresOf(rep), rep, nil
}

// figuresOf converts gomodel's figures.
func figuresOf(rep *gomodel.TraceReport) *TraceFigures {
	f := rep.Figures
	tf := &TraceFigures{TraceFigures: f, Lines: int64(rep.Lines), Pools: make([]*PoolFigures, 0, len(rep.Pools)),
		DMASyncs: int64(rep.DMASyncs), Puts: int64(rep.Puts), DirectPuts: int64(rep.DirectPuts)}
	for i := range rep.Pools {
		p := &rep.Pools[i]
		tf.Pools = append(tf.Pools, &PoolFigures{Pool: p.Pool, Holds: int64(p.Holds), Releases: int64(p.Releases),
			SKBReturns: int64(p.SKBReturns), Destroyed: p.Destroyed, FinalInflight: p.FinalInflight(), Timeline: p.Timeline})
	}
	return tf
}

// Drained reports whether the trace shows pools and every one destroyed with inflight 0.
func (f *TraceFigures) Drained() bool {
	if len(f.Pools) == 0 {
		return false
	}
	for _, p := range f.Pools {
		if !p.Destroyed || p.FinalInflight != 0 {
			return false
		}
	}
	return true
}

// Undestroyed returns the pools that took pages but were never destroyed in the trace.
func (f *TraceFigures) Undestroyed() []string {
	var out []string
	for _, p := range f.Pools {
		if !p.Destroyed && p.Holds > 0 {
			out = append(out, p.Pool)
		}
	}
	sort.Strings(out)
	return out
}
