package gomodel

import (
	"bufio"
	"bytes"
	"container/heap"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// Trace events CheckTrace understands. Formats are the TP_printk strings of 5.10's
// include/trace/events/page_pool.h and kmem.h, plus the series' page_pool_skb_return.
const (
	evHold            = iota + 1 // page_pool_state_hold: page_pool=%p page=%p pfn=%lu hold=%u
	evRelease                    // page_pool_state_release: page_pool=%p page=%p pfn=%lu release=%u
	evPoolRelease                // page_pool_release: page_pool=%p inflight=%d hold=%u release=%u cnt=%llu
	evUpdateNid                  // page_pool_update_nid: page_pool=%p pool_nid=%d new_nid=%d
	evSkbReturn                  // page_pool_skb_return: page_pool=%p page=%p pfn=%lu (the series)
	evPageFree                   // mm_page_free: page=%p pfn=%lu order=%d (5.10; later kernels print pfn=0x%lx)
	evPageFreeBatched            // mm_page_free_batched: page=%p pfn=%lu order=0
	evDMASync                    // ppkit/arch_sync_dma_for_device: paddr=0x%llx size=%llu dir=%u (TraceEventsSystem)
	evPut                        // ppkit/page_pool_put_page: dma=0x%llx sync=%u direct=%u (TraceEventsSystem)
	evLost                       // ftrace's "CPU:N [LOST M EVENTS]": not an event, a gap
	evMarker                     // tracing_mark_write of TraceOptions.Procedure's begin (count 1) or end (count 2) marker
)

var traceEventNames = [...]string{"", "page_pool_state_hold", "page_pool_state_release", "page_pool_release",
	"page_pool_update_nid", "page_pool_skb_return", "mm_page_free", "mm_page_free_batched",
	"arch_sync_dma_for_device", "page_pool_put_page", "[LOST EVENTS]", "tracing_mark_write"}

// TraceEventsSystem is the tracefs event system of the two events ppkit adds to every kernel it
// builds (harness/config/trace-events.patch), which the checker reads beside the tracepoints:
//   - arch_sync_dma_for_device(phys_addr_t paddr, size_t size, enum dma_data_direction dir)
//     (arch/arm64/mm/dma-mapping.c), at its entry: the cache maintenance
//     dma_sync_single_for_device() and dma_map_page() do for a device that is not DMA-coherent
//     (kernel/dma/direct.h);
//   - page_pool_put_page(struct page_pool *pool, struct page *page, unsigned int
//     dma_sync_size, bool allow_direct) (net/core/page_pool.c), at its entry: every page handed
//     back to a pool (page_pool_put_full_page() is an inline wrapper), with
//     page_pool_get_dma_addr(page) as dma= because %p pointers in the tracepoints are hashed
//     and cannot be matched; on the emulated board (no IOMMU, no dma-ranges) the DMA address is
//     the physical address: pfn = dma >> 12.
//
// Traces made before they were tracepoints have them as kprobe events of the same group, names
// and fields, which also print the probed function first; both read the same.
const TraceEventsSystem = "ppkit"

// pageShift is the guest's PAGE_SHIFT (arm64 with 4 KiB pages, the kernel config's default).
const pageShift = 12

// DMA directions (include/linux/dma-direction.h).
const (
	dmaBidirectional = 0
	dmaToDevice      = 1
	dmaFromDevice    = 2
)

// traceEvent is one parsed event.
type traceEvent struct {
	ts       uint64 // timestamp, ns
	kind     uint8
	order    uint8
	dir      uint8  // evDMASync: the DMA direction
	direct   bool   // evPut: allow_direct
	softirq  int8   // the ftrace flags' hardirq/softirq column says in_serving_softirq(): 1 yes, 0 no, -1 no flags column
	cpu      int16  // the [CPU] column
	size     uint64 // evDMASync: bytes synced
	line     int32
	pool     int32 // interned page_pool pointer
	pfn      uint64
	count    uint32 // hold= or release=
	inflight int32
	hold     uint32
	release  uint32
	cnt      uint64
}

// TraceOptions configures CheckTrace.
type TraceOptions struct {
	// File names the trace in errors and reports.
	File string
	// Packets is the number of packets the traced run received (0 if unknown); it turns
	// slow-path allocations and skb returns into rates per 1000 packets.
	Packets int64
	// Procedure names the trace_marker lines that delimit a procedure's traffic window,
	// MarkerText(Procedure, "begin") and MarkerText(Procedure, "end"): TraceFigures counts the
	// holds between them. Empty: no window, and marker lines are ignored like other events.
	Procedure string
}

// MarkerText is what ppkit writes to trace_marker around a procedure's traffic (edge is
// "begin" or "end"); the trace shows it as a tracing_mark_write event.
func MarkerText(procedure, edge string) string { return "ppkit: " + procedure + " " + edge }

// InflightPoint is a pool's inflight at a trace timestamp (seconds since boot).
type InflightPoint struct {
	Time     float64
	Inflight int64
}

// TraceFigures are the figures ppkit reports from a trace, counted in the same replay that
// finds the violations (timestamp order, the same pools).
type TraceFigures struct {
	// Totals over the pools.
	Holds      int64 `json:"holds"`
	Releases   int64 `json:"releases"`
	SKBReturns int64 `json:"skb_returns"`
	// HoldsInWindow counts page_pool_state_hold events between the procedure's begin and end
	// markers (TraceOptions.Procedure): the slow-path allocations caused by its traffic,
	// without the ring fill at open. WindowStart and WindowEnd are the markers' timestamps
	// (seconds; 0: not seen).
	HoldsInWindow int64   `json:"holds_in_window"`
	WindowStart   float64 `json:"window_start,omitempty"`
	WindowEnd     float64 `json:"window_end,omitempty"`
	// LostEvents sums M over ftrace's "[LOST M EVENTS]" lines (TraceReport.LostEvents counts
	// the lines); a line without a readable M counts 1.
	LostEvents int64 `json:"lost_events"`
}

// PoolTrace is one page_pool as the trace shows it. A pool address that is reused after the
// pool was freed is a new pool, named with a "#2" suffix.
type PoolTrace struct {
	Pool string `json:"pool"` // the hashed %p pointer
	// Complete says the trace saw the pool's first slow-path allocation (hold=1), so every
	// page it holds is known; otherwise pages held before tracing started are trusted.
	Complete       bool   `json:"complete"`
	Holds          uint64 `json:"holds"`    // page_pool_state_hold events: slow-path allocations
	Releases       uint64 `json:"releases"` // page_pool_state_release events
	HoldCounter    uint32 `json:"hold_counter"`
	ReleaseCounter uint32 `json:"release_counter"`
	// Inflight is the pool's own count, pages_state_hold_cnt - pages_state_release_cnt, from
	// the last counters the trace shows.
	Inflight       int64  `json:"inflight"`
	Held           int    `json:"held_at_end"` // pages the trace shows held and not released
	SKBReturns     uint64 `json:"skb_returns"`
	FreedWhileHeld int    `json:"freed_while_held"`
	Destroyed      bool   `json:"destroyed"`
	Freed          bool   `json:"freed"`
	// LastRelease is the pool's last page_pool_release event (page_pool_destroy and its
	// deferred retries), if any.
	LastRelease *PoolReleaseEvent `json:"last_release,omitempty"`
	// Timeline is the pool's inflight over trace time: holds − releases the trace shows after
	// each hold or release, and the kernel's own inflight at each page_pool_release. Of each
	// TimelineStep of trace time it keeps the points with the step's lowest and highest
	// inflight (the first of each) and its last point, in trace order.
	Timeline []InflightPoint `json:"-"`
}

// FinalInflight is the inflight the pool's last page_pool_release printed (0 without one).
func (p *PoolTrace) FinalInflight() int64 {
	if p.LastRelease == nil {
		return 0
	}
	return int64(p.LastRelease.Inflight)
}

// PoolReleaseEvent is one page_pool_release tracepoint.
type PoolReleaseEvent struct {
	Line     int    `json:"line"`
	Inflight int32  `json:"inflight"`
	Hold     uint32 `json:"hold"`
	Release  uint32 `json:"release"`
	Cnt      uint64 `json:"cnt"`
}

// TraceReport is what CheckTrace found.
type TraceReport struct {
	File          string      `json:"file"`
	Lines         int         `json:"lines"`
	Events        int         `json:"events"`  // events of the kinds above
	Ignored       int         `json:"ignored"` // other events and non-event lines
	LostEvents    int         `json:"lost_event_markers"`
	Reordered     int         `json:"reordered_events"` // events that came after later ones (replayed in time order)
	Pools         []PoolTrace `json:"pools"`
	Violations    []Violation `json:"violations"`
	Notes         []string    `json:"notes,omitempty"`
	Packets       int64       `json:"packets,omitempty"`
	SlowPathPer1k float64     `json:"slow_path_allocs_per_1000_packets,omitempty"`
	ReturnsPer1k  float64     `json:"skb_returns_per_1000_packets,omitempty"`
	Passed        bool        `json:"passed"` // no violation
	// The events of TraceEventsSystem: DMA syncs for the device, pages handed back to a pool,
	// and those handed back with allow_direct.
	DMASyncs   int `json:"dma_syncs_for_device,omitempty"`
	Puts       int `json:"page_pool_puts,omitempty"`
	DirectPuts int `json:"direct_puts,omitempty"`
	// Figures are the counts ppkit reports, from this same replay.
	Figures TraceFigures `json:"-"`
}

type poolTraceState struct {
	PoolTrace
	ptr string // the %p value, without the generation suffix
	// syncChecked: the pool's pages are synced for the device (a slow-path allocation of it
	// was preceded by arch_sync_dma_for_device of the page), so the sync rule applies to it.
	syncChecked bool
	// napiCPUs: the CPUs on which the pool allocated in softirq (its NAPI poll), bit per CPU.
	napiCPUs uint64
	// further violations of the two probe rules after the first one reported for this pool
	moreNotSynced, moreDirect int
	seen                      bool
	// first is the replay order of the pool's first event (its trace time, then line): the
	// report lists pools in that order, whatever the parser met first.
	first    [2]uint64
	replayed bool
	holdGap  bool
	// relMissing counts release counter values skipped and not (yet) seen; relGap* say where
	// the first skip was.
	relMissing           int64
	relGapLine           int32
	relGapFrom, relGapTo uint32
	culprit              uint64 // a pfn freed while held
	hasCulp              bool
	preTraced            int
	// stepN is the number + 1 of the Timeline's step being replayed (0: none); stepLo,
	// stepHi and stepLast its lowest, highest and last point so far.
	stepN                    uint64
	stepLo, stepHi, stepLast stepPoint
}

// TimelineStep is the trace time of which PoolTrace.Timeline keeps three points at most. A
// pool takes a page for most packets in the slow path, and a point a page is 16 bytes: the
// whole timeline of a procedure was the replay's largest allocation and a quarter of its time
// (BenchmarkCapture/forward), for a chart a few hundred pixels wide over seconds.
const TimelineStep = time.Millisecond

type stepPoint struct {
	ts       uint64
	inflight int64
}

// inflight adds a point to the pool's Timeline: at ts, v pages inflight.
func (p *poolTraceState) inflight(ts uint64, v int64) {
	pt := stepPoint{ts, v}
	if n := ts/uint64(TimelineStep) + 1; n != p.stepN {
		p.flushStep()
		p.stepN, p.stepLo, p.stepHi, p.stepLast = n, pt, pt, pt
		return
	}
	if v < p.stepLo.inflight {
		p.stepLo = pt
	} else if v > p.stepHi.inflight {
		p.stepHi = pt
	}
	p.stepLast = pt
}

// flushStep appends the step being replayed to the Timeline: its lowest, highest and last
// point in trace order, each once.
func (p *poolTraceState) flushStep() {
	if p.stepN == 0 {
		return
	}
	a, b := p.stepLo, p.stepHi
	if b.ts < a.ts {
		a, b = b, a
	}
	p.Timeline = append(p.Timeline, InflightPoint{seconds(a.ts), a.inflight})
	if b != a {
		p.Timeline = append(p.Timeline, InflightPoint{seconds(b.ts), b.inflight})
	}
	if l := p.stepLast; l != a && l != b {
		p.Timeline = append(p.Timeline, InflightPoint{seconds(l.ts), l.inflight})
	}
	p.stepN = 0
}

// histEntry is one event of a page's history: its line (bits 0-31), its kind (32-39) and
// its pool + 1 (40-63; 0: none, or a pool past the 16,777,214th, which is not named).
type histEntry uint64

func newHistEntry(ev *traceEvent) histEntry {
	pool := uint64(ev.pool + 1)
	if pool >= 1<<24 {
		pool = 0
	}
	return histEntry(uint64(uint32(ev.line)) | uint64(ev.kind)<<32 | pool<<40)
}

func (h histEntry) line() int32 { return int32(uint32(h)) }
func (h histEntry) kind() uint8 { return uint8(h >> 32) }
func (h histEntry) pool() int32 { return int32(h>>40) - 1 }

// pfnState is what the replay knows of a page: 80 bytes, its history included.
type pfnState struct {
	holder   int32 // pool holding page_pool state, -1
	released int32 // pool that released it last and has not held it since, -1
	nh       uint32
	// flags: pfKnown, and
	//   - pfFreed: freed by the page allocator and not held since;
	//   - the DMA sync rule: pfSynced says arch_sync_dma_for_device covered the page since its
	//     last return to its pool (or since its last release: for the slow path's first
	//     hand-out); pfReturned says the page went back to its pool (page_pool_skb_return or
	//     page_pool_put_page) and has not left it since; pfSkbReturn says the last event was
	//     the hook's page_pool_skb_return, whose page_pool_put_page is the same return.
	flags uint8
	hist  [8]histEntry
}

const (
	pfKnown uint8 = 1 << iota
	pfFreed
	pfSynced
	pfReturned
	pfSkbReturn
	pfRule = pfSynced | pfReturned | pfSkbReturn
)

// traceChecker replays events: per pool its counters, per pfn which pool holds it.
type traceChecker struct {
	rep   *TraceReport
	ptrs  map[string]int32 // pointer -> current pool
	pools []poolTraceState
	pfns  pfnTable
	// putsKnown counts the put probe events that name a page a pool holds (ProbeError).
	putsKnown int
	line      string // the raw line of the event being replayed, for violation reports
	lineNo    int
	ts        []byte // the timestamp of the line just parsed

	lastPtr *string // the last interned pointer (events of one pool come in runs)
	lastID  int32

	begin, end []byte // the procedure's marker texts; nil: no window
	inWindow   bool
}

func newTraceChecker(opts TraceOptions) *traceChecker {
	return &traceChecker{
		rep:  &TraceReport{File: opts.File, Packets: opts.Packets},
		ptrs: map[string]int32{},
	}
}

// NotATraceError says that CheckTrace's input holds no page_pool trace at all (empty, not text,
// or text without a single page_pool event): there is nothing to judge, so there is no verdict.
type NotATraceError struct {
	File   string
	Reason string
}

func (e *NotATraceError) Error() string {
	return fmt.Sprintf("%s: %s; want an ftrace text trace with the page_pool tracepoints enabled "+
		"(a copy of /sys/kernel/tracing/trace after 'echo 1 > events/page_pool/enable')", e.File, e.Reason)
}

// CheckTrace replays a text ftrace (the format of /sys/kernel/tracing/trace) of
// page_pool_state_hold, page_pool_state_release, page_pool_release, page_pool_update_nid,
// page_pool_skb_return, mm_page_free, mm_page_free_batched and the events of
// TraceEventsSystem, and reports violations:
//   - dma-mapped-page-freed: the page allocator frees (or hands out again) a page a pool still
//     holds (a hold without a release);
//   - foreign-page-returned: a pool releases, or the return hook hands it, a page it does not hold;
//   - double-return: a pool releases, or is handed, a page it already released;
//   - use-after-free: a pool releases, or is handed, a page already freed;
//   - inflight-leak: a pool's last page_pool_release event, after page_pool_destroy, shows
//     inflight != 0;
//   - not-synced-for-device (with TraceEventsSystem's events): a pool page is handed to
//     the NIC (slow path, or again after a return) without arch_sync_dma_for_device of it;
//   - direct-recycle-outside-napi (TraceEventsSystem's events): page_pool_put_page(allow_direct) in
//     softirq on a CPU other than the one where the pool allocates in softirq.
//
// Other events are ignored. A malformed line of a known event is a *LineError. Capture the
// trace after the traffic stopped and the pools were destroyed, so that the last
// page_pool_release of each pool is final.
//
// Events are replayed in timestamp order, not in file order: trace_pipe merges the per-CPU
// buffers by timestamp, but only among the events already committed when it reads, so an
// event reserved on one CPU and committed after another CPU's later events were read comes out
// late (seen under QEMU TCG: a page_pool_state_release 50 lines after the mm_page_free it
// preceded by 0.4 ms). CheckTrace holds events for ReorderWindow of trace time to restore the
// order.
func CheckTrace(r io.Reader, opts TraceOptions) (*TraceReport, error) {
	rep, err := ReadTrace(r, opts)
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// ReadTrace is CheckTrace, except that for a text trace without a page_pool event (or an empty
// one) it returns the report with the *NotATraceError (no pool, no violation; the figures of
// the lines read), for a caller that reports figures even then. With any other error (a
// *LineError, or a *NotATraceError for binary input) the report is nil.
func ReadTrace(r io.Reader, opts TraceOptions) (*TraceReport, error) {
	s := NewTraceStream(opts)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		if err := s.Line(sc.Bytes()); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &LineError{File: opts.File, Line: s.c.lineNo + 1, Msg: fmt.Sprintf("read: %v (lines are limited to 1 MiB)", err)}
	}
	return s.Finish()
}

// TraceStream is CheckTrace one line at a time, for a trace that is still growing: feed it
// lines with Line, ask Drained whether every pool seen so far is destroyed with nothing
// inflight, and call Finish at the end. CheckTrace is a TraceStream fed by a reader, so the
// report, the figures and the violations all come from one parse and one replay.
type TraceStream struct {
	opts       TraceOptions
	c          *traceChecker
	q          reorderQueue
	ev         traceEvent
	poolEvents int
	finished   bool
	// the last pool pointer of a decoded Event and its pool (event.go)
	rawPool   uint64
	rawPoolID int32
	rawPoolOK bool
}

// NewTraceStream starts a replay.
func NewTraceStream(opts TraceOptions) *TraceStream {
	c := newTraceChecker(opts)
	if opts.Procedure != "" {
		c.begin, c.end = []byte(MarkerText(opts.Procedure, "begin")), []byte(MarkerText(opts.Procedure, "end"))
	}
	return &TraceStream{opts: opts, c: c}
}

// Line parses one line (without its newline) and replays the events that are now more than
// ReorderWindow older than the newest one. The error is a *LineError or, for a NUL byte, a
// *NotATraceError; after one, the stream is not to be fed again.
func (s *TraceStream) Line(b []byte) error {
	c, ev, q := s.c, &s.ev, &s.q
	c.lineNo++
	if bytes.IndexByte(b, 0) >= 0 {
		return &NotATraceError{File: s.opts.File, Reason: fmt.Sprintf("line %d holds a NUL byte: this is not a text trace", c.lineNo)}
	}
	lost := c.rep.LostEvents
	ok, err := c.parse(b, ev)
	if err != nil {
		return &LineError{File: s.opts.File, Line: c.lineNo, Msg: err.Error()}
	}
	if c.rep.LostEvents != lost { // a gap: replayed after every event read so far
		q.push(traceEvent{kind: evLost, ts: q.newest, line: int32(c.lineNo), pool: -1}, string(b))
		return nil
	}
	if !ok {
		return nil
	}
	if ev.kind != evPageFree && ev.kind != evPageFreeBatched && ev.kind != evMarker && ev.kind != evDMASync {
		s.poolEvents++
	}
	ev.line = int32(c.lineNo)
	ev.ts = parseTimestamp(c.ts)
	if late := q.push(*ev, string(b)); late && ev.kind != evMarker {
		c.rep.Reordered++
	}
	for q.ready() {
		c.replayPending(q.pop())
	}
	return nil
}

// Drained replays every event still held back for reordering and reports whether the trace
// so far shows pools, each destroyed with its last page_pool_release at inflight 0 (a new
// pool at a freed pool's address is a pool not yet drained). Events that come later and are
// older than the ones replayed here are still replayed, late.
func (s *TraceStream) Drained() bool {
	for s.q.Len() > 0 {
		s.c.replayPending(s.q.pop())
	}
	if len(s.c.pools) == 0 {
		return false
	}
	for i := range s.c.pools {
		p := &s.c.pools[i]
		if !p.Destroyed || p.LastRelease.Inflight != 0 {
			return false
		}
	}
	return true
}

// Finish replays what is left and returns the report. For a trace without a single page_pool
// event (or without a line) the error is a *NotATraceError, and the report is still returned:
// its figures (lines, lost events, the window) are what the trace shows, with no pool.
// Finish is called once.
func (s *TraceStream) Finish() (*TraceReport, error) {
	if s.finished {
		panic("gomodel: TraceStream.Finish called twice")
	}
	s.finished = true
	c := s.c
	for s.q.Len() > 0 {
		c.replayPending(s.q.pop())
	}
	if s.q.tooLate > 0 {
		c.rep.Notes = append(c.rep.Notes, fmt.Sprintf("%d events came more than %s of trace time after later events and were replayed late", s.q.tooLate, ReorderWindow))
	}
	rep := c.finish()
	switch {
	case c.lineNo == 0:
		return rep, &NotATraceError{File: s.opts.File, Reason: "empty"}
	case s.poolEvents == 0:
		return rep, &NotATraceError{File: s.opts.File, Reason: fmt.Sprintf("no page_pool event in %d lines", c.lineNo)}
	case rep.Puts > 0 && c.putsKnown == 0 && rep.Figures.Holds > 0:
		// Every put names a page no pool holds while the pools held pages: the probe reads
		// struct page where this kernel keeps something else, and the checks that read the
		// puts (not synced, direct outside NAPI) would pass whatever the kernel does.
		return rep, &ProbeError{File: s.opts.File, Puts: rep.Puts}
	}
	return rep, nil
}

// ProbeError is a trace whose page_pool_put_page events name no page any pool holds, while the
// pools held pages: their dma= is not the page's physical address (an IOMMU or dma-ranges on
// the board), or, in a trace of the kprobe events that came before TraceEventsSystem, the
// probe read struct page at an offset of another design. The checks that read the puts
// would then pass whatever the kernel does.
type ProbeError struct {
	File string
	Puts int
}

func (e *ProbeError) Error() string {
	return fmt.Sprintf("%s: none of the %d page_pool_put_page events names a page a pool holds: their dma= is not the page's physical address (does the board map DMA through an IOMMU or dma-ranges?)", e.File, e.Puts)
}

func (c *traceChecker) replayPending(p pendingEvent) {
	c.line = p.raw
	if p.ev.pool >= 0 {
		// Parsing runs ahead of replay: name the pool that has this address now, in replay
		// order (a new pool at a freed pool's address is a new generation).
		p.ev.pool = c.ptrs[c.pools[p.ev.pool].ptr]
	}
	c.replay(&p.ev)
}

// ReorderWindow is how much trace time CheckTrace holds events back to put them in timestamp
// order.
const ReorderWindow = 2 * time.Second

type pendingEvent struct {
	ev  traceEvent
	raw string
}

// reorderQueue is a min-heap of events by (timestamp, line) that releases an event once an
// event ReorderWindow later has been seen.
type reorderQueue struct {
	h        []pendingEvent
	newest   uint64
	released uint64 // timestamp of the last event released
	tooLate  int
}

func (q *reorderQueue) Len() int { return len(q.h) }
func (q *reorderQueue) Less(i, j int) bool {
	a, b := &q.h[i].ev, &q.h[j].ev
	return a.ts < b.ts || a.ts == b.ts && a.line < b.line
}
func (q *reorderQueue) Swap(i, j int) { q.h[i], q.h[j] = q.h[j], q.h[i] }
func (q *reorderQueue) Push(x any)    { q.h = append(q.h, x.(pendingEvent)) }
func (q *reorderQueue) Pop() any {
	x := q.h[len(q.h)-1]
	q.h = q.h[:len(q.h)-1]
	return x
}

// push adds an event; it reports whether the event is older than one pushed before it.
func (q *reorderQueue) push(ev traceEvent, raw string) bool {
	late := ev.ts < q.newest
	if ev.ts < q.released {
		q.tooLate++
	}
	if ev.ts > q.newest {
		q.newest = ev.ts
	}
	heap.Push(q, pendingEvent{ev: ev, raw: raw})
	return late
}

func (q *reorderQueue) ready() bool {
	return len(q.h) > 0 && q.newest-q.h[0].ev.ts > uint64(ReorderWindow)
}

func (q *reorderQueue) pop() pendingEvent {
	p := heap.Pop(q).(pendingEvent)
	if p.ev.ts > q.released {
		q.released = p.ev.ts
	}
	return p
}

// parseTimestamp turns ftrace's "SECONDS.FRACTION" into nanoseconds (0 if it is not one).
func parseTimestamp(b []byte) uint64 {
	var sec, frac uint64
	digits := 0
	i := 0
	for ; i < len(b) && b[i] != '.'; i++ {
		sec = sec*10 + uint64(b[i]-'0')
	}
	if i < len(b) {
		for i++; i < len(b) && digits < 9; i++ {
			frac = frac*10 + uint64(b[i]-'0')
			digits++
		}
	}
	for ; digits < 9; digits++ {
		frac *= 10
	}
	return sec*1e9 + frac
}

// ---- parsing ----

var lostMarker = []byte("EVENTS]")

// parse parses one line. It returns false for lines that are not events CheckTrace replays.
func (c *traceChecker) parse(b []byte, ev *traceEvent) (bool, error) {
	c.rep.Lines++
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	if i == len(b) || b[i] == '#' {
		return false, nil
	}
	name, fields, ts, ok := splitEventLine(b)
	c.ts = ts
	if !ok {
		if bytes.Contains(b, lostMarker) && bytes.Contains(b, []byte("[LOST ")) {
			c.rep.LostEvents++
			c.rep.Figures.LostEvents += lostCount(b)
			return false, nil
		}
		// Not an event line. If it mentions a known event, it is a mangled one.
		for _, n := range traceEventNames[1 : evLost+1] {
			if k := bytes.Index(b, []byte(n+": ")); k >= 0 {
				return false, fmt.Errorf("a %s line without the ftrace prefix `TASK-PID [CPU] FLAGS TIMESTAMP: `; copy the trace file unmodified", n)
			}
		}
		c.rep.Ignored++
		return false, nil
	}
	*ev = traceEvent{pool: -1}
	switch string(name) {
	case "page_pool_state_hold":
		ev.kind = evHold
	case "page_pool_state_release":
		ev.kind = evRelease
	case "page_pool_release":
		ev.kind = evPoolRelease
	case "page_pool_update_nid":
		ev.kind = evUpdateNid
	case "page_pool_skb_return":
		ev.kind = evSkbReturn
	case "mm_page_free":
		ev.kind = evPageFree
	case "mm_page_free_batched":
		ev.kind = evPageFreeBatched
	case "arch_sync_dma_for_device":
		ev.kind = evDMASync
	case "page_pool_put_page":
		ev.kind = evPut
	case "tracing_mark_write":
		// Only the procedure's own markers matter; they count as ignored lines (the report's
		// Events are the page_pool/kmem events) but are replayed in time order like events.
		c.rep.Ignored++
		if c.begin == nil {
			return false, nil
		}
		switch m := bytes.TrimSpace(fields); {
		case bytes.Equal(m, c.begin):
			ev.kind, ev.count = evMarker, 1
		case bytes.Equal(m, c.end):
			ev.kind, ev.count = evMarker, 2
		default:
			return false, nil
		}
		return true, nil
	default:
		c.rep.Ignored++
		return false, nil
	}
	f := fieldParser{b: fields, event: traceEventNames[ev.kind]}
	switch ev.kind {
	case evHold, evRelease:
		ev.pool = c.intern(f.ptr("page_pool"))
		f.ptr("page")
		ev.pfn = f.uint("pfn", 64)
		if ev.kind == evHold {
			ev.count = uint32(f.uint("hold", 32))
		} else {
			ev.count = uint32(f.uint("release", 32))
		}
	case evPoolRelease:
		ev.pool = c.intern(f.ptr("page_pool"))
		ev.inflight = int32(f.int("inflight"))
		ev.hold = uint32(f.uint("hold", 32))
		ev.release = uint32(f.uint("release", 32))
		ev.cnt = f.uint("cnt", 64)
	case evUpdateNid:
		ev.pool = c.intern(f.ptr("page_pool"))
		f.int("pool_nid")
		f.int("new_nid")
	case evSkbReturn:
		ev.pool = c.intern(f.ptr("page_pool"))
		f.ptr("page")
		ev.pfn = f.uint("pfn", 64)
	case evPageFree, evPageFreeBatched:
		f.ptr("page")
		ev.pfn = f.uint("pfn", 64)
		o := f.uint("order", 8)
		if o > 20 {
			f.fail("order=%d is not a page order", o)
		}
		ev.order = uint8(o)
	case evDMASync:
		f.probedSymbol()
		paddr := f.uint("paddr", 64)
		ev.pfn = paddr >> pageShift
		ev.size = f.uint("size", 64)
		ev.dir = uint8(f.uint("dir", 8))
		if paddr+ev.size < paddr {
			f.fail("paddr=%#x size=%d wraps around", paddr, ev.size)
		}
		// the last page synced, for the replay (size 0 syncs nothing)
		if ev.size > 0 {
			ev.cnt = (paddr + ev.size - 1) >> pageShift
		}
	case evPut:
		f.probedSymbol()
		ev.pfn = f.uint("dma", 64) >> pageShift
		ev.count = uint32(f.uint("sync", 32))
		d := f.uint("direct", 8)
		ev.direct = d != 0
	}
	if ev.kind == evHold || ev.kind == evPut {
		ev.cpu, ev.softirq = eventContext(b)
	}
	if f.err == nil && len(f.b) > 0 {
		f.fail("unexpected %q after the last field", string(f.b))
	}
	if f.err != nil {
		return false, f.err
	}
	c.rep.Events++
	return true, nil
}

// splitEventLine splits "TASK-PID [CPU] FLAGS TIMESTAMP: EVENT: FIELDS" into EVENT and FIELDS.
// FLAGS (irqs-off, need-resched, hardirq/softirq, preempt-depth) and a "(TGID)" column are
// optional, as ftrace's options make them.
func splitEventLine(b []byte) (name, fields, ts []byte, ok bool) {
	// the CPU column: '[' digits ']'
	cpuEnd := -1
	for i := 0; i < len(b); i++ {
		k := bytes.IndexByte(b[i:], '[')
		if k < 0 {
			break
		}
		i += k
		j := i + 1
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		if j > i+1 && j < len(b) && b[j] == ']' {
			cpuEnd = j + 1
			break
		}
	}
	if cpuEnd < 0 {
		return nil, nil, nil, false
	}
	rest := b[cpuEnd:]
	k := 0
	for { // the first ": " after the CPU column
		c := bytes.IndexByte(rest[k:], ':')
		if c < 0 {
			return nil, nil, nil, false
		}
		k += c
		if k+1 < len(rest) && rest[k+1] == ' ' {
			break
		}
		k++
	}
	// the timestamp: digits and at most one '.', right before ": "
	t := k
	for t > 0 && (rest[t-1] >= '0' && rest[t-1] <= '9' || rest[t-1] == '.') {
		t--
	}
	if t == k || (t > 0 && rest[t-1] != ' ') {
		return nil, nil, nil, false
	}
	ts = rest[t:k]
	rest = rest[k+2:]
	e := bytes.IndexByte(rest, ':')
	if e <= 0 {
		return nil, nil, nil, false
	}
	name = rest[:e]
	rest = rest[e+1:]
	if len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
	}
	return name, rest, ts, true
}

