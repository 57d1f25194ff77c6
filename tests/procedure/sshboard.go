package procedure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ppkit/ppkit/harness"
	"golang.org/x/crypto/ssh"
)

// SSHLauncher runs the procedures on a real board reached over SSH (`ppkit test --board`): the
// developer's Espressobin, or any machine with an mvneta port. ppkit builds the kernel from the
// board's own config, checks that the board runs exactly that kernel (with Deploy, boots it there
// first: harness.Deploy), and moves the host's NIC cabled to the board (ClientIface) into a
// client namespace of its own for each procedure, so the test network is the QEMU board's:
// 192.168.200.1 on the board's mvneta port,
// 192.168.200.2 inside the namespace. The board has no trace ports: the trace leaves it as text
// over SSH. It has no second test NIC either: procedures that need a peer cannot run on it.
type SSHLauncher struct {
	URL         string // ssh://[USER@]HOST[:PORT]
	ClientIface string // the host's NIC cabled to the board's mvneta port
	Debug       bool   // the kernel was built with config/debug.config
	Tree        string // a kernel git tree instead of Debian's linux-source-5.10
	KnownHosts  string // pinned host keys (harness default when empty)
	// Deploy boots the kernel under test on the board when it runs another one
	// (harness.Deploy: an extlinux entry, a reboot, the build id checked).
	Deploy bool
}

var _ Launcher = (*SSHLauncher)(nil)

// Board names the real board and the host's NIC cabled to it, for the report.
func (l *SSHLauncher) Board() string {
	if a, err := harness.ParseBoardURL(l.URL); err == nil {
		return a.String() + ", client " + l.ClientIface
	}
	return l.URL + ", client " + l.ClientIface
}

// Preflight checks once, before any procedure, what every Launch would find wrong: the
// kernel, the login, the kernel the board runs, its mvneta port, the links. Run stops at its
// error, so that a board running another kernel is one line, not one failure a procedure.
func (l *SSHLauncher) Preflight(ctx context.Context, k Kernel, progress io.Writer) error {
	b, rb, err := l.connect(ctx, k, progress)
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "board: %s runs the kernel under test; its %s is the port under test, this host's %s the client's\n",
		b.Address, rb.iface, l.ClientIface)
	return b.Close()
}

// Launch logs into the board, checks it as Preflight does and moves ClientIface into a fresh
// client namespace. Close moves the interface back with its addresses and logs out.
func (l *SSHLauncher) Launch(ctx context.Context, k Kernel, progress io.Writer) (_ Testbed, err error) {
	b, rb, err := l.connect(ctx, k, progress)
	if err != nil {
		return nil, err
	}
	tb := &sshTestbed{ssh: b, board: rb}
	defer func() {
		if err != nil {
			tb.Close()
		}
	}()
	if tb.keys, err = harness.TempDir("testlink"); err != nil {
		return nil, err
	}
	known := filepath.Join(tb.keys, "known_hosts")
	if err := os.WriteFile(known, []byte("ppkit-board "+string(ssh.MarshalAuthorizedKey(b.HostKey))), 0o600); err != nil {
		return nil, err
	}
	if tb.moved, err = harness.MoveInterface(l.ClientIface); err != nil {
		return nil, err
	}
	tb.client = &NetnsClient{Namespace: tb.moved.Netns(), Iface: l.ClientIface, SSHKey: b.KeyFile, KnownHosts: known, SSHUser: b.Address.User}
	return tb, nil
}

// connect builds (or finds) the kernel of k, logs into the board and checks that it runs that
// kernel, finds its mvneta port and architecture, and checks that the run cannot cut its own
// line to the board.
func (l *SSHLauncher) connect(ctx context.Context, k Kernel, progress io.Writer) (_ *harness.SSHBoard, _ *remoteBoard, err error) {
	bo := harness.BoardOptions{URL: l.URL, KnownHosts: l.KnownHosts, Progress: progress}
	b, err := harness.DialBoard(ctx, bo)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	// The board's kernel is built from the board's own config, so that it boots there.
	base, mods, from, err := harness.BoardKernelConfig(ctx, b.Remote)
	if err != nil {
		return nil, nil, fmt.Errorf("board %s: %w", b.Address, err)
	}
	ko := harness.KernelOptions{Tree: l.Tree, Debug: l.Debug, BaseConfig: base, BoardModules: mods, Progress: progress}
	if !k.Baseline {
		ko.Series = k.Series
	}
	if from != "" {
		fmt.Fprintf(progress, "board: the kernel is built from the board's config %s with ppkit's options on top\n", from)
	} else {
		fmt.Fprintf(progress, "board: no kernel config on the board (/proc/config.gz, /boot/config-RELEASE): the kernel is built from ppkit's own, as for the emulated board\n")
	}
	kern, err := harness.BuildKernel(ctx, ko)
	if err != nil {
		return nil, nil, err
	}
	err = checkBoardKernel(ctx, b, kern, k)
	if errors.Is(err, errBoardKernel) && l.Deploy {
		nb, derr := harness.Deploy(ctx, b, bo, kern, harness.DeployOptions{BaseConfig: base, BaseModules: mods, Progress: progress})
		if derr != nil {
			return nil, nil, &harness.InfraError{Err: derr}
		}
		b = nb
		err = checkBoardKernel(ctx, b, kern, k)
	}
	if err != nil {
		return nil, nil, err
	}
	sb := &remoteBoard{r: b.Remote, console: b}
	if sb.iface, err = findMvneta(ctx, b); err != nil {
		return nil, nil, err
	}
	if sb.arch, err = boardArch(ctx, b); err != nil {
		return nil, nil, err
	}
	if err := l.checkLinks(ctx, b, sb.iface); err != nil {
		return nil, nil, err
	}
	return b, sb, nil
}

