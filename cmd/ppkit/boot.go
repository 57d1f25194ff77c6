package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ppkit/ppkit/harness"
)

func init() {
	register(&command{name: "boot", summary: "boot the guest in QEMU; --run CMD or --shell", run: runBoot})
}

// nicFlag collects repeatable --nic MODEL flags.
type nicFlag []harness.NIC

func (n *nicFlag) String() string { return fmt.Sprint(*n) }
func (n *nicFlag) Set(model string) error {
	if strings.TrimSpace(model) == "" {
		return errors.New("empty device model")
	}
	*n = append(*n, harness.NIC{Model: model})
	return nil
}

// bootFlags are the flags that shape a boot, shared by boot and bench.
type bootFlags struct {
	kernelFlags
	qemu    string
	cpu     string
	memory  int
	append  string
	nics    nicFlag
	timeout time.Duration
	console bool
}

func (b *bootFlags) register(fs *flag.FlagSet) {
	b.kernelFlags.register(fs)
	fs.StringVar(&b.qemu, "qemu", "", "QEMU binary (default: ppkit's build with the mvneta model, built if missing)")
	fs.StringVar(&b.cpu, "cpu", "cortex-a57", "QEMU CPU model")
	fs.IntVar(&b.memory, "m", 1024, fmt.Sprintf("guest RAM in MiB (at most %d)", harness.MaxMemoryMB))
	fs.StringVar(&b.append, "append", "", "extra kernel command line")
	fs.Var(&b.nics, "nic", "add a test NIC of this QEMU device model on a tap in a fresh netns (repeatable)")
	fs.DurationVar(&b.timeout, "boot-timeout", 90*time.Second, "time allowed from QEMU start to SSH ready")
	fs.BoolVar(&b.console, "console", false, "copy the serial console to stderr while booting")
}

// spec says what board the flags ask for (harness.Prepare builds what is missing and boots it).
func (b *bootFlags) spec(ctx context.Context, stderr io.Writer) (harness.Spec, error) {
	if b.memory > harness.MaxMemoryMB || b.memory <= 0 {
		return harness.Spec{}, usageErrorf("-m %d: guest RAM must be 1..%d MiB (mvneta's DMA mask is 32-bit)", b.memory, harness.MaxMemoryMB)
	}
	kopts, err := b.kernelFlags.options(ctx, stderr)
	if err != nil {
		return harness.Spec{}, err
	}
	// An empty QEMU is the one that carries the mvneta model (built once, then cached).
	o := harness.BootOptions{QEMU: b.qemu, CPU: b.cpu, MemoryMB: b.memory,
		Append: b.append, NICs: b.nics, BootTimeout: b.timeout}
	if b.console {
		o.Console = stderr
	}
	return harness.Spec{Kernel: kopts, Boot: o, Progress: stderr}, nil
}

func runBoot(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("boot", stderr)
	var bf bootFlags
	bf.register(fs)
	run := fs.String("run", "", "run this shell command in the guest, print its output and exit with its status")
	shell := fs.Bool("shell", false, "open an interactive shell in the guest")
	cmdTimeout := fs.Duration("timeout", 10*time.Minute, "time allowed for --run")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("boot: unexpected argument %q (quote the command: --run 'CMD')", fs.Arg(0))
	}
	if *run != "" && *shell {
		return usageErrorf("boot: --run and --shell exclude each other")
	}
	spec, err := bf.spec(ctx, stderr)
	if err != nil {
		return err
	}
	spec.Boot.Append = strings.TrimSpace(spec.Boot.Append + " ppkit.ifup") // test NICs up, links negotiated
	vm, err := harness.Prepare(ctx, spec)
	if err != nil {
		return bootFailure(stderr, err)
	}
	defer vm.Close()
	if ns := vm.NetNS(); ns != "" {
		fmt.Fprintf(stderr, "boot: test NICs on taps %s in netns %s\n", strings.Join(vm.Taps(), ","), ns)
	}
	status := 0
	switch {
	case *run != "":
		rctx, cancel := context.WithTimeout(ctx, *cmdTimeout)
		defer cancel()
		status, err = vm.Exec(rctx, *run, nil, stdout, stderr)
		if err != nil {
			return bootFailure(stderr, err)
		}
	case *shell:
		status, err = vm.Shell(ctx, os.Stdin, stdout, stderr)
		if err != nil {
			return bootFailure(stderr, err)
		}
	default:
		fmt.Fprintf(stderr, "boot: log in with:\n  %s\nboot: Ctrl-C powers the guest off\n", vm.SSHCommand())
		select {
		case <-ctx.Done():
		case <-vm.Exited():
			fmt.Fprintln(stderr, "boot: QEMU exited")
		}
	}
	if reports := vm.ConsoleReports(); len(reports) > 0 {
		for _, r := range reports {
			fmt.Fprintf(stderr, "boot: kernel report: %s\n%s", r.Title, r.Text)
		}
		status = max(status, 1)
	}
	// Powering off is the graceful step: after a Ctrl-C it gets 3 s (a second Ctrl-C skips it),
	// then Poweroff stops QEMU with QMP quit.
	budget := 45 * time.Second
	if ctx.Err() != nil {
		budget = 3 * time.Second
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer cancel()
	if err := vm.Poweroff(pctx); err != nil {
		fmt.Fprintf(stderr, "boot: %v\n", err)
	}
	if status != 0 {
		return &exitError{code: status, err: errors.New("")}
	}
	return nil
}

// bootFailure prints a guest or infra failure with its details (console, QEMU command line).
func bootFailure(stderr io.Writer, err error) error {
	var ge *harness.GuestError
	var ie *harness.InfraError
	switch {
	case errors.As(err, &ge):
		fmt.Fprint(stderr, ge.Details())
		return failf("%v", err)
	case errors.As(err, &ie):
		fmt.Fprint(stderr, ie.Details())
		return &exitError{code: 2, err: err}
	}
	return err
}
