package ci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/internal/cachedir"
	"github.com/ppkit/ppkit/stgit"
	"github.com/ppkit/ppkit/tests/procedure"
	"github.com/ppkit/ppkit/tests/report"
	"github.com/ppkit/ppkit/tests/verdict"
)

// Exit codes of `ppkit ci`.
const (
	ExitPass  = 0
	ExitFail  = 1 // a verdict on the series: it does not build, is not clean, fails, regressed
	ExitInfra = 2 // the run could not judge the series
)

// Verdicts: those of verdict.Verdict, so that one table decides who broke and one function the
// exit code (verdict.Verdict.ExitCode).
const (
	VerdictPass  = string(verdict.VerdictPass)
	VerdictFail  = string(verdict.VerdictFail)
	VerdictInfra = string(verdict.VerdictInfra)
)

// Stages, in order. RunResult.Stage names the one that decided a failed run.
const (
	StageCheckout = "checkout"
	StageSeries   = "series"
	StageCheck    = "series-check"
	StageTest     = "test"
	StageCompare  = "compare"
)

// Series modes.
const (
	ModePatches    = "patches"     // the tree holds patches/series
	ModeKernelTree = "kernel-tree" // the commits base..ref of a kernel tree
)

// DefaultThreshold is the relative change of a figure, in its bad direction, that fails a run.
const DefaultThreshold = 0.20

// Options is one `ppkit ci` run.
type Options struct {
	Repo string // a git repository, bare or not; only read
	Ref  string // the ref (or commit) to test
	// Base is the upstream commit of a kernel tree's series (required in kernel-tree mode), and
	// the ref whose stored result the figures are compared with (default: Ref's own last result).
	Base string
	// Design is the model variant a kernel tree's series implements (stgit.DesignFile says it
	// for a patches/ directory); required in kernel-tree mode.
	Design string
	Out    string // output directory
	// Kernel is the kernel git tree a patches/ series is checked and built on (default:
	// `git config ppkit.kernel`, else the harness's imported linux-source-5.10).
	Kernel string
	// Threshold is the relative worsening of a figure that fails the run (DefaultThreshold is
	// ppkit ci's default); negative disables the comparison.
	Threshold float64
	// Procedures and TestOptions configure the test stage (all procedures, DefaultOptions).
	Procedures  []string
	TestOptions procedure.Options
	// NewBuilder returns the per-patch builder of the series check for a kernel tree and a
	// cleanup func (default: harness.BuildKernel of each prefix of the series).
	NewBuilder func(tree string, log io.Writer) (stgit.Builder, func(), error)
	// NewLauncher returns the test stage's board launcher; tree is the kernel tree the series
	// applies to ("" for Debian's linux-source-5.10). Default: procedure.HarnessLauncher.
	NewLauncher func(tree string) procedure.Launcher
	Model       verdict.ModelChecker
	// Tools must be on PATH before anything runs; a missing one is an infrastructure failure.
	Tools []string
	// Cache is ppkit's cache root (default cachedir.Root()).
	Cache    string
	Progress io.Writer
}

// DefaultTools are the programs a real run needs besides those the harness checks itself.
var DefaultTools = []string{"git", "stg", "perl", "make", "aarch64-linux-gnu-gcc"}

// UsageError is bad input that stops the run before anything is written: a repository that is
// not one, a ref that does not resolve.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usageErrorf(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// RunResult is one run, as result.json holds it (and as a passing run is stored for later comparisons).
type RunResult struct {
	Repo       string    `json:"repo"`
	Ref        string    `json:"ref"`
	Commit     string    `json:"commit"`
	Base       string    `json:"base,omitempty"`
	BaseCommit string    `json:"base_commit,omitempty"`
	Mode       string    `json:"mode,omitempty"`
	Started    time.Time `json:"started"`
	// Duration is the run's wall time in nanoseconds.
	Duration time.Duration `json:"duration_ns"`
	Verdict  string        `json:"verdict"`
	ExitCode int           `json:"exit_code"`
	// Stage and Message say what decided a failed run.
	Stage   string `json:"stage,omitempty"`
	Message string `json:"message,omitempty"`
	// Stages lists every stage with its outcome, in order.
	Stages     []StageResult      `json:"stages"`
	Series     *SeriesInfo        `json:"series,omitempty"`
	Check      *stgit.CheckReport `json:"check,omitempty"`
	Tests      *verdict.Summary   `json:"tests,omitempty"`
	Comparison *Comparison        `json:"comparison,omitempty"`
	// Stored is the file this result was stored in as the reference for later runs.
	Stored string `json:"stored,omitempty"`
}

