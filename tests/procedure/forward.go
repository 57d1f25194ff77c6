package procedure

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing/fstest"

	"github.com/ppkit/ppkit/gomodel/rawtrace"
	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/tests/verdict"
)

// The client's and the peer's subnets, routed through the board by forward.
const (
	ClientNet = "192.168.200.0/24"
	PeerNet   = "192.168.201.0/24"
)

// The host-side iperf servers of forward: the peer's, one per phase, and the client's for the
// peer's stream back.
const (
	ForwardPort = 5001
	CapturePort = 5002
	ReversePort = 5003
)

// ForwardProbes are the kprobe events forward counts in a tracefs instance of its own: kernel
// functions with no tracepoint, each with its caller (the return address at entry, x30 on
// arm64), so that the counts say which path called them. (The kprobe options in
// harness/config/ppkit.config.)
var ForwardProbes = []string{"skb_segment", "pskb_expand_head", "page_frag_free"}

const (
	probeGroup    = "ppkit_forward"
	probeInstance = tracefs + "/instances/ppkit-forward"
	// probeBufferKB is the instance's per-CPU ring: a few events per forwarded packet.
	probeBufferKB = 8192
)

// Forward makes the board a router between the client (behind the mvneta NIC) and the peer (a
// second client namespace behind the board's virtio-net NIC, PeerNICModel), with
// net.ipv4.ip_forward=1, GRO on the mvneta NIC and TSO off on the virtio-net one. In two phases
// of --time each:
//
//   - forward: TCP from the client to the peer. GRO merges the pool heads mvneta receives;
//     ip_forward() passes the merged skb to the virtio-net NIC, which cannot segment it, so
//     validate_xmit_skb() resegments it in software: skb_segment() on GRO skbs built from pool
//     heads, whose heads die when the segments are sent (and the frag_list skbs GRO could not
//     merge are cloned and their heads expanded inside skb_segment()).
//   - capture: the same with pktlisten reading the mvneta NIC, so every received skb is cloned
//     before it is forwarded and ip_forward()'s skb_cow() expands its head:
//     pskb_expand_head() on a cloned pool head, which the packet socket's clone frees later.
//     Meanwhile the peer sends TCP to the client: virtio-net's receive_small() builds those
//     skbs around page-frag buffers that belong to no page_pool (head_frag, no pool id), and
//     their heads reach skb_free_head() — after forwarding, at mvneta's TX completion.
//
// The evidence, checked by Collect (a path not driven is a procedure error): for the first, a
// counting rule in the mangle FORWARD chain (skbs forwarded from mvneta to virtio-net) against
// the virtio-net NIC's TX packets — more packets than skbs; skb_segment's kprobe count is
// reported too, but it also counts the management NIC's SSH stream (QEMU's user network offers
// no TSO). For the second, pskb_expand_head's kprobe with caller ip_forward in the capture
// phase. For the third, the NIC's negotiated features (no mergeable buffers, no guest GSO), its
// RX counter and page_frag_free's kprobe (caller skb_free_head: with the series, a head_frag
// head that the hook did not take).
type Forward struct {
	// set by Run, read by Collect
	capture     string // pktlisten's note
	forwardOut  string // the host servers' output files
	captureOut  string
	reverseOut  string
	peerBefore  verdict.InterfaceCounters
	probesReady bool
	iptables    string // the board's iptables, for the forwarding rule's counter
}

func (*Forward) Name() string { return "forward" }
func (*Forward) Description() string {
	return "TCP routed by the board between the client (mvneta, GRO) and a second client (virtio-net, TSO off), then again with a packet-socket reader, and back"
}
func (*Forward) Paths() []string {
	return []string{"napi_gro_receive", "ip_forward", "skb_segment", "skb_clone", "pskb_expand_head",
		"receive_small", "skb_free_head"}
}

// Helpers: pktlisten for the capture phase, tracepages to move the probes' pages off the board
// (whatever transport the page_pool trace takes).
func (*Forward) Helpers() []string { return []string{"pktlisten", "tracepages"} }

