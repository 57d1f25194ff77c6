package report

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ppkit/ppkit/tests/verdict"
)

// WriteTable prints one line per result: verdict, figures, model prediction, reasons.
func WriteTable(w io.Writer, results []*verdict.Result) {
	fmt.Fprintf(w, "%-10s %-9s %-5s %10s %11s %9s %9s %9s %s\n",
		"PROCEDURE", "KERNEL", "VERD", "PACKETS", "THROUGHPUT", "SLOW/1K", "SKB-RET", "RELEASES", "MODEL SLOW/1K|SKB-RET|RELEASES")
	for _, r := range results {
		word := map[verdict.Verdict]string{verdict.VerdictPass: "PASS", verdict.VerdictFail: "FAIL", verdict.VerdictInfra: "INFRA", verdict.VerdictInterrupted: "INTR"}[r.Verdict]
		model := "-"
		if r.Model != nil {
			p := r.Model.Predicted
			model = fmt.Sprintf("%.1f|%d|%d", p.SlowPathPer1000, p.SKBReturns, p.Releases)
		}
		fmt.Fprintf(w, "%-10s %-9s %-5s %10d %11s %9.1f %9d %9d %s\n", r.Procedure, verdict.KernelKind(r.Kernel), word,
			r.Figures.Packets, verdict.FormatBitRate(r.Figures.BitsPerSecond), r.Figures.SlowPathPer1000,
			r.Figures.SKBReturns, r.Figures.Releases, model)
		if r.Seed != 0 {
			fmt.Fprintf(w, "    seed %d (ppkit test %s --seed %d replays it)\n", r.Seed, r.Procedure, r.Seed)
		}
		for _, m := range r.Traffic.Members {
			fmt.Fprintf(w, "    member %-10s +%5.2fs port %d: %d bytes, %s\n", m.Procedure, m.Start.Seconds(), m.Port, m.Bytes, verdict.FormatBitRate(m.BitsPerSecond))
		}
		for _, g := range GroupReasons(r.Reasons) {
			fmt.Fprintf(w, "    %s\n", g)
		}
	}
}

// ReasonGroup is a reason with the number of times a result gives it.
type ReasonGroup struct {
	verdict.Reason
	Count int
}

func (g ReasonGroup) String() string {
	if g.Count > 1 {
		return fmt.Sprintf("%s (×%d)", g.Reason, g.Count)
	}
	return g.Reason.String()
}

// GroupReasons folds identical reasons (a broken kernel WARNs once per pool, per retry) into
// one with a count, in the order they first came.
func GroupReasons(reasons []verdict.Reason) []ReasonGroup {
	var out []ReasonGroup
	at := map[verdict.Reason]int{}
	for _, r := range reasons {
		if i, ok := at[r]; ok {
			out[i].Count++
			continue
		}
		at[r] = len(out)
		out = append(out, ReasonGroup{Reason: r, Count: 1})
	}
	return out
}

// ConsoleGroup is the first console report of one title, with how many reports had it.
type ConsoleGroup struct {
	verdict.ConsoleReport
	Count int
}

// GroupConsole keeps the first report of each title (its stack is the one that names the
// culprit; later ones repeat it) and counts the others.
func GroupConsole(reports []verdict.ConsoleReport) []ConsoleGroup {
	var out []ConsoleGroup
	at := map[string]int{}
	for _, r := range reports {
		if i, ok := at[r.Title]; ok {
			out[i].Count++
			continue
		}
		at[r.Title] = len(out)
		out = append(out, ConsoleGroup{ConsoleReport: r, Count: 1})
	}
	return out
}

