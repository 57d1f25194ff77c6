package procedure

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ppkit/ppkit/gomodel/rawtrace"
	"github.com/ppkit/ppkit/internal/testfile"
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

// The drain watch reads each page once as the port files grow and says "drained" only when
// every pool seen has a page_pool_release at inflight 0 as its newest event: on a real
// capture (its pools destroyed and drained at the end), not with half its pages, and yes with
// all; a page QEMU is still writing is left for the next call.
func TestDrainWatchFollowsGrowingPorts(t *testing.T) {
	const capture = "../../gomodel/rawtrace/testdata/multicast"
	fm, err := rawtrace.ReadFormatsTar(bytes.NewReader(testfile.Gunzip(t, capture+"/events.tar.gz")), "events/")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tp := &tracePorts{fm: fm}
	var cpus [][]byte
	for i := 0; i < 2; i++ {
		cpus = append(cpus, testfile.Gunzip(t, fmt.Sprintf("%s/cpu%d.raw.gz", capture, i)))
		p := TracePort{Name: fmt.Sprintf("ppkit.trace.cpu%d", i), File: filepath.Join(dir, fmt.Sprintf("port%d", i))}
		os.WriteFile(p.File, []byte("earlier run"), 0o644) // the watch starts where the copy started
		tp.ports, tp.start = append(tp.ports, p), append(tp.start, int64(len("earlier run")))
	}
	w := newDrainWatch(tp)
	page := fm.Page.PageSize()
	grow := func(upto func(n int) int) {
		for i, data := range cpus {
			f, err := os.OpenFile(tp.ports[i].File, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("earlier run"))
			f.Write(data[:upto(len(data))])
			f.Close()
		}
	}
	grow(func(n int) int { return n / page / 2 * page })
	if ok, err := w.drained(); ok || err != nil {
		t.Fatalf("half the pages: drained %v, %v", ok, err)
	}
	grow(func(n int) int { return n - page/2 }) // the last page half written
	if _, err := w.drained(); err != nil {
		t.Fatalf("the last page half written: %v", err)
	}
	for i, data := range cpus {
		if got := w.off[i] - tp.start[i]; got != int64(len(data)-page) {
			t.Errorf("cpu%d: read %d bytes of %d with the last page half written, want all whole pages", i, got, len(data))
		}
	}
	// In the background (as while the traffic runs), the rest arrives; the wait then finds it
	// read already. stop is safe twice (the procedure's exit stops it again).
	stop := w.follow()
	grow(func(n int) int { return n })
	for i, data := range cpus {
		for deadline := time.Now().Add(10 * time.Second); w.offset(i)-tp.start[i] != int64(len(data)); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("cpu%d: the background reader read %d of %d bytes", i, w.offset(i)-tp.start[i], len(data))
			}
		}
	}
	stop()
	stop()
	if ok, err := w.drained(); !ok || err != nil {
		t.Fatalf("all pages: drained %v, %v (%d pools seen)", ok, err, len(w.newest))
	}
}

// portBoard is a board with trace ports, for helpersOn (nothing else of Board is called).
type portBoard struct {
	Board
	ports []TracePort
}

func (b portBoard) TracePorts() []TracePort { return b.ports }

// TestHelpersOnTracedOnly: a traced run on a board with trace ports also needs tracepages; an
// untraced one (ppkit bench trace's second half) and a board without ports do not, unless the
// procedure needs it itself (forward moves its probes' pages with it), and then once.
func TestHelpersOnTracedOnly(t *testing.T) {
	withPorts := portBoard{ports: []TracePort{{}}}
	for _, tc := range []struct {
		proc   string
		b      Board
		traced bool
		want   string
	}{
		{"splice", withPorts, true, "splicerecv tracepages"},
		{"splice", withPorts, false, "splicerecv"},
		{"splice", portBoard{}, true, "splicerecv"},
		{"forward", withPorts, true, "pktlisten tracepages"},
		{"forward", portBoard{}, true, "pktlisten tracepages"},
		{"forward", withPorts, false, "pktlisten tracepages"},
	} {
		if got := strings.Join(helpersOn(tc.b, Procedures()[tc.proc], tc.traced), " "); got != tc.want {
			t.Errorf("%s, ports %d, traced %t: %q, want %q", tc.proc, len(tc.b.(portBoard).ports), tc.traced, got, tc.want)
		}
	}
}

