package rawtrace

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/internal/testfile"
)

// The golden captures in testdata/NAME/ come from the real guest (tests/procedure/rawcapture_test.go):
// one buffer saved as the text of tracefs's trace file (trace.txt.gz) and as the binary pages
// of every per_cpu/cpuN/trace_pipe_raw (cpuN.raw.gz), with per_cpu/cpuN/stats and the format
// files (events.tar.gz). NAME is the procedure, with a suffix for a variant of the capture.

type capture struct {
	name, procedure string
	fm              *Formats
	cpus            [][]byte
	text            []byte
	overrun         []int64 // each CPU's "overrun:" stat
}

func loadCapture(t testing.TB, dir string) *capture {
	t.Helper()
	c := &capture{name: filepath.Base(dir)}
	c.procedure, _, _ = strings.Cut(c.name, "-")
	var err error
	if c.fm, err = ReadFormatsTar(bytes.NewReader(testfile.Gunzip(t, filepath.Join(dir, "events.tar.gz"))), "events/"); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		p := filepath.Join(dir, fmt.Sprintf("cpu%d.raw.gz", i))
		if _, err := os.Stat(p); err != nil {
			break
		}
		c.cpus = append(c.cpus, testfile.Gunzip(t, p))
		st, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("cpu%d.stats", i)))
		if err != nil {
			t.Fatal(err)
		}
		c.overrun = append(c.overrun, -1)
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "overrun: "); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				if err != nil {
					t.Fatalf("cpu%d.stats: %q", i, l)
				}
				c.overrun[i] = n
			}
		}
		if c.overrun[i] < 0 {
			t.Fatalf("cpu%d.stats: no overrun line", i)
		}
	}
	if len(c.cpus) == 0 {
		t.Fatalf("%s: no cpuN.raw.gz", dir)
	}
	c.text = testfile.Gunzip(t, filepath.Join(dir, "trace.txt.gz"))
	return c
}

func captures(t testing.TB) []*capture {
	dirs, _ := filepath.Glob("testdata/*/events.tar.gz")
	if len(dirs) == 0 {
		t.Fatal("no golden captures in testdata/*/ (tests/procedure/rawcapture_test.go makes them)")
	}
	var out []*capture
	for _, d := range dirs {
		out = append(out, loadCapture(t, filepath.Dir(d)))
	}
	return out
}

func (c *capture) readers() []io.Reader {
	var rs []io.Reader
	for _, b := range c.cpus {
		rs = append(rs, bytes.NewReader(b))
	}
	return rs
}

// textEvent is what a line of the trace file says, column by column.
type textEvent struct {
	task   string
	pid    int
	cpu    int
	flags  string
	ts     string
	name   string
	fields string
}

func parseTextLine(l string) (textEvent, bool) {
	var e textEvent
	i := strings.Index(l, "] ")
	j := strings.LastIndex(l[:max(i, 0)], " [")
	if i < 0 || j < 0 {
		return e, false
	}
	head := strings.TrimSpace(l[:j])
	d := strings.LastIndexByte(head, '-')
	e.task = head[:d]
	e.pid, _ = strconv.Atoi(head[d+1:])
	e.cpu, _ = strconv.Atoi(l[j+2 : i])
	rest := l[i+2:]
	e.flags, rest, _ = strings.Cut(rest, " ")
	e.ts, rest, _ = strings.Cut(strings.TrimSpace(rest), ": ")
	e.name, e.fields, _ = strings.Cut(rest, ": ")
	return e, true
}

// latFmt is trace_print_lat_fmt() (kernel/trace/trace_output.c): the text's irq-info column.
func latFmt(flags, preempt uint8) string {
	irqs := byte('.')
	switch {
	case flags&0x01 != 0:
		irqs = 'd'
	case flags&0x02 != 0:
		irqs = 'X'
	}
	resched := map[uint8]byte{0x04 | 0x20: 'N', 0x04: 'n', 0x20: 'p', 0: '.'}[flags&(0x04|0x20)]
	nmi, hard, soft := flags&0x40 != 0, flags&0x08 != 0, flags&0x10 != 0
	hs := byte('.')
	switch {
	case nmi && hard:
		hs = 'Z'
	case nmi:
		hs = 'z'
	case hard && soft:
		hs = 'H'
	case hard:
		hs = 'h'
	case soft:
		hs = 's'
	}
	p := "."
	if preempt != 0 {
		p = fmt.Sprintf("%x", preempt)
	}
	return string([]byte{irqs, resched, hs}) + p
}

