package gomodel

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func checkFile(t *testing.T, file string, opts TraceOptions) *TraceReport {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts.File = file
	rep, err := CheckTrace(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func violationNames(vs []Violation) string {
	var n []string
	for _, v := range vs {
		n = append(n, v.Name)
	}
	return strings.Join(n, ",")
}

func TestShippedTraces(t *testing.T) {
	for _, tc := range []struct {
		file       string
		violations string
		pools      int
		holds      uint64
		returns    uint64
		notes      int
	}{
		{"none-clean.trace", "", 1, 8, 0, 0},
		{"hook-clean.trace", "", 1, 4, 12, 0},
		{"coalesce-dma-freed.trace", "dma-mapped-page-freed,inflight-leak", 1, 3, 1, 0},
		{"foreign-return.trace", "foreign-page-returned", 1, 1, 2, 0},
		{"double-release.trace", "double-return", 1, 2, 0, 0},
		{"partial-start.trace", "", 2, 2, 2, 3},
		{"reused-address.trace", "dma-mapped-page-freed,inflight-leak", 2, 2, 1, 0},
	} {
		t.Run(tc.file, func(t *testing.T) {
			rep := checkFile(t, filepath.Join("testdata/traces", tc.file), TraceOptions{Packets: 1000})
			if got := violationNames(rep.Violations); got != tc.violations {
				t.Errorf("violations %q, want %q: %+v", got, tc.violations, rep.Violations)
			}
			var holds, returns uint64
			for _, p := range rep.Pools {
				holds += p.Holds
				returns += p.SKBReturns
			}
			if len(rep.Pools) != tc.pools || holds != tc.holds || returns != tc.returns || len(rep.Notes) != tc.notes {
				t.Errorf("pools %d holds %d returns %d notes %v", len(rep.Pools), holds, returns, rep.Notes)
			}
			if rep.SlowPathPer1k != float64(tc.holds) || rep.Passed != (tc.violations == "") {
				t.Errorf("slow path per 1000 packets %v, passed %v", rep.SlowPathPer1k, rep.Passed)
			}
			for _, v := range rep.Violations {
				if v.Line <= 0 || v.Detail == "" {
					t.Errorf("violation without line or detail: %+v", v)
				}
			}
		})
	}
}

const ctx = "          <idle>-0       [001] ..s.   412.345678: "

func TestTraceLineFormats(t *testing.T) {
	hold := "page_pool_state_hold: page_pool=00000000aa page=00000000bb pfn=%s hold=1"
	for _, tc := range []struct {
		name, line string
		events     int
	}{
		{"irq-info", ctx + fmt.Sprintf(hold, "4096"), 1},
		{"no irq-info", "          <idle>-0       [001]   412.345678: " + fmt.Sprintf(hold, "4096"), 1},
		{"tgid column", "           iperf-412     (    410) [000] ..s1   412.345678: " + fmt.Sprintf(hold, "4096"), 1},
		{"counter clock", "   ksoftirqd/0-9       [000] ..s.     99887766: " + fmt.Sprintf(hold, "4096"), 1},
		{"dash in comm", "     napi/eth0-1-233     [001] ..s.   412.345678: " + fmt.Sprintf(hold, "4096"), 1},
		{"crlf", ctx + fmt.Sprintf(hold, "4096") + "\r", 1},
		{"hex pfn (newer kmem)", ctx + "mm_page_free: page=00000000bb pfn=0x1000 order=0", 1},
		{"batched", ctx + "mm_page_free_batched: page=00000000bb pfn=4096 order=0", 1},
		{"nid", ctx + "page_pool_update_nid: page_pool=00000000aa pool_nid=-1 new_nid=0", 1},
		{"kprobe dma sync", ctx + "arch_sync_dma_for_device: (arch_sync_dma_for_device+0x0/0x20) paddr=0x4a3c1100 size=3776 dir=2", 1},
		{"kprobe put", ctx + "page_pool_put_page: (page_pool_put_page+0x0/0x1a0) dma=0x4a3c1000 sync=4294967295 direct=0", 1},
		{"other kprobe", ctx + "arch_sync_dma_for_cpu: (arch_sync_dma_for_cpu+0x0/0x20) paddr=0x4a3c1100 size=66 dir=2", 0},
		{"other event", ctx + "kfree_skb: skbaddr=00000000cc protocol=2048 location=00000000dd", 0},
		{"comment", "# tracer: nop", 0},
		{"lost", "CPU:1 [LOST 7 EVENTS]", 0},
		{"blank", "   ", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// After one page_pool event, so that the input is a page_pool trace.
			nid := ctx + "page_pool_update_nid: page_pool=00000000aa pool_nid=-1 new_nid=0\n"
			rep, err := CheckTrace(strings.NewReader(nid+tc.line+"\n"), TraceOptions{File: "t"})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Events != tc.events+1 {
				t.Errorf("%d events after the first, want %d", rep.Events-1, tc.events)
			}
		})
	}
}

// TestCheckTraceNotATrace: input that holds no page_pool trace gets no verdict.
func TestCheckTraceNotATrace(t *testing.T) {
	random := make([]byte, 100000)
	rand.New(rand.NewSource(1)).Read(random)
	for _, tc := range []struct {
		name, input, reason string
	}{
		{"empty", "", "empty"},
		{"random bytes", string(random), "NUL byte"},
		{"text", "hello\nworld\n", "no page_pool event in 2 lines"},
		{"header only", "# tracer: nop\n#\n", "no page_pool event in 2 lines"},
		{"page frees only", ctx + "mm_page_free: page=00000000bb pfn=4096 order=0\n", "no page_pool event in 1 lines"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := CheckTrace(strings.NewReader(tc.input), TraceOptions{File: "in"})
			var nt *NotATraceError
			if !errors.As(err, &nt) || !strings.Contains(nt.Reason, tc.reason) {
				t.Fatalf("CheckTrace = %+v, %v; want a NotATraceError saying %q", rep, err, tc.reason)
			}
			if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "events/page_pool/enable") {
				t.Errorf("message %q: want one line naming what is expected", err)
			}
		})
	}
}

