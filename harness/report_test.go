package harness

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite the TITLE: lines of testdata/console/*.log from the parser")

// Golden console logs: each file holds its expected report titles as "TITLE: ..." lines, then a
// line "---", then the console exactly as captured. A file with no TITLE line is a log that must
// produce no report at all.
func TestParseReportsGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/console/*.log")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden console logs: %v", err)
	}
	clean := 0
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			head, console, ok := bytes.Cut(data, []byte("---\n"))
			if !ok {
				t.Fatalf("%s: no --- line between the titles and the console", file)
			}
			var want []string
			for _, l := range strings.Split(string(head), "\n") {
				if title, ok := strings.CutPrefix(l, "TITLE: "); ok {
					want = append(want, title)
				}
			}
			reports := ParseReports(console)
			var got []string
			for _, r := range reports {
				got = append(got, r.Title)
				first := strings.SplitN(r.Text, "\n", 2)[0]
				if !strings.Contains(string(console), first) {
					t.Errorf("report text does not come from the console: %q", first)
				}
				if strings.Count(r.Text, "\n") > maxReportLines {
					t.Errorf("report %q has %d lines", r.Title, strings.Count(r.Text, "\n"))
				}
			}
			if *updateGolden {
				var b strings.Builder
				for _, g := range got {
					b.WriteString("TITLE: " + g + "\n")
				}
				b.WriteString("---\n")
				b.Write(console)
				if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("titles:\n got %q\nwant %q", got, want)
			}
			if len(want) == 0 {
				clean++
			}
		})
	}
	if !*updateGolden && clean == 0 {
		t.Error("no clean console log among the goldens: the parser's false positives are untested")
	}
}

// The report text keeps the whole report: header, registers, call trace, end marker.
func TestParseReportsPanicText(t *testing.T) {
	console := "[    1.0] ppkit: guest ready\n" +
		"[    5.1] sysrq: Trigger a crash\n" +
		"[    5.1] Kernel panic - not syncing: sysrq triggered crash\n" +
		"[    5.1] CPU: 0 PID: 77 Comm: sh Not tainted 5.10.223 #1\n" +
		"[    5.1] Call trace:\n" +
		"[    5.1]  dump_backtrace+0x0/0x1c0\n" +
		"[    5.1]  panic+0x16c/0x334\n" +
		"[    5.1]  sysrq_handle_crash+0x24/0x28\n" +
		"[    5.1] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---\n" +
		"after\n"
	r := ParseReports([]byte(console))
	if len(r) != 1 {
		t.Fatalf("got %d reports, want 1: %+v", len(r), r)
	}
	if r[0].Title != "Kernel panic - not syncing: sysrq triggered crash" {
		t.Errorf("title %q", r[0].Title)
	}
	if !strings.HasPrefix(r[0].Text, "[    5.1] Kernel panic") || !strings.HasSuffix(r[0].Text, "crash ]---\n") {
		t.Errorf("text:\n%s", r[0].Text)
	}
	if r[0].StartLine != 2 || r[0].EndLine != 9 {
		t.Errorf("lines %d..%d, want 2..9", r[0].StartLine, r[0].EndLine)
	}
}

func FuzzParseReports(f *testing.F) {
	files, _ := filepath.Glob("testdata/console/*.log")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("------------[ cut here ]------------\nWARNING: CPU: 0 PID: 1 at a.c:1 f+0x0/0x4\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := strings.Count(string(data), "\n") + 1
		prevEnd := 0
		for _, r := range ParseReports(data) {
			if r.Title == "" {
				t.Errorf("empty title for report at line %d", r.StartLine)
			}
			if r.StartLine < prevEnd || r.EndLine <= r.StartLine || r.EndLine > lines {
				t.Errorf("bad line range %d..%d (previous end %d, %d lines)", r.StartLine, r.EndLine, prevEnd, lines)
			}
			prevEnd = r.EndLine
		}
	})
}

// TestParseReportsLockdepHeaders covers lockdep reports no golden holds yet; the frame is the
// first one past lockdep's own.
func TestParseReportsLockdepHeaders(t *testing.T) {
	trace := "[    1.0] Call trace:\n[    1.0]  dump_backtrace+0x0/0x2d4\n[    1.0]  lock_acquire+0x368/0x4f0\n[    1.0]  mvneta_stop+0x94/0xcc\n"
	for _, tc := range []struct{ header, want string }{
		{"[ BUG: Invalid wait context ]", "BUG: Invalid wait context in mvneta_stop"},
		{"WARNING: bad unlock balance detected!", "WARNING: bad unlock balance detected in mvneta_stop"},
		{"WARNING: held lock freed!", "WARNING: held lock freed in mvneta_stop"},
		{"WARNING: lock held when returning to user space!", "WARNING: lock held when returning to user space in mvneta_stop"},
	} {
		console := "[    1.0] =============================\n[    1.0] " + tc.header + "\n" + trace
		r := ParseReports([]byte(console))
		if len(r) != 1 || r[0].Title != tc.want {
			t.Errorf("%s: got %+v, want one report %q", tc.header, r, tc.want)
		}
	}
}
