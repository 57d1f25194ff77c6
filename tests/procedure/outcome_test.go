package procedure

import (
	"errors"
	"testing"

	"github.com/ppkit/ppkit/tests/verdict"
)

// An untraced run that measured its traffic says so; one that also failed says how.
func TestOutcomeOfUntracedRuns(t *testing.T) {
	measured := &verdict.Result{}
	verdict.Judge(measured, verdict.Evidence{InfraError: errUntraced})
	if got := outcome(measured); got != "measured, untraced" {
		t.Errorf("untraced run: %q", got)
	}
	failed := &verdict.Result{}
	verdict.Judge(failed, verdict.Evidence{InfraError: errUntraced, Procedure: errors.New("run: iperf exited 1")})
	if got := outcome(failed); got == "measured, untraced" {
		t.Errorf("untraced run whose procedure failed: %q", got)
	}
}