// eventContext reads the CPU column and whether the event's flags say in_serving_softirq():
// the hardirq/softirq column of "TASK-PID [CPU] FLAGS TIMESTAMP:" is 's' (softirq) or 'H'
// (hard irq that interrupted a softirq: SOFTIRQ_OFFSET is still set), kernel/trace/
// trace_output.c trace_print_lat_fmt(). Without the flags column (irq-info off) softirq is -1.
func eventContext(b []byte) (cpu int16, softirq int8) {
	softirq = -1
	for i := 0; i < len(b); i++ {
		k := bytes.IndexByte(b[i:], '[')
		if k < 0 {
			return -1, -1
		}
		i += k
		j := i + 1
		n := 0
		for j < len(b) && b[j] >= '0' && b[j] <= '9' && n < 1<<14 {
			n = n*10 + int(b[j]-'0')
			j++
		}
		if j > i+1 && j < len(b) && b[j] == ']' {
			cpu = int16(n)
			rest := b[j+1:]
			for len(rest) > 0 && rest[0] == ' ' {
				rest = rest[1:]
			}
			// flags: irqs-off, need-resched, hardirq/softirq, preempt-depth; then a space
			if len(rest) >= 5 && rest[4] == ' ' && (rest[0] == 'd' || rest[0] == 'X' || rest[0] == '.') {
				switch rest[2] {
				case 's', 'H':
					softirq = 1
				default:
					softirq = 0
				}
			}
			return cpu, softirq
		}
	}
	return -1, -1
}

