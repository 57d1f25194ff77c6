package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"unsafe"

	"github.com/ppkit/ppkit/internal/owned"
	"golang.org/x/sys/unix"
)

// testNet is the network namespaces holding the host ends of a VM's test NICs. Each tap is
// created inside its namespace by opening /dev/net/tun from a thread that entered it, and the
// file descriptor is handed to QEMU (-netdev tap,fd=N). The tap therefore never exists in the
// host's namespace, and it disappears by itself when QEMU closes the descriptor.
//
// The taps share one namespace, except those of NICs with OwnNetns, which get one each.
type testNet struct {
	names []string // the namespaces; names[tapNS[i]] holds taps[i]
	taps  []string
	tapNS []int
	files []*os.File
}

// newTestNet creates the namespaces — each named for this process (owned.Name("net"), so that a
// later run removes it if this one is killed) — and one tap device per NIC, tap0…tapN-1 (down;
// the tests configure them with `ip -n NS`). On error everything created is removed.
func newTestNet(nics []NIC) (*testNet, error) {
	t := &testNet{}
	shared := -1
	for i, nic := range nics {
		ns := shared
		if nic.OwnNetns || shared < 0 {
			if err := t.addNetns(); err != nil {
				t.close()
				return nil, err
			}
			ns = len(t.names) - 1
			if !nic.OwnNetns {
				shared = ns
			}
		}
		name := fmt.Sprintf("tap%d", i)
		f, err := openTapInNetns(t.names[ns], name)
		if err != nil {
			t.close()
			return nil, err
		}
		t.taps = append(t.taps, name)
		t.tapNS = append(t.tapNS, ns)
		t.files = append(t.files, f)
	}
	return t, nil
}

func (t *testNet) addNetns() error {
	name, err := addOwnedNetns()
	if err != nil {
		return err
	}
	t.names = append(t.names, name)
	return nil
}

// addOwnedNetns creates a network namespace named for this process (owned.Name), so that a
// later run removes it if this one is killed.
func addOwnedNetns() (string, error) {
	name := owned.Name("net")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		deleteNetns(name) // ip may have been interrupted after creating the file
		return "", fmt.Errorf("ip netns add %s: %w: %s (test NICs need root or CAP_NET_ADMIN)", name, err, strings.TrimSpace(string(out)))
	}
	created.add(&created.netns, name)
	return name, nil
}

// deleteNetns removes the named network namespace as `ip netns del` does (iproute2's
// delete_namespace(): a lazy unmount of its bind mount in /run/netns, then the file), in
// ppkit's own process. A clean-up must not be a child process: a terminal's Ctrl-C goes to
// ppkit's whole process group, and an `ip netns del` that got it while ppkit was finishing left
// the namespace behind (TestInterruptTestMulticast, SIGINT to the group in the drain).
// A namespace that is already gone is no error.
func deleteNetns(name string) error {
	path := "/run/netns/" + name
	unix.Unmount(path, unix.MNT_DETACH) // fails when nothing is mounted there: unlink decides
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete network namespace %s: %w", name, err)
	}
	return nil
}

// netnsOf is the namespace holding tap i.
func (t *testNet) netnsOf(i int) string { return t.names[t.tapNS[i]] }

func openTapInNetns(netns, name string) (*os.File, error) {
	nsf, err := os.Open("/run/netns/" + netns)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", netns, err)
	}
	defer nsf.Close()
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// A locked thread that never returns to the host namespace is discarded by the runtime
		// when the goroutine exits without unlocking. Children forked on that thread earlier
		// would get their parent-death signal then: package child forks them elsewhere.
		runtime.LockOSThread()
		if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("setns %s: %w", netns, err)}
			return
		}
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{nil, fmt.Errorf("open /dev/net/tun: %w", err)}
			return
		}
		var req [unix.IFNAMSIZ + 64]byte
		copy(req[:], name)
		*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
			unix.Close(fd)
			ch <- result{nil, fmt.Errorf("TUNSETIFF %s in %s: %w", name, netns, errno)}
			return
		}
		ch <- result{os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil}
	}()
	r := <-ch
	return r.f, r.err
}

// releaseFiles closes ppkit's copies of the tap descriptors once QEMU holds its own.
func (t *testNet) releaseFiles() {
	for _, f := range t.files {
		f.Close()
	}
	t.files = nil
}

func (t *testNet) close() error {
	if t == nil {
		return nil
	}
	t.releaseFiles()
	var errs []error
	for _, name := range t.names {
		if err := deleteNetns(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
