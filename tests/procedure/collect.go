package procedure

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/tests/verdict"
)

// tracefs is where the guest's ftrace lives (mounted there by the runner if needed).
const tracefs = "/sys/kernel/tracing"

// TraceEvents are the tracepoints enabled during a procedure, relative to tracefs/events.
// page_pool/ covers 5.10's events and the series' page_pool_skb_return; kmem's page-free events
// let the model see a pool page reach the page allocator while still DMA-mapped. The events of
// gomodel.TraceEventsSystem, which ppkit adds to every kernel it builds, are enabled beside them.
// Only events the model reads are traced: each one costs the guest (the skb/ group, one or two
// events a packet that nothing read, took 3 % of multicast's throughput).
var TraceEvents = []string{"page_pool", "kmem/mm_page_free", "kmem/mm_page_free_batched"}

// TraceBufferKB is the per-CPU ring size when the trace leaves as text: the page_pool and kmem
// events come at several per packet, and trace_pipe is drained over SSH, so the buffer absorbs
// the bursts. GRO bulk TCP on the series (hold, release and free for every merged head)
// overflowed 32 MiB in 10 s under TCG.
const TraceBufferKB = 131072

// RawTraceBufferKB is the per-CPU ring size when the trace leaves as pages (TracePortBoard):
// tracepages empties the ring every 50 ms without formatting anything, and the 128 MiB of the
// text transport took 0.6 s to allocate under TCG at every set-up.
const RawTraceBufferKB = 32768

// tracingSetupScript resets tracefs and enables TraceEvents (without starting the clock), with
// a per-CPU ring of bufferKB.
func tracingSetupScript(bufferKB int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "set -e; [ -d %[1]s/events ] || mount -t tracefs nodev %[1]s; cd %[1]s\n", tracefs)
	b.WriteString("echo 0 > tracing_on; echo 0 > events/enable; echo > trace\n")
	// ppkit's own events (gomodel.TraceEventsSystem): the DMA syncs for the device page_pool
	// owns, and every page_pool_put_page with its allow_direct.
	fmt.Fprintf(&b, "[ -e events/%[1]s/page_pool_put_page/enable ] || { echo \"no %[1]s/page_pool_put_page in %[2]s/events: the guest kernel was not built by ppkit, which adds the event (%[3]s)\" >&2; exit 3; }\n",
		gomodel.TraceEventsSystem, tracefs, harness.TraceEventsFile)
	for _, e := range TraceEvents {
		if strings.HasPrefix(e, "kmem/") {
			fmt.Fprintf(&b, "echo 0 > events/%s/filter\n", e)
		}
	}
	fmt.Fprintf(&b, "echo %d > buffer_size_kb\n", bufferKB)
	for _, e := range TraceEvents {
		fmt.Fprintf(&b, "[ -e events/%[1]s/enable ] || { echo \"no tracepoint %[1]s in %[2]s/events: the guest kernel needs CONFIG_FTRACE and CONFIG_PAGE_POOL\" >&2; exit 3; }\n", e, tracefs)
		fmt.Fprintf(&b, "echo 1 > events/%s/enable\n", e)
	}
	fmt.Fprintf(&b, "echo 1 > events/%s/enable\n", gomodel.TraceEventsSystem)
	b.WriteString("echo 1 > tracing_on\n")
	return b.String()
}

// collector gathers one procedure's artifacts from the board into dir. The trace comes as
// ring-buffer pages over the board's trace ports (TracePortBoard), or else as text.
type collector struct {
	env    *Env
	name   string
	reader *guestProcess // the guest's trace reader: tracepages, or cat trace_pipe
	trace  string        // host path of the trace as text, once there is one
	ports  tracePorts    // the raw transport, when the board has trace ports
	raw    *verdict.RawTrace
	off    bool // an untraced run: no tracepoints, no markers
}

// startTracing takes the test NIC down (destroying pools created before the trace), enables
// the tracepoints and starts copying the trace: the pages to the ports, or trace_pipe's text
// into dir/trace.txt.
func (c *collector) startTracing(ctx context.Context) error {
	if c.off {
		return nil
	}
	b := c.env.Board
	if _, err := b.Run(ctx, "ip link set dev "+shellQuote(b.Interface())+" down"); err != nil {
		return fmt.Errorf("take %s down before tracing: %w", b.Interface(), err)
	}
	pb, raw := b.(TracePortBoard)
	raw = raw && len(pb.TracePorts()) > 0
	if raw {
		return c.startPorts(ctx, pb.TracePorts(), tracingSetupScript(RawTraceBufferKB))
	}
	if _, err := b.Run(ctx, tracingSetupScript(TraceBufferKB)); err != nil {
		return fmt.Errorf("enable tracepoints: %w", err)
	}
	r, err := startGuestAfter(ctx, c.env, "trace", readerFilterScript(), "cat "+tracefs+"/trace_pipe")
	if err != nil {
		return err
	}
	c.reader, c.trace = r, filepath.Join(c.env.Dir, "trace.txt")
	return nil
}

