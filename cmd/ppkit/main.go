// Command ppkit drives the page_pool-return-hook-via-SKB kernel series: it manages the stg
// series, builds and boots the arm64 kernel on an emulated mvneta NIC, runs the traffic
// procedures, and checks what the kernel did against a Go reference model of page_pool.
//
// This package only parses flags and calls the ppkit packages; each subcommand lives in a file of
// its own and registers itself with register().
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ppkit/ppkit/harness"
)

// command is one ppkit subcommand.
type command struct {
	name    string
	summary string // one line for `ppkit help`
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("ppkit: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// exitError makes run return a specific exit code. Usage errors exit 2, a failed verdict 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErrorf reports bad command-line input (exit 2).
func usageErrorf(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// failf reports a completed run whose verdict is negative (exit 1) with a message.
func failf(format string, args ...any) error {
	return &exitError{code: 1, err: fmt.Errorf(format, args...)}
}

// silentFailure reports exit 1 when the output already explained why.
var silentFailure = &exitError{code: 1, err: errors.New("")}

// newFlagSet returns a flag set that reports errors instead of exiting and prints usage to stderr.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ppkit "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// pathFlags are the flags of each flag set that name files or directories; parseFlags makes
// their values absolute, so that no package sees a path relative to the directory ppkit was
// started in (packages run git, make and stg in other directories).
var pathFlags = map[*flag.FlagSet][]*string{}

// pathFlag defines a string flag naming a file or directory (see pathFlags).
func pathFlag(fs *flag.FlagSet, name, value, usage string) *string {
	p := new(string)
	pathFlagVar(fs, p, name, value, usage)
	return p
}

// pathFlagVar is pathFlag storing into p.
func pathFlagVar(fs *flag.FlagSet, p *string, name, value, usage string) {
	fs.StringVar(p, name, value, usage)
	pathFlags[fs] = append(pathFlags[fs], p)
}

// absPaths makes every path flag of fs absolute.
func absPaths(fs *flag.FlagSet) error {
	for _, p := range pathFlags[fs] {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return usageErrorf("%s: %v", *p, err)
		}
		*p = abs
	}
	return nil
}

// parseFlags parses args, turning flag errors into usage errors. It accepts flags after
// positional arguments too (`ppkit model run FILE --json`), as kernel developers type them;
// everything after a literal "--" is positional.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return &exitError{code: 0, err: errors.New("")}
			}
			return &exitError{code: 2, err: errors.New("")} // flag already printed the error
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if len(rest) == 0 || (consumed > 0 && args[consumed-1] == "--") {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	if err := fs.Parse(append([]string{"--"}, positional...)); err != nil {
		return err
	}
	return absPaths(fs)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ppkit COMMAND [ARGS]")
	fmt.Fprintln(w, "")
	fmt.Fprintln(w, "ppkit builds, boots and model-checks the page_pool return-hook-via-SKB series.")
	fmt.Fprintln(w, "")
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "")
	fmt.Fprintln(w, "Run 'ppkit COMMAND -h' for a command's flags.")
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ppkit: unknown command %q; run 'ppkit help' for the list\n", args[0])
		return 2
	}
	err := c.run(ctx, args[1:], stdout, stderr)
	if err != nil && errors.Is(context.Cause(ctx), errInterrupted) {
		// The command failed because it was told to stop, whatever its error says. (A command
		// for which Ctrl-C is the normal end, `ppkit boot` waiting for it, returns nil.)
		fmt.Fprintf(stderr, "ppkit %s: interrupted; removed what this run made\n", c.name)
		return exitInterrupted
	}
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if msg := strings.TrimSpace(err.Error()); msg != "" {
		fmt.Fprintf(stderr, "ppkit %s: %s\n", c.name, msg)
	}
	return code
}

// errInterrupted is the cause of the run context's cancellation on SIGINT or SIGTERM.
var errInterrupted = errors.New("interrupted")

// exitInterrupted is the exit status of an interrupted command, as a shell reports a command
// killed by SIGINT.
const exitInterrupted = 130

// abandonAfter bounds how long an interrupted ppkit may take to stop by itself before it kills
// and removes what it made and exits: every wait follows the cancelled context, so this only
// fires on a bug, and says so.
var abandonAfter = 4 * time.Second

// handleSignals turns the first SIGINT or SIGTERM into the cancellation of the run context:
// every phase stops, and the testbed (QEMU, the client namespace, temporary directories) is
// removed on the way out. A second signal, or a stop that takes longer than abandonAfter, kills
// and removes everything this process made at once and exits.
func handleSignals(sigs <-chan os.Signal, cancel context.CancelCauseFunc, stderr io.Writer, exit func(int)) {
	first := <-sigs
	fmt.Fprintf(stderr, "\nppkit: %s: stopping, and removing what this run made (again to stop at once)\n", first)
	cancel(errInterrupted)
	why := ""
	select {
	case s := <-sigs:
		why = fmt.Sprintf("%s again", s)
	case <-time.After(abandonAfter):
		why = fmt.Sprintf("still running %s after the interrupt (a wait that ignores cancellation: please report it)", abandonAfter)
	}
	removed := harness.Abandon()
	fmt.Fprintf(stderr, "ppkit: %s: stopped at once; killed and removed %d things this run made\n", why, len(removed))
	for _, r := range removed {
		fmt.Fprintf(stderr, "  %s\n", r)
	}
	exit(exitInterrupted)
}

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go handleSignals(sigs, cancel, os.Stderr, os.Exit)
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
