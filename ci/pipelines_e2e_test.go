//go:build e2e

package ci

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/internal/cachedir"
	"github.com/ppkit/ppkit/stgit/stgtest"
	"github.com/ppkit/ppkit/tests/report"
	"github.com/rhysd/actionlint"
)

// pipelineArgs keeps the pipeline runs short: one procedure of 5 s after the full series check.
const pipelineArgs = "--time 5s multicast"

// pipelineFixture is what a CI runner would have: ppkit published in a repository (this work
// tree, uncommitted changes of tracked files included), and the user's repository holding the
// series of patches/ on its default branch "main" and on the branch "feature".
type pipelineFixture struct {
	ppkitRepo string // file:// URL of a bare repository whose main is this work tree
	userRepo  string // bare repository pushed by the user
	cache     string
}

func newPipelineFixture(t *testing.T) *pipelineFixture {
	t.Helper()
	needBench(t, "make")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &pipelineFixture{ppkitRepo: filepath.Join(dir, "ppkit.git"), userRepo: filepath.Join(dir, "linux.git")}
	f.cache, err = cachedir.Root()
	if err != nil {
		t.Fatal(err)
	}

	snapshot := strings.TrimSpace(stgtest.Git(t, root, "stash", "create"))
	if snapshot == "" {
		snapshot = "HEAD"
	}
	stgtest.Git(t, dir, "init", "-q", "--bare", f.ppkitRepo)
	stgtest.Git(t, root, "push", "-q", f.ppkitRepo, snapshot+":refs/heads/main")
	f.ppkitRepo = "file://" + f.ppkitRepo

	stgtest.Git(t, dir, "init", "-q", "--bare", f.userRepo)
	work := filepath.Join(dir, "work")
	stgtest.Git(t, dir, "clone", "-q", f.userRepo, work)
	commitSeries(t, work, "main", filepath.Join(root, "patches"))
	gitIn(t, work, "branch", "feature")
	gitIn(t, work, "push", "-q", "origin", "main", "feature")
	gitIn(t, f.userRepo, "symbolic-ref", "HEAD", "refs/heads/main")
	return f
}

// checkOutputs checks what a passing pipeline run leaves in out/ and returns its result.
func checkOutputs(t *testing.T, out string) *RunResult {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "result.json"))
	if err != nil {
		t.Fatalf("the pipeline left no result.json: %v", err)
	}
	var res RunResult
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("result.json: %v", err)
	}
	if res.Verdict != VerdictPass || res.Check == nil || !res.Check.OK || res.Tests == nil || !res.Tests.Pass {
		t.Errorf("verdict %s at stage %s: %s", res.Verdict, res.Stage, res.Message)
	}
	x, err := os.ReadFile(filepath.Join(out, "junit.xml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc report.JUnitSuites
	if err := xml.Unmarshal(x, &doc); err != nil {
		t.Fatalf("junit.xml: %v", err)
	}
	if doc.Tests == 0 || doc.Failures != 0 || doc.Errors != 0 {
		t.Errorf("junit.xml: %d tests, %d failures, %d errors", doc.Tests, doc.Failures, doc.Errors)
	}
	if _, err := os.Stat(filepath.Join(out, "summary.md")); err != nil {
		t.Error(err)
	}
	return &res
}

// runScript runs a pipeline script the way the runners do (bash, errexit, pipefail) in dir.
func runScript(t *testing.T, name, dir, script string, env []string) (string, error) {
	t.Helper()
	start := time.Now()
	cmd := exec.Command("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("%s: %v after %s", name, err, time.Since(start).Round(time.Second))
	} else {
		t.Logf("%s: done in %s", name, time.Since(start).Round(time.Second))
	}
	return string(out), err
}

// pipelineEnv is the test's environment plus the pipeline's variables; the global git config is
// the test's own (the GitHub job adds a safe.directory to it), and PPKIT_CACHE keeps the
// machine's build cache in use whatever XDG_CACHE_HOME the pipeline sets.
func (f *pipelineFixture) env(t *testing.T, vars map[string]string) []string {
	env := []string{"GIT_CONFIG_GLOBAL=" + filepath.Join(t.TempDir(), "gitconfig"), "PPKIT_CACHE=" + f.cache}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "PPKIT_CACHE=") {
			env = append(env, kv)
		}
	}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}

