package gomodel

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// PageEvent is one trace event that names a page (pfn=), as a report shows it: where in the
// trace, who (task and CPU), in which context, and what.
type PageEvent struct {
	Line      int    `json:"line"`
	Timestamp string `json:"timestamp"`
	Task      string `json:"task"`
	CPU       int    `json:"cpu"`
	// Context is the ftrace irq-info column decoded: "process", "softirq", "hardirq",
	// "hardirq-in-softirq", "nmi"; "" when the trace has no such column.
	Context string `json:"context,omitempty"`
	Event   string `json:"event"`
	Fields  string `json:"fields"`
}

// PageHistories reads a text trace once and returns, for each pfn asked for, every event that
// names it (pfn=N or pfn=0xN) on a line up to and including upto[pfn] (0: to the end), oldest
// first, in file order — the whole life of a page from its allocation by a pool to the
// violation the model reported, where TraceReport's violations keep only the last few events.
func PageHistories(r io.Reader, upto map[uint64]int) (map[uint64][]PageEvent, error) {
	out := map[uint64][]PageEvent{}
	if len(upto) == 0 {
		return out, nil
	}
	last := 0
	for _, l := range upto {
		if l == 0 {
			last = -1
			break
		}
		last = max(last, l)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if last > 0 && n > last {
			break
		}
		b := sc.Bytes()
		i := bytes.Index(b, []byte("pfn="))
		if i < 0 {
			continue
		}
		pfn, ok := parsePfn(b[i+4:])
		if !ok {
			continue
		}
		lim, want := upto[pfn]
		if !want || (lim > 0 && n > lim) {
			continue
		}
		ev, ok := parsePageEvent(b)
		if !ok {
			continue
		}
		ev.Line = n
		out[pfn] = append(out[pfn], ev)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("page history: %w", err)
	}
	return out, nil
}

// parsePfn reads the value of a pfn= field, decimal or 0x-hex.
func parsePfn(b []byte) (uint64, bool) {
	end := bytes.IndexAny(b, " \t\r")
	if end < 0 {
		end = len(b)
	}
	v, err := strconv.ParseUint(string(b[:end]), 0, 64)
	return v, err == nil
}

// parsePageEvent splits a trace line into its columns ("TASK-PID [CPU] FLAGS TIMESTAMP: EVENT:
// FIELDS"), with the same tolerance for optional columns as CheckTrace.
func parsePageEvent(b []byte) (PageEvent, bool) {
	name, fields, ts, ok := splitEventLine(b)
	if !ok {
		return PageEvent{}, false
	}
	ev := PageEvent{Timestamp: string(ts), Event: string(name), Fields: strings.TrimSpace(string(fields))}
	open := bytes.IndexByte(b, '[')
	closing := bytes.IndexByte(b, ']')
	if open < 0 || closing < open {
		return PageEvent{}, false
	}
	ev.Task = strings.TrimSpace(string(b[:open]))
	if k := strings.Index(ev.Task, " ("); k >= 0 { // the optional "(TGID)" column
		ev.Task = strings.TrimSpace(ev.Task[:k])
	}
	ev.CPU, _ = strconv.Atoi(string(b[open+1 : closing]))
	// The irq-info column sits between the CPU and the timestamp: 4 or 5 characters such as
	// "..s." or "d.h1.".
	between := strings.Fields(string(b[closing+1 : bytes.Index(b, ts)]))
	if len(between) == 1 && len(between[0]) >= 4 && len(between[0]) <= 5 &&
		strings.Trim(between[0], ".dDXbnNpshHzZ0123456789") == "" {
		ev.Context = irqContext(between[0])
	}
	return ev, true
}

// irqContext decodes ftrace's hardirq/softirq character, the third of the irq-info flags.
func irqContext(flags string) string {
	if len(flags) < 3 {
		return ""
	}
	switch flags[2] {
	case 'Z', 'z':
		return "nmi"
	case 'H':
		return "hardirq-in-softirq"
	case 'h':
		return "hardirq"
	case 's':
		return "softirq"
	case '.':
		return "process"
	}
	return ""
}
