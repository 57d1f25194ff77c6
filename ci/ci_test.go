package ci

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/tests/report"
	"github.com/ppkit/ppkit/tests/verdict"
)

func result(proc string, f verdict.Figures) *verdict.Result {
	return &verdict.Result{Procedure: proc, Kernel: "series /s", Pass: true, Verdict: verdict.VerdictPass, Figures: f}
}

// figs: 10000 packets at bps, with slow-path, SKB-return and release counts.
func figs(bps float64, slow, skbRet, rel int64) verdict.Figures {
	return verdict.Figures{Packets: 10000, BitsPerSecond: bps, SlowPathAllocs: slow, SlowPathPer1000: float64(slow) / 10,
		SKBReturns: skbRet, Releases: rel}
}

// The comparison itself is verdict.CompareFigures (tests/verdict/compare_test.go); ci words it.
func TestWorseText(t *testing.T) {
	prev := []*verdict.Result{result("tcp", figs(900e6, 0, 0, 0))}
	cur := []*verdict.Result{result("tcp", figs(600e6, 5, 0, 30))}
	got := map[string]string{}
	for _, l := range verdict.CompareFigures(prev, cur, 0.2) {
		got[l.Figure] = worseText(l)
	}
	want := map[string]string{"throughput_bps": "33.3% worse: regression", "slow_path_per_1000": "was 0",
		"skb_returns_per_1000": "was 0", "releases_per_1000": "was 0: regression"}
	for fig, w := range want {
		if got[fig] != w {
			t.Errorf("%s: %q, want %q", fig, got[fig], w)
		}
	}
}

func TestClassifyTests(t *testing.T) {
	pass := &verdict.Result{Procedure: "multicast", Pass: true, Verdict: verdict.VerdictPass}
	failed := func(proc string, kinds ...string) *verdict.Result {
		r := &verdict.Result{Procedure: proc}
		for _, k := range kinds {
			r.Reasons = append(r.Reasons, verdict.Reason{Kind: k, Detail: "x"})
		}
		r.Verdict = verdict.VerdictOf(r.Reasons)
		return r
	}
	for _, tc := range []struct {
		name    string
		results []*verdict.Result
		outcome string
	}{
		{"all pass", []*verdict.Result{pass}, "ok"},
		{"model violation", []*verdict.Result{pass, failed("tcp", verdict.ReasonViolation)}, VerdictFail},
		{"inflight leak", []*verdict.Result{failed("tcp", verdict.ReasonInflight)}, VerdictFail},
		{"no traffic", []*verdict.Result{failed("tcp", verdict.ReasonNoTraffic)}, VerdictFail},
		{"console report", []*verdict.Result{failed("copy", verdict.ReasonConsole)}, VerdictFail},
		{"harness broke", []*verdict.Result{failed("tcp", verdict.ReasonInfra)}, VerdictInfra},
		{"model error only", []*verdict.Result{failed("tcp", verdict.ReasonModelError)}, VerdictInfra},
		{"kernel panicked at boot", []*verdict.Result{failed("tcp", verdict.ReasonBoot)}, VerdictFail},
		{"kernel died during the procedure", []*verdict.Result{failed("tcp", verdict.ReasonKernelFailure)}, VerdictFail},
		{"kernel verdict wins over infra", []*verdict.Result{failed("multicast", verdict.ReasonInfra), failed("tcp", verdict.ReasonViolation)}, VerdictFail},
		{"infra and model error", []*verdict.Result{failed("tcp", verdict.ReasonInfra, verdict.ReasonModelError)}, VerdictInfra},
		{"nothing ran", nil, VerdictInfra},
		{"cancelled before launch", []*verdict.Result{pass, failed("tcp", verdict.ReasonInfra)}, VerdictInfra},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outcome, detail := classifyTests(tc.results)
			if outcome != tc.outcome {
				t.Errorf("got %s (%s), want %s", outcome, detail, tc.outcome)
			}
			verdict := outcome
			if verdict == "ok" {
				verdict = VerdictPass
			}
			if want := map[string]int{"ok": 0, VerdictFail: 1, VerdictInfra: 2}[tc.outcome]; exitCode(verdict) != want {
				t.Errorf("exit code of %s: %d, want %d", outcome, exitCode(verdict), want)
			}
		})
	}
}

