package rawtrace

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/internal/testfile"
)

// synthetic is a run of one pool over two CPUs: the ring fill on CPU 0, skb returns and page
// frees on both, unrelated skb events, the procedure's markers, the pool's release at the end.
// Timestamps grow by rnd steps, with a gap that needs a time extend.
func synthetic(rnd *rand.Rand, n int) []tev {
	const pool = 0xffffff8001a5b000
	var evs []tev
	ts := uint64(2_380_513_000)
	step := func() uint64 {
		ts += uint64(rnd.Intn(3000))
		if rnd.Intn(500) == 0 {
			ts += 1 << 28 // a gap a 27-bit delta cannot say
		}
		return ts
	}
	evs = append(evs, tev{cpu: 0, ts: step(), name: "print", marker: "ppkit: multicast begin", pid: 300})
	for i := 0; i < 64; i++ {
		evs = append(evs, tev{cpu: 0, ts: step(), name: "page_pool_state_hold", pool: pool, pfn: 286015 + uint64(i), count: uint32(i + 1), pid: 72})
	}
	for i := 0; i < n; i++ {
		cpu := rnd.Intn(2)
		switch rnd.Intn(3) {
		case 0:
			evs = append(evs, tev{cpu: cpu, ts: step(), name: "page_pool_skb_return", pool: pool, pfn: 286015 + uint64(rnd.Intn(64)), flags: 0x10, pid: 0})
		case 1:
			evs = append(evs, tev{cpu: cpu, ts: step(), name: "mm_page_free", pfn: 900000 + uint64(i), flags: 0x10})
		default:
			evs = append(evs, tev{cpu: cpu, ts: step(), name: "kfree_skb", pid: 300})
		}
	}
	evs = append(evs, tev{cpu: 1, ts: step(), name: "print", marker: "ppkit: multicast end", pid: 301})
	for i := 0; i < 64; i++ {
		evs = append(evs, tev{cpu: 1, ts: step(), name: "page_pool_state_release", pool: pool, pfn: 286015 + uint64(i), count: uint32(i + 1)})
	}
	evs = append(evs, tev{cpu: 1, ts: step(), name: "page_pool_release", pool: pool, count: 0, release: 64})
	return evs
}

