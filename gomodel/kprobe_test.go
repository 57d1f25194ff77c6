package gomodel

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/internal/testfile"
)

// kprobeTrace writes ftrace lines in the guest's format: the tracepoints and the events of
// TraceEventsSystem as the kprobe events of older traces printed them (the probed function
// first), each with its CPU and hardirq/softirq flag. check also reads them as tracepoints.
type kprobeTrace struct {
	b  strings.Builder
	ts int
}

const kpPool = "00000000b5f1c7a2"

func (k *kprobeTrace) line(cpu int, softirq bool, event string) {
	k.ts += 7
	flags := "d..."
	if softirq {
		flags = "d.s."
	}
	fmt.Fprintf(&k.b, "%16s-%-7d [%03d] %s %5d.%06d: %s\n", "<idle>", 0, cpu, flags, 100+k.ts/1000000, k.ts%1000000, event)
}

func (k *kprobeTrace) sync(cpu int, pfn uint64, size int, dir int) {
	k.line(cpu, true, fmt.Sprintf("arch_sync_dma_for_device: (arch_sync_dma_for_device+0x0/0x20) paddr=0x%x size=%d dir=%d", pfn<<12+0x100, size, dir))
}

func (k *kprobeTrace) hold(cpu int, softirq bool, pfn uint64, n int) {
	k.sync(cpu, pfn, 3776, dmaFromDevice)
	k.line(cpu, softirq, fmt.Sprintf("page_pool_state_hold: page_pool=%s page=%016x pfn=%d hold=%d", kpPool, pfn*64, pfn, n))
}

// hookReturn is what the series' hook does: page_pool_skb_return, page_pool_put_page, and its
// sync of syncSize bytes (page_pool_dma_sync_for_device(): min(dma_sync_size, max_len)).
func (k *kprobeTrace) hookReturn(cpu int, softirq bool, pfn uint64, direct int, syncSize int) {
	k.line(cpu, softirq, fmt.Sprintf("page_pool_skb_return: page_pool=%s page=%016x pfn=%d", kpPool, pfn*64, pfn))
	k.put(cpu, softirq, pfn, direct, syncSize)
}

func (k *kprobeTrace) put(cpu int, softirq bool, pfn uint64, direct int, syncSize int) {
	sync := uint32(syncSize)
	if syncSize < 0 {
		sync, syncSize = ^uint32(0), 3776
	}
	k.line(cpu, softirq, fmt.Sprintf("page_pool_put_page: (page_pool_put_page+0x0/0x1a0) dma=0x%x sync=%d direct=%d", pfn<<12, sync, direct))
	k.sync(cpu, pfn, syncSize, dmaFromDevice)
}

func (k *kprobeTrace) release(cpu int, pfn uint64, n int) {
	k.line(cpu, false, fmt.Sprintf("page_pool_state_release: page_pool=%s page=%016x pfn=%d release=%d", kpPool, pfn*64, pfn, n))
}

func (k *kprobeTrace) check(t *testing.T) *TraceReport {
	t.Helper()
	rep, err := CheckTrace(strings.NewReader(k.b.String()), TraceOptions{File: "kprobe.trace"})
	if err != nil {
		t.Fatal(err)
	}
	// The same events as the tracepoints of harness/config/trace-events.patch, which print no
	// probed function: the same report.
	tp := probedFunction.ReplaceAllString(k.b.String(), ": ")
	if tp == k.b.String() && strings.Contains(tp, "page_pool_put_page") {
		t.Fatal("no probed function to strip")
	}
	rep2, err := CheckTrace(strings.NewReader(tp), TraceOptions{File: "kprobe.trace"})
	if err != nil {
		t.Fatalf("as tracepoints: %v", err)
	}
	want := *rep
	if len(rep.Violations) > 0 {
		want.Violations = append([]Violation(nil), rep.Violations...)
	}
	for i := range want.Violations { // a violation quotes its line
		want.Violations[i].Op = probedFunction.ReplaceAllString(want.Violations[i].Op, ": ")
	}
	if !reflect.DeepEqual(&want, rep2) {
		t.Fatalf("as tracepoints the report differs:\n%+v\nwant\n%+v", rep2, &want)
	}
	return rep
}

