package ci

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/rhysd/actionlint"
	"go.yaml.in/yaml/v4"
)

// need fails (CI=true) or skips the test when a prerequisite is missing.
func need(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required: %v", what, err)
	}
	t.Skipf("%s missing: %v", what, err)
}

// shellcheck is the path of shellcheck (installed by harness/install-deps.sh base).
func shellcheck(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("shellcheck")
	need(t, "shellcheck (harness/install-deps.sh base)", err)
	return path
}

// runShellcheck lints a bash script given as text; name labels the findings.
func runShellcheck(t *testing.T, name, script string) {
	t.Helper()
	cmd := exec.Command(shellcheck(t), "--shell=bash", "--severity=info", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("shellcheck %s: %v\n%s\nscript:\n%s", name, err, out, script)
	}
}

// TestGitHubWorkflowLints runs actionlint (workflow syntax, expressions, action inputs, and
// shellcheck on every run: script) over ci/github-actions.yml.
func TestGitHubWorkflowLints(t *testing.T) {
	var out bytes.Buffer
	l, err := actionlint.NewLinter(&out, &actionlint.LinterOptions{Shellcheck: shellcheck(t), Oneline: true})
	if err != nil {
		t.Fatal(err)
	}
	errs, err := l.LintFile("github-actions.yml", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range errs {
		t.Errorf("actionlint: %s:%d:%d: %s [%s]", e.Filepath, e.Line, e.Column, e.Message, e.Kind)
	}
}

// gitlabJob is the part of a GitLab CI job the pipeline uses. Unknown keys fail the decoding,
// so a misspelt keyword (GitLab would take it for a job) is caught.
type gitlabJob struct {
	Image        string            `yaml:"image"`
	Tags         []string          `yaml:"tags"`
	Timeout      string            `yaml:"timeout"`
	Rules        []map[string]any  `yaml:"rules"`
	Variables    map[string]string `yaml:"variables"`
	Cache        []gitlabCache     `yaml:"cache"`
	Script       []string          `yaml:"script"`
	AfterScript  []string          `yaml:"after_script"`
	Artifacts    gitlabArtifacts   `yaml:"artifacts"`
	BeforeScript []string          `yaml:"before_script"`
}

type gitlabCache struct {
	Key   string   `yaml:"key"`
	Paths []string `yaml:"paths"`
	When  string   `yaml:"when"`
}

type gitlabArtifacts struct {
	When     string            `yaml:"when"`
	Name     string            `yaml:"name"`
	Paths    []string          `yaml:"paths"`
	Reports  map[string]string `yaml:"reports"`
	ExpireIn string            `yaml:"expire_in"`
}

// loadGitLabJob decodes ci/gitlab-ci.yml strictly and returns its one job.
func loadGitLabJob(t *testing.T) (string, gitlabJob) {
	t.Helper()
	data, err := os.ReadFile("gitlab-ci.yml")
	if err != nil {
		t.Fatal(err)
	}
	var jobs map[string]gitlabJob
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&jobs); err != nil {
		t.Fatalf("gitlab-ci.yml: %v", err)
	}
	if len(jobs) != 1 {
		names := make([]string, 0, len(jobs))
		for n := range jobs {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Fatalf("gitlab-ci.yml: want one job, have %v", names)
	}
	for name, job := range jobs {
		return name, job
	}
	panic("unreachable")
}

// gitlabScript is what GitLab's shell executor runs for a script list: each entry in one bash
// with errexit and pipefail.
func gitlabScript(lines []string) string {
	return "set -eo pipefail\n" + strings.Join(lines, "\n") + "\n"
}

// TestGitLabPipeline checks ci/gitlab-ci.yml: a strict decoding of its job, what the README
// promises of it (every branch, a privileged-runner tag, the cache under the project, JUnit and
// the report as artifacts even on failure), and shellcheck over its scripts.
func TestGitLabPipeline(t *testing.T) {
	name, job := loadGitLabJob(t)
	if name != "ppkit-ci" {
		t.Errorf("job %q, want ppkit-ci", name)
	}
	if len(job.Script) == 0 {
		t.Fatal("the job has no script")
	}
	if len(job.Rules) != 1 || job.Rules[0]["if"] != "$CI_COMMIT_BRANCH" {
		t.Errorf("rules %v: want one rule, if: $CI_COMMIT_BRANCH (every pushed branch)", job.Rules)
	}
	if len(job.Tags) == 0 {
		t.Error("no runner tag: the job needs a privileged runner")
	}
	if !strings.HasPrefix(job.Variables["XDG_CACHE_HOME"], "$CI_PROJECT_DIR/") {
		t.Errorf("XDG_CACHE_HOME %q: GitLab caches only paths inside the project", job.Variables["XDG_CACHE_HOME"])
	}
	if len(job.Cache) != 1 || len(job.Cache[0].Paths) != 1 || job.Cache[0].Paths[0] != ".cache/ppkit/" || job.Cache[0].When != "always" {
		t.Errorf("cache %+v: want .cache/ppkit/, kept always", job.Cache)
	}
	if job.Artifacts.When != "always" || job.Artifacts.Reports["junit"] != "out/junit.xml" {
		t.Errorf("artifacts %+v: want out/junit.xml as the JUnit report, kept always", job.Artifacts)
	}
	if job.Variables["GIT_DEPTH"] != "0" {
		t.Errorf("GIT_DEPTH %q: base..ref needs the whole history", job.Variables["GIT_DEPTH"])
	}
	var vars strings.Builder
	keys := make([]string, 0, len(job.Variables))
	for k := range job.Variables {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vars.WriteString("export " + k + "=" + expandingQuote(job.Variables[k]) + "\n")
	}
	runShellcheck(t, "gitlab-ci.yml script", vars.String()+gitlabScript(job.Script))
	runShellcheck(t, "gitlab-ci.yml after_script", gitlabScript(job.AfterScript))
}

// TestScriptsShellcheck lints the post-receive hook and the project's own CI entry point.
func TestScriptsShellcheck(t *testing.T) {
	for _, path := range []string{"post-receive", filepath.Join("..", ".ci", "run")} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		runShellcheck(t, path, string(data))
	}
}

// expandingQuote double-quotes a GitLab variable value: GitLab expands $VARIABLES in it, as the
// shell does inside double quotes.
func expandingQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`").Replace(s) + `"`
}
