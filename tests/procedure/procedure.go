package procedure

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ppkit/ppkit/tests/verdict"
)

// Options are the knobs every procedure shares.
type Options struct {
	Duration time.Duration // traffic time per iperf run (iperf -t)
	RateMbit int           // UDP send rate (iperf -b), in Mbit/s
	// Seed draws what a randomised procedure (mixed) does; Run draws one when it is 0.
	Seed int64
}

// DefaultOptions are the seed's figures: 30 s at 1000 Mbit/s.
var DefaultOptions = Options{Duration: 30 * time.Second, RateMbit: 1000}

// Env is what a procedure works with: the two hosts, the options, a host directory for its
// artifacts, and the guest helpers (already copied to the board, by name).
type Env struct {
	Board   Board
	Client  Client
	Options Options
	Dir     string
	// Helpers maps a helper name (see GuestHelpers) to its path on the board.
	Helpers map[string]string
	// RunDir is the board directory for pid files and scratch files (DefaultRunDir if empty).
	RunDir string
	// Port is the procedure's iperf server port (iperf's default 5001 if 0): procedures that
	// run together on one board each get their own.
	Port int
	Log  io.Writer
	// Peer is the second client behind the board's second NIC, when the testbed has one.
	Peer *Peer
	// background, when set, outlives each step's deadline: background board commands (servers,
	// the trace reader) are started with it and stopped through their pid files.
	background context.Context
}

// runDir is where pid files and scratch files go on the board.
func (e *Env) runDir() string {
	if e.RunDir == "" {
		return DefaultRunDir
	}
	return e.RunDir
}

// iperfPort is the port the procedure's iperf server listens on.
func (e *Env) iperfPort() int {
	if e.Port == 0 {
		return 5001
	}
	return e.Port
}

// portFlag is iperf's " -p PORT" for Env.Port ("" at the default port).
func (e *Env) portFlag() string {
	if e.Port == 0 {
		return ""
	}
	return " -p " + strconv.Itoa(e.Port)
}

// iperfClient is the argv of an iperf client of the procedure's server at host.
func (e *Env) iperfClient(host string, args ...string) []string {
	argv := []string{"iperf", "-c", host}
	if e.Port != 0 {
		argv = append(argv, "-p", strconv.Itoa(e.Port))
	}
	return append(argv, args...)
}

func (e *Env) logf(format string, args ...any) {
	if e.Log != nil {
		fmt.Fprintf(e.Log, format+"\n", args...)
	}
}

// Procedure is one traffic scenario. Setup, Run and Collect are called in that order on one
// freshly booted testbed whose test link is already addressed and up, with tracing enabled;
// each procedure is runnable alone.
type Procedure interface {
	Name() string
	// Description says in one line what traffic it drives.
	Description() string
	// Paths lists the skb paths the procedure exercises (kernel function names).
	Paths() []string
	// Helpers lists the guest helpers (GuestHelpers names) it needs on the board.
	Helpers() []string
	Setup(ctx context.Context, env *Env) error
	Run(ctx context.Context, env *Env) error
	Collect(ctx context.Context, env *Env) (verdict.Traffic, error)
}

// Procedures returns every procedure, by name.
func Procedures() map[string]Procedure {
	ps := []Procedure{
		&Multicast{}, &TCP{SCPBytes: 8 << 20}, &GRO{}, &Jumbo{}, &Splice{}, &Zerocopy{}, &Copy{},
		&Capture{Inner: &TCP{SCPBytes: 8 << 20}}, &Capture{Inner: &GRO{}}, &Defrag{}, &Steer{Inner: &TCP{}}, &SlowRead{},
		&Forward{}, &Mixed{},
	}
	m := make(map[string]Procedure, len(ps))
	for _, p := range ps {
		m[p.Name()] = p
	}
	return m
}

// DefaultProcedures are the procedures `ppkit test` runs when none is named.
var DefaultProcedures = []string{"multicast", "tcp", "gro", "jumbo", "splice", "zerocopy", "copy", "tcp-capture", "gro-capture", "defrag", "tcp-slowread", "forward"}

