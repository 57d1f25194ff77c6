package stgit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ppkit/ppkit/internal/atomicfile"
)

// RestoreTimeout bounds the rollback of an interrupted or failed operation. The rollback runs
// on a context of its own: a Ctrl-C that cancelled the operation must not cancel its undoing.
const RestoreTimeout = 2 * time.Minute

// repoState is everything an stg operation may change in a repository: HEAD, every ref, the
// files of stg's stack format 2 under GIT_DIR/patches, GIT_DIR/config (branch.*.stgit.*),
// ORIG_HEAD, and the untracked files of the work tree.
type repoState struct {
	gitDir    string
	headSym   string // "refs/heads/b", or "" when HEAD is detached
	head      string // the commit HEAD names ("" in an empty repository)
	refs      map[string]string
	files     map[string][]byte // path relative to gitDir → content
	refDirs   []string
	untracked map[string]bool
}

// stateFiles are the files and trees under GIT_DIR that stg 0.19 writes besides refs.
var stateFiles = []string{"config", "ORIG_HEAD", "patches"}

func (r *Repo) snapshotState(ctx context.Context) (*repoState, error) {
	gd, err := r.GitDir(ctx)
	if err != nil {
		return nil, err
	}
	st := &repoState{gitDir: gd, files: map[string][]byte{}, untracked: map[string]bool{}}
	if out, err := r.git(ctx, "symbolic-ref", "-q", "HEAD"); err == nil {
		st.headSym = strings.TrimSpace(out)
	}
	if out, err := r.git(ctx, "rev-parse", "-q", "--verify", "HEAD"); err == nil {
		st.head = strings.TrimSpace(out)
	}
	if st.refs, err = r.refs(ctx); err != nil {
		return nil, err
	}
	for _, f := range stateFiles {
		if err := readTree(gd, f, st.files); err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", filepath.Join(gd, f), err)
		}
	}
	st.refDirs = refDirs(gd)
	out, err := r.git(ctx, "ls-files", "-z", "--others", "--exclude-standard")
	if err != nil {
		return nil, err
	}
	for _, f := range strings.Split(out, "\x00") {
		if f != "" {
			st.untracked[f] = true
		}
	}
	return st, nil
}

// readTree adds the regular files at gitDir/rel (a file or a directory) to files.
func readTree(gitDir, rel string, files map[string][]byte) error {
	root := filepath.Join(gitDir, rel)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			r, _ := filepath.Rel(gitDir, path)
			files[r] = data
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// restore puts the repository back to st. It works on a context that the caller's
// cancellation does not reach, bounded by RestoreTimeout, and reports what it could not undo.
func (r *Repo) restore(parent context.Context, st *repoState) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), RestoreTimeout)
	defer cancel()
	var problems []string
	note := func(what string, err error) {
		if err != nil {
			problems = append(problems, what+": "+err.Error())
		}
	}
	// A killed git leaves its lock files behind; none existed before (the tree was clean and
	// no other command ran).
	for _, lock := range []string{"index.lock", "HEAD.lock", "config.lock", "packed-refs.lock", "ORIG_HEAD.lock"} {
		os.Remove(filepath.Join(st.gitDir, lock))
	}
	filepath.WalkDir(filepath.Join(st.gitDir, "refs"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".lock") {
			os.Remove(path)
		}
		return nil
	})
	// Files first (git config must be sane before git runs), and again at the end: git reset
	// writes ORIG_HEAD.
	problems = append(problems, st.restoreFiles()...)
	if st.headSym != "" {
		_, err := r.git(ctx, "symbolic-ref", "HEAD", st.headSym)
		note("HEAD", err)
	} else if st.head != "" {
		_, err := r.git(ctx, "update-ref", "--no-deref", "HEAD", st.head)
		note("HEAD", err)
	}
	refsNow, err := r.refs(ctx)
	note("list refs", err)
	for ref, id := range refsNow {
		if old, ok := st.refs[ref]; !ok {
			_, err := r.git(ctx, "update-ref", "--no-deref", "-d", ref)
			note("delete "+ref, err)
		} else if old != id {
			_, err := r.git(ctx, "update-ref", "--no-deref", ref, old)
			note("reset "+ref, err)
		}
	}
	for ref, old := range st.refs {
		if _, ok := refsNow[ref]; !ok {
			_, err := r.git(ctx, "update-ref", "--no-deref", ref, old)
			note("recreate "+ref, err)
		}
	}
	if st.head != "" {
		_, err := r.git(ctx, "reset", "-q", "--hard", st.head)
		note("reset the work tree", err)
	}
	if len(problems) == 0 {
		problems = append(problems, st.restoreFiles()...)
	}
	// Files a half-applied patch created and nothing tracks.
	if out, err := r.git(ctx, "ls-files", "-z", "--others", "--exclude-standard"); err == nil {
		for _, f := range strings.Split(out, "\x00") {
			if f != "" && !st.untracked[f] {
				os.Remove(filepath.Join(r.Dir, f))
			}
		}
	}
	// Deleted refs leave empty directories (refs/patches/BRANCH) behind.
	after := refDirs(st.gitDir)
	for i := len(after) - 1; i >= 0; i-- {
		if !slices.Contains(st.refDirs, after[i]) {
			os.Remove(after[i]) // only succeeds when empty
		}
	}
	if len(problems) == 0 {
		// Prove it: the state must be the snapshot's, byte for byte.
		cur, err := r.snapshotState(ctx)
		if err != nil {
			problems = append(problems, "check: "+err.Error())
		} else if d := st.diff(cur); d != "" {
			problems = append(problems, "still differs: "+d)
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("could not restore %s (%s); run 'stg repair' there", r.Dir, strings.Join(problems, "; "))
	}
	return nil
}