// checkBoardKernel checks that the board runs kern: the same build id in /sys/kernel/notes as
// in the Image's notes. Otherwise it says what runs and what to boot (errBoardKernel).
func checkBoardKernel(ctx context.Context, b *harness.SSHBoard, kern *harness.Kernel, k Kernel) error {
	want, err := harness.KernelBuildID(kern)
	if err != nil {
		return err
	}
	release, got, err := harness.BoardBuildID(ctx, b.Remote)
	if err != nil {
		return fmt.Errorf("board %s: %w", b.Address, err)
	}
	if got == want {
		return nil
	}
	image, err := os.ReadFile(kern.Image)
	if err != nil {
		return err
	}
	return &harness.InfraError{Err: fmt.Errorf("%w: board %s runs %s (build id %s), not the kernel ppkit built for the %s (%s, build id %s): "+
		"add --deploy (ppkit copies it to the board's /boot, adds an extlinux entry and reboots the board), or boot %s on the board yourself, then run again",
		errBoardKernel, b.Address, release, got, k, harness.KernelRelease(image), want, kern.Image)}
}

// errBoardKernel is a board that runs another kernel than the one under test.
var errBoardKernel = errors.New("another kernel")

// findMvneta is the board's interface bound to the mvneta driver.
func findMvneta(ctx context.Context, b *harness.SSHBoard) (string, error) {
	out, err := b.Run(ctx, `for d in /sys/class/net/*; do drv=$(readlink $d/device/driver); [ "${drv##*/}" = mvneta ] && echo ${d##*/}; done; true`)
	if err != nil {
		return "", fmt.Errorf("board %s: find the mvneta interface: %w", b.Address, err)
	}
	ifaces := strings.Fields(string(out))
	if len(ifaces) != 1 {
		return "", fmt.Errorf("board %s: want one interface bound to the mvneta driver, found %q", b.Address, ifaces)
	}
	return ifaces[0], nil
}

// boardArch is the board's GOARCH, for the guest helpers.
func boardArch(ctx context.Context, b *harness.SSHBoard) (string, error) {
	out, err := b.Run(ctx, "uname -m")
	if err != nil {
		return "", fmt.Errorf("board %s: uname -m: %w", b.Address, err)
	}
	m := strings.TrimSpace(string(out))
	arch, ok := map[string]string{"aarch64": "arm64", "armv7l": "arm", "x86_64": "amd64", "riscv64": "riscv64"}[m]
	if !ok {
		return "", fmt.Errorf("board %s: machine %q: ppkit builds its helpers for aarch64, armv7l, x86_64 and riscv64", b.Address, m)
	}
	return arch, nil
}

// checkLinks refuses a set-up where the run would cut its own line to the board: the SSH login
// arriving over the board's mvneta port (the procedures re-address it) or leaving this host
// through ClientIface (ppkit moves it away).
func (l *SSHLauncher) checkLinks(ctx context.Context, b *harness.SSHBoard, mvneta string) error {
	out, err := b.Run(ctx, `echo "$SSH_CONNECTION"; ip -o addr show dev `+shellQuote(mvneta))
	if err != nil {
		return fmt.Errorf("board %s: %w", b.Address, err)
	}
	if loginArrivesOn(string(out)) {
		return fmt.Errorf("board %s: ppkit's SSH login arrives over %s, the mvneta port the procedures re-address: reach the board through another interface (USB Ethernet, a second port)", b.Address, mvneta)
	}
	host, _, err := net.SplitHostPort(b.Client().RemoteAddr().String())
	if err != nil {
		return err
	}
	dev, err := harness.RouteDevice(host)
	if err != nil {
		return err
	}
	if dev == l.ClientIface {
		return fmt.Errorf("this host reaches the board's SSH address %s through %s, the --client-if ppkit moves into its client namespace: cable a second link for the test, or log in over another interface", host, dev)
	}
	return nil
}

// loginArrivesOn reads `echo "$SSH_CONNECTION"; ip -o addr show dev IFACE` and says whether
// the login's server address (SSH_CONNECTION's third field) is one of the interface's.
func loginArrivesOn(out string) bool {
	first, rest, _ := strings.Cut(out, "\n")
	f := strings.Fields(first)
	if len(f) < 3 {
		return false
	}
	for _, l := range strings.Split(rest, "\n") {
		a := strings.Fields(l)
		for i := 0; i+1 < len(a); i++ {
			if (a[i] == "inet" || a[i] == "inet6") && strings.HasPrefix(a[i+1], f[2]+"/") {
				return true
			}
		}
	}
	return false
}

// sshTestbed is a real board with the host's cabled NIC in a client namespace.
type sshTestbed struct {
	ssh    *harness.SSHBoard
	board  *remoteBoard
	client *NetnsClient
	moved  *harness.MovedInterface
	keys   string
}

func (t *sshTestbed) Board() Board   { return t.board }
func (t *sshTestbed) Client() Client { return t.client }

// Close moves the client interface back to the host (its addresses, routes, state), takes the
// board's test port down without its addresses and logs out.
func (t *sshTestbed) Close() error {
	var errs []error
	if t.board.iface != "" && t.moved != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		// Leave the board as the procedures found it: its test port without 192.168.200.1.
		if _, err := t.board.Run(ctx, "ip addr flush dev "+shellQuote(t.board.iface)); err != nil {
			errs = append(errs, fmt.Errorf("board: %w", err))
		}
		cancel()
	}
	if err := t.moved.Restore(); err != nil {
		errs = append(errs, err)
	}
	if err := t.ssh.Close(); err != nil {
		errs = append(errs, err)
	}
	if t.keys != "" {
		os.RemoveAll(t.keys)
	}
	return errors.Join(errs...)
}