// LookupProcedures resolves names (DefaultProcedures when empty) or says which name is unknown.
func LookupProcedures(names []string) ([]Procedure, error) {
	if len(names) == 0 {
		names = DefaultProcedures
	}
	all := Procedures()
	var out []Procedure
	seen := map[string]bool{}
	for _, n := range names {
		p, ok := all[n]
		if !ok {
			known := make([]string, 0, len(all))
			for k := range all {
				known = append(known, k)
			}
			sort.Strings(known)
			return nil, fmt.Errorf("unknown procedure %q (known: %s)", n, strings.Join(known, ", "))
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// ServerSettle is how long a UDP procedure waits at most after its client for the server's
// total: the server prints it a moment after the client's final datagram, and when that was
// lost (multicast drops most datagrams under TCG) on SIGTERM, with what it read until then.
var ServerSettle = 300 * time.Millisecond

// waitServerTotal waits until the UDP iperf server's output holds its total, at most
// ServerSettle.
func waitServerTotal(ctx context.Context, server *guestProcess) error {
	deadline := time.Now().Add(ServerSettle)
	for {
		if server != nil {
			if data, err := os.ReadFile(server.out.Name()); err == nil {
				if rep, err := ParseIperf(data); err == nil && rep.Total != nil {
					return nil
				}
			}
		}
		if !time.Now().Before(deadline) {
			return nil
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// DefaultRunDir holds pid files and scratch files on the board.
const DefaultRunDir = "/tmp/ppkit"

// guestProcess is a background command on the board that records its pid so it can be stopped
// without relying on SSH signals.
type guestProcess struct {
	name    string
	proc    Process
	out     *os.File
	pidfile string
}

// startGuest starts cmd on the board in the background, its output going to dir/name.txt.
func startGuest(ctx context.Context, env *Env, name, cmd string) (*guestProcess, error) {
	return startGuestAfter(ctx, env, name, "", cmd)
}

// startGuestAfter is startGuest with prep, shell commands each followed by "&& ", run by the
// shell that then execs cmd: $$ in prep is cmd's pid.
func startGuestAfter(ctx context.Context, env *Env, name, prep, cmd string) (*guestProcess, error) {
	out, err := os.Create(filepath.Join(env.Dir, name+".txt"))
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	pidfile := env.runDir() + "/" + name + ".pid"
	wrapped := fmt.Sprintf("mkdir -p %s && echo $$ > %s && %sexec %s", shellQuote(env.runDir()), shellQuote(pidfile), prep, cmd)
	env.logf("board: %s", cmd)
	startCtx := ctx
	if env.background != nil {
		startCtx = env.background
	}
	p, err := env.Board.Start(startCtx, wrapped, out, out)
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s on the board: %w", name, err)
	}
	return &guestProcess{name: name, proc: p, out: out, pidfile: pidfile}, nil
}

// stop sends SIGTERM (then SIGKILL after 5 s) to the board process and waits for it. It
// returns the process's output file's path.
func (g *guestProcess) stop(ctx context.Context, env *Env) (string, error) {
	return g.stopWith(ctx, env, "TERM")
}

// stopWith is stop with signal sig first.
func (g *guestProcess) stopWith(ctx context.Context, env *Env, sig string) (string, error) {
	pidfile := shellQuote(g.pidfile)
	done := make(chan error, 1)
	go func() { done <- g.proc.Wait() }()
	_, killErr := env.Board.Run(ctx, fmt.Sprintf("kill -%s $(cat %s) 2>/dev/null; true", sig, pidfile))
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		env.Board.Run(ctx, fmt.Sprintf("kill -KILL $(cat %s) 2>/dev/null; true", pidfile))
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			err = fmt.Errorf("%s did not exit after SIGKILL", g.name)
		}
	case <-ctx.Done():
		err = ctx.Err()
	}
	g.out.Close()
	if killErr != nil {
		return g.out.Name(), fmt.Errorf("stop %s: %w", g.name, killErr)
	}
	_ = err // a process stopped by a signal exits non-zero; its output is what matters
	return g.out.Name(), nil
}

// waitListening polls the board until a socket listens on port (proto "tcp" or "udp").
func waitListening(ctx context.Context, env *Env, proto string, port int) error {
	return pollListening(ctx, "the board", func(ctx context.Context) ([]byte, error) {
		return env.Board.Run(ctx, "cat /proc/net/"+proto)
	}, proto, port)
}

// pollListening reads /proc/net/PROTO with read (a host's view of its own namespace) until a
// socket listens on port.
func pollListening(ctx context.Context, host string, read func(context.Context) ([]byte, error), proto string, port int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := read(ctx)
		if err != nil {
			return fmt.Errorf("wait for %s port %d: %w", proto, port, err)
		}
		if procNetListening(out, proto, port) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s port %d on %s after 10 s", proto, port, host)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil { // a read costs about 20 ms
			return err
		}
	}
}

// procNetListening says whether /proc/net/{tcp,udp} shows a socket listening on port: the local
// address column ends in :PORT (hex); TCP listeners are state 0A.
func procNetListening(procNet []byte, proto string, port int) bool {
	want := fmt.Sprintf(":%04X ", port)
	for _, l := range strings.Split(string(procNet), "\n") {
		f := strings.Fields(l)
		if len(f) > 3 && strings.HasSuffix(f[1]+" ", want) && (proto == "udp" || f[3] == "0A") {
			return true
		}
	}
	return false
}

// runClient runs argv in the client namespace, saving its output to dir/name.txt.
func runClient(ctx context.Context, env *Env, name string, argv ...string) ([]byte, error) {
	return runHost(ctx, env, env.Client, "client", name, argv...)
}

// runHost runs argv on a client host (who names it in messages), saving its output to
// dir/name.txt.
func runHost(ctx context.Context, env *Env, c Client, who, name string, argv ...string) ([]byte, error) {
	env.logf("%s: %s", who, strings.Join(argv, " "))
	out, err := c.Run(ctx, argv...)
	if werr := os.WriteFile(filepath.Join(env.Dir, name+".txt"), out, 0o644); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return out, fmt.Errorf("%s %s: %w", who, name, err)
	}
	return out, nil
}