// syntheticKprobes is a run of one pool whose NAPI poll runs on CPU 0, with the kprobe events
// of gomodel.KprobeEvents: the slow path syncs each page for the device before its hold; the
// return hook hands pages back (page_pool_skb_return, then its page_pool_put_page, then the
// sync of dma_sync_size), in softirq on either CPU; the driver recycles directly in its poll;
// syncs towards the device that sync nothing the model tracks, and puts of pages no traced
// pool holds. With bugs, one page comes back twice without a sync in between
// (not-synced-for-device), and direct puts run in softirq on CPU 1, once in a hard irq that
// interrupted a softirq ('H') — direct-recycle-outside-napi — and once in a plain hard irq
// ('h', not a softirq: no violation).
func syntheticKprobes(rnd *rand.Rand, n int, bugs bool) []tev {
	const pool, base, soft, hard = 0xffffff8001a5b000, 286015, 0x10, 0x08
	var evs []tev
	ts := uint64(2_380_513_000)
	add := func(e tev) {
		ts += uint64(rnd.Intn(3000))
		if rnd.Intn(500) == 0 {
			ts += 1 << 28
		}
		e.ts = ts
		evs = append(evs, e)
	}
	sync := func(cpu int, flags uint8, pfn uint64, size uint64) {
		add(tev{cpu: cpu, name: "arch_sync_dma_for_device", addr: pfn<<12 + 64, size: size, dir: 2, flags: flags})
	}
	add(tev{cpu: 0, name: "print", marker: "ppkit: multicast begin", pid: 300})
	for i := uint64(0); i < 64; i++ {
		sync(0, soft, base+i, 1600)
		add(tev{cpu: 0, name: "page_pool_state_hold", pool: pool, pfn: base + i, count: uint32(i + 1), flags: soft})
	}
	for i := 0; i < n; i++ {
		cpu, pfn := rnd.Intn(2), base+uint64(rnd.Intn(64))
		switch rnd.Intn(5) {
		case 0, 1:
			add(tev{cpu: cpu, name: "page_pool_skb_return", pool: pool, pfn: pfn, flags: soft})
			add(tev{cpu: cpu, name: "page_pool_put_page", addr: pfn << 12, count: 1600, flags: soft})
			sync(cpu, soft, pfn, 1600)
		case 2: // the driver's recycle in its NAPI poll
			add(tev{cpu: 0, name: "page_pool_put_page", addr: pfn << 12, count: 1600, direct: 1, flags: soft})
			sync(0, soft, pfn, 1600)
		case 3:
			sync(cpu, 0, 900000+uint64(i), 1500) // dir 2 of a page no pool holds
			add(tev{cpu: cpu, name: "arch_sync_dma_for_device", addr: uint64(i) << 12, size: 66, dir: 1})
			add(tev{cpu: cpu, name: "page_pool_put_page", addr: (800000 + uint64(i)) << 12, count: 0xffffffff, flags: soft})
		default:
			add(tev{cpu: cpu, name: "kfree_skb", pid: 300})
		}
	}
	if bugs {
		add(tev{cpu: 1, name: "page_pool_skb_return", pool: pool, pfn: base, flags: soft})
		add(tev{cpu: 1, name: "page_pool_put_page", addr: base << 12, count: 1600, flags: soft})
		add(tev{cpu: 1, name: "page_pool_skb_return", pool: pool, pfn: base, flags: soft}) // no sync since
		add(tev{cpu: 1, name: "page_pool_put_page", addr: base << 12, count: 1600, flags: soft})
		sync(1, soft, base, 1600)
		add(tev{cpu: 1, name: "page_pool_put_page", addr: (base + 1) << 12, count: 1600, direct: 1, flags: hard})
		add(tev{cpu: 1, name: "page_pool_put_page", addr: (base + 2) << 12, count: 1600, direct: 1, flags: hard | soft | 0x01})
		add(tev{cpu: 1, name: "page_pool_put_page", addr: (base + 3) << 12, count: 1600, direct: 1, flags: soft})
	}
	add(tev{cpu: 1, name: "print", marker: "ppkit: multicast end", pid: 301})
	for i := uint64(0); i < 64; i++ {
		add(tev{cpu: 1, name: "page_pool_state_release", pool: pool, pfn: base + i, count: uint32(i + 1)})
	}
	add(tev{cpu: 1, name: "page_pool_release", pool: pool, count: 0, release: 64})
	return evs
}

// split returns each CPU's events and the text of the trace file: the merged order of
// __find_next_entry() (time, then CPU).
func split(evs []tev) (perCPU [2][]tev, text string) {
	for _, e := range evs {
		perCPU[e.cpu] = append(perCPU[e.cpu], e)
	}
	merged := append([]tev{}, evs...)
	sort.SliceStable(merged, func(i, j int) bool {
		return merged[i].ts < merged[j].ts || merged[i].ts == merged[j].ts && merged[i].cpu < merged[j].cpu
	})
	var b strings.Builder
	b.WriteString("# tracer: nop\n#\n# entries-in-buffer/entries-written: 1/1   #P:2\n#\n")
	for i := range merged {
		b.WriteString(merged[i].text())
		b.WriteByte('\n')
	}
	return perCPU, b.String()
}

var lineNo = regexp.MustCompile(`line \d+`)

// sameReport requires the raw replay's report to be the text's: every count, pool, figure,
// violation and note, except what names a line of the text (the raw events are numbered in
// merged order, without the text's header lines).
func sameReport(t *testing.T, text, raw *gomodel.TraceReport, headerLines int) {
	t.Helper()
	if text.Lines != raw.Lines+headerLines {
		t.Errorf("lines: text %d = raw %d + %d header lines?", text.Lines, raw.Lines, headerLines)
	}
	strip := func(r *gomodel.TraceReport) gomodel.TraceReport {
		c := *r
		c.File, c.Lines = "", 0
		c.Pools = append([]gomodel.PoolTrace{}, r.Pools...)
		for i := range c.Pools {
			if lr := c.Pools[i].LastRelease; lr != nil {
				x := *lr
				x.Line = 0
				c.Pools[i].LastRelease = &x
			}
		}
		c.Violations = append([]gomodel.Violation{}, r.Violations...)
		for i := range c.Violations {
			v := &c.Violations[i]
			v.Line, v.Op = 0, ""
			for j := range v.History {
				v.History[j] = lineNo.ReplaceAllString(v.History[j], "line N")
			}
		}
		c.Notes = nil
		for _, n := range r.Notes {
			c.Notes = append(c.Notes, lineNo.ReplaceAllString(n, "line N"))
		}
		return c
	}
	a, b := strip(text), strip(raw)
	if d := diffReports(&a, &b); d != "" {
		t.Errorf("raw replay differs from the text's:\n%s", d)
	}
}

