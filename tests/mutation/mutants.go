package mutation

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ppkit/ppkit/tests/procedure"
	"github.com/ppkit/ppkit/tests/report"
	"github.com/ppkit/ppkit/tests/verdict"
)

// Mutant is one entry of the mutation suite (tests/fixtures/mutants/MUTANTS): a realistic
// single-change bug of the series, or an equivalent change, as one patch file that replaces its
// namesake in patches/.
type Mutant struct {
	Name string `json:"name"`
	// Equivalent mutants change nothing the kernel does: they must pass every procedure.
	Equivalent  bool   `json:"equivalent"`
	First       string `json:"first_procedure"` // tried first: the procedure meant to catch it
	Description string `json:"description"`
	Patch       string `json:"patch"` // the file name of the replaced patch
	Dir         string `json:"-"`
}

// DefaultMutantsDir is the suite shipped with ppkit, relative to the checkout.
const DefaultMutantsDir = "tests/fixtures/mutants"

// SeriesFile names, in a suite's directory, the series its mutants derive from: one line, a
// directory relative to the suite (each mutant replaces one patch of that series).
const SeriesFile = "SERIES"

// SuiteSeries is the series directory the suite in dir derives from, as its SeriesFile says.
func SuiteSeries(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, SeriesFile))
	if err != nil {
		return "", fmt.Errorf("mutation suite %s: %w; write the directory of the series its mutants derive from (relative to the suite) in %s", dir, err, filepath.Join(dir, SeriesFile))
	}
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return filepath.Join(dir, l), nil
		}
	}
	return "", fmt.Errorf("mutation suite %s: %s names no series directory", dir, filepath.Join(dir, SeriesFile))
}

