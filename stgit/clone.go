package stgit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Commit resolves rev (a branch, tag, commit or any revision) to a commit id.
func (r *Repo) Commit(ctx context.Context, rev string) (string, error) {
	out, err := r.git(ctx, "rev-parse", "-q", "--verify", rev+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("%s names no commit of %s", rev, r.Dir)
	}
	return strings.TrimSpace(out), nil
}

// FullRef returns refs/heads/x for a branch name x; a commit, or a name that is not one ref,
// stays as given.
func (r *Repo) FullRef(ctx context.Context, rev string) string {
	if out, err := r.git(ctx, "rev-parse", "--symbolic-full-name", rev); err == nil {
		if full := strings.TrimSpace(out); strings.HasPrefix(full, "refs/") {
			return full
		}
	}
	return rev
}

// SharedClone keeps dir a `git clone --shared --no-checkout` of src that holds commit: it
// clones on first use (a directory without .git is replaced) and fetches commit from src when
// the clone lacks it. The clone is a tree ppkit owns (OwnRepo); src is only read.
func SharedClone(ctx context.Context, src, dir, commit string) (*Repo, error) {
	clone := OwnRepo(dir)
	if _, err := os.Stat(filepath.Join(dir, ".git")); err != nil {
		os.RemoveAll(dir)
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return nil, err
		}
		if _, err := OwnRepo("").git(ctx, "clone", "-q", "--shared", "--no-checkout", src, dir); err != nil {
			return nil, fmt.Errorf("clone %s: %w", src, err)
		}
	}
	if _, err := clone.git(ctx, "cat-file", "-e", commit+"^{commit}"); err != nil {
		if _, err := clone.git(ctx, "fetch", "-q", src, commit); err != nil {
			return nil, fmt.Errorf("fetch %s from %s: %w", commit, src, err)
		}
	}
	return clone, nil
}

// RangeError says why the commits base..HEAD are not a patch series (none, a merge, a base that
// is not an ancestor): a verdict on the pushed branch, not a failure of the tools.
type RangeError struct{ Reason string }

func (e *RangeError) Error() string { return e.Reason }

// ExportRange turns the commits base..HEAD of the checked-out branch into an stg stack
// (`stg init`, `stg uncommit -n N`) and writes it to dir with Export. baseName and headName are
// how the user named the two ends, for the messages. A range that cannot be a series is a
// *RangeError.
func (r *Repo) ExportRange(ctx context.Context, base, baseName, headName, dir string) error {
	out, err := r.git(ctx, "rev-list", "--count", base+"..HEAD")
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return fmt.Errorf("git rev-list --count: %q: %w", out, err)
	}
	if n == 0 {
		return &RangeError{fmt.Sprintf("%s..%s holds no commit: nothing to test", baseName, headName)}
	}
	if out, _ := r.git(ctx, "rev-list", "--merges", base+"..HEAD"); strings.TrimSpace(out) != "" {
		return &RangeError{fmt.Sprintf("%s..%s has merge commits; a patch series must be linear (rebase it on %s)", baseName, headName, baseName)}
	}
	if _, err := r.git(ctx, "merge-base", "--is-ancestor", base, "HEAD"); err != nil {
		return &RangeError{fmt.Sprintf("%s is not an ancestor of %s; rebase the series on it", baseName, headName)}
	}
	if err := r.InitStack(ctx, ""); err != nil {
		return err
	}
	if _, err := r.stg(ctx, "uncommit", "-n", strconv.Itoa(n)); err != nil {
		return fmt.Errorf("stg uncommit -n %d: %w", n, err)
	}
	return r.Export(ctx, dir)
}
