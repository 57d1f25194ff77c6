package gomodel

import (
	"bytes"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// cpuClock measures the CPU time of the benchmark's own thread, so that figures taken while
// other jobs load the machine still say what one core does. The wall-clock figures are reported
// next to them.
type cpuClock struct{ start time.Duration }

func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU(b *testing.B) *cpuClock {
	runtime.LockOSThread()
	b.Cleanup(runtime.UnlockOSThread)
	c := &cpuClock{start: threadCPU()}
	b.ResetTimer()
	return c
}

// report adds "<unit>/s" (wall clock) and "<unit>/cpu-s" (this thread's CPU time) in millions.
func (c *cpuClock) report(b *testing.B, n float64, unit string) {
	cpu := threadCPU() - c.start
	b.ReportMetric(n/b.Elapsed().Seconds()/1e6, "M"+unit+"/s")
	if cpu > 0 {
		b.ReportMetric(n/cpu.Seconds()/1e6, "M"+unit+"/cpu-s")
	}
}

// steadyStateTrace is one cycle of a busy RX queue with the return hook: the pool holds 256
// pages (slow path), each comes back through page_pool_skb_return 30 times, then all are
// released and freed; in between, kmem reports frees of 1024 unrelated pages.
func steadyStateTrace(pool int32) []traceEvent {
	var evs []traceEvent
	const pages, rounds = 256, 30
	base := uint64(0x40000)
	for i := 0; i < pages; i++ {
		evs = append(evs, traceEvent{kind: evHold, pool: pool, pfn: base + uint64(i), count: uint32(i + 1)})
	}
	for r := 0; r < rounds; r++ {
		for i := 0; i < pages; i++ {
			evs = append(evs, traceEvent{kind: evSkbReturn, pool: pool, pfn: base + uint64(i)})
			if i%8 == 0 {
				evs = append(evs, traceEvent{kind: evPageFree, pool: -1, pfn: 0x90000 + uint64(r*pages+i)})
			}
		}
	}
	for i := 0; i < pages; i++ {
		evs = append(evs, traceEvent{kind: evRelease, pool: pool, pfn: base + uint64(i), count: uint32(i + 1)})
		evs = append(evs, traceEvent{kind: evPageFree, pool: -1, pfn: base + uint64(i)})
	}
	return evs
}

// BenchmarkTraceReplay measures the replay of parsed events through the checker's model.
func BenchmarkTraceReplay(b *testing.B) {
	c := newTraceChecker(TraceOptions{File: "bench"})
	pool := c.newPool("00000000b5f1c7a2")
	evs := steadyStateTrace(pool)
	b.ReportAllocs()
	clock := startCPU(b)
	for i := 0; i < b.N; i++ {
		c.replay(&evs[i%len(evs)])
	}
	b.StopTimer()
	clock.report(b, float64(b.N), "events")
	if len(c.rep.Violations) != 0 {
		b.Fatalf("violations: %v", c.rep.Violations[0])
	}
}

func traceText(evs []traceEvent, pool string) []byte {
	var buf bytes.Buffer
	buf.WriteString("# tracer: nop\n#\n")
	for i, ev := range evs {
		fmt.Fprintf(&buf, "%16s-%-7d [%03d] %s %5d.%06d: ", "<idle>", 0, i%2, "..s.", 100+i/1000000, i%1000000)
		page := fmt.Sprintf("%016x", ev.pfn*64)
		switch ev.kind {
		case evHold:
			fmt.Fprintf(&buf, "page_pool_state_hold: page_pool=%s page=%s pfn=%d hold=%d\n", pool, page, ev.pfn, ev.count)
		case evRelease:
			fmt.Fprintf(&buf, "page_pool_state_release: page_pool=%s page=%s pfn=%d release=%d\n", pool, page, ev.pfn, ev.count)
		case evSkbReturn:
			fmt.Fprintf(&buf, "page_pool_skb_return: page_pool=%s page=%s pfn=%d\n", pool, page, ev.pfn)
		case evPageFree:
			fmt.Fprintf(&buf, "mm_page_free: page=%s pfn=%d order=0\n", page, ev.pfn)
		}
	}
	return buf.Bytes()
}

// BenchmarkCheckTrace measures CheckTrace on ftrace text: parsing plus replay.
func BenchmarkCheckTrace(b *testing.B) {
	evs := steadyStateTrace(0)
	text := traceText(evs, "00000000b5f1c7a2")
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	clock := startCPU(b)
	for i := 0; i < b.N; i++ {
		rep, err := CheckTrace(bytes.NewReader(text), TraceOptions{File: "bench"})
		if err != nil || rep.Events != len(evs) || !rep.Passed {
			b.Fatalf("%v %+v", err, rep)
		}
	}
	b.StopTimer()
	clock.report(b, float64(len(evs))*float64(b.N), "events")
}

// BenchmarkExplore measures exploration: random operations applied to the model, with the
// generator's choices and the episodes' teardowns included.
func BenchmarkExplore(b *testing.B) {
	for _, cfg := range []Config{{Variant: VariantRFC, Coalesce: CoalesceRelease}, {Variant: VariantUpstream}, {Variant: VariantNone}, {Variant: VariantSeries, Coalesce: CoalesceRelease}} {
		b.Run(cfg.String(), func(b *testing.B) {
			b.ReportAllocs()
			clock := startCPU(b)
			res := Explore(ExploreOptions{Config: cfg, Ops: b.N, Seed: 1})
			b.StopTimer()
			clock.report(b, float64(res.Ops), "ops")
			if res.Found {
				b.Fatalf("unexpected violation:\n%s", res.Findings[0].Scenario)
			}
		})
	}
}