// peerFeatureBits are the virtio-net features that would keep 5.10's virtio-net from
// receive_small(): mergeable RX buffers (receive_mergeable) and any guest GSO (receive_big).
var peerFeatureBits = map[int]string{15: "mrg_rxbuf", 7: "guest_tso4", 8: "guest_tso6", 9: "guest_ecn", 10: "guest_ufo"}

// checkReceiveSmall reads a virtio device's sysfs "features" (one '0' or '1' per feature bit,
// bit 0 first: the negotiated features) and fails if virtio-net would not use receive_small().
func checkReceiveSmall(features []byte) error {
	f := strings.TrimSpace(string(features))
	if len(f) < 16 || strings.Trim(f, "01") != "" {
		return fmt.Errorf("virtio features %q: want a string of 0 and 1, one per feature bit", f)
	}
	var on []string
	bits := make([]int, 0, len(peerFeatureBits))
	for b := range peerFeatureBits {
		bits = append(bits, b)
	}
	sort.Ints(bits)
	for _, b := range bits {
		if f[b] == '1' {
			on = append(on, peerFeatureBits[b])
		}
	}
	if len(on) > 0 {
		return fmt.Errorf("the second NIC negotiated %s, so virtio-net does not build its skbs with receive_small(); boot it as %s", strings.Join(on, ", "), PeerNICModel)
	}
	return nil
}

// ethtoolFeature returns a feature's state ("on", "off", "off [fixed]") from `ethtool -k`.
func ethtoolFeature(out []byte, name string) (string, bool) {
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+":"); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// NeedsPeer marks forward as a procedure that needs a PeerTestbed.
func (p *Forward) NeedsPeer() {}

func (p *Forward) Setup(ctx context.Context, env *Env) error {
	if env.Peer == nil {
		return fmt.Errorf("forward needs a second client behind a second NIC of the board, and this testbed has none")
	}
	// The second client's side does not wait for the board's: both at once.
	peerErr := make(chan error, 1)
	go func() { peerErr <- peerUp(ctx, env) }()
	err := p.routerUp(ctx, env)
	if perr := <-peerErr; err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	// Routed both ways through the board (the virtio link is up at once; a few tries for ARP),
	// three echoes 50 ms apart as pingBothWays sends them.
	if _, err := env.Client.Run(ctx, "ping", "-c", "3", "-i", "0.05", "-w", "10", PeerIP); err != nil {
		return fmt.Errorf("client → second client ping through the board: %w", err)
	}
	return p.startProbes(ctx, env)
}

// routerUp makes the board a router from the mvneta NIC to the second NIC (GRO on the first,
// TSO off on the second, a rule counting the forwarded skbs), and routes the client to the
// second client through it.
func (p *Forward) routerUp(ctx context.Context, env *Env) error {
	if err := setGRO(ctx, env, true); err != nil {
		return err
	}
	pif := shellQuote(env.Peer.BoardInterface)
	out, err := env.Board.Run(ctx, "cat /sys/class/net/"+pif+"/device/features")
	if err != nil {
		return fmt.Errorf("read the second NIC's virtio features: %w", err)
	}
	if err := checkReceiveSmall(out); err != nil {
		return err
	}
	out, err = env.Board.Run(ctx, fmt.Sprintf("set -e; echo 1 > /proc/sys/net/ipv4/ip_forward; ip addr flush dev %[1]s; "+
		"ip addr add %[2]s/%[3]d dev %[1]s; ip link set dev %[1]s up; ethtool -K %[1]s tso off; ethtool -k %[1]s",
		pif, PeerBoardIP, PrefixLen))
	if err != nil {
		return fmt.Errorf("make the board a router to the second client: %w", err)
	}
	if v, _ := ethtoolFeature(out, "tcp-segmentation-offload"); !strings.HasPrefix(v, "off") {
		return fmt.Errorf("TSO is %q on the board's %s after ethtool -K tso off: GRO packets would not be segmented in software", v, env.Peer.BoardInterface)
	}
	// A rule without effect counts the skbs ip_forward() passes from the mvneta NIC to the
	// second one: GRO skbs count once, and the second NIC's TX counter counts their segments.
	out, err = env.Board.Run(ctx, "mkdir -p /run; ipt=$(command -v iptables-legacy || command -v iptables) || exit 3; echo $ipt; $ipt -t mangle -A FORWARD -i "+
		shellQuote(env.Board.Interface())+" -o "+pif+" -j RETURN")
	var ce *harness.CommandError
	if errors.As(err, &ce) && ce.Status == 3 {
		return fmt.Errorf("forward needs iptables in the guest image (iptables-legacy or iptables): %v", err)
	}
	if err != nil {
		return fmt.Errorf("add the forwarding counter rule (kernel needs CONFIG_IP_NF_MANGLE): %w", err)
	}
	p.iptables = strings.TrimSpace(strings.Split(string(out), "\n")[0])
	if _, err := env.Client.Run(ctx, "ip", "route", "replace", PeerNet, "via", BoardIP); err != nil {
		return fmt.Errorf("client: route to the second client: %w", err)
	}
	return nil
}