func diffReports(a, b *gomodel.TraceReport) string {
	var out []string
	chk := func(what string, x, y any) {
		if sx, sy := sprint(x), sprint(y); sx != sy {
			out = append(out, what+":\n  text "+clip(sx)+"\n  raw  "+clip(sy))
		}
	}
	chk("events", a.Events, b.Events)
	chk("ignored", a.Ignored, b.Ignored)
	chk("lost markers", a.LostEvents, b.LostEvents)
	chk("reordered", a.Reordered, b.Reordered)
	chk("passed", a.Passed, b.Passed)
	chk("figures", a.Figures, b.Figures)
	chk("per-1k", [2]float64{a.SlowPathPer1k, a.ReturnsPer1k}, [2]float64{b.SlowPathPer1k, b.ReturnsPer1k})
	chk("notes", a.Notes, b.Notes)
	chk("kprobes (syncs, puts, direct puts)", [3]int{a.DMASyncs, a.Puts, a.DirectPuts}, [3]int{b.DMASyncs, b.Puts, b.DirectPuts})
	chk("violations", a.Violations, b.Violations)
	chk("pools", len(a.Pools), len(b.Pools))
	for i := range min(len(a.Pools), len(b.Pools)) {
		pa, pb := a.Pools[i], b.Pools[i]
		chk("pool "+pa.Pool+" timeline", pa.Timeline, pb.Timeline)
		chk("pool "+pa.Pool+" last release", pa.LastRelease, pb.LastRelease)
		pa.Timeline, pb.Timeline, pa.LastRelease, pb.LastRelease = nil, nil, nil, nil
		chk("pool "+pa.Pool, pa, pb)
	}
	return strings.Join(out, "\n")
}

func readers(b ...[]byte) []io.Reader {
	var rs []io.Reader
	for _, x := range b {
		rs = append(rs, bytes.NewReader(x))
	}
	return rs
}

// inPlace is readers whose pages CPUReader decodes in place (Peek and Discard): every second
// one a bufio.Reader of one page's size, the rest memPages.
func inPlace(b ...[]byte) []io.Reader {
	var rs []io.Reader
	for i, x := range b {
		if i%2 == 1 {
			rs = append(rs, bufio.NewReaderSize(bytes.NewReader(x), 4096))
		} else {
			rs = append(rs, &memPages{b: x})
		}
	}
	return rs
}

// memPages is a CPU's pages in memory with bufio.Reader's Peek and Discard, without a buffer
// to fill: CPUReader decodes them where they are.
type memPages struct{ b []byte }

func (m *memPages) Read(p []byte) (int, error) {
	if len(m.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, m.b)
	m.b = m.b[n:]
	return n, nil
}

func (m *memPages) Peek(n int) ([]byte, error) {
	if len(m.b) < n {
		return m.b, io.EOF
	}
	return m.b[:n:n], nil
}

func (m *memPages) Discard(n int) (int, error) {
	if len(m.b) < n {
		k := len(m.b)
		m.b = nil
		return k, io.EOF
	}
	m.b = m.b[n:]
	return n, nil
}

