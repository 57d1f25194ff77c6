package procedure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/tests/verdict"
)

// fakeBoard is a scripted stand-in for the QEMU guest (syzkaller's "test" VM pattern): it
// answers the runner's commands the way a 5.10 guest with one mvneta pool would, so the
// orchestration in RunProcedure and Run is tested without QEMU. The real back-end is covered by
// the end-to-end tests.
type fakeBoard struct {
	mu         sync.Mutex
	rx         uint64
	traceOut   io.Writer // the running trace_pipe reader's stdout
	traceDone  chan struct{}
	procs      map[string]*fakeProc // by pid file
	ran        []string
	clock      float64
	statsReads int
	dieInRun   bool
	dead       bool
	noLink     bool // pings go unanswered
	// Behaviour knobs.
	leak     int64 // inflight the pool reports after destroy
	packets  uint64
	holdsRun int
	console  []verdict.ConsoleReport
	iptables bool // the image has iptables (the copy procedure's TEE rule)
}

type fakeProc struct {
	cmd    string
	stdout io.Writer
	done   chan struct{}
	once   sync.Once
}

func (p *fakeProc) Wait() error { <-p.done; return nil }

func newFakeBoard() *fakeBoard {
	return &fakeBoard{procs: map[string]*fakeProc{}, packets: 2000, holdsRun: 6, clock: 100}
}

const fakePool = "00000000feed0001"

func (b *fakeBoard) emit(event, fields string) {
	b.clock += 0.001
	if b.traceOut != nil {
		fmt.Fprintf(b.traceOut, "%16s-%-7d [%03d] %s %12.6f: %s: %s\n", "<idle>", 0, 0, "..s.", b.clock, event, fields)
	}
}

// emitSync traces page_pool's arch_sync_dma_for_device of a page (the kprobe event), as the
// slow path does before its hold and page_pool_put_page after a return.
func (b *fakeBoard) emitSync(pfn int) {
	b.emit("arch_sync_dma_for_device", fmt.Sprintf("(arch_sync_dma_for_device+0x0/0x20) paddr=0x%x size=3776 dir=2", pfn<<12+0x100))
}

var (
	startRE = regexp.MustCompile(`echo \$\$ > (\S+) && exec (.*)$`)
	portRE  = regexp.MustCompile(`(?:-p |recv )(\d+)`) // a server's port: iperf -p N, splicerecv N
	killRE  = regexp.MustCompile(`kill -(TERM|KILL) \$\(cat (\S+)\)`)
)

