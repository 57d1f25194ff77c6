package procedure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/internal/cachedir"
	"github.com/ppkit/ppkit/tests/verdict"
)

// Config is one `ppkit test` invocation.
type Config struct {
	Procedures []string // names; DefaultProcedures when empty
	Kernel     Kernel   // the series (or the baseline) under test
	// Compare are kernels (the baseline, other series) on which every procedure runs first, in
	// order, to compare the kernel under test with (Summary.References).
	Compare []Kernel
	Options Options
	// ArtifactDir receives one subdirectory per kernel and procedure (trace, counters, tool
	// output, console).
	ArtifactDir string
	Launcher    Launcher
	Model       verdict.ModelChecker
	// CacheRoot holds the guest helpers' build cache (cachedir.Root() by default).
	CacheRoot string
	// StopOnFail ends the run at the first procedure whose verdict is a kernel failure (the
	// mutation suite: one is enough to kill a mutant).
	StopOnFail bool
	// TraceText writes every procedure's trace as text (trace.txt) beside its pages, for a
	// report a person reads; without it a trace that came as pages becomes text only for the
	// culprit pages of a violation.
	TraceText bool
	// Untraced runs the procedures without tracing (ProcedureConfig.Untraced).
	Untraced bool
	Progress io.Writer
}

// Run runs the procedures on the kernel (after the kernels of Compare) and returns
// the summary. An error means nothing could be judged (bad configuration); everything else,
// including a board that failed to boot, is a failed verdict.Result in the summary.
func Run(ctx context.Context, cfg Config) (*verdict.Summary, error) {
	procs, err := LookupProcedures(cfg.Procedures)
	if err != nil {
		return nil, err
	}
	if cfg.Launcher == nil {
		return nil, errors.New("no launcher: the harness must provide one")
	}
	if cfg.Model == nil {
		cfg.Model = verdict.CheckTraceWithModel
	}
	if cfg.Options.Duration <= 0 || cfg.Options.RateMbit <= 0 {
		return nil, fmt.Errorf("options: duration %s and rate %d Mbit/s must be positive", cfg.Options.Duration, cfg.Options.RateMbit)
	}
	if cfg.CacheRoot == "" {
		if cfg.CacheRoot, err = cachedir.Root(); err != nil {
			return nil, err
		}
	}
	if cfg.Options.Seed == 0 {
		cfg.Options.Seed = NewSeed()
	}
	// Each kernel's design goes with its results: read once, here; a series that does not say
	// it is bad input, said before anything boots.
	cfg.Compare = append([]Kernel(nil), cfg.Compare...)
	for _, k := range append([]*Kernel{&cfg.Kernel}, kernelPtrs(cfg.Compare)...) {
		v, err := k.Variant()
		if err != nil {
			return nil, err
		}
		k.Design = v.String()
	}
	r := &runner{cfg: cfg, helpers: map[string]map[string]string{}}
	for _, p := range procs {
		if DrawsFromSeed(p) {
			r.progressf("seed %d: %s is drawn from it (replay: --seed %d)", cfg.Options.Seed, p.Name(), cfg.Options.Seed)
		}
	}
	if pf, ok := cfg.Launcher.(Preflighter); ok {
		for _, k := range append(append([]Kernel{}, cfg.Compare...), cfg.Kernel) {
			if err := pf.Preflight(ctx, k, cfg.Progress); err != nil {
				return nil, err
			}
		}
	}
	s := &verdict.Summary{Board: BoardName(cfg.Launcher)}
	for _, k := range cfg.Compare {
		s.References = append(s.References, verdict.Reference{Kernel: k.String(), Results: r.runKernel(ctx, k, procs)})
	}
	s.Results = r.runKernel(ctx, cfg.Kernel, procs)
	for i := range s.References {
		s.References[i].Comparison = verdict.CompareFigures(s.References[i].Results, s.Results, -1)
	}
	s.Verdict = verdict.Worst(s.All())
	s.Pass = s.Verdict == verdict.VerdictPass
	s.Interrupted = ctx.Err() != nil
	return s, nil
}

// kernelPtrs points at each of ks.
func kernelPtrs(ks []Kernel) []*Kernel {
	out := make([]*Kernel, len(ks))
	for i := range ks {
		out[i] = &ks[i]
	}
	return out
}

// seeded is a procedure whose run Options.Seed draws.
type seeded interface{ usesSeed() }

// DrawsFromSeed says whether Options.Seed decides p's run.
func DrawsFromSeed(p Procedure) bool {
	_, ok := p.(seeded)
	return ok
}

