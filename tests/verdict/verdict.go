package verdict

import "fmt"

// Verdict is what one procedure's run says, or a whole run's: decided once, from the reasons'
// kinds (VerdictOf), and used by the table, JSON, JUnit (<failure> vs <error>), the exit codes
// of ppkit test and ppkit ci, and the report.
type Verdict string

const (
	// VerdictPass: every check held.
	VerdictPass Verdict = "pass"
	// VerdictFail: the kernel under test is at fault (a violation, a console report, a leak, a
	// kernel that crashed or hung while booting or during the procedure, no traffic).
	VerdictFail Verdict = "fail"
	// VerdictInfra: the run could not be judged (QEMU, SSH, the host, the model failed).
	VerdictInfra Verdict = "infra-error"
	// VerdictInterrupted: the run was told to stop before it was judged.
	VerdictInterrupted Verdict = "interrupted"
)

// reasonVerdicts says who broke for each reason kind. Every kind must be listed (a test checks
// it): an unlisted kind would be judged by accident.
var reasonVerdicts = map[string]Verdict{
	ReasonViolation:     VerdictFail,
	ReasonConsole:       VerdictFail,
	ReasonInflight:      VerdictFail,
	ReasonNoTraffic:     VerdictFail,
	ReasonTraceLost:     VerdictFail,
	ReasonBoot:          VerdictFail,
	ReasonKernelFailure: VerdictFail,
	ReasonProcedure:     VerdictFail,
	ReasonInfra:         VerdictInfra,
	ReasonModelError:    VerdictInfra,
	ReasonInterrupted:   VerdictInterrupted,
}

// rank orders verdicts by how much they say: a kernel failure wins over an infrastructure
// error (the kernel failed whatever else went wrong), which wins over an interrupt.
var rank = map[Verdict]int{VerdictPass: 0, VerdictInterrupted: 1, VerdictInfra: 2, VerdictFail: 3}

// VerdictOf is the verdict of a list of reasons: the strongest of their kinds. Judge sets
// Result.Verdict with it; nothing else decides a verdict..
func VerdictOf(reasons []Reason) Verdict {
	v := VerdictPass
	for _, r := range reasons {
		rv, ok := reasonVerdicts[r.Kind]
		if !ok {
			panic(fmt.Sprintf("verdict: reason kind %q has no verdict", r.Kind))
		}
		if rank[rv] > rank[v] {
			v = rv
		}
	}
	return v
}

// Worst is the verdict of several results.
func Worst(results []*Result) Verdict {
	v := VerdictPass
	for _, r := range results {
		if rank[r.Verdict] > rank[v] {
			v = r.Verdict
		}
	}
	return v
}

// ExitCode is the exit status a command reports for a verdict: 0 pass, 1 the kernel failed,
// 2 the run could not be judged, 130 interrupted (as a shell reports SIGINT).
func (v Verdict) ExitCode() int {
	switch v {
	case VerdictPass:
		return 0
	case VerdictFail:
		return 1
	case VerdictInterrupted:
		return 130
	}
	return 2
}
