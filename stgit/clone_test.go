package stgit

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/stgit/stgtest"
)

// The one environment policy: a hook's GIT_DIR and GIT_INDEX_FILE do not redirect git away from
// Dir, the command's own Env does apply, and in a tree ppkit owns the user's hooks and signing
// stay out.
func TestRepoEnvironmentPolicy(t *testing.T) {
	home := stgtest.Hermetic(t)
	ctx := context.Background()
	dir := stgtest.KernelRepo(t)
	hooks := filepath.Join(home, "hooks")
	stgtest.WriteFile(t, hooks, "pre-commit", "#!/bin/sh\necho refused by the user hook >&2\nexit 1\n")
	os.Chmod(filepath.Join(hooks, "pre-commit"), 0o755)
	stgtest.Git(t, home, "config", "--global", "core.hooksPath", hooks)
	stgtest.Git(t, home, "config", "--global", "commit.gpgsign", "true")
	t.Setenv("GIT_DIR", filepath.Join(home, "elsewhere.git"))
	t.Setenv("GIT_INDEX_FILE", filepath.Join(home, "elsewhere.index"))

	r := &Repo{Dir: dir, Env: []string{"GIT_COMMITTER_NAME=Env Wins"}}
	top, err := r.Git(ctx, "rev-parse", "--show-toplevel")
	if err != nil || strings.TrimSpace(top) != dir {
		t.Fatalf("rev-parse --show-toplevel with GIT_DIR set: %q, %v; want %s", top, err, dir)
	}
	if out, err := r.Git(ctx, "var", "GIT_COMMITTER_IDENT"); err != nil || !strings.HasPrefix(out, "Env Wins ") {
		t.Errorf("committer %q, %v: Repo.Env is not applied", out, err)
	}
	if _, err := r.Git(ctx, "commit", "-q", "--allow-empty", "-m", "user's tree"); err == nil || !strings.Contains(err.Error(), "refused by the user hook") {
		t.Errorf("commit in the user's tree: %v; want the user's pre-commit hook to run", err)
	}
	own := OwnRepo(dir)
	if _, err := own.Git(ctx, "commit", "-q", "--allow-empty", "-m", "ppkit's tree"); err != nil {
		t.Fatalf("commit in a tree ppkit owns: %v (the user's hook or signing leaked in)", err)
	}
	if who, _ := own.Git(ctx, "log", "-1", "--format=%an <%ae>"); strings.TrimSpace(who) != "ppkit <ppkit@localhost>" {
		t.Errorf("author %q in a tree ppkit owns", who)
	}
}
