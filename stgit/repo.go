// Package stgit manages the kernel patch series with the real StGit (stg 0.19) and git binaries:
// it initialises a stack on a branch of a kernel tree, imports and exports the series kept in
// patches/ (stg export format), lists and moves along the stack, checks every patch
// (Signed-off-by, subject form, checkpatch.pl, bisectability) and posts the series by mail the
// way `stg mail` does, with the safety `stg mail` lacks (early validation, resumable sending,
// no Bcc leak).
//
// Nothing here reimplements stg's stack format: every stack operation runs stg, every tree
// operation runs git.
package stgit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Repo is a git work tree, usually a kernel tree, that may hold an stg stack. Every git and stg
// command ppkit runs, in any package, runs through a Repo, with one environment policy: the
// caller's environment without git's repository-local variables (RepoLocalEnv: a hook's GIT_DIR
// or GIT_INDEX_FILE would point git at another repository than Dir), then Env.
type Repo struct {
	// Dir is the top-level directory of the work tree ("" runs in the current directory).
	Dir string
	// Env is added to the process environment of every git and stg command.
	Env []string

	own        bool            // a tree ppkit owns: git runs with ownConfig
	dropEnv    map[string]bool // variables removed from the environment of the commands
	foreground bool            // run commands in ppkit's process group (they may open an editor)
}

// OwnRepo is a tree ppkit owns (a clone in its cache or in a temporary directory): git runs
// there with no user hooks, no commit signing, ppkit's identity and no detached-HEAD advice,
// whatever the user's configuration says.
func OwnRepo(dir string) *Repo { return &Repo{Dir: dir, own: true} }

// ownConfig is the configuration git runs with in an OwnRepo.
var ownConfig = []string{"-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", "-c", "user.name=ppkit",
	"-c", "user.email=ppkit@localhost", "-c", "advice.detachedHead=false"}

// RepoLocalEnv are the variables that tie git to one repository (`git rev-parse
// --local-env-vars` of git 2.39). A git hook runs with GIT_DIR and friends set; no command ppkit
// runs inherits them.
var RepoLocalEnv = []string{"GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS",
	"GIT_CONFIG_COUNT", "GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE", "GIT_IMPLICIT_WORK_TREE",
	"GIT_GRAFT_FILE", "GIT_INDEX_FILE", "GIT_NO_REPLACE_OBJECTS", "GIT_REPLACE_REF_BASE", "GIT_PREFIX",
	"GIT_INTERNAL_SUPER_PREFIX", "GIT_SHALLOW_FILE", "GIT_COMMON_DIR", "GIT_QUARANTINE_PATH"}

// environ is the environment of a command run in r (see Repo).
func (r *Repo) environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !slices.Contains(RepoLocalEnv, k) && !r.dropEnv[k] {
			env = append(env, kv)
		}
	}
	for _, kv := range r.Env {
		if k, _, _ := strings.Cut(kv, "="); !r.dropEnv[k] {
			env = append(env, kv)
		}
	}
	return env
}

// ErrNotRepo reports a directory that is not a git work tree.
var ErrNotRepo = errors.New("not a git work tree")

// Open returns the repository whose work tree contains dir.
func Open(ctx context.Context, dir string) (*Repo, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s: %w (no such directory)", dir, ErrNotRepo)
	}
	r := &Repo{Dir: abs}
	top, err := r.git(ctx, "rev-parse", "--show-toplevel")
	if err != nil {
		return nil, fmt.Errorf("%s: %w; run 'git init' there or point to a kernel git tree", dir, ErrNotRepo)
	}
	r.Dir = strings.TrimSpace(top)
	return r, nil
}

// CommandError is a failed git or stg command with what it printed.
type CommandError struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if i := strings.LastIndex(msg, "\n"); i >= 0 {
		// The last line of stg and git errors is the one that says what went wrong.
		msg = strings.TrimSpace(msg[i+1:])
	}
	if msg == "" {
		msg = e.Err.Error()
	}
	prefix := strings.Join(e.Args[:min(2, len(e.Args))], " ")
	// stg already names itself ("stg mail: Unknown patch name: x"): wrap once.
	for strings.HasPrefix(msg, prefix+": ") {
		msg = strings.TrimPrefix(msg, prefix+": ")
	}
	return prefix + ": " + msg
}

func (e *CommandError) Unwrap() error { return e.Err }