// fieldParser reads "key=value key=value" in the order of the TP_printk format.
type fieldParser struct {
	b     []byte
	event string
	err   error
}

func (f *fieldParser) fail(format string, args ...any) {
	if f.err == nil {
		f.err = fmt.Errorf("%s: %s", f.event, fmt.Sprintf(format, args...))
	}
}

func (f *fieldParser) next(key string) []byte {
	if f.err != nil {
		return nil
	}
	b, n := f.b, len(key)
	ok := len(b) > n && b[n] == '='
	for i := 0; ok && i < n; i++ { // keys are short: a loop beats memeqbody's call
		ok = b[i] == key[i]
	}
	if !ok {
		got := b
		if sp := bytes.IndexByte(got, ' '); sp >= 0 {
			got = got[:sp]
		}
		f.fail("want field %s= here, got %q; the format is `%s`", key, string(got), traceFormats[f.event])
		return nil
	}
	j := n + 1
	for j < len(b) && b[j] != ' ' { // values are short: a loop beats IndexByte's call
		j++
	}
	v := b[n+1 : j]
	if j < len(b) {
		f.b = b[j+1:]
	} else {
		f.b = nil
	}
	if len(v) == 0 {
		f.fail("empty %s=", key)
	}
	return v
}

func (f *fieldParser) ptr(key string) []byte { return f.next(key) }

