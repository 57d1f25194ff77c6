package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// tracefs is where the guest's ftrace lives (mounted there by the runner if needed).
const tracefs = "/sys/kernel/tracing"

// TraceEvents are the tracepoints enabled during a procedure, relative to tracefs/events.
// page_pool/ covers 5.10's events and the series' page_pool_skb_return; kmem's page-free events
// let the model see a pool page reach the page allocator while still DMA-mapped.
var TraceEvents = []string{"page_pool", "skb", "kmem/mm_page_free", "kmem/mm_page_free_batched"}

// TraceBufferKB is the per-CPU ring size: the kmem and skb events come at several per packet,
// and trace_pipe is drained over SSH, so the buffer absorbs the bursts.
const TraceBufferKB = 32768

// tracingSetupScript resets tracefs and enables TraceEvents (without starting the clock).
func tracingSetupScript() string {
	var b strings.Builder
	fmt.Fprintf(&b, "set -e; [ -d %[1]s/events ] || mount -t tracefs nodev %[1]s; cd %[1]s\n", tracefs)
	b.WriteString("echo 0 > tracing_on; echo 0 > events/enable; echo > trace\n")
	fmt.Fprintf(&b, "echo %d > buffer_size_kb\n", TraceBufferKB)
	for _, e := range TraceEvents {
		fmt.Fprintf(&b, "[ -e events/%[1]s/enable ] || { echo \"no tracepoint %[1]s in %[2]s/events: the guest kernel needs CONFIG_FTRACE and CONFIG_PAGE_POOL\" >&2; exit 3; }\n", e, tracefs)
		fmt.Fprintf(&b, "echo 1 > events/%s/enable\n", e)
	}
	b.WriteString("echo 1 > tracing_on\n")
	return b.String()
}

// collector gathers one procedure's artifacts from the board into dir.
type collector struct {
	env    *Env
	name   string
	reader *guestProcess
	trace  string // host path of the streamed trace
}

// startTracing takes the test NIC down (destroying pools created before the trace), enables
// the tracepoints and starts streaming trace_pipe into dir/trace.txt.
func (c *collector) startTracing(ctx context.Context) error {
	b := c.env.Board
	if _, err := b.Run(ctx, "ip link set dev "+shellQuote(b.Interface())+" down"); err != nil {
		return fmt.Errorf("take %s down before tracing: %w", b.Interface(), err)
	}
	if _, err := b.Run(ctx, tracingSetupScript()); err != nil {
		return fmt.Errorf("enable tracepoints: %w", err)
	}
	r, err := startGuest(ctx, c.env, "trace", "cat "+tracefs+"/trace_pipe")
	if err != nil {
		return err
	}
	c.reader, c.trace = r, filepath.Join(c.env.Dir, "trace.txt")
	return nil
}

// mark writes a marker into the trace.
func (c *collector) mark(ctx context.Context, edge string) error {
	if _, err := c.env.Board.Run(ctx, fmt.Sprintf("echo %s > %s/trace_marker", shellQuote(markerText(c.name, edge)), tracefs)); err != nil {
		return fmt.Errorf("write the %s marker: %w", edge, err)
	}
	return nil
}

// Snapshot is the board's counters at one moment.
type Snapshot struct {
	Interface InterfaceCounters `json:"interface"`
	SNMP      SNMP              `json:"snmp"`
	Ethtool   EthtoolStats      `json:"ethtool,omitempty"`
}

// snapshot reads the counters and saves the raw text as dir/<label>-*.txt. ethtool -S is
// optional (a note is returned when it fails); the other two are required.
func (c *collector) snapshot(ctx context.Context, label string) (Snapshot, []string, error) {
	var s Snapshot
	var notes []string
	b := c.env.Board
	save := func(what string, data []byte) {
		os.WriteFile(filepath.Join(c.env.Dir, label+"-"+what+".txt"), data, 0o644)
	}
	out, err := b.Run(ctx, interfaceCountersCmd(b.Interface()))
	if err != nil {
		return s, nil, fmt.Errorf("read %s statistics: %w", b.Interface(), err)
	}
	save("interface", out)
	if s.Interface, err = ParseInterfaceCounters(out); err != nil {
		return s, nil, err
	}
	out, err = b.Run(ctx, "cat /proc/net/snmp")
	if err != nil {
		return s, nil, fmt.Errorf("read /proc/net/snmp: %w", err)
	}
	save("snmp", out)
	if s.SNMP, err = ParseSNMP(out); err != nil {
		return s, nil, err
	}
	out, err = b.Run(ctx, "ethtool -S "+shellQuote(b.Interface()))
	if err != nil {
		notes = append(notes, fmt.Sprintf("ethtool -S %s: %v", b.Interface(), err))
	} else {
		save("ethtool", out)
		if s.Ethtool, err = ParseEthtoolStats(out); err != nil {
			notes = append(notes, err.Error())
		}
	}
	return s, notes, nil
}