// A stored reference, a run that regressed against it, and one that did not: the regressed run
// fails and is not stored; the other passes and becomes the new reference.
func TestCompareStage(t *testing.T) {
	state := t.TempDir()
	ref, base := "refs/heads/topic", "refs/heads/master"
	stored := &RunResult{Ref: base, Commit: "1111111111111111", Verdict: VerdictPass,
		Tests: &verdict.Summary{Pass: true, Verdict: verdict.VerdictPass, Results: []*verdict.Result{result("multicast", figs(900e6, 10, 9000, 50))}}}
	if _, err := store(state, stored); err != nil {
		t.Fatal(err)
	}
	newRun := func(base string, f verdict.Figures) *run {
		return &run{o: Options{Threshold: DefaultThreshold}, state: state, res: &RunResult{Ref: ref, Base: base,
			Commit: "2222222222222222", Tests: &verdict.Summary{Pass: true, Verdict: verdict.VerdictPass, Results: []*verdict.Result{result("multicast", f)}}}}
	}

	r := newRun(base, figs(900e6, 300, 9000, 50)) // slow path 1 → 30 per 1000
	r.compare()
	if r.res.Verdict != VerdictFail || r.res.Stage != StageCompare || r.res.Comparison.Regressions != 1 || r.res.Stored != "" {
		t.Fatalf("regressed run: verdict %s stage %s %+v stored %q", r.res.Verdict, r.res.Stage, r.res.Comparison, r.res.Stored)
	}
	if !strings.Contains(r.res.Message, "slow_path_per_1000 1 → 30") || !strings.Contains(r.res.Message, "refs/heads/master@111111111111") {
		t.Errorf("message %q", r.res.Message)
	}
	if got, _ := loadStored(state, ref); got != nil {
		t.Fatal("a regressed run was stored")
	}

	r = newRun(base, figs(950e6, 10, 9000, 50))
	r.compare()
	if r.res.Verdict != VerdictPass || r.res.Stored != storedPath(state, ref) || r.res.Comparison.Against != base {
		t.Fatalf("good run: verdict %s stored %q against %q", r.res.Verdict, r.res.Stored, r.res.Comparison.Against)
	}
	// Without --base the ref's own last passing run is the reference.
	r = newRun("", figs(500e6, 10, 9000, 50))
	r.compare()
	if r.res.Verdict != VerdictFail || r.res.Comparison.Against != ref {
		t.Fatalf("against own ref: verdict %s against %q", r.res.Verdict, r.res.Comparison.Against)
	}
	// A base with no stored result falls back to the ref's own.
	r = newRun("refs/heads/never-run", figs(950e6, 10, 9000, 50))
	r.compare()
	if r.res.Verdict != VerdictPass || r.res.Comparison.Against != ref {
		t.Fatalf("fallback: verdict %s against %q", r.res.Verdict, r.res.Comparison.Against)
	}
	// A remote-tracking name of the base finds the branch's stored result.
	r = newRun("refs/remotes/origin/master", figs(950e6, 300, 9000, 50))
	r.compare()
	if r.res.Verdict != VerdictFail || r.res.Comparison.Against != "refs/remotes/origin/master" || r.res.Comparison.AgainstCommit != stored.Commit {
		t.Fatalf("remote-tracking base: verdict %s %+v", r.res.Verdict, r.res.Comparison)
	}
	// First run of a repository: nothing to compare, the run becomes the reference.
	r = newRun("", figs(1, 1, 1, 1))
	r.state = t.TempDir()
	r.compare()
	if r.res.Verdict != VerdictPass || r.res.Comparison.Against != "" || !strings.Contains(r.res.Comparison.Note, "becomes the reference") {
		t.Fatalf("first run: %+v", r.res.Comparison)
	}
}

