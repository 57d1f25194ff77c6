package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Bad command lines of kernel, image, boot and bench fail with exit 2 and one line naming the fix,
// before anything is built or booted.
func TestHarnessCommandUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"kernel"}, "usage: ppkit kernel build"},
		{[]string{"kernel", "make"}, "usage: ppkit kernel build"},
		{[]string{"kernel", "build", "--baseline", "--series", "patches"}, "exclude each other"},
		{[]string{"kernel", "build", "--upto", "2", "--baseline"}, "drop --baseline"},
		{[]string{"kernel", "build", "--series", "/nonexistent"}, "no stg series in /nonexistent"},
		{[]string{"kernel", "build", "extra"}, "unexpected argument"},
		{[]string{"image"}, "usage: ppkit image build"},
		{[]string{"image", "build", "x"}, "unexpected argument"},
		{[]string{"boot", "--run", "true", "--shell"}, "exclude each other"},
		{[]string{"boot", "-m", "4096"}, "32-bit"},
		{[]string{"boot", "cat", "/proc/version"}, "quote the command"},
		{[]string{"bench"}, "usage: ppkit bench"},
		{[]string{"bench", "boot", "-n", "0"}, "-n must be at least 1"},
		{[]string{"bench", "throughput", "--series", "../../patches"}, "--compare: give the kernel to compare with"},
		{[]string{"bench", "throughput", "--series", "../../patches", "--compare", "../../patches"}, "that is the kernel under test"},
		{[]string{"bench", "throughput", "--series", "../../patches", "--compare", "baseline", "--rounds", "0"}, "--rounds 0: want at least 1"},
		{[]string{"bench", "throughput", "--series", "../../patches", "--compare", "baseline", "nosuch"}, "nosuch"},
		{[]string{"bench", "trace", "--series", "/nonexistent"}, "no stg series in /nonexistent"},
		{[]string{"bench", "trace", "--series", "../../patches", "--rounds", "0"}, "--rounds 0: want at least 1"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb)
			if code != 2 {
				t.Errorf("exit code %d, want 2 (stderr %q)", code, errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Errorf("stderr %q does not say %q", errb.String(), tc.want)
			}
			if out.Len() != 0 {
				t.Errorf("stdout %q, want nothing", out.String())
			}
		})
	}
}

func TestNICFlagRepeats(t *testing.T) {
	var n nicFlag
	for _, m := range []string{"mvneta", "virtio-net-pci,romfile="} {
		if err := n.Set(m); err != nil {
			t.Fatal(err)
		}
	}
	if len(n) != 2 || n[0].Model != "mvneta" || n[1].Model != "virtio-net-pci,romfile=" {
		t.Errorf("nics = %+v", n)
	}
	if err := n.Set(" "); err == nil {
		t.Error("an empty model was accepted")
	}
}