func seconds(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.Itoa(s)
}

// iperfServerTraffic parses a board-side iperf server's output into verdict.Traffic.
func iperfServerTraffic(path string) (verdict.Traffic, *IperfReport, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return verdict.Traffic{}, nil, fmt.Errorf("read iperf server output: %w", err)
	}
	rep, err := ParseIperf(data)
	if err != nil {
		return verdict.Traffic{}, nil, fmt.Errorf("iperf server output %s: %w", path, err)
	}
	var t verdict.Traffic
	if rep.Total != nil {
		t.Bytes, t.BitsPerSecond = rep.Total.Bytes, rep.Total.BitsPerSecond
		if rep.Total.HasDatagrams {
			t.Datagrams, t.Lost = rep.Total.Received(), rep.Total.Lost
		}
	}
	t.Notes = append(t.Notes, rep.Errors...)
	return t, rep, nil
}

// clientErrors returns an error if an iperf client printed a failure (iperf 2 exits 0 even
// when its connection was refused).
func clientErrors(name string, out []byte) error {
	rep, err := ParseIperf(out)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, e := range rep.Errors {
		if strings.Contains(e, "connect failed") {
			return fmt.Errorf("%s: %s", name, e)
		}
	}
	return nil
}

// ---- multicast ----

// Multicast sends UDP multicast from the client to an iperf server on the board while a packet
// socket on the board's NIC sees every frame too, so each received skb is cloned.
type Multicast struct {
	server, listener *guestProcess
}

func (*Multicast) Name() string { return "multicast" }
func (*Multicast) Description() string {
	return "UDP multicast to " + MulticastGroup + " with a packet-socket listener (cloned skbs)"
}
func (*Multicast) Paths() []string {
	return []string{"build_skb", "skb_clone", "packet_rcv", "udp_queue_rcv_skb", "consume_skb", "skb_free_head"}
}
func (*Multicast) Helpers() []string { return []string{"pktlisten"} }

func (m *Multicast) Setup(ctx context.Context, env *Env) error {
	var err error
	if m.listener, err = startGuest(ctx, env, "pktlisten", env.Helpers["pktlisten"]+" "+shellQuote(env.Board.Interface())); err != nil {
		return err
	}
	if m.server, err = startGuest(ctx, env, "iperf-server", "iperf -s -u -B "+MulticastGroup+" -i 1"+env.portFlag()); err != nil {
		return err
	}
	return waitListening(ctx, env, "udp", env.iperfPort())
}

func (m *Multicast) Run(ctx context.Context, env *Env) error {
	out, err := runClient(ctx, env, "iperf-client", env.iperfClient(MulticastGroup, "-u", "-T", "32",
		"-t", seconds(env.Options.Duration), "-i", "1", "-B", ClientIP, "-b", strconv.Itoa(env.Options.RateMbit)+"M")...)
	if err != nil {
		return err
	}
	if err := waitServerTotal(ctx, m.server); err != nil {
		return err
	}
	return clientErrors("iperf client", out)
}

func (m *Multicast) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	return collectServerAndListener(ctx, env, m.server, m.listener)
}

func collectServerAndListener(ctx context.Context, env *Env, server, listener *guestProcess) (verdict.Traffic, error) {
	if server == nil {
		return verdict.Traffic{}, fmt.Errorf("collect: the iperf server never started")
	}
	// iperf 2 takes most of a second to act on SIGTERM; once its output holds the total,
	// which is all ppkit reads of it, SIGKILL ends it at once.
	sig := "TERM"
	if data, err := os.ReadFile(server.out.Name()); err == nil {
		if rep, err := ParseIperf(data); err == nil && rep.Total != nil {
			sig = "KILL"
		}
	}
	path, err := server.stopWith(ctx, env, sig)
	if err != nil {
		return verdict.Traffic{}, err
	}
	t, _, err := iperfServerTraffic(path)
	if err != nil {
		return t, err
	}
	if listener != nil {
		note, err := stopListener(ctx, env, listener)
		if err != nil {
			return t, err
		}
		t.Notes = append(t.Notes, note)
	}
	return t, nil
}

// stopListener stops a pktlisten and returns its count as a note.
func stopListener(ctx context.Context, env *Env, listener *guestProcess) (string, error) {
	if listener == nil {
		return "", fmt.Errorf("collect: the packet listener never started")
	}
	lpath, err := listener.stop(ctx, env)
	if err != nil {
		return "", err
	}
	n, err := readHelperSummary(lpath, "pktlisten")
	if err != nil {
		return "", err
	}
	return "packet socket: " + n, nil
}

// ---- capture: a procedure with a packet socket reading the NIC ----