// replayBoth replays a synthetic run twice: its text through gomodel's parser (want) and its two
// CPUs' events as ring-buffer pages through Replay (got).
func replayBoth(t *testing.T, fm *Formats, perCPU [2][]tev, text string) (want, got *gomodel.TraceReport, st Stats) {
	t.Helper()
	opts := gomodel.TraceOptions{Procedure: "multicast"}
	want, err := gomodel.ReadTrace(strings.NewReader(text), opts)
	if err != nil {
		t.Fatal(err)
	}
	got, st, err = Replay(readers(pages(fm, perCPU[0], nil), pages(fm, perCPU[1], nil)), fm, opts)
	if err != nil {
		t.Fatal(err)
	}
	// The text WriteText makes of the pages names every violation at Replay's line.
	var written bytes.Buffer
	if err := WriteText(&written, readers(pages(fm, perCPU[0], nil), pages(fm, perCPU[1], nil)), fm); err != nil {
		t.Fatal(err)
	}
	back, err := gomodel.ReadTrace(&written, opts)
	if err != nil {
		t.Fatal(err)
	}
	sameReport(t, back, got, 0)
	for i := range got.Violations {
		if i < len(back.Violations) && back.Violations[i].Line != got.Violations[i].Line {
			t.Errorf("violation %d: written text line %d, raw line %d", i, back.Violations[i].Line, got.Violations[i].Line)
		}
	}
	return want, got, st
}

func TestSyntheticRawEqualsText(t *testing.T) {
	fm := testFormatSet(t)
	for seed := int64(1); seed <= 20; seed++ {
		rnd := rand.New(rand.NewSource(seed))
		perCPU, text := split(synthetic(rnd, 3000))
		want, got, st := replayBoth(t, fm, perCPU, text)
		if st.Events != len(perCPU[0])+len(perCPU[1]) || st.Lost != 0 || st.Pages < 2 {
			t.Fatalf("stats %+v", st)
		}
		if want.Figures.HoldsInWindow != 64 || want.Figures.WindowEnd == 0 || !want.Passed || len(want.Pools) != 1 {
			t.Fatalf("the synthetic run is not what it should be: %+v", want)
		}
		sameReport(t, want, got, 4)
	}
}

// The kprobe events replay as their text does: the two rules they feed find the same
// violations, with the same figures, from the pages and from the text; and a run without the
// bugs passes.
func TestSyntheticKprobes(t *testing.T) {
	fm := testFormatSet(t)
	for seed := int64(1); seed <= 10; seed++ {
		for _, bugs := range []bool{false, true} {
			rnd := rand.New(rand.NewSource(seed))
			perCPU, text := split(syntheticKprobes(rnd, 2000, bugs))
			want, got, st := replayBoth(t, fm, perCPU, text)
			if st.Events != len(perCPU[0])+len(perCPU[1]) {
				t.Fatalf("stats %+v", st)
			}
			var names []string
			for _, v := range want.Violations {
				names = append(names, v.Name)
			}
			wantNames := "[]"
			if bugs {
				wantNames = sprint([]string{gomodel.NotSyncedForDevice, gomodel.DirectRecycleOutsideNAPI})
			}
			if sprint(names) != wantNames || want.DMASyncs < 64 || want.Puts == 0 || want.DirectPuts == 0 {
				t.Fatalf("seed %d bugs %v: the synthetic run is not what it should be: violations %v, %d syncs, %d puts, %d direct",
					seed, bugs, names, want.DMASyncs, want.Puts, want.DirectPuts)
			}
			if bugs && !strings.Contains(sprint(want.Notes), "1 more direct puts in softirq") {
				t.Fatalf("want the violation in 'H' and the next softirq put on CPU 1 in a note, not the 'h' one: %v", want.Notes)
			}
			sameReport(t, want, got, 4)
		}
	}
}

// The events gomodel is given carry the context columns of the text.
func TestDecodeContext(t *testing.T) {
	fm := testFormatSet(t)
	e := tev{cpu: 1, ts: 5_000_000_499, name: "page_pool_skb_return", pool: 0xffffff8001a5b000, pfn: 7, flags: 0x10 | 0x01, pid: 1234}
	m := NewMerger(readers(nil, pages(fm, []tev{e}, nil)), &fm.Page)
	rec, err := m.Next()
	if err != nil {
		t.Fatal(err)
	}
	var ev gomodel.Event
	if err := NewDecoder(fm).Decode(rec, &ev); err != nil {
		t.Fatal(err)
	}
	want := gomodel.Event{Kind: gomodel.EventSkbReturn, TS: 5_000_000_000, CPU: 1, PID: 1234, Flags: 0x11, PreemptCount: 1, Pool: 0xffffff8001a5b000, PFN: 7, Page: 0xfffffffe00000000 + 7*64}
	if sprint(ev) != sprint(want) || !ev.Softirq() {
		t.Fatalf("got %+v\nwant %+v", ev, want)
	}
	if _, err := m.Next(); err != io.EOF {
		t.Fatalf("after the last event: %v", err)
	}
}