// ReadMutants parses dir/MUTANTS ("NAME real|equivalent FIRST-PROCEDURE: description") and
// checks each NAME/ directory: one patch file, named as a patch of the series in patches.
func ReadMutants(dir, patches string) ([]Mutant, error) {
	f, err := os.Open(filepath.Join(dir, "MUTANTS"))
	if err != nil {
		return nil, fmt.Errorf("mutation suite: %w", err)
	}
	defer f.Close()
	series, err := os.ReadFile(filepath.Join(patches, "series"))
	if err != nil {
		return nil, fmt.Errorf("mutation suite: the series: %w", err)
	}
	inSeries := map[string]bool{}
	for _, l := range strings.Split(string(series), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			inSeries[l] = true
		}
	}
	var out []Mutant
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		head, desc, ok := strings.Cut(line, ":")
		fields := strings.Fields(head)
		if !ok || len(fields) != 3 || (fields[1] != "real" && fields[1] != "equivalent") {
			return nil, fmt.Errorf("%s/MUTANTS:%d: want 'NAME real|equivalent FIRST-PROCEDURE: description'", dir, n)
		}
		m := Mutant{Name: fields[0], Equivalent: fields[1] == "equivalent", First: fields[2],
			Description: strings.TrimSpace(desc), Dir: filepath.Join(dir, fields[0])}
		if seen[m.Name] {
			return nil, fmt.Errorf("%s/MUTANTS:%d: mutant %s listed twice", dir, n, m.Name)
		}
		seen[m.Name] = true
		if _, err := procedure.LookupProcedures([]string{m.First}); err != nil {
			return nil, fmt.Errorf("%s/MUTANTS:%d: %v", dir, n, err)
		}
		ents, err := os.ReadDir(m.Dir)
		if err != nil || len(ents) != 1 {
			return nil, fmt.Errorf("%s/MUTANTS:%d: %s/ must hold exactly one patch file", dir, n, m.Dir)
		}
		m.Patch = ents[0].Name()
		if !inSeries[m.Patch] {
			return nil, fmt.Errorf("%s/MUTANTS:%d: %s/%s is no patch of %s/series", dir, n, m.Name, m.Patch, patches)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// Series writes the mutant's series into dir: patches/ with the mutant's patch file instead of
// its namesake.
func (m Mutant) Series(patches, dir string) error {
	ents, err := os.ReadDir(patches)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		src := filepath.Join(patches, e.Name())
		if e.Name() == m.Patch {
			src = filepath.Join(m.Dir, m.Patch)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// MutantResult is one mutant's run.
type MutantResult struct {
	Mutant
	// Killed: a procedure failed on the kernel (VerdictFail). For an equivalent mutant that is
	// a false alarm.
	Killed   bool              `json:"killed"`
	By       string            `json:"by,omitempty"` // the procedure that failed
	Verdict  verdict.Verdict   `json:"verdict"`      // of the whole run: infra-error means unjudged
	Reasons  []verdict.Reason  `json:"reasons,omitempty"`
	Duration time.Duration     `json:"duration_ns"`
	Results  []*verdict.Result `json:"results"`
}

// MutationReport is a run of the suite.
type MutationReport struct {
	Mutants []MutantResult `json:"mutants"`
	// Killed of Real real mutants were caught; Passed of Equivalent equivalent ones passed.
	Killed, Real, Passed, Equivalent int
	Unjudged                         int           // runs that ended in infra-error or were interrupted
	Duration                         time.Duration `json:"duration_ns"`
}

// Score is killed real mutants over real mutants.
func (r *MutationReport) Score() float64 {
	if r.Real == 0 {
		return 0
	}
	return float64(r.Killed) / float64(r.Real)
}

// OK: every real mutant killed, every equivalent one passed, nothing unjudged.
func (r *MutationReport) OK() bool {
	return r.Killed == r.Real && r.Passed == r.Equivalent && r.Unjudged == 0
}

// MutantConfig is a run of the suite.
type MutantConfig struct {
	Mutants          []Mutant
	Patches          string // the series the mutants derive from
	procedure.Config        // Procedures, Options, Launcher, Model, Progress; Kernel and ArtifactDir are per mutant
}

// RunMutants runs each mutant: a real one on its first procedure and then the default set until
// one fails (a kernel verdict kills it); an equivalent one on the whole default set.
func RunMutants(ctx context.Context, mc MutantConfig) (*MutationReport, error) {
	start := time.Now()
	rep := &MutationReport{}
	root := mc.ArtifactDir
	if mc.Options.Seed == 0 { // one seed for every mutant: each one meets the same draw
		mc.Options.Seed = procedure.NewSeed()
	}
	for _, m := range mc.Mutants {
		if ctx.Err() != nil {
			break
		}
		dir := filepath.Join(root, m.Name)
		series := filepath.Join(dir, "patches") // the artifacts go to dir/series/PROCEDURE
		if err := os.MkdirAll(series, 0o755); err != nil {
			return nil, err
		}
		if err := m.Series(mc.Patches, series); err != nil {
			return nil, fmt.Errorf("mutant %s: %w", m.Name, err)
		}
		procs := mc.Procedures
		if len(procs) == 0 {
			procs = append([]string{m.First}, procedure.DefaultProcedures...)
		}
		cfg := mc.Config
		cfg.Kernel, cfg.ArtifactDir, cfg.Procedures, cfg.StopOnFail = procedure.Kernel{Series: series}, dir, procs, !m.Equivalent
		progressf(cfg.Progress, "mutant %s (%s): %s", m.Name, map[bool]string{true: "equivalent", false: "real"}[m.Equivalent], m.Description)
		t0 := time.Now()
		sum, err := procedure.Run(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("mutant %s: %w", m.Name, err)
		}
		// Each mutant's runs get their own report: the culprit of a killed mutant is one click away.
		if err := report.WriteReportDir(dir, sum); err != nil {
			return nil, fmt.Errorf("mutant %s: %w", m.Name, err)
		}
		r := MutantResult{Mutant: m, Verdict: sum.Verdict, Results: sum.Results, Duration: time.Since(t0)}
		for _, res := range sum.Results {
			if res.Verdict == verdict.VerdictFail {
				r.Killed, r.By, r.Reasons = true, res.Procedure, res.Reasons
				break
			}
		}
		switch {
		case m.Equivalent && sum.Verdict == verdict.VerdictPass:
			rep.Passed++
		case !m.Equivalent && r.Killed:
			rep.Killed++
		case sum.Verdict == verdict.VerdictInfra || sum.Verdict == verdict.VerdictInterrupted:
			rep.Unjudged++
		}
		if m.Equivalent {
			rep.Equivalent++
		} else {
			rep.Real++
		}
		outcome := "survived"
		switch {
		case r.Killed && !m.Equivalent:
			outcome = "killed by " + r.By
		case r.Killed:
			outcome = "FALSE ALARM in " + r.By
		case m.Equivalent && sum.Verdict == verdict.VerdictPass:
			outcome = "passed"
		case sum.Verdict != verdict.VerdictPass:
			outcome = "unjudged (" + string(sum.Verdict) + ")"
		}
		progressf(cfg.Progress, "mutant %s: %s (%s)", m.Name, outcome, r.Duration.Round(time.Second))
		rep.Mutants = append(rep.Mutants, r)
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

func progressf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// WriteMutationTable prints one line per mutant and the score.
func WriteMutationTable(w io.Writer, rep *MutationReport) {
	fmt.Fprintf(w, "%-38s %-10s %-26s %8s\n", "MUTANT", "KIND", "OUTCOME", "TIME")
	for _, m := range rep.Mutants {
		kind, outcome := "real", "SURVIVED"
		if m.Equivalent {
			kind, outcome = "equivalent", "passed"
		}
		switch {
		case m.Killed && !m.Equivalent:
			outcome = "killed by " + m.By
		case m.Killed:
			outcome = "FALSE ALARM: " + m.By
		case m.Verdict == verdict.VerdictInfra || m.Verdict == verdict.VerdictInterrupted:
			outcome = "UNJUDGED: " + string(m.Verdict)
		}
		fmt.Fprintf(w, "%-38s %-10s %-26s %8s\n", m.Name, kind, outcome, m.Duration.Round(time.Second))
		if m.Killed && len(m.Reasons) > 0 {
			fmt.Fprintf(w, "    %s\n", report.GroupReasons(m.Reasons)[0])
		}
	}
	fmt.Fprintf(w, "mutation score: %d/%d real mutants killed (%.0f%%); %d/%d equivalent mutants pass; %d unjudged; %s\n",
		rep.Killed, rep.Real, 100*rep.Score(), rep.Passed, rep.Equivalent, rep.Unjudged, rep.Duration.Round(time.Second))
}
