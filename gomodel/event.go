package gomodel

import "fmt"

// EventKind says which tracepoint an Event is, for the replay.
type EventKind uint8

// The kinds of Event. EventOther is any event the replay does not use (it counts as an
// ignored line, as in the text); EventLost is a gap, not an event.
const (
	EventOther           EventKind = iota
	EventStateHold                 // page_pool_state_hold
	EventStateRelease              // page_pool_state_release
	EventPoolRelease               // page_pool_release
	EventUpdateNid                 // page_pool_update_nid
	EventSkbReturn                 // page_pool_skb_return (the series)
	EventPageFree                  // mm_page_free
	EventPageFreeBatched           // mm_page_free_batched
	EventDMASync                   // ppkit/arch_sync_dma_for_device (TraceEventsSystem)
	EventPut                       // ppkit/page_pool_put_page (TraceEventsSystem)
	EventMarker                    // ftrace/print, the text's tracing_mark_write (trace_marker)
	EventLost                      // the ring buffer dropped Lost events here
)

// evKinds maps an EventKind to the text parser's kind.
var evKinds = [...]uint8{EventOther: 0, EventStateHold: evHold, EventStateRelease: evRelease,
	EventPoolRelease: evPoolRelease, EventUpdateNid: evUpdateNid, EventSkbReturn: evSkbReturn,
	EventPageFree: evPageFree, EventPageFreeBatched: evPageFreeBatched, EventDMASync: evDMASync, EventPut: evPut,
	EventMarker: evMarker, EventLost: evLost}

// Event is one trace event decoded from a binary source (the kernel's ring-buffer pages, see
// package rawtrace): what the text parser takes from an ftrace line, that is the timestamp and
// the fields of the TP_printk format, plus the context columns the text shows.
type Event struct {
	Kind EventKind
	// TS is the timestamp in ns, at the text's precision: ftrace prints ns2usecs(ts)
	// (kernel/trace/trace.c, rounded to µs), and both transports must give the same figures.
	TS uint64
	// CPU, PID (common_pid), Flags (common_flags: TRACE_FLAG_*) and PreemptCount
	// (common_preempt_count) are the text's TASK-PID, [CPU] and irq-info columns.
	CPU          int
	PID          int32
	Flags        uint8
	PreemptCount uint8
	// Fields, by Kind: Pool is the page_pool pointer (printed %016x, as the text's %p);
	// Count is hold= or release=; Inflight, Hold, Release, Cnt are page_pool_release's;
	// Order is mm_page_free's; Marker is ftrace/print's text (trace_marker).
	Pool     uint64
	PFN      uint64
	Count    uint32
	Inflight int32
	Hold     uint32
	Release  uint32
	Cnt      uint64
	Order    uint32
	Marker   []byte
	// The fields of TraceEventsSystem's events: Addr is arch_sync_dma_for_device's paddr=
	// or page_pool_put_page's dma=; Size and Dir are the sync's size= and dir=; Sync and
	// Direct are the put's sync= (dma_sync_size) and direct= (allow_direct).
	Addr   uint64
	Size   uint64
	Dir    uint32
	Sync   uint32
	Direct uint8
	// Page is the struct page pointer the pool events print (page=), PoolNid and NewNid
	// page_pool_update_nid's: the replay does not read them, a text made of the events does.
	Page            uint64
	PoolNid, NewNid int32
	// Lost is EventLost's count of dropped events (what the text's "[LOST N EVENTS]" says;
	// 1 when the kernel could not store the count).
	Lost int64
}

// Trace flags of common_flags (kernel/trace/trace.h, 5.10).
const (
	TraceFlagHardirq = 0x08
	TraceFlagSoftirq = 0x10
	TraceFlagNMI     = 0x40
)

// Softirq says what the text's hardirq/softirq column says: 's' or 'H' (in_serving_softirq(),
// also under a hard irq), trace_print_lat_fmt() in kernel/trace/trace_output.c.
func (e *Event) Softirq() bool {
	return e.Flags&TraceFlagSoftirq != 0 && e.Flags&TraceFlagNMI == 0
}

