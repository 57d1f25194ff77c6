//go:build e2e

package procedure

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/gomodel/rawtrace"
	"github.com/ppkit/ppkit/internal/cachedir"
)

// Every default procedure, traced once and its buffer saved both ways (the kernel's own text
// and its pages), gives the same verdict and the same figures through the text parser and
// through rawtrace: the raw transport changes nothing ppkit claims. Each runs 1 s (UDP at
// 2 Mbit/s) into a 64 MiB ring per CPU, which must lose nothing for the comparison to hold.
func TestRawEqualsTextEveryProcedure(t *testing.T) {
	requireBoard(t)
	series, err := filepath.Abs("../../patches")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range DefaultProcedures {
		t.Run(name, func(t *testing.T) {
			src := captureRaw(t, Kernel{Series: series}, name, 65536, Options{Duration: time.Second, RateMbit: 2})
			opts := gomodel.TraceOptions{Procedure: name}
			fm, err := rawtrace.ReadFormats(os.DirFS(filepath.Join(src, "events")))
			if err != nil {
				t.Fatal(err)
			}
			var streams []io.Reader
			for i := 0; ; i++ {
				f, err := os.Open(filepath.Join(src, fmt.Sprintf("cpu%d.raw", i)))
				if err != nil {
					break
				}
				defer f.Close()
				streams = append(streams, f)
			}
			if len(streams) != BoardCPUs {
				t.Fatalf("%d CPUs' pages, want %d", len(streams), BoardCPUs)
			}
			raw, st, rerr := rawtrace.Replay(streams, fm, opts)
			tf, err := os.Open(filepath.Join(src, "trace.txt"))
			if err != nil {
				t.Fatal(err)
			}
			defer tf.Close()
			text, terr := gomodel.ReadTrace(tf, opts)
			if fmt.Sprint(rerr) != fmt.Sprint(terr) || raw == nil || text == nil {
				t.Fatalf("raw: %v; text: %v", rerr, terr)
			}
			if st.Lost != 0 || st.LostUnknown != 0 {
				t.Fatalf("the ring lost events (%+v): the two cannot be compared", st)
			}
			if raw.Figures != text.Figures || raw.Events != text.Events || raw.Ignored != text.Ignored ||
				raw.Passed != text.Passed || raw.DMASyncs != text.DMASyncs || raw.Puts != text.Puts {
				t.Errorf("raw: passed=%v %d events, %d ignored, %+v\ntext: passed=%v %d events, %d ignored, %+v",
					raw.Passed, raw.Events, raw.Ignored, raw.Figures, text.Passed, text.Events, text.Ignored, text.Figures)
			}
			if len(raw.Violations) != len(text.Violations) {
				t.Fatalf("violations: raw %v, text %v", raw.Violations, text.Violations)
			}
			for i, v := range raw.Violations {
				if w := text.Violations[i]; v.Name != w.Name || v.Page != w.Page {
					t.Errorf("violation %d: raw %s %s, text %s %s", i, v.Name, v.Page, w.Name, w.Page)
				}
			}
			if len(raw.Pools) != len(text.Pools) {
				t.Fatalf("pools: raw %d, text %d", len(raw.Pools), len(text.Pools))
			}
			for i, p := range raw.Pools {
				q := text.Pools[i]
				if p.Pool != q.Pool || p.Holds != q.Holds || p.Releases != q.Releases || p.SKBReturns != q.SKBReturns ||
					p.Destroyed != q.Destroyed || p.Held != q.Held || p.FreedWhileHeld != q.FreedWhileHeld {
					brief := func(p gomodel.PoolTrace) string {
						return fmt.Sprintf("%s holds %d releases %d skb returns %d destroyed %v held %d freed while held %d",
							p.Pool, p.Holds, p.Releases, p.SKBReturns, p.Destroyed, p.Held, p.FreedWhileHeld)
					}
					t.Errorf("pool %d:\n raw %s\ntext %s", i, brief(p), brief(q))
				}
			}
			if raw.Events == 0 || len(raw.Pools) == 0 {
				t.Fatalf("the capture holds no pool events: %d events, %d pools", raw.Events, len(raw.Pools))
			}
			t.Logf("%d pages, %d events, %d pools, passed=%v, figures %+v", st.Pages, st.Events, len(raw.Pools), raw.Passed, raw.Figures)
		})
	}
}

// captureRaw boots k, runs procedure procName with tracing on and nothing consuming the ring
// buffer (bufferKB a CPU), and after the pools drained and tracing stopped saves the same
// buffer twice: the text of tracefs's trace file (its iterator does not consume) and the pages
// of every per_cpu/cpuN/trace_pipe_raw (reading consumes), with per_cpu/cpuN/stats and the
// format files of the traced systems. It returns the host directory holding trace.txt,
// cpuN.raw, cpuN.stats and events/.
func captureRaw(t *testing.T, k Kernel, procName string, bufferKB int, opts Options) string {
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
	if pt, ok := tb.(PeerTestbed); ok {
		env.Peer = pt.Peer()
	}
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
	run("begin marker", c.markCmd("begin"))
	if err := p.Run(ctx, env); err != nil {
		t.Fatal(err)
	}
	run("end marker", c.markCmd("end"))
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
cd /tmp; tar czf rawtrace.tgz rawtrace`, tracefs, guestDir, gomodel.TraceEventsSystem))
	tgz := filepath.Join(dir, "rawtrace.tgz")
	if err := b.CopyFrom(ctx, "/tmp/rawtrace.tgz", tgz); err != nil {
		t.Fatal(err)
	}
	if o, err := exec.Command("tar", "xzf", tgz, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, o)
	}
	return filepath.Join(dir, "rawtrace")
}
