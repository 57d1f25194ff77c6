package stgit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/ppkit/ppkit/internal/owned"
)

// Patch is one patch of a series being checked, as a Builder sees it.
type Patch struct {
	Index   int      `json:"index"` // 1-based position in the series
	Name    string   `json:"name"`
	Subject string   `json:"subject"`
	Author  string   `json:"author,omitempty"`
	Files   []string `json:"files"` // paths the patch touches
}

// Builder builds a kernel tree that holds the series up to and including patch. Check calls it
// once per patch, in order, on the same tree, so an incremental build is enough. ppkit's
// harness provides the real arm64 kernel build; MakeBuilder is the stand-in that compiles the
// objects a patch touches.
type Builder interface {
	Build(ctx context.Context, tree string, patch Patch) error
}

// MakeBuilder runs Kbuild for the objects a patch touches, out of tree in OutDir:
// `make ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- O=OUT defconfig` (or olddefconfig from
// Config) once, then `make … O=OUT path/to/file.o` for every touched .c file (`prepare` when
// the patch touches no C file).
type MakeBuilder struct {
	OutDir       string
	Arch         string // default arm64
	CrossCompile string // default aarch64-linux-gnu-
	Config       string // optional .config to start from
	Jobs         int    // default the number of CPUs
	Log          io.Writer
}

func (b *MakeBuilder) make(ctx context.Context, tree string, targets ...string) error {
	arch, cross := b.Arch, b.CrossCompile
	if arch == "" {
		arch = "arm64"
	}
	if cross == "" && arch == "arm64" {
		cross = "aarch64-linux-gnu-"
	}
	jobs := b.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	args := append([]string{"-C", tree, "-j" + strconv.Itoa(jobs), "ARCH=" + arch, "CROSS_COMPILE=" + cross, "O=" + b.OutDir}, targets...)
	cmd := exec.CommandContext(ctx, "make", args...)
	var out bytes.Buffer
	w := io.Writer(&out)
	if b.Log != nil {
		w = io.MultiWriter(&out, b.Log)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("make %s: %s", strings.Join(targets, " "), firstError(out.String(), err))
	}
	return nil
}

// firstError picks the line of a build log that says what broke.
func firstError(log string, err error) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "error:") || strings.Contains(l, "Error ") && !strings.HasPrefix(l, "make") {
			return strings.TrimSpace(l)
		}
	}
	lines := strings.Split(strings.TrimSpace(log), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		return last
	}
	return err.Error()
}

// Build implements Builder.
func (b *MakeBuilder) Build(ctx context.Context, tree string, patch Patch) error {
	if b.OutDir == "" {
		return errors.New("MakeBuilder needs an OutDir")
	}
	if _, err := os.Stat(filepath.Join(b.OutDir, ".config")); err != nil {
		if err := os.MkdirAll(b.OutDir, 0o755); err != nil {
			return err
		}
		target := "defconfig"
		if b.Config != "" {
			data, err := os.ReadFile(b.Config)
			if err != nil {
				return fmt.Errorf("kernel config: %w", err)
			}
			if err := os.WriteFile(filepath.Join(b.OutDir, ".config"), data, 0o644); err != nil {
				return err
			}
			target = "olddefconfig"
		}
		if err := b.make(ctx, tree, target); err != nil {
			return err
		}
	}
	var objs []string
	for _, f := range patch.Files {
		if strings.HasSuffix(f, ".c") {
			if _, err := os.Stat(filepath.Join(tree, f)); err == nil { // not deleted
				objs = append(objs, strings.TrimSuffix(f, ".c")+".o")
			}
		}
	}
	if len(objs) == 0 {
		objs = []string{"prepare"}
	}
	return b.make(ctx, tree, objs...)
}

// Finding is one thing a check found in a patch.
type Finding struct {
	Check    string `json:"check"`    // signoff, subject, apply, checkpatch, build
	Severity string `json:"severity"` // error (fails the check), warning or check (reported)
	Message  string `json:"message"`
}