// Event replays one decoded event, as Line does for a text line. Events must come in
// timestamp order (package rawtrace merges the CPUs' buffers exactly as ftrace's trace file
// does); each one counts as a line of the trace, numbered in the order given. A field out of
// range for its text format is an error, as in the text.
func (s *TraceStream) Event(e *Event) error {
	switch e.Kind {
	case EventStateHold, EventStateRelease, EventSkbReturn:
		s.PageEvent(e.Kind, e.TS, e.CPU, e.Flags, e.Pool, e.PFN, e.Count)
		return nil
	case EventDMASync:
		return s.SyncEvent(e.TS, e.CPU, e.Flags, e.Addr, e.Size, e.Dir)
	case EventPut:
		s.PutEvent(e.TS, e.CPU, e.Flags, e.Addr, e.Sync, e.Direct)
		return nil
	case EventPageFree, EventPageFreeBatched:
		return s.FreeEvent(e.Kind, e.TS, e.CPU, e.Flags, e.PFN, e.Order)
	}
	c, q := s.c, &s.q
	c.lineNo++
	c.rep.Lines++
	if int(e.Kind) >= len(evKinds) {
		return &LineError{File: s.opts.File, Line: c.lineNo, Msg: fmt.Sprintf("event kind %d is not one of gomodel's", e.Kind)}
	}
	// Field by field: a composite literal is built from a template with wide copies, which
	// stall on the decoder's narrow stores to the same event a moment before.
	var ev traceEvent
	ev.kind, ev.ts, ev.line, ev.pool, ev.cpu = evKinds[e.Kind], e.TS, int32(c.lineNo), -1, int16(e.CPU)
	if e.Softirq() {
		ev.softirq = 1
	}
	switch e.Kind {
	case EventOther:
		c.rep.Ignored++
		return nil
	case EventLost:
		n := e.Lost
		if n <= 0 {
			n = 1
		}
		c.rep.LostEvents++
		c.rep.Figures.LostEvents += n
		ev.ts = q.newest
		s.push(&ev)
		return nil
	case EventMarker:
		c.rep.Ignored++
		if c.begin == nil {
			return nil
		}
		switch m := trimSpace(e.Marker); {
		case string(m) == string(c.begin):
			ev.count = 1
		case string(m) == string(c.end):
			ev.count = 2
		default:
			return nil
		}
		s.push(&ev)
		return nil
	case EventPoolRelease:
		ev.pool = s.internPool(e.Pool)
		ev.inflight, ev.hold, ev.release, ev.cnt = e.Inflight, e.Hold, e.Release, e.Cnt
	case EventUpdateNid:
		ev.pool = s.internPool(e.Pool)
	}
	c.rep.Events++
	s.poolEvents++
	s.push(&ev)
	return nil
}

// PageEvent, SyncEvent and PutEvent are Event for the events most of a trace is made of, given
// field by field: a decoder that passes the fields in registers saves building an Event for
// each. PageEvent takes the three that hand a page between a pool and the rest of the kernel
// (EventStateHold, EventStateRelease, EventSkbReturn; count is hold= or release=, 0 for the
// return).
func (s *TraceStream) PageEvent(kind EventKind, ts uint64, cpu int, flags uint8, pool, pfn uint64, count uint32) {
	var ev traceEvent
	s.begin(&ev, kind, ts, cpu, flags)
	ev.pool, ev.pfn, ev.count = s.internPool(pool), pfn, count
	s.poolEvents++
	s.push(&ev)
}

// SyncEvent takes the event ppkit/arch_sync_dma_for_device (EventDMASync): what the text
// parser takes from "paddr=0x%llx size=%llu dir=%u" (parse in trace.go), with its range checks.
func (s *TraceStream) SyncEvent(ts uint64, cpu int, flags uint8, paddr, size uint64, dir uint32) error {
	var ev traceEvent
	s.begin(&ev, EventDMASync, ts, cpu, flags)
	if dir > 0xff {
		return &LineError{File: s.opts.File, Line: s.c.lineNo, Msg: fmt.Sprintf("%s: dir=%d does not fit in 8 bits", traceEventNames[ev.kind], dir)}
	}
	if paddr+size < paddr {
		return &LineError{File: s.opts.File, Line: s.c.lineNo, Msg: fmt.Sprintf("%s: paddr=%#x size=%d wraps around", traceEventNames[ev.kind], paddr, size)}
	}
	ev.pfn, ev.size, ev.dir = paddr>>pageShift, size, uint8(dir)
	if size > 0 {
		ev.cnt = (paddr + size - 1) >> pageShift
	}
	s.push(&ev)
	return nil
}

// PutEvent takes the event ppkit/page_pool_put_page (EventPut): the page's DMA address,
// dma_sync_size and allow_direct.
func (s *TraceStream) PutEvent(ts uint64, cpu int, flags uint8, dma uint64, sync uint32, direct uint8) {
	var ev traceEvent
	s.begin(&ev, EventPut, ts, cpu, flags)
	ev.pfn, ev.count, ev.direct = dma>>pageShift, sync, direct != 0
	s.poolEvents++
	s.push(&ev)
}

