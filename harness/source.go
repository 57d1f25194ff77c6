package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ppkit/ppkit/internal/atomicfile"
	"github.com/ppkit/ppkit/internal/cachedir"
	"github.com/ppkit/ppkit/stgit"
)

// DefaultKernelTarball is Debian's linux-source-5.10 package, the default kernel source.
const DefaultKernelTarball = "/usr/src/linux-source-5.10.tar.xz"

// kernelSource is a pristine kernel tree that ppkit reads: a git repository and the commit to
// build. The Debian tarball is extracted once into the cache and committed there; a user's tree
// is only ever read (cloned with --shared, so not even its .git is written).
type kernelSource struct {
	id     string // stable name: work tree and build directories are named after it
	repo   string // git repository to clone/fetch from
	commit string // commit to build
}

// git runs git in dir, a tree ppkit owns or only reads, through stgit's one runner
// (stgit.OwnRepo: no user hooks or signing, ppkit's identity) and returns its trimmed output.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	out, err := stgit.OwnRepo(dir).Git(ctx, args...)
	return strings.TrimSpace(out), err
}

// userKernelSource resolves a user's kernel git tree to the commit at its HEAD. Uncommitted
// changes in that tree are not built (say so rather than copying them half-way).
func userKernelSource(ctx context.Context, dir, rev string) (*kernelSource, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(abs, "Makefile")); err != nil {
		return nil, fmt.Errorf("kernel tree %s: no top-level Makefile; pass a Linux source tree to --kernel", abs)
	}
	if rev == "" {
		rev = "HEAD"
	}
	commit, err := git(ctx, abs, "rev-parse", "--verify", rev+"^{commit}")
	if err != nil {
		return nil, fmt.Errorf("kernel tree %s has no commit %s (ppkit builds a commit of a git tree): %w", abs, rev, err)
	}
	sum := sha256.Sum256([]byte(abs))
	return &kernelSource{id: "user-" + filepath.Base(abs) + "-" + hex.EncodeToString(sum[:])[:12], repo: abs, commit: commit}, nil
}

// LinuxSourceTree returns ppkit's git import of Debian's linux-source-5.10 under cache (""
// means cachedir.Root()), importing it the first time: the tree a series is checked on when the user
// names none. Building it is BuildKernel with an empty Tree.
func LinuxSourceTree(ctx context.Context, cache string, progress io.Writer) (string, error) {
	cache, progress, err := cacheAndProgress(cache, progress)
	if err != nil {
		return "", err
	}
	src, err := tarballKernelSource(ctx, cache, DefaultKernelTarball, progress)
	if err != nil {
		return "", err
	}
	return src.repo, nil
}

