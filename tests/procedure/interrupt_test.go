package procedure_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ppkit/ppkit/tests/procedure"
	"github.com/ppkit/ppkit/tests/procedure/boardtest"
	"github.com/ppkit/ppkit/tests/verdict"
)

var errTestInterrupt = errors.New("interrupted (test)")

// interruptingBoard cancels the run, as a Ctrl-C does, when the runner sends it a command
// containing at, and from then on behaves like a board whose session was abandoned.
type interruptingBoard struct {
	*boardtest.Board
	at     string
	cancel context.CancelCauseFunc
	fired  atomic.Bool
}

func (b *interruptingBoard) Run(ctx context.Context, cmd string) ([]byte, error) {
	if strings.Contains(cmd, b.at) && b.fired.CompareAndSwap(false, true) {
		b.cancel(errTestInterrupt)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return b.Board.Run(ctx, cmd)
}

type interruptTestbed struct {
	board  procedure.Board
	closed bool
}

func (t *interruptTestbed) Board() procedure.Board   { return t.board }
func (t *interruptTestbed) Client() procedure.Client { return &boardtest.Client{} }
func (t *interruptTestbed) Close() error             { t.closed = true; return nil }

type interruptLauncher struct {
	at     string
	cancel context.CancelCauseFunc
	beds   []*interruptTestbed
}

func (l *interruptLauncher) Launch(ctx context.Context, k procedure.Kernel, _ io.Writer) (procedure.Testbed, error) {
	tb := &interruptTestbed{board: &interruptingBoard{Board: boardtest.NewBoard(), at: l.at, cancel: l.cancel}}
	l.beds = append(l.beds, tb)
	return tb, nil
}

// TestRunInterrupted: a run interrupted in any phase stops at once, judges nothing (no model
// run, no kernel or infrastructure blame), closes its testbed, and skips the procedures left.
func TestRunInterrupted(t *testing.T) {
	boardtest.FastTimers(t)
	// Waits that used to outlast an interrupt: make them long, so that a wait that ignores the
	// cancellation shows up as a slow test.
	drain := procedure.TraceDrainTimeout
	procedure.TraceDrainTimeout = time.Minute
	t.Cleanup(func() { procedure.TraceDrainTimeout = drain })
	for _, at := range []string{
		"buffer_size_kb",     // enabling the tracepoints
		"ip addr flush",      // bringing the link up
		"ping -c 3",          // the link check
		"/proc/net/udp",      // setup: waiting for the iperf server
		"multicast begin",    // the begin marker, right before traffic
		"multicast end",      // the end marker, right after traffic
		"tracing_on",         // the drain: tracing off
		"per_cpu/cpu*/stats", // the drain: waiting for the reader to empty the ring
		"kill -TERM",         // collect: stopping the server
	} {
		t.Run(at, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			l := &interruptLauncher{at: at, cancel: cancel}
			var modelRuns atomic.Int32
			model := func(ctx context.Context, in verdict.ModelInput) (*verdict.ModelReport, error) {
				modelRuns.Add(1)
				return boardtest.OKModel(ctx, in)
			}
			start := time.Now()
			sum, err := procedure.Run(ctx, procedure.Config{Procedures: []string{"multicast", "tcp"}, Kernel: procedure.Kernel{Series: "/src/patches", Design: "series"},
				Options: procedure.Options{Duration: time.Second, RateMbit: 10}, ArtifactDir: t.TempDir(),
				Launcher: l, Model: model, CacheRoot: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("the interrupted run took %s", d)
			}
			if !sum.Interrupted || sum.Pass || len(sum.Results) != 2 {
				t.Fatalf("summary interrupted=%v pass=%v results=%d", sum.Interrupted, sum.Pass, len(sum.Results))
			}
			for _, r := range sum.Results {
				if len(r.Reasons) != 1 || r.Reasons[0].Kind != verdict.ReasonInterrupted || !strings.Contains(r.Reasons[0].Detail, errTestInterrupt.Error()) {
					t.Errorf("%s: reasons %v, want only %s", r.Procedure, r.Reasons, verdict.ReasonInterrupted)
				}
			}
			if modelRuns.Load() != 0 {
				t.Errorf("the model judged an interrupted run")
			}
			if len(l.beds) != 1 || !l.beds[0].closed {
				t.Errorf("testbeds %d (want 1: none launched after the interrupt), closed %v", len(l.beds), len(l.beds) > 0 && l.beds[0].closed)
			}
			if !l.beds[0].board.(*interruptingBoard).fired.Load() {
				t.Errorf("the run never reached %q", at)
			}
		})
	}
}
