package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ppkit/ppkit/internal/child"
	"github.com/ppkit/ppkit/internal/syncbuf"
)

// VM is a booted guest. All its methods are safe for concurrent use; Close removes everything the
// VM created (QEMU, network namespace, taps, temporary directory) and may be called repeatedly.
type VM struct {
	// Remote is the SSH login on the guest (nil until it answers): Run, Start, Copy*.
	*Remote
	opts     BootOptions
	dir      string
	args     []string
	cmd      *exec.Cmd
	qmp      *qmpClient
	sshPort  int
	net      *testNet
	console  *consoleBuffer
	stderr   syncbuf.Buffer
	exited   chan struct{}
	exitErr  error
	closeMu  sync.Mutex
	closed   bool
	closeErr error

	// stalled is closed when the watchdog sees the VM stop running (QMP run state other than
	// "running": paused, guest-panicked, internal-error, ...); stallState says which.
	stalled    chan struct{}
	stallState string
	closing    chan struct{} // closed by Close: the watchdog stops

	// BootTime is the time from starting QEMU to the first successful SSH login.
	BootTime time.Duration
}

// Boot starts QEMU and returns once the guest answers over SSH. On failure nothing is left.
func Boot(ctx context.Context, opts BootOptions) (*VM, error) {
	for attempt := 1; ; attempt++ {
		vm, err := bootOnce(ctx, opts)
		// The free port was taken between our probe and QEMU's bind (other VMs boot in
		// parallel): pick another one.
		var ie *InfraError
		if err != nil && attempt < 3 && errors.As(err, &ie) && strings.Contains(ie.Error(), "host forwarding rule") {
			continue
		}
		return vm, err
	}
}

func bootOnce(ctx context.Context, opts BootOptions) (_ *VM, err error) {
	opts.defaults()
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	if _, err := exec.LookPath(opts.QEMU); err != nil {
		return nil, &InfraError{Err: fmt.Errorf("boot: QEMU binary %q not found (install qemu-system-arm with harness/install-deps.sh, or pass --qemu PATH)", opts.QEMU)}
	}
	vm := &VM{opts: opts, exited: make(chan struct{}), stalled: make(chan struct{}), closing: make(chan struct{})}
	defer func() {
		if err != nil {
			vm.Close()
		}
	}()
	RemoveLeftovers(progress)
	if vm.dir, err = TempDir("vm"); err != nil {
		return nil, &InfraError{Err: fmt.Errorf("boot: %w", err)}
	}
	if vm.sshPort, err = freeLoopbackPort(); err != nil {
		return nil, &InfraError{Err: fmt.Errorf("boot: %w", err)}
	}
	launch := qemuLaunch{qmpSocket: filepath.Join(vm.dir, "qmp.sock"), sshPort: vm.sshPort, dir: vm.dir}
	var extra []*os.File
	if len(opts.NICs) > 0 {
		if vm.net, err = newTestNet(opts.NICs); err != nil {
			return nil, &InfraError{Err: fmt.Errorf("boot: test network: %w", err)}
		}
		for i, f := range vm.net.files {
			extra = append(extra, f)
			launch.tapFDs = append(launch.tapFDs, 3+i)
		}
	}
	args, err := qemuArgs(&vm.opts, launch)
	if err != nil {
		return nil, &InfraError{Err: fmt.Errorf("boot: %w", err)}
	}
	vm.args = append([]string{opts.QEMU}, args...)
	consoleFile, err := os.Create(filepath.Join(vm.dir, "console.log"))
	if err != nil {
		return nil, &InfraError{Err: fmt.Errorf("boot: %w", err)}
	}
	vm.console = newConsoleBuffer(consoleFile, opts.Console)
	vm.cmd = exec.Command(opts.QEMU, args...)
	vm.cmd.ExtraFiles = extra
	vm.cmd.Stdin = nil
	stdout, err := vm.cmd.StdoutPipe()
	if err != nil {
		return nil, &InfraError{Err: err}
	}
	vm.cmd.Stderr = &vm.stderr
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := child.Start(vm.cmd); err != nil {
		return nil, &InfraError{Err: fmt.Errorf("boot: start %s: %w", opts.QEMU, err), CommandLine: vm.CommandLine()}
	}
	created.add(&created.pids, fmt.Sprint(vm.cmd.Process.Pid))
	trackGroup(vm.cmd.Process.Pid)
	fmt.Fprintf(progress, "boot: QEMU pid %d, ssh on 127.0.0.1:%d, QMP for you on %s\n", vm.cmd.Process.Pid, vm.sshPort, vm.UserQMP())
	if vm.net != nil {
		vm.net.releaseFiles()
	}
	copied := make(chan struct{})
	go func() { vm.console.copyFrom(stdout); close(copied) }()
	go func() {
		<-copied
		vm.exitErr = vm.cmd.Wait()
		untrackGroup(vm.cmd.Process.Pid)
		vm.console.close()
		close(vm.exited)
	}()

	deadline := start.Add(opts.BootTimeout)
	bootCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := vm.connectQMP(bootCtx, launch.qmpSocket); err != nil {
		return nil, vm.failure(ctx, "boot failed: QMP", err)
	}
	if err := vm.console.waitFor(bootCtx, []byte(ReadyMarker), vm.exited); err != nil {
		// The marker can be garbled by kernel messages printed at the same moment: a guest
		// that answers SSH is ready all the same.
		lastCtx, lastCancel := context.WithTimeout(ctx, 5*time.Second)
		sshErr := vm.dialSSH(lastCtx)
		lastCancel()
		if sshErr != nil {
			return nil, vm.failure(ctx, "boot failed: no readiness marker on the console", err)
		}
	}
	if vm.Remote == nil {
		if err := vm.dialSSH(bootCtx); err != nil {
			return nil, vm.failure(ctx, "boot failed: SSH", err)
		}
	}
	vm.BootTime = time.Since(start)
	fmt.Fprintf(progress, "boot: guest ready over SSH after %s\n", vm.BootTime.Round(time.Millisecond))
	go vm.watch(watchInterval)
	return vm, nil
}