// Capture runs Inner while a packet socket on the board's NIC reads every frame, as tcpdump,
// an AF_PACKET monitor or a DHCP client do on real machines: packet_rcv clones each received
// skb, so Inner's traffic meets the paths of a cloned pool head — clones in the TCP receive
// queue and in GRO, skb_try_coalesce() and skb_gro_receive() refusing to steal a locked head,
// the head freed by whichever of the skb and its clone dies last.
type Capture struct {
	Inner    Procedure
	listener *guestProcess
}

func (c *Capture) Name() string { return c.Inner.Name() + "-capture" }
func (c *Capture) Description() string {
	return c.Inner.Description() + ", with a packet-socket reader on the NIC (cloned heads)"
}
func (c *Capture) Paths() []string {
	return append([]string{"skb_clone", "packet_rcv", "skb_head_is_locked"}, c.Inner.Paths()...)
}
func (c *Capture) Helpers() []string { return append([]string{"pktlisten"}, c.Inner.Helpers()...) }

func (c *Capture) Setup(ctx context.Context, env *Env) error {
	var err error
	if c.listener, err = startGuest(ctx, env, "pktlisten", env.Helpers["pktlisten"]+" "+shellQuote(env.Board.Interface())); err != nil {
		return err
	}
	return c.Inner.Setup(ctx, env)
}

func (c *Capture) Run(ctx context.Context, env *Env) error { return c.Inner.Run(ctx, env) }

func (c *Capture) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	t, err := c.Inner.Collect(ctx, env)
	if err != nil {
		return t, err
	}
	note, err := stopListener(ctx, env, c.listener)
	if err != nil {
		return t, err
	}
	t.Notes = append(t.Notes, note)
	return t, nil
}

// ---- rps: a procedure whose protocol work runs on the other CPU ----

// RPSCPUs is the rps_cpus mask steer sets on the NIC's receive queue: CPU 1, while the NIC's
// interrupt and NAPI poll run on CPU 0 (the guest has two CPUs).
const RPSCPUs = "2"

// Steer runs Inner with receive packet steering: NAPI (and the pool's lockless cache) stays on
// the CPU of the NIC's interrupt, while IP, TCP and UDP run in softirq on the other CPU, so pool
// heads are freed — copy-coalesced TCP segments by kfree_skb_partial(), dropped skbs — in
// softirq on a CPU that does not own the pool. The only context in which 5.10's
// __page_pool_put_page() may recycle into the cache (in_serving_softirq()) then races with
// the NAPI that allocates from it, unless the hook returns pages through the ptr_ring.
type Steer struct{ Inner Procedure }

func (s *Steer) Name() string { return s.Inner.Name() + "-rps" }
func (s *Steer) Description() string {
	return s.Inner.Description() + ", protocol work steered to the other CPU (RPS)"
}
func (s *Steer) Paths() []string {
	return append([]string{"get_rps_cpu", "enqueue_to_backlog", "process_backlog"}, s.Inner.Paths()...)
}
func (s *Steer) Helpers() []string { return s.Inner.Helpers() }

func (s *Steer) Setup(ctx context.Context, env *Env) error {
	if err := steerToOtherCPU(ctx, env); err != nil {
		return err
	}
	return s.Inner.Setup(ctx, env)
}

// steerToOtherCPU sets the NIC's receive queue's rps_cpus to RPSCPUs.
func steerToOtherCPU(ctx context.Context, env *Env) error {
	q := "/sys/class/net/" + shellQuote(env.Board.Interface()) + "/queues/rx-0/rps_cpus"
	if _, err := env.Board.Run(ctx, "echo "+RPSCPUs+" > "+q+" && cat "+q); err != nil {
		return fmt.Errorf("steer the NIC's receive queue to CPU 1 (needs CONFIG_RPS): %w", err)
	}
	return nil
}
func (s *Steer) Run(ctx context.Context, env *Env) error { return s.Inner.Run(ctx, env) }
func (s *Steer) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	return s.Inner.Collect(ctx, env)
}

// ---- tcp ----

// TCP runs iperf TCP from the client to the board, then sends a file with scp over the test
// link; with GRO off, the receive queue coalesces the skbs.
type TCP struct {
	// SCPBytes is the size of the file sent with scp after iperf; 0 sends none (used where no
	// SSH server listens on the test link, e.g. the namespace stand-in board).
	SCPBytes int64
	server   *guestProcess
	scpNote  string
}

func (*TCP) Name() string { return "tcp" }
func (*TCP) Description() string {
	return "iperf TCP to the board, then a file sent with scp, GRO off (receive-queue coalescing)"
}
func (*TCP) Paths() []string {
	return []string{"build_skb", "tcp_try_coalesce", "skb_try_coalesce", "kfree_skb_partial", "skb_free_head"}
}
func (*TCP) Helpers() []string { return nil }