// probedSymbol reads the "(SYMBOL+0xOFF/0xSIZE)" a kprobe event printed before its arguments,
// when there is one: traces made before the events were tracepoints (TraceEventsSystem).
func (f *fieldParser) probedSymbol() {
	if f.err != nil || len(f.b) == 0 || f.b[0] != '(' {
		return
	}
	b := f.b
	j := bytes.IndexByte(b, ' ')
	if j < 0 {
		j = len(b)
	}
	if j < 3 || b[0] != '(' || b[j-1] != ')' {
		got := b[:j]
		f.fail("want the probed function `(SYMBOL+0xOFF/0xSIZE)` here, got %q; the format is `%s`", string(got), traceFormats[f.event])
		return
	}
	if j < len(b) {
		f.b = b[j+1:]
	} else {
		f.b = nil
	}
}

func (f *fieldParser) uint(key string, bits int) uint64 {
	v := f.next(key)
	if f.err != nil {
		return 0
	}
	hex := len(v) > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')
	if hex {
		v = v[2:]
	}
	var n uint64
	switch {
	case !hex && len(v) <= 19: // cannot overflow: no check per digit
		for _, ch := range v {
			d := ch - '0'
			if d > 9 {
				f.fail("%s=%s is not a number", key, string(v))
				return 0
			}
			n = n*10 + uint64(d)
		}
	case !hex && len(v) == 20: // up to 18446744073709551615: checked per digit
		for _, ch := range v {
			d := uint64(ch - '0')
			if d > 9 {
				f.fail("%s=%s is not a number", key, string(v))
				return 0
			}
			if n > (math.MaxUint64-d)/10 {
				f.fail("%s=%s overflows 64 bits", key, string(v))
				return 0
			}
			n = n*10 + d
		}
	case hex && len(v) <= 16:
		for _, ch := range v {
			var d byte
			switch {
			case ch >= '0' && ch <= '9':
				d = ch - '0'
			case ch >= 'a' && ch <= 'f':
				d = ch - 'a' + 10
			case ch >= 'A' && ch <= 'F':
				d = ch - 'A' + 10
			default:
				f.fail("%s=0x%s is not a hex number", key, string(v))
				return 0
			}
			n = n<<4 | uint64(d)
		}
	default:
		f.fail("%s=%s overflows 64 bits", key, string(v))
		return 0
	}
	if bits < 64 && n >= 1<<uint(bits) {
		f.fail("%s=%d does not fit in %d bits", key, n, bits)
		return 0
	}
	return n
}