// modelFields is what gomodel takes from an event, written as the text writes it.
func modelFields(ev *gomodel.Event) string {
	switch ev.Kind {
	case gomodel.EventStateHold:
		return fmt.Sprintf("page_pool=%016x pfn=%d hold=%d", ev.Pool, ev.PFN, ev.Count)
	case gomodel.EventStateRelease:
		return fmt.Sprintf("page_pool=%016x pfn=%d release=%d", ev.Pool, ev.PFN, ev.Count)
	case gomodel.EventPoolRelease:
		return fmt.Sprintf("page_pool=%016x inflight=%d hold=%d release=%d cnt=%d", ev.Pool, ev.Inflight, ev.Hold, ev.Release, ev.Cnt)
	case gomodel.EventSkbReturn:
		return fmt.Sprintf("page_pool=%016x pfn=%d", ev.Pool, ev.PFN)
	case gomodel.EventPageFree:
		return fmt.Sprintf("pfn=%d order=%d", ev.PFN, ev.Order)
	case gomodel.EventPageFreeBatched:
		return fmt.Sprintf("pfn=%d", ev.PFN)
	case gomodel.EventDMASync:
		return fmt.Sprintf("paddr=0x%x size=%d dir=%d", ev.Addr, ev.Size, ev.Dir)
	case gomodel.EventPut:
		return fmt.Sprintf("dma=0x%x sync=%d direct=%d", ev.Addr, ev.Sync, ev.Direct)
	case gomodel.EventMarker:
		return string(bytes.TrimRight(ev.Marker, "\n"))
	}
	return ""
}

// textModelFields keeps the fields of a text line that modelFields writes (not the page=
// pointers, which gomodel does not read, nor a kprobe's "(SYMBOL+0xOFF/0xSIZE)", which the
// pages hold as the address __probe_ip).
func textModelFields(name, fields string) string {
	if name == "tracing_mark_write" {
		return strings.TrimRight(fields, " ")
	}
	var keep []string
	for i, f := range strings.Fields(fields) {
		kprobeSym := i == 0 && strings.HasPrefix(f, "(") && strings.HasSuffix(f, ")") &&
			(name == "arch_sync_dma_for_device" || name == "page_pool_put_page")
		if !strings.HasPrefix(f, "page=") && !kprobeSym {
			keep = append(keep, f)
		}
	}
	s := strings.Join(keep, " ")
	if name == "mm_page_free_batched" {
		s = strings.TrimSuffix(s, " order=0")
	}
	return s
}

// TestGoldenEventForEvent: every event of the pages is the text's line of the same place in
// the trace file: CPU, PID, irq-info flags, timestamp, event, and the fields gomodel reads.
func TestGoldenEventForEvent(t *testing.T) {
	for _, c := range captures(t) {
		t.Run(c.name, func(t *testing.T) {
			var lines []textEvent
			sc := bufio.NewScanner(bytes.NewReader(c.text))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				l := sc.Text()
				if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" {
					continue
				}
				e, ok := parseTextLine(l)
				if !ok {
					t.Fatalf("text line %q", l)
				}
				lines = append(lines, e)
			}
			m, d := NewMerger(c.readers(), &c.fm.Page), NewDecoder(c.fm)
			var ev gomodel.Event
			n, kinds := 0, map[string]int{}
			for {
				rec, err := m.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if err := d.Decode(rec, &ev); err != nil {
					t.Fatal(err)
				}
				if rec.Data == nil {
					continue // a gap: the trace file's iterator does not show the overwritten events
				}
				if n >= len(lines) {
					t.Fatalf("the pages hold more events than the text's %d", len(lines))
				}
				f := c.fm.ByID(int(rec.Data[0]) | int(rec.Data[1])<<8)
				name := f.Name
				if f.System == "ftrace" && f.Name == "print" {
					name = "tracing_mark_write"
				}
				want := lines[n]
				got := textEvent{task: want.task, pid: int(ev.PID), cpu: ev.CPU, flags: latFmt(ev.Flags, ev.PreemptCount),
					ts: fmt.Sprintf("%d.%06d", ev.TS/1e9, ev.TS%1e9/1e3), name: name, fields: want.fields}
				if ev.Kind != gomodel.EventOther {
					got.fields = modelFields(&ev)
					want.fields = textModelFields(want.name, want.fields)
				}
				if got != want {
					t.Fatalf("event %d:\n text %+v\n raw  %+v", n, want, got)
				}
				kinds[name]++
				n++
			}
			if n != len(lines) {
				t.Fatalf("%d events in the pages, %d in the text", n, len(lines))
			}
			t.Logf("%d events equal: %v", n, kinds)
		})
	}
}