func (p *TCP) Setup(ctx context.Context, env *Env) error {
	if err := setGRO(ctx, env, false); err != nil {
		return err
	}
	var err error
	if p.server, err = startGuest(ctx, env, "iperf-server", "iperf -s -i 1"+env.portFlag()); err != nil {
		return err
	}
	return waitListening(ctx, env, "tcp", env.iperfPort())
}

func (p *TCP) Run(ctx context.Context, env *Env) error {
	out, err := runClient(ctx, env, "iperf-client", env.iperfClient(BoardIP, "-t", seconds(env.Options.Duration), "-i", "1")...)
	if err != nil {
		return err
	}
	if err := clientErrors("iperf client", out); err != nil {
		return err
	}
	if p.SCPBytes == 0 {
		return nil
	}
	local := filepath.Join(env.Dir, "scp-payload")
	if err := writeRandomFile(local, p.SCPBytes); err != nil {
		return err
	}
	defer os.Remove(local)
	remote := env.runDir() + "/scp-payload"
	env.logf("client: scp %d bytes to %s:%s", p.SCPBytes, BoardIP, remote)
	start := time.Now()
	if err := env.Client.CopyToBoard(ctx, local, remote); err != nil {
		return fmt.Errorf("scp over the test link: %w", err)
	}
	elapsed := time.Since(start)
	// stat, not wc: wc reads the 8 MiB again, 0.23 s under TCG.
	got, err := env.Board.Run(ctx, "stat -c %s "+remote+" && rm -f "+remote)
	if err != nil {
		return fmt.Errorf("check scp payload on the board: %w", err)
	}
	if n, _ := strconv.ParseInt(strings.TrimSpace(string(got)), 10, 64); n != p.SCPBytes {
		return fmt.Errorf("scp: the board received %s bytes, want %d", strings.TrimSpace(string(got)), p.SCPBytes)
	}
	p.scpNote = fmt.Sprintf("scp: %d bytes in %.1f s", p.SCPBytes, elapsed.Seconds())
	return nil
}

func (p *TCP) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	t, err := collectServerAndListener(ctx, env, p.server, nil)
	if p.scpNote != "" {
		t.Notes = append(t.Notes, p.scpNote)
	}
	return t, err
}

func writeRandomFile(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create scp payload: %w", err)
	}
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		f.Close()
		return fmt.Errorf("write scp payload: %w", err)
	}
	return f.Close()
}

func setGRO(ctx context.Context, env *Env, on bool) error {
	state := "off"
	if on {
		state = "on"
	}
	if _, err := env.Board.Run(ctx, "ethtool -K "+shellQuote(env.Board.Interface())+" gro "+state); err != nil {
		return fmt.Errorf("turn GRO %s on the board (needs ethtool in the guest image): %w", state, err)
	}
	return nil
}

// ---- gro ----

// GRO runs TCP bulk traffic with GRO on, so napi_gro_receive merges segments (head stealing
// into frags, and frag_list when that is refused).
type GRO struct{ server *guestProcess }

func (*GRO) Name() string        { return "gro" }
func (*GRO) Description() string { return "iperf TCP bulk to the board with GRO on" }
func (*GRO) Paths() []string {
	return []string{"napi_gro_receive", "skb_gro_receive", "napi_reuse_skb", "tcp_try_coalesce", "skb_free_head"}
}
func (*GRO) Helpers() []string { return nil }

func (p *GRO) Setup(ctx context.Context, env *Env) error {
	if err := setGRO(ctx, env, true); err != nil {
		return err
	}
	var err error
	if p.server, err = startGuest(ctx, env, "iperf-server", "iperf -s -i 1"+env.portFlag()); err != nil {
		return err
	}
	return waitListening(ctx, env, "tcp", env.iperfPort())
}

func (p *GRO) Run(ctx context.Context, env *Env) error {
	out, err := runClient(ctx, env, "iperf-client", env.iperfClient(BoardIP, "-t", seconds(env.Options.Duration), "-i", "1")...)
	if err != nil {
		return err
	}
	return clientErrors("iperf client", out)
}

func (p *GRO) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	return collectServerAndListener(ctx, env, p.server, nil)
}

// ---- defrag ----

// DefragDatagram is the UDP payload the defrag procedure sends: over the 1500-byte MTU, so the
// client's IP layer sends each datagram as several fragments and the board reassembles them.
const DefragDatagram = 8000

// Defrag sends UDP datagrams larger than the MTU to the board: ip_defrag() queues the
// fragments and inet_frag_reasm_finish() merges them into the first one with
// skb_try_coalesce(), stealing pool heads into frags (or keeping them on the frag list).
type Defrag struct{ server *guestProcess }

func (*Defrag) Name() string { return "defrag" }
func (*Defrag) Description() string {
	return fmt.Sprintf("UDP datagrams of %d bytes to the board, over the MTU (IP reassembly)", DefragDatagram)
}
func (*Defrag) Paths() []string {
	return []string{"ip_defrag", "inet_frag_reasm_finish", "skb_try_coalesce", "kfree_skb_partial", "skb_free_head"}
}
func (*Defrag) Helpers() []string { return nil }