// The kprobe events: their fetchargs and the context the model's rules read (the CPU, and
// in_serving_softirq() from common_flags as the text's hardirq/softirq column shows it).
func TestDecodeKprobes(t *testing.T) {
	fm := testFormatSet(t)
	put := tev{cpu: 1, ts: 5_000_000_499, name: "page_pool_put_page", addr: 0x4a2b000, count: 1600, direct: 1, flags: 0x08 | 0x10 | 0x01, pid: 12}
	sync := tev{cpu: 1, ts: 5_000_001_000, name: "arch_sync_dma_for_device", addr: 0x4a2b040, size: 1600, dir: 2, flags: 0x08}
	m := NewMerger(readers(nil, pages(fm, []tev{put, sync}, nil)), &fm.Page)
	d := NewDecoder(fm)
	for _, want := range []gomodel.Event{
		{Kind: gomodel.EventPut, TS: 5_000_000_000, CPU: 1, PID: 12, Flags: 0x19, PreemptCount: 1, Addr: 0x4a2b000, Sync: 1600, Direct: 1},
		{Kind: gomodel.EventDMASync, TS: 5_000_001_000, CPU: 1, Flags: 0x08, PreemptCount: 1, Addr: 0x4a2b040, Size: 1600, Dir: 2},
	} {
		rec, err := m.Next()
		if err != nil {
			t.Fatal(err)
		}
		var ev gomodel.Event
		if err := d.Decode(rec, &ev); err != nil {
			t.Fatal(err)
		}
		// 'H' (a hard irq on top of a softirq) is in_serving_softirq(), 'h' is not: the text's column.
		if sprint(ev) != sprint(want) || ev.Softirq() != (want.Kind == gomodel.EventPut) {
			t.Fatalf("got %+v\nwant %+v", ev, want)
		}
	}
}

// A kprobe field out of the range its text prints is the text's error, from the pages too.
func TestKprobeFieldRange(t *testing.T) {
	fm := testFormatSet(t)
	for _, c := range []struct {
		ev   tev
		want string
	}{
		{tev{ts: 1e9, name: "arch_sync_dma_for_device", addr: 0x1000, size: 64, dir: 300}, "arch_sync_dma_for_device: dir=300 does not fit in 8 bits"},
		{tev{ts: 1e9, name: "arch_sync_dma_for_device", addr: 1<<64 - 0x100, size: 0x200, dir: 2}, "arch_sync_dma_for_device: paddr=0xffffffffffffff00 size=512 wraps around"},
	} {
		_, text := split([]tev{c.ev})
		_, terr := gomodel.ReadTrace(strings.NewReader(text), gomodel.TraceOptions{})
		rep, _, rerr := Replay(readers(pages(fm, []tev{c.ev}, nil)), fm, gomodel.TraceOptions{})
		var tl, rl *gomodel.LineError
		if !errors.As(terr, &tl) || !errors.As(rerr, &rl) || tl.Msg != c.want || rl.Msg != c.want || rep != nil {
			t.Fatalf("text: %v; raw: %v; want both %q", terr, rerr, c.want)
		}
	}
}

// Every kind of event header 5.10 writes: small and long data events, a time extend, an
// absolute time stamp, a discarded event, and null padding at the end of the commit.
func TestPageEventTypes(t *testing.T) {
	fm := testFormatSet(t)
	h := &fm.Page
	long := tev{name: "print", marker: strings.Repeat("x", 200)}
	short := tev{name: "mm_page_free", pfn: 1}
	p := &pageBuilder{ts: 1000, last: 1000}
	p.event(1010, short.record(fm))          // delta 10
	p.event(1010+1<<30, long.record(fm))     // time extend, then a type_len 0 event
	p.discard(24)                            // skipped; time unchanged
	p.abs(7_000_000_000)                     // absolute
	p.event(7_000_000_005, short.record(fm)) // delta 5 from the absolute time
	p.word(typePadding)                      // null padding: the rest of the commit
	p.word(0xdeadbeef)
	var rec Record
	c := NewCPUReader(3, bytes.NewReader(p.bytes(h)), h)
	var got []string
	for {
		err := c.Next(&rec)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, sprint(rec.CPU, rec.TS, len(rec.Data)))
	}
	want := []string{sprint(3, uint64(1010), 20), sprint(3, uint64(1010+1<<30), 220), sprint(3, uint64(7_000_000_005), 20)}
	if sprint(got) != sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

