package procedure_test

// The mutation suite's runner on the scripted board: this test runs procedures on
// fakeboard_test.go's board, which only this package's tests can build, so it lives here as an
// external test (it imports the mutation package, which imports this one).

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/tests/mutation"
	"github.com/ppkit/ppkit/tests/procedure"
)

// leakyLauncher boots fake boards whose pool leaks (a kernel failure) for series under a
// directory named in leak.
type leakyLauncher struct{ leak map[string]bool }

func (l *leakyLauncher) Launch(ctx context.Context, k procedure.Kernel, _ io.Writer) (procedure.Testbed, error) {
	leak := int64(0)
	if l.leak[filepath.Base(filepath.Dir(k.Series))] {
		leak = 3
	}
	return procedure.NewFakeTestbed(leak), nil
}

// TestRunMutantsScore: a real mutant is killed by its first failing procedure and the rest are
// skipped; one no procedure catches survives; an equivalent one that fails is a false alarm.
func TestRunMutantsScore(t *testing.T) {
	procedure.FastTimers(t)
	patches := t.TempDir()
	os.WriteFile(filepath.Join(patches, "series"), []byte("p1\n"), 0o644)
	os.WriteFile(filepath.Join(patches, "p1"), []byte("orig"), 0o644)
	suite := t.TempDir()
	var ms []mutation.Mutant
	for _, n := range []string{"caught", "missed", "eq-ok", "eq-alarm"} {
		os.MkdirAll(filepath.Join(suite, n), 0o755)
		os.WriteFile(filepath.Join(suite, n, "p1"), []byte(n), 0o644)
		ms = append(ms, mutation.Mutant{Name: n, Equivalent: strings.HasPrefix(n, "eq-"), First: "tcp", Patch: "p1", Dir: filepath.Join(suite, n)})
	}
	rep, err := mutation.RunMutants(context.Background(), mutation.MutantConfig{Mutants: ms, Patches: patches, Config: procedure.Config{
		Procedures: []string{"tcp", "multicast"}, Options: procedure.Options{Duration: time.Second, RateMbit: 10}, ArtifactDir: t.TempDir(),
		Launcher: &leakyLauncher{leak: map[string]bool{"caught": true, "eq-alarm": true}}, Model: procedure.OKModel, CacheRoot: t.TempDir()}})
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
	mutation.WriteMutationTable(&b, rep)
	for _, want := range []string{"killed by tcp", "SURVIVED", "FALSE ALARM: tcp", "mutation score: 1/2 real mutants killed (50%); 1/2 equivalent mutants pass"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
