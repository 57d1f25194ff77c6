// Package boardtest is a scripted board for the unit tests of the procedures' runner and of
// what drives it (the mutation suite): a Board that answers the runner's commands the way a
// 5.10 guest with one mvneta pool would, with its Client, Testbed and Launcher, so that
// procedure.Run and procedure.RunProcedure are tested without QEMU. The real back-end is
// covered by the end-to-end tests (tests/procedure's e2e tests boot the real board, or a
// network namespace as a stand-in). Only tests import it.
package boardtest

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
	"github.com/ppkit/ppkit/tests/procedure"
	"github.com/ppkit/ppkit/tests/verdict"
)

// Board is a scripted stand-in for the QEMU guest (syzkaller's "test" VM pattern). Its exported
// fields are the knobs a test sets before the run, and Ran the commands it was given.
type Board struct {
	mu         sync.Mutex
	rx         uint64
	traceOut   io.Writer // the running trace_pipe reader's stdout
	traceDone  chan struct{}
	procs      map[string]*process // by pid file
	Ran        []string            // every command run or started, in order
	clock      float64
	statsReads int
	DieInRun   bool // during the traffic, the hook returns a foreign page and the kernel dies
	dead       bool
	NoLink     bool // pings go unanswered
	// Behaviour knobs.
	Leak     int64                   // inflight the pool reports after destroy
	Packets  uint64                  // received per traffic run
	HoldsRun int                     // slow-path allocations per traffic run
	Console  []verdict.ConsoleReport // what ConsoleReports returns
	IPTables bool                    // the image has iptables (the copy procedure's TEE rule)
}

type process struct {
	cmd    string
	stdout io.Writer
	done   chan struct{}
	once   sync.Once
}

func (p *process) Wait() error { <-p.done; return nil }

// NewBoard is a board whose pool drains: 2000 packets and 6 slow-path allocations a run.
func NewBoard() *Board {
	return &Board{procs: map[string]*process{}, Packets: 2000, HoldsRun: 6, clock: 100}
}

const fakePool = "00000000feed0001"

func (b *Board) emit(event, fields string) {
	b.clock += 0.001
	if b.traceOut != nil {
		fmt.Fprintf(b.traceOut, "%16s-%-7d [%03d] %s %12.6f: %s: %s\n", "<idle>", 0, 0, "..s.", b.clock, event, fields)
	}
}

// emitSync traces page_pool's arch_sync_dma_for_device of a page (the kprobe event), as the
// slow path does before its hold and page_pool_put_page after a return.
func (b *Board) emitSync(pfn int) {
	b.emit("arch_sync_dma_for_device", fmt.Sprintf("(arch_sync_dma_for_device+0x0/0x20) paddr=0x%x size=3776 dir=2", pfn<<12+0x100))
}

var (
	startRE = regexp.MustCompile(`echo \$\$ > (\S+) && (.*&& )?exec (.*)$`)
	portRE  = regexp.MustCompile(`(?:-p |recv )(\d+)`) // a server's port: iperf -p N, splicerecv N
	killRE  = regexp.MustCompile(`kill -(TERM|KILL) \$\(cat (\S+)\)`)
)

