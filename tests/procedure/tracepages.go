package procedure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/gomodel/rawtrace"
	"github.com/ppkit/ppkit/tests/verdict"
)

// TracePort is one CPU's way out of the board for its ring-buffer pages: the port's name in
// the guest and the host file that receives what the guest writes on it.
type TracePort struct{ Name, File string }

// TracePortBoard is a Board whose CPUs' ring buffers leave it as raw pages, a port a CPU
// (the QEMU board's virtio-serial ports): the guest copies pages and does nothing else for
// the trace, and the host decodes them (package rawtrace). A Board without ports (a real
// board over SSH) sends the trace as text through trace_pipe.
type TracePortBoard interface {
	Board
	TracePorts() []TracePort
}

// TracePortNames are the guest's port names of the raw trace of n CPUs, in CPU order.
func TracePortNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s%d", tracePortPrefix, i)
	}
	return names
}

const tracePortPrefix = "ppkit.trace.cpu"

// tracePorts is the raw transport's share of a collector.
type tracePorts struct {
	ports []TracePort
	start []int64 // each port file's size when the copy started
	fm    *rawtrace.Formats
	watch *drainWatch
	stop  func() // ends the watch's reading in the background
}

// rawTraceFormats are the events directories whose formats the host needs to decode the pages
// (glob patterns below tracefs/events): TraceEvents', ftrace's print (trace_marker) and the
// kprobe group's.
func rawTraceFormats() []string {
	var out []string
	for _, e := range append(append([]string{}, TraceEvents...), "ftrace/print", gomodel.KprobeGroup) {
		if strings.Contains(e, "/") {
			out = append(out, e)
		} else {
			out = append(out, e+"/*")
		}
	}
	return out
}

// startPorts starts the guest's page copier (tracepages) on every CPU's trace_pipe_raw, each
// to its port, once the events' formats are on the host.
func (c *collector) startPorts(ctx context.Context, ports []TracePort) error {
	b := c.env.Board
	helper, ok := c.env.Helpers["tracepages"]
	if !ok {
		return errors.New("the tracepages helper is not on the board (helpersOn names it for a board with trace ports)")
	}
	// The format files report size 0, so tar would store them empty: copy them out first.
	script := fmt.Sprintf(`set -e; cd %[1]s; D=%[2]s/formats; rm -rf $D; mkdir -p $D
cat events/header_page > $D/header_page; cat events/header_event > $D/header_event
for e in %[3]s; do [ -f $e/format ] || continue; n=${e#events/}; mkdir -p $D/$n; cat $e/format > $D/$n/format; done
echo cpus=$(ls -d per_cpu/cpu* | wc -l)
for n in /sys/class/virtio-ports/*/name; do [ -f "$n" ] || continue; d=${n%%/name}; echo "port $(cat $n) /dev/${d##*/}"; done
cd $D; tar cf %[2]s/formats.tar .`, tracefs, shellQuote(c.env.runDir()), "events/"+strings.Join(rawTraceFormats(), " events/"))
	out, err := b.Run(ctx, script)
	if err != nil {
		return fmt.Errorf("read the trace formats: %w", err)
	}
	devs := map[string]string{}
	cpus := -1
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "cpus="); ok {
			cpus, _ = strconv.Atoi(v)
		}
		if f := strings.Fields(l); len(f) == 3 && f[0] == "port" {
			devs[f[1]] = f[2]
		}
	}
	if cpus != len(ports) {
		return fmt.Errorf("the board has %d CPUs and %d trace ports: boot it with a port a CPU (TracePortNames)", cpus, len(ports))
	}
	tarPath := filepath.Join(c.env.Dir, "formats.tar")
	if err := b.CopyFrom(ctx, c.env.runDir()+"/formats.tar", tarPath); err != nil {
		return fmt.Errorf("copy the trace formats: %w", err)
	}
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	c.ports.fm, err = rawtrace.ReadFormatsTar(f, "")
	f.Close()
	if err != nil {
		return fmt.Errorf("the board's trace formats: %w", err)
	}
	args := []string{shellQuote(helper)}
	c.ports.ports, c.ports.start = ports, make([]int64, len(ports))
	for i, p := range ports {
		dev, ok := devs[p.Name]
		if !ok {
			return fmt.Errorf("the board has no virtio port %q (CONFIG_VIRTIO_CONSOLE, and QEMU's virtserialport)", p.Name)
		}
		if st, err := os.Stat(p.File); err == nil {
			c.ports.start[i] = st.Size()
		}
		args = append(args, fmt.Sprintf("%s/per_cpu/cpu%d/trace_pipe_raw", tracefs, i), shellQuote(dev))
	}
	r, err := startGuest(ctx, c.env, "tracepages", strings.Join(args, " "))
	if err != nil {
		return err
	}
	c.reader = r
	c.ports.watch = newDrainWatch(&c.ports)
	c.ports.stop = c.ports.watch.follow()
	return c.filterReader(ctx)
}