// readerFilter keeps the page-free events of every context except the trace reader's own
// process context: reading trace_pipe frees a page per page of trace, which would otherwise
// be most of the trace. Interrupt, softirq and NMI context (common_flags HARDIRQ|SOFTIRQ|NMI)
// is kept even when the reader is current, because that is where pool pages are freed; the
// reader itself never touches an skb.
func readerFilter(pid string) string {
	return fmt.Sprintf("common_pid != %s || common_flags & %d", pid, 0x08|0x10|0x40)
}

// readerFilterScript applies readerFilter to the kmem events. It is run by the shell that then
// execs the trace reader (startGuestAfter), where $$ is already the reader's pid: the filter
// is in place before the reader frees its first page.
func readerFilterScript() string {
	var b strings.Builder
	for _, e := range TraceEvents {
		if strings.HasPrefix(e, "kmem/") {
			fmt.Fprintf(&b, "echo \"%s\" > %s/events/%s/filter && ", readerFilter("$$"), tracefs, e)
		}
	}
	return b.String()
}

// sleepCtx sleeps for d, or until ctx ends (then it returns ctx's error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// markCmd is the board command that writes the edge marker into the trace ("" untraced).
func (c *collector) markCmd(edge string) string {
	if c.off {
		return ""
	}
	return fmt.Sprintf("echo %s > %s/trace_marker", shellQuote(gomodel.MarkerText(c.name, edge)), tracefs)
}

// snapshotSection separates the parts of snapshot's output.
const snapshotSection = "@@ppkit-snapshot "

// snapshot reads the counters, in one board command between pre and post (board commands, ""
// for none: the trace markers, so that the counters and the marked trace cover the same
// traffic), and saves the raw text as dir/<label>-*.txt. ethtool -S is optional (a note is
// returned when it fails); the other two are required.
func (c *collector) snapshot(ctx context.Context, label, pre, post string) (verdict.Snapshot, []string, error) {
	var s verdict.Snapshot
	var notes []string
	b := c.env.Board
	save := func(what string, data []byte) {
		os.WriteFile(filepath.Join(c.env.Dir, label+"-"+what+".txt"), data, 0o644)
	}
	cmd := interfaceCountersCmd(b.Interface()) +
		" && echo " + snapshotSection + "snmp && cat /proc/net/snmp /proc/net/netstat" +
		" && echo " + snapshotSection + "ethtool && { ethtool -S " + shellQuote(b.Interface()) + " 2>&1; echo " + snapshotSection + "ethtool-status $?; }"
	if pre != "" {
		cmd = pre + " && " + cmd
	}
	if post != "" {
		cmd = cmd + " && " + post
	}
	out, err := b.Run(ctx, "set -e; "+cmd)
	if err != nil {
		return s, nil, fmt.Errorf("read the counters (%s statistics, /proc/net/snmp and netstat, ethtool -S): %w", b.Interface(), err)
	}
	iface, rest, ok1 := strings.Cut(string(out), snapshotSection+"snmp\n")
	snmp, rest, ok2 := strings.Cut(rest, snapshotSection+"ethtool\n")
	ethtool, status, ok3 := strings.Cut(rest, snapshotSection+"ethtool-status ")
	if !ok1 || !ok2 || !ok3 {
		return s, nil, fmt.Errorf("the board's counters came back incomplete: %q", out)
	}
	save("interface", []byte(iface))
	if s.Interface, err = verdict.ParseInterfaceCounters([]byte(iface)); err != nil {
		return s, nil, err
	}
	// netstat's TcpExt and IpExt come in snmp's format: one parse reads both.
	save("snmp", []byte(snmp))
	if s.SNMP, err = verdict.ParseSNMP([]byte(snmp)); err != nil {
		return s, nil, err
	}
	if st := strings.TrimSpace(status); st != "0" {
		notes = append(notes, fmt.Sprintf("ethtool -S %s: exit status %s: %s", b.Interface(), st, strings.TrimSpace(ethtool)))
	} else {
		save("ethtool", []byte(ethtool))
		if s.Ethtool, err = verdict.ParseEthtoolStats([]byte(ethtool)); err != nil {
			notes = append(notes, err.Error())
		}
	}
	return s, notes, nil
}

// PoolDrainTimeout bounds the wait for the pools to report inflight 0 after the interface
// goes down. 5.10 retries a stalled destroy every second; a pool still inflight after this long
// has leaked.
var PoolDrainTimeout = 5 * time.Second

