package harness

import (
	"bytes"
	"regexp"
	"strings"
)

// Report is one kernel report found in a console log.
type Report struct {
	Title string `json:"title"`
	// Text is the report's full text, timestamps kept: from its header (or the "cut here" line
	// before it) to its end marker, the next report, or a length limit.
	Text string `json:"report"`
	// StartLine and EndLine are 0-based line numbers in the console, EndLine exclusive.
	StartLine int `json:"start_line"`
	EndLine   int `json:"end_line"`
}

// maxReportLines bounds a report whose end marker never comes (the guest died mid-report).
const maxReportLines = 200

// reportKind is one family of kernel reports: how its header looks and how its title is made.
type reportKind struct {
	header *regexp.Regexp
	// continues: the header belongs to a report already open (the panic after an oops, the
	// "Internal error" after "Unable to handle kernel ..."), so it does not start a new one.
	continues bool
	// single: the report is its header line only (a one-line warning such as page_pool's).
	single bool
	title  func(m []string, body []string) string
}

var (
	// printk prefix: "[   12.345678] ", optionally with a caller id "[    T1] " or "[  C0] ".
	printkPrefix = regexp.MustCompile(`^\s*(?:<\d+>)?\[\s*\d+\.\d+\](?:\[\s*[TC]\d+\])?\s?`)
	// a stack frame on arm64 ("  skb_release_data+0x1c/0x2a0") or with x86's "? " and "RIP:".
	frameRe = regexp.MustCompile(`^\s*(?:\? )?([A-Za-z_][A-Za-z0-9_.]*)\+0x[0-9a-f]+/0x[0-9a-f]+`)
	pcRe    = regexp.MustCompile(`^\s*pc\s*:\s*([A-Za-z_][A-Za-z0-9_.]*)\+0x[0-9a-f]+/0x[0-9a-f]+`)
	endRe   = regexp.MustCompile(`---\[ end (?:trace [0-9a-f]+|Kernel panic[^\]]*) \]---`)
	cutRe   = regexp.MustCompile(`^-+\[ cut here \]-+$|^={20,}$`)
	sepRe   = regexp.MustCompile(`^={20,}\s*$`)
)

// frames that say where the kernel waited or reported, not where the bug is.
var genericFrames = map[string]bool{
	"__schedule": true, "schedule": true, "schedule_timeout": true, "io_schedule": true,
	"__switch_to": true, "schedule_preempt_disabled": true, "__mutex_lock": true,
	"__mutex_lock_slowpath": true, "mutex_lock": true, "dump_backtrace": true, "show_stack": true,
	"dump_stack": true, "dump_stack_lvl": true, "panic": true, "__warn": true, "warn_slowpath_fmt": true,
	"report_bug": true, "bug_handler": true, "brk_handler": true, "call_break_hook": true,
	"do_debug_exception": true, "el1_dbg": true, "el1_sync_handler": true, "el1_sync": true,
	"el1h_64_sync": true, "die": true, "arm64_notify_die": true, "do_mem_abort": true,
	"el1_abort": true, "__do_kernel_fault": true, "do_page_fault": true, "do_translation_fault": true,
	"kasan_report": true, "__kasan_report": true, "print_address_description": true,
	"__asan_load8": true, "__asan_store8": true, "__asan_load4": true, "__asan_store4": true,
	"check_memory_region": true, "kasan_check_range": true, "lockdep_rcu_suspicious": true,
	"___might_sleep": true, "__might_sleep": true, "bad_page": true, "rcu_dump_cpu_stacks": true,
	"print_cpu_stall": true, "check_cpu_stall": true, "rcu_sched_clock_irq": true,
	"update_process_times": true, "tick_sched_handle": true, "tick_sched_timer": true,
	"__hrtimer_run_queues": true, "hrtimer_interrupt": true, "arch_timer_handler_phys": true,
	"handle_percpu_devid_irq": true, "generic_handle_irq": true, "__handle_domain_irq": true,
	"gic_handle_irq": true, "el1_irq": true, "watchdog_timer_fn": true, "arch_cpu_idle": true,
	"default_idle_call": true, "do_idle": true, "cpu_startup_entry": true, "refcount_warn_saturate": true,
	// seen in real 5.10 arm64 reports (testdata/console/real-lkdtm-*.log): the RCU stall's task
	// dump, the periodic tick, scheduling-while-atomic's reporter, lockdep's own frames.
	"sched_show_task": true, "dump_cpu_task": true, "tick_periodic": true, "tick_handle_periodic": true,
	"arch_timer_handler_virt": true, "__schedule_bug": true, "__lock_acquire": true, "lock_acquire": true,
	"mutex_lock_nested": true,
}

// isGenericFrame: genericFrames, and the refcount_t helpers a refcount report passes through.
func isGenericFrame(name string) bool {
	return genericFrames[name] || strings.HasPrefix(name, "refcount_") || strings.HasPrefix(name, "__refcount_")
}