// ConfiguredKernelTree returns the user's kernel tree from `git config ppkit.kernel`, or "".
func ConfiguredKernelTree(ctx context.Context) string {
	out, err := (&stgit.Repo{}).Git(ctx, "config", "--get", "ppkit.kernel")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// tarballKernelSource extracts the Debian source tarball once into cache/src/<id> and commits it
// to a git repository there, atomically (extract into a temporary directory, then rename).
func tarballKernelSource(ctx context.Context, cache, tarball string, progress io.Writer) (*kernelSource, error) {
	if progress == nil {
		progress = io.Discard
	}
	sum, err := tarballDigest(cache, tarball)
	if err != nil {
		return nil, fmt.Errorf("kernel source %s: %w (install it with harness/install-deps.sh kernel)", tarball, err)
	}
	name := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(tarball), ".xz"), ".tar")
	id := name + "-" + sum[:12]
	repo := filepath.Join(cache, "src", id)
	if commit, err := git(ctx, repo, "rev-parse", "--verify", "HEAD^{commit}"); err == nil {
		return &kernelSource{id: id, repo: repo, commit: commit}, nil
	}
	lock, err := cachedir.Lock(ctx, filepath.Join(cache, "src", id+".lock"), progress)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if commit, err := git(ctx, repo, "rev-parse", "--verify", "HEAD^{commit}"); err == nil {
		return &kernelSource{id: id, repo: repo, commit: commit}, nil
	}
	tmp, err := os.MkdirTemp(filepath.Join(cache, "src"), ".extract-")
	if err != nil {
		return nil, err
	}
	defer removeAll(ctx, tmp)
	fmt.Fprintf(progress, "kernel: extracting %s (once)\n", tarball)
	tar := exec.CommandContext(ctx, "nice", "-n", "10", "tar", "-xf", tarball, "-C", tmp)
	if out, err := tar.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("extract %s: %w: %s", tarball, err, lastLines(out, 5))
	}
	entries, err := os.ReadDir(tmp)
	if err != nil || len(entries) != 1 || !entries[0].IsDir() {
		return nil, fmt.Errorf("extract %s: expected one top-level directory", tarball)
	}
	tree := filepath.Join(tmp, entries[0].Name())
	fmt.Fprintf(progress, "kernel: committing the pristine tree to git (once)\n")
	if _, err := git(ctx, tree, "init", "-q"); err != nil {
		return nil, err
	}
	// Debian's .gitignore ignores the whole top level ("/*"): force-add.
	if _, err := git(ctx, tree, "add", "-f", "."); err != nil {
		return nil, err
	}
	if err := commitImport(ctx, tree, name); err != nil {
		return nil, err
	}
	if err := os.Rename(tree, repo); err != nil {
		return nil, fmt.Errorf("kernel source: %w", err)
	}
	commit, err := git(ctx, repo, "rev-parse", "HEAD")
	if err != nil {
		return nil, err
	}
	return &kernelSource{id: id, repo: repo, commit: commit}, nil
}

// tarballDigest returns the tarball's sha256, remembered by (path, size, mtime) so that a cached
// build does not rehash 120 MB.
func tarballDigest(cache, tarball string) (string, error) {
	st, err := os.Stat(tarball)
	if err != nil {
		return "", err
	}
	memo := filepath.Join(cache, "src", "digests.json")
	key := fmt.Sprintf("%s|%d|%d", tarball, st.Size(), st.ModTime().UnixNano())
	known := map[string]string{}
	if data, err := os.ReadFile(memo); err == nil {
		json.Unmarshal(data, &known)
	}
	if d, ok := known[key]; ok {
		return d, nil
	}
	f, err := os.Open(tarball)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	d := hex.EncodeToString(h.Sum(nil))
	known[key] = d
	if data, err := json.Marshal(known); err == nil {
		os.MkdirAll(filepath.Dir(memo), 0o755)
		atomicfile.Write(memo, data, 0o644)
	}
	return d, nil
}

// prepareWorkTree makes ppkit's own work tree work (a shared clone of src, created on first use)
// hold exactly src.commit plus the series and then the patch traceEvents (traceEventsPatch; nil:
// none), and returns the tree it held before (prev, "" for a new work tree) and the one it
// holds now. Only files whose content changes are rewritten, so
// the out-of-tree build stays incremental: going from a prefix of a series to the next one
// rewrites the files of that one patch, not every file the series touches (make would rebuild
// everything that includes mm_types.h or skbuff.h). The caller holds the work tree lock.
func prepareWorkTree(ctx context.Context, work string, src *kernelSource, series *stgit.Series, traceEvents []byte, progress io.Writer) (prev, tree string, err error) {
	if progress == nil {
		progress = io.Discard
	}
	if _, err := os.Stat(filepath.Join(work, ".git")); err != nil {
		fmt.Fprintf(progress, "kernel: creating work tree %s (once)\n", work)
	} else if t, err := git(ctx, work, "write-tree"); err == nil {
		prev = t // the index describes the work tree's content
	}
	if _, err := stgit.SharedClone(ctx, src.repo, work, src.commit); err != nil {
		return "", "", fmt.Errorf("work tree: %w", err)
	}
	// The tree to build is written first, through a private index: a patch that does not apply
	// is named (with its rejected hunk) before the work tree changes.
	tree, err = git(ctx, work, "rev-parse", src.commit+"^{tree}")
	if err != nil {
		return "", "", fmt.Errorf("work tree: %w", err)
	}
	if series != nil && len(series.Patches) > 0 {
		if tree, err = stgit.OwnRepo(work).SeriesTree(ctx, src.commit, series); err != nil {
			return "", "", err
		}
	}
	if traceEvents != nil {
		if tree, err = stgit.OwnRepo(work).PatchTree(ctx, tree, "trace-events", traceEvents); err != nil {
			if ae := (*stgit.ApplyError)(nil); errors.As(err, &ae) && ae.File != "" {
				return "", "", fmt.Errorf("ppkit's trace events (%s) do not apply after the series: %s rejected; the series changed the lines they hook (the opening of page_pool_put_page() and of arch_sync_dma_for_device(), and page_pool.c's trace include): keep those lines, or update %[1]s",
					TraceEventsFile, ae.File)
			}
			return "", "", fmt.Errorf("ppkit's trace events (%s): %w", TraceEventsFile, err)
		}
	}
	if err := switchWorkTree(ctx, work, src.commit, tree); err != nil {
		return "", "", err
	}
	return prev, tree, nil
}

