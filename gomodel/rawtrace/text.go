package rawtrace

import (
	"bufio"
	"fmt"
	"io"

	"github.com/ppkit/ppkit/gomodel"
)

// WriteText writes the CPUs' pages as ftrace text, one line a record in the merged order that
// Replay uses, so that line N of the text is the event a report of Replay calls line N: the
// text the raw transport writes only when a person will read it (the report's page
// histories, `ppkit model check-trace`). The columns are the trace file's (TASK-PID, [CPU],
// irq-info, timestamp, event: fields) with these differences: the task is "<...>", because
// the task names live in the kernel's saved_cmdlines and not in the pages; a page free's
// page= is "?" (the kernel prints vmemmap + pfn, and the pages do not say where vmemmap is);
// the kprobe events of older traces print no probed function; an event gomodel does not read
// shows its name only. gomodel's text parser reads it back to the same
// report (the golden tests check that).
func WriteText(w io.Writer, streams []io.Reader, fm *Formats) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	m, d := NewMerger(streams, &fm.Page), NewDecoder(fm)
	var ev gomodel.Event
	var line []byte
	for {
		rec, err := m.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := d.Decode(rec, &ev); err != nil {
			return err
		}
		name := d.name(rec)
		if ev.Kind == gomodel.EventMarker {
			name = "tracing_mark_write" // ftrace/print's name in the text
		}
		line = appendText(line[:0], &ev, name)
		if _, err := bw.Write(line); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// name is the event name of a record (its format's), "" for a gap.
func (d *Decoder) name(rec *Record) string {
	if rec.Data == nil || len(rec.Data) < 2 {
		return ""
	}
	if f := d.fm.ByID(int(rec.Data[0]) | int(rec.Data[1])<<8); f != nil {
		return f.Name
	}
	return ""
}

// appendText appends ev as a trace file line (print_trace_line() in kernel/trace/trace.c and
// the events' TP_printk formats of 5.10).
func appendText(b []byte, ev *gomodel.Event, name string) []byte {
	if ev.Kind == gomodel.EventLost {
		if ev.Lost > 0 {
			return fmt.Appendf(b, "CPU:%d [LOST %d EVENTS]\n", ev.CPU, ev.Lost)
		}
		return fmt.Appendf(b, "CPU:%d [LOST EVENTS]\n", ev.CPU)
	}
	us := ev.TS / 1000
	b = fmt.Appendf(b, "%16s-%-7d [%03d] %s %5d.%06d: %s:", "<...>", ev.PID, ev.CPU, latFlags(ev.Flags, ev.PreemptCount), us/1e6, us%1e6, name)
	switch ev.Kind {
	case gomodel.EventStateHold:
		b = fmt.Appendf(b, " page_pool=%016x page=%016x pfn=%d hold=%d", ev.Pool, ev.Page, ev.PFN, ev.Count)
	case gomodel.EventStateRelease:
		b = fmt.Appendf(b, " page_pool=%016x page=%016x pfn=%d release=%d", ev.Pool, ev.Page, ev.PFN, ev.Count)
	case gomodel.EventPoolRelease:
		b = fmt.Appendf(b, " page_pool=%016x inflight=%d hold=%d release=%d cnt=%d", ev.Pool, ev.Inflight, ev.Hold, ev.Release, ev.Cnt)
	case gomodel.EventUpdateNid:
		b = fmt.Appendf(b, " page_pool=%016x pool_nid=%d new_nid=%d", ev.Pool, ev.PoolNid, ev.NewNid)
	case gomodel.EventSkbReturn:
		b = fmt.Appendf(b, " page_pool=%016x page=%016x pfn=%d", ev.Pool, ev.Page, ev.PFN)
	case gomodel.EventPageFree, gomodel.EventPageFreeBatched:
		b = fmt.Appendf(b, " page=? pfn=%d order=%d", ev.PFN, ev.Order)
	case gomodel.EventDMASync:
		b = fmt.Appendf(b, " paddr=%#x size=%d dir=%d", ev.Addr, ev.Size, ev.Dir)
	case gomodel.EventPut:
		b = fmt.Appendf(b, " dma=%#x sync=%d direct=%d", ev.Addr, ev.Sync, ev.Direct)
	case gomodel.EventMarker:
		// The kernel prints a marker as written, newlines inside it too; here an event stays
		// one line (line N is the replay's line N), so those are spaces.
		m := ev.Marker
		if n := len(m); n > 0 && m[n-1] == '\n' {
			m = m[:n-1]
		}
		b = append(b, ' ')
		for _, c := range m {
			if c == '\n' {
				c = ' '
			}
			b = append(b, c)
		}
	}
	return append(b, '\n')
}

// latFlags is the irq-info column (trace_print_lat_fmt() in kernel/trace/trace_output.c):
// irqs-off, need-resched, hardirq/softirq, preempt depth.
func latFlags(flags, preempt uint8) string {
	const irqsOff, noSupport, needResched, preemptResched = 0x01, 0x02, 0x04, 0x20
	c := [4]byte{'.', '.', '.', '.'}
	switch {
	case flags&irqsOff != 0:
		c[0] = 'd'
	case flags&noSupport != 0:
		c[0] = 'X'
	}
	switch nr, pr := flags&needResched != 0, flags&preemptResched != 0; {
	case nr && pr:
		c[1] = 'N'
	case nr:
		c[1] = 'n'
	case pr:
		c[1] = 'p'
	}
	nmi, hard, soft := flags&gomodel.TraceFlagNMI != 0, flags&gomodel.TraceFlagHardirq != 0, flags&gomodel.TraceFlagSoftirq != 0
	switch {
	case nmi && hard:
		c[2] = 'Z'
	case nmi:
		c[2] = 'z'
	case hard && soft:
		c[2] = 'H'
	case hard:
		c[2] = 'h'
	case soft:
		c[2] = 's'
	}
	if preempt != 0 {
		c[3] = "0123456789abcdef"[preempt&15]
	}
	return string(c[:])
}
