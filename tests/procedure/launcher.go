package procedure

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ppkit/ppkit/harness"
	mvnetaemu "github.com/ppkit/ppkit/mvneta-emu"
	"github.com/ppkit/ppkit/tests/verdict"
	"golang.org/x/crypto/ssh"
)

// GuestPackages are the Debian arm64 packages the procedures need in the guest beyond the
// harness's default image: ethtool (GRO on/off, ethtool -S) and iptables' legacy backend for
// the TEE rule (xtables-legacy-multi, the extensions the rule loads, their libraries).
var GuestPackages = []harness.ImagePackage{
	{Name: "ethtool", Files: []string{"sbin/ethtool"}},
	{Name: "libmnl0"},
	{Name: "iptables", Files: []string{"usr/sbin/xtables-legacy-multi", "usr/sbin/iptables-legacy",
		// only the extensions the TEE rule loads (the others pull in conntrack libraries)
		"usr/lib/aarch64-linux-gnu/xtables/libxt_TEE.so", "usr/lib/aarch64-linux-gnu/xtables/libxt_standard.so",
		"usr/lib/aarch64-linux-gnu/xtables/libxt_udp.so"}},
	{Name: "libxtables12"},
	{Name: "libip4tc2"},
	{Name: "libip6tc2"},
}

// PeerNICModel is the board's second NIC (the peer's, see Peer): virtio-net without mergeable
// RX buffers and without guest GSO, which would make virtio-net use receive_big. So 5.10's
// virtio-net receives with receive_small, which builds every skb around a page-frag buffer
// (build_skb: head_frag, no page_pool) — heads that reach skb_free_head() beside the pool's.
// Transmit offloads stay: forward turns TSO off with ethtool.
const PeerNICModel = "virtio-net-pci,romfile=,mrg_rxbuf=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off"

// MvnetaMAC and PeerMAC are the test NICs' MAC addresses; the board's interfaces are found by them.
const (
	MvnetaMAC = "52:54:00:12:35:00"
	PeerMAC   = "52:54:00:12:35:01"
)

// BoardCPUs is the QEMU board's CPU count (the Espressobin's Armada 3720 has two cores); each
// CPU's ring buffer leaves the board on a trace port of its own.
const BoardCPUs = 2

// HarnessLauncher boots the real board: the kernel built by the harness (with the series, or
// the baseline), ppkit's guest image plus GuestPackages, the mvneta QEMU, one mvneta NIC on a
// tap inside a client namespace, and a second NIC (PeerNICModel) on a tap inside a second
// client namespace of its own; the harness creates and removes both.
type HarnessLauncher struct {
	Debug    bool   // build the kernel with config/debug.config (KASAN, DEBUG_VM, …)
	Tree     string // a kernel git tree instead of Debian's linux-source-5.10
	MemoryMB int    // guest memory (harness default when 0)
}

var _ Launcher = (*HarnessLauncher)(nil)

// Board names the emulated board, for the report.
func (l *HarnessLauncher) Board() string {
	return "QEMU arm64 virt, emulated mvneta (" + strconv.Itoa(BoardCPUs) + " CPUs)"
}

// Spec is the board Launch boots for k.
func (l *HarnessLauncher) Spec(k Kernel, progress io.Writer) harness.Spec {
	ko := harness.KernelOptions{Tree: l.Tree, Debug: l.Debug}
	if !k.Baseline {
		ko.Series = k.Series
	}
	return harness.Spec{
		Kernel: ko,
		Image:  harness.ImageOptions{Extra: GuestPackages},
		Boot: harness.BootOptions{MemoryMB: l.MemoryMB, SMP: BoardCPUs, Ports: append(TracePortNames(BoardCPUs), OutPortName),
			NICs: []harness.NIC{{Model: mvnetaemu.DeviceName, MAC: MvnetaMAC}, {Model: PeerNICModel, MAC: PeerMAC, OwnNetns: true}}},
		Progress: progress,
	}
}

// Launch builds what is missing of Spec(k) (all of it cached by input hash) and boots it
// (harness.Prepare).
func (l *HarnessLauncher) Launch(ctx context.Context, k Kernel, progress io.Writer) (Testbed, error) {
	vm, err := harness.Prepare(ctx, l.Spec(k, progress))
	if err != nil {
		return nil, err
	}
	tb, err := newVMTestbed(ctx, vm, vm.Image())
	if err != nil {
		vm.Close()
		return nil, err
	}
	return tb, nil
}

// vmTestbed adapts a harness.VM to Testbed.
type vmTestbed struct {
	board  *remoteBoard
	client *NetnsClient
	peer   *Peer
	vm     *harness.VM
	keys   string // directory of the client's SSH key and known_hosts for the test link
}

var _ PeerTestbed = (*vmTestbed)(nil)