// Lost events: the count ring_buffer_read_page() stored after the data, or only its flag.
func TestLostEvents(t *testing.T) {
	fm := testFormatSet(t)
	var evs []tev
	for i := 0; i < 400; i++ {
		evs = append(evs, tev{ts: uint64(1e9 + i*1000), name: "mm_page_free", pfn: uint64(i)})
	}
	raw := pages(fm, evs, map[int]int64{0: 17, 2: -1})
	_, st, err := Replay(readers(raw), fm, gomodel.TraceOptions{})
	var nt *gomodel.NotATraceError
	if !errors.As(err, &nt) {
		t.Fatalf("want NotATraceError (no page_pool event), got %v", err)
	}
	if st.Lost != 17 || st.LostUnknown != 1 || st.Events != 400 {
		t.Fatalf("stats %+v", st)
	}
	rep, _, _ := Replay(readers(raw), fm, gomodel.TraceOptions{})
	if rep.LostEvents != 2 || rep.Figures.LostEvents != 18 {
		t.Fatalf("report: %d gaps, %d lost; want 2 gaps, 17+1 lost", rep.LostEvents, rep.Figures.LostEvents)
	}
	// The gap comes before the page's first event, in the merged order too.
	m := NewMerger(readers(raw), &fm.Page)
	if rec, err := m.Next(); err != nil || rec.Data != nil || rec.Lost != 17 || rec.TS != 1e9 {
		t.Fatalf("first record %+v, %v; want the gap of 17 at 1 s", rec, err)
	}
}

func TestPageErrors(t *testing.T) {
	fm := testFormatSet(t)
	h := &fm.Page
	good := pages(fm, []tev{{ts: 1e9, name: "mm_page_free"}, {ts: 2e9, name: "mm_page_free"}}, nil)
	mod := func(f func(p []byte)) []byte {
		p := append([]byte{}, good...)
		f(p)
		return p
	}
	for _, c := range []struct {
		name string
		raw  []byte
		want string
	}{
		{"truncated page", good[:4000], "cpu0 page 0: truncated page: 4000 of 4096 bytes"},
		{"commit past the page", mod(func(p []byte) { p[8], p[9] = 0xff, 0x0f }), "commit 4095 is beyond the page's 4080 data bytes"},
		{"high commit bits", mod(func(p []byte) { p[12] = 1 }), "has bits above 31 set"},
		{"stored without missed", mod(func(p []byte) { p[11] = 0x40 }), "RB_MISSED_STORED without RB_MISSED_EVENTS"},
		{"event past the commit", mod(func(p []byte) { p[8] = 20 }), "offset 0: event of 24 bytes runs past the page's commit 20"},
		{"truncated header", mod(func(p []byte) { p[8] = 26 }), "offset 24: truncated event header: 2 bytes left"},
		{"long event past the commit", mod(func(p []byte) { p[16] = 0; binary.LittleEndian.PutUint32(p[20:], 200) }), "event of 204 bytes runs past"},
		{"discard past the commit", mod(func(p []byte) { p[16] = typePadding | 1<<5; binary.LittleEndian.PutUint32(p[20:], 200) }), "discarded event of 204 bytes runs past"},
		{"unknown id", mod(func(p []byte) { p[20] = 0x99; p[21] = 0x09 }), "event id 2457 has no format"},
		{"record shorter than its format", mod(func(p []byte) { p[16] = 2 }), "event kmem/mm_page_free (id 410) is 8 bytes, its format needs 20"},
	} {
		t.Run(c.name, func(t *testing.T) {
			buffered := []io.Reader{bufio.NewReaderSize(bytes.NewReader(c.raw), 1<<16)}
			for _, rs := range [][]io.Reader{readers(c.raw), inPlace(c.raw), buffered} {
				rep, _, err := Replay(rs, fm, gomodel.TraceOptions{})
				if err == nil || !strings.Contains(err.Error(), c.want) || rep != nil {
					t.Fatalf("%T: got %v (report %v), want an error with %q", rs[len(rs)-1], err, rep != nil, c.want)
				}
			}
		})
	}
	_ = h
}

