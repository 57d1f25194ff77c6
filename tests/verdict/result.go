package verdict

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Figures are what a procedure reports, measured from the kernel's own counters and trace.
type Figures struct {
	// Packets received by the board's test NIC in the traffic window (interface statistics).
	Packets int64 `json:"packets"`
	// BitsPerSecond is the receiver's throughput as its tool reported it.
	BitsPerSecond float64 `json:"bits_per_second"`
	// SlowPathAllocs are page_pool_state_hold events in the traffic window;
	// SlowPathPer1000 is that per 1000 received packets.
	SlowPathAllocs  int64   `json:"slow_path_allocs"`
	SlowPathPer1000 float64 `json:"slow_path_per_1000"`
	// SKBReturns are pages returned through the series' SKB hook (page_pool_skb_return);
	// Releases are page_pool_state_release events; Holds all page_pool_state_hold, over the
	// whole trace.
	SKBReturns int64 `json:"skb_returns"`
	Releases   int64 `json:"releases"`
	Holds      int64 `json:"holds"`
}

// Reason kinds: why a procedure failed.
const (
	ReasonViolation = "model-violation"
	ReasonConsole   = "console-report"
	ReasonInflight  = "inflight-leak"
	ReasonNoTraffic = "no-traffic"
	ReasonTraceLost = "trace-incomplete"
	ReasonInfra     = "infrastructure"
	// ReasonBoot: the kernel under test crashed or hung while booting (syzkaller's BootError):
	// a verdict on the kernel, not an infrastructure failure.
	ReasonBoot = "boot-failure"
	// ReasonKernelFailure: the kernel under test crashed or hung during the procedure (the
	// guest stopped answering, QEMU exited, a panic): a verdict on the kernel.
	ReasonKernelFailure = "kernel-failure"
	ReasonProcedure     = "procedure-error"
	ReasonModelError    = "model-error"
	// ReasonInterrupted: the run was told to stop (Ctrl-C, SIGTERM) before it could be
	// judged. Neither the kernel nor the infrastructure is blamed.
	ReasonInterrupted = "interrupted"
)

// Reason is one ground for a failed verdict.
type Reason struct {
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

func (r Reason) String() string { return r.Kind + ": " + r.Detail }

// Result is one procedure on one kernel.
type Result struct {
	Procedure   string   `json:"procedure"`
	Description string   `json:"description"`
	Paths       []string `json:"paths"`
	Kernel      string   `json:"kernel"`
	// Design is the kernel's design as the model names it (the series' model-variant file;
	// "none" for the baseline): it decides where ppkit's probes read struct page.
	Design     string          `json:"design,omitempty"`
	Started    time.Time       `json:"started"`
	Duration   time.Duration   `json:"duration_ns"`
	Figures    Figures         `json:"figures"`
	Model      *ModelReport    `json:"model,omitempty"`
	Traffic    Traffic         `json:"traffic"`
	Pools      []PoolFigures   `json:"pools"`
	Console    []ConsoleReport `json:"console_reports,omitempty"`
	LostEvents int64           `json:"lost_events"`
	Notes      []string        `json:"notes,omitempty"`
	Seed       int64           `json:"seed,omitempty"` // a randomised procedure's (mixed): --seed replays it
	// PathCounters are the kernel counters that show which skb paths the traffic took (their
	// change over the traffic window; PathCounterNames), the evidence for Paths.
	PathCounters map[string]int64 `json:"path_counters,omitempty"`
	// Culprits: the first violation of each kind with its page's history (see Culprits).
	Culprits  []Culprit `json:"culprits,omitempty"`
	Artifacts string    `json:"artifacts,omitempty"`
	// TraceFiles are the trace's files in Artifacts: the text (trace.txt), or the pages
	// (cpuN.raw, with formats.tar) and the text when it was written.
	TraceFiles []string `json:"trace_files,omitempty"`
	// Phases is where the procedure's time went, in order (boot, setup, traffic, drain, model).
	Phases  []Phase  `json:"phases,omitempty"`
	Pass    bool     `json:"pass"`
	Verdict Verdict  `json:"verdict"`
	Reasons []Reason `json:"reasons,omitempty"`
}

// Phase is how long one phase of a procedure's run took.
type Phase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration_ns"`
}