// peerUp addresses the second client and routes it to the client through the board.
func peerUp(ctx context.Context, env *Env) error {
	tap := env.Peer.Client.Interface()
	for _, argv := range [][]string{
		{"ip", "link", "set", "dev", "lo", "up"},
		{"ip", "addr", "replace", fmt.Sprintf("%s/%d", PeerIP, PrefixLen), "dev", tap},
		{"ip", "link", "set", "dev", tap, "up"},
		{"ip", "route", "replace", ClientNet, "via", PeerBoardIP},
	} {
		if _, err := env.Peer.Client.Run(ctx, argv...); err != nil {
			return fmt.Errorf("second client: %s: %w", strings.Join(argv, " "), err)
		}
	}
	return nil
}

// startProbes defines ForwardProbes and enables them in forward's own tracefs instance (the
// procedure's page_pool trace is untouched), starts copying the instance's pages into files as
// the kernel fills them (tracepages: the ring never overwrites a hit, and little is left to
// copy after the traffic), reads the probes' formats, starts reading the kernel's text symbols
// in the background (0.12 s of the guest's CPU, done before the traffic gets going), and reads
// the second NIC's counters, in one board command.
func (p *Forward) startProbes(ctx context.Context, env *Env) error {
	helper, ok := env.Helpers["tracepages"]
	if !ok {
		return fmt.Errorf("the tracepages helper is not on the board")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "set -e; cd %s\n", tracefs)
	fmt.Fprintf(&b, "[ -e kprobe_events ] || { echo 'no kprobe_events in %s: the guest kernel needs CONFIG_KPROBE_EVENTS' >&2; exit 3; }\n", tracefs)
	for _, fn := range ForwardProbes {
		fmt.Fprintf(&b, "echo 'p:%s/%s %s caller=%%x30:symbol' >> kprobe_events\n", probeGroup, fn, fn)
	}
	fmt.Fprintf(&b, "mkdir %[1]s; echo %[2]d > %[1]s/buffer_size_kb; echo 1 > %[1]s/events/%[3]s/enable\n",
		probeInstance, probeBufferKB, probeGroup)
	// One head prints every format (the format files report size 0, so tar would store them
	// empty).
	fmt.Fprintf(&b, `D=%[1]s; rm -rf $D; mkdir -p $D
set -- events/header_page events/header_event
for e in events/%[2]s/* events/ftrace/print; do if [ -f $e/format ]; then set -- "$@" $e/format; fi; done
head -n 100000 "$@" > $D/formats.head
set --; for c in %[3]s/per_cpu/cpu*; do n=${c##*/}; : > $D/$n.raw; set -- "$@" $c/trace_pipe_raw $D/$n.raw; done
%[4]s "$@" </dev/null > $D/copy.log 2>&1 & echo $! > $D/copy.pid
{ cat /proc/kallsyms > $D/kallsyms.part && mv $D/kallsyms.part $D/kallsyms; } </dev/null >/dev/null 2>&1 &
`, p.probeDir(env), probeGroup, probeInstance, shellQuote(helper))
	b.WriteString(interfaceCountersCmd(env.Peer.BoardInterface))
	out, err := env.Board.Run(ctx, b.String())
	if err != nil {
		return fmt.Errorf("set up the kprobe events %s, and read the second NIC's counters: %w", strings.Join(ForwardProbes, ", "), err)
	}
	p.probesReady = true
	p.peerBefore, err = verdict.ParseInterfaceCounters(out)
	return err
}

