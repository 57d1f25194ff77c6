package ci

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ppkit/ppkit/tests/report"
	"github.com/ppkit/ppkit/tests/verdict"
)

// writeOutputs writes result.json, summary.md and junit.xml into the output directory.
func (r *run) writeOutputs() error {
	for name, write := range map[string]func(io.Writer, *RunResult) error{
		"result.json": WriteJSON, "summary.md": WriteSummary, "junit.xml": WriteJUnit,
	} {
		var buf bytes.Buffer
		if err := write(&buf, r.res); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(r.o.Out, name), buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("output: %w", err)
		}
	}
	return nil
}

// WriteJSON writes the result as indented JSON (result.json).
func WriteJSON(w io.Writer, res *RunResult) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// WriteJUnit writes junit.xml: a "ppkit ci" suite with one case per stage (so a failed run
// always has a failed case), the series check with one case per patch, the procedures (as
// report.WriteJUnit writes them) and the figure comparison with one case per procedure.
func WriteJUnit(w io.Writer, res *RunResult) error {
	doc := report.JUnitSuites{Name: "ppkit ci " + res.Ref}
	stages := report.JUnitSuite{Name: "ppkit ci " + res.Ref}
	for _, s := range res.Stages {
		c := report.JUnitCase{Name: s.Name, ClassName: "ppkit.ci"}
		msg := &report.JUnitMessage{Message: s.Detail, Type: s.Outcome, Text: s.Detail}
		switch s.Outcome {
		case VerdictFail:
			c.Failure = msg
		case VerdictInfra:
			c.Error = msg
		case "skipped":
			c.Skipped = &report.JUnitMessage{Message: "an earlier stage decided the run"}
		default:
			c.SystemOut = s.Detail
		}
		stages.Add(c)
	}
	doc.Suites = append(doc.Suites, stages)
	if res.Check != nil {
		check := report.JUnitSuite{Name: "ppkit series check"}
		for _, p := range res.Check.Patches {
			c := report.JUnitCase{Name: fmt.Sprintf("%d %s", p.Index, p.Name), ClassName: "ppkit.series"}
			var errs, all []string
			for _, f := range p.Findings {
				line := fmt.Sprintf("%s %s: %s", f.Severity, f.Check, f.Message)
				all = append(all, line)
				if f.Severity == "error" {
					errs = append(errs, line)
				}
			}
			if len(errs) > 0 {
				c.Failure = &report.JUnitMessage{Message: errs[0], Type: "series-check", Text: strings.Join(all, "\n")}
			} else if len(all) > 0 {
				c.SystemOut = strings.Join(all, "\n")
			}
			check.Add(c)
		}
		doc.Suites = append(doc.Suites, check)
	}
	if res.Tests != nil {
		procs := report.JUnitOf(res.Tests.All())
		doc.Suites = append(doc.Suites, procs.Suites...)
	}
	if res.Comparison != nil && len(res.Comparison.Lines) > 0 {
		figs := report.JUnitSuite{Name: "ppkit ci figures against " + res.Comparison.Against}
		byProc := map[string][]verdict.FigureChange{}
		var order []string
		for _, l := range res.Comparison.Lines {
			if _, ok := byProc[l.Procedure]; !ok {
				order = append(order, l.Procedure)
			}
			byProc[l.Procedure] = append(byProc[l.Procedure], l)
		}
		for _, proc := range order {
			c := report.JUnitCase{Name: proc, ClassName: "ppkit.figures"}
			var text, bad []string
			for _, l := range byProc[proc] {
				line := fmt.Sprintf("%s: %s -> %s (%s)", l.Figure, verdict.FormatFigure(l.Previous), verdict.FormatFigure(l.Current), worseText(l))
				text = append(text, line)
				if l.Regression {
					bad = append(bad, line)
				}
			}
			if len(bad) > 0 {
				c.Failure = &report.JUnitMessage{Message: "regressed: " + strings.Join(bad, "; "), Type: "regression", Text: strings.Join(text, "\n")}
			} else {
				c.SystemOut = strings.Join(text, "\n")
			}
			figs.Add(c)
		}
		doc.Suites = append(doc.Suites, figs)
	}
	return doc.Write(w)
}

func worseText(l verdict.FigureChange) string {
	switch {
	case l.Previous == 0 && l.Regression:
		return "was 0: regression"
	case l.Previous == 0:
		return "was 0"
	case l.Worse > 0:
		s := fmt.Sprintf("%.1f%% worse", l.Worse*100)
		if l.Regression {
			s += ": regression"
		}
		return s
	case l.Worse < 0:
		return fmt.Sprintf("%.1f%% better", -l.Worse*100)
	}
	return "unchanged"
}

