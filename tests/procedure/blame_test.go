package procedure

import (
	"errors"
	"fmt"
	"testing"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/tests/verdict"
)

// Who broke, for each kind of error a run can end with (verdict.Judge then names the verdict).
func TestBlame(t *testing.T) {
	guestErr := &harness.GuestError{Title: "guest hung: run \"x\""}
	missing := &harness.CommandError{Command: "ethtool -K eth2 gro off", Status: 127, Stderr: []byte("sh: ethtool: not found")}
	notExec := &harness.CommandError{Command: "/tmp/ppkit/bin/zcrecv 5003", Status: 126}
	failed := &harness.CommandError{Command: "iptables -A FORWARD", Status: 1}
	for _, tc := range []struct {
		name                     string
		in                       verdict.Evidence
		kernel, infra, procedure bool
	}{
		{"a board command the kernel's crash ended", verdict.Evidence{InfraError: fmt.Errorf("stop tracing: %w", guestErr)}, true, false, false},
		{"a procedure step the kernel's crash ended", verdict.Evidence{Procedure: fmt.Errorf("run: %w", guestErr)}, true, false, false},
		{"a host tool missing", verdict.Evidence{Procedure: fmt.Errorf("run: %w", &HostToolError{Tool: "iperf"})}, false, true, false},
		{"a guest program missing (127)", verdict.Evidence{Procedure: fmt.Errorf("setup: %w", missing)}, false, true, false},
		{"a guest program not executable (126)", verdict.Evidence{Procedure: fmt.Errorf("setup: %w", notExec)}, false, true, false},
		{"a guest command that failed on a kernel that answered", verdict.Evidence{Procedure: fmt.Errorf("setup: %w", failed)}, false, false, true},
		{"an infrastructure error stays one", verdict.Evidence{InfraError: errors.New("copy helper")}, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := blame(tc.in)
			if (got.KernelError != nil) != tc.kernel || (got.InfraError != nil) != tc.infra || (got.Procedure != nil) != tc.procedure {
				t.Errorf("kernel %v, infra %v, procedure %v; want %v %v %v", got.KernelError, got.InfraError, got.Procedure, tc.kernel, tc.infra, tc.procedure)
			}
		})
	}
}