// probeDir is the board directory of the probes' pages, formats and symbols.
func (p *Forward) probeDir(env *Env) string { return env.runDir() + "/probes" }

// probePhase marks the start of a phase in the probes' instance.
func probePhase(ctx context.Context, env *Env, phase string) error {
	if _, err := env.Board.Run(ctx, fmt.Sprintf("echo 'ppkit-forward phase %s' > %s/trace_marker", phase, probeInstance)); err != nil {
		return fmt.Errorf("mark the %s phase: %w", phase, err)
	}
	return nil
}

// hostServer is an iperf server in a client namespace, for the length of Run.
type hostServer struct {
	proc Process
	out  *os.File
	c    Client
	who  string
	port int
}

// killer is a Process that can be killed outright (a host process: *exec.Cmd).
type killer interface{ Kill() error }

// iperfTotalIn says whether an iperf server's output file holds its total.
func iperfTotalIn(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	rep, err := ParseIperf(data)
	return err == nil && rep.Total != nil
}

func startHostServer(ctx context.Context, env *Env, c Client, who, name string, port int) (*hostServer, error) {
	out, err := os.Create(filepath.Join(env.Dir, name+".txt"))
	if err != nil {
		return nil, err
	}
	argv := []string{"iperf", "-s", "-p", strconv.Itoa(port), "-i", "1"}
	env.logf("%s: %s", who, strings.Join(argv, " "))
	proc, err := c.Start(ctx, argv, out, out)
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("%s: start the iperf server: %w", who, err)
	}
	return &hostServer{proc: proc, out: out, c: c, who: who, port: port}, nil
}

// listening waits until the server listens.
func (s *hostServer) listening(ctx context.Context) error {
	return pollListening(ctx, s.who, func(ctx context.Context) ([]byte, error) {
		return s.c.Run(ctx, "cat", "/proc/net/tcp")
	}, "tcp", s.port)
}

func (p *Forward) Run(ctx context.Context, env *Env) (err error) {
	if env.Peer == nil {
		return fmt.Errorf("forward needs a second client")
	}
	// The servers live as long as Run: cancelling stops them (SIGTERM), and a Run cut short
	// by its deadline kills them too, so nothing outlives the namespaces.
	sctx, stop := context.WithCancel(ctx)
	var servers []*hostServer
	defer func() {
		// iperf 2 takes most of a second to act on SIGTERM; a server whose output holds its
		// total, which is all Collect reads of it, is killed at once.
		for _, s := range servers {
			if k, ok := s.proc.(killer); ok && iperfTotalIn(s.out.Name()) {
				k.Kill()
			}
		}
		stop()
		for _, s := range servers {
			s.proc.Wait()
			s.out.Close()
		}
	}()
	for _, srv := range []struct {
		c         Client
		who, name string
		port      int
		path      *string
	}{
		{env.Peer.Client, "second client", "iperf-server-forward", ForwardPort, &p.forwardOut},
		{env.Peer.Client, "second client", "iperf-server-capture", CapturePort, &p.captureOut},
		{env.Client, "client", "iperf-server-reverse", ReversePort, &p.reverseOut},
	} {
		s, err := startHostServer(sctx, env, srv.c, srv.who, srv.name, srv.port)
		if err != nil {
			return err
		}
		servers = append(servers, s)
		*srv.path = s.out.Name()
	}
	// All three start at once; then each must listen.
	for _, s := range servers {
		if err := s.listening(sctx); err != nil {
			return err
		}
	}
	t := seconds(env.Options.Duration)
	if err := probePhase(ctx, env, "forward"); err != nil {
		return err
	}
	out, err := runClient(ctx, env, "iperf-client-forward", "iperf", "-c", PeerIP, "-p", strconv.Itoa(ForwardPort), "-t", t, "-i", "1")
	if err != nil {
		return err
	}
	if err := clientErrors("iperf client (forward)", out); err != nil {
		return err
	}

	listener, err := startGuest(ctx, env, "pktlisten", env.Helpers["pktlisten"]+" "+shellQuote(env.Board.Interface()))
	if err != nil {
		return err
	}
	if err := probePhase(ctx, env, "capture"); err != nil {
		return err
	}
	var wg sync.WaitGroup
	var revOut []byte
	var revErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		revOut, revErr = runHost(ctx, env, env.Peer.Client, "second client", "iperf-client-reverse",
			"iperf", "-c", ClientIP, "-p", strconv.Itoa(ReversePort), "-t", t, "-i", "1")
	}()
	out, err = runClient(ctx, env, "iperf-client-capture", "iperf", "-c", PeerIP, "-p", strconv.Itoa(CapturePort), "-t", t, "-i", "1")
	wg.Wait()
	if err == nil {
		err = clientErrors("iperf client (capture)", out)
	}
	if err == nil {
		err = revErr
	}
	if err == nil {
		err = clientErrors("second client's iperf client (reverse)", revOut)
	}
	note, lerr := stopListener(ctx, env, listener)
	p.capture = note
	if err == nil {
		err = lerr
	}
	return err
}

