package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/tests/internal/golden"
	"github.com/ppkit/ppkit/tests/procedure"
	"github.com/ppkit/ppkit/tests/verdict"
)

// sampleSummary is a --compare run: baseline and series for multicast, series tcp failing.
func sampleSummary() *verdict.Summary {
	started := time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC)
	timeline := func(peak int64) []verdict.InflightPoint {
		var pts []verdict.InflightPoint
		for i := int64(0); i <= peak; i++ {
			pts = append(pts, verdict.InflightPoint{Time: 10 + float64(i)/100, Inflight: i})
		}
		return append(pts, verdict.InflightPoint{Time: 12, Inflight: 0})
	}
	base := &verdict.Result{Procedure: "multicast", Description: (&procedure.Multicast{}).Description(), Paths: (&procedure.Multicast{}).Paths(),
		Kernel: "baseline", Started: started, Duration: 41 * time.Second,
		Figures: verdict.Figures{Packets: 84000, BitsPerSecond: 412e6, SlowPathAllocs: 84010, SlowPathPer1000: 1000.1, Releases: 88100, Holds: 88100},
		Model:   &verdict.ModelReport{Predicted: verdict.ModelFigures{SlowPathPer1000: 1000.1, Releases: 88100}},
		Pools:   []verdict.PoolFigures{{Pool: "00000000c0ffee01", Holds: 88100, Releases: 88100, Destroyed: true, Timeline: timeline(5)}},
		Pass:    true}
	series := &verdict.Result{Procedure: "multicast", Description: base.Description, Paths: base.Paths,
		Kernel: "series /src/patches", Started: started, Duration: 39 * time.Second,
		Figures: verdict.Figures{Packets: 86000, BitsPerSecond: 420e6, SlowPathAllocs: 430, SlowPathPer1000: 5, SKBReturns: 85570, Releases: 4526, Holds: 4526},
		Model:   &verdict.ModelReport{Predicted: verdict.ModelFigures{SlowPathPer1000: 5, SKBReturns: 85570, Releases: 4526}},
		Pools: []verdict.PoolFigures{{Pool: "00000000c0ffee01", Holds: 4526, Releases: 4526, SKBReturns: 85570, Destroyed: true, Timeline: timeline(8)},
			{Pool: "00000000c0ffee02", Holds: 512, Releases: 512, Destroyed: true, Timeline: timeline(3)}},
		Traffic: verdict.Traffic{Notes: []string{"packet socket: packets=86010 bytes=126434700"}},
		Pass:    true}
	tcp := &verdict.Result{Procedure: "tcp", Description: (&procedure.TCP{}).Description(), Paths: (&procedure.TCP{}).Paths(),
		Kernel: "series /src/patches", Started: started, Duration: 35 * time.Second,
		Figures: verdict.Figures{Packets: 50000, BitsPerSecond: 300e6, SlowPathAllocs: 900, SlowPathPer1000: 18, SKBReturns: 1200, Releases: 40000},
		Console: []verdict.ConsoleReport{{Title: "BUG: Bad page state in process iperf", Report: "BUG: Bad page state in process iperf  pfn:4a3c1\npage:(____ptrval____) refcount:0"},
			{Title: "BUG: Bad page state in process iperf", Report: "BUG: Bad page state in process iperf  pfn:4a3c2\n(second)"}},
		Reasons: []verdict.Reason{{Kind: verdict.ReasonViolation, Detail: "dma-mapped-page-freed: page pfn=303041 freed while mapped by pool 00000000c0ffee01"},
			{Kind: verdict.ReasonConsole, Detail: "BUG: Bad page state in process iperf"}, {Kind: verdict.ReasonConsole, Detail: "BUG: Bad page state in process iperf"}},
		Culprits: []verdict.Culprit{{Violation: "dma-mapped-page-freed", Detail: "trace line 9: pfn 303041: freed while mapped", Pfn: 303041, Line: 9,
			History: []gomodel.PageEvent{
				{Line: 3, Timestamp: "10.000001", Task: "<idle>-0", CPU: 1, Context: "softirq", Event: "page_pool_state_hold", Fields: "page_pool=00000000c0ffee01 page=00000000bb pfn=303041 hold=7"},
				{Line: 9, Timestamp: "10.000004", Task: "iperf-412", CPU: 0, Context: "process", Event: "mm_page_free", Fields: "page=00000000bb pfn=303041 order=0"}}}},
		Model: &verdict.ModelReport{Violations: []verdict.ModelViolation{{Name: "dma-mapped-page-freed", Detail: "page pfn=303041 freed while mapped\nhistory: hold, build_skb, skb_try_coalesce, put_page"}}}}
	infra := &verdict.Result{Procedure: "copy", Description: (&procedure.Copy{}).Description(), Paths: (&procedure.Copy{}).Paths(),
		Kernel: "series /src/patches", Started: started, Duration: 2 * time.Second,
		Reasons: []verdict.Reason{{Kind: verdict.ReasonInfra, Detail: "launch the board: qemu-system-aarch64 exited: status 1"}}}
	s := &verdict.Summary{Board: "QEMU arm64 virt, emulated mvneta (2 CPUs)", References: []verdict.Reference{{Kernel: "baseline", Results: []*verdict.Result{base}}},
		Results: []*verdict.Result{series, tcp, infra}}
	for _, r := range s.All() {
		r.Verdict = verdict.VerdictOf(r.Reasons)
	}
	s.References[0].Comparison = verdict.CompareFigures(s.References[0].Results, s.Results, -1)
	return s
}