// TestGoldenReport: the model's verdict and figures from the pages equal those from the text,
// and the lost events the pages count are the kernel's overrun count.
func TestGoldenReport(t *testing.T) {
	for _, c := range captures(t) {
		t.Run(c.name, func(t *testing.T) {
			// Per CPU, the gaps the pages flag: ring_buffer_read_page() stores the overruns
			// since the last read on the first page read after them, when it has room.
			stored, unknown := make([]int64, len(c.cpus)), make([]int, len(c.cpus))
			m := NewMerger(c.readers(), &c.fm.Page)
			for {
				rec, err := m.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if rec.Data == nil && rec.Lost > 0 {
					stored[rec.CPU] += rec.Lost
				} else if rec.Data == nil {
					unknown[rec.CPU]++
				}
			}
			var overrun int64
			for i := range c.cpus {
				overrun += c.overrun[i]
				switch {
				case unknown[i] == 0 && stored[i] != c.overrun[i]:
					t.Errorf("cpu%d: the pages store %d lost events, the stats say %d overruns", i, stored[i], c.overrun[i])
				case unknown[i] > 0 && stored[i] >= c.overrun[i]:
					t.Errorf("cpu%d: a gap without a count, but the stored %d already make the stats' %d", i, stored[i], c.overrun[i])
				}
			}
			opts := gomodel.TraceOptions{Procedure: c.procedure}
			want, werr := gomodel.ReadTrace(bytes.NewReader(c.text), opts)
			got, st, gerr := Replay(c.readers(), c.fm, opts)
			if fmt.Sprint(werr) != fmt.Sprint(gerr) {
				t.Fatalf("text: %v; raw: %v", werr, gerr)
			}
			if want == nil || got == nil {
				t.Fatalf("no report: text %v, raw %v", werr, gerr)
			}
			header := 0
			for _, l := range strings.Split(strings.TrimSuffix(string(c.text), "\n"), "\n") {
				if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" {
					header++
				}
			}
			// A capture with the events of gomodel.TraceEventsSystem (or the kprobe events of
			// that group before them) must show both, or it tests nothing of their decoding;
			// sameReport compares their counts.
			for _, f := range c.fm.byID {
				if f != nil && f.System == gomodel.TraceEventsSystem && (got.DMASyncs == 0 || got.Puts == 0) {
					t.Errorf("the capture has the %s formats but %d syncs and %d puts", f.System, got.DMASyncs, got.Puts)
					break
				}
			}
			if overrun == 0 {
				sameReport(t, want, got, header)
			} else {
				// The trace file does not show the overwritten events (its iterator only notes
				// pages overwritten while it reads); the pages flag them. Apart from the gaps
				// and what the model forgets at them, the reports agree.
				if want.LostEvents != 0 || got.LostEvents != st.Gaps || got.Figures.LostEvents != st.Lost+int64(st.LostUnknown) {
					t.Errorf("gaps: raw %d markers and %d lost, text %d markers", got.LostEvents, got.Figures.LostEvents, want.LostEvents)
				}
				w, g := want.Figures, got.Figures
				w.LostEvents, g.LostEvents = 0, 0
				if got.Events != want.Events || got.Ignored != want.Ignored || w != g {
					t.Errorf("figures: text %+v (%d events), raw %+v (%d events)", want.Figures, want.Events, got.Figures, got.Events)
				}
			}
			// The text WriteText makes of the pages reads back to Replay's report, line for line.
			var text bytes.Buffer
			if err := WriteText(&text, c.readers(), c.fm); err != nil {
				t.Fatal(err)
			}
			back, berr := gomodel.ReadTrace(bytes.NewReader(text.Bytes()), opts)
			if fmt.Sprint(berr) != fmt.Sprint(gerr) || back == nil {
				t.Fatalf("written text: %v; raw: %v", berr, gerr)
			}
			sameReport(t, back, got, 0)
			if back.Figures != got.Figures || back.Lines != got.Lines {
				t.Errorf("written text: figures %+v in %d lines, raw %+v in %d lines", back.Figures, back.Lines, got.Figures, got.Lines)
			}
			t.Logf("%d pages, %d events, %d lost stored + %d gaps without a count (overruns %v); verdict passed=%v, %d violations, figures %+v; kprobes: %d syncs, %d puts (%d direct)",
				st.Pages, st.Events, st.Lost, st.LostUnknown, c.overrun, got.Passed, len(got.Violations), got.Figures, got.DMASyncs, got.Puts, got.DirectPuts)
		})
	}
}

// BenchmarkGolden is Replay and ReadTrace on the real capture of multicast (its mix of
// events: page frees and skb events the model ignores, holds and releases at the pools' open
// and close), in one run.
func BenchmarkGolden(b *testing.B) {
	c := loadCapture(b, "testdata/multicast")
	n := 0
	for _, l := range strings.Split(string(c.text), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			n++
		}
	}
	opts := gomodel.TraceOptions{Procedure: c.procedure}
	for _, mode := range []string{"pages", "text"} {
		b.Run(mode, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := threadCPU()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var rep *gomodel.TraceReport
				var err error
				if mode == "pages" {
					rep, _, err = Replay(c.readers(), c.fm, opts)
				} else {
					rep, err = gomodel.ReadTrace(bytes.NewReader(c.text), opts)
				}
				if err != nil || !rep.Passed {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			total := float64(n) * float64(b.N)
			b.ReportMetric(total/b.Elapsed().Seconds()/1e6, "Mevents/s")
			if cpu := threadCPU() - cpu0; cpu > 0 {
				b.ReportMetric(total/cpu.Seconds()/1e6, "Mevents/cpu-s")
			}
		})
	}
}