// DefragQueueTime is the board's net.ipv4.ipfrag_time during defrag, in seconds. A datagram
// that lost a fragment waits in its reassembly queue until then, holding the fragments it has
// — with the series, pool heads — and taking the NIC down does not flush those queues. At the
// default 30 s, page_pool_destroy() would rightly wait for them beyond PoolDrainTimeout; 1 s
// lets them expire inside it, so that a page still inflight after the drain is a real leak.
const DefragQueueTime = 1

func (p *Defrag) Setup(ctx context.Context, env *Env) error {
	if _, err := env.Board.Run(ctx, fmt.Sprintf("echo %d > /proc/sys/net/ipv4/ipfrag_time", DefragQueueTime)); err != nil {
		return fmt.Errorf("set net.ipv4.ipfrag_time: %w", err)
	}
	var err error
	if p.server, err = startGuest(ctx, env, "iperf-server", fmt.Sprintf("iperf -s -u -l %d -i 1", DefragDatagram)+env.portFlag()); err != nil {
		return err
	}
	return waitListening(ctx, env, "udp", env.iperfPort())
}

func (p *Defrag) Run(ctx context.Context, env *Env) error {
	// A third of the rate: each datagram is six fragments, and reassembly is the slow path.
	rate := max(env.Options.RateMbit/3, 1)
	out, err := runClient(ctx, env, "iperf-client", env.iperfClient(BoardIP, "-u", "-l", strconv.Itoa(DefragDatagram),
		"-t", seconds(env.Options.Duration), "-i", "1", "-b", strconv.Itoa(rate)+"M")...)
	if err != nil {
		return err
	}
	if err := waitServerTotal(ctx, p.server); err != nil {
		return err
	}
	return clientErrors("iperf client", out)
}

func (p *Defrag) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	return collectServerAndListener(ctx, env, p.server, nil)
}

// ---- jumbo ----

// JumboMTU is the MTU the jumbo procedure sets on both ends.
const JumboMTU = 9000

// Jumbo sets MTU 9000 on both ends and runs TCP: each frame spans several RX descriptors, so
// mvneta builds the skb from a head page plus frag pages (skb_add_rx_frag).
type Jumbo struct{ server *guestProcess }

func (*Jumbo) Name() string { return "jumbo" }
func (*Jumbo) Description() string {
	return "iperf TCP at MTU 9000 (multi-descriptor frames, page frags)"
}
func (*Jumbo) Paths() []string {
	return []string{"build_skb", "skb_add_rx_frag", "skb_release_data", "tcp_try_coalesce", "skb_free_head"}
}
func (*Jumbo) Helpers() []string { return nil }

func (p *Jumbo) Setup(ctx context.Context, env *Env) error {
	if err := setMTU(ctx, env, JumboMTU); err != nil {
		return err
	}
	var err error
	if p.server, err = startGuest(ctx, env, "iperf-server", "iperf -s -i 1"+env.portFlag()); err != nil {
		return err
	}
	return waitListening(ctx, env, "tcp", env.iperfPort())
}

func (p *Jumbo) Run(ctx context.Context, env *Env) error {
	out, err := runClient(ctx, env, "iperf-client", env.iperfClient(BoardIP, "-t", seconds(env.Options.Duration), "-i", "1")...)
	if err != nil {
		return err
	}
	return clientErrors("iperf client", out)
}

func (p *Jumbo) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	return collectServerAndListener(ctx, env, p.server, nil)
}

func setMTU(ctx context.Context, env *Env, mtu int) error {
	m := strconv.Itoa(mtu)
	if _, err := env.Board.Run(ctx, "ip link set dev "+shellQuote(env.Board.Interface())+" mtu "+m); err != nil {
		return fmt.Errorf("set MTU %d on the board: %w", mtu, err)
	}
	if _, err := env.Client.Run(ctx, "ip", "link", "set", "dev", env.Client.Interface(), "mtu", m); err != nil {
		return fmt.Errorf("set MTU %d on the client: %w", mtu, err)
	}
	return waitOperUp(ctx, env.Board)
}

// ---- splice ----

// Splice sends TCP to a receiver on the board that moves the data with splice() through a
// pipe, so the stack takes extra page references (get_page) on skb pages.
type Splice struct{ receiver *guestProcess }

// SplicePort and ZerocopyPort are where the guest receivers listen.
const (
	SplicePort   = 5002
	ZerocopyPort = 5003
)

func (*Splice) Name() string        { return "splice" }
func (*Splice) Description() string { return "TCP into a splice()-based receiver on the board" }
func (*Splice) Paths() []string {
	return []string{"tcp_splice_read", "__skb_splice_bits", "get_page", "put_page", "skb_free_head"}
}
func (*Splice) Helpers() []string { return []string{"splicerecv"} }

func (p *Splice) Setup(ctx context.Context, env *Env) error {
	var err error
	p.receiver, err = startReceiver(ctx, env, "splicerecv", splicePort(env))
	return err
}