// A result stored by an earlier ppkit (its comparison lines without "ratio", a tests summary
// whose --compare lines read baseline/series) is still a reference: results stored in a CI
// cache outlive ppkit upgrades.
func TestStoredResultOfEarlierVersion(t *testing.T) {
	state := t.TempDir()
	old := `{"repo": "/srv/git/linux.git", "ref": "refs/heads/master", "commit": "1111111111111111", "verdict": "pass",
 "exit_code": 0, "stages": [{"name": "compare", "outcome": "ok"}],
 "tests": {"results": [{"procedure": "multicast", "kernel": "series /s", "figures": {"packets": 10000,
   "bits_per_second": 900000000, "slow_path_allocs": 100, "slow_path_per_1000": 10, "skb_returns": 9000,
   "releases": 50, "holds": 120}, "pass": true, "verdict": "pass"}],
   "comparison": [{"procedure": "multicast", "figure": "packets", "baseline": 1, "series": 2, "ratio": 2}],
   "pass": true, "verdict": "pass"},
 "comparison": {"threshold": 0.2, "lines": [{"procedure": "multicast", "figure": "throughput_bps", "previous": 1,
   "current": 1, "worse": 0, "regression": false}], "regressions": 0}}`
	path := storedPath(state, "refs/heads/master")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &run{o: Options{Threshold: DefaultThreshold}, state: state, res: &RunResult{Ref: "refs/heads/topic", Base: "refs/heads/master",
		Commit: "2222222222222222", Tests: &verdict.Summary{Pass: true, Verdict: verdict.VerdictPass,
			Results: []*verdict.Result{result("multicast", figs(900e6, 300, 9000, 50))}}}}
	r.compare()
	if r.res.Comparison.Against != "refs/heads/master" || r.res.Comparison.Regressions != 1 || r.res.Verdict != VerdictFail {
		t.Fatalf("against the earlier version's stored result: verdict %s %+v", r.res.Verdict, r.res.Comparison)
	}
}

// The outputs of a failed comparison: summary table, JUnit failure per regressed procedure.
func TestOutputsOfARegression(t *testing.T) {
	res := &RunResult{Ref: "refs/heads/topic", Commit: "2222222222222222", Verdict: VerdictFail, ExitCode: 1,
		Stage: StageCompare, Message: "1 figures regressed",
		Stages: []StageResult{{StageCheckout, "ok", ""}, {StageSeries, "ok", "4 patches (patches)"}, {StageCheck, "ok", ""},
			{StageTest, "ok", "all 2 procedures pass"}, {StageCompare, VerdictFail, "1 figures regressed"}},
		Tests: &verdict.Summary{Results: []*verdict.Result{result("multicast", figs(900e6, 300, 9000, 50)), result("tcp", figs(900e6, 10, 9000, 50))}},
		Comparison: &Comparison{Against: "refs/heads/master", AgainstCommit: "1111111111111111", Threshold: 0.2,
			Lines: verdict.CompareFigures([]*verdict.Result{result("multicast", figs(900e6, 10, 9000, 50)), result("tcp", figs(900e6, 10, 9000, 50))},
				[]*verdict.Result{result("multicast", figs(900e6, 300, 9000, 50)), result("tcp", figs(900e6, 10, 9000, 50))}, 0.2)}}
	var md bytes.Buffer
	if err := WriteSummary(&md, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# ppkit ci: refs/heads/topic @ 222222222222 — FAIL (exit 1)", "| compare | **FAIL** | 1 figures regressed |",
		"| multicast | slow_path_per_1000 | 1 | 30 | **2900.0% worse: regression** |", "| tcp | throughput_bps | 900000000 | 900000000 | unchanged |"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, md.String())
		}
	}
	var x bytes.Buffer
	if err := WriteJUnit(&x, res); err != nil {
		t.Fatal(err)
	}
	var doc report.JUnitSuites
	if err := xml.Unmarshal(x.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, s := range doc.Suites {
		for _, c := range s.Cases {
			if c.Failure != nil {
				failed = append(failed, s.Name+"/"+c.Name)
			}
		}
	}
	want := []string{"ppkit ci refs/heads/topic/compare", "ppkit ci figures against refs/heads/master/multicast"}
	if strings.Join(failed, ",") != strings.Join(want, ",") || doc.Failures != 2 || doc.Tests != 5+2+2 {
		t.Errorf("junit failures %v (total %d of %d):\n%s", failed, doc.Failures, doc.Tests, x.String())
	}
}

func TestReasonSummary(t *testing.T) {
	var reasons []verdict.Reason
	reasons = append(reasons, verdict.Reason{Kind: verdict.ReasonInflight, Detail: "pool p still had 3 pages inflight"})
	for i := 0; i < 5000; i++ {
		reasons = append(reasons, verdict.Reason{Kind: verdict.ReasonViolation, Detail: fmt.Sprintf("dma-mapped-page-freed: trace line %d: %s", i, strings.Repeat("x", 300))})
	}
	got := reasonSummary(reasons)
	if !strings.HasPrefix(got, "inflight-leak: pool p still had 3 pages inflight; model-violation ×5000 (first: dma-mapped-page-freed: trace line 0: xxx") || len(got) > 400 {
		t.Errorf("reasonSummary = %q (%d bytes)", got, len(got))
	}
}