func (b *fakeBoard) Run(ctx context.Context, cmd string) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ran = append(b.ran, cmd)
	if b.dead {
		return nil, errors.New("ssh: EOF")
	}
	switch {
	case strings.Contains(cmd, "buffer_size_kb"):
		return nil, nil
	case strings.HasPrefix(cmd, "cat ") && strings.Contains(cmd, "trace.pid"):
		return []byte("77\n"), nil
	case strings.Contains(cmd, "/filter"):
		if !strings.Contains(cmd, "common_pid != 77 || common_flags & 88") {
			return nil, fmt.Errorf("bad filter %q", cmd)
		}
		return nil, nil
	case strings.HasPrefix(cmd, "ip link set dev eth1 down"):
		if b.traceOut != nil { // destroy: one release event per retry, as 5.10 does
			b.emit(verdict.EventPoolRelease, fmt.Sprintf("page_pool=%s inflight=%d hold=%d release=%d cnt=0", fakePool, b.leak, 64+b.holdsRun, 64+int64(b.holdsRun)-b.leak))
		}
		return nil, nil
	case strings.Contains(cmd, "ip addr flush dev eth1"):
		for i := 0; i < 64; i++ { // ring fill at open
			b.emitSync(4096 + i)
			b.emit(verdict.EventStateHold, fmt.Sprintf("page_pool=%s page=0000000000%06x pfn=%d hold=%d", fakePool, i, 4096+i, i+1))
		}
		return nil, nil
	case strings.Contains(cmd, "operstate"):
		return []byte("up\n"), nil
	case strings.HasPrefix(cmd, "ping "):
		if b.noLink {
			return nil, errors.New("exit status 1: 3 packets transmitted, 0 received")
		}
		return []byte("3 packets transmitted, 3 packets received, 0% packet loss\n"), nil
	case strings.Contains(cmd, "/statistics"):
		return []byte(fmt.Sprintf("rx_packets %d\nrx_bytes %d\nrx_dropped 0\ntx_packets 3\ntx_bytes 180\n", b.rx, b.rx*1500)), nil
	case cmd == "cat /proc/net/snmp /proc/net/netstat":
		return os.ReadFile("../verdict/testdata/snmp/host-6.18-netns.txt")
	case strings.HasPrefix(cmd, "ethtool -S"):
		return nil, errors.New("sh: ethtool: not found")
	case strings.HasPrefix(cmd, "ethtool -K"), strings.HasPrefix(cmd, "echo 1 > /proc/sys/net/ipv4/ipfrag_time"):
		return nil, nil
	case strings.Contains(cmd, "trace_marker"):
		m := regexp.MustCompile(`ppkit: \S+ (begin|end)`).FindString(cmd)
		b.emit(verdict.EventMarker, m)
		if strings.HasSuffix(m, "begin") {
			for i := 0; i < b.holdsRun; i++ {
				b.emitSync(9000 + i)
				b.emit(verdict.EventStateHold, fmt.Sprintf("page_pool=%s page=00000000aa%06x pfn=%d hold=%d", fakePool, i, 9000+i, 65+i))
			}
			for i := 0; i < 10; i++ {
				b.emit(verdict.EventSKBReturn, fmt.Sprintf("page_pool=%s page=00000000bb pfn=4100", fakePool))
				b.emit("page_pool_put_page", fmt.Sprintf("(page_pool_put_page+0x0/0x1a0) dma=0x%x sync=4294967295 direct=0", 4100<<12))
				b.emitSync(4100)
				b.emit("kfree_skb", "skbaddr=00000000cc protocol=2048 location=00000000dd")
			}
			b.rx += b.packets
			if b.dieInRun { // the hook hands the pool a page it never held, and the kernel dies
				b.emit(verdict.EventSKBReturn, fmt.Sprintf("page_pool=%s page=00000000ee pfn=777777", fakePool))
				b.dead = true
				b.console = []verdict.ConsoleReport{{Title: "kernel BUG in kfree", Report: "kernel BUG at mm/slub.c:4140!"}}
				for _, p := range b.procs { // everything over SSH ends with the guest
					p.once.Do(func() { close(p.done) })
				}
				b.traceOut = nil
			}
		}
		return nil, nil
	case strings.HasPrefix(cmd, "cat /proc/net/"):
		state := "07" // UDP sockets are "closed"; TCP listeners are 0A
		if strings.HasSuffix(cmd, "tcp") {
			state = "0A"
		}
		out := "  sl  local_address rem_address   st\n  1: 00000000:1389 00000000:0000 " + state + " 00000000:00000000\n"
		for _, p := range b.procs { // every started server listens on its own port
			if m := portRE.FindStringSubmatch(p.cmd); m != nil {
				var port int
				fmt.Sscan(m[1], &port)
				out += fmt.Sprintf("  2: 00000000:%04X 00000000:0000 %s 00000000:00000000\n", port, state)
			}
		}
		return []byte(out), nil
	case strings.Contains(cmd, "rps_cpus"):
		return []byte(RPSCPUs + "\n"), nil
	case b.iptables && strings.Contains(cmd, "iptables-legacy -t mangle -A"):
		return nil, nil
	case b.iptables && strings.Contains(cmd, "iptables-legacy -t mangle -L PREROUTING"):
		return []byte("Chain PREROUTING (policy ACCEPT 0 packets, 0 bytes)\n pkts bytes target prot opt in out source destination\n  812 1190000 TEE udp -- eth1 * 0.0.0.0/0 0.0.0.0/0 TEE gw:192.168.200.2\n"), nil
	case strings.Contains(cmd, "tracing_on"):
		return nil, nil
	case strings.Contains(cmd, "per_cpu"):
		b.statsReads++
		if b.statsReads == 1 { // the reader has not caught up yet on the first look
			return []byte("entries: 5\noverrun: 0\nentries: 0\noverrun: 0\n"), nil
		}
		return []byte("entries: 0\noverrun: 0\nentries: 0\noverrun: 0\n"), nil
	case strings.HasPrefix(cmd, "wc -c"):
		return []byte("8388608\n"), nil
	case strings.Contains(cmd, "command -v iptables"):
		if b.iptables {
			return []byte("/usr/sbin/iptables-legacy\n"), nil
		}
		return nil, errors.New("exit status 1")
	case strings.HasPrefix(cmd, "mkdir -p"):
		return nil, nil
	}
	if m := killRE.FindStringSubmatch(cmd); m != nil {
		if p := b.procs[strings.Trim(m[2], "'")]; p != nil {
			p.once.Do(func() {
				switch {
				case strings.Contains(p.cmd, "iperf -s"):
					data, _ := os.ReadFile("testdata/iperf/udp-mcast-server.txt")
					p.stdout.Write(data)
				case strings.Contains(p.cmd, "pktlisten"):
					fmt.Fprintln(p.stdout, "pktlisten: packets=2010 bytes=3000000")
				case strings.Contains(p.cmd, "splicerecv"):
					fmt.Fprintln(p.stdout, "splicerecv: bytes=4000000 usec=1000000")
				case strings.Contains(p.cmd, "trace_pipe"):
					b.traceOut = nil
				}
				close(p.done)
			})
		}
		return nil, nil
	}
	return nil, fmt.Errorf("fake board: unexpected command %q", cmd)
}