func (p *Splice) Run(ctx context.Context, env *Env) error {
	return sendTCP(ctx, env, splicePort(env))
}

// startReceiver starts the guest receiver helper on port and waits until it listens.
func startReceiver(ctx context.Context, env *Env, helper string, port int) (*guestProcess, error) {
	g, err := startGuest(ctx, env, helper, env.Helpers[helper]+" "+strconv.Itoa(port))
	if err != nil {
		return nil, err
	}
	return g, waitListening(ctx, env, "tcp", port)
}

// sendTCP runs the client's iperf against the board's receiver on port for the traffic time,
// with iperf's further arguments.
func sendTCP(ctx context.Context, env *Env, port int, args ...string) error {
	out, err := runClient(ctx, env, "iperf-client", append([]string{"iperf", "-c", BoardIP, "-p", strconv.Itoa(port),
		"-t", seconds(env.Options.Duration), "-i", "1"}, args...)...)
	if err != nil {
		return err
	}
	return clientErrors("iperf client", out)
}

// splicePort is SplicePort, or Env.Port when the procedure runs among others.
func splicePort(env *Env) int {
	if env.Port != 0 {
		return env.Port
	}
	return SplicePort
}

func (p *Splice) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	return collectReceiver(ctx, env, p.receiver, "splicerecv")
}

// ---- tcp-slowread: a TCP reader that falls behind ----

// SlowRead sends TCP to a board receiver that reads 16 KiB every 2 ms (slowrecv, 256 KiB
// receive buffer): the queue fills, tcp_prune_queue() collapses it (tcp_collapse() copies the
// data into freshly allocated skbs, without page_pool pages or pp_recycle, and frees the pool
// skbs), and the segments that arrive next are coalesced into those plain skbs
// (tcp_try_coalesce()). V2's rule in skb_try_coalesce() refuses to move a page_pool head into a
// plain skb; without it the head is freed with put_page() while DMA-mapped.
type SlowRead struct{ receiver *guestProcess }

// SlowReadPort is where slowrecv listens.
const SlowReadPort = 5004

func (*SlowRead) Name() string { return "tcp-slowread" }
func (*SlowRead) Description() string {
	return "TCP into a receiver that reads slower than the sender (queue pruned and collapsed)"
}
func (*SlowRead) Paths() []string {
	return []string{"tcp_prune_queue", "tcp_collapse", "tcp_try_coalesce", "skb_try_coalesce", "skb_free_head"}
}
func (*SlowRead) Helpers() []string { return []string{"slowrecv"} }

func (p *SlowRead) Setup(ctx context.Context, env *Env) error {
	var err error
	p.receiver, err = startReceiver(ctx, env, "slowrecv", SlowReadPort)
	return err
}

func (p *SlowRead) Run(ctx context.Context, env *Env) error { return sendTCP(ctx, env, SlowReadPort) }

func (p *SlowRead) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	return collectReceiver(ctx, env, p.receiver, "slowrecv")
}

// collectReceiver stops a guest receiver helper and reads its "NAME: bytes=N …" summary.
func collectReceiver(ctx context.Context, env *Env, g *guestProcess, name string) (verdict.Traffic, error) {
	if g == nil {
		return verdict.Traffic{}, fmt.Errorf("collect: %s never started", name)
	}
	path, err := g.stop(ctx, env)
	if err != nil {
		return verdict.Traffic{}, err
	}
	summary, err := readHelperSummary(path, name)
	if err != nil {
		return verdict.Traffic{}, err
	}
	kv := summaryFields(summary)
	var t verdict.Traffic
	if t.Bytes, err = strconv.ParseInt(kv["bytes"], 10, 64); err != nil {
		return t, fmt.Errorf("%s summary %q: bytes: %w", name, summary, err)
	}
	if us, err := strconv.ParseInt(kv["usec"], 10, 64); err == nil && us > 0 {
		t.BitsPerSecond = float64(t.Bytes) * 8 / (float64(us) / 1e6)
	}
	t.Notes = append(t.Notes, name+": "+summary)
	return t, nil
}

