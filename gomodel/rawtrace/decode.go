package rawtrace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/ppkit/ppkit/gomodel"
)

// modelEvents are the events gomodel replays, by format name, with the fields it takes from
// each (the fields of the TP_printk format the text parser reads). The text names an event
// without its system, and so does this table. arch_sync_dma_for_device and page_pool_put_page
// are ppkit's own (gomodel.TraceEventsSystem); traces made before they were tracepoints have
// them as kprobe events of the same names and fields, whose format
// (kprobe_event_define_fields(), kernel/trace/trace_kprobe.c) starts with __probe_ip, the
// probed address, then has one field per fetcharg of the fetch type's size, packed without
// alignment: the decoder reads fields by name, so both decode the same.
var modelEvents = map[string]struct {
	kind   gomodel.EventKind
	fields []string
}{
	"page_pool_state_hold":     {gomodel.EventStateHold, []string{"pool", "page", "pfn", "hold"}},
	"page_pool_state_release":  {gomodel.EventStateRelease, []string{"pool", "page", "pfn", "release"}},
	"page_pool_release":        {gomodel.EventPoolRelease, []string{"pool", "inflight", "hold", "release", "cnt"}},
	"page_pool_update_nid":     {gomodel.EventUpdateNid, []string{"pool", "pool_nid", "new_nid"}},
	"page_pool_skb_return":     {gomodel.EventSkbReturn, []string{"pool", "page", "pfn"}},
	"mm_page_free":             {gomodel.EventPageFree, []string{"pfn", "order"}},
	"mm_page_free_batched":     {gomodel.EventPageFreeBatched, []string{"pfn"}},
	"arch_sync_dma_for_device": {gomodel.EventDMASync, []string{"paddr", "size", "dir"}},
	"page_pool_put_page":       {gomodel.EventPut, []string{"dma", "sync", "direct"}},
}

// probeArgs are the fields of gomodel.TraceEventsSystem's events, with their sizes (u64: 8,
// u32: 4, u8: 1; the kprobe events' x64, u64, u32, u8): other types are not what gomodel's
// text parser and this decoder were checked against.
var probeArgs = map[string]int{"paddr": 8, "size": 8, "dir": 4, "dma": 8, "sync": 4, "direct": 1}

// slot is where one field sits in a record.
type slot struct {
	off, size int
	signed    bool
}

func (s slot) get(d []byte) uint64 {
	switch s.size {
	case 0: // a field the event does not have
		return 0
	case 1:
		if s.signed {
			return uint64(int64(int8(d[s.off])))
		}
		return uint64(d[s.off])
	case 2:
		v := binary.LittleEndian.Uint16(d[s.off:])
		if s.signed {
			return uint64(int64(int16(v)))
		}
		return uint64(v)
	case 4:
		v := binary.LittleEndian.Uint32(d[s.off:])
		if s.signed {
			return uint64(int64(int32(v)))
		}
		return uint64(v)
	}
	return binary.LittleEndian.Uint64(d[s.off:])
}

// decoder turns one event id's records into gomodel events.
type decoder struct {
	f    *Format
	kind gomodel.EventKind
	// need is the record length the fields need: a shorter record is an error.
	need                   int
	flags, preempt, pid    slot
	pool, pfn, count, ord  slot
	inflight, hold, rel    slot
	cnt                    slot
	page, poolNid, newNid  slot // for the text only (WriteText)
	addr, length, dir      slot // DMA sync or put: paddr or dma, size, dir
	sync, direct           slot
	buf                    int // ftrace/print: offset of buf[]
	hasOrder, isPrint, nop bool
	// fixed: the fields Decoder.fast reads have the widths it reads them with (pool, pfn,
	// addr, size: 8 bytes; count, dir, sync, order: 4; direct: 1), so it reads them without
	// slot.get.
	fixed bool
}

// Decoder turns the records of a trace's pages into gomodel events, by the events' formats.
type Decoder struct {
	fm   *Formats
	decs []*decoder // by id, built on first use
}

// NewDecoder decodes records with fm's formats.
func NewDecoder(fm *Formats) *Decoder { return &Decoder{fm: fm} }

// DecodeError is a record the decoder cannot read: its CPU, timestamp and what is wrong.
type DecodeError struct {
	CPU int
	TS  uint64
	Msg string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("cpu%d event at %d.%09d: %s", e.CPU, e.TS/1e9, e.TS%1e9, e.Msg)
}

