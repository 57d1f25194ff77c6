package harness

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// goldenConsole returns the console of testdata/console/NAME (the part after its "---" line).
func goldenConsole(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata/console", name))
	if err != nil {
		t.Fatal(err)
	}
	_, console, ok := bytes.Cut(data, []byte("---\n"))
	if !ok {
		t.Fatalf("%s: no --- line", name)
	}
	return console
}

// goldenConsoleFrom returns the console of testdata/console/NAME from the first line of its
// first report titled title: a real console whose first report is that one.
func goldenConsoleFrom(t *testing.T, name, title string) []byte {
	t.Helper()
	console := goldenConsole(t, name)
	for _, r := range ParseReports(console) {
		if r.Title == title {
			lines := strings.SplitAfter(string(console), "\n")
			return []byte(strings.Join(lines[r.StartLine:], ""))
		}
	}
	t.Fatalf("%s: no report %q", name, title)
	return nil
}

// A table of failures as (*VM).failure and (*VM).commandFailure observe them, and the verdict
// each must get: its type, title and message, and whether the VM is ended.
func TestClassify(t *testing.T) {
	const cmdline = "qemu-system-aarch64 -M virt"
	var (
		errNoAnswer  = errors.New("no answer: context deadline exceeded")
		errDropped   = errors.New("wait: remote command exited without exit status or exit signal")
		errSSH       = errors.New("dial tcp 127.0.0.1:2222: connect: connection refused")
		errExit      = errors.New("exit status 1")
		errQMP       = errors.New("qmp query-status: timeout after 2s")
		errStalled   = errors.New(`the VM stopped running (QEMU run state "paused")`)
		cleanConsole = goldenConsole(t, "real-clean-boot-poweroff.log")
		noiseConsole = goldenConsole(t, "synth-clean-noise.log")
		panicConsole = goldenConsole(t, "real-panic-sysrq-c.log")
		initConsole  = goldenConsole(t, "real-panic-kill-init.log")
		bugConsole   = goldenConsole(t, "real-lkdtm-kernel-bug.log")
		badPage      = goldenConsole(t, "real-prerfc-bad-page-warn-oops.log")
		warnConsole  = goldenConsoleFrom(t, "real-prerfc-bad-page-warn-oops.log", "WARNING in page_pool_release")
		softLockup   = goldenConsole(t, "real-lkdtm-softlockup-rcu-stall.log")
		hungTask     = goldenConsole(t, "real-lkdtm-hung-task.log")
		kasan        = goldenConsole(t, "real-lkdtm-kasan-read-after-free.log")
		poolStalled  = goldenConsole(t, "real-page-pool-stalled-shutdown.log")
	)
	const (
		guest = "guest"
		infra = "infra"
		plain = "plain"
	)
	tests := []struct {
		name  string
		f     facts
		kind  string // guest, infra or plain
		msg   string // the error's whole message
		title string // a GuestError's title
		// report: the title of the GuestError's report ("" when it must have none)
		report string
		endVM  bool
		wraps  error // errors.Is(err, wraps), when set
	}{
		// The context decides first.
		{
			name: "command cancelled: abandoned, the VM stays up",
			f:    facts{What: `run "sleep 9"`, Err: errNoAnswer, Command: true, CtxErr: context.Canceled, CommandLine: cmdline},
			kind: plain, msg: `run "sleep 9": abandoned: context canceled`, wraps: context.Canceled,
		},
		{
			name: "command cancelled with a report on the console: still only abandoned",
			f:    facts{What: `run "x"`, Err: errNoAnswer, Command: true, CtxErr: context.Canceled, Console: panicConsole},
			kind: plain, msg: `run "x": abandoned: context canceled`, wraps: context.Canceled,
		},
		{
			name: "boot cancelled: neither verdict, the VM ends",
			f:    facts{What: "boot failed: SSH", Err: errSSH, CtxErr: context.Canceled, CommandLine: cmdline},
			kind: plain, msg: "boot failed: SSH: context canceled", endVM: true, wraps: context.Canceled,
		},
		{
			name: "command deadline, the guest still answers: timed out, the VM stays up",
			f:    facts{What: `run "sleep 9"`, Err: errNoAnswer, Command: true, CtxErr: context.DeadlineExceeded, Responsive: true},
			kind: plain, msg: `run "sleep 9": timed out (the guest still answers): context deadline exceeded`, wraps: context.DeadlineExceeded,
		},
		{
			name: "command deadline, the guest still answers, a WARN on the console: still only timed out",
			f:    facts{What: `run "x"`, Err: errNoAnswer, Command: true, CtxErr: context.DeadlineExceeded, Responsive: true, Console: warnConsole},
			kind: plain, msg: `run "x": timed out (the guest still answers): context deadline exceeded`, wraps: context.DeadlineExceeded,
		},
		{
			name: "command deadline, the guest does not answer, QEMU runs: hung",
			f: facts{What: `run "cat /dev/zero"`, Err: errNoAnswer, Command: true, CtxErr: context.DeadlineExceeded,
				Console: cleanConsole, QMPConnected: true, QMPState: "running", CommandLine: cmdline},
			kind: guest, title: `guest hung: run "cat /dev/zero"`, endVM: true,
			msg: `guest hung: run "cat /dev/zero": no answer: context deadline exceeded (VM state: running)`,
		},
		{
			// Seen with dropbear: the trace reader (cat trace_pipe) stopped with kill -TERM, its
			// session closed without an exit status; ending the VM for it killed a healthy guest
			// in the middle of the splice procedure.
			name: "command without exit status, the guest still answers: only the command failed, the VM stays up",
			f:    facts{What: `run "cat trace_pipe"`, Err: errDropped, Command: true, Responsive: true, Console: noiseConsole, CommandLine: cmdline},
			kind: plain, msg: `run "cat trace_pipe": ` + errDropped.Error() + " (the guest still answers)", wraps: errDropped,
		},
		{
			name: "command without exit status, the guest still answers, an oops on the console: the report wins",
			f:    facts{What: `run "x"`, Err: errDropped, Command: true, Responsive: true, Console: bugConsole, QMPConnected: true, QMPState: "running"},
			kind: guest, title: "kernel BUG in lkdtm_BUG", report: "kernel BUG in lkdtm_BUG", endVM: true,
			msg: `kernel BUG in lkdtm_BUG: run "x": ` + errDropped.Error(),
		},
		{
			name: "boot deadline: never only a timeout, even if the guest answered",
			f: facts{What: "boot failed: no readiness marker on the console", Err: context.DeadlineExceeded, CtxErr: context.DeadlineExceeded,
				Responsive: true, Console: noiseConsole, QMPConnected: true, QMPState: "running"},
			kind: guest, title: "guest hung: boot failed: no readiness marker on the console", endVM: true,
			msg: "guest hung: boot failed: no readiness marker on the console: context deadline exceeded (VM state: running)",
		},

		// A kernel report on the console wins.
		{
			name: "panic (sysrq c), QEMU exited",
			f:    facts{What: `run "echo c > /proc/sysrq-trigger"`, Err: errDropped, Command: true, Console: panicConsole, Exited: true, ExitErr: nil, CommandLine: cmdline},
			kind: guest, title: "Kernel panic - not syncing: sysrq triggered crash", report: "Kernel panic - not syncing: sysrq triggered crash", endVM: true,
			msg: `Kernel panic - not syncing: sysrq triggered crash: run "echo c > /proc/sysrq-trigger": ` + errDropped.Error(),
		},
		{
			name: "panic (init killed) during boot",
			f:    facts{What: "boot failed: QMP", Err: errors.New("QEMU exited before answering on its QMP socket"), Console: initConsole, Exited: true},
			kind: guest, title: "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
			report: "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100", endVM: true,
			msg: "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100: boot failed: QMP: QEMU exited before answering on its QMP socket",
		},
		{
			name: "panic, QEMU exited with stderr output: the report still wins over infra",
			f:    facts{What: `run "x"`, Err: errDropped, Command: true, Console: panicConsole, Exited: true, ExitErr: errExit, Stderr: "qemu-system-aarch64: terminating on signal 15\n"},
			kind: guest, title: "Kernel panic - not syncing: sysrq triggered crash", report: "Kernel panic - not syncing: sysrq triggered crash", endVM: true,
			msg: `Kernel panic - not syncing: sysrq triggered crash: run "x": ` + errDropped.Error(),
		},
		{
			name: "kernel BUG, the first of two reports",
			f:    facts{What: `run "echo BUG > DIRECT"`, Err: errDropped, Command: true, Console: bugConsole, QMPConnected: true, QMPState: "running"},
			kind: guest, title: "kernel BUG in lkdtm_BUG", report: "kernel BUG in lkdtm_BUG", endVM: true,
			msg: `kernel BUG in lkdtm_BUG: run "echo BUG > DIRECT": ` + errDropped.Error(),
		},
		{
			name: "Bad page state (pre-RFC series), then WARN, oops and panic: the first report",
			f:    facts{What: `run "ip link set eth1 down"`, Err: errDropped, Command: true, Console: badPage, Exited: true},
			kind: guest, title: "Bad page state: PAGE_FLAGS_CHECK_AT_FREE flag(s) set", report: "Bad page state: PAGE_FLAGS_CHECK_AT_FREE flag(s) set", endVM: true,
			msg: `Bad page state: PAGE_FLAGS_CHECK_AT_FREE flag(s) set: run "ip link set eth1 down": ` + errDropped.Error(),
		},
		{
			name: "WARN, guest still running, command deadline and no answer",
			f: facts{What: `run "ip link set eth1 down"`, Err: errNoAnswer, Command: true, CtxErr: context.DeadlineExceeded,
				Console: warnConsole, QMPConnected: true, QMPState: "running"},
			kind: guest, title: "WARNING in page_pool_release", report: "WARNING in page_pool_release", endVM: true,
			msg: `WARNING in page_pool_release: run "ip link set eth1 down": ` + errNoAnswer.Error(),
		},
		{
			name: "soft lockup, QMP unresponsive",
			f: facts{What: `run "echo SOFTLOCKUP > DIRECT"`, Err: errNoAnswer, Command: true, CtxErr: context.DeadlineExceeded,
				Console: softLockup, QMPConnected: true, QMPErr: errQMP},
			kind: guest, title: "BUG: soft lockup in lkdtm_SOFTLOCKUP", report: "BUG: soft lockup in lkdtm_SOFTLOCKUP", endVM: true,
			msg: `BUG: soft lockup in lkdtm_SOFTLOCKUP: run "echo SOFTLOCKUP > DIRECT": ` + errNoAnswer.Error(),
		},
		{
			name: "hung task, the VM stopped running under a command",
			f:    facts{What: `run "x"`, Err: errStalled, Console: hungTask, QMPConnected: true, QMPState: "paused"},
			kind: guest, title: "INFO: task hung in lkdtm_HUNG_TASK", report: "INFO: task hung in lkdtm_HUNG_TASK", endVM: true,
			msg: `INFO: task hung in lkdtm_HUNG_TASK: run "x": ` + errStalled.Error(),
		},
		{
			name: "KASAN use-after-free",
			f:    facts{What: `run "x"`, Err: errDropped, Command: true, Console: kasan, Exited: true},
			kind: guest, title: "KASAN: use-after-free Read in lkdtm_READ_AFTER_FREE", report: "KASAN: use-after-free Read in lkdtm_READ_AFTER_FREE", endVM: true,
			msg: `KASAN: use-after-free Read in lkdtm_READ_AFTER_FREE: run "x": ` + errDropped.Error(),
		},
		{
			name: "page_pool's stalled shutdown warning",
			f:    facts{What: `run "x"`, Err: errNoAnswer, Command: true, CtxErr: context.DeadlineExceeded, Console: poolStalled, QMPConnected: true, QMPState: "running"},
			kind: guest, title: "page_pool: stalled pool shutdown", report: "page_pool: stalled pool shutdown", endVM: true,
			msg: `page_pool: stalled pool shutdown: run "x": ` + errNoAnswer.Error(),
		},

		// QEMU exited without a kernel report.
		{
			name: "QEMU exited, empty console: infra",
			f:    facts{What: "boot failed: QMP", Err: errors.New("QEMU exited before answering on its QMP socket"), Exited: true, ExitErr: errExit, CommandLine: cmdline},
			kind: infra, msg: "boot failed: QMP: QEMU exited (exit status 1): ", endVM: true,
		},
		{
			name: "QEMU exited, console of blanks only: infra",
			f:    facts{What: "boot failed: QMP", Err: errSSH, Exited: true, ExitErr: errExit, Console: []byte("\r\n  \n")},
			kind: infra, msg: "boot failed: QMP: QEMU exited (exit status 1): ", endVM: true,
		},
		{
			name: "QEMU exited, empty console, stderr: infra with QEMU's message",
			f: facts{What: "boot failed: QMP", Err: errSSH, Exited: true, ExitErr: errExit, CommandLine: cmdline,
				Stderr: "qemu-system-aarch64: -netdev user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22: could not set up host forwarding rule 'tcp:127.0.0.1:2222-:22'\n"},
			kind: infra, endVM: true,
			msg: "boot failed: QMP: QEMU exited (exit status 1): qemu-system-aarch64: -netdev user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22: could not set up host forwarding rule 'tcp:127.0.0.1:2222-:22'",
		},
		{
			name: "QEMU exited after a console, with stderr: infra",
			f:    facts{What: `run "x"`, Err: errDropped, Command: true, Exited: true, ExitErr: errExit, Console: cleanConsole, Stderr: "qemu: fatal: Trying to execute code outside RAM or ROM\n"},
			kind: infra, msg: `run "x": QEMU exited (exit status 1): qemu: fatal: Trying to execute code outside RAM or ROM`, endVM: true,
		},
		{
			name: "QEMU exited after a console, no stderr: the guest stopped",
			f:    facts{What: `run "poweroff -f"`, Err: errDropped, Command: true, Exited: true, Console: cleanConsole, CommandLine: cmdline},
			kind: guest, title: `run "poweroff -f": guest stopped (QEMU exited)`, endVM: true, wraps: errDropped,
			msg: `run "poweroff -f": guest stopped (QEMU exited): ` + errDropped.Error(),
		},
		{
			name: "QEMU exited after a console, blank stderr: the guest stopped",
			f:    facts{What: "boot failed: SSH", Err: errors.New("QEMU exited"), Exited: true, ExitErr: errExit, Console: noiseConsole, Stderr: " \n"},
			kind: guest, title: "boot failed: SSH: guest stopped (QEMU exited)", endVM: true,
			msg: "boot failed: SSH: guest stopped (QEMU exited): QEMU exited",
		},

		{
			name: "QEMU crashed (SIGSEGV) after a console: infra, the emulator's fault",
			f:    facts{What: `run "x"`, Err: errDropped, Command: true, Exited: true, ExitErr: killedBy(t, "SEGV"), Console: cleanConsole, CommandLine: cmdline},
			kind: infra, endVM: true,
			msg: `run "x": QEMU crashed (signal: segmentation fault) with no kernel report on the console`,
		},
		{
			name: "QEMU aborted after a console: infra",
			f:    facts{What: `run "x"`, Err: errDropped, Command: true, Exited: true, ExitErr: killedBy(t, "ABRT"), Console: cleanConsole},
			kind: infra, endVM: true,
			msg: `run "x": QEMU crashed (signal: aborted) with no kernel report on the console`,
		},
		{
			name: "QEMU killed from outside (SIGKILL) after a console: the board died",
			f:    facts{What: `run "x"`, Err: errDropped, Command: true, Exited: true, ExitErr: killedBy(t, "KILL"), Console: cleanConsole, CommandLine: cmdline},
			kind: guest, title: `run "x": guest stopped (QEMU exited)`, endVM: true, wraps: errDropped,
			msg: `run "x": guest stopped (QEMU exited): ` + errDropped.Error() + " (QEMU signal: killed)",
		},

		// QEMU runs without a kernel report: the guest hung; the QMP run state says how.
		{
			name: "QEMU runs, paused (a QMP stop)",
			f:    facts{What: `run "x"`, Err: errStalled, Console: cleanConsole, QMPConnected: true, QMPState: "paused", CommandLine: cmdline},
			kind: guest, title: `guest hung: run "x"`, endVM: true,
			msg: `guest hung: run "x": the VM stopped running (QEMU run state "paused") (VM state: paused)`,
		},
		{
			name: "QEMU runs, running",
			f:    facts{What: "boot failed: SSH", Err: context.DeadlineExceeded, CtxErr: context.DeadlineExceeded, Console: noiseConsole, QMPConnected: true, QMPState: "running"},
			kind: guest, title: "guest hung: boot failed: SSH", endVM: true,
			msg: "guest hung: boot failed: SSH: context deadline exceeded (VM state: running)",
		},
		{
			name: "QEMU runs, guest-panicked with nothing on the console",
			f:    facts{What: `run "x"`, Err: errors.New(`the VM stopped running (QEMU run state "guest-panicked")`), QMPConnected: true, QMPState: "guest-panicked"},
			kind: guest, title: `guest hung: run "x"`, endVM: true,
			msg: `guest hung: run "x": the VM stopped running (QEMU run state "guest-panicked") (VM state: guest-panicked)`,
		},
		{
			name: "QEMU runs, QMP unresponsive",
			f:    facts{What: `run "x"`, Err: errNoAnswer, Command: true, CtxErr: context.DeadlineExceeded, Console: cleanConsole, QMPConnected: true, QMPErr: errQMP},
			kind: guest, title: `guest hung: run "x"`, endVM: true,
			msg: `guest hung: run "x": no answer: context deadline exceeded (VM state: QMP unresponsive)`,
		},
		{
			name: "QEMU runs, QMP never connected",
			f:    facts{What: "boot failed: QMP", Err: errors.New("QMP socket did not appear: context deadline exceeded"), CtxErr: context.DeadlineExceeded},
			kind: guest, title: "guest hung: boot failed: QMP", endVM: true,
			msg: "guest hung: boot failed: QMP: QMP socket did not appear: context deadline exceeded (VM state: unknown)",
		},
		// A real board (SSHBoard): no QEMU, only SSH and the kernel log streamed from it.
		{
			name: "board: command deadline, the board still answers: timed out",
			f:    facts{What: `run "sleep 9"`, Err: errNoAnswer, Command: true, CtxErr: context.DeadlineExceeded, Responsive: true, Board: "ssh://root@board:22"},
			kind: plain, msg: `run "sleep 9": timed out (the guest still answers): context deadline exceeded`, wraps: context.DeadlineExceeded,
		},
		{
			name: "board: the board does not answer, an oops in its log: the report",
			f:    facts{What: `run "x"`, Err: errDropped, Command: true, Console: bugConsole, Board: "ssh://root@board:22"},
			kind: guest, title: "kernel BUG in lkdtm_BUG", report: "kernel BUG in lkdtm_BUG", endVM: true,
			msg: `kernel BUG in lkdtm_BUG: run "x": ` + errDropped.Error(),
		},
		{
			name: "board: the board does not answer, a clean log: stopped answering, not a hung QEMU",
			f:    facts{What: `run "x"`, Err: errNoAnswer, Command: true, CtxErr: context.DeadlineExceeded, Console: cleanConsole, Board: "ssh://root@board:22"},
			kind: guest, title: `board stopped answering: run "x"`, endVM: true,
			msg: `board stopped answering: run "x": no answer: context deadline exceeded (ssh://root@board:22 runs no command over SSH any more)`,
		},
		{
			name: "board: a command failed, the board still answers: that command's failure",
			f:    facts{What: `run "x"`, Err: errDropped, Command: true, Responsive: true, Console: cleanConsole, Board: "ssh://root@board:22"},
			kind: plain, msg: `run "x": ` + errDropped.Error() + " (the guest still answers)", wraps: errDropped,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := classify(tc.f)
			if d.Err == nil {
				t.Fatal("no error")
			}
			if got := d.Err.Error(); got != tc.msg {
				t.Errorf("message\n got %q\nwant %q", got, tc.msg)
			}
			if d.EndVM != tc.endVM {
				t.Errorf("EndVM = %v, want %v", d.EndVM, tc.endVM)
			}
			if tc.wraps != nil && !errors.Is(d.Err, tc.wraps) {
				t.Errorf("%v does not wrap %v", d.Err, tc.wraps)
			}
			var ge *GuestError
			var ie *InfraError
			isGuest, isInfra := errors.As(d.Err, &ge), errors.As(d.Err, &ie)
			switch tc.kind {
			case guest:
				if !isGuest || isInfra {
					t.Fatalf("%T %v: want a *GuestError", d.Err, d.Err)
				}
				if ge.Title != tc.title {
					t.Errorf("title\n got %q\nwant %q", ge.Title, tc.title)
				}
				switch {
				case tc.report == "" && ge.Report != nil:
					t.Errorf("report %q, want none", ge.Report.Title)
				case tc.report != "" && ge.Report == nil:
					t.Errorf("no report, want %q", tc.report)
				case tc.report != "" && ge.Report.Title != tc.report:
					t.Errorf("report %q, want %q", ge.Report.Title, tc.report)
				case tc.report != "" && !strings.Contains(ge.Details(), ge.Report.Text):
					t.Errorf("details without the report:\n%s", ge.Details())
				}
				if want := tail(tc.f.Console, consoleTailLines); ge.ConsoleTail != want {
					t.Errorf("console tail\n got %q\nwant %q", ge.ConsoleTail, want)
				}
				if ge.CommandLine != tc.f.CommandLine {
					t.Errorf("command line %q, want %q", ge.CommandLine, tc.f.CommandLine)
				}
			case infra:
				if !isInfra || isGuest {
					t.Fatalf("%T %v: want an *InfraError", d.Err, d.Err)
				}
				if ie.CommandLine != tc.f.CommandLine {
					t.Errorf("command line %q, want %q", ie.CommandLine, tc.f.CommandLine)
				}
			case plain:
				if isGuest || isInfra {
					t.Fatalf("%T %v: want a plain error, neither guest nor infra", d.Err, d.Err)
				}
			default:
				t.Fatalf("bad kind %q", tc.kind)
			}
		})
	}
}

// killedBy is the exit error of a real process that the named signal ended.
func killedBy(t *testing.T, sig string) error {
	t.Helper()
	err := exec.Command("sh", "-c", "kill -"+sig+" $$").Run()
	if _, ok := exitSignal(err); !ok {
		t.Fatalf("sh killed by SIG%s: %v", sig, err)
	}
	return err
}