func (f *fieldParser) int(key string) int64 {
	v := f.next(key)
	if f.err != nil {
		return 0
	}
	neg := len(v) > 1 && v[0] == '-'
	if neg {
		v = v[1:]
	}
	var n int64
	for _, ch := range v {
		if ch < '0' || ch > '9' || n > (1<<31) {
			f.fail("%s=%s is not a 32-bit integer", key, string(v))
			return 0
		}
		n = n*10 + int64(ch-'0')
	}
	if neg {
		n = -n
	}
	if n > 1<<31-1 || n < -(1<<31) {
		f.fail("%s=%d does not fit in 32 bits", key, n)
	}
	return n
}

var traceFormats = map[string]string{
	"page_pool_state_hold":     "page_pool=%p page=%p pfn=%lu hold=%u",
	"page_pool_state_release":  "page_pool=%p page=%p pfn=%lu release=%u",
	"page_pool_release":        "page_pool=%p inflight=%d hold=%u release=%u cnt=%llu",
	"page_pool_update_nid":     "page_pool=%p pool_nid=%d new_nid=%d",
	"page_pool_skb_return":     "page_pool=%p page=%p pfn=%lu",
	"mm_page_free":             "page=%p pfn=%lu order=%d",
	"mm_page_free_batched":     "page=%p pfn=%lu order=0",
	"arch_sync_dma_for_device": "paddr=0x%llx size=%llu dir=%u (kprobe events: after (SYMBOL+0xOFF/0xSIZE))",
	"page_pool_put_page":       "dma=0x%llx sync=%u direct=%u (kprobe events: after (SYMBOL+0xOFF/0xSIZE))",
}

