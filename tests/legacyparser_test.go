package tests

// The figures parser that tests/trace.go held before issue 14 (file order, a new pool at
// hold=1), kept verbatim — and only here, in a test file — as the reference that
// BenchmarkTraceOneParse measures the single gomodel replay against and that
// TestFiguresAgainstLegacyParser compares the golden traces' figures with. Nothing in
// production calls it.

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// legacyFigures are the figures read straight from a guest's ftrace text, without the model:
// what the kernel reported, per pool and in total.
type legacyFigures struct {
	Pools []*legacyPool `json:"pools"` // in order of first appearance
	// Totals over the whole trace.
	Holds      int64 `json:"holds"`
	Releases   int64 `json:"releases"`
	SKBReturns int64 `json:"skb_returns"`
	// HoldsInWindow counts page_pool_state_hold between the procedure's begin and end markers:
	// the slow-path allocations caused by its traffic, without the ring fill at open.
	HoldsInWindow int64   `json:"holds_in_window"`
	WindowStart   float64 `json:"window_start,omitempty"`
	WindowEnd     float64 `json:"window_end,omitempty"`
	// Events counts every event by name; LostEvents sums ftrace's "[LOST N EVENTS]" notes.
	Events     map[string]int64 `json:"events"`
	LostEvents int64            `json:"lost_events"`
	Lines      int64            `json:"lines"`
}

// legacyPool is one page_pool as seen in the trace (pools are named by the hashed %p pointer
// the kernel prints).
type legacyPool struct {
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

// ftrace line: "  <comm>-<pid> [(<tgid>)] [<cpu>] [<flags>] <secs>.<usecs>: <event>: <fields>".
var (
	legacyLineRE = regexp.MustCompile(`^\s*(.*?)-(\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(\d+)\]\s+(?:\S{4,5}\s+)?(\d+\.\d+):\s+(\w+):\s?(.*)$`)
	legacyLostRE = regexp.MustCompile(`^CPU:\d+ \[LOST (\d+) EVENTS\]`)
)

// legacyParseTraceFigures reads ftrace text (from trace or trace_pipe) and counts the page_pool events
// per pool. procedure names the markers ("ppkit: NAME begin"/"end") that delimit the traffic
// window; with no markers, HoldsInWindow stays 0. Lines that are not trace events (headers,
// comments) are skipped; a line that looks like an event but has a malformed field is an error.
func legacyParseTraceFigures(r io.Reader, procedure string) (*legacyFigures, error) {
	p := newLegacyParser(procedure)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if err := p.line(sc.Text()); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	return p.f, nil
}

// legacyParser accumulates legacyFigures one line at a time, so a growing trace can be followed.
type legacyParser struct {
	f          *legacyFigures
	pools      map[string]*legacyPool // current pool at each address
	reuse      map[string]int
	begin, end string
	inWindow   bool
}

func newLegacyParser(procedure string) *legacyParser {
	return &legacyParser{f: &legacyFigures{Events: map[string]int64{}}, pools: map[string]*legacyPool{},
		reuse: map[string]int{}, begin: markerText(procedure, "begin"), end: markerText(procedure, "end")}
}

func (tp *legacyParser) line(line string) error {
	f := tp.f
	f.Lines++
	lineNo := f.Lines
	if m := legacyLostRE.FindStringSubmatch(line); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			return fmt.Errorf("trace line %d: lost-events count: %w", lineNo, err)
		}
		f.LostEvents += n
		return nil
	}
	if strings.HasPrefix(strings.TrimSpace(line), "#") {
		return nil
	}
	m := legacyLineRE.FindStringSubmatch(line)
	if m == nil {
		return nil
	}
	ts, err := strconv.ParseFloat(m[4], 64)
	if err != nil {
		return fmt.Errorf("trace line %d: timestamp %q: %w", lineNo, m[4], err)
	}
	name, fields := m[5], m[6]
	f.Events[name]++
	if name == EventMarker {
		switch strings.TrimSpace(fields) {
		case tp.begin:
			tp.inWindow, f.WindowStart = true, ts
		case tp.end:
			tp.inWindow, f.WindowEnd = false, ts
		}
		return nil
	}
	if !strings.HasPrefix(name, "page_pool_") {
		return nil
	}
	kv := summaryFields(fields)
	id, ok := kv["page_pool"]
	if !ok {
		return fmt.Errorf("trace line %d: %s without page_pool=", lineNo, name)
	}
	p := tp.pools[id]
	// A new pool at the address of a destroyed one (the kernel reuses the memory, e.g. after
	// an MTU change) starts its hold counter at 1 again: it gets a "#N" suffix.
	if p != nil && name == EventStateHold && kv["hold"] == "1" && p.Holds > 0 {
		tp.reuse[id]++
		p = nil
	}
	if p == nil {
		p = &legacyPool{Pool: id}
		if n := tp.reuse[id]; n > 0 {
			p.Pool = fmt.Sprintf("%s#%d", id, n+1)
		}
		tp.pools[id] = p
		f.Pools = append(f.Pools, p)
	}
	switch name {
	case EventStateHold:
		p.Holds++
		f.Holds++
		if tp.inWindow {
			f.HoldsInWindow++
		}
		p.Timeline = append(p.Timeline, InflightPoint{Time: ts, Inflight: p.Holds - p.Releases})
	case EventStateRelease:
		p.Releases++
		f.Releases++
		p.Timeline = append(p.Timeline, InflightPoint{Time: ts, Inflight: p.Holds - p.Releases})
	case EventSKBReturn:
		p.SKBReturns++
		f.SKBReturns++
	case EventPoolRelease:
		v, ok := kv["inflight"]
		if !ok {
			return fmt.Errorf("trace line %d: page_pool_release without inflight=", lineNo)
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("trace line %d: inflight %q: %w", lineNo, v, err)
		}
		p.Destroyed, p.FinalInflight = true, n
		p.Timeline = append(p.Timeline, InflightPoint{Time: ts, Inflight: n})
	}
	return nil
}