func (b *Board) Run(ctx context.Context, cmd string) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.Ran = append(b.Ran, cmd)
	if b.dead {
		return nil, errors.New("ssh: EOF")
	}
	switch {
	case strings.Contains(cmd, "buffer_size_kb"):
		return nil, nil
	case strings.Contains(cmd, snapshotSection):
		return b.snapshot(cmd)
	case strings.HasPrefix(cmd, "ip link set dev eth1 down"):
		if b.traceOut != nil { // destroy: one release event per retry, as 5.10 does
			b.emit(verdict.EventPoolRelease, fmt.Sprintf("page_pool=%s inflight=%d hold=%d release=%d cnt=0", fakePool, b.Leak, 64+b.HoldsRun, 64+int64(b.HoldsRun)-b.Leak))
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
		if b.NoLink {
			return nil, errors.New("exit status 1: 3 packets transmitted, 0 received")
		}
		return []byte("3 packets transmitted, 3 packets received, 0% packet loss\n"), nil
	case strings.HasPrefix(cmd, "ethtool -K"), strings.HasPrefix(cmd, "echo 1 > /proc/sys/net/ipv4/ipfrag_time"):
		return nil, nil
	case strings.Contains(cmd, "trace_marker"):
		b.marker(cmd)
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
		return []byte(procedure.RPSCPUs + "\n"), nil
	case b.IPTables && strings.Contains(cmd, "iptables-legacy -t mangle -A"):
		return nil, nil
	case b.IPTables && strings.Contains(cmd, "iptables-legacy -t mangle -L PREROUTING"):
		return []byte("Chain PREROUTING (policy ACCEPT 0 packets, 0 bytes)\n pkts bytes target prot opt in out source destination\n  812 1190000 TEE udp -- eth1 * 0.0.0.0/0 0.0.0.0/0 TEE gw:192.168.200.2\n"), nil
	case strings.Contains(cmd, "tracing_on"):
		return nil, nil
	case strings.Contains(cmd, "per_cpu"):
		b.statsReads++
		if b.statsReads == 1 { // the reader has not caught up yet on the first look
			return []byte("entries: 5\noverrun: 0\nentries: 0\noverrun: 0\n"), nil
		}
		return []byte("entries: 0\noverrun: 0\nentries: 0\noverrun: 0\n"), nil
	case strings.HasPrefix(cmd, "stat -c %s"):
		return []byte("8388608\n"), nil
	case strings.Contains(cmd, "command -v iptables"):
		if b.IPTables {
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
					data, _ := readData("testdata/iperf/udp-mcast-server.txt")
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

// snapshotSection separates the parts of the runner's counters command (one board command:
// the interface's statistics, /proc/net/snmp and netstat, ethtool -S, between the markers).
const snapshotSection = "@@ppkit-snapshot "

// snapshot answers the runner's counters command the way the guest's shell would: the end
// marker before the counters, the begin marker after them. The image has no ethtool.
func (b *Board) snapshot(cmd string) ([]byte, error) {
	counters := strings.Index(cmd, "/statistics")
	if m := strings.Index(cmd, "trace_marker"); m >= 0 && m < counters {
		b.marker(cmd)
	}
	snmp, err := os.ReadFile("../verdict/testdata/snmp/host-6.18-netns.txt")
	if err != nil {
		return nil, err
	}
	out := fmt.Sprintf("rx_packets %d\nrx_bytes %d\nrx_dropped 0\ntx_packets 3\ntx_bytes 180\n", b.rx, b.rx*1500) +
		snapshotSection + "snmp\n" + string(snmp) +
		snapshotSection + "ethtool\nsh: ethtool: not found\n" + snapshotSection + "ethtool-status 127\n"
	if m := strings.LastIndex(cmd, "trace_marker"); m > counters {
		b.marker(cmd)
	}
	return []byte(out), nil
}

// marker traces the marker cmd writes, and at the begin marker the traffic of a run.
func (b *Board) marker(cmd string) {
	m := regexp.MustCompile(`ppkit: \S+ (begin|end)`).FindString(cmd)
	b.emit(verdict.EventMarker, m)
	if strings.HasSuffix(m, "begin") {
		for i := 0; i < b.HoldsRun; i++ {
			b.emitSync(9000 + i)
			b.emit(verdict.EventStateHold, fmt.Sprintf("page_pool=%s page=00000000aa%06x pfn=%d hold=%d", fakePool, i, 9000+i, 65+i))
		}
		for i := 0; i < 10; i++ {
			b.emit(verdict.EventSKBReturn, fmt.Sprintf("page_pool=%s page=00000000bb pfn=4100", fakePool))
			b.emit("page_pool_put_page", fmt.Sprintf("(page_pool_put_page+0x0/0x1a0) dma=0x%x sync=4294967295 direct=0", 4100<<12))
			b.emitSync(4100)
			b.emit("kfree_skb", "skbaddr=00000000cc protocol=2048 location=00000000dd")
		}
		b.rx += b.Packets
		if b.DieInRun { // the hook hands the pool a page it never held, and the kernel dies
			b.emit(verdict.EventSKBReturn, fmt.Sprintf("page_pool=%s page=00000000ee pfn=777777", fakePool))
			b.dead = true
			b.Console = []verdict.ConsoleReport{{Title: "kernel BUG in kfree", Report: "kernel BUG at mm/slub.c:4140!"}}
			for _, p := range b.procs { // everything over SSH ends with the guest
				p.once.Do(func() { close(p.done) })
			}
			b.traceOut = nil
		}
	}
}

func (b *Board) Start(ctx context.Context, cmd string, stdout, stderr io.Writer) (procedure.Process, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.Ran = append(b.Ran, cmd)
	m := startRE.FindStringSubmatch(cmd)
	if m == nil {
		return nil, fmt.Errorf("fake board: start without a pid file: %q", cmd)
	}
	// The trace reader filters its own page frees before it starts, by its pid ($$).
	if strings.Contains(m[3], "trace_pipe") && !strings.Contains(m[2], `"common_pid != $$ || common_flags & 88" > /sys/kernel/tracing/events/kmem/mm_page_free/filter`) {
		return nil, fmt.Errorf("fake board: the trace reader starts without its filter: %q", cmd)
	}
	p := &process{cmd: m[3], stdout: stdout, done: make(chan struct{})}
	b.procs[strings.Trim(m[1], "'")] = p
	if strings.Contains(m[3], "trace_pipe") {
		b.traceOut = stdout
	}
	return p, nil
}

func (b *Board) CopyTo(ctx context.Context, local, remote string, mode uint32) error {
	if _, err := os.Stat(local); err != nil {
		return err
	}
	b.mu.Lock()
	b.Ran = append(b.Ran, "copy "+remote)
	b.mu.Unlock()
	return nil
}
func (b *Board) CopyFrom(ctx context.Context, remote, local string) error {
	return errors.New("not used")
}
func (b *Board) Interface() string { return "eth1" }
func (b *Board) Arch() string      { return runtime.GOARCH }
func (b *Board) ConsoleLog() []byte {
	return []byte("[    0.000000] Booting Linux on physical CPU 0x0\n")
}
func (b *Board) ConsoleReports() []verdict.ConsoleReport { return b.Console }

// Client is the scripted client: its iperf clients print real iperf output.
type Client struct{ scpErr error }

func (c *Client) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) > 1 && argv[0] == "iperf" && argv[1] == "-c" {
		if argv[2] == procedure.MulticastGroup {
			return readData("testdata/iperf/udp-mcast-client.txt")
		}
		return readData("testdata/iperf/tcp-client.txt")
	}
	return nil, nil
}
func (c *Client) Start(ctx context.Context, argv []string, stdout, stderr io.Writer) (procedure.Process, error) {
	return nil, errors.New("not used")
}
func (c *Client) Interface() string { return "tap0" }
func (c *Client) CopyToBoard(ctx context.Context, local, remote string) error {
	return c.scpErr
}

// Testbed is a scripted board with its client.
type Testbed struct {
	Scripted *Board
	client   *Client
	Closed   bool // Close was called
}

func (t *Testbed) Board() procedure.Board   { return t.Scripted }
func (t *Testbed) Client() procedure.Client { return t.client }
func (t *Testbed) Close() error             { t.Closed = true; return nil }

// OKModel is a model that found nothing and predicts what the trace shows.
func OKModel(ctx context.Context, in verdict.ModelInput) (*verdict.ModelReport, error) {
	m, err := verdict.CheckTraceWithModel(ctx, in)
	var nt *gomodel.NotATraceError
	if m == nil || err != nil && !errors.As(err, &nt) {
		return nil, err
	}
	tf := m.Trace
	return &verdict.ModelReport{Trace: tf, Predicted: verdict.ModelFigures{HoldsInWindow: tf.HoldsInWindow, SKBReturns: tf.SKBReturns, Releases: tf.Releases}}, nil
}

// FastTimers shortens the runner's waits for the scripted board, which answers at once.
func FastTimers(t *testing.T) {
	drain, quiet, settle := procedure.PoolDrainTimeout, procedure.TraceQuiet, procedure.ServerSettle
	procedure.PoolDrainTimeout, procedure.TraceQuiet, procedure.ServerSettle = 500*time.Millisecond, 50*time.Millisecond, 0
	t.Cleanup(func() {
		procedure.PoolDrainTimeout, procedure.TraceQuiet, procedure.ServerSettle = drain, quiet, settle
	})
}

// Launcher boots scripted boards; a baseline kernel's board allocates a page per packet.
type Launcher struct {
	Testbeds []*Testbed
	Fail     error
	Prepare  func(*Board) // if set, adjusts each new board
}

func (l *Launcher) Launch(ctx context.Context, k procedure.Kernel, progress io.Writer) (procedure.Testbed, error) {
	if l.Fail != nil {
		return nil, l.Fail
	}
	tb := NewTestbed(NewBoard())
	if k.Baseline { // the baseline kernel allocates a page per packet
		tb.Scripted.HoldsRun = 2000
	}
	if l.Prepare != nil {
		l.Prepare(tb.Scripted)
	}
	l.Testbeds = append(l.Testbeds, tb)
	return tb, nil
}

// readData reads a file of tests/procedure, found from this file's place: the board answers the
// same in every package's tests, whatever their directory.
func readData(rel string) ([]byte, error) {
	_, self, _, _ := runtime.Caller(0)
	return os.ReadFile(filepath.Join(filepath.Dir(self), "..", rel))
}

// TraceReaderRunning says whether the runner's trace_pipe reader still runs on the board.
func (b *Board) TraceReaderRunning() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.traceOut != nil
}

// NewTestbed is a testbed of b and a scripted client.
func NewTestbed(b *Board) *Testbed { return &Testbed{Scripted: b, client: &Client{}} }
