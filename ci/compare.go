package ci

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/ppkit/ppkit/internal/atomicfile"
	"github.com/ppkit/ppkit/tests/verdict"
)

// Comparison is the test figures of this run against a stored earlier result.
type Comparison struct {
	// Against is the ref whose stored result was used, at AgainstCommit; empty when none was
	// stored (Note says so).
	Against       string                 `json:"against,omitempty"`
	AgainstCommit string                 `json:"against_commit,omitempty"`
	StoredFile    string                 `json:"stored_file,omitempty"`
	Threshold     float64                `json:"threshold"`
	Lines         []verdict.FigureChange `json:"lines,omitempty"`
	Regressions   int                    `json:"regressions"`
	Note          string                 `json:"note,omitempty"`
}

// storedPath is where the last passing result of ref is kept. A remote-tracking branch
// (refs/remotes/origin/master, as CI checkouts have) is the branch itself (refs/heads/master),
// so a run of a branch and a comparison against it meet whichever way the ref was named.
func storedPath(state, ref string) string {
	return filepath.Join(state, "results", url.PathEscape(storeKey(ref))+".json")
}

func storeKey(ref string) string {
	if rest, ok := strings.CutPrefix(ref, "refs/remotes/"); ok {
		if _, branch, ok := strings.Cut(rest, "/"); ok {
			return "refs/heads/" + branch
		}
	}
	return ref
}

// loadStored reads the stored result of ref; (nil, nil) when there is none.
func loadStored(state, ref string) (*RunResult, error) {
	data, err := os.ReadFile(storedPath(state, ref))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var res RunResult
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, fmt.Errorf("stored result %s: %w", storedPath(state, ref), err)
	}
	return &res, nil
}

// store writes res as ref's reference result, atomically.
func store(state string, res *RunResult) (string, error) {
	path := storedPath(state, res.Ref)
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// compare compares the figures with the stored result of --base (else of the ref itself), fails
// the run on a regression, and stores a passing run as the ref's new reference.
func (r *run) compare() {
	c := &Comparison{Threshold: r.o.Threshold}
	r.res.Comparison = c
	if r.o.Threshold < 0 {
		c.Note = "comparison disabled (--threshold < 0)"
		r.stage(StageCompare, "ok", c.Note)
	} else {
		var prev *RunResult
		var err error
		for _, ref := range []string{r.res.Base, r.res.Ref} {
			if ref == "" {
				continue
			}
			if prev, err = loadStored(r.state, ref); err != nil {
				r.infra(StageCompare, err)
				return
			}
			if prev != nil && prev.Tests != nil {
				c.Against, c.AgainstCommit, c.StoredFile = ref, prev.Commit, storedPath(r.state, ref)
				break
			}
			prev = nil
		}
		if prev == nil {
			c.Note = "no stored result for " + firstNonEmpty(r.res.Base, r.res.Ref) + "; this run becomes the reference"
			r.stage(StageCompare, "ok", c.Note)
		} else {
			c.Lines = verdict.CompareFigures(prev.Tests.Results, r.res.Tests.Results, r.o.Threshold)
			var worst []string
			for _, l := range c.Lines {
				if l.Regression {
					c.Regressions++
					worst = append(worst, fmt.Sprintf("%s %s %s → %s", l.Procedure, l.Figure, verdict.FormatFigure(l.Previous), verdict.FormatFigure(l.Current)))
				}
			}
			if c.Regressions > 0 {
				r.stage(StageCompare, VerdictFail, fmt.Sprintf("%d figures regressed more than %.0f%% against %s@%s: %s",
					c.Regressions, r.o.Threshold*100, c.Against, short(c.AgainstCommit), joinMax(worst, 4)))
				return
			}
			r.stage(StageCompare, "ok", fmt.Sprintf("%d figures within %.0f%% of %s@%s", len(c.Lines), r.o.Threshold*100, c.Against, short(c.AgainstCommit)))
		}
	}
	// Only a run that passed becomes a reference: a regressed run must not lower the bar.
	r.res.Verdict = VerdictPass
	path, err := store(r.state, r.res)
	if err != nil {
		r.infra(StageCompare, fmt.Errorf("store the result: %w", err))
		return
	}
	r.res.Stored = path
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func joinMax(items []string, n int) string {
	if len(items) <= n {
		return join(items)
	}
	return join(items[:n]) + fmt.Sprintf("; and %d more", len(items)-n)
}

func join(items []string) string {
	out := ""
	for i, s := range items {
		if i > 0 {
			out += "; "
		}
		out += s
	}
	return out
}