func TestWriteTableGolden(t *testing.T) {
	s := sampleSummary()
	var b bytes.Buffer
	WriteTable(&b, s.All())
	b.WriteString("\n")
	WriteComparison(&b, s)
	golden.Compare(t, "testdata/golden/table.txt", b.Bytes())
}

func TestWriteJUnitGolden(t *testing.T) {
	s := sampleSummary()
	var b bytes.Buffer
	if err := WriteJUnit(&b, s.All()); err != nil {
		t.Fatal(err)
	}
	golden.Compare(t, "testdata/golden/junit.xml", b.Bytes())
	// It is well-formed and counts right: 4 tests, 1 failure (tcp), 1 error (copy: infra only).
	var suites JUnitSuites
	if err := xml.Unmarshal(b.Bytes(), &suites); err != nil {
		t.Fatal(err)
	}
	if suites.Tests != 4 || suites.Failures != 1 || suites.Errors != 1 || len(suites.Suites) != 2 {
		t.Errorf("tests=%d failures=%d errors=%d suites=%d", suites.Tests, suites.Failures, suites.Errors, len(suites.Suites))
	}
}

func TestWriteHTMLGolden(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHTML(&b, sampleSummary(), ""); err != nil {
		t.Fatal(err)
	}
	golden.Compare(t, "testdata/golden/report.html", b.Bytes())
	page := b.String()
	for _, forbidden := range []string{"<script", "http://", "https://"} {
		// The only URL allowed is the SVG namespace, which is not fetched.
		if strings.Count(page, forbidden) != strings.Count(page, forbidden+"www.w3.org/2000/svg") {
			t.Errorf("the page is not self-contained: it has %q", forbidden)
		}
	}
	if n := strings.Count(page, "<svg"); n != 4 {
		t.Errorf("%d plots, want one per result (4)", n)
	}
	if !strings.Contains(page, "200.0× lower") {
		t.Errorf("the comparison lacks the slow-path ratio")
	}
	// Repeated reasons are grouped with a count; the culprit page's history is shown.
	if strings.Count(page, "console-report: BUG: Bad page state in process iperf") != 1 || !strings.Contains(page, "×2") {
		t.Errorf("repeated console reasons are not grouped")
	}
	if !strings.Contains(page, "Culprit of dma-mapped-page-freed: page pfn 303041") || !strings.Contains(page, "page_pool_state_hold") {
		t.Errorf("no culprit history")
	}
}

func TestInflightSVG(t *testing.T) {
	svg := InflightSVG(nil, 300, 100)
	if !strings.Contains(svg, "no page_pool events") {
		t.Errorf("empty plot: %s", svg)
	}
	// A long timeline is drawn with at most about two points per pixel column.
	var pts []verdict.InflightPoint
	for i := 0; i < 100000; i++ {
		pts = append(pts, verdict.InflightPoint{Time: float64(i) / 1000, Inflight: int64(i % 977)})
	}
	svg = InflightSVG([]verdict.PoolFigures{{Pool: "a<b", Timeline: pts}, {Pool: "p2", Timeline: pts[:10]}}, 720, 240)
	if strings.Count(svg, "<polyline") != 2 || strings.Contains(svg, "a<b") {
		t.Errorf("polylines or escaping wrong")
	}
	if n := strings.Count(svg, ","); n > 2*720+20 {
		t.Errorf("%d points drawn", n)
	}
	if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
		t.Errorf("not well-formed XML: %v", err)
	}
}

func TestDownsampleKeepsExtremes(t *testing.T) {
	var pts []verdict.InflightPoint
	for i := 0; i < 10000; i++ {
		v := int64(10)
		if i == 5003 {
			v = 999 // one spike
		}
		pts = append(pts, verdict.InflightPoint{Time: float64(i), Inflight: v})
	}
	out := downsample(pts, 50)
	if len(out) > 101 {
		t.Errorf("%d points", len(out))
	}
	found := false
	for _, p := range out {
		found = found || p.Inflight == 999
	}
	if !found {
		t.Error("the spike was lost")
	}
}

func TestWriteReportDir(t *testing.T) {
	dir := t.TempDir()
	if err := WriteReportDir(dir, sampleSummary()); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"index.html", "results.json", "junit.xml"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, "results.json"))
	var back verdict.Summary
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != 3 || len(back.References) != 1 || len(back.References[0].Results) != 1 || back.Results[1].Reasons[0].Kind != verdict.ReasonViolation {
		t.Errorf("results.json does not round-trip: %+v", back)
	}
}

// TestJUnitElementOfEachVerdict: a procedure whose verdict blames the kernel is a <failure>,
// one that could not be judged an <error>, a pass neither.
func TestJUnitElementOfEachVerdict(t *testing.T) {
	for _, tc := range []struct {
		kind, want string
	}{
		{"", ""},
		{verdict.ReasonViolation, "failure"},
		{verdict.ReasonKernelFailure, "failure"},
		{verdict.ReasonInfra, "error"},
		{verdict.ReasonModelError, "error"},
		{verdict.ReasonInterrupted, "error"},
	} {
		res := &verdict.Result{Procedure: "tcp", Kernel: "series /s"}
		if tc.kind != "" {
			res.Reasons = []verdict.Reason{{Kind: tc.kind, Detail: "d"}}
		}
		res.Verdict = verdict.VerdictOf(res.Reasons)
		c := JUnitOf([]*verdict.Result{res}).Suites[0].Cases[0]
		got := ""
		switch {
		case c.Failure != nil && c.Error == nil:
			got = "failure"
		case c.Error != nil && c.Failure == nil:
			got = "error"
		case c.Error != nil:
			got = "both"
		}
		if got != tc.want {
			t.Errorf("%s (%s): JUnit %q, want %q", tc.kind, res.Verdict, got, tc.want)
		}
	}
}