// summaryFields splits a helper's summary "a=1 b=2" into a map.
func summaryFields(s string) map[string]string {
	kv := map[string]string{}
	for _, w := range strings.Fields(s) {
		if k, v, ok := strings.Cut(w, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

// readHelperSummary returns the text after "NAME: " on the last such line of a helper's output.
func readHelperSummary(path, name string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s output: %w", name, err)
	}
	var last string
	for _, l := range strings.Split(string(data), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(l), name+": "); ok {
			last = s
		}
	}
	if last == "" {
		return "", fmt.Errorf("%s printed no summary line (output: %q)", name, tail(data, 200))
	}
	return last, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// ---- zerocopy ----

// Zerocopy sends TCP at MTU 9000 to a receiver that maps received pages with
// getsockopt(TCP_ZEROCOPY_RECEIVE), which takes page references through vm_insert_pages; data
// the kernel cannot map (frags that are not whole, page-aligned pages) is read with read().
// mvneta's frags start 256 bytes into their page, so on the emulated board the kernel maps
// none (the receiver reports zerocopy_bytes=0): the procedure exercises tcp_zerocopy_receive's
// walk and its copy fallback, not the mapping.
type Zerocopy struct{ receiver *guestProcess }

func (*Zerocopy) Name() string { return "zerocopy" }
func (*Zerocopy) Description() string {
	return "TCP at MTU 9000 into a getsockopt(TCP_ZEROCOPY_RECEIVE) mmap receiver"
}
func (*Zerocopy) Paths() []string {
	return []string{"tcp_zerocopy_receive", "tcp_recvmsg", "skb_add_rx_frag", "tcp_try_coalesce", "skb_free_head"}
}
func (*Zerocopy) Helpers() []string { return []string{"zcrecv"} }

func (p *Zerocopy) Setup(ctx context.Context, env *Env) error {
	if err := setMTU(ctx, env, JumboMTU); err != nil {
		return err
	}
	var err error
	p.receiver, err = startReceiver(ctx, env, "zcrecv", ZerocopyPort)
	return err
}

func (p *Zerocopy) Run(ctx context.Context, env *Env) error {
	return sendTCP(ctx, env, ZerocopyPort, "-l", "256K")
}

func (p *Zerocopy) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	return collectReceiver(ctx, env, p.receiver, "zcrecv")
}

// ---- copy ----

// Copy duplicates every packet arriving on the board's NIC with iptables' TEE target
// (nf_dup_ipv4 → pskb_copy) towards the client, while UDP flows to an iperf server.
type Copy struct {
	server   *guestProcess
	iptables string
}

func (*Copy) Name() string { return "copy" }
func (*Copy) Description() string {
	return "UDP to the board with iptables TEE duplicating each packet (pskb_copy)"
}
func (*Copy) Paths() []string {
	return []string{"nf_dup_ipv4", "pskb_copy", "__copy_skb_header", "skb_release_data", "skb_free_head"}
}
func (*Copy) Helpers() []string { return nil }

// teeRule is the mangle rule the copy procedure adds (arguments after "iptables").
func teeRule(iface string) []string {
	return []string{"-t", "mangle", "-A", "PREROUTING", "-i", iface, "-p", "udp", "-j", "TEE", "--gateway", ClientIP}
}

func (p *Copy) Setup(ctx context.Context, env *Env) error {
	// Prefer the legacy backend: it needs only x_tables and xt_TEE in the kernel.
	// iptables takes its lock in /run, which a busybox initramfs may lack.
	out, err := env.Board.Run(ctx, "mkdir -p /run; command -v iptables-legacy || command -v iptables")
	if err != nil || strings.TrimSpace(string(out)) == "" {
		return fmt.Errorf("copy needs iptables in the guest image (iptables-legacy or iptables): %v", err)
	}
	p.iptables = strings.TrimSpace(strings.Split(string(out), "\n")[0])
	args := teeRule(env.Board.Interface())
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	if _, err := env.Board.Run(ctx, p.iptables+" "+strings.Join(quoted, " ")); err != nil {
		return fmt.Errorf("add the TEE rule (kernel needs CONFIG_NETFILTER_XT_TARGET_TEE and CONFIG_IP_NF_MANGLE): %w", err)
	}
	if p.server, err = startGuest(ctx, env, "iperf-server", "iperf -s -u -i 1"+env.portFlag()); err != nil {
		return err
	}
	return waitListening(ctx, env, "udp", env.iperfPort())
}

func (p *Copy) Run(ctx context.Context, env *Env) error {
	out, err := runClient(ctx, env, "iperf-client", env.iperfClient(BoardIP, "-u", "-t", seconds(env.Options.Duration),
		"-i", "1", "-b", strconv.Itoa(env.Options.RateMbit)+"M")...)
	if err != nil {
		return err
	}
	return clientErrors("iperf client", out)
}

func (p *Copy) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	t, err := collectServerAndListener(ctx, env, p.server, nil)
	if err != nil {
		return t, err
	}
	// The rule's packet counter proves the duplication happened.
	out, rerr := env.Board.Run(ctx, p.iptables+" -t mangle -L PREROUTING -v -x -n")
	if rerr != nil {
		return t, fmt.Errorf("read the TEE rule counters: %w", rerr)
	}
	dup, perr := teeRuleCount(out)
	if perr != nil {
		return t, perr
	}
	if dup == 0 {
		return t, fmt.Errorf("the TEE rule duplicated no packet")
	}
	t.Notes = append(t.Notes, fmt.Sprintf("TEE duplicated %d packets", dup))
	return t, nil
}

// teeRuleCount reads the packet counter of the TEE rule from `iptables -L -v -x -n`.
func teeRuleCount(out []byte) (int64, error) {
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && f[2] == "TEE" {
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("TEE rule counter %q: %w", f[0], err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no TEE rule in the mangle PREROUTING chain")
}
