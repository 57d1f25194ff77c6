//go:build e2e

package procedure

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/internal/owned"
	"github.com/ppkit/ppkit/tests/verdict"
)

// The client side for real, with a network namespace standing in for the board: a veth pair
// joins two namespaces this test creates (192.168.200.1 "board", 192.168.200.2 client), and the
// procedures run their real commands (iperf 2, the guest helpers built for this machine) across
// it. Only the guest's tracing and the model are not exercised here; they need the real board.

// netnsBoard is a Board backed by a network namespace on the host.
type netnsBoard struct {
	ns, iface string
}

func (b *netnsBoard) shell(ctx context.Context, cmd string) *exec.Cmd {
	c := exec.CommandContext(ctx, "ip", "netns", "exec", b.ns, "sh", "-c", cmd)
	c.WaitDelay = 5 * time.Second
	return c
}

func (b *netnsBoard) Run(ctx context.Context, cmd string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := b.shell(ctx, cmd)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("board %q: %w: %s", cmd, err, tail(stderr.Bytes(), 300))
	}
	return stdout.Bytes(), nil
}

func (b *netnsBoard) Start(ctx context.Context, cmd string, stdout, stderr io.Writer) (Process, error) {
	c := b.shell(ctx, cmd)
	c.Stdout, c.Stderr = stdout, stderr
	if err := c.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

func (b *netnsBoard) CopyTo(ctx context.Context, local, remote string, mode uint32) error {
	data, err := os.ReadFile(local)
	if err != nil {
		return err
	}
	return os.WriteFile(remote, data, os.FileMode(mode))
}

func (b *netnsBoard) CopyFrom(ctx context.Context, remote, local string) error {
	data, err := os.ReadFile(remote)
	if err != nil {
		return err
	}
	return os.WriteFile(local, data, 0o644)
}

func (b *netnsBoard) Interface() string                       { return b.iface }
func (b *netnsBoard) Arch() string                            { return runtime.GOARCH }
func (b *netnsBoard) ConsoleLog() []byte                      { return nil }
func (b *netnsBoard) ConsoleReports() []verdict.ConsoleReport { return nil }

// requireTool fails under CI=true and skips elsewhere when a host tool is missing.
func requireTool(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("%s not installed (harness/install-deps.sh installs it)", tool)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("network namespaces need root")
		}
		t.Skip("network namespaces need root")
	}
}

// vethTopology creates the two namespaces and the veth pair; t.Cleanup removes them (deleting
// a namespace destroys its veth end, and with it the pair).
func vethTopology(t *testing.T) (*netnsBoard, *NetnsClient) {
	t.Helper()
	// Owned names: a later run removes them if this test process is killed.
	boardNS, clientNS := owned.Name("eboard"), owned.Name("eclient")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		for _, ns := range []string{boardNS, clientNS} {
			// Kill what is left in the namespace, then remove it.
			if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
				for _, pid := range strings.Fields(string(out)) {
					exec.Command("kill", "-KILL", pid).Run()
				}
			}
			exec.Command("ip", "netns", "del", ns).Run()
		}
		out, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(out), boardNS) || strings.Contains(string(out), clientNS) {
			t.Errorf("namespaces left behind: %s", out)
		}
	})
	run("netns", "add", boardNS)
	run("netns", "add", clientNS)
	veth := "ppkve" + fmt.Sprint(time.Now().UnixNano()%100000)
	run("link", "add", veth+"b", "netns", boardNS, "type", "veth", "peer", "name", veth+"c", "netns", clientNS)
	run("-n", boardNS, "link", "set", "lo", "up")
	return &netnsBoard{ns: boardNS, iface: veth + "b"}, &NetnsClient{Namespace: clientNS, Iface: veth + "c"}
}