func TestTraceMalformed(t *testing.T) {
	for _, tc := range []struct {
		name, line, want string
	}{
		{"missing field", ctx + "page_pool_state_hold: page_pool=00000000aa page=00000000bb pfn=1", "want field hold="},
		{"bad number", ctx + "page_pool_state_hold: page_pool=00000000aa page=00000000bb pfn=12x hold=1", "pfn=12x is not a number"},
		{"field order", ctx + "page_pool_state_release: page_pool=00000000aa pfn=1 page=00000000bb release=1", "want field page="},
		{"trailing", ctx + "page_pool_skb_return: page_pool=00000000aa page=00000000bb pfn=1 extra=2", "unexpected \"extra=2\""},
		{"overflow", ctx + "page_pool_state_hold: page_pool=00000000aa page=00000000bb pfn=1 hold=4294967296", "does not fit in 32 bits"},
		{"20 digits past 64 bits", ctx + "page_pool_state_hold: page_pool=00000000aa page=00000000bb pfn=18446744073709551616 hold=1", "overflows 64 bits"},
		{"21 digits", ctx + "page_pool_state_hold: page_pool=00000000aa page=00000000bb pfn=100000000000000000000 hold=1", "overflows 64 bits"},
		{"inflight", ctx + "page_pool_release: page_pool=00000000aa inflight=x hold=1 release=1 cnt=1", "inflight=x is not a 32-bit integer"},
		{"order", ctx + "mm_page_free: page=00000000bb pfn=1 order=99", "not a page order"},
		{"no prefix", "page_pool_state_hold: page_pool=00000000aa page=00000000bb pfn=1 hold=1", "without the ftrace prefix"},
		{"kprobe symbol unclosed", ctx + "arch_sync_dma_for_device: (arch_sync_dma_for_device+0x0/0x20 paddr=0x4a3c1100 size=3776 dir=2", "want the probed function"},
		{"kprobe wraps", ctx + "arch_sync_dma_for_device: (arch_sync_dma_for_device+0x0/0x20) paddr=0xffffffffffffff00 size=3776 dir=2", "wraps around"},
		{"kprobe direct", ctx + "page_pool_put_page: (page_pool_put_page+0x0/0x1a0) dma=0x4a3c1000 sync=1 direct=256", "direct=256 does not fit in 8 bits"},
		{"empty value", ctx + "page_pool_state_hold: page_pool= page=00000000bb pfn=1 hold=1", "empty page_pool="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckTrace(strings.NewReader("# tracer: nop\n"+tc.line+"\n"), TraceOptions{File: "bad.trace"})
			var le *LineError
			if !errors.As(err, &le) || le.Line != 2 || !strings.Contains(le.Msg, tc.want) {
				t.Fatalf("got %v, want bad.trace:2: ...%s", err, tc.want)
			}
		})
	}
}

// traceWriter prints model tracepoints in ftrace's text format.
type traceWriter struct {
	buf   bytes.Buffer
	m     *Model
	ts    int
	count int
}

func (w *traceWriter) emit(ev traceEvent) {
	w.ts++
	w.count++
	pool := func(pl int32) string { return fmt.Sprintf("%016x", 0xabc000+int(pl)) }
	page := fmt.Sprintf("%016x", ev.pfn*64)
	fmt.Fprintf(&w.buf, "%16s-%-7d [%03d] %s %5d.%06d: ", "<idle>", 0, 0, "..s.", 100+w.ts/1000000, w.ts%1000000)
	switch ev.kind {
	case evHold:
		fmt.Fprintf(&w.buf, "page_pool_state_hold: page_pool=%s page=%s pfn=%d hold=%d\n", pool(ev.pool), page, ev.pfn, ev.count)
	case evRelease:
		fmt.Fprintf(&w.buf, "page_pool_state_release: page_pool=%s page=%s pfn=%d release=%d\n", pool(ev.pool), page, ev.pfn, ev.count)
	case evSkbReturn:
		fmt.Fprintf(&w.buf, "page_pool_skb_return: page_pool=%s page=%s pfn=%d\n", pool(ev.pool), page, ev.pfn)
	case evPageFree:
		fmt.Fprintf(&w.buf, "mm_page_free: page=%s pfn=%d order=0\n", page, ev.pfn)
	case evPoolRelease:
		fmt.Fprintf(&w.buf, "page_pool_release: page_pool=%s inflight=%d hold=%d release=%d cnt=%d\n", pool(ev.pool), ev.inflight, ev.hold, ev.release, ev.cnt)
	}
}