// intern maps a pointer to the current pool with that address.
func (c *traceChecker) intern(ptr []byte) int32 {
	if ptr == nil {
		return -1
	}
	if c.lastPtr != nil && string(ptr) == *c.lastPtr {
		return c.lastID
	}
	id, ok := c.ptrs[string(ptr)]
	if !ok {
		id = c.newPool(string(ptr))
	}
	p := c.pools[id].ptr
	c.lastPtr, c.lastID = &p, id
	return id
}

// firstReplayed notes ev as the first event replayed for its pool (the pool it names after
// the replay: a hold may have started a new pool at a reused address); replay calls it once a
// pool.
func (c *traceChecker) firstReplayed(ev *traceEvent) {
	p := &c.pools[ev.pool]
	p.replayed, p.first = true, [2]uint64{ev.ts, uint64(ev.line)}
}

func (c *traceChecker) newPool(ptr string) int32 {
	name := ptr
	gen := 1
	for _, p := range c.pools {
		if p.ptr == ptr {
			gen++
		}
	}
	if gen > 1 {
		name = fmt.Sprintf("%s#%d", ptr, gen)
	}
	c.pools = append(c.pools, poolTraceState{PoolTrace: PoolTrace{Pool: name}, ptr: ptr})
	id := int32(len(c.pools) - 1)
	c.ptrs[ptr] = id
	c.lastPtr = nil
	return id
}

// ---- replay ----

func (c *traceChecker) pfn(pfn uint64, create bool) *pfnState {
	if st := c.pfns.get(pfn); st != nil || !create {
		return st
	}
	return c.pfns.add(pfn)
}

func (st *pfnState) record(ev *traceEvent) {
	st.hist[st.nh%8] = newHistEntry(ev)
	st.nh++
}

func (c *traceChecker) violate(name string, ev *traceEvent, st *pfnState, format string, args ...any) {
	op := strings.TrimSpace(c.line)
	if op == "" { // a decoded event (TraceStream.Event) has no text line
		op = c.render(ev)
	}
	v := Violation{Name: name, Line: int(ev.line), Op: op, Detail: fmt.Sprintf(format, args...)}
	if st != nil {
		v.Page = fmt.Sprintf("pfn %d", ev.pfn)
		v.History = c.pfnHistory(st)
	}
	c.rep.Violations = append(c.rep.Violations, v)
}

func (c *traceChecker) pfnHistory(st *pfnState) []string {
	var out []string
	n := int(st.nh)
	start := 0
	if n > 8 {
		start = n - 8
		out = append(out, fmt.Sprintf("(%d earlier events not kept)", start))
	}
	for i := start; i < n; i++ {
		h := st.hist[i%8]
		s := fmt.Sprintf("line %d: %s", h.line(), traceEventNames[h.kind()])
		if p := h.pool(); p >= 0 {
			s += " page_pool=" + c.pools[p].Pool
		}
		out = append(out, s)
	}
	return out
}

func (c *traceChecker) poolName(i int32) string { return c.pools[i].Pool }

// misreturn judges a page coming back to pool p (a release, or the return hook: what says which)
// while p does not hold it, and reports whether that was a violation. A page p never held may
// be one it took before tracing started, unless p's whole life was traced.
func (c *traceChecker) misreturn(ev *traceEvent, st *pfnState, p *poolTraceState, what string) bool {
	switch {
	case st.holder >= 0:
		c.violate(ForeignPageReturned, ev, st, "%s, but pool %s holds it", what, c.poolName(st.holder))
	case st.flags&pfFreed != 0:
		c.violate(UseAfterFree, ev, st, "%s after the page allocator freed it", what)
	case st.released == ev.pool:
		c.violate(DoubleReturn, ev, st, "%s, a page that pool already released", what)
	case p.Complete:
		c.violate(ForeignPageReturned, ev, st, "%s, a page that pool never held", what)
	default:
		return false
	}
	return true
}

// replay replays one event, then notes it as its pool's first if it is (firstReplayed; a
// deferred call did that at each of replayEvent's returns, which cost the replay of forward's
// capture 3 % once ppkit was built with its profile).
func (c *traceChecker) replay(ev *traceEvent) {
	c.replayEvent(ev)
	if ev.pool >= 0 && !c.pools[ev.pool].replayed {
		c.firstReplayed(ev)
	}
}

