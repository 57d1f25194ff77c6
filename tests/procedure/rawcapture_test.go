//go:build e2e && rawcapture

package procedure

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCaptureRawTrace boots the series kernel, runs one procedure with tracing on but nothing
// consuming the ring buffer, then saves the same buffer twice: the text of tracefs's trace
// file (the iterator does not consume) and the binary pages of every per_cpu/cpuN/
// trace_pipe_raw (which does), with the per-CPU stats and the format files of the traced
// systems and ppkit's own events (gomodel.TraceEventsSystem). gomodel/rawtrace's golden tests replay
// both and require the same events and the same report. "multicast-overrun" runs multicast
// into a ring of a few pages, so that the kernel overwrites events and flags the pages that
// follow (RB_MISSED_EVENTS). Each procedure runs for 1 s at 2 Mbit/s with a 64 MiB ring per CPU.
//
//	flock /tmp/ppkit-heavy.lock go test -tags 'e2e rawcapture' -run TestCaptureRawTrace ./tests/procedure \
//	    -rawtrace.out ../../gomodel/rawtrace/testdata -rawtrace.procedures multicast,multicast-overrun
var (
	rawOut   = flag.String("rawtrace.out", "", "directory the captures are written to (a subdirectory per capture)")
	rawProcs = flag.String("rawtrace.procedures", "multicast", "comma-separated procedures to capture (and multicast-overrun)")
)

func TestCaptureRawTrace(t *testing.T) {
	requireBoard(t)
	if *rawOut == "" {
		t.Fatal("-rawtrace.out DIR is required: where the captures go")
	}
	series, err := filepath.Abs("../../patches")
	if err != nil {
		t.Fatal(err)
	}
	type capture struct {
		name     string
		proc     string
		bufferKB int
		opts     Options
	}
	var caps []capture
	for _, p := range strings.Split(*rawProcs, ",") {
		if p == "multicast-overrun" {
			caps = append(caps, capture{p, "multicast", 64, Options{Duration: time.Second, RateMbit: 2}})
			continue
		}
		if _, ok := Procedures()[p]; !ok {
			t.Fatalf("no procedure %q", p)
		}
		caps = append(caps, capture{p, p, 65536, Options{Duration: time.Second, RateMbit: 2}})
	}
	for _, c := range caps {
		t.Run(c.name, func(t *testing.T) {
			writeGolden(t, captureRaw(t, Kernel{Series: series}, c.proc, c.bufferKB, c.opts), filepath.Join(*rawOut, c.name))
		})
	}
}

// writeGolden compacts a capture into out: the pages and the text gzipped, the formats as one
// tar.gz.
func writeGolden(t *testing.T, src, out string) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(src, "*"))
	for _, f := range files {
		st, _ := os.Stat(f)
		if st.IsDir() {
			continue
		}
		t.Logf("%s: %d bytes", filepath.Base(f), st.Size())
	}
	// Compact: the pages and the text gzipped, the formats as one tar.gz.
	script := fmt.Sprintf(`set -e; cd %[1]s; for f in *.raw trace.txt; do gzip -9 -n -c $f > %[2]s/$f.gz; done
cp *.stats %[2]s/; tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - events | gzip -9 -n > %[2]s/events.tar.gz`, src, out)
	if o, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, o)
	}
}