// switchWorkTree makes the work tree and its index hold tree, on HEAD detached at commit. The
// index always describes the work tree's content, so `read-tree --reset -u` writes only the
// files that differ from tree (and any whose stat says they were changed behind git's back);
// untracked files go first, so nothing of an interrupted or older layout survives.
func switchWorkTree(ctx context.Context, work, commit, tree string) error {
	for _, args := range [][]string{
		{"clean", "-q", "-f", "-d", "-x"},
		{"read-tree", "--reset", "-u", tree},
		{"update-ref", "--no-deref", "HEAD", commit},
	} {
		if _, err := git(ctx, work, args...); err != nil {
			return fmt.Errorf("work tree: %w", err)
		}
	}
	return nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// commitImport commits the extracted tree the way patches/README.md says, so that the import
// has the same commit on every machine and the series' "applies on GIT commit" line names it:
// fixed identity and dates, message "Import Debian <package> <version>".
func commitImport(ctx context.Context, tree, pkg string) error {
	version, err := kernelVersion(filepath.Join(tree, "Makefile"))
	if err != nil {
		return err
	}
	// Identity and dates are the import's own, whatever GIT_AUTHOR_* the caller has set.
	repo := stgit.OwnRepo(tree)
	repo.Env = []string{"GIT_AUTHOR_NAME=ppkit", "GIT_AUTHOR_EMAIL=ppkit@localhost", "GIT_COMMITTER_NAME=ppkit",
		"GIT_COMMITTER_EMAIL=ppkit@localhost", "GIT_AUTHOR_DATE=2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2000-01-01T00:00:00Z"}
	if _, err := repo.Git(ctx, "commit", "-q", "-m", "Import Debian "+pkg+" "+version); err != nil {
		return fmt.Errorf("git commit of the kernel import: %w", err)
	}
	return nil
}

// kernelVersion reads VERSION.PATCHLEVEL.SUBLEVEL from a kernel's top-level Makefile.
func kernelVersion(makefile string) (string, error) {
	data, err := os.ReadFile(makefile)
	if err != nil {
		return "", err
	}
	v := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		k, val, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k, val = strings.TrimSpace(k), strings.TrimSpace(val)
		if (k == "VERSION" || k == "PATCHLEVEL" || k == "SUBLEVEL") && v[k] == "" {
			v[k] = val
		}
	}
	if v["VERSION"] == "" || v["PATCHLEVEL"] == "" || v["SUBLEVEL"] == "" {
		return "", fmt.Errorf("%s: no VERSION/PATCHLEVEL/SUBLEVEL; is this a Linux source tree?", makefile)
	}
	return v["VERSION"] + "." + v["PATCHLEVEL"] + "." + v["SUBLEVEL"], nil
}