func (r *Repo) command(ctx context.Context, stdin []byte, name string, args ...string) (string, error) {
	shown := append([]string{name}, args...)
	if name == "git" && r.own {
		args = append(append([]string{}, ownConfig...), args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = r.Dir
	cmd.Env = r.environ()
	if !r.foreground {
		inGroup(cmd)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	run := runGroup
	if r.foreground {
		run = (*exec.Cmd).Run
	}
	if err := run(cmd); err != nil {
		return stdout.String(), &CommandError{Args: shown, Stderr: stderr.String(), Err: err}
	}
	return stdout.String(), nil
}

func (r *Repo) git(ctx context.Context, args ...string) (string, error) {
	return r.command(ctx, nil, "git", args...)
}

func (r *Repo) stg(ctx context.Context, args ...string) (string, error) {
	return r.command(ctx, nil, "stg", args...)
}

// Git runs git in the work tree and returns its standard output.
func (r *Repo) Git(ctx context.Context, args ...string) (string, error) { return r.git(ctx, args...) }

// Stg runs stg in the work tree and returns its standard output.
func (r *Repo) Stg(ctx context.Context, args ...string) (string, error) { return r.stg(ctx, args...) }

// GitDir returns the absolute path of the repository's git directory.
func (r *Repo) GitDir(ctx context.Context) (string, error) {
	out, err := r.git(ctx, "rev-parse", "--absolute-git-dir")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// Branch returns the checked-out branch name.
func (r *Repo) Branch(ctx context.Context) (string, error) {
	out, err := r.git(ctx, "symbolic-ref", "--short", "-q", "HEAD")
	if err != nil {
		return "", fmt.Errorf("%s: HEAD is detached; check out a branch first", r.Dir)
	}
	return strings.TrimSpace(out), nil
}

// Config returns all values of a git config key (none when unset).
func (r *Repo) Config(ctx context.Context, key string) []string {
	out, err := r.git(ctx, "config", "--get-all", key)
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(out, "\n"), "\n")
}

// HasStack reports whether the checked-out branch has an stg stack.
func (r *Repo) HasStack(ctx context.Context) bool {
	b, err := r.Branch(ctx)
	if err != nil {
		return false
	}
	return len(r.Config(ctx, "branch."+b+".stgit.stackformatversion")) > 0
}

// Clean reports an error naming the fix when the work tree or index has changes.
func (r *Repo) Clean(ctx context.Context) error {
	out, err := r.git(ctx, "status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "" {
		return fmt.Errorf("%s has uncommitted changes; commit or stash them first", r.Dir)
	}
	return nil
}

// InitStack makes sure the tree has a stack: with a non-empty branch it first creates that
// branch at HEAD and checks it out; then it runs `stg init` unless the branch already has a stack.
func (r *Repo) InitStack(ctx context.Context, branch string) error {
	if branch != "" {
		cur, _ := r.Branch(ctx)
		if cur != branch {
			if _, err := r.git(ctx, "rev-parse", "--verify", "-q", "refs/heads/"+branch); err == nil {
				if _, err := r.git(ctx, "checkout", "-q", branch); err != nil {
					return fmt.Errorf("check out %s: %w", branch, err)
				}
			} else if _, err := r.git(ctx, "checkout", "-q", "-b", branch); err != nil {
				return fmt.Errorf("create branch %s: %w", branch, err)
			}
		}
	}
	if r.HasStack(ctx) {
		return nil
	}
	if _, err := r.stg(ctx, "init"); err != nil {
		return fmt.Errorf("stg init: %w", err)
	}
	return nil
}

// StackPatch is one patch of the stg stack.
type StackPatch struct {
	Name    string `json:"name"`
	Subject string `json:"subject"`
	Applied bool   `json:"applied"`
	Top     bool   `json:"top,omitempty"` // the current (topmost applied) patch
}

// List returns the stack's patches, applied ones first, in stack order.
func (r *Repo) List(ctx context.Context) ([]StackPatch, error) {
	if !r.HasStack(ctx) {
		return nil, fmt.Errorf("%s: the branch has no stg stack; run 'ppkit series apply --kernel %s' first", r.Dir, r.Dir)
	}
	out, err := r.stg(ctx, "series", "-a", "-d")
	if err != nil {
		return nil, err
	}
	var ps []StackPatch
	for _, line := range strings.Split(out, "\n") {
		if len(line) < 3 {
			continue
		}
		mark := line[0]
		rest := strings.TrimSpace(line[2:])
		name, subject, _ := strings.Cut(rest, " # ")
		ps = append(ps, StackPatch{
			Name:    strings.TrimSpace(name),
			Subject: strings.TrimSpace(subject),
			Applied: mark == '+' || mark == '>',
			Top:     mark == '>',
		})
	}
	return ps, nil
}

// Goto makes the named patch, or the N-th patch when target is a 1-based number, the top of
// the stack.
func (r *Repo) Goto(ctx context.Context, target string) error {
	ps, err := r.List(ctx)
	if err != nil {
		return err
	}
	name := ""
	for i, p := range ps {
		if p.Name == target || fmt.Sprint(i+1) == target {
			name = p.Name
			break
		}
	}
	if name == "" {
		return fmt.Errorf("no patch %q in the stack; 'ppkit series list' shows the names", target)
	}
	if _, err := r.stg(ctx, "goto", name); err != nil {
		return fmt.Errorf("stg goto %s: %w", name, err)
	}
	return nil
}

// Base returns the commit the stack sits on.
func (r *Repo) Base(ctx context.Context) (string, error) {
	ps, err := r.List(ctx)
	if err != nil {
		return "", err
	}
	if len(ps) == 0 || !ps[0].Applied {
		out, err := r.git(ctx, "rev-parse", "HEAD")
		return strings.TrimSpace(out), err
	}
	out, err := r.stg(ctx, "id", ps[0].Name+"^")
	return strings.TrimSpace(out), err
}

// inGroup runs cmd in a process group of its own: a Ctrl-C at the terminal reaches ppkit only
// (which then rolls back), and a cancelled context kills the command with every git process it
// started, so none of them writes to the repository after ppkit restored it.
func inGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 10 * time.Second
}

// runGroup runs a command started with inGroup; when the context cancelled it, it returns only
// once no process of the group is left.
func runGroup(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	err := cmd.Wait()
	if cmd.ProcessState == nil || !cmd.ProcessState.Exited() {
		// Cancel killed the group while its leader was unreaped. The leader is reaped now, so
		// its number is only still a group while a member lives: signal it only then, or the
		// kill could reach a new process that got the number (QEMU leads a group of its own).
		if groupAlive(pid) {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if !groupAlive(pid) {
				break
			}
		}
	}
	return err
}

// groupAlive reports whether a process of the group still runs (zombies do not count: a
// container's init may never reap them).
func groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) == syscall.ESRCH {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}
