package rawtrace

import (
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ppkit/ppkit/gomodel"
)

// threadCPU is the CPU time of the benchmark's thread (the machine is shared: wall-clock rates
// vary with the load, one core's rate does not), as gomodel's benchmarks report it.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// steadyState is one cycle of a busy RX queue with the return hook, as gomodel's
// BenchmarkTraceReplay has it (256 pages held, each returned through the hook 240 times, then
// released and freed, with unrelated page frees), over two CPUs in turns of a NAPI poll's
// budget of 64 packets (a packet's events come from the CPU that polled it), with the events a
// procedure traces (tests/procedure's TraceEvents and gomodel.KprobeEvents): each return is
// also page_pool_put_page's kprobe event and the sync for the device after it, and each
// slow-path hold follows its sync.
func steadyState() []tev {
	const pool, pages, rounds = 0xffffff8001a5b000, 256, 240
	var evs []tev
	ts, cpu := uint64(1e9), 0
	add := func(e tev) {
		ts += 700
		e.ts, e.cpu = ts, cpu
		evs = append(evs, e)
	}
	sync := func(pfn uint64) {
		add(tev{name: "arch_sync_dma_for_device", addr: pfn<<12 + 64, size: 1600, dir: 2, flags: 0x10})
	}
	for i := 0; i < pages; i++ {
		sync(0x40000 + uint64(i))
		add(tev{name: "page_pool_state_hold", pool: pool, pfn: 0x40000 + uint64(i), count: uint32(i + 1)})
	}
	for r := 0; r < rounds; r++ {
		for i := 0; i < pages; i++ {
			cpu = i / 64 % 2
			add(tev{name: "page_pool_skb_return", pool: pool, pfn: 0x40000 + uint64(i), flags: 0x10})
			add(tev{name: "page_pool_put_page", addr: (0x40000 + uint64(i)) << 12, count: 1600, flags: 0x10})
			sync(0x40000 + uint64(i))
			if i%8 == 0 {
				add(tev{name: "mm_page_free", pfn: 0x90000 + uint64(r*pages+i)})
			}
		}
	}
	for i := 0; i < pages; i++ {
		add(tev{name: "page_pool_state_release", pool: pool, pfn: 0x40000 + uint64(i), count: uint32(i + 1)})
		add(tev{name: "mm_page_free", pfn: 0x40000 + uint64(i)})
	}
	add(tev{name: "page_pool_release", pool: pool, release: pages})
	return evs
}

// BenchmarkReplay measures what the raw transport costs the host: decoding the pages of two
// CPUs, merging them, and gomodel's replay of the events (the goal: 50 M events/s).
func BenchmarkReplay(b *testing.B) {
	fm := testFormatSet(b)
	perCPU, _ := split(steadyState())
	raw0, raw1 := pages(fm, perCPU[0], nil), pages(fm, perCPU[1], nil)
	n := len(perCPU[0]) + len(perCPU[1])
	b.SetBytes(int64(len(raw0) + len(raw1)))
	eventRate(b, n, func() {
		rep, st, err := Replay(readers(raw0, raw1), fm, gomodel.TraceOptions{File: "bench"})
		if err != nil || st.Events != n || !rep.Passed {
			b.Fatalf("%v %+v", err, st)
		}
	})
}

// BenchmarkDecode is the decoding alone: pages to gomodel events, without the replay.
func BenchmarkDecode(b *testing.B) {
	fm := testFormatSet(b)
	perCPU, _ := split(steadyState())
	raw0, raw1 := pages(fm, perCPU[0], nil), pages(fm, perCPU[1], nil)
	n := len(perCPU[0]) + len(perCPU[1])
	b.SetBytes(int64(len(raw0) + len(raw1)))
	eventRate(b, n, func() {
		m, d := NewMerger(readers(raw0, raw1), &fm.Page), NewDecoder(fm)
		var ev gomodel.Event
		k := 0
		for {
			rec, err := m.Next()
			if err != nil {
				break
			}
			if err := d.Decode(rec, &ev); err != nil {
				b.Fatal(err)
			}
			k++
		}
		if k != n {
			b.Fatalf("%d events, want %d", k, n)
		}
	})
}

// BenchmarkText is gomodel's replay of the text twin of BenchmarkReplay's pages (the same
// events as tracefs's trace file prints them): the transport the pages replace.
func BenchmarkText(b *testing.B) {
	perCPU, text := split(steadyState())
	n := len(perCPU[0]) + len(perCPU[1])
	b.SetBytes(int64(len(text)))
	eventRate(b, n, func() {
		rep, err := gomodel.ReadTrace(strings.NewReader(text), gomodel.TraceOptions{File: "bench"})
		if err != nil || rep.Events+rep.Ignored != n || !rep.Passed {
			b.Fatalf("%v", err)
		}
	})
}

// eventRate runs one iteration b.N times on a locked OS thread and reports n events per
// iteration as millions of events per wall-clock second and per CPU-second of that thread.
func eventRate(b *testing.B, n int, iteration func()) {
	b.ReportAllocs()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		iteration()
	}
	b.StopTimer()
	total := float64(n) * float64(b.N)
	b.ReportMetric(total/b.Elapsed().Seconds()/1e6, "Mevents/s")
	if cpu := threadCPU() - cpu0; cpu > 0 {
		b.ReportMetric(total/cpu.Seconds()/1e6, "Mevents/cpu-s")
	}
}