func (d *Decoder) decoder(id int) (*decoder, error) {
	if id < len(d.decs) && d.decs[id] != nil {
		return d.decs[id], nil
	}
	f := d.fm.ByID(id)
	if f == nil {
		return nil, fmt.Errorf("event id %d has no format: copy events/*/format of every enabled event", id)
	}
	dc := &decoder{f: f, need: 4}
	field := func(name string, sizes ...int) (slot, error) {
		fd := f.Field(name)
		if fd == nil {
			return slot{}, fmt.Errorf("event %s/%s (id %d) has no field %s, which gomodel reads", f.System, f.Name, id, name)
		}
		ok := false
		for _, s := range sizes {
			ok = ok || fd.Size == s
		}
		if !ok || fd.Array >= 0 {
			return slot{}, fmt.Errorf("event %s/%s (id %d): field %s is %d bytes (%s), want %v", f.System, f.Name, id, name, fd.Size, fd.Type, sizes)
		}
		dc.need = max(dc.need, fd.Offset+fd.Size)
		return slot{off: fd.Offset, size: fd.Size, signed: fd.Signed}, nil
	}
	var err error
	if dc.flags, err = field("common_flags", 1); err != nil {
		return nil, err
	}
	if dc.preempt, err = field("common_preempt_count", 1); err != nil {
		return nil, err
	}
	if dc.pid, err = field("common_pid", 4); err != nil {
		return nil, err
	}
	me, known := modelEvents[f.Name]
	switch {
	case f.System == "ftrace" && f.Name == "print":
		fd := f.Field("buf")
		if fd == nil || fd.Array != 0 {
			return nil, fmt.Errorf("event ftrace/print (id %d) has no dynamic char buf[]", id)
		}
		dc.kind, dc.isPrint, dc.buf = gomodel.EventMarker, true, fd.Offset
		dc.need = max(dc.need, fd.Offset)
	case known:
		dc.kind = me.kind
		// The fields read as they are, by name: where each goes and the sizes it may have.
		plain := map[string]struct {
			dst   *slot
			sizes []int
		}{
			"pool": {&dc.pool, []int{8}}, "page": {&dc.page, []int{8}}, "pfn": {&dc.pfn, []int{8, 4}},
			"pool_nid": {&dc.poolNid, []int{4}}, "new_nid": {&dc.newNid, []int{4}},
			"inflight": {&dc.inflight, []int{4}}, "cnt": {&dc.cnt, []int{8}},
		}
		if f.Field("__probe_func") != nil {
			// A kretprobe's fetchargs are read when the function returns, not at its entry.
			return nil, fmt.Errorf("event %s/%s (id %d) is a kretprobe (field __probe_func): its fields are read at the function's return, gomodel needs them at its entry", f.System, f.Name, id)
		}
		for _, name := range me.fields {
			var s slot
			if p, ok := plain[name]; ok {
				*p.dst, err = field(name, p.sizes...)
				if err != nil {
					return nil, err
				}
				continue
			}
			switch name {
			case "hold", "release":
				// page_pool_release carries both counters; the state events one, their count.
				s, err = field(name, 4)
				switch {
				case me.kind != gomodel.EventPoolRelease:
					dc.count = s
				case name == "hold":
					dc.hold = s
				default:
					dc.rel = s
				}
			case "order":
				s, err = field(name, 4)
				dc.ord, dc.hasOrder = s, true
			default: // a field of gomodel.TraceEventsSystem's events
				s, err = field(name, probeArgs[name])
				if err == nil && s.signed {
					err = fmt.Errorf("event %s/%s (id %d): field %s is signed (%s), want the unsigned type of harness/config/trace-events.patch", f.System, f.Name, id, name, f.Field(name).Type)
				}
				switch name {
				case "paddr", "dma":
					dc.addr = s
				case "size":
					dc.length = s
				case "dir":
					dc.dir = s
				case "sync":
					dc.sync = s
				case "direct":
					dc.direct = s
				}
			}
			if err != nil {
				return nil, err
			}
		}
	default:
		dc.kind, dc.nop = gomodel.EventOther, true
	}
	switch dc.kind {
	case gomodel.EventStateHold, gomodel.EventStateRelease:
		dc.fixed = dc.pool.size == 8 && dc.pfn.size == 8 && dc.count.size == 4
	case gomodel.EventSkbReturn:
		dc.fixed = dc.pool.size == 8 && dc.pfn.size == 8
	case gomodel.EventDMASync:
		dc.fixed = dc.addr.size == 8 && dc.length.size == 8 && dc.dir.size == 4
	case gomodel.EventPut:
		dc.fixed = dc.addr.size == 8 && dc.sync.size == 4 && dc.direct.size == 1
	case gomodel.EventPageFree:
		dc.fixed = dc.pfn.size == 8 && dc.hasOrder && dc.ord.size == 4
	case gomodel.EventPageFreeBatched:
		dc.fixed = dc.pfn.size == 8
	}
	for id >= len(d.decs) {
		d.decs = append(d.decs, nil)
	}
	d.decs[id] = dc
	return dc, nil
}