func (c *traceChecker) replayEvent(ev *traceEvent) {
	switch ev.kind {
	case evLost:
		// Whatever the lost events did to pages is unknown: forget every page's state and
		// judge pages again from their next event on, as for a pool traced mid-run. The
		// pools' own counters (page_pool_release) still decide inflight.
		if c.pfns.len() > 0 {
			c.rep.Notes = append(c.rep.Notes, fmt.Sprintf("line %d: %s: page states forgotten, pages are judged again from their next event", ev.line, strings.TrimSpace(c.line)))
		}
		c.pfns.reset()
		for i := range c.pools {
			c.pools[i].Complete = false
			c.pools[i].Held = 0
		}
	case evHold:
		pl := ev.pool
		if c.pools[pl].Freed { // the address was reused by a new pool
			pl = c.newPool(c.pools[pl].ptr)
			ev.pool = pl
		}
		p := &c.pools[pl]
		if !p.seen {
			p.seen, p.Complete = true, ev.count == 1
		} else if ev.count != p.HoldCounter+1 && !p.holdGap {
			p.holdGap = true
			c.rep.Notes = append(c.rep.Notes, fmt.Sprintf("line %d: pool %s hold counter jumps from %d to %d: events were lost", ev.line, p.Pool, p.HoldCounter, ev.count))
		}
		p.Holds++
		p.HoldCounter = ev.count
		c.rep.Figures.Holds++
		if c.inWindow {
			c.rep.Figures.HoldsInWindow++
		}
		p.inflight(ev.ts, int64(p.Holds)-int64(p.Releases))
		st := c.pfns.get(ev.pfn)
		known := st != nil
		if !known {
			st = c.pfns.add(ev.pfn)
		}
		st.record(ev)
		// page_pool's slow path maps the page and syncs it for the device before the hold
		// (__page_pool_alloc_pages_slow(), PP_FLAG_DMA_SYNC_DEV): a synced first page says the
		// pool's device is not coherent and the sync rule applies to the pool. A page the
		// trace never saw since a lost-events gap may have had its sync in the gap.
		switch {
		case st.flags&pfSynced != 0:
			p.syncChecked = true
		case p.syncChecked && (known || c.rep.LostEvents == 0):
			c.notSynced(ev, st, pl, "pool %s hands pfn %d to the NIC (slow-path allocation, page_pool_state_hold) without arch_sync_dma_for_device of the page", p.Pool, ev.pfn)
		}
		st.flags &^= pfRule
		if ev.softirq == 1 && ev.cpu >= 0 && ev.cpu < 64 {
			p.napiCPUs |= 1 << uint(ev.cpu)
		}
		if st.holder >= 0 {
			old := &c.pools[st.holder]
			old.Held--
			old.FreedWhileHeld++
			if !old.hasCulp {
				old.culprit, old.hasCulp = ev.pfn, true
			}
			c.violate(DMAMappedPageFreed, ev, st, "the page allocator handed out pfn %d again while pool %s still holds it (no page_pool_state_release): it was freed while DMA-mapped", ev.pfn, old.Pool)
		}
		st.holder, st.released = pl, -1
		st.flags &^= pfFreed
		p.Held++
	case evRelease:
		p := &c.pools[ev.pool]
		// pages_state_release_cnt is an atomic that CPUs increment side by side, and each CPU
		// takes its event's timestamp after its increment: in timestamp order the counter
		// can skip a value that another CPU's event brings a moment later. Only values that
		// never come are lost events (noted at the end).
		switch d := int32(ev.count - p.ReleaseCounter); {
		case !p.relSeen() || d == 1:
		case d > 1:
			p.relMissing += int64(d) - 1
			if p.relGapLine == 0 {
				p.relGapLine, p.relGapFrom, p.relGapTo = ev.line, p.ReleaseCounter, ev.count
			}
		case p.relMissing > 0:
			p.relMissing--
		}
		p.Releases++
		if !p.relSeen() || int32(ev.count-p.ReleaseCounter) > 0 {
			p.ReleaseCounter = ev.count
		}
		c.rep.Figures.Releases++
		p.inflight(ev.ts, int64(p.Holds)-int64(p.Releases))
		st := c.pfn(ev.pfn, p.Complete)
		if st == nil { // a page held before tracing started
			p.preTraced++
			return
		}
		st.record(ev)
		switch {
		case st.holder == ev.pool:
			p.Held--
			st.holder, st.released = -1, ev.pool
			st.flags &^= pfRule
		case !c.misreturn(ev, st, p, fmt.Sprintf("pool %s releases pfn %d", p.Pool, ev.pfn)):
			p.preTraced++
		}
	case evSkbReturn:
		p := &c.pools[ev.pool]
		p.SKBReturns++
		c.rep.Figures.SKBReturns++
		st := c.pfn(ev.pfn, p.Complete)
		if st == nil {
			return
		}
		st.record(ev)
		switch {
		case st.holder == ev.pool:
			c.returnedToPool(ev, st)
			st.flags |= pfSkbReturn
		default:
			c.misreturn(ev, st, p, fmt.Sprintf("the return hook hands pfn %d to pool %s", ev.pfn, p.Pool))
		}
	case evPageFree, evPageFreeBatched:
		n := uint64(1) << ev.order
		for k := uint64(0); k < n; k++ {
			pfn := ev.pfn + k
			st := c.pfns.get(pfn)
			if st == nil {
				continue
			}
			st.record(ev)
			if st.holder >= 0 {
				p := &c.pools[st.holder]
				p.Held--
				p.FreedWhileHeld++
				if !p.hasCulp {
					p.culprit, p.hasCulp = pfn, true
				}
				e := *ev
				e.pfn = pfn
				c.violate(DMAMappedPageFreed, &e, st, "pfn %d is freed while pool %s still holds it (no page_pool_state_release): freed while DMA-mapped", pfn, p.Pool)
			}
			st.holder, st.released = -1, -1
			st.flags = st.flags&^pfRule | pfFreed
		}
	case evPoolRelease:
		p := &c.pools[ev.pool]
		p.Destroyed = true
		p.LastRelease = &PoolReleaseEvent{Line: int(ev.line), Inflight: ev.inflight, Hold: ev.hold, Release: ev.release, Cnt: ev.cnt}
		p.HoldCounter, p.ReleaseCounter = ev.hold, ev.release
		p.inflight(ev.ts, int64(ev.inflight))
		if ev.inflight == 0 {
			p.Freed = true
		}
	case evMarker:
		if ev.count == 1 {
			c.inWindow, c.rep.Figures.WindowStart = true, seconds(ev.ts)
		} else {
			c.inWindow, c.rep.Figures.WindowEnd = false, seconds(ev.ts)
		}
	case evDMASync:
		c.rep.DMASyncs++
		if ev.size == 0 || ev.dir != dmaFromDevice && ev.dir != dmaBidirectional {
			return // syncs nothing the device may write
		}
		last := ev.cnt
		if last-ev.pfn >= maxSyncPages {
			last = ev.pfn + maxSyncPages - 1
		}
		for pfn := ev.pfn; ; pfn++ {
			st := c.pfn(pfn, true)
			st.flags |= pfSynced
			if pfn == ev.pfn {
				st.record(ev)
			}
			if pfn == last {
				break
			}
		}
	case evPut:
		c.rep.Puts++
		if ev.direct {
			c.rep.DirectPuts++
		}
		st := c.pfn(ev.pfn, false)
		if st == nil || st.holder < 0 {
			return // not a page the trace knows a pool holds (held before tracing, or no DMA address)
		}
		c.putsKnown++
		st.record(ev)
		if st.flags&pfSkbReturn != 0 { // the hook's put of the page it just traced
			st.flags &^= pfSkbReturn
		} else {
			c.returnedToPool(ev, st)
		}
		p := &c.pools[st.holder]
		if !ev.direct || ev.softirq != 1 || p.napiCPUs == 0 || ev.cpu < 0 || ev.cpu >= 64 || p.napiCPUs&(1<<uint(ev.cpu)) != 0 {
			return
		}
		if p.moreDirect++; p.moreDirect > 1 {
			return
		}
		c.violate(DirectRecycleOutsideNAPI, ev, st, "page_pool_put_page(allow_direct=true) of pfn %d in softirq on CPU %d: 5.10 puts the page into pool %s's lockless alloc cache (in_serving_softirq()), which the pool's NAPI poll uses without a lock on CPU %s",
			ev.pfn, ev.cpu, p.Pool, cpuList(p.napiCPUs))
	case evUpdateNid:
	}
}