// reasonSummary condenses a procedure's reasons for a table cell: one entry per kind, in order
// of first appearance, with its count and its first detail (a broken kernel can give thousands
// of model violations; result.json and the report keep them all).
func reasonSummary(reasons []verdict.Reason) string {
	const maxDetail = 200
	var kinds []string
	first := map[string]string{}
	count := map[string]int{}
	for _, r := range reasons {
		if count[r.Kind] == 0 {
			kinds = append(kinds, r.Kind)
			d := r.Detail
			if len(d) > maxDetail {
				d = d[:maxDetail] + "…"
			}
			first[r.Kind] = d
		}
		count[r.Kind]++
	}
	var out []string
	for _, k := range kinds {
		if count[k] > 1 {
			out = append(out, fmt.Sprintf("%s ×%d (first: %s)", k, count[k], first[k]))
		} else {
			out = append(out, k+": "+first[k])
		}
	}
	return strings.Join(out, "; ")
}

// mdEscape keeps text from breaking a Markdown table cell.
func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\n", " ")
	return s
}

// WriteSummary writes summary.md: the verdict, a table of the stages, and tables of the series
// check, the procedures and the figure comparison, for a human reading a CI page.
func WriteSummary(w io.Writer, res *RunResult) error {
	var b strings.Builder
	word := map[string]string{VerdictPass: "PASS", VerdictFail: "FAIL", VerdictInfra: "INFRASTRUCTURE ERROR"}[res.Verdict]
	fmt.Fprintf(&b, "# ppkit ci: %s @ %s — %s (exit %d)\n\n", mdEscape(res.Ref), short(res.Commit), word, res.ExitCode)
	if res.Message != "" {
		fmt.Fprintf(&b, "**%s:** %s\n\n", res.Stage, mdEscape(res.Message))
	}
	b.WriteString("| stage | outcome | details |\n|---|---|---|\n")
	for _, s := range res.Stages {
		outcome := map[string]string{"ok": "ok", VerdictFail: "**FAIL**", VerdictInfra: "**INFRA ERROR**", "skipped": "skipped"}[s.Outcome]
		fmt.Fprintf(&b, "| %s | %s | %s |\n", s.Name, outcome, mdEscape(s.Detail))
	}
	if res.Check != nil {
		b.WriteString("\n## Series check\n\n| # | patch | subject | verdict | findings |\n|---|---|---|---|---|\n")
		for _, p := range res.Check.Patches {
			v := "ok"
			if !p.OK() {
				v = "**FAIL**"
			}
			var fs []string
			for _, f := range p.Findings {
				fs = append(fs, fmt.Sprintf("%s %s: %s", f.Severity, f.Check, f.Message))
			}
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s |\n", p.Index, mdEscape(p.Name), mdEscape(p.Subject), v, mdEscape(strings.Join(fs, "; ")))
		}
	}
	if res.Tests != nil {
		b.WriteString("\n## Procedures\n\n| procedure | verdict | packets | throughput | slow path /1000 pkts | SKB returns | releases | reasons |\n|---|---|---:|---:|---:|---:|---:|---|\n")
		for _, t := range res.Tests.All() {
			v := "PASS"
			if !t.Pass {
				v = "**FAIL**"
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %.1f | %d | %d | %s |\n", t.Procedure, v, t.Figures.Packets,
				verdict.FormatBitRate(t.Figures.BitsPerSecond), t.Figures.SlowPathPer1000, t.Figures.SKBReturns,
				t.Figures.Releases, mdEscape(reasonSummary(t.Reasons)))
		}
		b.WriteString("\nThe HTML report with each pool's inflight plot is `report/index.html`.\n")
	}
	if c := res.Comparison; c != nil {
		b.WriteString("\n## Figures\n\n")
		if c.Against == "" {
			fmt.Fprintf(&b, "%s\n", mdEscape(c.Note))
		} else {
			fmt.Fprintf(&b, "Against the stored result of %s @ %s; a figure more than %.0f%% worse fails the run.\n\n",
				mdEscape(c.Against), short(c.AgainstCommit), c.Threshold*100)
			b.WriteString("| procedure | figure | previous | current | change |\n|---|---|---:|---:|---|\n")
			for _, l := range c.Lines {
				change := worseText(l)
				if l.Regression {
					change = "**" + change + "**"
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", l.Procedure, l.Figure, verdict.FormatFigure(l.Previous), verdict.FormatFigure(l.Current), change)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
