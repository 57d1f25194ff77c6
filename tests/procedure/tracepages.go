package procedure

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing/fstest"
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

// OutPortName is the guest's name of the port for bulk output (OutPortBoard).
const OutPortName = "ppkit.out"

// OutPortBoard is a Board with a port for bulk copies off the board, such as forward's probe
// pages: the board's SSH server encrypts on the emulated CPU (about 10 MB/s under TCG); the
// port moves bytes as they are.
type OutPortBoard interface {
	Board
	OutPort() (TracePort, bool)
}

// OutPortTimeout bounds the wait for what the guest wrote on the out port to reach its file.
var OutPortTimeout = 30 * time.Second

// boardFiles runs script (a shell script that fills the board directory dir and does not read
// its standard input), then brings dir's files named by words (shell words, globs among them)
// to the host, whole: over the board's out port when it has one, else over SSH. One cat sends
// them all, one after the other; their names and sizes, printed first, split them again.
func boardFiles(ctx context.Context, b Board, dir, words, script string) (fstest.MapFS, error) {
	var port TracePort
	ob, ok := b.(OutPortBoard)
	if ok {
		port, ok = ob.OutPort()
	}
	send := `cat "$@"`
	var start int64
	if ok {
		if st, err := os.Stat(port.File); err == nil {
			start = st.Size()
		}
		// "read" is the shell's own: no process a port.
		send = fmt.Sprintf(`dev=; for n in /sys/class/virtio-ports/*/name; do read -r name < $n || continue; if [ "$name" = %[1]s ]; then d=${n%%/name}; dev=/dev/${d##*/}; fi; done
if [ -z "$dev" ]; then echo "the board has no virtio port %[1]s" >&2; exit 3; fi
%[2]s > $dev`, port.Name, send)
	}
	out, err := b.Run(ctx, fmt.Sprintf("%s\ncd %s; set -- %s; echo $#; stat -c '%%s %%n' \"$@\"; %s", script, shellQuote(dir), words, send))
	if err != nil {
		return nil, err
	}
	bad := func() error { return fmt.Errorf("the board's file list: %q", out[:min(len(out), 200)]) }
	line, rest, _ := bytes.Cut(out, []byte("\n"))
	count, err := strconv.Atoi(string(line))
	if err != nil || count < 0 {
		return nil, bad()
	}
	names := make([]string, count)
	sizes := make([]int64, count)
	var total int64
	for i := range names {
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		size, name, _ := strings.Cut(string(line), " ")
		n, err := strconv.ParseInt(size, 10, 64)
		if err != nil || n < 0 || name == "" {
			return nil, bad()
		}
		names[i], sizes[i], total = name, n, total+n
	}
	data := rest
	if ok {
		if data, err = readPort(ctx, port, start, total); err != nil {
			return nil, err
		}
	}
	if int64(len(data)) != total {
		return nil, fmt.Errorf("the board sent %d bytes of files, not the %d their sizes add up to", len(data), total)
	}
	fsys := fstest.MapFS{}
	for i, name := range names {
		fsys[name] = &fstest.MapFile{Data: data[:sizes[i]:sizes[i]]}
		data = data[sizes[i]:]
	}
	return fsys, nil
}

// readPort waits until n bytes from start have reached port's file, and returns them.
func readPort(ctx context.Context, port TracePort, start, n int64) ([]byte, error) {
	deadline := time.Now().Add(OutPortTimeout)
	for {
		st, err := os.Stat(port.File)
		if err != nil {
			return nil, err
		}
		if got := st.Size() - start; got >= n {
			if got > n {
				return nil, fmt.Errorf("port %s: %d bytes arrived, the board sent %d", port.Name, got, n)
			}
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("port %s: %d of %d bytes arrived in %s", port.Name, st.Size()-start, n, OutPortTimeout)
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return nil, err
		}
	}
	f, err := os.Open(port.File)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data := make([]byte, n)
	if _, err := f.ReadAt(data, start); err != nil {
		return nil, fmt.Errorf("port %s: %w", port.Name, err)
	}
	return data, nil
}

// tracePorts is the raw transport's share of a collector.
type tracePorts struct {
	ports []TracePort
	start []int64 // each port file's size when the copy started
	fm    *rawtrace.Formats
	watch *drainWatch
	stop  func() // ends the watch's reading in the background
}

