package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// facts is what the VM observed when an operation on it failed: everything the verdict depends
// on. (*VM).failure and (*VM).commandFailure gather them (waiting for QEMU, asking QMP, probing
// the guest over SSH); classify, a pure function, decides.
type facts struct {
	What string // what was being done: "boot failed: SSH", `run "ls"`, ...
	Err  error  // the operation's error
	// Command: a guest command under its own deadline (Exec, Shell, Copy*). Cancelling it only
	// abandons it, and a deadline on a guest that still answers only times it out. Otherwise
	// (boot, a VM that stopped running under a command) every failure ends the VM.
	Command bool
	// CtxErr is the operation's ctx.Err(): nil, context.Canceled or context.DeadlineExceeded.
	CtxErr error
	// Responsive: the guest ran a trivial command over SSH after a command failed (not when it
	// was cancelled).
	Responsive bool

	Console []byte // the serial console captured so far
	Exited  bool   // QEMU had exited (after a moment's grace for a guest that panics)
	ExitErr error  // QEMU's exit status, when Exited
	Stderr  string // QEMU's standard error, when Exited

	// QEMU still ran: its run state from QMP query-status ("running", "paused",
	// "guest-panicked", ...), or the error of a QMP that did not answer. QMPConnected is false
	// when ppkit never connected to QMP.
	QMPConnected bool
	QMPState     string
	QMPErr       error

	CommandLine string // the copy-pasteable QEMU command line

	// Board is a real board's URL (SSHBoard): no QEMU to ask, only SSH and the kernel log.
	Board string
}

// decision is classify's verdict: the error to return and whether the VM must be ended (QEMU
// killed and everything removed) because the guest cannot be trusted any more.
type decision struct {
	Err   error
	EndVM bool
}

// consoleTailLines is how much of the console a GuestError carries.
const consoleTailLines = 40

// classify turns a failure into the right verdict, in this order:
//   - a cancelled command is abandoned (plain error, the VM stays up); a command whose deadline
//     passed on a guest that still answers only timed out (plain error, the VM stays up);
//   - any other cancelled operation is neither the kernel's fault nor the host's (plain error);
//   - a kernel report on the console wins: a *GuestError with the first report;
//   - a command that failed otherwise (a session that ended without an exit status) on a guest
//     that still answers is that command's failure (plain error, the VM stays up), not a hung
//     guest to be ended;
//   - a QEMU that exited with an empty console, that wrote to its standard error, or that a
//     fault of its own killed (SIGSEGV, SIGABRT, ...), failed by itself: an *InfraError; one that
//     exited, or was killed from outside (SIGKILL, SIGTERM), after printing a console is the
//     guest stopping, a *GuestError "guest stopped (QEMU exited)";
//   - a real board (Board) that answers no command any more: a *GuestError "board stopped
//     answering" (no QEMU to ask);
//   - a QEMU that still runs holds a hung guest: a *GuestError "guest hung", with the QMP run
//     state (or "QMP unresponsive").
func classify(f facts) decision {
	if f.Command {
		switch f.CtxErr {
		case context.Canceled:
			return decision{Err: fmt.Errorf("%s: abandoned: %w", f.What, f.CtxErr)}
		case context.DeadlineExceeded:
			if f.Responsive {
				return decision{Err: fmt.Errorf("%s: timed out (the guest still answers): %w", f.What, f.CtxErr)}
			}
		}
	}
	if f.CtxErr == context.Canceled {
		return decision{Err: fmt.Errorf("%s: %w", f.What, f.CtxErr), EndVM: true}
	}
	if reports := ParseReports(f.Console); len(reports) > 0 {
		r := reports[0]
		return decision{EndVM: true, Err: &GuestError{Title: r.Title, Report: &r, Err: fmt.Errorf("%s: %v", f.What, f.Err),
			ConsoleTail: tail(f.Console, consoleTailLines), CommandLine: f.CommandLine}}
	}
	if f.Command && f.Responsive {
		return decision{Err: fmt.Errorf("%s: %w (the guest still answers)", f.What, f.Err)}
	}
	if f.Exited {
		stderr := strings.TrimSpace(f.Stderr)
		if len(bytes.TrimSpace(f.Console)) == 0 || stderr != "" {
			return decision{EndVM: true, Err: &InfraError{Err: fmt.Errorf("%s: QEMU exited (%v): %s", f.What, f.ExitErr, stderr), CommandLine: f.CommandLine}}
		}
		// QEMU killed by a fault of its own (SIGSEGV, SIGABRT, ...) is the emulator crashing, not
		// the guest stopping; SIGKILL and SIGTERM come from outside (a kill, the OOM killer),
		// and a board that vanishes like that fails its run, as a real board that loses power.
		if sig, ok := exitSignal(f.ExitErr); ok && sig != syscall.SIGKILL && sig != syscall.SIGTERM {
			return decision{EndVM: true, Err: &InfraError{Err: fmt.Errorf("%s: QEMU crashed (%v) with no kernel report on the console",
				f.What, f.ExitErr), CommandLine: f.CommandLine}}
		}
		err := f.Err
		if _, ok := exitSignal(f.ExitErr); ok {
			err = fmt.Errorf("%w (QEMU %v)", f.Err, f.ExitErr)
		}
		return decision{EndVM: true, Err: &GuestError{Title: f.What + ": guest stopped (QEMU exited)", Err: err,
			ConsoleTail: tail(f.Console, consoleTailLines), CommandLine: f.CommandLine}}
	}
	if f.Board != "" {
		return decision{EndVM: true, Err: &GuestError{Title: "board stopped answering: " + f.What,
			Err: fmt.Errorf("%v (%s runs no command over SSH any more)", f.Err, f.Board), ConsoleTail: tail(f.Console, consoleTailLines)}}
	}
	state := "unknown"
	if f.QMPConnected {
		if f.QMPErr == nil {
			state = f.QMPState
		} else {
			state = "QMP unresponsive"
		}
	}
	return decision{EndVM: true, Err: &GuestError{Title: "guest hung: " + f.What, Err: fmt.Errorf("%v (VM state: %s)", f.Err, state),
		ConsoleTail: tail(f.Console, consoleTailLines), CommandLine: f.CommandLine}}
}