func (p *Forward) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	var t verdict.Traffic
	var errs []string
	// The probes' pages come off the board while the rest is read.
	type probes struct {
		counts  probeCounts
		overrun int64
		err     error
	}
	probesIn := make(chan probes, 1)
	if p.probesReady {
		go func() {
			var r probes
			r.counts, r.overrun, r.err = p.readProbes(ctx, env)
			probesIn <- r
		}()
	}
	// The receivers' own figures: the second client's servers for the two forwarded streams.
	var secs float64
	for _, s := range []struct{ what, path string }{{"forward", p.forwardOut}, {"capture", p.captureOut}, {"reverse", p.reverseOut}} {
		if s.path == "" {
			errs = append(errs, fmt.Sprintf("the %s iperf server never started", s.what))
			continue
		}
		st, _, err := iperfServerTraffic(s.path)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if st.Bytes == 0 {
			errs = append(errs, fmt.Sprintf("the %s stream's receiver got 0 bytes", s.what))
			continue
		}
		t.Notes = append(t.Notes, fmt.Sprintf("%s stream: %d bytes at %s", s.what, st.Bytes, verdict.FormatBitRate(st.BitsPerSecond)))
		if s.what != "reverse" {
			t.Bytes += st.Bytes
			if st.BitsPerSecond > 0 {
				secs += float64(st.Bytes) * 8 / st.BitsPerSecond
			}
		}
	}
	if secs > 0 {
		t.BitsPerSecond = float64(t.Bytes) * 8 / secs
	}
	if p.capture != "" {
		t.Notes = append(t.Notes, p.capture)
	}
	if out, err := env.Board.Run(ctx, interfaceCountersCmd(env.Peer.BoardInterface)); err != nil {
		errs = append(errs, fmt.Sprintf("read the second NIC's counters: %v", err))
	} else if after, err := verdict.ParseInterfaceCounters(out); err != nil {
		errs = append(errs, err.Error())
	} else {
		rx, tx := after.RxPackets-p.peerBefore.RxPackets, after.TxPackets-p.peerBefore.TxPackets
		t.Notes = append(t.Notes, fmt.Sprintf("second NIC %s (receive_small): rx %d, tx %d packets", env.Peer.BoardInterface, rx, tx))
		if rx == 0 {
			errs = append(errs, "the second NIC received nothing: no page-frag head reached skb_free_head()")
		}
		if err := p.checkSegmented(ctx, env, tx, &t); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if p.probesReady {
		if r := <-probesIn; r.err != nil {
			errs = append(errs, r.err.Error())
		} else {
			t.Notes = append(t.Notes, r.counts.notes(r.overrun)...)
			errs = append(errs, r.counts.missing()...)
		}
	}
	if len(errs) > 0 {
		return t, fmt.Errorf("forward: %s", strings.Join(errs, "; "))
	}
	return t, nil
}