// drainWatch follows the port files as they grow, a whole page at a time (each page decodes
// on its own), and keeps each pool's newest event: a pool has drained when that is a
// page_pool_release at inflight 0 (5.10 traces page_pool_release only from
// page_pool_destroy() and its retries; a new pool at the same address starts with a hold).
// Only the wait for the drain uses it, reading each page once; the verdict comes from one
// replay of all the pages.
type drainWatch struct {
	mu     sync.Mutex
	t      *tracePorts
	off    []int64
	d      *rawtrace.Decoder
	newest map[uint64]poolNewest
	err    error // the first error of a read in the background
}

type poolNewest struct {
	ts      uint64
	drained bool
}

func newDrainWatch(t *tracePorts) *drainWatch {
	return &drainWatch{t: t, off: append([]int64(nil), t.start...), d: rawtrace.NewDecoder(t.fm), newest: map[uint64]poolNewest{}}
}

// follow reads the pages every 200 ms while the traffic runs, so that the wait for the drain
// reads only the last ones; stop ends it.
func (w *drainWatch) follow() (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if _, err := w.drained(); err != nil {
					return // drained returns it again when the wait asks
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); <-exited }) }
}

// offset is how far the watch has read CPU i's port file.
func (w *drainWatch) offset(i int) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.off[i]
}

// drained reads the pages that arrived since the last call and says whether every pool seen
// so far has drained.
func (w *drainWatch) drained() (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return false, w.err
	}
	ok, err := w.read()
	w.err = err
	return ok, err
}

func (w *drainWatch) read() (bool, error) {
	page := int64(w.t.fm.Page.PageSize())
	var rec rawtrace.Record
	var ev gomodel.Event
	for i, p := range w.t.ports {
		st, err := os.Stat(p.File)
		if err != nil {
			return false, err
		}
		end := w.t.start[i] + (st.Size()-w.t.start[i])/page*page // QEMU may be writing the next page
		if end <= w.off[i] {
			continue
		}
		f, err := os.Open(p.File)
		if err != nil {
			return false, err
		}
		r := rawtrace.NewCPUReader(i, io.NewSectionReader(f, w.off[i], end-w.off[i]), &w.t.fm.Page)
		for {
			if err = r.Next(&rec); err != nil {
				break
			}
			if err = w.d.Decode(&rec, &ev); err != nil {
				break
			}
			switch ev.Kind {
			case gomodel.EventStateHold, gomodel.EventStateRelease, gomodel.EventSkbReturn, gomodel.EventPoolRelease, gomodel.EventUpdateNid:
				if ev.TS >= w.newest[ev.Pool].ts {
					w.newest[ev.Pool] = poolNewest{ts: ev.TS, drained: ev.Kind == gomodel.EventPoolRelease && ev.Inflight == 0}
				}
			}
		}
		f.Close()
		if err != io.EOF {
			return false, err
		}
		w.off[i] = end
	}
	for _, p := range w.newest {
		if !p.drained {
			return false, nil
		}
	}
	return len(w.newest) > 0, nil
}

var sentRE = regexp.MustCompile(`(?m)^tracepages: \S+/cpu(\d+)/trace_pipe_raw bytes=(\d+)$`)

