//go:build e2e && rawcapture

package procedure

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/internal/cachedir"
)

// TestCaptureRawTrace boots the series kernel, runs one procedure with tracing on but nothing
// consuming the ring buffer, then saves the same buffer twice: the text of tracefs's trace
// file (the iterator does not consume) and the binary pages of every per_cpu/cpuN/
// trace_pipe_raw (which does), with the per-CPU stats and the format files of the traced
// systems and kprobe events (gomodel.KprobeGroup). gomodel/rawtrace's golden tests replay
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
			captureRaw(t, Kernel{Series: series}, c.proc, c.bufferKB, c.opts, filepath.Join(*rawOut, c.name))
		})
	}
}

func captureRaw(t *testing.T, k Kernel, procName string, bufferKB int, opts Options, out string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	l := &recordingLauncher{Launcher: &HarnessLauncher{}}
	defer l.checkGone(t)
	tb, err := l.Launch(ctx, k, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	dir := t.TempDir()
	p := Procedures()[procName]
	env := &Env{Board: tb.Board(), Client: tb.Client(), Options: opts, Dir: dir, Helpers: map[string]string{},
		Log: testLog{t}, background: ctx}
	root, err := cachedir.Root()
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{cfg: Config{CacheRoot: root}, helpers: map[string]map[string]string{}}
	helpers, err := r.helpersFor(ctx, tb.Board().Arch(), p.Helpers())
	if err != nil {
		t.Fatal(err)
	}
	b := env.Board
	run := func(what, cmd string) []byte {
		t.Helper()
		o, err := b.Run(ctx, cmd)
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, o)
		}
		return o
	}
	run("mkdir", "mkdir -p "+shellQuote(env.runDir()+"/bin"))
	for _, name := range p.Helpers() {
		remote := env.runDir() + "/bin/" + name
		if err := b.CopyTo(ctx, helpers[name], remote, 0o755); err != nil {
			t.Fatal(err)
		}
		env.Helpers[name] = remote
	}
	run("link down", "ip link set dev "+shellQuote(b.Interface())+" down")
	run("tracing", tracingSetupScript(TraceBufferKB))
	run("buffer size", fmt.Sprintf("echo %d > %s/buffer_size_kb", bufferKB, tracefs))
	if err := topologyUp(ctx, env); err != nil {
		t.Fatal(err)
	}
	if err := p.Setup(ctx, env); err != nil {
		t.Fatal(err)
	}
	c := &collector{env: env, name: p.Name()}
	if err := c.mark(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx, env); err != nil {
		t.Fatal(err)
	}
	if err := c.mark(ctx, "end"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Collect(ctx, env); err != nil {
		t.Fatal(err)
	}
	run("link down", "ip link set dev "+shellQuote(b.Interface())+" down")
	time.Sleep(PoolDrainTimeout) // the pools' destroy retries run every second
	run("tracing off", "echo 0 > "+tracefs+"/tracing_on")
	// trace first (the iterator leaves the buffer as it is), then the pages (read consumes
	// them); trace_pipe_raw blocks when a CPU's buffer is empty, so each read is cut off. dd,
	// not cat: busybox's cat uses sendfile(), and trace_pipe_raw's splice hands out only full
	// pages (tracing_buffers_splice_read()), so the last, partial page of each CPU would stay.
	const guestDir = "/tmp/rawtrace"
	run("capture", fmt.Sprintf(`set -e; cd %[1]s; D=%[2]s; rm -rf $D; mkdir -p $D/events
cat trace > $D/trace.txt
for c in per_cpu/cpu*; do n=${c#per_cpu/}; cat $c/stats > $D/$n.stats; timeout 5 dd if=$c/trace_pipe_raw of=$D/$n.raw bs=4096 2>/dev/null || true; done
cp events/header_page events/header_event $D/events/
for s in page_pool skb kmem ftrace %[3]s; do for e in events/$s/*/; do [ -f $e/format ] || continue; mkdir -p $D/$e; cat $e/format > $D/$e/format; done; done
cd /tmp; tar czf rawtrace.tgz rawtrace`, tracefs, guestDir, gomodel.KprobeGroup))
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	tgz := filepath.Join(dir, "rawtrace.tgz")
	if err := b.CopyFrom(ctx, "/tmp/rawtrace.tgz", tgz); err != nil {
		t.Fatal(err)
	}
	if o, err := exec.Command("tar", "xzf", tgz, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, o)
	}
	src := filepath.Join(dir, "rawtrace")
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
