package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/stgit"
	"github.com/ppkit/ppkit/tests/procedure"
	"github.com/ppkit/ppkit/tests/verdict"
)

// seriesDir makes a directory that looks like an stg export: a series file naming one patch.
func seriesDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "series"), []byte("# This series applies on GIT commit 0123456789abcdef\nfix\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "fix"), []byte("net: fix\n\nSigned-off-by: A <a@b>\n---\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, stgit.DesignFile), []byte("series\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestParseTestArgsBadSeries: a series file that names a patch that is not there is the user's
// input: one line naming the fix, exit 2, before anything is built.
func TestParseTestArgsBadSeries(t *testing.T) {
	d := seriesDir(t)
	os.WriteFile(filepath.Join(d, "series"), []byte("fix\nmissing-patch\n"), 0o644)
	var stderr strings.Builder
	_, err := parseTestArgs([]string{"--series", d}, &stderr)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "names patch missing-patch") || !strings.Contains(err.Error(), "ppkit series export") {
		t.Fatalf("err %v; want exit 2 and one line naming the missing patch and the fix", err)
	}
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		panic(err)
	}
	return a
}

func TestParseTestArgs(t *testing.T) {
	series, other := seriesDir(t), seriesDir(t)
	for _, tc := range []struct {
		args     []string
		wantErr  string // substring of a usage error; empty for success
		check    func(*testOptions) bool
		describe string
	}{
		{args: []string{"--series", series}, check: func(o *testOptions) bool {
			return len(o.procedures) == 0 && o.kernel.Series == series && o.options == procedure.Options{Duration: 30 * time.Second, RateMbit: 1000}
		}, describe: "defaults"},
		{args: []string{"multicast", "tcp", "--series", series, "--time", "10", "--rate", "500M", "--json", "--junit", "j.xml", "--report", "r"},
			check: func(o *testOptions) bool {
				return strings.Join(o.procedures, ",") == "multicast,tcp" && o.options.Duration == 10*time.Second &&
					o.options.RateMbit == 500 && o.json && o.junit == abs("j.xml") && o.report == abs("r")
			}, describe: "everything (paths resolved against the working directory)"},
		{args: []string{"--baseline", "copy", "--time", "1m"}, check: func(o *testOptions) bool {
			return o.kernel.Baseline && o.options.Duration == time.Minute
		}, describe: "baseline"},
		{args: []string{"--series", series, "--compare", "baseline"}, check: func(o *testOptions) bool {
			return len(o.compare) == 1 && o.compare[0].Baseline
		}, describe: "compare"},
		{args: []string{"--series", series, "--compare", "baseline," + other}, check: func(o *testOptions) bool {
			return len(o.compare) == 2 && o.compare[0].Baseline && o.compare[1].Series == other
		}, describe: "compare with the baseline and another series"},
		{args: []string{"--series", series, "--compare", series}, wantErr: "that is the kernel under test"},
		{args: []string{"--series", series, "frob"}, wantErr: `unknown procedure "frob"`},
		{args: []string{"--series", series, "--baseline"}, wantErr: "exclude each other"},
		{args: []string{"--baseline", "--compare", "baseline"}, wantErr: "drop --baseline"},
		{args: []string{"--series", series, "--compare", "upstream"}, wantErr: "--compare upstream: no stg series in upstream"},
		{args: []string{"--series", series, "--time", "0.5s"}, wantErr: "at least 1s"},
		{args: []string{"--series", series, "--time", "soon"}, wantErr: "--time"},
		{args: []string{"--series", series, "--rate", "-3"}, wantErr: "--rate"},
		{args: []string{"--series", t.TempDir()}, wantErr: "no stg series"},
		{args: []string{"mixed", "--baseline", "--seed", "4711", "--time", "10s"}, check: func(o *testOptions) bool {
			return o.options.Seed == 4711 && o.options.Duration == 10*time.Second
		}, describe: "--seed replays mixed's draw"},
		{args: []string{"mixed", "--baseline"}, check: func(o *testOptions) bool { return o.options.Seed == 0 }, describe: "no --seed: Run draws one"},
		{args: []string{"tcp", "--baseline", "--seed", "7"}, wantErr: "--seed draws only mixed"},
		{args: []string{"mixed", "--baseline", "--seed", "0"}, wantErr: "--seed \"0\""},
		{args: []string{"mixed", "--baseline", "--seed", "seven"}, wantErr: "want the positive number"},
		// A real board: lo stands for the NIC cabled to it (parsing only looks it up).
		{args: []string{"--series", series, "--board", "ssh://root@espressobin", "--client-if", "lo"}, check: func(o *testOptions) bool {
			return o.board == "ssh://root@espressobin" && o.clientIf == "lo" && !slices.Contains(o.procedures, "forward") &&
				slices.Contains(o.procedures, "multicast") && len(o.procedures) == len(procedure.DefaultProcedures)-1
		}, describe: "--board: the default set without forward (no second NIC)"},
		{args: []string{"tcp", "--series", series, "--board", "ssh://root@espressobin", "--client-if", "lo"}, check: func(o *testOptions) bool {
			return strings.Join(o.procedures, ",") == "tcp"
		}, describe: "--board with a procedure named"},
		{args: []string{"forward", "--series", series, "--board", "ssh://root@espressobin", "--client-if", "lo"}, wantErr: "forward needs a second NIC"},
		{args: []string{"--series", series, "--board", "ssh://root@espressobin"}, wantErr: "--board needs --client-if"},
		{args: []string{"tcp", "--series", series, "--board", "ssh://root@espressobin", "--client-if", "lo", "--deploy"}, check: func(o *testOptions) bool {
			return o.deploy && strings.Join(o.procedures, ",") == "tcp"
		}, describe: "--board with --deploy"},
		{args: []string{"--series", series, "--deploy"}, wantErr: "--deploy boots the kernel on a real board"},
		{args: []string{"--series", series, "--client-if", "lo"}, wantErr: "give the board too"},
		{args: []string{"--series", series, "--board", "root@espressobin", "--client-if", "lo"}, wantErr: "want ssh://[USER@]HOST[:PORT]"},
		{args: []string{"--series", series, "--board", "ssh://espressobin", "--client-if", "nosuch0"}, wantErr: "--client-if nosuch0: no such interface"},
		{args: []string{"--series", series, "--board", "ssh://espressobin", "--client-if", "lo", "--compare", "baseline"}, wantErr: "run once per kernel"},
	} {
		o, err := parseTestArgs(tc.args, io.Discard)
		if tc.wantErr != "" {
			var ee *exitError
			if err == nil || !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err %v, want usage error with %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !tc.check(o) {
			t.Errorf("%s %v: %+v, %v", tc.describe, tc.args, o, err)
		}
	}
}

// The real command boots through the harness and judges with gomodel.
func TestDefaultTestDeps(t *testing.T) {
	d := defaultTestDeps()
	l, err := d.launcher(&testOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.(*procedure.HarnessLauncher); !ok {
		t.Errorf("launcher %T", l)
	}
	if err := d.modelReady(); err != nil || d.model == nil {
		t.Errorf("model: %v", err)
	}
}

// A missing piece stops `ppkit test` before anything boots, with one line naming it: exit 2,
// the host is at fault.
func TestRunTestMissingPiece(t *testing.T) {
	deps := testDeps{launcher: func(*testOptions) (procedure.Launcher, error) { return nil, errors.New("no mvneta QEMU") },
		modelReady: func() error { return errors.New("model not wired") }}
	err := runTest(context.Background(), []string{"--baseline"}, io.Discard, io.Discard, deps)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || err.Error() != "cannot run: no mvneta QEMU; model not wired" {
		t.Fatalf("err %v", err)
	}
}

// exitCodeOf is the exit status run() makes of a command's error.
func exitCodeOf(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	return 1
}

type failingLauncher struct{}

func (failingLauncher) Launch(ctx context.Context, k procedure.Kernel, progress io.Writer) (procedure.Testbed, error) {
	return nil, errors.New("qemu-system-aarch64: -device mvneta: not found")
}

// With a launcher that cannot boot, no procedure can be judged: the outputs are written, every
// JUnit case is an <error>, exit 2 (infrastructure, not the kernel).
func TestRunTestWritesOutputs(t *testing.T) {
	dir := t.TempDir()
	deps := testDeps{launcher: func(*testOptions) (procedure.Launcher, error) { return failingLauncher{}, nil },
		modelReady: func() error { return nil }, model: verdict.CheckTraceWithModel}
	junit, report := filepath.Join(dir, "junit.xml"), filepath.Join(dir, "report")
	var out, errb bytes.Buffer
	err := runTest(context.Background(), []string{"multicast", "tcp", "--series", seriesDir(t), "--compare", "baseline",
		"--junit", junit, "--report", report, "--time", "2"}, &out, &errb, deps)
	if code := exitCodeOf(err); code != 2 {
		t.Fatalf("err %v: exit %d, want 2", err, code)
	}
	table := out.String()
	for _, want := range []string{"multicast  baseline  INFRA", "tcp        series    INFRA", "mvneta: not found", "/baseline"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	data, err := os.ReadFile(junit)
	if err != nil {
		t.Fatal(err)
	}
	var suites struct {
		Tests  int `xml:"tests,attr"`
		Errors int `xml:"errors,attr"`
	}
	if err := xml.Unmarshal(data, &suites); err != nil || suites.Tests != 4 || suites.Errors != 4 {
		t.Errorf("junit %+v %v", suites, err)
	}
	for _, f := range []string{"index.html", "results.json", "junit.xml"} {
		if _, err := os.Stat(filepath.Join(report, f)); err != nil {
			t.Error(err)
		}
	}

	// --json prints the summary instead of the table.
	out.Reset()
	if err := runTest(context.Background(), []string{"copy", "--baseline", "--json"}, &out, &errb, deps); exitCodeOf(err) != 2 {
		t.Fatalf("err %v", err)
	}
	var sum verdict.Summary
	if err := json.Unmarshal(out.Bytes(), &sum); err != nil || len(sum.Results) != 1 || sum.Pass || sum.Results[0].Reasons[0].Kind != verdict.ReasonInfra {
		t.Errorf("json %v: %s", err, out.String())
	}
	if !strings.Contains(errb.String(), "artifacts kept in") {
		t.Errorf("stderr %q", errb.String())
	}
	removeKeptArtifacts(t, errb.String())
}

// removeKeptArtifacts removes the directory a failed `ppkit test` kept for its user (it names it
// on its last "artifacts kept in DIR" line): nothing sweeps a kept directory, so a test must.
func removeKeptArtifacts(t *testing.T, output string) {
	t.Helper()
	i := strings.LastIndex(output, "artifacts kept in ")
	if i < 0 {
		return
	}
	dir, _, _ := strings.Cut(output[i+len("artifacts kept in "):], "\n")
	if dir = strings.TrimSpace(dir); strings.HasPrefix(filepath.Base(dir), "ppkit-kept-") {
		os.RemoveAll(dir)
	}
}

// TestParseTestArgsSeriesDesign: the series says its design in its model-variant file; a
// series without one, or naming no design of the model (a mutant is not a design), is the
// user's input: one line naming the file and what to write, exit 2, before anything is built.
func TestParseTestArgsSeriesDesign(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"", "does not say its design"},
		{"# only a comment\n\n", "names no design"},
		{"v3\n", `unknown variant "v3"`},
		{"return-direct\n", "one of the model's mutants"},
	} {
		d := seriesDir(t)
		path := filepath.Join(d, stgit.DesignFile)
		if tc.file == "" {
			os.Remove(path)
		} else {
			os.WriteFile(path, []byte(tc.file), 0o644)
		}
		var stderr strings.Builder
		_, err := parseTestArgs([]string{"--series", d}, &stderr)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v; want exit 2 and one line saying %q", tc.file, err, tc.want)
		}
	}
	d := seriesDir(t)
	os.WriteFile(filepath.Join(d, stgit.DesignFile), []byte("# V2\nupstream\n"), 0o644)
	o, err := parseTestArgs([]string{"--series", d}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := o.kernel.Variant(); err != nil || v != gomodel.VariantUpstream {
		t.Errorf("design %v, %v; want upstream", v, err)
	}
}