// StageResult is one stage's outcome: ok, fail, infra-error, or skipped.
type StageResult struct {
	Name    string `json:"name"`
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"`
}

// SeriesInfo is the series a run tested.
type SeriesInfo struct {
	Dir     string   `json:"dir"` // the copy in the output directory
	Kernel  string   `json:"kernel,omitempty"`
	Patches []string `json:"patches"`
}

// Run runs the whole pipeline and writes the output directory. It returns an error only for bad
// input (a *UsageError) or an output directory it cannot write; every other failure is in the
// RunResult, with its exit code.
func Run(ctx context.Context, o Options) (*RunResult, error) {
	// A git hook runs with GIT_DIR and friends set. stgit's runner drops them from every git and
	// stg command; the kernel build's own git calls (scripts/setlocalversion under make) must not
	// see them either.
	for _, v := range stgit.RepoLocalEnv {
		os.Unsetenv(v)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.TestOptions.Duration == 0 {
		o.TestOptions = procedure.DefaultOptions
	}
	r := &run{o: o, res: &RunResult{Started: time.Now()}}
	if err := r.resolve(ctx); err != nil {
		return nil, err
	}
	if err := r.prepareOut(); err != nil {
		return nil, err
	}
	r.pipeline(ctx)
	r.res.Duration = time.Since(r.res.Started)
	if err := r.writeOutputs(); err != nil {
		return r.res, err
	}
	return r.res, nil
}

type run struct {
	o        Options
	res      *RunResult
	cache    string
	state    string // <cache>/ci/<repo-hash>
	tmp      string
	tree     string // the temporary checkout of Ref
	kernel   string // kernel tree the series check runs on
	launchTo string // kernel tree the harness builds ("" = linux-source-5.10)
	series   string // series file in the output directory
}

func (r *run) progressf(format string, args ...any) {
	fmt.Fprintf(r.o.Progress, "ci: "+format+"\n", args...)
}

// resolve validates the repository and refs.
func (r *run) resolve(ctx context.Context) error {
	o := r.o
	switch {
	case o.Repo == "":
		return usageErrorf("--repo DIR is required: the git repository that received the push")
	case o.Ref == "":
		return usageErrorf("--ref REF is required: the branch or commit to test")
	case o.Out == "":
		return usageErrorf("--out DIR is required")
	}
	repo, err := filepath.Abs(o.Repo)
	if err != nil {
		return usageErrorf("--repo %s: %v", o.Repo, err)
	}
	pushed := &stgit.Repo{Dir: repo} // only read
	if _, err := pushed.GitDir(ctx); err != nil {
		return usageErrorf("--repo %s is not a git repository (%v); give the pushed repository, bare or not", o.Repo, err)
	}
	r.res.Repo = repo
	commit, err := pushed.Commit(ctx, o.Ref)
	if err != nil {
		return usageErrorf("--ref %s does not name a commit of %s; give a branch, tag or commit", o.Ref, repo)
	}
	r.res.Commit = commit
	r.res.Ref = pushed.FullRef(ctx, o.Ref)
	if o.Base != "" {
		bc, err := pushed.Commit(ctx, o.Base)
		if err != nil {
			return usageErrorf("--base %s does not name a commit of %s", o.Base, repo)
		}
		r.res.Base, r.res.BaseCommit = pushed.FullRef(ctx, o.Base), bc
	}
	if r.o.Cache == "" {
		if r.o.Cache, err = cachedir.Root(); err != nil {
			return err
		}
	}
	r.cache = r.o.Cache
	r.state = StateDir(r.cache, repo)
	return nil
}

// StateDir is where ppkit ci keeps what outlives a run of the repository at the absolute path
// repo: results/ (the stored reference results), kernel/ (the base tree of a kernel-tree series)
// and the lock that serialises runs.
func StateDir(cache, repo string) string {
	sum := sha256.Sum256([]byte(repo))
	return filepath.Join(cache, "ci", filepath.Base(strings.TrimSuffix(repo, ".git"))+"-"+hex.EncodeToString(sum[:])[:12])
}

// outputs are the entries of the output directory a run writes; stale ones are removed first so
// an old verdict is never read as this run's.
var outputs = []string{"junit.xml", "summary.md", "result.json", "report", "series"}

func (r *run) prepareOut() error {
	if err := os.MkdirAll(r.o.Out, 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	for _, name := range outputs {
		if err := os.RemoveAll(filepath.Join(r.o.Out, name)); err != nil {
			return fmt.Errorf("output directory: %w", err)
		}
	}
	abs, err := filepath.Abs(r.o.Out)
	if err != nil {
		return err
	}
	r.o.Out = abs
	return nil
}

// stage records a stage's outcome; a failing one decides the run.
func (r *run) stage(name, outcome, detail string) {
	r.res.Stages = append(r.res.Stages, StageResult{Name: name, Outcome: outcome, Detail: detail})
	if outcome == VerdictFail || outcome == VerdictInfra {
		r.res.Verdict, r.res.Stage, r.res.Message = outcome, name, detail
	}
}

func (r *run) infra(name string, err error) { r.stage(name, VerdictInfra, err.Error()) }

func (r *run) pipeline(ctx context.Context) {
	defer func() {
		if r.res.Verdict == "" {
			r.res.Verdict = VerdictPass
		}
		r.res.ExitCode = exitCode(r.res.Verdict)
		r.skipRest()
	}()
	if missing := missingTools(r.o.Tools); len(missing) > 0 {
		r.infra(StageCheckout, fmt.Errorf("not installed: %s (run 'make deps', i.e. harness/install-deps.sh)", strings.Join(missing, ", ")))
		return
	}
	lock, err := cachedir.Lock(ctx, filepath.Join(r.state, "lock"), r.o.Progress)
	if err != nil {
		r.infra(StageCheckout, err)
		return
	}
	defer lock.Unlock()
	if err := r.checkout(ctx); err != nil {
		r.infra(StageCheckout, err)
		return
	}
	defer r.cleanup()
	r.stage(StageCheckout, "ok", fmt.Sprintf("%s at %s", r.res.Ref, short(r.res.Commit)))
	if !r.findSeries(ctx) {
		return
	}
	if !r.check(ctx) {
		return
	}
	if !r.test(ctx) {
		return
	}
	r.compare()
}

func exitCode(v string) int { return verdict.Verdict(v).ExitCode() }

// skipRest marks the stages after the deciding one as skipped.
func (r *run) skipRest() {
	seen := map[string]bool{}
	for _, s := range r.res.Stages {
		seen[s.Name] = true
	}
	for _, name := range []string{StageCheckout, StageSeries, StageCheck, StageTest, StageCompare} {
		if !seen[name] {
			r.res.Stages = append(r.res.Stages, StageResult{Name: name, Outcome: "skipped"})
		}
	}
}

func missingTools(tools []string) []string {
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	return missing
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// checkout clones the repository with --shared into a temporary directory and checks the commit
// out on a branch of the clone (stg needs a branch). Nothing is written to the repository.
func (r *run) checkout(ctx context.Context) error {
	tmp, err := harness.TempDir("ci")
	if err != nil {
		return err
	}
	r.tmp = tmp
	r.tree = filepath.Join(tmp, "tree")
	r.progressf("checking out %s (%s) in %s", r.res.Ref, short(r.res.Commit), r.tree)
	clone, err := stgit.SharedClone(ctx, r.res.Repo, r.tree, r.res.Commit)
	if err != nil {
		r.cleanup()
		return err
	}
	if _, err := clone.Git(ctx, "checkout", "-q", "-b", "ppkit-ci", r.res.Commit); err != nil {
		r.cleanup()
		return fmt.Errorf("check out %s: %w", short(r.res.Commit), err)
	}
	return nil
}

func (r *run) cleanup() {
	if r.tmp != "" {
		os.RemoveAll(r.tmp)
		r.tmp = ""
	}
}

// stgEnv pins the identity stg and git use in the clone (the user's may be unset on a CI host).
var stgEnv = []string{"GIT_COMMITTER_NAME=ppkit ci", "GIT_COMMITTER_EMAIL=ppkit@localhost"}

// findSeries copies patches/ (or exports base..ref through stg) into Out/series.
func (r *run) findSeries(ctx context.Context) bool {
	dst := filepath.Join(r.o.Out, "series")
	info := &SeriesInfo{Dir: dst}
	if _, err := os.Stat(filepath.Join(r.tree, "patches", "series")); err == nil {
		r.res.Mode = ModePatches
		if err := copyDir(filepath.Join(r.tree, "patches"), dst); err != nil {
			r.infra(StageSeries, fmt.Errorf("copy patches/: %w", err))
			return false
		}
		if _, err := stgit.ReadSeries(filepath.Join(dst, "series")); err != nil {
			r.stage(StageSeries, VerdictFail, err.Error())
			return false
		}
		kernel, err := r.patchesKernel(ctx)
		if err != nil {
			r.infra(StageSeries, err)
			return false
		}
		r.kernel, r.launchTo = kernel, r.o.Kernel
		if r.launchTo == "" {
			r.launchTo = harness.ConfiguredKernelTree(ctx)
		}
	} else if isKernelTree(r.tree) {
		r.res.Mode = ModeKernelTree
		if !r.exportCommits(ctx, dst) {
			return false
		}
	} else {
		r.stage(StageSeries, VerdictFail, fmt.Sprintf("%s has no patches/series and is not a kernel tree (no Makefile and Kbuild at the top); push a branch holding an stg-exported patches/ directory, or a kernel branch with --base", short(r.res.Commit)))
		return false
	}
	r.series = filepath.Join(dst, "series")
	s, err := stgit.ReadSeries(r.series)
	if err != nil {
		r.stage(StageSeries, VerdictFail, err.Error())
		return false
	}
	info.Patches, info.Kernel = s.Patches, r.kernel
	r.res.Series = info
	r.stage(StageSeries, "ok", fmt.Sprintf("%d patches (%s)", len(s.Patches), r.res.Mode))
	return true
}

func isKernelTree(dir string) bool {
	for _, f := range []string{"Makefile", "Kbuild"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return false
		}
	}
	return true
}

// patchesKernel returns the kernel tree a patches/ series is checked on.
func (r *run) patchesKernel(ctx context.Context) (string, error) {
	if r.o.Kernel != "" {
		return filepath.Abs(r.o.Kernel)
	}
	if k := harness.ConfiguredKernelTree(ctx); k != "" {
		return k, nil
	}
	return harness.LinuxSourceTree(ctx, r.cache, r.o.Progress)
}

// exportCommits turns base..commit of the clone into an stg stack (stg uncommit) and exports it
// (stg export, through the stgit package) to dst. The harness builds the base from a persistent
// clone under the state directory, so its work tree and build directory stay warm between runs.
func (r *run) exportCommits(ctx context.Context, dst string) bool {
	if r.res.BaseCommit == "" {
		r.stage(StageSeries, VerdictInfra, "a kernel tree needs --base REF: the upstream commit the series starts from")
		return false
	}
	if r.o.Design == "" {
		r.stage(StageSeries, VerdictInfra, "a kernel tree needs --design NAME: the model variant its series implements (series: V1, head only; upstream: V2)")
		return false
	}
	repo := stgit.OwnRepo(r.tree)
	repo.Env = stgEnv
	if err := repo.ExportRange(ctx, r.res.BaseCommit, r.o.Base, r.o.Ref, dst); err != nil {
		var bad *stgit.RangeError
		if errors.As(err, &bad) {
			r.stage(StageSeries, VerdictFail, bad.Error())
		} else {
			r.infra(StageSeries, err)
		}
		return false
	}
	if err := os.WriteFile(filepath.Join(dst, stgit.DesignFile), []byte(r.o.Design+"\n"), 0o644); err != nil {
		r.infra(StageSeries, err)
		return false
	}
	r.kernel = r.tree
	base := filepath.Join(r.state, "kernel")
	if err := baseTree(ctx, r.res.Repo, base, r.res.BaseCommit); err != nil {
		r.infra(StageSeries, fmt.Errorf("base tree for the kernel build: %w", err))
		return false
	}
	r.launchTo = base
	return true
}

// baseTree keeps dir a --shared clone of repo with commit checked out (detached).
func baseTree(ctx context.Context, repo, dir, commit string) error {
	clone, err := stgit.SharedClone(ctx, repo, dir, commit)
	if err != nil {
		return err
	}
	_, err = clone.Git(ctx, "checkout", "-q", "-f", "--detach", commit)
	return err
}

// copyDir copies the regular files of src (not recursively: a series directory is flat) to dst.
func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// check runs the stgit series check on the kernel tree.
func (r *run) check(ctx context.Context) bool {
	repo, err := stgit.Open(ctx, r.kernel)
	if err != nil {
		r.infra(StageCheck, err)
		return false
	}
	repo.Env = stgEnv
	s, err := stgit.ReadSeries(r.series)
	if err != nil {
		r.stage(StageCheck, VerdictFail, err.Error())
		return false
	}
	opts := stgit.CheckOptions{Progress: prefixWriter{w: r.o.Progress, prefix: "ci: series check: "}}
	newBuilder := r.o.NewBuilder
	if newBuilder == nil {
		newBuilder = func(tree string, log io.Writer) (stgit.Builder, func(), error) {
			return &harness.SeriesBuilder{Kernel: harness.KernelOptions{Tree: r.launchTo, Series: r.series,
				Cache: r.cache, Progress: log}}, func() {}, nil
		}
	}
	b, done, err := newBuilder(repo.Dir, r.o.Progress)
	if err != nil {
		r.infra(StageCheck, fmt.Errorf("build set-up: %w", err))
		return false
	}
	defer done()
	opts.Builder = b
	r.progressf("series check of %d patches on %s", len(s.Patches), repo.Dir)
	rep, err := repo.Check(ctx, s, opts)
	if err != nil {
		r.infra(StageCheck, err)
		return false
	}
	rep.Series = r.series
	r.res.Check = rep
	if !rep.OK {
		r.stage(StageCheck, VerdictFail, checkFailure(rep, len(s.Patches)))
		return false
	}
	r.stage(StageCheck, "ok", fmt.Sprintf("all %d patches build and are clean", len(s.Patches)))
	return true
}

// checkFailure names the first failing patch, its number and its first error.
func checkFailure(rep *stgit.CheckReport, total int) string {
	var bad []string
	first := ""
	for _, p := range rep.Patches {
		if p.OK() {
			continue
		}
		bad = append(bad, fmt.Sprintf("patch %d (%s)", p.Index, p.Name))
		if first == "" {
			for _, f := range p.Findings {
				if f.Severity == "error" {
					first = fmt.Sprintf("patch %d/%d %s: %s: %s", p.Index, total, p.Name, f.Check, f.Message)
					break
				}
			}
		}
	}
	return fmt.Sprintf("%s fail the series check; first: %s", strings.Join(bad, ", "), first)
}

// prefixWriter prefixes each write (one progress line) with a label.
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// test runs the procedures on the series.
func (r *run) test(ctx context.Context) bool {
	newLauncher := r.o.NewLauncher
	if newLauncher == nil {
		newLauncher = func(tree string) procedure.Launcher { return &procedure.HarnessLauncher{Tree: tree} }
	}
	launcher := newLauncher(r.launchTo)
	reportDir := filepath.Join(r.o.Out, "report")
	sum, err := procedure.Run(ctx, procedure.Config{Procedures: r.o.Procedures, Kernel: procedure.Kernel{Series: filepath.Dir(r.series)},
		Options: r.o.TestOptions, ArtifactDir: reportDir, Launcher: launcher, Model: r.o.Model,
		Progress: prefixWriter{w: r.o.Progress, prefix: "ci: test: "}})
	if err != nil {
		r.infra(StageTest, err)
		return false
	}
	r.res.Tests = sum
	if err := report.WriteReportDir(reportDir, sum); err != nil {
		r.infra(StageTest, err)
		return false
	}
	outcome, detail := classifyTests(sum.Results)
	r.stage(StageTest, outcome, detail)
	return outcome == "ok"
}

// classifyTests names the test stage's outcome: the run's verdict (verdict.Worst, the one rule
// for combining verdicts) and the procedures that decided it.
func classifyTests(results []*verdict.Result) (outcome, detail string) {
	if len(results) == 0 {
		return VerdictInfra, "no procedure ran"
	}
	v := verdict.Worst(results)
	if v == verdict.VerdictPass {
		return "ok", fmt.Sprintf("all %d procedures pass", len(results))
	}
	var lines []string
	for _, res := range results {
		if res.Verdict != v {
			continue
		}
		line := res.Procedure
		if len(res.Reasons) > 0 {
			line += " (" + res.Reasons[0].String() + ")"
		}
		lines = append(lines, line)
	}
	if v == verdict.VerdictFail {
		return VerdictFail, fmt.Sprintf("%d of %d procedures fail: %s", len(lines), len(results), strings.Join(lines, "; "))
	}
	return VerdictInfra, fmt.Sprintf("%d of %d procedures could not be judged: %s", len(lines), len(results), strings.Join(lines, "; "))
}