func firstFrame(body []string) string {
	for _, l := range body {
		if m := pcRe.FindStringSubmatch(l); m != nil && !isGenericFrame(m[1]) {
			return m[1]
		}
	}
	inTrace := false
	for _, l := range body {
		if strings.Contains(l, "Call trace:") || strings.Contains(l, "Call Trace:") {
			inTrace = true
			continue
		}
		if !inTrace {
			continue
		}
		if m := frameRe.FindStringSubmatch(l); m != nil && !isGenericFrame(m[1]) {
			return m[1]
		}
	}
	return ""
}

func withFrame(title string, body []string) string {
	if f := firstFrame(body); f != "" {
		return title + " in " + f
	}
	return title
}

func constTitle(t string) func([]string, []string) string {
	return func([]string, []string) string { return t }
}

var kasanAccessRe = regexp.MustCompile(`^(Read|Write) of size \d+`)

// reportKinds is checked in order for every console line; the first match wins.
var reportKinds = []reportKind{
	{header: regexp.MustCompile(`^BUG: KASAN: ([a-z0-9 -]+?) in ([A-Za-z0-9_.]+)`), title: func(m, body []string) string {
		t := "KASAN: " + m[1]
		for _, l := range body {
			if a := kasanAccessRe.FindStringSubmatch(l); a != nil {
				t += " " + a[1]
				break
			}
		}
		return t + " in " + m[2]
	}},
	{header: regexp.MustCompile(`^BUG: KFENCE: ([a-z0-9- ]+?) in ([A-Za-z0-9_.]+)`), title: func(m, _ []string) string {
		return "KFENCE: " + m[1] + " in " + m[2]
	}},
	{header: regexp.MustCompile(`^UBSAN: ([a-z0-9-]+) in (\S+)`), title: func(m, body []string) string {
		return withFrame("UBSAN: "+m[1], body)
	}},
	{header: regexp.MustCompile(`^WARNING: possible circular locking dependency detected`), title: func(_, body []string) string {
		return "possible deadlock (circular locking dependency)"
	}},
	{header: regexp.MustCompile(`^WARNING: possible recursive locking detected`), title: constTitle("possible deadlock (recursive locking)")},
	{header: regexp.MustCompile(`^WARNING: inconsistent lock state`), title: constTitle("inconsistent lock state")},
	// lockdep's other reports: "[ BUG: Invalid wait context ]" and its "WARNING: ...!" lines.
	{header: regexp.MustCompile(`^\[ BUG: (.+?) \]$`), title: func(m, body []string) string {
		return withFrame("BUG: "+m[1], body)
	}},
	{header: regexp.MustCompile(`^WARNING: (bad unlock balance detected|held lock freed|lock held when returning to user space|nested lock was not taken|bad contention detected)!`), title: func(m, body []string) string {
		return withFrame("WARNING: "+m[1], body)
	}},
	{header: regexp.MustCompile(`^WARNING: suspicious RCU usage`), title: func(_, body []string) string {
		return withFrame("suspicious RCU usage", body)
	}},
	{header: regexp.MustCompile(`^WARNING: (?:CPU: \d+ PID: \d+ )?at (?:\S+:\d+ )?([A-Za-z0-9_.]+)\+0x`), title: func(m, body []string) string {
		if m[1] == "refcount_warn_saturate" {
			return withFrame("refcount bug", body)
		}
		return "WARNING in " + m[1]
	}},
	{header: regexp.MustCompile(`^WARNING: (?:CPU: \d+ PID: \d+ )?at (\S+)`), title: func(m, body []string) string {
		return withFrame("WARNING", body)
	}},
	{header: regexp.MustCompile(`^kernel BUG at (\S+?)!?$`), title: func(m, body []string) string {
		if f := firstFrame(body); f != "" {
			return "kernel BUG in " + f
		}
		return "kernel BUG at " + m[1]
	}},
	{header: regexp.MustCompile(`^Unable to handle kernel (NULL pointer dereference|paging request|execute from non-executable memory|write to read-only memory|access to user memory[a-z ]*)`), title: func(m, body []string) string {
		return withFrame("BUG: unable to handle kernel "+m[1], body)
	}},
	{header: regexp.MustCompile(`^Internal error: (.*?)(?::\s*[0-9a-f]+)? \[#\d+\]`), continues: true, title: func(m, body []string) string {
		return withFrame("Internal error: "+m[1], body)
	}},
	{header: regexp.MustCompile(`^(?:watchdog: )?BUG: soft lockup - CPU#\d+ stuck`), title: func(_, body []string) string {
		return withFrame("BUG: soft lockup", body)
	}},
	{header: regexp.MustCompile(`^(?:watchdog: )?Watchdog detected hard LOCKUP on cpu \d+`), title: func(_, body []string) string {
		return withFrame("hard LOCKUP", body)
	}},
	{header: regexp.MustCompile(`^(?:rcu: )?INFO: rcu_(?:sched|preempt|bh) (?:self-detected stall on CPU|detected stalls? on CPUs/tasks)`), title: func(_, body []string) string {
		return withFrame("INFO: rcu detected stall", body)
	}},
	{header: regexp.MustCompile(`^INFO: task \S+ blocked for more than \d+ seconds`), title: func(_, body []string) string {
		return withFrame("INFO: task hung", body)
	}},
	{header: regexp.MustCompile(`^BUG: Bad page state in process`), title: func(_, body []string) string {
		for _, l := range body {
			if r, ok := strings.CutPrefix(l, "page dumped because: "); ok {
				return "Bad page state: " + strings.TrimSpace(r)
			}
		}
		return "Bad page state"
	}},
	{header: regexp.MustCompile(`^BUG: Bad page (map|cache) in process`), title: func(m, _ []string) string { return "Bad page " + m[1] }},
	{header: regexp.MustCompile(`^BUG: sleeping function called from invalid context`), title: func(_, body []string) string {
		return withFrame("BUG: sleeping function called from invalid context", body)
	}},
	{header: regexp.MustCompile(`^BUG: scheduling while atomic`), title: func(_, body []string) string {
		return withFrame("BUG: scheduling while atomic", body)
	}},
	{header: regexp.MustCompile(`^BUG ([a-zA-Z0-9_:-]+) \([^)]*\): (.+)$`), title: func(m, _ []string) string {
		return "SLUB: " + m[1] + ": " + strings.TrimSpace(m[2])
	}},
	{header: regexp.MustCompile(`^BUG: ([^\[]+?)(?: at \S+| in \S+)?\s*$`), title: func(m, body []string) string {
		return "BUG: " + strings.TrimSpace(m[1])
	}},
	{header: regexp.MustCompile(`^SError Interrupt on CPU\d+`), title: func(_, body []string) string {
		return withFrame("SError Interrupt", body)
	}},
	{header: regexp.MustCompile(`^(?:\S+: )?page_pool_release_retry\(\) stalled pool shutdown`), single: true, title: constTitle("page_pool: stalled pool shutdown")},
	{header: regexp.MustCompile(`^unregister_netdevice: waiting for \S+ to become free`), single: true, title: constTitle("unregister_netdevice: waiting for DEV to become free")},
	{header: regexp.MustCompile(`^Kernel panic - not syncing: (.*?)\s*$`), continues: true, title: func(m, _ []string) string {
		return "Kernel panic - not syncing: " + strings.TrimSuffix(m[1], ".")
	}},
}