// TestGitLabPipelineRuns runs ci/gitlab-ci.yml's job script as GitLab's shell executor would for
// a push of the branch "feature": in a full clone detached at the pushed commit, with GitLab's
// predefined variables and the job's own, ppkit taken from this work tree. The run must pass
// (series check, the procedure, the model) and leave JUnit, summary and result in out/.
func TestGitLabPipelineRuns(t *testing.T) {
	f := newPipelineFixture(t)
	_, job := loadGitLabJob(t)
	project := filepath.Join(t.TempDir(), "linux")
	stgtest.Git(t, filepath.Dir(project), "clone", "-q", f.userRepo, project)
	sha := strings.TrimSpace(stgtest.Git(t, project, "rev-parse", "origin/feature"))
	stgtest.Git(t, project, "checkout", "-q", "--detach", sha)
	t.Cleanup(func() { os.RemoveAll(StateDir(f.cache, project)) })

	predefined := map[string]string{
		"CI": "true", "GITLAB_CI": "true", "CI_PROJECT_DIR": project, "CI_COMMIT_BRANCH": "feature",
		"CI_COMMIT_SHA": sha, "CI_COMMIT_SHORT_SHA": sha[:8], "CI_COMMIT_REF_SLUG": "feature",
		"CI_DEFAULT_BRANCH": "main",
	}
	vars := map[string]string{}
	for k, v := range predefined {
		vars[k] = v
	}
	for k, v := range job.Variables {
		vars[k] = os.Expand(v, func(name string) string { return predefined[name] })
	}
	vars["PPKIT_REPO"], vars["PPKIT_VERSION"] = f.ppkitRepo, "main"
	vars["PPKIT_DIR"] = filepath.Join(t.TempDir(), "ppkit")
	vars["PPKIT_CI_ARGS"] = pipelineArgs
	env := f.env(t, vars)

	out, err := runScript(t, "script", project, gitlabScript(job.Script), env)
	if err != nil {
		t.Fatalf("the job's script failed: %v\n%s", err, out)
	}
	res := checkOutputs(t, filepath.Join(project, "out"))
	after, err := runScript(t, "after_script", project, gitlabScript(job.AfterScript), env)
	if err != nil || !strings.Contains(after, "multicast") {
		t.Errorf("after_script (%v) does not show the summary:\n%s", err, after)
	}
	// The pipeline compared the feature branch with the default branch.
	if !strings.HasSuffix(res.Base, "origin/main") {
		t.Errorf("result base %q, want origin/main (CI_DEFAULT_BRANCH)", res.Base)
	}
}

// TestGitHubWorkflowRuns runs ci/github-actions.yml's job for a push to the default branch: the
// run: steps in order under GitHub's bash, with the job's env and GitHub's variables; the
// actions are stood in for (checkout: a full clone on the pushed branch) or, for the cache,
// artifact and JUnit-report actions that only move files, left out.
func TestGitHubWorkflowRuns(t *testing.T) {
	f := newPipelineFixture(t)
	data, err := os.ReadFile("github-actions.yml")
	if err != nil {
		t.Fatal(err)
	}
	wf, errs := actionlint.Parse(data)
	if len(errs) > 0 {
		t.Fatalf("github-actions.yml: %v", errs[0])
	}
	job := wf.Jobs["ppkit-ci"]
	if job == nil {
		t.Fatal("github-actions.yml has no job ppkit-ci")
	}
	ws := t.TempDir()
	summary := filepath.Join(t.TempDir(), "step-summary.md")
	vars := map[string]string{
		"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": ws, "GITHUB_REF": "refs/heads/main",
		"GITHUB_REF_NAME": "main", "GITHUB_STEP_SUMMARY": summary,
	}
	if job.Env != nil {
		for _, v := range job.Env.Vars {
			vars[v.Name.Value] = v.Value.Value
		}
	}
	vars["PPKIT_REPO"], vars["PPKIT_VERSION"], vars["PPKIT_CI_ARGS"] = f.ppkitRepo, "main", pipelineArgs
	env := f.env(t, vars)
	expressions := strings.NewReplacer("${{ github.event.repository.default_branch }}", "main")
	src := filepath.Join(ws, "src")
	t.Cleanup(func() { os.RemoveAll(StateDir(f.cache, src)) })

	failed := false
	for _, step := range job.Steps {
		name := step.Name.Value
		switch e := step.Exec.(type) {
		case *actionlint.ExecAction:
			uses := e.Uses.Value
			switch {
			case strings.HasPrefix(uses, "actions/checkout@"):
				stgtest.Git(t, ws, "clone", "-q", f.userRepo, src)
			case strings.HasPrefix(uses, "actions/cache@"), strings.HasPrefix(uses, "actions/upload-artifact@"),
				strings.HasPrefix(uses, "mikepenz/action-junit-report@"):
				// They move files between runs; ppkit's cache is the machine's here.
			default:
				t.Fatalf("step %q uses %s, which the test does not know", name, uses)
			}
		case *actionlint.ExecRun:
			if failed && (step.If == nil || step.If.Value != "always()") {
				continue
			}
			script := expressions.Replace(e.Run.Value)
			if strings.Contains(script, "${{") {
				t.Fatalf("step %q: an expression the test does not stand in for:\n%s", name, script)
			}
			out, err := runScript(t, name, ws, script, env)
			if err != nil {
				t.Errorf("step %q failed: %v\n%s", name, err, out)
				failed = true
			}
		}
	}
	if failed {
		return
	}
	checkOutputs(t, filepath.Join(ws, "out"))
	got, err := os.ReadFile(summary)
	if err != nil || !strings.Contains(string(got), "multicast") {
		t.Errorf("the step summary does not show the run (%v):\n%s", err, got)
	}
}