// Phase adds a phase that began at since and ends now; it returns now, the next one's start.
func (r *Result) Phase(name string, since time.Time) time.Time {
	now := time.Now()
	r.Phases = append(r.Phases, Phase{Name: name, Duration: now.Sub(since)})
	return now
}

// Traffic is what a procedure's own tools say they moved.
type Traffic struct {
	// Bytes and BitsPerSecond come from the receiving side (the board) when it reports them.
	Bytes         int64   `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	// Datagrams received (UDP procedures) and lost on the way.
	Datagrams int64 `json:"datagrams,omitempty"`
	Lost      int64 `json:"lost,omitempty"`
	// Notes are per-procedure observations (listener counts, zerocopy bytes, scp size, …).
	Notes []string `json:"notes,omitempty"`
	// Members is each member's own traffic when the procedure combines several (mixed).
	Members []MemberTraffic `json:"members,omitempty"`
}

// MemberTraffic is one member's own traffic in a combined procedure, as its tools report it.
type MemberTraffic struct {
	Procedure     string        `json:"procedure"`
	Start         time.Duration `json:"start_ns"`
	Port          int           `json:"port"`
	Bytes         int64         `json:"bytes"`
	BitsPerSecond float64       `json:"bits_per_second"`
	Datagrams     int64         `json:"datagrams,omitempty"`
	Lost          int64         `json:"lost,omitempty"`
}

// ConsoleReport is one kernel report recognised in the board's console.
type ConsoleReport struct {
	Title  string `json:"title"`
	Report string `json:"report"`
}

// Evidence is everything a verdict rests on, gathered by the procedures' runner
// (procedure.RunProcedure).
type Evidence struct {
	Traffic    Traffic
	Before     Snapshot
	After      Snapshot
	Trace      *TraceFigures
	Overrun    int64
	Console    []ConsoleReport
	Model      *ModelReport
	ModelErr   error
	Procedure  error // Setup/Run/Collect failure
	InfraError error // the run could not complete (QEMU, SSH, tracing)
	BootError  error // the kernel under test crashed or hung before the board was up
	// KernelError: the kernel under test crashed or hung during the procedure (a
	// *harness.GuestError from a board command); nothing after it can be judged.
	KernelError error
	// Stopped is why the run was stopped before it could be judged (the cause of the run
	// context's cancellation); nothing else is judged then.
	Stopped error
	// DrainWait is how long the runner waited for the pools to drain once the interface went
	// down (procedure.PoolDrainTimeout): a pool still inflight after it has leaked.
	DrainWait time.Duration
}

// SetModel takes the model's result: the figures of its replay (also with an error, when it
// has them) and its report, or its error.
func (ev *Evidence) SetModel(m *ModelReport, err error) {
	if m != nil {
		ev.Trace = m.Trace
	}
	if err != nil {
		ev.ModelErr = err
		return
	}
	ev.Model = m
}

// Judge computes the figures and the verdict. The procedure fails on any model violation, any
// console report, a pool whose inflight does not reach 0 once destroyed (or that is never
// destroyed), a procedure that moved no traffic, an incomplete trace, and — because a run that
// cannot be judged must never pass — any infrastructure or model error.
func Judge(res *Result, ev Evidence) {
	res.Traffic = ev.Traffic
	res.Console = ev.Console
	fail := func(kind, format string, args ...any) {
		res.Reasons = append(res.Reasons, Reason{Kind: kind, Detail: fmt.Sprintf(format, args...)})
	}
	defer func() {
		res.Verdict = VerdictOf(res.Reasons)
		res.Pass = res.Verdict == VerdictPass
	}()
	if ev.Stopped != nil {
		fail(ReasonInterrupted, "stopped before the verdict: %v", ev.Stopped)
		return
	}
	if ev.BootError != nil {
		fail(ReasonBoot, "%v", ev.BootError)
		return
	}
	if ev.KernelError != nil {
		fail(ReasonKernelFailure, "%v", ev.KernelError)
	}
	// complete: the procedure ran to its end, so traffic and trace completeness can be judged.
	complete := ev.InfraError == nil && ev.Procedure == nil && ev.KernelError == nil
	if ev.InfraError != nil {
		fail(ReasonInfra, "%v", ev.InfraError)
	}
	if ev.Procedure != nil {
		fail(ReasonProcedure, "%v", ev.Procedure)
	}
	rx := int64(ev.After.Interface.RxPackets) - int64(ev.Before.Interface.RxPackets)
	if rx < 0 {
		rx = 0
	}
	res.Figures.Packets = rx
	res.PathCounters = pathCounters(ev.Before.SNMP, ev.After.SNMP)
	res.Figures.BitsPerSecond = ev.Traffic.BitsPerSecond
	if ev.Trace != nil {
		t := ev.Trace
		res.Figures.SlowPathAllocs = t.HoldsInWindow
		res.Figures.SKBReturns, res.Figures.Releases, res.Figures.Holds = t.SKBReturns, t.Releases, t.Holds
		if rx > 0 {
			res.Figures.SlowPathPer1000 = float64(t.HoldsInWindow) * 1000 / float64(rx)
		}
		res.LostEvents = t.LostEvents + ev.Overrun
		for _, p := range t.Pools {
			res.Pools = append(res.Pools, *p)
		}
	}
	// Traffic: the NIC must have received packets and the receiving tool must have seen data.
	if complete {
		switch {
		case rx == 0:
			fail(ReasonNoTraffic, "the board's NIC received no packet during the run")
		case ev.Traffic.Bytes == 0:
			fail(ReasonNoTraffic, "the receiver on the board reported 0 bytes (%d packets reached the NIC)", rx)
		}
		for _, m := range ev.Traffic.Members { // a combined procedure: each member must have moved data
			if m.Bytes == 0 {
				fail(ReasonNoTraffic, "member %s: its receiver on the board reported 0 bytes", m.Procedure)
			}
		}
	}
	if ev.Trace != nil && complete {
		if res.LostEvents > 0 {
			fail(ReasonTraceLost, "the trace lost %d events; raise TraceBufferKB or lower the rate", res.LostEvents)
		}
		if len(ev.Trace.Pools) == 0 && ev.InfraError == nil {
			fail(ReasonTraceLost, "no page_pool event in the trace: is the NIC under test using page_pool?")
		}
		if ev.Trace.Holds > 0 && ev.Trace.DMASyncs == 0 {
			// page_pool's slow path syncs every page it maps (PP_FLAG_DMA_SYNC_DEV): none in the
			// trace means the guest skipped them as for a coherent device, or the probe is gone.
			fail(ReasonInfra, "the trace shows %d slow-path allocations and no arch_sync_dma_for_device: the NIC's device-tree node says dma-coherent (a QEMU built before issue 13?) or the kprobe event caught nothing; the DMA sync rule cannot be judged",
				ev.Trace.Holds)
		}
		for _, p := range ev.Trace.Pools {
			switch {
			case !p.Destroyed && p.Holds > 0:
				fail(ReasonInflight, "pool %s: no page_pool_release in the trace after the interface went down (holds %d, releases %d)",
					p.Pool, p.Holds, p.Releases)
			case p.Destroyed && p.FinalInflight != 0:
				fail(ReasonInflight, "pool %s still had %d pages inflight %s after it was destroyed",
					p.Pool, p.FinalInflight, ev.DrainWait)
			}
		}
	} else if ev.Trace == nil && complete && ev.ModelErr == nil {
		// With a model error and no figures, the model could not read the trace: that error
		// is the reason.
		fail(ReasonTraceLost, "no trace was collected")
	}
	for _, c := range ev.Console {
		fail(ReasonConsole, "%s", c.Title)
	}
	switch {
	case ev.ModelErr != nil:
		fail(ReasonModelError, "%v", ev.ModelErr)
	case ev.Model != nil && res.LostEvents > 0 && len(ev.Model.Violations) > 0:
		// Lost events leave holes in page histories: a page whose release was lost looks freed
		// while held. The run already fails as trace-incomplete; listing violations the model
		// cannot prove would accuse the kernel of what the trace buffer did.
		res.Model = ev.Model
		fail(ReasonTraceLost, "%d model violations withheld: with events lost, page histories are incomplete; rerun with a lower --rate or a shorter --time",
			len(ev.Model.Violations))
	case ev.Model != nil:
		res.Model = ev.Model
		// A broken kernel can violate the same invariant for every packet: list the first few of
		// each kind and count the rest, so JUnit and JSON stay readable.
		seen := map[string]int{}
		for _, v := range ev.Model.Violations {
			if seen[v.Name]++; seen[v.Name] <= violationsListed {
				fail(ReasonViolation, "%s: %s", v.Name, firstLine(v.Detail))
			}
		}
		for _, name := range sortedKeys(seen) {
			if more := seen[name] - violationsListed; more > 0 {
				fail(ReasonViolation, "%s: %d more like these", name, more)
			}
		}
	case complete:
		fail(ReasonModelError, "the model was not run")
	}
}

// violationsListed is how many violations of one kind a result lists one by one.
const violationsListed = 5

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// Summary is the outcome of a whole `ppkit test` invocation.
type Summary struct {
	// Board is the board the procedures ran on: the emulated one, or a real board's URL.
	Board   string    `json:"board,omitempty"`
	Results []*Result `json:"results"`
	// References are the kernels the kernel under test was compared with (--compare), in the
	// order given: each one's results and the comparison of Results against them.
	References []Reference `json:"references,omitempty"`
	Pass       bool        `json:"pass"`
	Verdict    Verdict     `json:"verdict"`
	// Interrupted: the run was stopped before every procedure was judged.
	Interrupted bool `json:"interrupted,omitempty"`
}

// Reference is one kernel a run compared the kernel under test with.
type Reference struct {
	Kernel     string         `json:"kernel"` // Result.Kernel: "baseline" or "series DIR"
	Results    []*Result      `json:"results"`
	Comparison []FigureChange `json:"comparison"` // the kernel under test against this one
}

// All is every result of the run: the references' in order, then the kernel under test's.
func (s *Summary) All() []*Result {
	var all []*Result
	for _, r := range s.References {
		all = append(all, r.Results...)
	}
	return append(all, s.Results...)
}

// KernelLabel is a short name of a kernel for a column: "baseline", or the series
// directory's name.
func KernelLabel(kernel string) string {
	if dir, ok := strings.CutPrefix(kernel, "series "); ok {
		return filepath.Base(dir)
	}
	return kernel
}

// PathCounterNames are the /proc/net/snmp and /proc/net/netstat counters that show which skb
// paths ran: receive-queue and backlog coalescing (skb_try_coalesce), out-of-order merges,
// IP reassembly, forwarding, and UDP delivery.
var PathCounterNames = []string{
	"TcpExt.TCPRcvCoalesce", "TcpExt.TCPBacklogCoalesce", "TcpExt.TCPOFOMerge", "TcpExt.TCPOFOQueue",
	"TcpExt.TCPRcvQDrop", "Ip.ReasmOKs", "Ip.ReasmReqds", "Ip.ForwDatagrams", "Udp.InDatagrams", "Tcp.InSegs",
}

// pathCounters is the change of PathCounterNames between two snapshots (counters that did not
// move are left out).
func pathCounters(before, after SNMP) map[string]int64 {
	out := map[string]int64{}
	for _, name := range PathCounterNames {
		proto, counter, _ := strings.Cut(name, ".")
		if d := after[proto][counter] - before[proto][counter]; d != 0 {
			out[name] = d
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// KernelKind is the short name of a Result.Kernel: "baseline", or "series" for any series.
func KernelKind(k string) string {
	if k == "baseline" {
		return k
	}
	return "series"
}

// HasReason says whether the result gives a reason of kind.
func (res *Result) HasReason(kind string) bool {
	for _, r := range res.Reasons {
		if r.Kind == kind {
			return true
		}
	}
	return false
}