// The collector reads the trace formats as one head prints them on the real guest: every file
// comes back whole, and rawtrace reads them as a formats directory.
func TestSplitHeadOutputOfTheGuest(t *testing.T) {
	out, err := os.ReadFile("testdata/formats/head-5.10-series.txt")
	if err != nil {
		t.Fatal(err)
	}
	files, err := splitHeadOutput(string(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 12 {
		t.Errorf("%d files, want 12", len(files))
	}
	want := "# compressed entry header\n\ttype_len    :    5 bits\n\ttime_delta  :   27 bits\n\tarray       :   32 bits\n\n" +
		"\tpadding     : type == 29\n\ttime_extend : type == 30\n\ttime_stamp : type == 31\n\tdata max type_len  == 28\n"
	if got := string(files["events/header_event"]); got != want {
		t.Errorf("header_event %q, want %q", got, want)
	}
	events := fstest.MapFS{}
	for name, data := range files {
		events[strings.TrimPrefix(name, "events/")] = &fstest.MapFile{Data: data}
	}
	fm, err := rawtrace.ReadFormats(events)
	if err != nil {
		t.Fatal(err)
	}
	for id, name := range map[int]string{247: "page_pool_skb_return", 155: "mm_page_free", 5: "print", 291: "page_pool_put_page"} {
		if f := fm.ByID(id); f == nil || f.Name != name {
			t.Errorf("event %d: %+v, want %s", id, f, name)
		}
	}
}

func TestSplitHeadOutputErrors(t *testing.T) {
	for _, out := range []string{
		"",
		"per_cpu/cpu0\n==> a <==\nx\n", // the CPU line left in
		"==> a <==\nx\n\n==> b\n",      // a header cut off
		"==> a <=\nx\n",                // not head's header
	} {
		if files, err := splitHeadOutput(out); err == nil {
			t.Errorf("%q: no error, files %q", out, files)
		}
	}
}

// renderHead prints files as `head -n N` prints them (GNU coreutils and busybox alike).
func renderHead(names []string, data []string) string {
	var b strings.Builder
	for i, name := range names {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "==> %s <==\n%s", name, data[i])
	}
	return b.String()
}

// Whatever head prints, the split never panics, and files without head's own header line in
// them come back as they were.
func FuzzSplitHeadOutput(f *testing.F) {
	f.Add("events/header_page", "a\nb\n", "x/y/format", "no newline")
	f.Add("a", "", "b", "\n\n")
	f.Fuzz(func(t *testing.T, n1, d1, n2, d2 string) {
		splitHeadOutput(n1 + d1 + n2 + d2)
		for _, s := range []string{n1, n2} {
			if s == "" || strings.ContainsAny(s, "\n") || strings.Contains(s, " <==") {
				return
			}
		}
		if n1 == n2 || strings.Contains(d1, "\n==> ") || strings.Contains(d2, "\n==> ") || strings.HasPrefix(d1, "==> ") || strings.HasPrefix(d2, "==> ") {
			return
		}
		files, err := splitHeadOutput(renderHead([]string{n1, n2}, []string{d1, d2}))
		if err != nil {
			t.Fatal(err)
		}
		if len(files) != 2 || string(files[n1]) != d1 || string(files[n2]) != d2 {
			t.Fatalf("got %q", files)
		}
	})
}

// shBoard runs board commands in the host's shell: enough for boardFiles over SSH, whose
// output is all in the command's standard output.
type shBoard struct {
	Board
	mangle func([]byte) []byte // changes the output, as a broken board would
}

func (b shBoard) Run(ctx context.Context, cmd string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "sh", "-c", cmd).Output()
	if b.mangle != nil {
		out = b.mangle(out)
	}
	return out, err
}

// boardFiles brings back exactly the files the board wrote, binary and empty ones too, named
// by globs; a board whose sizes and bytes disagree is an error.
func TestBoardFiles(t *testing.T) {
	dir := t.TempDir()
	bin := []byte{0, '\n', 0xff, '\n', '\n', 'x'}
	script := fmt.Sprintf("set -e; cd %s; printf 'entries: 3\\noverrun: 0\\n' > stats; printf '\\000\\n\\377\\n\\nx' > cpu0.raw; : > cpu1.raw", dir)
	fsys, err := boardFiles(context.Background(), shBoard{}, dir, "stats cpu*.raw", script)
	if err != nil {
		t.Fatal(err)
	}
	if len(fsys) != 3 || string(fsys["stats"].Data) != "entries: 3\noverrun: 0\n" || !bytes.Equal(fsys["cpu0.raw"].Data, bin) || len(fsys["cpu1.raw"].Data) != 0 {
		for name, f := range fsys {
			t.Errorf("got %s: %q", name, f.Data)
		}
	}
	for name, mangle := range map[string]func([]byte) []byte{
		"a byte short":   func(b []byte) []byte { return b[:len(b)-1] },
		"a byte more":    func(b []byte) []byte { return append(b, 'y') },
		"no count":       func(b []byte) []byte { return nil },
		"a size missing": func(b []byte) []byte { return []byte("3\n22 stats\n") },
	} {
		if _, err := boardFiles(context.Background(), shBoard{mangle: mangle}, dir, "stats cpu*.raw", "true"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := boardFiles(context.Background(), shBoard{}, dir, "stats nosuchfile", "true"); err == nil {
		t.Error("a missing file: no error")
	}
}