// e2eEnv builds an Env for the stand-in board, with the guest helpers built for this machine.
func e2eEnv(t *testing.T, board *netnsBoard, client *NetnsClient, p Procedure) *Env {
	t.Helper()
	env := &Env{Board: board, Client: client, Options: Options{Duration: 2 * time.Second, RateMbit: 50, Seed: standInSeed},
		Dir: t.TempDir(), RunDir: t.TempDir(), Helpers: map[string]string{}, Log: testLog{t}}
	if len(p.Helpers()) > 0 {
		cc, err := HelperCompiler(runtime.GOARCH, runtime.GOARCH)
		if err != nil {
			t.Fatal(err)
		}
		built, err := BuildGuestHelpers(context.Background(), cc, runtime.GOARCH, t.TempDir(), p.Helpers())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range p.Helpers() {
			remote := filepath.Join(env.RunDir, n)
			if err := board.CopyTo(context.Background(), built[n], remote, 0o755); err != nil {
				t.Fatal(err)
			}
			env.Helpers[n] = remote
		}
	}
	return env
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// runOnStandIn runs one procedure across the veth pair the way RunProcedure does, minus tracing
// and the model, and judges the traffic rule on the real counters.
func runOnStandIn(t *testing.T, p Procedure) (*verdict.Result, *Env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	board, client := vethTopology(t)
	env := e2eEnv(t, board, client, p)
	if err := topologyUp(ctx, env); err != nil {
		t.Fatal(err)
	}
	if err := p.Setup(ctx, env); err != nil {
		t.Fatalf("setup: %v", err)
	}
	c := &collector{env: env, name: p.Name()}
	before, notes, err := c.snapshot(ctx, "before", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) > 0 {
		t.Logf("notes: %v", notes)
	}
	if err := p.Run(ctx, env); err != nil {
		t.Fatalf("run: %v", err)
	}
	after, _, err := c.snapshot(ctx, "after", "", "")
	if err != nil {
		t.Fatal(err)
	}
	traffic, err := p.Collect(ctx, env)
	if err != nil {
		t.Fatalf("collect: %v", err)
	}
	res := &verdict.Result{Procedure: p.Name()}
	// No trace or model on the stand-in: judge the traffic, then look at the traffic reasons.
	verdict.Judge(res, verdict.Evidence{Traffic: traffic, Before: before, After: after})
	t.Logf("%s: %d packets at the NIC, %d bytes, %s, notes %q", p.Name(), res.Figures.Packets, traffic.Bytes,
		verdict.FormatBitRate(traffic.BitsPerSecond), traffic.Notes)
	return res, env
}

func reasonsOf(res *verdict.Result, kind string) []verdict.Reason {
	var out []verdict.Reason
	for _, r := range res.Reasons {
		if r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

func TestE2EStandInMulticast(t *testing.T) {
	requireTool(t, "ip", "iperf", "gcc")
	res, env := runOnStandIn(t, &Multicast{})
	if n := reasonsOf(res, verdict.ReasonNoTraffic); len(n) != 0 {
		t.Fatalf("moved-traffic rule fired on a real run: %v", n)
	}
	tr := res.Traffic
	// 50 Mbit/s for 2 s of 1470-byte datagrams is about 8500; allow loss, not silence.
	if tr.Datagrams < 1000 || res.Figures.Packets < tr.Datagrams || tr.BitsPerSecond < 10e6 {
		t.Errorf("datagrams %d, NIC packets %d, %.0f bit/s", tr.Datagrams, res.Figures.Packets, tr.BitsPerSecond)
	}
	// The packet socket saw the datagrams too (it may drop a few under load: it counts, the
	// cloning is what matters).
	listener := strings.Join(tr.Notes, " ")
	var seen int64
	if _, err := fmt.Sscanf(listener[strings.Index(listener, "packets=")+len("packets="):], "%d", &seen); err != nil || seen < tr.Datagrams*9/10 {
		t.Errorf("packet socket saw %d (%v), server %d: %q", seen, err, tr.Datagrams, listener)
	}
	// The client's own report agrees with the server's.
	out, err := os.ReadFile(filepath.Join(env.Dir, "iperf-client.txt"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ParseIperf(out)
	if err != nil || cl.SentDatagrams < tr.Datagrams+tr.Lost-1 {
		t.Errorf("client sent %d datagrams (%v), server counted %d+%d lost", cl.SentDatagrams, err, tr.Datagrams, tr.Lost)
	}
}

func TestE2EStandInTCP(t *testing.T) {
	requireTool(t, "ip", "iperf", "ethtool")
	// No SSH server listens in the stand-in namespace, so no scp here; the real board runs it.
	res, _ := runOnStandIn(t, &TCP{SCPBytes: 0})
	if n := reasonsOf(res, verdict.ReasonNoTraffic); len(n) != 0 {
		t.Fatalf("moved-traffic rule fired on a real run: %v", n)
	}
	if res.Traffic.Bytes < 1<<20 || res.Figures.Packets < 100 {
		t.Errorf("%d bytes, %d packets", res.Traffic.Bytes, res.Figures.Packets)
	}
}

func TestE2EStandInSpliceZerocopyJumbo(t *testing.T) {
	requireTool(t, "ip", "iperf", "gcc")
	for _, p := range []Procedure{&Splice{}, &Zerocopy{}, &Jumbo{}, &GRO{}} {
		t.Run(p.Name(), func(t *testing.T) {
			if p.Name() == "gro" {
				requireTool(t, "ethtool")
			}
			res, _ := runOnStandIn(t, p)
			if n := reasonsOf(res, verdict.ReasonNoTraffic); len(n) != 0 || res.Traffic.Bytes < 1<<20 {
				t.Fatalf("%d bytes; reasons %v", res.Traffic.Bytes, res.Reasons)
			}
		})
	}
}

// standInSeed is mixed's draw on the stand-in (2 s): GRO on, RPS on; defrag, gro, splice and
// multicast at once. It has neither tcp (its scp needs the board's sshd) nor copy (the TEE rule
// would need the host's iptables).
const standInSeed = 41

// TestE2EStandInMixed: the members of a plan run their real commands at the same time across
// the veth pair, each with its own server port and directories, and each moves data.
func TestE2EStandInMixed(t *testing.T) {
	requireTool(t, "ip", "iperf", "gcc", "ethtool")
	want := PlanMixed(standInSeed, 2*time.Second)
	res, env := runOnStandIn(t, &Mixed{})
	if n := reasonsOf(res, verdict.ReasonNoTraffic); len(n) > 0 {
		t.Fatalf("the moved-traffic rule fired on a real run: %v", n)
	}
	if len(res.Traffic.Members) != len(want.Members) {
		t.Fatalf("members %+v, plan %s", res.Traffic.Members, want)
	}
	for i, m := range res.Traffic.Members {
		if m.Procedure != want.Members[i].Procedure || m.Bytes < 100<<10 {
			t.Errorf("member %d: %+v, plan %s", i, m, want)
		}
		// Each member's tools wrote into its own directory.
		if ents, err := os.ReadDir(filepath.Join(env.Dir, m.Procedure)); err != nil || len(ents) == 0 {
			t.Errorf("member %s: no artifacts (%v)", m.Procedure, err)
		}
	}
}

// The moved-traffic rule fires on a real run that moved nothing to the receiver: the client
// sends to a multicast group nobody on the board joined, so frames reach the NIC but the iperf
// server sees none.
func TestE2EStandInNoTraffic(t *testing.T) {
	requireTool(t, "ip", "iperf", "gcc")
	res, _ := runOnStandIn(t, &wrongGroup{})
	if n := reasonsOf(res, verdict.ReasonNoTraffic); len(n) != 1 || res.Pass {
		t.Fatalf("want one no-traffic reason, got %v (pass %v)", res.Reasons, res.Pass)
	}
	if res.Figures.Packets == 0 {
		t.Errorf("frames should have reached the NIC")
	}
}

// wrongGroup is the multicast procedure with the client sending to another group.
type wrongGroup struct{ Multicast }

func (w *wrongGroup) Run(ctx context.Context, env *Env) error {
	_, err := runClient(ctx, env, "iperf-client", "iperf", "-c", "226.94.1.2", "-u", "-T", "32", "-t", "1", "-i", "1",
		"-B", ClientIP, "-b", "10M")
	return err
}