func TestFormatErrors(t *testing.T) {
	hold := testFormats["page_pool/page_pool_state_hold"]
	for _, c := range []struct{ name, text, want string }{
		{"not a format", "hello\n", `unexpected line "hello"`},
		{"no name", strings.Replace(hold, "name: page_pool_state_hold\n", "", 1), `no "name:" line`},
		{"no id", strings.Replace(hold, "ID: 400\n", "", 1), `no "ID:" line`},
		{"bad id", strings.Replace(hold, "ID: 400", "ID: 70000", 1), "is not an event id"},
		{"bad offset", strings.Replace(hold, "offset:24;", "offset:x;", 1), `field hold: offset "x" is not a number`},
		{"no common_type", strings.Replace(hold, "common_type;\toffset:0;\tsize:2", "common_type;\toffset:0;\tsize:4", 1), "no common_type field of 2 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseFormat(strings.NewReader(c.text), "page_pool", "f")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
	if _, err := ParseHeaderPage(strings.NewReader(strings.Replace(headerPage510, "size:8;\tsigned:1", "size:2;\tsigned:1", 1)), "hp"); err == nil || !strings.Contains(err.Error(), "commit is 2 bytes") {
		t.Fatalf("header_page: %v", err)
	}
	if err := ParseHeaderEvent(strings.NewReader(strings.Replace(headerEvent510, "== 29", "== 30", 1)), "he"); err == nil || !strings.Contains(err.Error(), "padding : type == 29") {
		t.Fatalf("header_event: %v", err)
	}
	// An event of gomodel.TraceEventsSystem whose format is not the one gomodel reads (here
	// the kprobe events of older traces) is an error when it is decoded: the records are those
	// of the right format.
	good := pages(testFormatSet(t), []tev{{ts: 1, name: "page_pool_put_page"}, {ts: 2, name: "arch_sync_dma_for_device"}}, nil)
	for _, c := range []struct{ name, path, old, new, want string }{
		{"direct of 4 bytes", "ppkit/page_pool_put_page", "u8 direct;\toffset:28;\tsize:1", "u32 direct;\toffset:28;\tsize:4",
			"event ppkit/page_pool_put_page (id 1501): field direct is 4 bytes (u32), want [1]"},
		{"a kretprobe", "ppkit/page_pool_put_page", "__probe_ip", "__probe_func",
			"event ppkit/page_pool_put_page (id 1501) is a kretprobe (field __probe_func)"},
		{"another fetcharg name", "ppkit/arch_sync_dma_for_device", "u64 paddr;", "u64 addr;",
			"event ppkit/arch_sync_dma_for_device (id 1500) has no field paddr, which gomodel reads"},
		{"signed dir", "ppkit/arch_sync_dma_for_device", "s32 dir;\toffset:32;\tsize:4;\tsigned:1", "",
			"field dir is signed (s32), want the unsigned type of harness/config/trace-events.patch"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fm := testFormatSet(t)
			text := testFormats[c.path]
			if c.new == "" { // a type and its sign
				text = strings.Replace(text, "u32 dir;\toffset:32;\tsize:4;\tsigned:0", c.old, 1)
			} else {
				text = strings.Replace(text, c.old, c.new, 1)
			}
			bad, err := ParseFormat(strings.NewReader(text), "ppkit", "f")
			if err != nil {
				t.Fatal(err)
			}
			fm.byID[bad.ID] = bad
			_, _, err = Replay(readers(good), fm, gomodel.TraceOptions{})
			var de *DecodeError
			if !errors.As(err, &de) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a *DecodeError with %q", err, c.want)
			}
		})
	}
	// A field gomodel reads with the wrong size is an error when the event is decoded.
	fm := testFormatSet(t)
	bad, _ := ParseFormat(strings.NewReader(strings.Replace(testFormats["kmem/mm_page_free"], "order;\toffset:16;\tsize:4", "order;\toffset:16;\tsize:2", 1)), "kmem", "f")
	fm.byID[bad.ID] = bad
	_, _, err := Replay(readers(pages(testFormatSet(t), []tev{{ts: 1, name: "mm_page_free"}}, nil)), fm, gomodel.TraceOptions{})
	if err == nil || !strings.Contains(err.Error(), "field order is 2 bytes") {
		t.Fatalf("got %v", err)
	}
}

