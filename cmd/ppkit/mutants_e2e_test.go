//go:build e2e

package main

// The fast subset of the mutation suite: the combined-path mutant that no single-path procedure
// caught (a cloned pool head meeting the coalescing code), a driver mutant, and an equivalent
// mutant that must pass. The report of the killed mutant is looked at as a person would: in
// headless Chromium.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestMutantsFastSubset(t *testing.T) {
	needBoard(t)
	report := t.TempDir()
	cmd := exec.Command(builtPPKit(t), "test", "--mutants", "coalesce-release-before-clone-check,driver-releases-and-marks",
		"--time", "10s", "--json", "--report", report)
	cmd.Dir = checkoutRoot(t)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Logf("%s", lastLinesOf(stderr.String(), 8))
	if err != nil {
		t.Fatalf("ppkit test --mutants: %v\n%s\n%s", err, out, lastLinesOf(stderr.String(), 40))
	}
	var rep struct {
		Killed, Real int
		Mutants      []struct {
			Name   string
			Killed bool
			By     string
		}
	}
	if err := json.Unmarshal(out, &rep); err != nil || rep.Killed != 2 || rep.Real != 2 {
		t.Fatalf("report %+v (%v):\n%s", rep, err, out)
	}
	if rep.Mutants[0].By != "tcp-capture" {
		t.Errorf("coalesce-release-before-clone-check killed by %q, want tcp-capture (its first procedure)", rep.Mutants[0].By)
	}
	page := filepath.Join(report, "coalesce-release-before-clone-check", "index.html")
	html, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	checkFailingReport(t, string(html))
	screenshot(t, page, filepath.Join(report, "coalesce-release-before-clone-check", "report.png"))

	// An equivalent mutant passes the procedures the killed ones failed.
	eq := exec.Command(builtPPKit(t), "test", "--mutants", "equivalent-mem-id-compare", "--time", "10s", "multicast", "tcp-capture")
	eq.Dir = checkoutRoot(t)
	if out, err := eq.CombinedOutput(); err != nil || !strings.Contains(string(out), "1/1 equivalent mutants pass") {
		t.Errorf("equivalent mutant: %v\n%s", err, lastLinesOf(string(out), 30))
	}
}

// checkFailingReport: a failing procedure's reasons are grouped (no reason line twice) and the
// first bad page's history is a table of at least two events.
func checkFailingReport(t *testing.T, html string) {
	t.Helper()
	_, reasons, ok := strings.Cut(html, `<ul class="reasons">`)
	if !ok {
		t.Fatal("the report lists no reasons")
	}
	reasons, _, _ = strings.Cut(reasons, "</ul>")
	seen := map[string]bool{}
	for _, li := range strings.Split(reasons, "<li") {
		if li = strings.TrimSpace(li); li != "" && seen[li] {
			t.Errorf("reason listed twice, not grouped: %s", li)
		}
		seen[li] = true
	}
	_, culprit, ok := strings.Cut(html, `<h3 class="culprit">`)
	if !ok {
		t.Fatal("the report names no culprit page")
	}
	if rows := strings.Count(strings.SplitN(culprit, "</table>", 2)[0], "<tr>"); rows < 3 { // header + 2 events
		t.Errorf("the culprit's history has %d rows", rows)
	}
	if !strings.Contains(html, `/trace.txt">trace.txt</a>`) || !strings.Contains(html, `/console.txt">console.txt</a>`) {
		t.Errorf("the report does not link trace.txt and console.txt")
	}
}

// screenshot renders page in headless Chromium to png and checks that it drew a page.
func screenshot(t *testing.T, page, png string) {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium not found (run harness/install-deps.sh)")
		}
		t.Skip("chromium not found")
	}
	profile := t.TempDir()
	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+profile,
		"--window-size=1280,2400", "--screenshot="+png, "file://"+page)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	st, err := os.Stat(png)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if st.Size() < 20000 {
		t.Fatalf("screenshot %s: %d bytes, too small for a rendered report", png, st.Size())
	}
	t.Logf("report screenshot: %s (%d bytes)", png, st.Size())
}