// checkSegmented compares the skbs ip_forward() passed from the mvneta NIC to the second one
// (the rule's counter) with the packets the second NIC sent: more packets than skbs means GRO
// skbs were segmented on the way out.
func (p *Forward) checkSegmented(ctx context.Context, env *Env, tx uint64, t *verdict.Traffic) error {
	out, err := env.Board.Run(ctx, p.iptables+" -t mangle -L FORWARD -v -x -n")
	if err != nil {
		return fmt.Errorf("read the forwarding counter rule: %w", err)
	}
	os.WriteFile(filepath.Join(env.Dir, "iptables-forward.txt"), out, 0o644)
	fwd, err := forwardRuleCount(out, env.Board.Interface(), env.Peer.BoardInterface)
	if err != nil {
		return err
	}
	t.Notes = append(t.Notes, fmt.Sprintf("ip_forward %s → %s: %d skbs, sent as %d packets", env.Board.Interface(), env.Peer.BoardInterface, fwd, tx))
	if fwd == 0 || tx <= uint64(fwd) {
		return fmt.Errorf("the second NIC sent %d packets for %d forwarded skbs: no GRO skb was segmented", tx, fwd)
	}
	return nil
}

// forwardRuleCount reads the packet counter of forward's rule (-i in -o out -j RETURN) from
// `iptables -t mangle -L FORWARD -v -x -n`.
func forwardRuleCount(out []byte, in, outIf string) (int64, error) {
	for _, l := range strings.Split(string(out), "\n") {
		// pkts bytes target prot opt in out source destination
		f := strings.Fields(l)
		if len(f) >= 7 && f[2] == "RETURN" && f[5] == in && f[6] == outIf {
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("forwarding rule counter %q: %w", f[0], err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no forwarding counter rule (-i %s -o %s -j RETURN) in the mangle FORWARD chain", in, outIf)
}

// readProbes stops the probes and their copier (which moves what is left) and brings the
// instance's ring-buffer pages off the board as they are, with the formats that decode them,
// the kernel's text symbols that name each hit's caller and the buffer's stats (boardFiles:
// over the out port, about 12 MB at T = 30 s). It keeps them as probes.tar in the artifacts
// and counts them. Removing the instance and the events waits for RCU grace periods and
// patches kernel text a probe at a time (0.26 s under TCG): the board does that in the
// background while the procedure goes on.
func (p *Forward) readProbes(ctx context.Context, env *Env) (probeCounts, int64, error) {
	var rm strings.Builder
	fmt.Fprintf(&rm, "cd %s; echo 0 > %s/events/%s/enable; rmdir %s", tracefs, probeInstance, probeGroup, probeInstance)
	for _, fn := range ForwardProbes {
		fmt.Fprintf(&rm, "; echo '-:%s/%s' >> kprobe_events", probeGroup, fn)
	}
	dir := p.probeDir(env)
	// Waits of at most 10 s in 10 ms steps: the copier's last pages, the symbols.
	script := fmt.Sprintf(`set -e; D=%[1]s; cd %[2]s
echo 0 > %[3]s/tracing_on; cat %[3]s/per_cpu/cpu*/stats > $D/stats
pid=$(cat $D/copy.pid); kill -TERM $pid 2>/dev/null || true
n=0; while kill -0 $pid 2>/dev/null; do n=$((n+1)); if [ $n -gt 1000 ]; then echo "the probes' page copier did not stop" >&2; exit 1; fi; sleep 0.01; done
if ! grep -q bytes= $D/copy.log; then echo "the probes' page copier failed:" >&2; cat $D/copy.log >&2; exit 1; fi
n=0; until [ -f $D/kallsyms ]; do n=$((n+1)); if [ $n -gt 1000 ]; then echo "no /proc/kallsyms after 10 s" >&2; exit 1; fi; sleep 0.01; done`, dir, tracefs, probeInstance)
	fsys, err := boardFiles(ctx, env.Board, dir, "stats formats.head kallsyms cpu*.raw", script)
	cleanup := fmt.Sprintf("(rm -rf %s; %s) </dev/null >/dev/null 2>&1 &", dir, rm.String())
	if _, err := env.Board.Run(ctx, cleanup); err != nil {
		env.logf("forward: remove the kprobe events: %v", err)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("copy the kprobe instance's pages: %w", err)
	}
	st, err := parseTraceStats(fsys["stats"].Data)
	if err != nil {
		return nil, 0, err
	}
	formats, err := splitHeadOutput(string(fsys["formats.head"].Data))
	if err != nil {
		return nil, 0, fmt.Errorf("the kprobe instance's formats: %w", err)
	}
	delete(fsys, "formats.head")
	for name, data := range formats {
		fsys["formats/"+strings.TrimPrefix(name, "events/")] = &fstest.MapFile{Data: data}
	}
	// The artifact is written while the pages are counted.
	local := filepath.Join(env.Dir, "probes.tar")
	written := make(chan error, 1)
	go func() { written <- writeTar(local, fsys) }()
	counts, err := countProbePages(fsys)
	if werr := <-written; werr != nil {
		return nil, 0, fmt.Errorf("keep the kprobe instance's pages: %w", werr)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", local, err)
	}
	return counts, st.overrun, nil
}

// countProbePages counts the hits in forward's probe pages (probes.tar: cpuN.raw a CPU,
// formats/ the events directory, kallsyms the kernel's text symbols): a probe event counts in
// the phase the last marker ("ppkit-forward phase NAME") began ("setup" before the first),
// under the function holding its caller address. An event without a format, a probe event
// without its caller field or a caller outside the symbols is an error.
func countProbePages(fsys fs.FS) (probeCounts, error) {
	sub, err := fs.Sub(fsys, "formats")
	if err != nil {
		return nil, err
	}
	fm, err := rawtrace.ReadFormats(sub)
	if err != nil {
		return nil, err
	}
	syms, err := fs.ReadFile(fsys, "kallsyms")
	if err != nil {
		return nil, err
	}
	table, err := parseKallsyms(syms)
	if err != nil {
		return nil, err
	}
	var streams []io.Reader
	for cpu := 0; ; cpu++ {
		b, err := fs.ReadFile(fsys, fmt.Sprintf("cpu%d.raw", cpu))
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return nil, err
		}
		streams = append(streams, bytes.NewReader(b))
	}
	if len(streams) == 0 {
		return nil, errors.New("no cpu0.raw: the pages of no CPU")
	}
	c := probeCounts{}
	phase := "setup"
	m := rawtrace.NewMerger(streams, &fm.Page)
	for {
		rec, err := m.Next()
		if err == io.EOF {
			return c, nil
		}
		if err != nil {
			return nil, err
		}
		if rec.Data == nil || len(rec.Data) < 2 { // a gap: the stats' overrun counts it
			continue
		}
		id := int(binary.LittleEndian.Uint16(rec.Data))
		f := fm.ByID(id)
		switch {
		case f == nil:
			return nil, fmt.Errorf("cpu%d: event id %d has no format", rec.CPU, id)
		case f.System == "ftrace" && f.Name == "print":
			if ph, ok := strings.CutPrefix(printBuf(f, rec.Data), "ppkit-forward phase "); ok {
				phase = strings.TrimSpace(ph)
			}
		case f.System == probeGroup:
			fd := f.Field("caller")
			if fd == nil || fd.Size != 8 || fd.Offset+8 > len(rec.Data) {
				return nil, fmt.Errorf("event %s/%s has no 8-byte caller field inside its %d bytes", f.System, f.Name, len(rec.Data))
			}
			addr := binary.LittleEndian.Uint64(rec.Data[fd.Offset:])
			fn := table.name(addr)
			if fn == "" {
				return nil, fmt.Errorf("event %s/%s: caller %#x is in no kernel text symbol", f.System, f.Name, addr)
			}
			if c[phase] == nil {
				c[phase] = map[string]map[string]int64{}
			}
			if c[phase][f.Name] == nil {
				c[phase][f.Name] = map[string]int64{}
			}
			c[phase][f.Name][fn]++
		}
	}
}

// printBuf is the text of an ftrace/print (trace_marker) record.
func printBuf(f *rawtrace.Format, data []byte) string {
	fd := f.Field("buf")
	if fd == nil || fd.Offset > len(data) {
		return ""
	}
	b := data[fd.Offset:]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// kallsyms are the kernel's text symbols (types t, T, w, W) by address.
type kallsyms struct {
	addrs []uint64
	names []string
}

// parseKallsyms reads /proc/kallsyms lines ("ffff800010081000 T name [module]").
func parseKallsyms(data []byte) (*kallsyms, error) {
	type sym struct {
		addr uint64
		name string
	}
	var all []sym
	for i, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 {
			return nil, fmt.Errorf("kallsyms line %d: %q is not ADDRESS TYPE NAME", i+1, l)
		}
		a, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("kallsyms line %d: %w", i+1, err)
		}
		if t := f[1]; t == "t" || t == "T" || t == "w" || t == "W" {
			all = append(all, sym{a, f[2]})
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].addr < all[j].addr })
	k := &kallsyms{}
	for _, s := range all {
		k.addrs, k.names = append(k.addrs, s.addr), append(k.names, s.name)
	}
	return k, nil
}

