//go:build e2e

package stgit

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/stgit/stgtest"
)

// checkSeries is a series with one defect per patch, on a scratch kernel holding the real
// checkpatch.pl of Linux 5.10.
func checkSeries(t *testing.T) (kernel, seriesFile string) {
	t.Helper()
	stgtest.Hermetic(t)
	stgtest.Require(t, "make", "perl", "aarch64-linux-gnu-gcc")
	kernel = stgtest.KernelRepo(t)
	stgtest.AddKernelScripts(t, kernel)
	ps := stgtest.DefaultPatches(5)
	// 2 breaks the build, 3 repairs it: the series only builds at the end.
	ps[1].Replace, ps[1].Line = 4, "int skb_counter_3 = ;"
	ps[2].Replace, ps[2].Line = 4, "int skb_counter_3 = 3;"
	// 4: no sign-off, no subsystem.
	ps[3].Subject, ps[3].NoSignoff = "Fix the counters", true
	// 5: a checkpatch error (open brace of a function on the same line).
	ps[4].Replace, ps[4].File, ps[4].Line = 0, "net/core/page_pool.c", "int page_pool_count(void) {\n\treturn page_pool_users;\n}"
	stgtest.Stack(t, kernel, ps)
	patches := filepath.Join(t.TempDir(), "patches")
	stgtest.Stg(t, kernel, "export", "-d", patches)
	return kernel, filepath.Join(patches, "series")
}

func TestCheckFindsEachDefect(t *testing.T) {
	ctx := context.Background()
	kernel, seriesFile := checkSeries(t)
	before := stgtest.Snapshot(t, kernel, filepath.Dir(seriesFile))
	r, _ := Open(ctx, kernel)
	s, err := ReadSeries(seriesFile)
	if err != nil {
		t.Fatal(err)
	}
	b := &MakeBuilder{OutDir: filepath.Join(t.TempDir(), "out"), Jobs: 1}
	rep, err := r.Check(ctx, s, CheckOptions{Builder: b})
	if err != nil {
		t.Fatal(err)
	}
	if stgtest.Snapshot(t, kernel, filepath.Dir(seriesFile)) != before {
		t.Fatal("check changed the tree, the stack or patches/")
	}
	js, _ := json.MarshalIndent(rep, "", "  ")
	if rep.OK || len(rep.Patches) != 5 {
		t.Fatalf("report:\n%s", js)
	}
	has := func(i int, check, sev, text string) bool {
		for _, f := range rep.Patches[i].Findings {
			if f.Check == check && f.Severity == sev && strings.Contains(f.Message, text) {
				return true
			}
		}
		return false
	}
	p := rep.Patches
	if !p[0].OK() || !p[0].Built {
		t.Errorf("patch 1 should pass: %+v", p[0])
	}
	if p[1].Built || !has(1, "build", "error", "skbuff.c") {
		t.Errorf("patch 2 should break the build: %+v", p[1])
	}
	if !p[2].Built || !p[2].OK() {
		t.Errorf("patch 3 should build again: %+v", p[2])
	}
	if !has(3, "signoff", "error", "Signed-off-by") || !has(3, "subject", "error", "subsystem: summary") {
		t.Errorf("patch 4 should fail sign-off and subject: %+v", p[3])
	}
	if !has(4, "checkpatch", "error", "OPEN_BRACE") || p[4].OK() {
		t.Errorf("patch 5 should fail checkpatch: %+v", p[4])
	}
	// --strict findings are reported without failing a patch.
	if !has(3, "checkpatch", "error", "MISSING_SIGN_OFF") {
		t.Errorf("checkpatch's own sign-off error missing: %+v", p[3])
	}
	strictSeen := false
	for _, pr := range p {
		for _, f := range pr.Findings {
			strictSeen = strictSeen || f.Severity == "check" || f.Severity == "warning"
		}
	}
	if !strictSeen {
		t.Errorf("no warning or strict check reported:\n%s", js)
	}
}