// WriteComparison prints the ratio series/baseline of each figure.
func WriteComparison(w io.Writer, s *verdict.Summary) {
	if len(s.References) == 0 || len(s.Results) == 0 {
		return
	}
	current := verdict.KernelLabel(s.Results[0].Kernel)
	head := []string{"PROCEDURE", "FIGURE"}
	for _, r := range s.References {
		head = append(head, verdict.KernelLabel(r.Kernel))
	}
	head = append(head, current)
	for _, r := range s.References {
		head = append(head, current+"/"+verdict.KernelLabel(r.Kernel))
	}
	rows := [][]string{head}
	for i, l := range s.References[0].Comparison {
		row := []string{l.Procedure, l.Figure}
		var ratios []string
		for _, r := range s.References {
			if i >= len(r.Comparison) || r.Comparison[i].Procedure != l.Procedure || r.Comparison[i].Figure != l.Figure {
				row, ratios = append(row, "-"), append(ratios, "-")
				continue
			}
			row = append(row, verdict.FormatFigure(r.Comparison[i].Previous))
			ratios = append(ratios, ratioText(r.Comparison[i], "x"))
		}
		rows = append(rows, append(append(row, verdict.FormatFigure(l.Current)), ratios...))
	}
	// The procedure and the figure to the left, the numbers to the right, two spaces apart.
	width := make([]int, len(head))
	for _, row := range rows {
		for c, cell := range row {
			width[c] = max(width[c], len(cell))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for c, cell := range row {
			if c < 2 {
				fmt.Fprintf(&b, "%-*s  ", width[c], cell)
			} else {
				fmt.Fprintf(&b, "%*s  ", width[c], cell)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// WriteJSON writes the summary as indented JSON.
func WriteJSON(w io.Writer, s *verdict.Summary) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// JUnitSuites is a JUnit XML document, in the schema Jenkins, GitLab and GitHub reporters read.
// `ppkit ci` builds its junit.xml from the same types, with the procedures' suites merged in.
type JUnitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr,omitempty"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Suites   []JUnitSuite `xml:"testsuite"`
}

// JUnitSuite is one <testsuite>.
type JUnitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Skipped  int         `xml:"skipped,attr,omitempty"`
	Time     string      `xml:"time,attr,omitempty"`
	Cases    []JUnitCase `xml:"testcase"`
}

// JUnitCase is one <testcase>: at most one of Failure (a verdict), Error (could not be judged)
// and Skipped.
type JUnitCase struct {
	Name      string        `xml:"name,attr"`
	ClassName string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr,omitempty"`
	Failure   *JUnitMessage `xml:"failure,omitempty"`
	Error     *JUnitMessage `xml:"error,omitempty"`
	Skipped   *JUnitMessage `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

// JUnitMessage is the body of a failure, error or skip.
type JUnitMessage struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Text    string `xml:",chardata"`
}

// Add appends a case and counts it.
func (s *JUnitSuite) Add(c JUnitCase) {
	s.Cases = append(s.Cases, c)
	s.Tests++
	switch {
	case c.Failure != nil:
		s.Failures++
	case c.Error != nil:
		s.Errors++
	case c.Skipped != nil:
		s.Skipped++
	}
}

// Write writes the document with the totals of its suites.
func (d JUnitSuites) Write(w io.Writer) error {
	d.Tests, d.Failures, d.Errors = 0, 0, 0
	for _, s := range d.Suites {
		d.Tests += s.Tests
		d.Failures += s.Failures
		d.Errors += s.Errors
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(d); err != nil {
		return fmt.Errorf("write JUnit XML: %w", err)
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// JUnitOf is one test suite per kernel and one test case per procedure: a procedure whose
// verdict is VerdictFail is a <failure>, one that could not be judged (VerdictInfra,
// VerdictInterrupted) an <error>.
func JUnitOf(results []*verdict.Result) JUnitSuites {
	var doc JUnitSuites
	index := map[string]int{}
	for _, r := range results {
		i, ok := index[r.Kernel]
		if !ok {
			i = len(doc.Suites)
			index[r.Kernel] = i
			doc.Suites = append(doc.Suites, JUnitSuite{Name: "ppkit test " + r.Kernel})
		}
		s := &doc.Suites[i]
		c := JUnitCase{Name: r.Procedure, ClassName: "ppkit." + verdict.KernelKind(r.Kernel),
			Time: strconv.FormatFloat(r.Duration.Seconds(), 'f', 3, 64)}
		c.SystemOut = fmt.Sprintf("packets=%d throughput_bps=%.0f slow_path_per_1000=%.3f skb_returns=%d releases=%d\n",
			r.Figures.Packets, r.Figures.BitsPerSecond, r.Figures.SlowPathPer1000, r.Figures.SKBReturns, r.Figures.Releases)
		if r.Verdict != verdict.VerdictPass {
			var text []string
			for _, g := range GroupReasons(r.Reasons) {
				text = append(text, g.String())
			}
			first, _, _ := strings.Cut(strings.TrimSpace(text[0]), "\n")
			msg := &JUnitMessage{Message: first, Type: r.Reasons[0].Kind, Text: strings.Join(text, "\n")}
			if r.Verdict == verdict.VerdictFail {
				c.Failure = msg
			} else {
				c.Error = msg
			}
		}
		s.Add(c)
		secs, _ := strconv.ParseFloat(s.Time, 64)
		s.Time = strconv.FormatFloat(secs+r.Duration.Seconds(), 'f', 3, 64)
	}
	return doc
}

// WriteJUnit writes JUnitOf(results).
func WriteJUnit(w io.Writer, results []*verdict.Result) error { return JUnitOf(results).Write(w) }

// InflightSVG draws each pool's inflight over time as an inline SVG line chart (no script).
func InflightSVG(pools []verdict.PoolFigures, width, height int) string {
	const left, right, top, bottom = 60, 10, 10, 30
	var tmin, tmax = math.Inf(1), math.Inf(-1)
	var vmax int64 = 1
	for _, p := range pools {
		for _, pt := range p.Timeline {
			tmin, tmax = math.Min(tmin, pt.Time), math.Max(tmax, pt.Time)
			if pt.Inflight > vmax {
				vmax = pt.Inflight
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img">`, width, height, width, height)
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>`, left, top, width-left-right, height-top-bottom)
	if math.IsInf(tmin, 1) {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12">no page_pool events</text></svg>`, left+10, top+20)
		return b.String()
	}
	if tmax == tmin {
		tmax = tmin + 1
	}
	pw, ph := float64(width-left-right), float64(height-top-bottom)
	x := func(t float64) float64 { return float64(left) + (t-tmin)/(tmax-tmin)*pw }
	y := func(v int64) float64 { return float64(top) + ph - float64(v)/float64(vmax)*ph }
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="end">%d</text>`, left-4, top+10, vmax)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="end">0</text>`, left-4, top+int(ph))
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11">%.3f s</text>`, left, height-10, tmin)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="end">%.3f s</text>`, width-right, height-10, tmax)
	for i, p := range pools {
		pts := downsample(p.Timeline, int(pw))
		if len(pts) == 0 {
			continue
		}
		var path strings.Builder
		for j, pt := range pts {
			if j > 0 {
				path.WriteByte(' ')
			}
			fmt.Fprintf(&path, "%.1f,%.1f", x(pt.Time), y(pt.Inflight))
		}
		c := poolColor(i)
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"><title>pool %s</title></polyline>`,
			c, path.String(), template.HTMLEscapeString(p.Pool))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

var poolColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// poolColor is the plot colour of the i-th pool (also shown in the report's pool table).
func poolColor(i int) string { return poolColors[i%len(poolColors)] }

// downsample keeps at most about 2n points, preserving each bucket's minimum and maximum so
// spikes stay visible, plus the last point.
func downsample(pts []verdict.InflightPoint, n int) []verdict.InflightPoint {
	if n < 1 || len(pts) <= 2*n {
		return pts
	}
	t0, t1 := pts[0].Time, pts[len(pts)-1].Time
	if t1 == t0 {
		return []verdict.InflightPoint{pts[0], pts[len(pts)-1]}
	}
	out := make([]verdict.InflightPoint, 0, 2*n+1)
	bucket := -1
	var lo, hi verdict.InflightPoint
	flush := func() {
		if bucket < 0 {
			return
		}
		if lo.Time <= hi.Time {
			out = append(out, lo, hi)
		} else {
			out = append(out, hi, lo)
		}
	}
	for _, p := range pts {
		bk := int((p.Time - t0) / (t1 - t0) * float64(n-1))
		if bk != bucket {
			flush()
			bucket, lo, hi = bk, p, p
			continue
		}
		if p.Inflight < lo.Inflight {
			lo = p
		}
		if p.Inflight > hi.Inflight {
			hi = p
		}
	}
	flush()
	return append(out, pts[len(pts)-1])
}

var reportTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"rate":    verdict.FormatBitRate,
	"f1":      func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
	"figure":  verdict.FormatFigure,
	"svg":     func(p []verdict.PoolFigures) template.HTML { return template.HTML(InflightSVG(p, 720, 240)) },
	"ratio":   func(l verdict.FigureChange) string { return ratioText(l, "×") },
	"label":   verdict.KernelLabel,
	"color":   func(i int) template.CSS { return template.CSS("background:" + poolColor(i)) },
	"groups":  GroupReasons,
	"console": GroupConsole,
	"verdict": func(v verdict.Verdict) string { return strings.ToUpper(string(v)) },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ppkit test report</title>
<style>
body{font-family:sans-serif;margin:2em;max-width:60em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
th{background:#eee}td.l,th.l{text-align:left}.pass{color:#070;font-weight:bold}.fail{color:#b00;font-weight:bold}
pre{background:#f6f6f6;padding:.5em;overflow:auto}.sw{display:inline-block;width:.8em;height:.8em}
</style></head><body>
<h1>ppkit test: {{if .Pass}}<span class="pass">PASS</span>{{else}}<span class="fail">FAIL</span>{{end}}</h1>
{{with .Board}}<p>Board: {{.}}</p>{{end}}
<table><tr><th class="l">procedure</th><th class="l">kernel</th><th class="l">verdict</th><th>packets</th><th>throughput</th>
<th>slow-path / 1000 pkts</th><th>SKB-hook returns</th><th>releases</th><th>model: slow-path / 1000</th><th>model: SKB returns</th><th>model: releases</th></tr>
{{range .All}}<tr><td class="l"><a href="#{{.Kernel}}-{{.Procedure}}">{{.Procedure}}</a></td><td class="l">{{.Kernel}}{{with .Design}} ({{.}}){{end}}</td>
<td class="l">{{if .Pass}}<span class="pass">PASS</span>{{else}}<span class="fail">{{verdict .Verdict}}</span>{{end}}</td>
<td>{{.Figures.Packets}}</td><td>{{rate .Figures.BitsPerSecond}}</td><td>{{f1 .Figures.SlowPathPer1000}}</td>
<td>{{.Figures.SKBReturns}}</td><td>{{.Figures.Releases}}</td>
{{with .Model}}<td>{{f1 .Predicted.SlowPathPer1000}}</td><td>{{.Predicted.SKBReturns}}</td><td>{{.Predicted.Releases}}</td>{{else}}<td>–</td><td>–</td><td>–</td>{{end}}</tr>
{{end}}</table>
{{range .References}}<h2>{{label $.Current}} against {{label .Kernel}}</h2>
<table><tr><th class="l">procedure</th><th class="l">figure</th><th>{{label .Kernel}}</th><th>{{label $.Current}}</th><th>{{label $.Current}} / {{label .Kernel}}</th></tr>
{{range .Comparison}}<tr><td class="l">{{.Procedure}}</td><td class="l">{{.Figure}}</td><td>{{figure .Previous}}</td><td>{{figure .Current}}</td><td>{{ratio .}}</td></tr>
{{end}}</table>{{end}}
{{range .All}}<h2 id="{{.Kernel}}-{{.Procedure}}">{{.Procedure}} — {{.Kernel}}</h2>
<p>{{.Description}}. Paths: {{range $i, $p := .Paths}}{{if $i}}, {{end}}<code>{{$p}}</code>{{end}}.</p>{{if .Seed}}
<p>Drawn from seed {{.Seed}}: <code>ppkit test {{.Procedure}} --seed {{.Seed}}</code> replays it.</p>{{end}}
{{with .PathCounters}}<p class="counters">Kernel counters over the traffic: {{range $k, $v := .}}<code>{{$k}}</code> {{$v}}; {{end}}</p>{{end}}
{{if .Reasons}}<ul class="reasons">{{range groups .Reasons}}<li class="fail">{{.Kind}}: {{.Detail}}{{if gt .Count 1}} <b>×{{.Count}}</b>{{end}}</li>{{end}}</ul>{{end}}
{{range .Culprits}}<h3 class="culprit">Culprit of {{.Violation}}: page pfn {{.Pfn}}</h3>
<p>{{.Detail}} (trace line {{.Line}}). The page's life in the trace, from its allocation by the pool:</p>
<table class="history"><tr><th>line</th><th>time</th><th>CPU</th><th class="l">task</th><th class="l">context</th><th class="l">event</th><th class="l">fields</th></tr>
{{range .History}}<tr><td>{{.Line}}</td><td>{{.Timestamp}}</td><td>{{.CPU}}</td><td class="l">{{.Task}}</td><td class="l">{{.Context}}</td><td class="l">{{.Event}}</td><td class="l"><code>{{.Fields}}</code></td></tr>
{{end}}</table>{{if .Omitted}}<p>({{.Omitted}} events in the middle of this page's life are left out.)</p>{{end}}
{{end}}
<h3>Inflight per pool over time</h3>
{{svg .Pools}}
<table><tr><th class="l">pool</th><th>holds</th><th>releases</th><th>SKB returns</th><th class="l">destroyed</th><th>final inflight</th></tr>
{{range $i, $p := .Pools}}<tr><td class="l"><span class="sw" style="{{color $i}}"></span> <code>{{.Pool}}</code></td><td>{{.Holds}}</td><td>{{.Releases}}</td><td>{{.SKBReturns}}</td><td class="l">{{.Destroyed}}</td><td>{{.FinalInflight}}</td></tr>
{{end}}</table>
{{if .Traffic.Notes}}<pre>{{range .Traffic.Notes}}{{.}}
{{end}}</pre>{{end}}
{{range console .Console}}<h3 class="console">Console: {{.Title}}{{if gt .Count 1}} (×{{.Count}}; the first){{end}}</h3><pre>{{.Report}}</pre>{{end}}
{{with .Model}}{{range .Violations}}<h3>Model: {{.Name}}</h3><pre>{{.Detail}}</pre>{{end}}{{end}}
{{$r := .}}{{with index $.Links .Artifacts}}{{$l := .}}<p>Artifacts: {{range $r.TraceFiles}}<a href="{{$l}}/{{.}}">{{.}}</a>, {{end}}<a href="{{.}}/console.txt">console.txt</a>, <a href="{{.}}/">all</a></p>{{else}}{{if .Artifacts}}<p>Artifacts: <code>{{.Artifacts}}</code></p>{{end}}{{end}}
{{end}}
</body></html>
`))

// ratioText is a comparison's Current/Previous, with times as the multiplication sign ("x" in
// the terminal's table, "×" on the page).
func ratioText(l verdict.FigureChange, times string) string {
	if l.Previous == 0 {
		return "n/a"
	}
	s := strconv.FormatFloat(l.Ratio, 'f', 3, 64) + times
	if l.Ratio > 0 && l.Ratio < 1 {
		s += fmt.Sprintf(" (%.1f%s lower)", 1/l.Ratio, times)
	}
	return s
}

// WriteHTML writes the offline report page. Artifact directories below dir (the report's own
// directory; "" for none) are linked relative to it.
func WriteHTML(w io.Writer, s *verdict.Summary, dir string) error {
	data := struct {
		*verdict.Summary
		All     []*verdict.Result
		Current string            // the kernel under test
		Links   map[string]string // artifact directory → its link from the page
	}{s, s.All(), "", map[string]string{}}
	if len(s.Results) > 0 {
		data.Current = s.Results[0].Kernel
	}
	for _, r := range data.All {
		if dir == "" || r.Artifacts == "" {
			continue
		}
		if rel, err := filepath.Rel(dir, r.Artifacts); err == nil && !strings.HasPrefix(rel, "..") {
			data.Links[r.Artifacts] = filepath.ToSlash(rel)
		}
	}
	if err := reportTemplate.Execute(w, data); err != nil {
		return fmt.Errorf("write HTML report: %w", err)
	}
	return nil
}

// WriteReportDir writes dir/index.html, dir/results.json and dir/junit.xml (artifacts of each
// procedure are already in their own subdirectories).
func WriteReportDir(dir string, s *verdict.Summary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report directory: %w", err)
	}
	write := func(name string, fn func(io.Writer) error) error {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		if err := fn(f); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	if err := write("index.html", func(w io.Writer) error { return WriteHTML(w, s, dir) }); err != nil {
		return err
	}
	if err := write("results.json", func(w io.Writer) error { return WriteJSON(w, s) }); err != nil {
		return err
	}
	all := s.All()
	return write("junit.xml", func(w io.Writer) error { return WriteJUnit(w, all) })
}
