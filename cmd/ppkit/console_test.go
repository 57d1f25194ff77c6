package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goldenTitles reads the expected titles of a console golden (its "TITLE: " lines before "---").
func goldenTitles(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	head, _, ok := strings.Cut(string(data), "---\n")
	if !ok {
		t.Fatalf("%s: no --- line", path)
	}
	var titles []string
	for _, l := range strings.Split(head, "\n") {
		if title, ok := strings.CutPrefix(l, "TITLE: "); ok {
			titles = append(titles, title)
		}
	}
	return titles
}

// Every console golden of the report parser, checked as a user would: its titles, in order,
// exit 1 when it holds a report and 0 when it is clean; the same in --json.
func TestConsoleCheckGoldens(t *testing.T) {
	logs, err := filepath.Glob("../../harness/testdata/console/*.log")
	if err != nil || len(logs) < 10 {
		t.Fatalf("console goldens: %v (%d)", err, len(logs))
	}
	clean := 0
	for _, log := range logs {
		t.Run(filepath.Base(log), func(t *testing.T) {
			want := goldenTitles(t, log)
			wantCode := 1
			if len(want) == 0 {
				wantCode = 0
				clean++
			}
			code, out, errOut := runPPKit(t, "console", "check", log)
			if code != wantCode {
				t.Fatalf("exit %d, want %d; stderr %s", code, wantCode, errOut)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				rest, ok := strings.CutPrefix(l, log+":")
				if !ok {
					t.Fatalf("line %q does not name the file", l)
				}
				if rest == " clean" {
					continue
				}
				_, title, ok := strings.Cut(rest, ": ")
				if !ok {
					t.Fatalf("line %q: want FILE:START-END: TITLE", l)
				}
				got = append(got, title)
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("titles\n got %q\nwant %q", got, want)
			}
			code, out, _ = runPPKit(t, "console", "check", "--json", log)
			var files []consoleFile
			if err := json.Unmarshal([]byte(out), &files); err != nil || len(files) != 1 || code != wantCode {
				t.Fatalf("--json: exit %d, %v, %q", code, err, out)
			}
			got = got[:0]
			for _, r := range files[0].Reports {
				got = append(got, r.Title)
				if r.StartLine >= r.EndLine || r.Text == "" {
					t.Errorf("--json report %q: lines %d-%d, %d bytes of text", r.Title, r.StartLine, r.EndLine, len(r.Text))
				}
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("--json titles\n got %q\nwant %q", got, want)
			}
		})
	}
	if clean == 0 {
		t.Error("no clean golden: the exit-0 case went untested")
	}
}

func TestConsoleCheckExitCodes(t *testing.T) {
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean.log")
	os.WriteFile(clean, []byte("[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x411fd070]\n"), 0o644)
	bug := "../../harness/testdata/console/real-lkdtm-kernel-bug.log"
	missing := filepath.Join(dir, "missing.log")
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"clean", []string{clean}, 0},
		{"a report", []string{clean, bug}, 1},
		{"unreadable", []string{clean, missing}, 2},
		{"a directory", []string{dir}, 2},
		{"a report wins over an unreadable log", []string{missing, bug}, 1},
		{"no file", nil, 2},
		{"no subcommand", []string{}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"console", "check"}, tc.args...)
			if tc.name == "no subcommand" {
				args = []string{"console"}
			}
			code, out, errOut := runPPKit(t, args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout %s\nstderr %s", code, tc.code, out, errOut)
			}
			if tc.code == 2 && strings.TrimSpace(errOut) == "" {
				t.Error("exit 2 without a line saying why")
			}
		})
	}
}

// `dmesg | ppkit console check -`
func TestConsoleCheckStdin(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../../harness/testdata/console/real-panic-sysrq-c.log")
	if err != nil {
		t.Fatal(err)
	}
	go func() { w.Write(data); w.Close() }()
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old }()
	code, out, _ := runPPKit(t, "console", "check", "-")
	if code != 1 || !strings.HasPrefix(out, "-:") || !strings.Contains(out, "Kernel panic - not syncing: sysrq triggered crash") {
		t.Errorf("exit %d, output %q", code, out)
	}
}