// watchInterval is how often the watchdog asks QEMU for the VM's run state.
var watchInterval = time.Second

// watch polls QEMU's run state until the VM stops running, exits or is closed. A guest that
// stops running (a QMP stop, a guest panic QEMU caught, an internal error) answers no command
// again: commands waiting on it fail at once as a hang instead of at their deadline.
func (vm *VM) watch(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-vm.exited:
			return
		case <-vm.closing:
			return
		case <-t.C:
		}
		st, err := vm.qmp.status(vm.opts.QMPTimeout)
		if err != nil || st == "running" {
			continue // QMP did not answer: the commands' own deadlines decide
		}
		vm.stallState = st
		close(vm.stalled)
		return
	}
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// connectQMP connects to QEMU's QMP socket, retrying while QEMU is still creating it (the file
// can exist a moment before QEMU listens on it).
func (vm *VM) connectQMP(ctx context.Context, socket string) error {
	last := errors.New("QMP socket did not appear")
	for {
		if _, err := os.Stat(socket); err == nil {
			c, err := dialQMP(socket, vm.opts.QMPTimeout)
			if err == nil {
				vm.qmp = c
				return nil
			}
			last = err
		}
		select {
		case <-vm.exited:
			return fmt.Errorf("QEMU exited before answering on its QMP socket (%v)", last)
		case <-ctx.Done():
			return fmt.Errorf("%v: %w", last, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (vm *VM) stderrString() string { return vm.stderr.String() }

// QMP runs a QMP command (e.g. "stop", "cont", "query-status") and returns its reply.
func (vm *VM) QMP(command string, args any) (json.RawMessage, error) {
	if vm.qmp == nil {
		return nil, errors.New("qmp: not connected")
	}
	return vm.qmp.run(command, args, vm.opts.QMPTimeout)
}

// Status returns QEMU's run state through QMP ("running", "paused", ...).
func (vm *VM) Status() (string, error) {
	if vm.qmp == nil {
		return "", errors.New("qmp: not connected")
	}
	return vm.qmp.status(vm.opts.QMPTimeout)
}

// Poweroff asks the guest to power off (QMP system_powerdown, the virt board's power key) and
// waits for QEMU to exit; a guest that ignores it is stopped with QMP quit, then killed, and that
// is reported as an error. Everything is cleaned up either way.
func (vm *VM) Poweroff(ctx context.Context) error {
	var result error
	if _, err := vm.QMP("system_powerdown", nil); err != nil {
		result = fmt.Errorf("poweroff: %w", err)
	} else {
		select {
		case <-vm.exited:
		case <-time.After(vm.opts.PoweroffTimeout):
			result = fmt.Errorf("poweroff: the guest ignored system_powerdown for %s; stopped it with QMP quit", vm.opts.PoweroffTimeout)
		case <-ctx.Done():
			result = fmt.Errorf("poweroff: %w", ctx.Err())
		}
	}
	if result != nil {
		vm.QMP("quit", nil)
		select {
		case <-vm.exited:
		case <-time.After(5 * time.Second):
		}
	}
	if err := vm.Close(); err != nil && result == nil {
		result = err
	}
	return result
}

// Exited is closed when QEMU has exited.
func (vm *VM) Exited() <-chan struct{} { return vm.exited }

// Close kills QEMU if it still runs and removes the network namespace, the taps (they die with
// QEMU's descriptors) and the VM's temporary directory.
func (vm *VM) Close() error {
	vm.closeMu.Lock()
	defer vm.closeMu.Unlock()
	if vm.closed {
		return vm.closeErr
	}
	vm.closed = true
	close(vm.closing)
	var errs []error
	vm.Remote.close()
	if vm.qmp != nil {
		vm.qmp.close()
	}
	if vm.cmd != nil && vm.cmd.Process != nil {
		select {
		case <-vm.exited:
		default:
			syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGKILL)
			vm.cmd.Process.Kill()
			select {
			case <-vm.exited:
			case <-time.After(10 * time.Second):
				errs = append(errs, fmt.Errorf("QEMU pid %d did not exit after SIGKILL", vm.cmd.Process.Pid))
			}
		}
	}
	if err := vm.net.close(); err != nil {
		errs = append(errs, err)
	}
	if vm.dir != "" {
		if err := os.RemoveAll(vm.dir); err != nil {
			errs = append(errs, err)
		}
	}
	vm.closeErr = errors.Join(errs...)
	return vm.closeErr
}

// SSHPort is the loopback port QEMU forwards to the guest's SSH server.
func (vm *VM) SSHPort() int { return vm.sshPort }

// UserQMP is the path of the QMP socket ppkit leaves free for the developer (socat -
// UNIX-CONNECT:PATH, then {"execute":"qmp_capabilities"}).
func (vm *VM) UserQMP() string { return userQMPSocket(filepath.Join(vm.dir, "qmp.sock")) }

// CommandLine is the copy-pasteable QEMU command line (tap descriptors appear as fd=N; rerun
// without test NICs or recreate the taps by hand).
func (vm *VM) CommandLine() string { return shellJoin(vm.args) }

// NetNS is the name of the network namespace holding the first test NIC's tap, and every other
// tap but those of OwnNetns NICs ("" without NICs).
func (vm *VM) NetNS() string {
	if vm.net == nil {
		return ""
	}
	return vm.net.netnsOf(0)
}

// NetNSOf is the name of the network namespace holding the tap of test NIC i.
func (vm *VM) NetNSOf(i int) string {
	if vm.net == nil || i < 0 || i >= len(vm.net.taps) {
		return ""
	}
	return vm.net.netnsOf(i)
}

// Taps are the test NICs' tap devices, in NIC order: tap i is in NetNSOf(i).
func (vm *VM) Taps() []string {
	if vm.net == nil {
		return nil
	}
	return append([]string(nil), vm.net.taps...)
}

// ConsoleLog returns the serial console captured since QEMU started.
func (vm *VM) ConsoleLog() []byte { return vm.console.bytes() }

// Ports are the VM's virtio-serial port names (BootOptions.Ports).
func (vm *VM) Ports() []string { return vm.opts.Ports }

// PortFile is the host file that receives what the guest writes on port name (BootOptions.Ports).
func (vm *VM) PortFile(name string) string { return portFile(vm.dir, name) }

// Image is the guest image the VM booted (its SSH keys, its directory).
func (vm *VM) Image() *Image { return vm.opts.Image }

// ConsoleReports returns the kernel reports in the console so far.
func (vm *VM) ConsoleReports() []Report { return ParseReports(vm.console.bytes()) }

// created records every QEMU pid, network namespace and temporary directory this process made,
// so that tests can check that each one is gone (other processes may run ppkit at the same time).
var created resourceLog

type resourceLog struct {
	mu                sync.Mutex
	pids, netns, dirs []string
}

func (r *resourceLog) add(list *[]string, v string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*list = append(*list, v)
}

func (r *resourceLog) snapshot() (pids, netns, dirs []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.pids...), append([]string(nil), r.netns...), append([]string(nil), r.dirs...)
}