// restoreFiles puts the snapshot's files back and removes the ones it did not have.
func (st *repoState) restoreFiles() []string {
	var problems []string
	note := func(what string, err error) {
		if err != nil {
			problems = append(problems, what+": "+err.Error())
		}
	}
	now := map[string][]byte{}
	for _, f := range stateFiles {
		readTree(st.gitDir, f, now)
	}
	for rel := range now {
		if _, ok := st.files[rel]; !ok {
			note("remove "+rel, os.Remove(filepath.Join(st.gitDir, rel)))
		}
	}
	for rel, data := range st.files {
		if cur, ok := now[rel]; ok && bytes.Equal(cur, data) {
			continue
		}
		path := filepath.Join(st.gitDir, rel)
		os.MkdirAll(filepath.Dir(path), 0o755)
		note("write "+rel, atomicfile.Write(path, data, 0o644))
	}
	removeNewDirs(filepath.Join(st.gitDir, "patches"), st.gitDir, st.files)
	return problems
}

// removeNewDirs removes the empty directories under root that held no snapshot file.
func removeNewDirs(root, gitDir string, files map[string][]byte) {
	var dirs []string
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		rel, _ := filepath.Rel(gitDir, dirs[i])
		keep := false
		for f := range files {
			if strings.HasPrefix(f, rel+string(filepath.Separator)) {
				keep = true
				break
			}
		}
		if !keep {
			os.Remove(dirs[i])
		}
	}
}

// diff names the first difference between two states ("" when equal).
func (st *repoState) diff(o *repoState) string {
	if st.headSym != o.headSym || st.head != o.head {
		return fmt.Sprintf("HEAD %s %s, was %s %s", o.headSym, o.head, st.headSym, st.head)
	}
	for ref, id := range st.refs {
		if o.refs[ref] != id {
			return "ref " + ref
		}
	}
	for ref := range o.refs {
		if _, ok := st.refs[ref]; !ok {
			return "ref " + ref
		}
	}
	for f, data := range st.files {
		if !bytes.Equal(o.files[f], data) {
			return filepath.Join(st.gitDir, f)
		}
	}
	for f := range o.files {
		if _, ok := st.files[f]; !ok {
			return filepath.Join(st.gitDir, f)
		}
	}
	return ""
}

// atomically runs op; when op fails or ctx is cancelled (Ctrl-C) while it runs, the repository
// is put back exactly as it was: refs, HEAD, the work tree, stg's stack files and git config.
func (r *Repo) atomically(ctx context.Context, op func() error) error {
	st, err := r.snapshotState(ctx)
	if err != nil {
		return err
	}
	err = op()
	if err == nil && ctx.Err() == nil {
		return nil
	}
	if err == nil || ctx.Err() != nil {
		err = fmt.Errorf("interrupted (%v)", context.Cause(ctx))
	}
	if rerr := r.restore(ctx, st); rerr != nil {
		return fmt.Errorf("%w; %v", err, rerr)
	}
	return fmt.Errorf("%w; the branch, the stack and stg's metadata are as they were", err)
}