// probedFunction is what a kprobe event prints before its arguments.
var probedFunction = regexp.MustCompile(`: \([a-z_]+\+0x0/0x[0-9a-f]+\) `)

// TestKprobeSyncRule: a page back in its pool must be synced for the device before the pool
// hands it out again; the slow path syncs before page_pool_state_hold.
func TestKprobeSyncRule(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(k *kprobeTrace)
		want string
	}{
		{"series: every return synced", func(k *kprobeTrace) {
			k.hold(0, true, 1000, 1)
			k.hold(0, true, 1001, 2)
			for i := 0; i < 3; i++ {
				k.hookReturn(1, true, 1000, 0, -1)
				k.hookReturn(0, false, 1001, 0, -1)
			}
			k.release(0, 1000, 1)
			k.release(0, 1001, 2)
		}, ""},
		{"the driver's own puts (no skb return)", func(k *kprobeTrace) {
			k.hold(0, true, 1000, 1)
			k.put(0, true, 1000, 1, -1)
			k.put(0, true, 1000, 1, -1)
			k.release(0, 1000, 1)
		}, ""},
		{"a released page needs no sync", func(k *kprobeTrace) {
			k.hold(0, true, 1000, 1)
			k.line(0, false, "page_pool_skb_return: page_pool="+kpPool+" page=000000000000fa00 pfn=1000")
			k.line(0, false, "page_pool_put_page: (page_pool_put_page+0x0/0x1a0) dma=0x3e8000 sync=4294967295 direct=0")
			k.release(0, 1000, 1)
		}, ""},
		{"hook syncs 0 bytes (the mutant return-sync-none)", func(k *kprobeTrace) {
			k.hold(0, true, 1000, 1)
			k.hookReturn(0, true, 1000, 0, 0)
			k.hookReturn(0, true, 1000, 0, 0) // handed out again unsynced: found here
			k.hookReturn(0, true, 1000, 0, 0)
			k.release(0, 1000, 1)
		}, NotSyncedForDevice},
		{"synced for the CPU only", func(k *kprobeTrace) {
			k.hold(0, true, 1000, 1)
			k.line(0, true, "page_pool_skb_return: page_pool="+kpPool+" page=000000000000fa00 pfn=1000")
			k.line(0, true, "page_pool_put_page: (page_pool_put_page+0x0/0x1a0) dma=0x3e8000 sync=4294967295 direct=0")
			k.line(0, true, "arch_sync_dma_for_device: (arch_sync_dma_for_device+0x0/0x20) paddr=0x3e8100 size=3776 dir=1")
			k.hookReturn(0, true, 1000, 0, -1)
		}, NotSyncedForDevice},
		{"slow path without its sync", func(k *kprobeTrace) {
			k.hold(0, true, 1000, 1)
			k.line(0, true, "page_pool_state_hold: page_pool="+kpPool+" page=000000000000fa40 pfn=1001 hold=2")
		}, NotSyncedForDevice},
		{"direct put on another CPU in softirq (the mutant return-direct under RPS)", func(k *kprobeTrace) {
			k.hold(0, true, 1000, 1)
			k.hookReturn(1, true, 1000, 1, -1)
			k.hookReturn(1, true, 1000, 1, -1)
		}, DirectRecycleOutsideNAPI},
		{"direct put on the NAPI's CPU", func(k *kprobeTrace) {
			k.hold(0, true, 1000, 1)
			k.hookReturn(0, true, 1000, 1, -1)
			k.put(0, true, 1000, 1, -1)
		}, ""},
		{"direct put in process context (the ring: in_serving_softirq() is false)", func(k *kprobeTrace) {
			k.hold(0, true, 1000, 1)
			k.hookReturn(1, false, 1000, 1, -1)
		}, ""},
		{"direct put before the pool allocated in softirq", func(k *kprobeTrace) {
			k.hold(0, false, 1000, 1)
			k.hookReturn(1, true, 1000, 1, -1)
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &kprobeTrace{}
			tc.run(k)
			rep := k.check(t)
			if got := violationNames(rep.Violations); got != tc.want {
				t.Fatalf("violations %q, want %q: %+v\n%s", got, tc.want, rep.Violations, k.b.String())
			}
			if rep.DMASyncs == 0 || rep.Puts == 0 && !strings.Contains(tc.name, "slow path") {
				t.Errorf("syncs %d puts %d: the kprobe lines were not counted", rep.DMASyncs, rep.Puts)
			}
			for _, v := range rep.Violations {
				if v.Page != "pfn 1000" && v.Page != "pfn 1001" || len(v.History) == 0 {
					t.Errorf("violation without its page's history: %+v", v)
				}
			}
		})
	}
}