func sprint(a ...any) string {
	var b strings.Builder
	for i, x := range a {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strings.TrimSpace(strings.ReplaceAll(fmtV(x), "\n", " ")))
	}
	return b.String()
}

// The collector's tar of the board's events directory is made inside it (`tar cf - .`); the
// golden captures' beside it (events/...): both read to the same formats, and a broken tar is
// an error.
func TestReadFormatsTar(t *testing.T) {
	golden := testfile.Gunzip(t, "testdata/multicast-kprobes/events.tar.gz")
	beside, err := ReadFormatsTar(bytes.NewReader(golden), "events/")
	if err != nil {
		t.Fatal(err)
	}
	var inside bytes.Buffer
	tr, tw := tar.NewReader(bytes.NewReader(golden)), tar.NewWriter(&inside)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name, ok := strings.CutPrefix(h.Name, "events/")
		if !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		h.Name = "./" + name
		tw.WriteHeader(h)
		io.Copy(tw, tr)
	}
	tw.Close()
	fm, err := ReadFormatsTar(&inside, "")
	if err != nil {
		t.Fatal(err)
	}
	if fm.Page != beside.Page || len(fm.byID) != len(beside.byID) || fm.ByID(290) == nil || fm.ByID(290).Name != beside.ByID(290).Name {
		t.Fatalf("inside: %d ids, beside: %d", len(fm.byID), len(beside.byID))
	}
	if _, err := ReadFormatsTar(strings.NewReader(strings.Repeat("not a tar ", 100)), ""); err == nil {
		t.Fatal("a broken tar read without an error")
	}
}

// Replay takes the records of the CPU it has just read in runs, straight from its page, while
// they come before every other CPU's next one (Merger.run); the order must stay the merge's,
// timestamp first and the lower CPU on a tie. The holds of one pool carry its counter, so a
// hold out of that order shows as a jump of the counter (a note). Here each timestamp is
// shared by a run of CPU 0's holds and then one of CPU 1's, with runs of one CPU across
// timestamps and pages, and the counter goes up by one in merged order.
func TestReplayRunsKeepMergeOrder(t *testing.T) {
	fm := testFormatSet(t)
	const pool = 0xffffff8001a5b000
	for seed := int64(1); seed <= 20; seed++ {
		rnd := rand.New(rand.NewSource(seed))
		var evs []tev
		ts, ties := uint64(1e9), 0
		for len(evs) < 3000 {
			ts += uint64(1 + rnd.Intn(3)) // at least 1 ns: a new timestamp
			n0, n1 := rnd.Intn(4), rnd.Intn(4)
			if rnd.Intn(3) == 0 {
				n0 = 0 // CPU 1 alone for a while
			}
			if n0 > 0 && n1 > 0 {
				ties++
			}
			for i := 0; i < n0+n1; i++ {
				cpu := 0
				if i >= n0 {
					cpu = 1
				}
				k := uint32(len(evs) + 1)
				evs = append(evs, tev{cpu: cpu, ts: ts, name: "page_pool_state_hold", pool: pool, pfn: 0x40000 + uint64(k), count: k, flags: 0x10})
			}
		}
		perCPU, text := split(evs)
		want, got, _ := replayBoth(t, fm, perCPU, text)
		if len(got.Notes) != 0 || len(got.Pools) != 1 || got.Pools[0].Holds != uint64(len(evs)) || got.Pools[0].HoldCounter != uint32(len(evs)) {
			t.Fatalf("seed %d: holds out of merge order: %d pools, notes %q", seed, len(got.Pools), got.Notes)
		}
		if ties < 100 {
			t.Fatalf("seed %d: only %d timestamps shared by both CPUs", seed, ties)
		}
		sameReport(t, want, got, 4)
	}
}