func newVMTestbed(ctx context.Context, vm *harness.VM, image *harness.Image) (*vmTestbed, error) {
	if vm.NetNS() == "" || len(vm.Taps()) != 2 || vm.NetNSOf(1) == vm.NetNS() {
		return nil, fmt.Errorf("the VM has no test NIC namespaces (netns %q and %q, taps %v)", vm.NetNS(), vm.NetNSOf(1), vm.Taps())
	}
	// The mvneta port is whichever interface the mvneta driver bound; the second test NIC has
	// PeerMAC. One board command finds both.
	out, err := vm.Run(ctx, `for d in /sys/class/net/*; do drv=$(readlink $d/device/driver); [ "${drv##*/}" = mvneta ] && echo "mvneta ${d##*/}"; [ "$(cat $d/address)" = `+PeerMAC+` ] && echo "peer ${d##*/}"; done; true`)
	if err != nil {
		return nil, fmt.Errorf("find the test NICs: %w", err)
	}
	var found [2][]string
	for _, l := range strings.Split(string(out), "\n") {
		if name, ok := strings.CutPrefix(l, "mvneta "); ok {
			found[0] = append(found[0], name)
		} else if name, ok := strings.CutPrefix(l, "peer "); ok {
			found[1] = append(found[1], name)
		}
	}
	if len(found[0]) != 1 {
		return nil, fmt.Errorf("want one interface bound to the mvneta driver in the guest, found %q", found[0])
	}
	if len(found[1]) != 1 {
		return nil, fmt.Errorf("want one interface with MAC %s (the second test NIC) in the guest, found %q", PeerMAC, found[1])
	}
	iface, peerIface := found[0][0], found[1][0]
	keys, err := harness.TempDir("testlink")
	if err != nil {
		return nil, err
	}
	known := filepath.Join(keys, "known_hosts")
	line := "ppkit-board " + string(ssh.MarshalAuthorizedKey(image.HostKey))
	if err := os.WriteFile(known, []byte(line), 0o600); err != nil {
		os.RemoveAll(keys)
		return nil, err
	}
	var ports []TracePort
	var outPort *TracePort
	for _, name := range vm.Ports() {
		if strings.HasPrefix(name, tracePortPrefix) {
			ports = append(ports, TracePort{Name: name, File: vm.PortFile(name)})
		}
		if name == OutPortName {
			outPort = &TracePort{Name: name, File: vm.PortFile(name)}
		}
	}
	return &vmTestbed{
		board: &remoteBoard{r: vm.Remote, console: vm, iface: iface, arch: "arm64", ports: ports, out: outPort},
		client: &NetnsClient{Namespace: vm.NetNS(), Iface: vm.Taps()[0],
			SSHKey: filepath.Join(image.Dir, "id_ed25519"), KnownHosts: known},
		peer: &Peer{Client: &NetnsClient{Namespace: vm.NetNSOf(1), Iface: vm.Taps()[1]}, BoardInterface: peerIface},
		vm:   vm, keys: keys,
	}, nil
}

func (t *vmTestbed) Peer() *Peer    { return t.peer }
func (t *vmTestbed) Board() Board   { return t.board }
func (t *vmTestbed) Client() Client { return t.client }
func (t *vmTestbed) Close() error {
	err := t.vm.Close()
	os.RemoveAll(t.keys)
	return err
}

// remoteBoard adapts a machine ppkit reaches over SSH — the QEMU guest (harness.VM) or a real
// board (harness.SSHBoard) — to Board: the same Remote, its own console.
type remoteBoard struct {
	r       *harness.Remote
	console interface {
		ConsoleLog() []byte
		ConsoleReports() []harness.Report
	}
	iface, arch string
	ports       []TracePort // none on a real board: its trace leaves as text
	out         *TracePort  // the port for bulk output (OutPortBoard), none on a real board
}

var (
	_ TracePortBoard = (*remoteBoard)(nil)
	_ OutPortBoard   = (*remoteBoard)(nil)
)

func (b *remoteBoard) TracePorts() []TracePort { return b.ports }

func (b *remoteBoard) OutPort() (TracePort, bool) {
	if b.out == nil {
		return TracePort{}, false
	}
	return *b.out, true
}

func (b *remoteBoard) Run(ctx context.Context, cmd string) ([]byte, error) { return b.r.Run(ctx, cmd) }
func (b *remoteBoard) Start(ctx context.Context, cmd string, stdout, stderr io.Writer) (Process, error) {
	return b.r.Start(ctx, cmd, stdout, stderr)
}
func (b *remoteBoard) CopyTo(ctx context.Context, local, remote string, mode uint32) error {
	return b.r.CopyTo(ctx, local, remote, mode)
}
func (b *remoteBoard) CopyFrom(ctx context.Context, remote, local string) error {
	return b.r.CopyFrom(ctx, remote, local)
}
func (b *remoteBoard) Interface() string  { return b.iface }
func (b *remoteBoard) Arch() string       { return b.arch }
func (b *remoteBoard) ConsoleLog() []byte { return b.console.ConsoleLog() }
func (b *remoteBoard) ConsoleReports() []verdict.ConsoleReport {
	var out []verdict.ConsoleReport
	for _, r := range b.console.ConsoleReports() {
		out = append(out, verdict.ConsoleReport{Title: r.Title, Report: r.Text})
	}
	return out
}