// exitSignal returns the signal that ended QEMU, if a signal did.
func exitSignal(err error) (syscall.Signal, bool) {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 0, false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
}

// failure turns an error during boot (or a VM that stopped running) into the right verdict (see
// classify) and ends the VM.
func (vm *VM) failure(ctx context.Context, what string, err error) error {
	return vm.decide(vm.observe(ctx, what, err, false))
}

// commandFailure decides what the failure of a guest command means (see classify): a cancelled
// context abandons the command and leaves the VM running, a passed deadline on a guest that
// still answers is only the command's timeout, and anything else (no answer, a dropped
// connection) is a failure as in boot, which ends the VM.
func (vm *VM) commandFailure(ctx context.Context, what string, err error) error {
	return vm.decide(vm.observe(ctx, what, err, true))
}

// decide applies classify's verdict: it ends the VM when the guest cannot be trusted any more.
func (vm *VM) decide(f facts) error {
	d := classify(f)
	if d.EndVM {
		vm.Close()
	}
	return d.Err
}

// observe gathers the facts of a failure. It skips the observations that take time and that
// the verdict would not use: nothing after a cancel, no probe of the guest unless a command
// failed, and only the console when the guest still answers.
func (vm *VM) observe(ctx context.Context, what string, err error, command bool) facts {
	f := facts{What: what, Err: err, Command: command, CtxErr: ctx.Err(), CommandLine: vm.CommandLine()}
	if f.CtxErr == context.Canceled {
		return f
	}
	if command {
		if f.Responsive = vm.responsive(); f.Responsive {
			f.Console = vm.console.bytes()
			return f
		}
	}
	// A guest that panics makes QEMU exit (panic=-1, -no-reboot): give the console a moment.
	select {
	case <-vm.exited:
	case <-time.After(2 * time.Second):
	}
	f.Console = vm.console.bytes()
	select {
	case <-vm.exited:
		f.Exited, f.ExitErr, f.Stderr = true, vm.exitErr, vm.stderrString()
	default:
		if vm.qmp != nil {
			f.QMPConnected = true
			f.QMPState, f.QMPErr = vm.qmp.status(2 * time.Second)
		}
	}
	return f
}

// responsive reports whether the guest runs a trivial command over SSH within a few seconds.
func (vm *VM) responsive() bool {
	select {
	case <-vm.exited:
		return false
	default:
	}
	return vm.Remote.responsive()
}

func tail(b []byte, n int) string { return lastLines(b, n) }
