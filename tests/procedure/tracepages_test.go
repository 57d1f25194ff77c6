package procedure

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The copier's last words say what it sent per CPU; the collector finds them among its other
// output.
func TestSentLines(t *testing.T) {
	out := "tracepages: copying 2 CPUs\ntracepages: /sys/kernel/tracing/per_cpu/cpu1/trace_pipe_raw bytes=8192\n" +
		"tracepages: /sys/kernel/tracing/per_cpu/cpu0/trace_pipe_raw bytes=40960\n"
	m := sentRE.FindAllStringSubmatch(out, -1)
	if len(m) != 2 || m[0][1] != "1" || m[0][2] != "8192" || m[1][1] != "0" || m[1][2] != "40960" {
		t.Fatalf("%q", m)
	}
}

// copyRange keeps exactly the range asked for, linked or copied.
func TestCopyRange(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "port")
	os.WriteFile(src, []byte(strings.Repeat("a", 100)+strings.Repeat("b", 50)), 0o644)
	for _, tc := range []struct {
		off, n int64
		want   string
	}{{0, 150, strings.Repeat("a", 100) + strings.Repeat("b", 50)}, {100, 50, strings.Repeat("b", 50)}, {0, 100, strings.Repeat("a", 100)}} {
		dst := filepath.Join(dir, "cpu0.raw")
		if err := copyRange(src, dst, tc.off, tc.n); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(dst); string(got) != tc.want {
			t.Errorf("copyRange(%d, %d): %d bytes", tc.off, tc.n, len(got))
		}
	}
}