// Decode turns one event record into a gomodel event (ev.Marker points into rec.Data).
func (d *Decoder) Decode(rec *Record, ev *gomodel.Event) error {
	if rec.Data == nil {
		*ev = gomodel.Event{Kind: gomodel.EventLost, TS: usecs(rec.TS), CPU: rec.CPU, Lost: rec.Lost}
		return nil
	}
	data := rec.Data
	if len(data) < 4 {
		return &DecodeError{CPU: rec.CPU, TS: rec.TS, Msg: fmt.Sprintf("a record of %d bytes has no common fields", len(data))}
	}
	id := int(binary.LittleEndian.Uint16(data))
	var dc *decoder
	if id < len(d.decs) && d.decs[id] != nil {
		dc = d.decs[id]
	} else {
		var err error
		if dc, err = d.decoder(id); err != nil {
			return &DecodeError{CPU: rec.CPU, TS: rec.TS, Msg: err.Error()}
		}
	}
	if len(data) < dc.need {
		return &DecodeError{CPU: rec.CPU, TS: rec.TS, Msg: fmt.Sprintf("event %s/%s (id %d) is %d bytes, its format needs %d",
			dc.f.System, dc.f.Name, id, len(data), dc.need)}
	}
	// Field by field: a composite literal would copy the whole Event with write barriers.
	ev.Kind, ev.TS, ev.CPU, ev.Flags, ev.PreemptCount = dc.kind, usecs(rec.TS), rec.CPU, data[dc.flags.off], data[dc.preempt.off]
	ev.PID = int32(binary.LittleEndian.Uint32(data[dc.pid.off:]))
	ev.Pool, ev.PFN, ev.Count, ev.Inflight, ev.Hold, ev.Release, ev.Cnt, ev.Order, ev.Lost = 0, 0, 0, 0, 0, 0, 0, 0, 0
	ev.Addr, ev.Size, ev.Dir, ev.Sync, ev.Direct = 0, 0, 0, 0, 0
	ev.Page, ev.PoolNid, ev.NewNid = 0, 0, 0
	if ev.Marker != nil {
		ev.Marker = nil
	}
	switch dc.kind {
	case gomodel.EventOther:
	case gomodel.EventMarker:
		b := data[dc.buf:]
		if i := bytes.IndexByte(b, 0); i >= 0 {
			b = b[:i]
		}
		ev.Marker = b
	case gomodel.EventPageFree, gomodel.EventPageFreeBatched:
		ev.PFN = dc.pfn.get(data)
		if dc.hasOrder {
			ev.Order = uint32(dc.ord.get(data))
		}
	case gomodel.EventPoolRelease:
		ev.Pool = dc.pool.get(data)
		ev.Inflight = int32(dc.inflight.get(data))
		ev.Hold = uint32(dc.hold.get(data))
		ev.Release = uint32(dc.rel.get(data))
		ev.Cnt = dc.cnt.get(data)
	case gomodel.EventUpdateNid:
		ev.Pool = dc.pool.get(data)
		ev.PoolNid, ev.NewNid = int32(dc.poolNid.get(data)), int32(dc.newNid.get(data))
	case gomodel.EventSkbReturn:
		ev.Pool = dc.pool.get(data)
		ev.Page = dc.page.get(data)
		ev.PFN = dc.pfn.get(data)
	case gomodel.EventDMASync:
		ev.Addr = dc.addr.get(data)
		ev.Size = dc.length.get(data)
		ev.Dir = uint32(dc.dir.get(data))
	case gomodel.EventPut:
		ev.Addr = dc.addr.get(data)
		ev.Sync = uint32(dc.sync.get(data))
		ev.Direct = uint8(dc.direct.get(data))
	default: // hold, release
		ev.Pool = dc.pool.get(data)
		ev.Page = dc.page.get(data)
		ev.PFN = dc.pfn.get(data)
		ev.Count = uint32(dc.count.get(data))
	}
	return nil
}

// feed replays one record in s: the events most of a trace is made of through fast, the rest
// through Decode and ev.
func (d *Decoder) feed(rec *Record, s *gomodel.TraceStream, ev *gomodel.Event) error {
	if rec.Data != nil {
		if ok, err := d.fast(rec.CPU, rec.TS, rec.Data, s); ok {
			return err
		}
	}
	if err := d.Decode(rec, ev); err != nil {
		return err
	}
	return s.Event(ev)
}

