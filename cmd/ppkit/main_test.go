package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/internal/syncbuf"
)

func TestRunUnknownCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	if !strings.Contains(errb.String(), "unknown command") || strings.Count(errb.String(), "\n") != 1 {
		t.Fatalf("want one clear line, got %q", errb.String())
	}
}

func TestRunHelpListsCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"help"}, &out, &errb); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	for name := range commands {
		if !strings.Contains(out.String(), name) {
			t.Errorf("help does not list %q", name)
		}
	}
}

func TestParseFlagsInterleaved(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		wantJSON bool
		wantPos  []string
	}{
		{[]string{"file", "--json"}, true, []string{"file"}},
		{[]string{"--json", "a", "b"}, true, []string{"a", "b"}},
		{[]string{"a", "--", "--json", "-x"}, false, []string{"a", "--json", "-x"}},
		{[]string{}, false, nil},
	} {
		fs := newFlagSet("t", &bytes.Buffer{})
		j := fs.Bool("json", false, "")
		if err := parseFlags(fs, tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if *j != tc.wantJSON || strings.Join(fs.Args(), ",") != strings.Join(tc.wantPos, ",") {
			t.Errorf("%v: json=%v args=%v", tc.args, *j, fs.Args())
		}
	}
}

// TestHandleSignals: the first signal cancels the run with errInterrupted; a second one, or a
// stop that takes longer than abandonAfter, removes what the process made and exits 130.
func TestHandleSignals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		second bool
		why    string
	}{
		{"second signal", true, "interrupt again"},
		{"stop takes too long", false, "still running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func(d time.Duration) { abandonAfter = d }(abandonAfter)
			abandonAfter = 200 * time.Millisecond
			ctx, cancel := context.WithCancelCause(context.Background())
			sigs := make(chan os.Signal, 2)
			exited := make(chan int, 1)
			var stderr syncbuf.Buffer
			go handleSignals(sigs, cancel, &stderr, func(code int) { exited <- code })
			sigs <- os.Interrupt
			<-ctx.Done()
			if !errors.Is(context.Cause(ctx), errInterrupted) {
				t.Fatalf("cause %v, want errInterrupted", context.Cause(ctx))
			}
			select {
			case code := <-exited:
				t.Fatalf("exited %d on the first signal", code)
			case <-time.After(50 * time.Millisecond):
			}
			if tc.second {
				sigs <- os.Interrupt
			}
			select {
			case code := <-exited:
				if code != exitInterrupted {
					t.Errorf("exit %d, want %d", code, exitInterrupted)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no exit")
			}
			if out := stderr.String(); !strings.Contains(out, "stopping, and removing what this run made") || !strings.Contains(out, tc.why) {
				t.Errorf("stderr %q", out)
			}
		})
	}
}

// TestRunInterrupted: a command that fails because the run was interrupted exits 130 and says
// so; one that ends normally on the interrupt (ppkit boot waiting for Ctrl-C) exits 0.
func TestRunInterrupted(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{errors.New("launch the board: context canceled"), exitInterrupted},
		{silentFailure, exitInterrupted},
		{nil, 0},
	} {
		register(&command{name: "interrupt-test", run: func(ctx context.Context, _ []string, _, _ io.Writer) error { return tc.err }})
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(errInterrupted)
		var stdout, stderr bytes.Buffer
		code := run(ctx, []string{"interrupt-test"}, &stdout, &stderr)
		delete(commands, "interrupt-test")
		if code != tc.code || (tc.code != 0) != strings.Contains(stderr.String(), "interrupted") {
			t.Errorf("err %v: exit %d, stderr %q; want exit %d", tc.err, code, stderr.String(), tc.code)
		}
	}
}