type runner struct {
	cfg     Config
	helpers map[string]map[string]string // arch → helper name → host path
}

func (r *runner) progressf(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, format+"\n", args...)
	}
}

// runKernel boots a fresh testbed per procedure, so each runs alone on a clean board.
func (r *runner) runKernel(ctx context.Context, k Kernel, procs []Procedure) []*verdict.Result {
	var out []*verdict.Result
	for _, fresh := range procs {
		p := Procedures()[fresh.Name()] // a fresh instance: procedures keep per-run state
		dir := filepath.Join(r.cfg.ArtifactDir, verdict.KernelKind(k.String()), p.Name())
		res := &verdict.Result{Procedure: p.Name(), Description: p.Description(), Paths: p.Paths(), Kernel: k.String(),
			Started: time.Now(), Artifacts: dir}
		res.Design = k.Design // Run read it before anything booted
		if DrawsFromSeed(p) {
			res.Seed = r.cfg.Options.Seed
		}
		out = append(out, res)
		if ctx.Err() != nil {
			verdict.Judge(res, verdict.Evidence{Stopped: context.Cause(ctx)})
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			verdict.Judge(res, verdict.Evidence{InfraError: fmt.Errorf("artifact directory: %w", err)})
			continue
		}
		r.progressf("%s: the %s kernel", p.Name(), k) // booted by the launcher, or already running on a real board
		tb, err := r.cfg.Launcher.Launch(ctx, k, r.cfg.Progress)
		res.Phase("boot", res.Started)
		if err != nil {
			var ge *harness.GuestError
			if ctx.Err() != nil {
				verdict.Judge(res, verdict.Evidence{Stopped: context.Cause(ctx)})
			} else if errors.As(err, &ge) {
				verdict.Judge(res, verdict.Evidence{BootError: fmt.Errorf("launch the board: %w", err)})
			} else {
				verdict.Judge(res, verdict.Evidence{InfraError: fmt.Errorf("launch the board: %w", err)})
			}
			res.Duration = time.Since(res.Started)
			continue
		}
		helpers, herr := r.helpersFor(ctx, tb.Board().Arch(), helpersOn(tb.Board(), p, !r.cfg.Untraced))
		RunProcedure(ctx, tb, p, res, ProcedureConfig{Options: r.cfg.Options, Dir: dir, Helpers: helpers,
			HelperErr: herr, Model: r.cfg.Model, Kernel: k, TraceText: r.cfg.TraceText, Untraced: r.cfg.Untraced, Log: r.cfg.Progress})
		if err := tb.Close(); err != nil {
			res.Notes = append(res.Notes, "testbed close: "+err.Error())
		}
		r.progressf("%s: %s (%s)", p.Name(), outcome(res), res.Duration.Round(time.Second))
		if r.cfg.StopOnFail && res.Verdict == verdict.VerdictFail {
			break
		}
	}
	return out
}

// helpersOn are the guest helpers p needs on board b: its own, and the trace's page copier
// on a board with trace ports when the run is traced.
func helpersOn(b Board, p Procedure, traced bool) []string {
	names := p.Helpers()
	if pb, ok := b.(TracePortBoard); ok && len(pb.TracePorts()) > 0 && traced && !slices.Contains(names, "tracepages") {
		names = append(append([]string{}, names...), "tracepages")
	}
	return names
}

func (r *runner) helpersFor(ctx context.Context, arch string, names []string) (map[string]string, error) {
	if len(names) == 0 {
		return map[string]string{}, nil
	}
	cc, err := HelperCompiler(arch, runtime.GOARCH)
	if err != nil {
		return nil, err
	}
	all := make([]string, 0, len(GuestHelpers))
	for n := range GuestHelpers {
		all = append(all, n)
	}
	if r.helpers[arch] == nil {
		h, err := BuildGuestHelpers(ctx, cc, arch, r.cfg.CacheRoot, all)
		if err != nil {
			return nil, err
		}
		r.helpers[arch] = h
	}
	return r.helpers[arch], nil
}

// ProcedureConfig is what RunProcedure needs besides the testbed.
type ProcedureConfig struct {
	Options   Options
	Dir       string
	Helpers   map[string]string // name → host path of the built helpers
	HelperErr error             // why the helpers could not be built, if they could not
	Model     verdict.ModelChecker
	Kernel    Kernel
	TraceText bool // Config.TraceText
	// Untraced runs the procedure without tracing, to measure what tracing costs the traffic
	// (MeasureTraceCost): its result holds the traffic and counters and no verdict.
	Untraced bool
	Log      io.Writer
}