// PatchReport is the verdict on one patch.
type PatchReport struct {
	Patch
	Findings []Finding `json:"findings"`
	Built    bool      `json:"built"`
}

// OK reports whether the patch has no error finding.
func (p *PatchReport) OK() bool {
	for _, f := range p.Findings {
		if f.Severity == "error" {
			return false
		}
	}
	return true
}

// CheckReport is the verdict on a series.
type CheckReport struct {
	Series  string        `json:"series"`
	Base    string        `json:"base"`
	OK      bool          `json:"ok"`
	Patches []PatchReport `json:"patches"`
}

// CheckOptions configures Check.
type CheckOptions struct {
	// Builder builds the tree after each patch; nil skips the bisectability check.
	Builder Builder
	// Progress receives one line per patch.
	Progress io.Writer
}

// subjectForm is `subsystem: summary` (several subsystem levels allowed: `net: core: …`).
var subjectForm = regexp.MustCompile(`^[A-Za-z0-9_.,/+-]+(?:: [A-Za-z0-9_.,/+-]+)*: \S.*$`)

var signedOff = regexp.MustCompile(`(?m)^Signed-off-by: [^<\n]+ <[^@>\s]+@[^>\s]+>\s*$`)

var checkpatchLine = regexp.MustCompile(`^-:(\d+): (ERROR|WARNING|CHECK):([A-Z0-9_]+): (.*)$`)

// CheckBase returns the commit a series is checked on: the series file's "applies on" commit
// when the repository has it, else the stack's base, else HEAD.
func (r *Repo) CheckBase(ctx context.Context, s *Series) (string, error) {
	if s.Base != "" {
		if out, err := r.git(ctx, "rev-parse", "--verify", "-q", s.Base+"^{commit}"); err == nil {
			return strings.TrimSpace(out), nil
		}
	}
	if r.HasStack(ctx) {
		return r.Base(ctx)
	}
	out, err := r.git(ctx, "rev-parse", "HEAD")
	if err != nil {
		return "", fmt.Errorf("%s has no commit to check the series on", r.Dir)
	}
	return strings.TrimSpace(out), nil
}