func (b *fakeBoard) Start(ctx context.Context, cmd string, stdout, stderr io.Writer) (Process, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ran = append(b.ran, cmd)
	m := startRE.FindStringSubmatch(cmd)
	if m == nil {
		return nil, fmt.Errorf("fake board: start without a pid file: %q", cmd)
	}
	p := &fakeProc{cmd: m[2], stdout: stdout, done: make(chan struct{})}
	b.procs[strings.Trim(m[1], "'")] = p
	if strings.Contains(m[2], "trace_pipe") {
		b.traceOut = stdout
	}
	return p, nil
}

func (b *fakeBoard) CopyTo(ctx context.Context, local, remote string, mode uint32) error {
	if _, err := os.Stat(local); err != nil {
		return err
	}
	b.mu.Lock()
	b.ran = append(b.ran, "copy "+remote)
	b.mu.Unlock()
	return nil
}
func (b *fakeBoard) CopyFrom(ctx context.Context, remote, local string) error {
	return errors.New("not used")
}
func (b *fakeBoard) Interface() string { return "eth1" }
func (b *fakeBoard) Arch() string      { return runtime.GOARCH }
func (b *fakeBoard) ConsoleLog() []byte {
	return []byte("[    0.000000] Booting Linux on physical CPU 0x0\n")
}
func (b *fakeBoard) ConsoleReports() []verdict.ConsoleReport { return b.console }

type fakeClient struct{ scpErr error }

func (c *fakeClient) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) > 1 && argv[0] == "iperf" && argv[1] == "-c" {
		if argv[2] == MulticastGroup {
			return os.ReadFile("testdata/iperf/udp-mcast-client.txt")
		}
		return os.ReadFile("testdata/iperf/tcp-client.txt")
	}
	return nil, nil
}
func (c *fakeClient) Start(ctx context.Context, argv []string, stdout, stderr io.Writer) (Process, error) {
	return nil, errors.New("not used")
}
func (c *fakeClient) Interface() string { return "tap0" }
func (c *fakeClient) CopyToBoard(ctx context.Context, local, remote string) error {
	return c.scpErr
}

type fakeTestbed struct {
	board  *fakeBoard
	client *fakeClient
	closed bool
}

func (t *fakeTestbed) Board() Board   { return t.board }
func (t *fakeTestbed) Client() Client { return t.client }
func (t *fakeTestbed) Close() error   { t.closed = true; return nil }

// okModel is a model that found nothing and predicts what the trace shows.
func okModel(ctx context.Context, in verdict.ModelInput) (*verdict.ModelReport, error) {
	m, err := verdict.CheckTraceWithModel(ctx, in)
	var nt *gomodel.NotATraceError
	if m == nil || err != nil && !errors.As(err, &nt) {
		return nil, err
	}
	tf := m.Trace
	return &verdict.ModelReport{Trace: tf, Predicted: verdict.ModelFigures{HoldsInWindow: tf.HoldsInWindow, SKBReturns: tf.SKBReturns, Releases: tf.Releases}}, nil
}

func runFake(t *testing.T, b *fakeBoard, p Procedure, model verdict.ModelChecker) *verdict.Result {
	t.Helper()
	fastTimers(t)
	tb := &fakeTestbed{board: b, client: &fakeClient{}}
	dir := t.TempDir()
	helpers := map[string]string{}
	for _, h := range p.Helpers() {
		helpers[h] = filepath.Join(dir, "helper-"+h)
		os.WriteFile(helpers[h], []byte("x"), 0o755)
	}
	res := &verdict.Result{Procedure: p.Name()}
	RunProcedure(context.Background(), tb, p, res, ProcedureConfig{Options: Options{Duration: time.Second, RateMbit: 10},
		Dir: dir, Helpers: helpers, Model: model, Kernel: Kernel{Series: "/src/patches"}})
	artifacts := []string{"trace.txt", "console.txt"}
	if len(res.Reasons) == 0 || (res.Reasons[0].Kind != verdict.ReasonProcedure && res.Reasons[0].Kind != verdict.ReasonInfra) {
		artifacts = append(artifacts, "before-snmp.txt", "after-interface.txt")
	}
	for _, f := range artifacts {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("artifact %s missing: %v", f, err)
		}
	}
	return res
}