// consoleLine returns a console line without its printk timestamp and trailing CR.
func consoleLine(l string) string {
	l = strings.TrimRight(l, "\r")
	if loc := printkPrefix.FindStringIndex(l); loc != nil {
		l = l[loc[1]:]
	}
	return l
}

func matchHeader(line string) (*reportKind, []string) {
	for i := range reportKinds {
		k := &reportKinds[i]
		if m := k.header.FindStringSubmatch(line); m != nil {
			return k, m
		}
	}
	return nil, nil
}

// ParseReports finds the kernel reports in a console log, oldest first. It never fails: text it
// does not recognise is simply not a report.
func ParseReports(console []byte) []Report {
	raw := strings.Split(string(bytes.ToValidUTF8(console, []byte("?"))), "\n")
	lines := make([]string, len(raw))
	for i, l := range raw {
		lines[i] = consoleLine(l)
	}
	type open struct {
		kind       *reportKind
		m          []string
		start, end int // end exclusive; -1 while open
		last       int // last line that belongs to it
	}
	var found []*open
	var cur *open
	closeAt := func(i int) {
		if cur != nil && cur.end < 0 {
			cur.end = i
		}
	}
	for i, l := range lines {
		if k, m := matchHeader(l); k != nil {
			// A continuation joins the report still open, or one that ended just before.
			if k.continues && cur != nil && (cur.end < 0 || i-cur.end <= 30) {
				cur.end = -1
				cur.last = i
				continue
			}
			closeAt(i)
			start := i
			for j := i - 1; j >= 0 && j >= i-3; j-- {
				if cutRe.MatchString(strings.TrimSpace(lines[j])) {
					start = j
					break
				}
			}
			if cur != nil && cur.end > start {
				start = cur.end
			}
			cur = &open{kind: k, m: m, start: start, end: -1, last: i}
			found = append(found, cur)
			if k.single {
				cur.end = i + 1
			}
			continue
		}
		if cur == nil || cur.end >= 0 {
			continue
		}
		cur.last = i
		if endRe.MatchString(l) || (sepRe.MatchString(l) && sepRe.MatchString(lines[cur.start]) && i > cur.start+1) {
			cur.end = i + 1
		} else if i+1-cur.start >= maxReportLines {
			cur.end = i + 1
		}
	}
	if cur != nil && cur.end < 0 {
		cur.end = cur.last + 1
		for cur.end > cur.start+1 && strings.TrimSpace(lines[cur.end-1]) == "" {
			cur.end--
		}
	}
	reports := make([]Report, 0, len(found))
	for _, o := range found {
		body := lines[o.start:o.end]
		text := strings.Join(raw[o.start:o.end], "\n")
		reports = append(reports, Report{
			Title:     o.kind.title(o.m, body),
			Text:      strings.ReplaceAll(text, "\r", "") + "\n",
			StartLine: o.start,
			EndLine:   o.end,
		})
	}
	return reports
}