// Check verifies every patch of the series: Signed-off-by present, subject `subsystem: summary`,
// the tree's scripts/checkpatch.pl --strict (errors fail, warnings and checks are reported),
// and, with a Builder, that the kernel builds after each patch. It works in a temporary
// worktree at the base commit; the developer's tree, branch and stack are not touched.
func (r *Repo) Check(ctx context.Context, s *Series, o CheckOptions) (*CheckReport, error) {
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	base, err := r.CheckBase(ctx, s)
	if err != nil {
		return nil, err
	}
	tmp, err := owned.TempDir("check")
	if err != nil {
		return nil, err
	}
	tree := filepath.Join(tmp, "tree")
	defer func() {
		// A kernel work tree is a gigabyte of files: deleting it takes seconds, and an
		// interrupted ppkit must be gone at once. Git forgets the work tree as soon as its
		// directory is gone, so it is renamed out of the way, pruned, and deleted by a detached
		// rm that outlives ppkit.
		if ctx.Err() != nil {
			trash := tmp + ".removing"
			if os.Rename(tmp, trash) == nil {
				r.git(context.Background(), "worktree", "prune")
				removeDetached(trash)
				return
			}
		}
		r.git(context.Background(), "worktree", "remove", "--force", tree)
		r.git(context.Background(), "worktree", "prune")
		os.RemoveAll(tmp)
	}()
	if _, err := r.git(ctx, "worktree", "add", "-q", "--detach", tree, base); err != nil {
		return nil, fmt.Errorf("check out %s for checking: %w", base, err)
	}
	wt := &Repo{Dir: tree, Env: append(append([]string{}, r.Env...),
		"GIT_COMMITTER_NAME=ppkit series check", "GIT_COMMITTER_EMAIL=ppkit@localhost")}
	checkpatch := filepath.Join(tree, "scripts", "checkpatch.pl")
	haveCheckpatch := true
	if _, err := os.Stat(checkpatch); err != nil {
		haveCheckpatch = false
	}
	rep := &CheckReport{Series: s.File, Base: base, OK: true}
	for i, name := range s.Patches {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		path, _ := filepath.Abs(s.PatchPath(name))
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("patch %s: %w", name, err)
		}
		pr := PatchReport{Patch: Patch{Index: i + 1, Name: name}}
		add := func(check, sev, msg string) {
			pr.Findings = append(pr.Findings, Finding{Check: check, Severity: sev, Message: msg})
		}
		pf, err := ParsePatchFile(data)
		if err != nil {
			add("apply", "error", fmt.Sprintf("not a patch: %v", err))
			rep.Patches = append(rep.Patches, pr)
			rep.OK = false
			break
		}
		pr.Subject, pr.Author, pr.Files = pf.Subject, pf.Author, pf.Files
		if !signedOff.MatchString(pf.Body) {
			add("signoff", "error", "no Signed-off-by: line; add one with 'stg edit --sign'")
		}
		if !subjectForm.MatchString(pf.Subject) {
			add("subject", "error", fmt.Sprintf("subject %q is not of the form 'subsystem: summary'", pf.Subject))
		} else if len(pf.Subject) > 75 {
			add("subject", "warning", fmt.Sprintf("subject is %d characters; keep it within 75", len(pf.Subject)))
		}
		if _, err := wt.git(ctx, "apply", "--index", "--whitespace=nowarn", path); err != nil {
			add("apply", "error", fmt.Sprintf("does not apply on the previous patches: %v", err))
			rep.Patches = append(rep.Patches, pr)
			rep.OK = false
			fmt.Fprintf(progress, "[%d/%d] %s: does not apply; later patches not checked\n", i+1, len(s.Patches), name)
			break
		}
		msg := pf.Subject + "\n\n" + pf.Body + "\n"
		args := []string{"commit", "-q", "--allow-empty", "--no-verify", "-m", msg}
		if pf.Author != "" {
			args = append(args, "--author="+pf.Author)
		}
		if _, err := wt.git(ctx, args...); err != nil {
			return nil, fmt.Errorf("patch %s: commit in the check tree: %w", name, err)
		}
		if haveCheckpatch {
			formatted, err := wt.git(ctx, "format-patch", "-1", "--stdout", "HEAD")
			if err != nil {
				return nil, err
			}
			out, _ := wt.command(ctx, []byte(formatted), "perl", checkpatch, "--strict", "--terse", "--show-types", "--no-summary", "-")
			for _, l := range strings.Split(out, "\n") {
				if m := checkpatchLine.FindStringSubmatch(l); m != nil {
					add("checkpatch", strings.ToLower(m[2]), fmt.Sprintf("%s: %s (line %s of the patch)", m[3], m[4], m[1]))
				} else if strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "NOTE:") {
					add("checkpatch", "warning", strings.TrimSpace(l))
				}
			}
		} else if i == 0 {
			add("checkpatch", "warning", "the tree has no scripts/checkpatch.pl; style not checked")
		}
		status := "ok"
		if o.Builder != nil {
			if err := o.Builder.Build(ctx, tree, pr.Patch); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				add("build", "error", "the kernel does not build after this patch: "+oneLine(err.Error()))
			} else {
				pr.Built = true
			}
		}
		if !pr.OK() {
			rep.OK = false
			status = "FAIL"
		}
		fmt.Fprintf(progress, "[%d/%d] %s: %s (%d findings)\n", i+1, len(s.Patches), name, status, len(pr.Findings))
		rep.Patches = append(rep.Patches, pr)
	}
	return rep, nil
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// removeDetached deletes dir in a process of its own session, which goes on after ppkit exits.
func removeDetached(dir string) {
	cmd := exec.Command("rm", "-rf", "--", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if cmd.Start() != nil {
		os.RemoveAll(dir)
		return
	}
	cmd.Process.Release()
}