// outcome is a judged run's verdict, or "measured" for an untraced run whose only reason is
// that it was untraced: it measured the traffic, as asked, and judged nothing.
func outcome(res *verdict.Result) string {
	if len(res.Reasons) == 1 && res.Reasons[0].Detail == errUntraced.Error() {
		return "measured, untraced"
	}
	return strings.ToUpper(string(res.Verdict))
}

// errUntraced is the reason an untraced run has no verdict.
var errUntraced = errors.New("untraced run: a measurement of the traffic without tracing, not a verdict")

// RunProcedure runs one procedure on a booted testbed and judges it into res: trace on, link
// up, Setup, counters and begin marker, Run, end marker and counters, Collect, link down and
// pool drain, trace off, console, model, verdict.
func RunProcedure(ctx context.Context, tb Testbed, p Procedure, res *verdict.Result, pc ProcedureConfig) {
	start := time.Now()
	defer func() { res.Duration = time.Since(start) }()
	phase := start
	env := &Env{Board: tb.Board(), Client: tb.Client(), Options: pc.Options, Dir: pc.Dir, Helpers: map[string]string{},
		Log: pc.Log, background: ctx}
	if pt, ok := tb.(PeerTestbed); ok {
		env.Peer = pt.Peer()
	}
	ev := verdict.Evidence{DrainWait: PoolDrainTimeout}
	c := &collector{env: env, name: p.Name(), off: pc.Untraced}
	defer func() {
		if c.ports.stop != nil {
			c.ports.stop()
		}
		saveConsole(env)
		ev.Console = env.Board.ConsoleReports()
		if ctx.Err() != nil {
			// Told to stop: whatever failed on the way out failed because of that.
			ev = verdict.Evidence{Stopped: context.Cause(ctx), Console: ev.Console}
		}
		verdict.Judge(res, blame(ev))
		// The report names the culprit pages: the model's claims (not those withheld for lost
		// events) get their pages' whole histories from the trace.
		if pc.TraceText && ctx.Err() == nil {
			if _, err := c.textTrace(ctx); err != nil {
				res.Notes = append(res.Notes, err.Error())
			}
		}
		if res.HasReason(verdict.ReasonViolation) && ev.Model != nil {
			text, err := c.textTrace(ctx)
			if err == nil && text != "" {
				res.Culprits, err = verdict.Culprits(text, ev.Model)
			}
			if err != nil {
				res.Notes = append(res.Notes, err.Error())
			}
		}
		res.TraceFiles = c.files()
	}()

	if names := helpersOn(env.Board, p, !pc.Untraced); len(names) > 0 {
		if pc.HelperErr != nil {
			ev.InfraError = pc.HelperErr
			return
		}
		if _, err := env.Board.Run(ctx, "mkdir -p "+shellQuote(env.runDir()+"/bin")); err != nil {
			ev.InfraError = fmt.Errorf("prepare the board: %w", err)
			return
		}
		for _, name := range names {
			remote := env.runDir() + "/bin/" + name
			if err := env.Board.CopyTo(ctx, pc.Helpers[name], remote, 0o755); err != nil {
				ev.InfraError = fmt.Errorf("copy helper %s to the board: %w", name, err)
				return
			}
			env.Helpers[name] = remote
		}
	}
	if err := step(ctx, 2*time.Minute, c.startTracing); err != nil {
		ev.InfraError = err
		return
	}
	traceStopped := false
	defer func() {
		if traceStopped || ctx.Err() != nil || c.off {
			return // finished normally, or told to stop: nothing more to wait for
		}
		// An early failure (often the kernel died): still stop the reader, and let the model
		// judge what was traced, since the events before a crash usually name the culprit.
		// Both follow ctx, so a Ctrl-C here stops at once.
		step(ctx, PoolDrainTimeout+TraceDrainTimeout, func(ctx context.Context) error {
			_, err := c.finish(ctx)
			return err
		})
		if in, ok := c.modelInput(verdict.ModelInput{Procedure: p.Name(), Kernel: pc.Kernel.String()}); ok && ctx.Err() == nil {
			ev.SetModel(pc.Model(ctx, in))
		}
	}()
	if err := step(ctx, time.Minute, func(ctx context.Context) error { return topologyUp(ctx, env) }); err != nil {
		ev.InfraError = err
		return
	}
	// The NIC under test must carry plain traffic both ways before any procedure runs: a
	// kernel that cannot answer a ping fails here, with a reason that says so.
	if err := step(ctx, time.Minute, func(ctx context.Context) error { return pingBothWays(ctx, env) }); err != nil {
		ev.Procedure = fmt.Errorf("link check: %w", err)
		return
	}
	if err := step(ctx, 2*time.Minute, func(ctx context.Context) error { return p.Setup(ctx, env) }); err != nil {
		ev.Procedure = fmt.Errorf("setup: %w", err)
		return
	}
	var notes []string
	var err error
	// The begin marker follows the counters, in the same board command.
	if ev.Before, notes, err = c.snapshot(ctx, "before", "", c.markCmd("begin")); err != nil {
		ev.InfraError = err
		return
	}
	res.Notes = append(res.Notes, notes...)
	phase = res.Phase("setup", phase)
	env.logf("%s: traffic for %s", p.Name(), pc.Options.Duration)
	runErr := step(ctx, 2*pc.Options.Duration+3*time.Minute, func(ctx context.Context) error { return p.Run(ctx, env) })
	if ev.After, notes, err = c.snapshot(ctx, "after", c.markCmd("end"), ""); err != nil {
		ev.InfraError = err
		return
	}
	res.Notes = append(res.Notes, notes...)
	var traffic verdict.Traffic
	collectErr := step(ctx, 2*time.Minute, func(ctx context.Context) (err error) {
		traffic, err = p.Collect(ctx, env)
		return err
	})
	ev.Traffic = traffic
	switch {
	case runErr != nil:
		ev.Procedure = fmt.Errorf("run: %w", runErr)
	case collectErr != nil:
		ev.Procedure = fmt.Errorf("collect: %w", collectErr)
	}
	traceStopped = true
	phase = res.Phase("traffic", phase)
	if pc.Untraced {
		ev.InfraError = errUntraced
		return
	}
	env.logf("%s: interface down, waiting for the pools to drain and the trace to arrive", p.Name())
	var overrun int64
	err = step(ctx, PoolDrainTimeout+TraceDrainTimeout+2*time.Minute, func(ctx context.Context) (err error) {
		overrun, err = c.finish(ctx)
		return err
	})
	ev.Overrun = overrun
	if err != nil {
		ev.InfraError = err
		return
	}
	rx := int64(ev.After.Interface.RxPackets) - int64(ev.Before.Interface.RxPackets)
	in, ok := c.modelInput(verdict.ModelInput{Procedure: p.Name(), Kernel: pc.Kernel.String(), RxPackets: rx})
	if !ok {
		ev.InfraError = errors.New("no trace arrived")
		return
	}
	env.logf("%s: trace %.1f MB in %.1fs; checking it", p.Name(), float64(c.traceSize())/1e6, time.Since(phase).Seconds())
	phase = res.Phase("drain", phase)
	ev.SetModel(pc.Model(ctx, in))
	env.logf("%s: trace replayed (figures and model) in %.1fs", p.Name(), time.Since(phase).Seconds())
	res.Phase("model", phase)
}