// finishPorts stops the copier (it moves what is left and says how much it wrote to each
// port), waits until QEMU has written all of it into the port files and links the pages
// into the artifact directory as cpuN.raw.
func (c *collector) finishPorts(ctx context.Context) (*verdict.RawTrace, error) {
	outPath, err := c.reader.stop(ctx, c.env)
	if err != nil {
		return nil, fmt.Errorf("stop the trace copier: %w", err)
	}
	out, err := os.ReadFile(outPath)
	if err != nil {
		return nil, err
	}
	t := &c.ports
	sent := make([]int64, len(t.ports))
	for i := range sent {
		sent[i] = -1
	}
	for _, m := range sentRE.FindAllStringSubmatch(string(out), -1) {
		cpu, _ := strconv.Atoi(m[1])
		if cpu < len(sent) {
			sent[cpu], _ = strconv.ParseInt(m[2], 10, 64)
		}
	}
	for i, n := range sent {
		if n < 0 {
			return nil, fmt.Errorf("the trace copier did not say what it sent for cpu%d: %q", i, strings.TrimSpace(string(out)))
		}
	}
	deadline := time.Now().Add(TraceDrainTimeout)
	for i, p := range t.ports {
		for {
			st, err := os.Stat(p.File)
			if err != nil {
				return nil, err
			}
			if got := st.Size() - t.start[i]; got >= sent[i] {
				if got > sent[i] {
					return nil, fmt.Errorf("port %s holds %d bytes, the copier sent %d", p.Name, got, sent[i])
				}
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("port %s: %d of %d bytes arrived in %s", p.Name, st.Size()-t.start[i], sent[i], TraceDrainTimeout)
			}
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return nil, err
			}
		}
	}
	raw := &verdict.RawTrace{Formats: t.fm}
	for i, p := range t.ports {
		dst := filepath.Join(c.env.Dir, fmt.Sprintf("cpu%d.raw", i))
		if err := copyRange(p.File, dst, t.start[i], sent[i]); err != nil {
			return nil, fmt.Errorf("keep the pages of cpu%d: %w", i, err)
		}
		raw.CPUs = append(raw.CPUs, dst)
	}
	return raw, nil
}

// copyRange copies n bytes of src from off into a new file dst: a hard link when that is the
// whole file (the port file belongs to the VM's directory, which goes with the VM).
func copyRange(src, dst string, off, n int64) error {
	os.Remove(dst)
	if st, err := os.Stat(src); err == nil && off == 0 && st.Size() == n && os.Link(src, dst) == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, io.NewSectionReader(in, off, n)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// salvage keeps the whole pages that reached the host when the copier could not be stopped
// in order (the board died, or hung): the events before a crash usually name the culprit.
func (c *collector) salvage() (*verdict.RawTrace, error) {
	t := &c.ports
	raw := &verdict.RawTrace{Formats: t.fm}
	page := int64(t.fm.Page.PageSize())
	for i, p := range t.ports {
		st, err := os.Stat(p.File)
		if err != nil {
			return nil, err
		}
		dst := filepath.Join(c.env.Dir, fmt.Sprintf("cpu%d.raw", i))
		if err := copyRange(p.File, dst, t.start[i], (st.Size()-t.start[i])/page*page); err != nil {
			return nil, err
		}
		raw.CPUs = append(raw.CPUs, dst)
	}
	return raw, nil
}

// modelInput is the trace the model judges, as pages or as text; ok is false when nothing
// was traced.
func (c *collector) modelInput(in verdict.ModelInput) (verdict.ModelInput, bool) {
	switch {
	case c.raw != nil:
		in.Raw = c.raw
		return in, true
	case c.ports.fm != nil:
		raw, err := c.salvage()
		if err != nil {
			return in, false
		}
		c.raw, in.Raw = raw, raw
		return in, true
	case c.trace != "":
		if st, err := os.Stat(c.trace); err == nil && st.Size() > 0 {
			in.TracePath = c.trace
			return in, true
		}
	}
	return in, false
}

// textTrace returns the trace as text for the report's page histories, writing it from the
// pages first when the trace came raw ("" when there is none).
func (c *collector) textTrace(ctx context.Context) (string, error) {
	if c.raw == nil || c.trace != "" {
		return c.trace, nil
	}
	c.trace = filepath.Join(c.env.Dir, "trace.txt")
	if err := c.raw.WriteText(ctx, c.trace); err != nil {
		c.trace = ""
		return "", err
	}
	return c.trace, nil
}

// traceSize is how many bytes of trace arrived, pages or text.
func (c *collector) traceSize() int64 {
	files := []string{c.trace}
	if c.raw != nil {
		files = c.raw.CPUs
	}
	var n int64
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			n += st.Size()
		}
	}
	return n
}

// files are the trace's artifacts in the procedure's directory, by name.
func (c *collector) files() []string {
	var out []string
	if c.trace != "" {
		if _, err := os.Stat(c.trace); err == nil {
			out = append(out, filepath.Base(c.trace))
		}
	}
	if c.raw != nil {
		for _, f := range c.raw.CPUs {
			out = append(out, filepath.Base(f))
		}
		out = append(out, "formats.tar")
	}
	return out
}