// name is the symbol holding addr: the last one at or below it ("" below the first).
func (k *kallsyms) name(addr uint64) string {
	i := sort.Search(len(k.addrs), func(i int) bool { return k.addrs[i] > addr })
	if i == 0 {
		return ""
	}
	return k.names[i-1]
}

// probeCounts are the probe hits of forward's instance: phase → probe → calling function →
// hits. Hits before the first phase marker count in phase "setup".
type probeCounts map[string]map[string]map[string]int64

// total is a probe's hits in a phase, from any caller ("" for every caller).
func (c probeCounts) total(phase, probe, caller string) int64 {
	var n int64
	for fn, hits := range c[phase][probe] {
		if caller == "" || fn == caller {
			n += hits
		}
	}
	return n
}

// missing says which of forward's paths the counts show were not driven.
func (c probeCounts) missing() []string {
	var out []string
	if c.total("capture", "pskb_expand_head", "ip_forward") == 0 {
		out = append(out, "ip_forward() never called pskb_expand_head() in the capture phase: no cloned head was expanded")
	}
	if c.total("forward", "page_frag_free", "")+c.total("capture", "page_frag_free", "") == 0 {
		out = append(out, "page_frag_free() never ran during the traffic: no page-frag head was freed")
	}
	return out
}

// notes are one line per phase: each probe's hits and their callers, most first.
func (c probeCounts) notes(overrun int64) []string {
	var phases []string
	for ph := range c {
		phases = append(phases, ph)
	}
	sort.Strings(phases)
	var out []string
	for _, ph := range phases {
		var parts []string
		for _, probe := range ForwardProbes {
			callers := c[ph][probe]
			if len(callers) == 0 {
				continue
			}
			fns := make([]string, 0, len(callers))
			for fn := range callers {
				fns = append(fns, fn)
			}
			sort.Slice(fns, func(i, j int) bool {
				if callers[fns[i]] != callers[fns[j]] {
					return callers[fns[i]] > callers[fns[j]]
				}
				return fns[i] < fns[j]
			})
			var by []string
			for _, fn := range fns {
				by = append(by, fmt.Sprintf("%s %d", fn, callers[fn]))
			}
			parts = append(parts, fmt.Sprintf("%s %d (%s)", probe, c.total(ph, probe, ""), strings.Join(by, ", ")))
		}
		if len(parts) > 0 {
			out = append(out, fmt.Sprintf("kprobes, %s phase: %s", ph, strings.Join(parts, "; ")))
		}
	}
	if overrun > 0 {
		out = append(out, fmt.Sprintf("kprobes: %d events overwritten (the counts are lower bounds)", overrun))
	}
	return out
}