// fast replays a record (data, at ts on cpu) of the kinds most of a trace is made of, field
// by field (TraceStream.PageEvent, SyncEvent, PutEvent, FreeEvent): false, having done
// nothing, for any other record, or one of an event id Decode has not met yet.
func (d *Decoder) fast(cpu int, ts uint64, data []byte, s *gomodel.TraceStream) (bool, error) {
	if len(data) < 4 {
		return false, nil
	}
	id := int(binary.LittleEndian.Uint16(data))
	if id >= len(d.decs) {
		return false, nil
	}
	dc := d.decs[id]
	if dc == nil || !dc.fixed || len(data) < dc.need {
		return false, nil
	}
	le := binary.LittleEndian
	switch dc.kind {
	case gomodel.EventStateHold, gomodel.EventStateRelease:
		s.PageEvent(dc.kind, usecs(ts), cpu, data[dc.flags.off], le.Uint64(data[dc.pool.off:]), le.Uint64(data[dc.pfn.off:]), le.Uint32(data[dc.count.off:]))
	case gomodel.EventSkbReturn:
		s.PageEvent(dc.kind, usecs(ts), cpu, data[dc.flags.off], le.Uint64(data[dc.pool.off:]), le.Uint64(data[dc.pfn.off:]), 0)
	case gomodel.EventDMASync:
		return true, s.SyncEvent(usecs(ts), cpu, data[dc.flags.off], le.Uint64(data[dc.addr.off:]), le.Uint64(data[dc.length.off:]), le.Uint32(data[dc.dir.off:]))
	case gomodel.EventPut:
		s.PutEvent(usecs(ts), cpu, data[dc.flags.off], le.Uint64(data[dc.addr.off:]), le.Uint32(data[dc.sync.off:]), data[dc.direct.off])
	case gomodel.EventPageFree:
		return true, s.FreeEvent(dc.kind, usecs(ts), cpu, data[dc.flags.off], le.Uint64(data[dc.pfn.off:]), le.Uint32(data[dc.ord.off:]))
	case gomodel.EventPageFreeBatched:
		return true, s.FreeEvent(dc.kind, usecs(ts), cpu, data[dc.flags.off], le.Uint64(data[dc.pfn.off:]), 0)
	default:
		return false, nil
	}
	return true, nil
}

// usecs rounds a timestamp to what the text shows: ns2usecs() (kernel/trace/trace.c) adds
// 500 ns before dividing.
func usecs(ns uint64) uint64 { return (ns + 500) / 1000 * 1000 }

// Merger merges the CPUs' records in timestamp order exactly as ftrace's trace file does
// (__find_next_entry() in kernel/trace/trace.c: the smallest timestamp first, the lowest CPU
// on a tie).
type Merger struct {
	cpus    []mergeHead
	last    int // the head handed out by the last Next, -1
	started bool
}

type mergeHead struct {
	rec  Record
	r    *CPUReader
	done bool
}

// NewMerger merges the streams; streams[i] is CPU i's pages (nil: a CPU without a stream).
func NewMerger(streams []io.Reader, h *HeaderPage) *Merger {
	m := &Merger{last: -1}
	for i, r := range streams {
		if r != nil {
			m.cpus = append(m.cpus, mergeHead{r: NewCPUReader(i, r, h)})
		}
	}
	return m
}

// advance reads h's next record into h.rec, or marks h done at the end of its stream.
func (h *mergeHead) advance() error {
	err := h.r.Next(&h.rec)
	if err == io.EOF {
		h.done = true
		return nil
	}
	return err
}

// Next returns the next record of all CPUs (io.EOF when every stream has ended). The record
// and its Data are valid until the next call.
func (m *Merger) Next() (*Record, error) {
	switch {
	case m.last >= 0:
		// Only the head handed out last has moved. Its common case is read here (this is the
		// decoder's hottest loop, and CPUReader.Next is too big for the compiler to inline):
		// an event whose length is in its header, inside the page's commit.
		h := &m.cpus[m.last]
		c := h.r
		if d, off := c.data, c.off; off+hdrSize <= len(d) && !c.gap {
			hdr := binary.LittleEndian.Uint32(d[off:])
			if t := hdr & 31; t-1 < typeDataMax {
				if end := off + hdrSize + 4*int(t); end <= len(d) {
					c.ts += uint64(hdr >> 5)
					c.off = end
					h.rec.CPU, h.rec.TS, h.rec.Data, h.rec.Lost = c.cpu, c.ts, d[off+hdrSize:end], 0
					break
				}
			}
		}
		if err := h.advance(); err != nil {
			m.last = -1
			return nil, err
		}
	case !m.started:
		m.started = true
		for i := range m.cpus {
			if err := m.cpus[i].advance(); err != nil {
				return nil, err
			}
		}
	}
	best := -1
	var bestTS uint64
	for i := range m.cpus {
		h := &m.cpus[i]
		if !h.done && (best < 0 || h.rec.TS < bestTS) {
			best, bestTS = i, h.rec.TS
		}
	}
	m.last = best
	if best < 0 {
		return nil, io.EOF
	}
	return &m.cpus[best].rec, nil
}