// rawTraceFormats are the events directories whose formats the host needs to decode the pages
// (glob patterns below tracefs/events): TraceEvents', ftrace's print (trace_marker) and
// gomodel.TraceEventsSystem's.
func rawTraceFormats() []string {
	var out []string
	for _, e := range append(append([]string{}, TraceEvents...), "ftrace/print", gomodel.TraceEventsSystem) {
		if strings.Contains(e, "/") {
			out = append(out, e)
		} else {
			out = append(out, e+"/*")
		}
	}
	return out
}

// startPorts enables the tracepoints (setup, a shell script), reads the events' formats and
// the board's CPUs and virtio ports in the same command, and starts the guest's page copier
// (tracepages) on every CPU's trace_pipe_raw, each to its port. The formats are kept as
// dir/formats.tar, what `ppkit model check-trace` reads beside the pages.
func (c *collector) startPorts(ctx context.Context, ports []TracePort, setup string) error {
	helper, ok := c.env.Helpers["tracepages"]
	if !ok {
		return errors.New("the tracepages helper is not on the board (helpersOn names it for a board with trace ports)")
	}
	// One head prints every file (each process costs the emulated guest milliseconds; the
	// files' sizes read 0, so tar would store them empty); globs and tests are the shell's own.
	script := setup + fmt.Sprintf(`cd %s; echo per_cpu/cpu*
set -- events/header_page events/header_event
for e in %s; do if [ -f $e/format ]; then set -- "$@" $e/format; fi; done
for n in /sys/class/virtio-ports/*/name; do if [ -f $n ]; then set -- "$@" $n; fi; done
head -n 100000 "$@"`, tracefs, "events/"+strings.Join(rawTraceFormats(), " events/"))
	out, err := c.env.Board.Run(ctx, script)
	if err != nil {
		return fmt.Errorf("enable tracepoints and read the trace formats: %w", err)
	}
	cpuLine, heads, _ := strings.Cut(string(out), "\n")
	files, err := splitHeadOutput(heads)
	if err != nil {
		return fmt.Errorf("the board's trace formats: %w", err)
	}
	events := fstest.MapFS{}
	devs := map[string]string{} // port name → device
	for name, data := range files {
		if rel, ok := strings.CutPrefix(name, "events/"); ok {
			events[rel] = &fstest.MapFile{Data: data}
		} else if dir, ok := strings.CutSuffix(name, "/name"); ok && strings.HasPrefix(name, "/sys/class/virtio-ports/") {
			devs[strings.TrimSpace(string(data))] = "/dev/" + path.Base(dir)
		}
	}
	if err := writeTar(filepath.Join(c.env.Dir, "formats.tar"), events); err != nil {
		return fmt.Errorf("keep the trace formats: %w", err)
	}
	if c.ports.fm, err = rawtrace.ReadFormats(events); err != nil {
		return fmt.Errorf("the board's trace formats: %w", err)
	}
	if cpus := len(strings.Fields(cpuLine)); cpus != len(ports) {
		return fmt.Errorf("the board has %d CPUs (%s) and %d trace ports: boot it with a port a CPU (TracePortNames)", cpus, cpuLine, len(ports))
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
	r, err := startGuestAfter(ctx, c.env, "tracepages", readerFilterScript(), strings.Join(args, " "))
	if err != nil {
		return err
	}
	c.reader = r
	c.ports.watch = newDrainWatch(&c.ports)
	c.ports.stop = c.ports.watch.follow()
	return nil
}

// splitHeadOutput splits what `head -n N FILE...` prints for two files or more into the
// files' contents by name: each file comes after a line "==> NAME <==", every one after the
// first after an empty line too ("\n==> " ends a file, whether or not it ends in a newline).
func splitHeadOutput(out string) (map[string][]byte, error) {
	files := map[string][]byte{}
	for i, part := range strings.Split("\n"+out, "\n==> ") {
		if i == 0 {
			if part != "" {
				return nil, fmt.Errorf("head printed %q before its first file", part)
			}
			continue
		}
		name, data, ok := strings.Cut(part, " <==\n")
		if !ok {
			return nil, fmt.Errorf("head printed a file header without its end: %q", part)
		}
		files[name] = []byte(data)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("head printed no file: %q", out)
	}
	return files, nil
}

// writeTar writes the files of fsys, sorted by name, as a tar of plain files (mode 0644) at
// path, atomically.
func writeTar(path string, fsys fstest.MapFS) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, name := range slices.Sorted(maps.Keys(fsys)) {
		data := fsys[name].Data
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			f.Close()
			return err
		}
		if _, err := tw.Write(data); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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