// PoolDrainTimeout bounds the wait for the pools to report inflight 0 after the interface
// goes down. 5.10 retries a stalled destroy every second; a pool still inflight after this long
// has leaked.
var PoolDrainTimeout = 5 * time.Second

// finish takes the NIC down so every pool is destroyed, waits until each pool seen in the trace
// has reported its final inflight (or PoolDrainTimeout passes), then stops tracing and the
// trace reader. It returns the per-CPU overrun count read from tracefs.
func (c *collector) finish(ctx context.Context) (overrun int64, err error) {
	b := c.env.Board
	_, downErr := b.Run(ctx, "ip link set dev "+shellQuote(b.Interface())+" down")
	deadline := time.Now().Add(PoolDrainTimeout)
	for downErr == nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if drained(c.trace, c.name) {
			break
		}
	}
	if _, err := b.Run(ctx, "echo 0 > "+tracefs+"/tracing_on"); err != nil {
		return 0, fmt.Errorf("stop tracing: %w", err)
	}
	overrun, oerr := readOverrun(ctx, b)
	waitStable(c.trace, traceQuiet, 10*time.Second)
	if _, err := c.reader.stop(ctx, c.env); err != nil {
		return overrun, err
	}
	if downErr != nil {
		return overrun, fmt.Errorf("take %s down after the run: %w", b.Interface(), downErr)
	}
	return overrun, oerr
}

// drained reports whether every pool in the trace so far has a final page_pool_release with
// inflight 0.
func drained(trace, name string) bool {
	f, err := os.Open(trace)
	if err != nil {
		return false
	}
	defer f.Close()
	tf, err := ParseTraceFigures(f, name)
	if err != nil || len(tf.Pools) == 0 {
		return false
	}
	for _, p := range tf.Pools {
		if !p.Destroyed || p.FinalInflight != 0 {
			return false
		}
	}
	return true
}

// traceQuiet is how long the streamed trace must stop growing before the reader is stopped.
var traceQuiet = 500 * time.Millisecond

// waitStable waits until path stops growing for quiet, at most max.
func waitStable(path string, quiet, max time.Duration) {
	deadline := time.Now().Add(max)
	last, since := int64(-1), time.Now()
	for time.Now().Before(deadline) {
		st, err := os.Stat(path)
		if err != nil {
			return
		}
		if st.Size() != last {
			last, since = st.Size(), time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readOverrun sums "overrun:" over the per-CPU ring buffer statistics.
func readOverrun(ctx context.Context, b Board) (int64, error) {
	out, err := b.Run(ctx, "cat "+tracefs+"/per_cpu/cpu*/stats")
	if err != nil {
		return 0, fmt.Errorf("read trace buffer stats: %w", err)
	}
	return parseOverrun(out)
}

func parseOverrun(out []byte) (int64, error) {
	var total int64
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "overrun:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("trace buffer stats: overrun %q: %w", v, err)
			}
			total += n
		}
	}
	return total, nil
}

// topologyUp addresses both ends of the test link and brings them up, with the multicast route
// on both sides, then waits for the board's link.
func topologyUp(ctx context.Context, env *Env) error {
	bif := shellQuote(env.Board.Interface())
	script := fmt.Sprintf("set -e; ip addr flush dev %[1]s; ip addr add %[2]s/%[3]d dev %[1]s; ip link set dev %[1]s up; ip route replace %[4]s dev %[1]s",
		bif, BoardIP, PrefixLen, MulticastRoute)
	if _, err := env.Board.Run(ctx, script); err != nil {
		return fmt.Errorf("address the board's %s: %w", env.Board.Interface(), err)
	}
	cif := env.Client.Interface()
	for _, argv := range [][]string{
		{"ip", "link", "set", "dev", "lo", "up"},
		{"ip", "addr", "replace", fmt.Sprintf("%s/%d", ClientIP, PrefixLen), "dev", cif},
		{"ip", "link", "set", "dev", cif, "up"},
		{"ip", "route", "replace", MulticastRoute, "dev", cif},
	} {
		if _, err := env.Client.Run(ctx, argv...); err != nil {
			return fmt.Errorf("client: %s: %w", strings.Join(argv, " "), err)
		}
	}
	return waitOperUp(ctx, env.Board)
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