// run replays, straight from its page, the records of the CPU that Next handed out last
// which Next would hand out next anyway (before every other CPU's next record; on a tie, the
// lower CPU first), as long as Decoder.fast takes them: the traffic of a procedure lands on
// one CPU at a time, in runs. It stops before anything else (the end of the page, a time
// extend, another kind of event), which Next then reads. It returns the records replayed.
func (m *Merger) run(d *Decoder, s *gomodel.TraceStream) (int, error) {
	if m.last < 0 {
		return 0, nil
	}
	// The CPU's records with a timestamp below bound come before every other CPU's.
	bound := uint64(math.MaxUint64)
	for j := range m.cpus {
		if h := &m.cpus[j]; j != m.last && !h.done {
			b := h.rec.TS
			if j > m.last && b < math.MaxUint64 {
				b++
			}
			bound = min(bound, b)
		}
	}
	c := m.cpus[m.last].r
	if c.gap {
		return 0, nil
	}
	// The page's position lives in locals while the run lasts, and goes back to c at its end
	// (read and written through c, a record at a time, it cost tcp's replay 4 %).
	data, off, ts, cpu, n := c.data, c.off, c.ts, c.cpu, 0
	var err error
	for off+hdrSize <= len(data) {
		hdr := binary.LittleEndian.Uint32(data[off:])
		t := hdr & 31
		end := off + hdrSize + 4*int(t)
		next := ts + uint64(hdr>>5)
		if t-1 >= typeDataMax || end > len(data) || next >= bound {
			break
		}
		var ok bool
		if ok, err = d.fast(cpu, next, data[off+hdrSize:end], s); !ok {
			break
		}
		ts, off = next, end
		n++
		if err != nil {
			break
		}
	}
	c.off, c.ts = off, ts
	return n, err
}

// Pages is the number of pages read from every CPU so far.
func (m *Merger) Pages() int {
	n := 0
	for i := range m.cpus {
		n += m.cpus[i].r.pages
	}
	return n
}

// Stats are what a replay of raw pages saw besides the model's report.
type Stats struct {
	Pages  int
	Events int
	Gaps   int // places where the kernel flagged lost events
	// Lost sums the stored lost-event counts; LostUnknown counts the gaps the kernel flagged
	// without room on the page to store their count.
	Lost        int64
	LostUnknown int
}

// Replay decodes the CPUs' pages, merges them in timestamp order and replays them through
// gomodel's TraceStream: the report is ReadTrace's for the text of the same buffers (same
// events, same timestamps, same pools), and its error ReadTrace's (*gomodel.NotATraceError
// with the report for a trace without page_pool events; *gomodel.ProbeError, with the report,
// for put probes that name no pool page). A page or record the decoder cannot
// read is a *PageError or *DecodeError and no report.
func Replay(streams []io.Reader, fm *Formats, opts gomodel.TraceOptions) (*gomodel.TraceReport, Stats, error) {
	var st Stats
	m := NewMerger(streams, &fm.Page)
	d := NewDecoder(fm)
	s := gomodel.NewTraceStream(opts)
	var ev gomodel.Event
	for {
		rec, err := m.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, st, err
		}
		if err := d.feed(rec, s, &ev); err != nil {
			return nil, st, err
		}
		if rec.Data == nil {
			st.Gaps++
			if rec.Lost > 0 {
				st.Lost += rec.Lost
			} else {
				st.LostUnknown++
			}
			continue
		}
		st.Events++
		n, err := m.run(d, s)
		st.Events += n
		if err != nil {
			return nil, st, err
		}
	}
	st.Pages = m.Pages()
	rep, err := s.Finish()
	var nt *gomodel.NotATraceError
	var pe *gomodel.ProbeError
	if err != nil && !errors.As(err, &nt) && !errors.As(err, &pe) {
		return nil, st, err
	}
	return rep, st, err
}