// TraceDrainTimeout bounds the wait for the streamed trace to catch up with the kernel's ring
// buffer once tracing is off.
var TraceDrainTimeout = 3 * time.Minute

// finish takes the NIC down so every pool is destroyed, waits until the trace shows each pool
// drained to inflight 0 (or PoolDrainTimeout passes: the retries the kernel traces meanwhile
// show what is left), stops tracing, waits until the reader has handed over every buffered
// event, and stops it. It returns the ring buffer's overrun count.
func (c *collector) finish(ctx context.Context) (overrun int64, err error) {
	b := c.env.Board
	_, downErr := b.Run(ctx, "ip link set dev "+shellQuote(b.Interface())+" down")
	var drained func(context.Context) (bool, error)
	if c.ports.watch != nil {
		c.ports.stop()
		drained = func(context.Context) (bool, error) { return c.ports.watch.drained() }
	} else {
		tail := &traceTail{path: c.trace, s: gomodel.NewTraceStream(gomodel.TraceOptions{File: c.trace, Procedure: c.name})}
		drained = func(ctx context.Context) (bool, error) {
			err := tail.update(ctx)
			return err == nil && tail.s.Drained(), err
		}
	}
	deadline := time.Now().Add(PoolDrainTimeout)
	for downErr == nil && time.Now().Before(deadline) {
		if ok, err := drained(ctx); err == nil && ok {
			break
		}
		// The copier hands pages over every 50 ms: a poll every 25 ms ends the wait soon after.
		if sleepCtx(ctx, 25*time.Millisecond) != nil {
			return 0, ctx.Err()
		}
	}
	if _, err := b.Run(ctx, "echo 0 > "+tracefs+"/tracing_on"); err != nil {
		return 0, fmt.Errorf("stop tracing: %w", err)
	}
	if c.ports.watch != nil {
		raw, err := c.finishPorts(ctx)
		if err != nil {
			return 0, err
		}
		c.raw = raw
		overrun, err := waitTraceConsumed(ctx, b)
		if err == nil && downErr != nil {
			err = fmt.Errorf("take %s down after the run: %w", b.Interface(), downErr)
		}
		return overrun, err
	}
	overrun, drainErr := waitTraceConsumed(ctx, b)
	waitStable(ctx, c.trace, TraceQuiet, 30*time.Second)
	_, stopErr := c.reader.stop(ctx, c.env)
	// A reader cut off (the board died, or was stopped mid-line) leaves a partial last line.
	if err := trimPartialLine(c.trace); err != nil && stopErr == nil {
		stopErr = err
	}
	if stopErr != nil {
		return overrun, stopErr
	}
	if downErr != nil {
		return overrun, fmt.Errorf("take %s down after the run: %w", b.Interface(), downErr)
	}
	return overrun, drainErr
}

// trimPartialLine cuts a file after its last newline.
func trimPartialLine(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("trim the trace: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return err
	}
	const chunk = 64 * 1024
	buf := make([]byte, chunk)
	for end := st.Size(); end > 0; {
		start := max(end-chunk, 0)
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && err != io.EOF {
			return fmt.Errorf("trim the trace: %w", err)
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			if start+int64(i)+1 == st.Size() {
				return nil
			}
			return f.Truncate(start + int64(i) + 1)
		}
		end = start
	}
	return f.Truncate(0)
}

// traceTail follows a growing trace file, feeding complete lines to gomodel's replay (the same
// parser and pool rule as the model's verdict and the figures).
type traceTail struct {
	path    string
	off     int64
	partial []byte
	s       *gomodel.TraceStream
	err     error
}