// kernelFault says whether err is the kernel under test crashing or hanging, as the harness
// decided it (a *harness.GuestError).
func kernelFault(err error) bool {
	var ge *harness.GuestError
	return errors.As(err, &ge)
}

// blame moves the errors of a run to whoever broke: a board command that failed because the
// kernel crashed or hung blames the kernel; a program missing on the host, or in the guest
// image (the guest shell's status 127 or 126), blames ppkit's side, wherever it showed. What
// is left of Procedure is the procedure failing on a kernel that answered.
func blame(ev verdict.Evidence) verdict.Evidence {
	if kernelFault(ev.InfraError) {
		ev.KernelError, ev.InfraError = ev.InfraError, nil
	}
	if kernelFault(ev.Procedure) {
		ev.KernelError, ev.Procedure = ev.Procedure, nil
	}
	var te *HostToolError
	var ce *harness.CommandError
	if errors.As(ev.Procedure, &te) || errors.As(ev.Procedure, &ce) && ce.NotInGuest() {
		ev.InfraError, ev.Procedure = ev.Procedure, nil
	}
	return ev
}

// step runs fn with a deadline, so a board or client that stops answering fails the step
// instead of hanging the run.
func step(ctx context.Context, d time.Duration, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := fn(ctx)
	if err != nil && ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("%w (no progress within %s)", err, d)
	}
	return err
}

// saveConsole writes the board's console log next to the other artifacts.
func saveConsole(env *Env) {
	if log := env.Board.ConsoleLog(); len(log) > 0 {
		os.WriteFile(filepath.Join(env.Dir, "console.txt"), log, 0o644)
	}
}
