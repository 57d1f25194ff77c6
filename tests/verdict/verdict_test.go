package verdict

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/harness"
)

// TestEveryReasonKindHasAVerdict reads the Reason* constants of this package's source: each
// one must say who broke.
func TestEveryReasonKindHasAVerdict(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "result.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ast.Inspect(f, func(node ast.Node) bool {
		vs, ok := node.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || !strings.HasPrefix(vs.Names[0].Name, "Reason") || len(vs.Values) != 1 {
			return true
		}
		lit, ok := vs.Values[0].(*ast.BasicLit)
		if !ok {
			return true
		}
		kind, _ := strconv.Unquote(lit.Value)
		n++
		if _, ok := reasonVerdicts[kind]; !ok {
			t.Errorf("%s = %q has no verdict in reasonVerdicts", vs.Names[0].Name, kind)
		}
		return true
	})
	if n != len(reasonVerdicts) || n < 10 {
		t.Errorf("%d Reason constants, %d verdicts", n, len(reasonVerdicts))
	}
}

// TestJudgeVerdicts drives every kind of evidence through Judge: the verdict and the exit code
// follow from it (the report's TestJUnitElementOfEachVerdict: and the JUnit element from the
// verdict).
func TestJudgeVerdicts(t *testing.T) {
	hung := &harness.GuestError{Title: "guest hung: run \"echo end\"", Err: errors.New("no answer (VM state: paused)")}
	died := &harness.GuestError{Title: "run \"cat\": guest stopped (QEMU exited)", Err: errors.New("EOF")}
	clean := Evidence{Traffic: Traffic{Bytes: 1}, After: Snapshot{Interface: InterfaceCounters{RxPackets: 10}},
		Trace: &TraceFigures{Pools: []*PoolFigures{{Pool: "p", Holds: 1, Releases: 1, Destroyed: true}}}, Model: &ModelReport{}}
	with := func(f func(*Evidence)) Evidence { e := clean; f(&e); return e }
	for _, tc := range []struct {
		name    string
		ev      Evidence
		verdict Verdict
		kinds   []string
		code    int
	}{
		{"clean", clean, VerdictPass, nil, 0},
		{"model violation", with(func(e *Evidence) {
			e.Model = &ModelReport{Violations: []ModelViolation{{Name: "double-return", Detail: "pfn 7"}}}
		}), VerdictFail, []string{ReasonViolation}, 1},
		{"console report", with(func(e *Evidence) { e.Console = []ConsoleReport{{Title: "WARNING: in page_pool_release"}} }),
			VerdictFail, []string{ReasonConsole}, 1},
		{"kernel hung mid-procedure", Evidence{KernelError: hung}, VerdictFail, []string{ReasonKernelFailure}, 1},
		{"kernel died, console says why", Evidence{KernelError: died, Console: []ConsoleReport{{Title: "Kernel panic - not syncing"}}},
			VerdictFail, []string{ReasonKernelFailure, ReasonConsole}, 1},
		{"boot failure", Evidence{BootError: died}, VerdictFail, []string{ReasonBoot}, 1},
		{"infrastructure", Evidence{InfraError: errors.New("ssh: no route")}, VerdictInfra, []string{ReasonInfra}, 2},
		{"model error", with(func(e *Evidence) { e.Model, e.ModelErr = nil, errors.New("model broke") }),
			VerdictInfra, []string{ReasonModelError}, 2},
		{"kernel wins over infrastructure", Evidence{InfraError: errors.New("scp"), Console: []ConsoleReport{{Title: "BUG: Bad page state"}}},
			VerdictFail, []string{ReasonInfra, ReasonConsole}, 1},
		{"interrupted", Evidence{Stopped: errors.New("interrupted"), InfraError: errors.New("ctx")}, VerdictInterrupted,
			[]string{ReasonInterrupted}, 130},
		{"procedure error", Evidence{Procedure: errors.New("setup: iperf")}, VerdictFail, []string{ReasonProcedure}, 1},
		{"no traffic", with(func(e *Evidence) { e.After = Snapshot{} }), VerdictFail, []string{ReasonNoTraffic}, 1},
		{"lost events", with(func(e *Evidence) { e.Overrun = 3 }), VerdictFail, []string{ReasonTraceLost}, 1},
		{"leak", with(func(e *Evidence) {
			e.Trace = &TraceFigures{Pools: []*PoolFigures{{Pool: "p", Holds: 2, Destroyed: true, FinalInflight: 1}}}
		}), VerdictFail, []string{ReasonInflight}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := &Result{Procedure: "tcp", Kernel: "series /s"}
			Judge(res, tc.ev)
			var kinds []string
			for _, r := range res.Reasons {
				kinds = append(kinds, r.Kind)
			}
			if res.Verdict != tc.verdict || res.Pass != (tc.verdict == VerdictPass) || strings.Join(kinds, ",") != strings.Join(tc.kinds, ",") {
				t.Fatalf("verdict %s pass %v reasons %v; want %s %v", res.Verdict, res.Pass, res.Reasons, tc.verdict, tc.kinds)
			}
			if c := res.Verdict.ExitCode(); c != tc.code {
				t.Errorf("exit code %d, want %d", c, tc.code)
			}
		})
	}
}