// fastTimers shortens the runner's waits for the scripted board, which answers at once.
func fastTimers(t *testing.T) {
	drain, quiet, settle := PoolDrainTimeout, traceQuiet, serverSettle
	PoolDrainTimeout, traceQuiet, serverSettle = 500*time.Millisecond, 50*time.Millisecond, 0
	t.Cleanup(func() { PoolDrainTimeout, traceQuiet, serverSettle = drain, quiet, settle })
}

func TestRunProcedureClean(t *testing.T) {
	b := newFakeBoard()
	res := runFake(t, b, &Multicast{}, okModel)
	if !res.Pass {
		t.Fatalf("reasons %v", res.Reasons)
	}
	f := res.Figures
	if f.Packets != 2000 || f.SlowPathAllocs != 6 || f.SlowPathPer1000 != 3 || f.SKBReturns != 10 || f.Holds != 70 {
		t.Errorf("figures %+v", f)
	}
	if res.Traffic.Datagrams != 26753-22 || len(res.Pools) != 1 || !res.Pools[0].Destroyed {
		t.Errorf("traffic %+v pools %+v", res.Traffic, res.Pools)
	}
	if !strings.Contains(strings.Join(res.Notes, "\n"), "ethtool -S eth1") {
		t.Errorf("the missing ethtool is not noted: %v", res.Notes)
	}
	// Order: helpers copied, link down before tracing, trace reader, link up, ping, listener
	// and server, begin marker, end marker, link down, tracing off.
	order := []string{"copy ", "ip link set dev eth1 down", "buffer_size_kb", "trace_pipe", "ip addr flush dev eth1",
		"ping -c 3 -W 2 192.168.200.2", "pktlisten", "iperf -s -u -B 226.94.1.1 -i 1", "multicast begin", "multicast end", "ip link set dev eth1 down", "echo 0 > /sys/kernel/tracing/tracing_on"}
	i := 0
	for _, cmd := range b.ran {
		if i < len(order) && strings.Contains(cmd, order[i]) {
			i++
		}
	}
	if i != len(order) {
		t.Errorf("step %q not reached in order; commands:\n%s", order[i], strings.Join(b.ran, "\n"))
	}
}

func TestRunProcedureVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*fakeBoard)
		model verdict.ModelChecker
		proc  Procedure
		kind  string
	}{
		{"inflight leak", func(b *fakeBoard) { b.leak = 2 }, okModel, &Multicast{}, verdict.ReasonInflight},
		{"console report", func(b *fakeBoard) {
			b.console = []verdict.ConsoleReport{{Title: "BUG: Bad page state in process swapper/0", Report: "BUG: Bad page state…"}}
		}, okModel, &Multicast{}, verdict.ReasonConsole},
		{"model error", func(*fakeBoard) {}, func(ctx context.Context, in verdict.ModelInput) (*verdict.ModelReport, error) {
			return nil, errors.New("model: trace line 9: malformed")
		}, &Multicast{}, verdict.ReasonModelError},
		{"model sees the leak", func(b *fakeBoard) { b.leak = 1 }, verdict.CheckTraceWithModel, &Multicast{}, verdict.ReasonViolation},
		{"model violation", func(*fakeBoard) {}, func(ctx context.Context, in verdict.ModelInput) (*verdict.ModelReport, error) {
			return &verdict.ModelReport{Violations: []verdict.ModelViolation{{Name: "foreign-page-returned", Detail: "pfn 4100"}}}, nil
		}, &Multicast{}, verdict.ReasonViolation},
		{"no traffic", func(b *fakeBoard) { b.packets = 0 }, okModel, &Multicast{}, verdict.ReasonNoTraffic},
		{"no ping across the link", func(b *fakeBoard) { b.noLink = true }, okModel, &Multicast{}, verdict.ReasonProcedure},
		{"copy without iptables", func(*fakeBoard) {}, okModel, &Copy{}, verdict.ReasonProcedure},
		{"forward without a second client", func(*fakeBoard) {}, okModel, &Forward{}, verdict.ReasonProcedure},
		{"kernel dies: the model still judges the trace", func(b *fakeBoard) { b.dieInRun = true }, verdict.CheckTraceWithModel,
			&Multicast{}, verdict.ReasonViolation},
		{"kernel dies: console report", func(b *fakeBoard) { b.dieInRun = true }, verdict.CheckTraceWithModel, &Multicast{}, verdict.ReasonConsole},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBoard()
			tc.setup(b)
			res := runFake(t, b, tc.proc, tc.model)
			if res.Pass {
				t.Fatal("passed")
			}
			found := false
			for _, r := range res.Reasons {
				found = found || r.Kind == tc.kind
			}
			if !found {
				t.Errorf("reasons %v lack %s", res.Reasons, tc.kind)
			}
			// The trace reader is always stopped, even after an early failure.
			if b.traceOut != nil {
				t.Error("trace reader left running")
			}
		})
	}
}