// FreeEvent takes mm_page_free (order: its order=) and mm_page_free_batched (order 0): what
// the text parser takes from "page=%p pfn=0x%lx order=%d", with its range check.
func (s *TraceStream) FreeEvent(kind EventKind, ts uint64, cpu int, flags uint8, pfn uint64, order uint32) error {
	var ev traceEvent
	s.begin(&ev, kind, ts, cpu, flags)
	if order > 20 {
		return &LineError{File: s.opts.File, Line: s.c.lineNo, Msg: fmt.Sprintf("%s: order=%d is not a page order", traceEventNames[ev.kind], order)}
	}
	ev.pfn, ev.order = pfn, uint8(order)
	s.push(&ev)
	return nil
}

// begin counts a decoded event of a kind the replay reads as a line and an event, and starts
// its traceEvent in place, field by field: a composite literal, or an event returned by
// value, is built in a temporary and copied with wide loads, which stall on the narrow stores
// just made to it (store forwarding fails; the copy was a third of PutEvent's time).
func (s *TraceStream) begin(ev *traceEvent, kind EventKind, ts uint64, cpu int, flags uint8) {
	c := s.c
	c.lineNo++
	c.rep.Lines++
	c.rep.Events++
	ev.kind, ev.ts, ev.line, ev.pool, ev.cpu = evKinds[kind], ts, int32(c.lineNo), -1, int16(cpu)
	if flags&TraceFlagSoftirq != 0 && flags&TraceFlagNMI == 0 {
		ev.softirq = 1
	}
}

// push replays an event at once when nothing is held back and it is not older than any
// event before it (the decoded transport's merged order), and otherwise queues it like a
// text line.
func (s *TraceStream) push(ev *traceEvent) {
	c, q := s.c, &s.q
	if q.Len() == 0 && ev.ts >= q.newest {
		// Parsed and replayed at once: the interned pool is the current one at its address.
		q.newest, q.released = ev.ts, ev.ts
		c.line = ""
		c.replay(ev)
		return
	}
	if late := q.push(*ev, ""); late && ev.kind != evMarker && ev.kind != evLost {
		c.rep.Reordered++
	}
	for q.ready() {
		c.replayPending(q.pop())
	}
}

// internPool names a pool pointer as the text prints it: %p of 5.10's trace output is the
// plain address, 16 hex digits (trace_event_printf()).
func (s *TraceStream) internPool(p uint64) int32 {
	c := s.c
	// Events of one pool come in runs: the last pointer's pool, while the checker's own
	// cache still names it (newPool clears that cache when an address gets a new pool).
	if s.rawPoolOK && p == s.rawPool && c.lastPtr != nil && c.lastID == s.rawPoolID {
		return s.rawPoolID
	}
	id := s.formatPool(p)
	s.rawPool, s.rawPoolID, s.rawPoolOK = p, id, true
	return id
}

func (s *TraceStream) formatPool(p uint64) int32 {
	const hex = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = hex[p&15]
		p >>= 4
	}
	return s.c.intern(b[:])
}

// render is the text of a decoded event for a violation report (the text transport quotes the
// trace line itself).
func (c *traceChecker) render(ev *traceEvent) string {
	name := traceEventNames[ev.kind]
	pool := ""
	if ev.pool >= 0 {
		pool = c.pools[ev.pool].Pool
	}
	switch ev.kind {
	case evHold:
		return fmt.Sprintf("%s: page_pool=%s pfn=%d hold=%d", name, pool, ev.pfn, ev.count)
	case evRelease:
		return fmt.Sprintf("%s: page_pool=%s pfn=%d release=%d", name, pool, ev.pfn, ev.count)
	case evPoolRelease:
		return fmt.Sprintf("%s: page_pool=%s inflight=%d hold=%d release=%d cnt=%d", name, pool, ev.inflight, ev.hold, ev.release, ev.cnt)
	case evSkbReturn:
		return fmt.Sprintf("%s: page_pool=%s pfn=%d", name, pool, ev.pfn)
	case evPageFree, evPageFreeBatched:
		return fmt.Sprintf("%s: pfn=%d order=%d", name, ev.pfn, ev.order)
	case evDMASync:
		return fmt.Sprintf("%s: pfn=%d size=%d dir=%d", name, ev.pfn, ev.size, ev.dir)
	case evPut:
		return fmt.Sprintf("%s: pfn=%d sync=%d direct=%t", name, ev.pfn, ev.count, ev.direct)
	}
	return name
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	for n := len(b); n > 0 && (b[n-1] == ' ' || b[n-1] == '\t' || b[n-1] == '\n' || b[n-1] == '\r'); n = len(b) {
		b = b[:n-1]
	}
	return b
}