// maxSyncPages bounds the pages one arch_sync_dma_for_device marks synced (page_pool syncs at
// most a page of order 0 here; a larger range only needs its first pages for the rule).
const maxSyncPages = 64

// returnedToPool applies the sync rule to a page handed back to the pool that holds it
// (page_pool_skb_return, or a page_pool_put_page that is not the hook's): if it had been
// handed back before, the pool has handed it out again since (the page is back), so it must
// have been synced for the device in between: a cache or ring hit emits no event, the return
// shows that the NIC had the page. page_pool_put_page syncs right after this event, before the
// page enters the cache or the ring.
func (c *traceChecker) returnedToPool(ev *traceEvent, st *pfnState) {
	if st.flags&(pfReturned|pfSynced) == pfReturned && c.pools[st.holder].syncChecked {
		c.notSynced(ev, st, st.holder, "pfn %d comes back to pool %s, which handed it out again (to the NIC) without arch_sync_dma_for_device of the page after its previous return", ev.pfn, c.poolName(st.holder))
	}
	st.flags = st.flags&^pfRule | pfReturned
}

// notSynced reports NotSyncedForDevice once per pool; later ones are counted in a note.
func (c *traceChecker) notSynced(ev *traceEvent, st *pfnState, pool int32, format string, args ...any) {
	p := &c.pools[pool]
	if p.moreNotSynced++; p.moreNotSynced > 1 {
		return
	}
	c.violate(NotSyncedForDevice, ev, st, format, args...)
}

// cpuList names the CPUs of a bit mask: "0", "0,1".
func cpuList(mask uint64) string {
	var b strings.Builder
	for i := 0; i < 64; i++ {
		if mask&(1<<uint(i)) != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%d", i)
		}
	}
	return b.String()
}

// seconds turns a trace timestamp in ns back into ftrace's seconds. For ftrace's 6 or 9
// fraction digits it is the float64 strconv.ParseFloat gives for the text: both operands are
// exact and IEEE division rounds correctly.
func seconds(ns uint64) float64 { return float64(ns) / 1e9 }

// lostCount reads M from a "[LOST M EVENTS]" line; 1 if M is not a number.
func lostCount(b []byte) int64 {
	i := bytes.Index(b, []byte("[LOST "))
	if i < 0 {
		return 1
	}
	var n int64
	j := i + len("[LOST ")
	k := j
	for ; k < len(b) && b[k] >= '0' && b[k] <= '9' && k-j < 18; k++ {
		n = n*10 + int64(b[k]-'0')
	}
	if k == j || !bytes.HasPrefix(b[k:], []byte(" EVENTS]")) {
		return 1
	}
	return n
}

func (p *poolTraceState) relSeen() bool { return p.Releases > 0 || p.LastRelease != nil }

func (c *traceChecker) finish() *TraceReport {
	rep := c.rep
	var holds, returns uint64
	// Pools in the order the replay met them (the parser of the text meets a new address
	// ahead of the replay, and a reused one at it).
	order := make([]int, len(c.pools))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		p, q := &c.pools[order[a]], &c.pools[order[b]]
		if p.replayed != q.replayed {
			return p.replayed
		}
		return p.first[0] < q.first[0] || p.first[0] == q.first[0] && p.first[1] < q.first[1]
	})
	for _, i := range order {
		p := &c.pools[i]
		p.flushStep()
		p.Inflight = int64(int32(p.HoldCounter - p.ReleaseCounter))
		holds += p.Holds
		returns += p.SKBReturns
		if p.moreNotSynced > 1 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("pool %s: %d more pages handed to the NIC without a sync for the device", p.Pool, p.moreNotSynced-1))
		}
		if p.relMissing > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("line %d: pool %s release counter jumps from %d to %d (%d values never came): events were lost",
				p.relGapLine, p.Pool, p.relGapFrom, p.relGapTo, p.relMissing))
		}
		if p.moreDirect > 1 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("pool %s: %d more direct puts in softirq on a CPU other than its NAPI's", p.Pool, p.moreDirect-1))
		}
		if p.preTraced > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("pool %s: %d releases of pages held before the trace started", p.Pool, p.preTraced))
		}
		if p.Destroyed && !p.Freed {
			lr := p.LastRelease
			if lr.Inflight < 0 {
				rep.Notes = append(rep.Notes, fmt.Sprintf("pool %s: negative inflight %d: more releases than holds (page_pool_inflight() WARNs \"Negative(%d) inflight packet-pages\")", p.Pool, lr.Inflight, lr.Inflight))
			}
			v := Violation{Name: InflightLeak, Line: lr.Line, Op: "page_pool_release",
				Detail: fmt.Sprintf("pool %s: the last page_pool_release after page_pool_destroy shows inflight=%d (hold=%d release=%d, attempt %d); the trace shows %d pages still held and %d freed while held",
					p.Pool, lr.Inflight, lr.Hold, lr.Release, lr.Cnt, p.Held, p.FreedWhileHeld)}
			if p.hasCulp {
				v.Page = fmt.Sprintf("pfn %d", p.culprit)
				if st := c.pfns.get(p.culprit); st != nil {
					v.History = c.pfnHistory(st)
				}
			}
			rep.Violations = append(rep.Violations, v)
		}
		rep.Pools = append(rep.Pools, p.PoolTrace)
	}
	if rep.LostEvents > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d [LOST EVENTS] markers: the ring buffer overflowed; enlarge buffer_size_kb and trace again", rep.LostEvents))
	}
	if rep.Packets > 0 {
		rep.SlowPathPer1k = float64(holds) * 1000 / float64(rep.Packets)
		rep.ReturnsPer1k = float64(returns) * 1000 / float64(rep.Packets)
	}
	if rep.Pools == nil {
		rep.Pools = []PoolTrace{}
	}
	if rep.Violations == nil {
		rep.Violations = []Violation{}
	}
	rep.Passed = len(rep.Violations) == 0
	return rep
}