func (t *traceTail) update(ctx context.Context) error {
	if t.err != nil {
		return t.err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.Open(t.path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(t.off, io.SeekStart); err != nil {
		return err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	t.off += int64(len(data))
	data = append(t.partial, data...)
	i := bytes.LastIndexByte(data, '\n')
	if i < 0 {
		t.partial = data
		return nil
	}
	t.partial = append([]byte(nil), data[i+1:]...)
	for n, l := range bytes.Split(data[:i], []byte("\n")) {
		// A first update reads the whole trace so far (hundreds of MB): stay stoppable.
		if n%65536 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if err := t.s.Line(l); err != nil {
			t.err = err
			return err
		}
	}
	return nil
}

// TraceQuiet is how long the streamed trace must stop growing before the reader is stopped.
var TraceQuiet = 500 * time.Millisecond

// waitStable waits until path stops growing for quiet, at most max, or until ctx ends.
func waitStable(ctx context.Context, path string, quiet, max time.Duration) {
	deadline := time.Now().Add(max)
	last, since := int64(-1), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st, err := os.Stat(path)
		if err != nil {
			return
		}
		if st.Size() != last {
			last, since = st.Size(), time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitTraceConsumed waits until the reader has taken every event out of the per-CPU ring
// buffers (their "entries:" are 0) and returns the buffers' overrun count.
func waitTraceConsumed(ctx context.Context, b Board) (int64, error) {
	deadline := time.Now().Add(TraceDrainTimeout)
	for {
		out, err := b.Run(ctx, "cat "+tracefs+"/per_cpu/cpu*/stats")
		if err != nil {
			return 0, fmt.Errorf("read trace buffer stats: %w", err)
		}
		st, err := parseTraceStats(out)
		if err != nil {
			return 0, err
		}
		if st.entries == 0 {
			return st.overrun, nil
		}
		if time.Now().After(deadline) {
			return st.overrun, fmt.Errorf("the trace reader left %d events unread after %s", st.entries, TraceDrainTimeout)
		}
		select {
		case <-ctx.Done():
			return st.overrun, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type traceStats struct{ entries, overrun int64 }

// parseTraceStats sums "entries:" and "overrun:" over the per-CPU ring buffer statistics.
func parseTraceStats(out []byte) (traceStats, error) {
	var st traceStats
	for _, l := range strings.Split(string(out), "\n") {
		name, v, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok || (name != "entries" && name != "overrun") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return st, fmt.Errorf("trace buffer stats: %s %q: %w", name, v, err)
		}
		if name == "entries" {
			st.entries += n
		} else {
			st.overrun += n
		}
	}
	return st, nil
}

// topologyUp addresses both ends of the test link and brings them up, with the multicast route
// on both sides, then waits for the board's link.
func topologyUp(ctx context.Context, env *Env) error {
	// The client's side does not wait for the board's: both at once.
	clientErr := make(chan error, 1)
	go func() {
		cif := env.Client.Interface()
		for _, argv := range [][]string{
			{"ip", "link", "set", "dev", "lo", "up"},
			{"ip", "addr", "replace", fmt.Sprintf("%s/%d", ClientIP, PrefixLen), "dev", cif},
			{"ip", "link", "set", "dev", cif, "up"},
			{"ip", "route", "replace", MulticastRoute, "dev", cif},
		} {
			if _, err := env.Client.Run(ctx, argv...); err != nil {
				clientErr <- fmt.Errorf("client: %s: %w", strings.Join(argv, " "), err)
				return
			}
		}
		clientErr <- nil
	}()
	bif := shellQuote(env.Board.Interface())
	script := fmt.Sprintf("set -e; ip addr flush dev %[1]s; ip addr add %[2]s/%[3]d dev %[1]s; ip link set dev %[1]s up; ip route replace %[4]s dev %[1]s",
		bif, BoardIP, PrefixLen, MulticastRoute)
	_, boardErr := env.Board.Run(ctx, script)
	if err := <-clientErr; err != nil {
		return err
	}
	if boardErr != nil {
		return fmt.Errorf("address the board's %s: %w", env.Board.Interface(), boardErr)
	}
	return waitOperUp(ctx, env.Board)
}

// pingBothWays pings the client from the board and the board from the client over the link
// under test (3 echoes each way; all must be answered).
func pingBothWays(ctx context.Context, env *Env) error {
	// Three echoes 50 ms apart, both ways at once: ping's default second between echoes, one
	// way after the other, cost 4 s a procedure.
	fromBoard := make(chan error, 1)
	go func() {
		_, err := env.Board.Run(ctx, "ping -c 3 -i 0.05 -W 2 "+ClientIP)
		fromBoard <- err
	}()
	_, toBoard := env.Client.Run(ctx, "ping", "-c", "3", "-i", "0.05", "-W", "2", BoardIP)
	if err := <-fromBoard; err != nil {
		return fmt.Errorf("board → client ping: %w", err)
	}
	if toBoard != nil {
		return fmt.Errorf("client → board ping: %w", toBoard)
	}
	return nil
}

// waitOperUp waits until the board's test NIC reports link up (mvneta's fixed link comes up a
// moment after `ip link set up`, and again after an MTU change).
func waitOperUp(ctx context.Context, b Board) error {
	cmd := "cat /sys/class/net/" + shellQuote(b.Interface()) + "/operstate"
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := b.Run(ctx, cmd)
		if err != nil {
			return fmt.Errorf("read %s operstate: %w", b.Interface(), err)
		}
		state := strings.TrimSpace(string(out))
		if state == "up" || state == "unknown" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still %q 15 s after it was brought up", b.Interface(), state)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// interfaceCountersCmd prints the counters verdict.ParseInterfaceCounters reads, one "name value"
// a line.
func interfaceCountersCmd(iface string) string {
	return fmt.Sprintf(`cd /sys/class/net/%s/statistics && for f in rx_packets rx_bytes rx_dropped tx_packets tx_bytes; do echo "$f $(cat $f)"; done`, shellQuote(iface))
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
