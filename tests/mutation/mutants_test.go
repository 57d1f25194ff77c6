package mutation

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/stgit"
	"github.com/ppkit/ppkit/tests/procedure"
	"github.com/ppkit/ppkit/tests/procedure/boardtest"
)

// TestShippedMutants: each shipped suite parses, says which series it derives from (V1, the
// head-only series now a fixture; V2, patches/), has enough real and equivalent mutants, each
// changes exactly its patch, and its series is the suite's with that one file replaced.
func TestShippedMutants(t *testing.T) {
	for _, tc := range []struct {
		suite, series    string
		real, equivalent int
	}{
		{"../fixtures/mutants", "../fixtures/series-v1-head-only", 10, 2},
		{"../fixtures/mutants-v2", "../../patches", 6, 2},
	} {
		t.Run(filepath.Base(tc.suite), func(t *testing.T) {
			if s, err := SuiteSeries(tc.suite); err != nil || filepath.Clean(s) != filepath.Clean(tc.series) {
				t.Fatalf("suite series %q, %v; want %s", s, err, tc.series)
			}
			ms, err := ReadMutants(tc.suite, tc.series)
			if err != nil {
				t.Fatal(err)
			}
			real, equivalent := 0, 0
			for _, m := range ms {
				if m.Equivalent {
					equivalent++
				} else {
					real++
				}
				orig, err := os.ReadFile(filepath.Join(tc.series, m.Patch))
				if err != nil {
					t.Fatal(err)
				}
				mut, _ := os.ReadFile(filepath.Join(m.Dir, m.Patch))
				if bytes.Equal(orig, mut) || m.Description == "" {
					t.Errorf("%s: no change to %s, or no description", m.Name, m.Patch)
				}
				dir := t.TempDir()
				if err := m.Series(tc.series, dir); err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(filepath.Join(dir, m.Patch))
				series, _ := os.ReadFile(filepath.Join(dir, "series"))
				want, _ := os.ReadFile(filepath.Join(tc.series, "series"))
				if !bytes.Equal(got, mut) || !bytes.Equal(series, want) {
					t.Errorf("%s: the mutant series does not carry the mutant patch and the same series file", m.Name)
				}
			}
			if real < tc.real || equivalent < tc.equivalent {
				t.Errorf("%d real and %d equivalent mutants; want at least %d and %d", real, equivalent, tc.real, tc.equivalent)
			}
		})
	}
}

func TestReadMutantsBadInput(t *testing.T) {
	for name, content := range map[string]string{
		"bad kind":          "m1 maybe multicast: x\n",
		"unknown procedure": "m1 real frobnicate: x\n",
		"no directory":      "m2 real multicast: x\n",
		"twice":             "m1 real multicast: x\nm1 real multicast: x\n",
	} {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "m1"), 0o755)
		os.WriteFile(filepath.Join(dir, "m1", "net-skbuff-return-page_pool-heads-in-skb_free_head"), []byte("x"), 0o644)
		os.WriteFile(filepath.Join(dir, "MUTANTS"), []byte(content), 0o644)
		if _, err := ReadMutants(dir, "../fixtures/series-v1-head-only"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// leakyLauncher boots fake boards whose pool leaks (a kernel failure) for series under a
// directory named in leak.
type leakyLauncher struct{ leak map[string]bool }

func (l *leakyLauncher) Launch(ctx context.Context, k procedure.Kernel, _ io.Writer) (procedure.Testbed, error) {
	b := boardtest.NewBoard()
	if l.leak[filepath.Base(filepath.Dir(k.Series))] {
		b.Leak = 3
	}
	return boardtest.NewTestbed(b), nil
}

// TestRunMutantsScore: a real mutant is killed by its first failing procedure and the rest are
// skipped; one no procedure catches survives; an equivalent one that fails is a false alarm.
func TestRunMutantsScore(t *testing.T) {
	boardtest.FastTimers(t)
	patches := t.TempDir()
	os.WriteFile(filepath.Join(patches, "series"), []byte("p1\n"), 0o644)
	os.WriteFile(filepath.Join(patches, "p1"), []byte("orig"), 0o644)
	os.WriteFile(filepath.Join(patches, stgit.DesignFile), []byte("series\n"), 0o644)
	suite := t.TempDir()
	var ms []Mutant
	for _, n := range []string{"caught", "missed", "eq-ok", "eq-alarm"} {
		os.MkdirAll(filepath.Join(suite, n), 0o755)
		os.WriteFile(filepath.Join(suite, n, "p1"), []byte(n), 0o644)
		ms = append(ms, Mutant{Name: n, Equivalent: strings.HasPrefix(n, "eq-"), First: "tcp", Patch: "p1", Dir: filepath.Join(suite, n)})
	}
	rep, err := RunMutants(context.Background(), MutantConfig{Mutants: ms, Patches: patches, Config: procedure.Config{
		Procedures: []string{"tcp", "multicast"}, Options: procedure.Options{Duration: time.Second, RateMbit: 10}, ArtifactDir: t.TempDir(),
		Launcher: &leakyLauncher{leak: map[string]bool{"caught": true, "eq-alarm": true}}, Model: boardtest.OKModel, CacheRoot: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Real != 2 || rep.Killed != 1 || rep.Equivalent != 2 || rep.Passed != 1 || rep.OK() || rep.Score() != 0.5 {
		t.Fatalf("report %+v", rep)
	}
	caught := rep.Mutants[0]
	if !caught.Killed || caught.By != "tcp" || len(caught.Results) != 1 {
		t.Errorf("caught: killed %v by %q after %d procedures; want tcp, and multicast skipped", caught.Killed, caught.By, len(caught.Results))
	}
	if rep.Mutants[1].Killed || len(rep.Mutants[1].Results) != 2 {
		t.Errorf("missed: %+v", rep.Mutants[1])
	}
	var b bytes.Buffer
	WriteMutationTable(&b, rep)
	for _, want := range []string{"killed by tcp", "SURVIVED", "FALSE ALARM: tcp", "mutation score: 1/2 real mutants killed (50%); 1/2 equivalent mutants pass"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