// A trace without the kprobe events (older traces, another set-up) is judged as before: the
// sync rule applies to a pool only once a synced slow-path allocation shows its device syncs.
func TestKprobeRulesNeedTheProbes(t *testing.T) {
	k := &kprobeTrace{}
	for i := 0; i < 3; i++ {
		k.line(0, true, fmt.Sprintf("page_pool_state_hold: page_pool=%s page=%016x pfn=%d hold=%d", kpPool, (1000+i)*64, 1000+i, i+1))
	}
	for r := 0; r < 2; r++ {
		for i := 0; i < 3; i++ {
			k.line(1, true, fmt.Sprintf("page_pool_skb_return: page_pool=%s page=%016x pfn=%d", kpPool, (1000+i)*64, 1000+i))
		}
	}
	// a coherent device: puts (the driver's, in its NAPI poll), no syncs
	k.line(0, true, "page_pool_put_page: (page_pool_put_page+0x0/0x1a0) dma=0x3e8000 sync=4294967295 direct=1")
	k.line(0, true, "page_pool_put_page: (page_pool_put_page+0x0/0x1a0) dma=0x3e8000 sync=4294967295 direct=1")
	if rep := k.check(t); !rep.Passed || rep.DMASyncs != 0 || rep.Puts != 2 || rep.DirectPuts != 2 {
		t.Fatalf("passed %v syncs %d puts %d direct %d: %+v", rep.Passed, rep.DMASyncs, rep.Puts, rep.DirectPuts, rep.Violations)
	}
}

// Further violations of a probe rule in the same pool are counted in a note, not repeated.
func TestKprobeViolationsOncePerPool(t *testing.T) {
	k := &kprobeTrace{}
	k.hold(0, true, 1000, 1)
	for i := 0; i < 5; i++ {
		k.hookReturn(1, true, 1000, 1, 0)
	}
	rep := k.check(t)
	if got := violationNames(rep.Violations); got != DirectRecycleOutsideNAPI+","+NotSyncedForDevice {
		t.Fatalf("violations %q", got)
	}
	notes := strings.Join(rep.Notes, "\n")
	if !strings.Contains(notes, "3 more pages handed to the NIC without a sync") || !strings.Contains(notes, "4 more direct puts") {
		t.Errorf("notes %q", notes)
	}
}

