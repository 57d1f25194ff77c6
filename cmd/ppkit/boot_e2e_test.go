//go:build e2e

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ppkit boot --run prints the guest command's output and exits with its status.
func TestBootRunE2E(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-system-aarch64 not found (run harness/install-deps.sh)")
		}
		t.Skip("qemu-system-aarch64 not found")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	for _, tc := range []struct {
		cmd      string
		wantCode int
		wantOut  string
	}{
		{"cat /proc/version", 0, "Linux version 5.10."},
		{"echo bye; exit 7", 7, "bye"},
	} {
		var out, errb bytes.Buffer
		code := run(ctx, []string{"boot", "--baseline", "--run", tc.cmd}, &out, &errb)
		if code != tc.wantCode || !strings.Contains(out.String(), tc.wantOut) {
			t.Errorf("ppkit boot --run %q: exit %d, stdout %q; want %d and %q\nstderr:\n%s", tc.cmd, code, out.String(), tc.wantCode, tc.wantOut, errb.String())
		}
		if !strings.Contains(errb.String(), "guest ready over SSH after") {
			t.Errorf("boot time not printed:\n%s", errb.String())
		}
	}
}