// traceVisible are the violations both the model and a kernel trace can show.
var traceVisible = map[string]bool{DMAMappedPageFreed: true, ForeignPageReturned: true}

// TestModelAgreesWithTraceChecker runs every shipped scenario with the model emitting the
// kernel's tracepoints, checks the resulting ftrace text, and compares the verdicts.
func TestModelAgreesWithTraceChecker(t *testing.T) {
	for _, file := range shippedScenarios(t) {
		sc := parseFile(t, file)
		m := NewModel(sc.Config, sc.Syms, false)
		w := &traceWriter{m: m}
		m.tracer = w.emit
		for _, op := range sc.Ops {
			if op.Kind < OpExpectViolation {
				if err := m.Apply(op); err != nil {
					t.Fatal(err)
				}
			}
		}
		rep, err := CheckTrace(&w.buf, TraceOptions{File: file})
		model, trace := map[string]bool{}, map[string]bool{}
		for _, v := range m.Violations {
			if traceVisible[v.Name] {
				model[v.Name] = true
			}
		}
		var nt *NotATraceError
		if errors.As(err, &nt) {
			// The scenario never touches a pool (it frees plain pages): its trace is no
			// page_pool trace, and nothing the trace could show went wrong.
			if len(model) > 0 {
				t.Errorf("%s: the model sees %v, but its trace holds no page_pool event", file, model)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, v := range rep.Violations {
			trace[v.Name] = true
		}
		// a foreign area returned to a pool is only visible if it went through the hook
		if trace[ForeignPageReturned] != model[ForeignPageReturned] && !strings.Contains(file, "bug-wrong-pool") {
			t.Errorf("%s: foreign-page-returned: model %v, trace %v", file, model[ForeignPageReturned], trace[ForeignPageReturned])
		}
		if trace[DMAMappedPageFreed] != model[DMAMappedPageFreed] {
			t.Errorf("%s: dma-mapped-page-freed: model %v, trace %v", file, model[DMAMappedPageFreed], trace[DMAMappedPageFreed])
		}
		allFreed := len(m.pools) > 0
		for _, p := range m.pools {
			allFreed = allFreed && p.freed
		}
		if len(m.Violations) == 0 && allFreed && !rep.Passed {
			t.Errorf("%s: the model is clean but the trace checker reports %v", file, rep.Violations)
		}
		var keys []string
		for k := range trace {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Logf("%s: %d events, trace verdict %v", filepath.Base(file), w.count, keys)
	}
}

// A real capture whose releases on CPU 0 were read after CPU 1's later frees: replayed in
// timestamp order, it is clean; replayed in file order, every page would be "freed while
// DMA-mapped" and then "released after free".
func TestCheckTraceReplaysInTimestampOrder(t *testing.T) {
	rep := checkFile(t, "testdata/traces/cross-cpu-order.trace", TraceOptions{})
	if len(rep.Violations) != 0 {
		t.Fatalf("violations %s: %+v", violationNames(rep.Violations), rep.Violations)
	}
	if rep.Reordered != 5 {
		t.Errorf("reordered %d events, want the 5 late releases", rep.Reordered)
	}
	if len(rep.Pools) != 1 || rep.Pools[0].Holds != 5 || rep.Pools[0].Releases != 5 {
		t.Errorf("pools %+v", rep.Pools)
	}
}

func TestParseTimestamp(t *testing.T) {
	for in, want := range map[string]uint64{"1.569038": 1569038000, "100.000137": 100000137000,
		"7": 7e9, "0.123456789": 123456789, "2.1234567891": 2123456789} {
		if got := parseTimestamp([]byte(in)); got != want {
			t.Errorf("%s: %d, want %d", in, got, want)
		}
	}
}

// A %lu field takes every unsigned long, the 20-digit ones too (FuzzPages found the text of a
// hold with pfn 18446743979220557135 refused while its pages were replayed).
func TestTraceLargestUnsignedLong(t *testing.T) {
	for _, pfn := range []string{"18446744073709551615", "18446743979220557135", "10000000000000000000"} {
		rep, err := CheckTrace(strings.NewReader("# tracer: nop\n"+ctx+"page_pool_state_hold: page_pool=00000000aa page=00000000bb pfn="+pfn+" hold=1\n"), TraceOptions{File: "big.trace"})
		if err != nil || rep.Figures.Holds != 1 {
			t.Errorf("pfn=%s: %v, %+v", pfn, err, rep)
		}
	}
}