func TestEventContext(t *testing.T) {
	for line, want := range map[string][2]int{
		"          <idle>-0       [001] d.s.   412.345678: x":   {1, 1},
		"          <idle>-0       [000] dNH2   412.345678: x":   {0, 1},
		"           iperf-412     [003] d.h1   412.345678: x":   {3, 0},
		"           iperf-412     (    410) [002] ....  1.0: x": {2, 0},
		"          <idle>-0       [001]   412.345678: x":        {1, -1},
		"no cpu column": {-1, -1},
	} {
		cpu, softirq := eventContext([]byte(line))
		if int(cpu) != want[0] || int(softirq) != want[1] {
			t.Errorf("%q: cpu %d softirq %d, want %v", line, cpu, softirq, want)
		}
	}
}

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// TestKprobeRealTraces replays excerpts of real guest traces (ppkit test tcp-rps --time 10s on
// the emulated board, kprobe events on: the page_pool, kmem page-free, kprobe and marker lines
// from the start of the procedure's trace, gzip'd): the shipped series is clean, each mutant
// shows its violation. What the replay finds is frozen in testdata/golden (go test -update).
func TestKprobeRealTraces(t *testing.T) {
	files, _ := filepath.Glob("testdata/traces/kprobe-*.trace.gz")
	want := map[string]string{
		"kprobe-series-tcp-rps.trace.gz":           "",
		"kprobe-return-direct-tcp-rps.trace.gz":    DirectRecycleOutsideNAPI,
		"kprobe-return-sync-none-tcp-rps.trace.gz": NotSyncedForDevice,
	}
	if len(files) == 0 {
		t.Fatal("no real kprobe trace in testdata/traces")
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("%s: no expected verdict", name)
			}
			rep, err := CheckTrace(bytes.NewReader(testfile.Gunzip(t, file)), TraceOptions{File: name})
			if err != nil {
				t.Fatal(err)
			}
			if got := violationNames(rep.Violations); got != w {
				t.Errorf("violations %q, want %q: %+v", got, w, rep.Violations)
			}
			if rep.DMASyncs == 0 || rep.Puts == 0 {
				t.Errorf("syncs %d puts %d: the real kprobe lines were not read", rep.DMASyncs, rep.Puts)
			}
			var b strings.Builder
			fmt.Fprintf(&b, "lines=%d events=%d ignored=%d syncs=%d puts=%d direct=%d passed=%v\n",
				rep.Lines, rep.Events, rep.Ignored, rep.DMASyncs, rep.Puts, rep.DirectPuts, rep.Passed)
			for _, p := range rep.Pools {
				fmt.Fprintf(&b, "pool %s holds=%d releases=%d skb=%d held=%d\n", p.Pool, p.Holds, p.Releases, p.SKBReturns, p.Held)
			}
			for _, v := range rep.Violations {
				fmt.Fprintf(&b, "%s line %d %s: %s\n", v.Name, v.Line, v.Page, v.Detail)
			}
			for _, n := range rep.Notes {
				fmt.Fprintf(&b, "note: %s\n", n)
			}
			golden := filepath.Join("testdata/golden", strings.TrimSuffix(name, ".trace.gz")+".txt")
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			g, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -update writes it)", err)
			}
			if string(g) != b.String() {
				t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s--- want\n%s", golden, b.String(), g)
			}
		})
	}
}

// TestPutProbeAtTheWrongOffset: puts whose dma= names no page a pool holds (a kprobe of older
// traces reading struct page at another design's offset read pp_magic; a board whose DMA
// addresses are not physical ones) would let the checks that read the puts pass whatever the
// kernel does, so the trace is an error saying why.
func TestPutProbeAtTheWrongOffset(t *testing.T) {
	var k kprobeTrace
	for i := uint64(0); i < 4; i++ {
		k.hold(0, true, 0x4000+i, int(i+1))
	}
	for i := uint64(0); i < 4; i++ {
		k.line(0, true, fmt.Sprintf("page_pool_skb_return: page_pool=%s page=%016x pfn=%d", kpPool, (0x4000+i)*64, 0x4000+i))
		k.line(0, true, "page_pool_put_page: (page_pool_put_page+0x0/0x1a0) dma=0xdead000000000040 sync=4294967295 direct=0")
	}
	_, err := CheckTrace(strings.NewReader(k.b.String()), TraceOptions{File: "wrong-offset"})
	var pe *ProbeError
	if !errors.As(err, &pe) || pe.Puts != 4 || !strings.Contains(err.Error(), "dma= is not the page's physical address") {
		t.Fatalf("err %v; want a ProbeError for 4 puts", err)
	}
	// The same puts at the right offset: no error.
	k = kprobeTrace{}
	for i := uint64(0); i < 4; i++ {
		k.hold(0, true, 0x4000+i, int(i+1))
	}
	for i := uint64(0); i < 4; i++ {
		k.hookReturn(0, true, 0x4000+i, 0, -1)
	}
	if _, err := CheckTrace(strings.NewReader(k.b.String()), TraceOptions{File: "right-offset"}); err != nil {
		t.Fatal(err)
	}
}