type fakeLauncher struct {
	boards  []*fakeTestbed
	fail    error
	prepare func(*fakeBoard) // if set, adjusts each new board
}

func (l *fakeLauncher) Launch(ctx context.Context, k Kernel, progress io.Writer) (Testbed, error) {
	if l.fail != nil {
		return nil, l.fail
	}
	tb := &fakeTestbed{board: newFakeBoard(), client: &fakeClient{}}
	if k.Baseline { // the baseline kernel allocates a page per packet
		tb.board.holdsRun = 2000
	}
	if l.prepare != nil {
		l.prepare(tb.board)
	}
	l.boards = append(l.boards, tb)
	return tb, nil
}

func TestRunCompareBaseline(t *testing.T) {
	fastTimers(t)
	l := &fakeLauncher{}
	sum, err := Run(context.Background(), Config{Procedures: []string{"tcp"}, Kernel: Kernel{Series: "/src/patches"},
		CompareBaseline: true, Options: Options{Duration: time.Second, RateMbit: 10}, ArtifactDir: t.TempDir(),
		Launcher: l, Model: okModel, CacheRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.boards) != 2 || !l.boards[0].closed || !l.boards[1].closed {
		t.Errorf("testbeds %d, closed %v", len(l.boards), l.boards)
	}
	if !sum.Pass || len(sum.Baseline) != 1 || len(sum.Results) != 1 {
		t.Fatalf("summary pass=%v baseline=%d results=%d: %v %v", sum.Pass, len(sum.Baseline), len(sum.Results),
			sum.Baseline[0].Reasons, sum.Results[0].Reasons)
	}
	var slow *verdict.FigureChange
	for i := range sum.Comparison {
		if sum.Comparison[i].Figure == "slow_path_per_1000" {
			slow = &sum.Comparison[i]
		}
	}
	if slow == nil || slow.Previous != 1000 || slow.Current != 3 {
		t.Errorf("slow-path comparison %+v", slow)
	}
	if !strings.Contains(strings.Join(sum.Results[0].Traffic.Notes, " "), "scp: 8388608 bytes") {
		t.Errorf("the scp step did not run: %v", sum.Results[0].Traffic.Notes)
	}
}

func TestRunLaunchFailure(t *testing.T) {
	sum, err := Run(context.Background(), Config{Procedures: []string{"multicast", "tcp"}, Kernel: Kernel{Baseline: true},
		Options: DefaultOptions, ArtifactDir: t.TempDir(), Launcher: &fakeLauncher{fail: errors.New("qemu: no mvneta device")},
		Model: okModel, CacheRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Pass || len(sum.Results) != 2 || sum.Results[0].Reasons[0].Kind != verdict.ReasonInfra || len(sum.Results[0].Reasons) != 1 {
		t.Errorf("summary %+v / %v", sum, sum.Results[0].Reasons)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"unknown procedure": {Procedures: []string{"nope"}, Launcher: &fakeLauncher{}, Options: DefaultOptions},
		"no launcher":       {Options: DefaultOptions},
		"zero duration":     {Launcher: &fakeLauncher{}, Options: Options{RateMbit: 1}},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestDefragExpiresQueuesBeforeTheDrain: fragment queues of lost datagrams hold pool heads until
// ipfrag_time; defrag shortens it before any traffic, so that the pool drain judges a leak, not
// the reassembly timer.
func TestDefragExpiresQueuesBeforeTheDrain(t *testing.T) {
	b := newFakeBoard()
	res := runFake(t, b, &Defrag{}, okModel)
	if !res.Pass {
		t.Fatalf("reasons %v", res.Reasons)
	}
	set, server := -1, -1
	for i, cmd := range b.ran {
		switch {
		case strings.Contains(cmd, "ipfrag_time") && set < 0:
			set = i
		case strings.Contains(cmd, "iperf -s -u -l 8000") && server < 0:
			server = i
		}
	}
	if set < 0 || server < 0 || set > server {
		t.Errorf("ipfrag_time set at step %d, server started at %d; commands:\n%s", set, server, strings.Join(b.ran, "\n"))
	}
}
