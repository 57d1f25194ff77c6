package mvnetaemu

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/internal/atomicfile"
	"github.com/ppkit/ppkit/internal/cachedir"
)

var update = flag.Bool("update", false, "rewrite qemu-patches/ from hw/net/mvneta.c, include/hw/net/mvneta.h and hw/net/mvneta-trace-events (needs git and the QEMU source of a 'ppkit qemu build')")

// modelFiles are the files the device patch creates, kept whole in this directory.
var modelFiles = []string{"hw/net/mvneta.c", "include/hw/net/mvneta.h"}

// traceEvents is the device's section of QEMU's hw/net/trace-events, which the device patch
// appends to that file, kept in this directory as traceEventsBlock.
const (
	traceEvents      = "hw/net/trace-events"
	traceEventsBlock = "hw/net/mvneta-trace-events"
)

// addedLines returns the lines a patch adds to a file it changes, without their "+".
func addedLines(patch []byte, path string) []byte {
	var out bytes.Buffer
	in := false
	for _, l := range strings.SplitAfter(string(patch), "\n") {
		switch {
		case strings.HasPrefix(l, "diff --git "):
			in = false
		case l == "+++ b/"+path+"\n":
			in = true
		case in && strings.HasPrefix(l, "+"):
			out.WriteString(l[1:])
		}
	}
	return out.Bytes()
}

// newFileContent returns what a patch writes into a file it creates.
func newFileContent(patch []byte, path string) ([]byte, bool) {
	lines := strings.SplitAfter(string(patch), "\n")
	for i := 0; i+1 < len(lines); i++ {
		if lines[i] != "--- /dev/null\n" || lines[i+1] != "+++ b/"+path+"\n" {
			continue
		}
		var out bytes.Buffer
		for _, l := range lines[i+3:] { // after the @@ -0,0 +1,N @@ line
			if !strings.HasPrefix(l, "+") {
				break
			}
			out.WriteString(l[1:])
		}
		return out.Bytes(), true
	}
	return nil, false
}

// TestDevicePatchCarriesTheModel keeps the first patch and the model files in this directory
// equal: the files are what developers edit, the patch is what QEMU gets.
func TestDevicePatchCarriesTheModel(t *testing.T) {
	if *update {
		regenerateSeries(t)
	}
	for _, f := range modelFiles {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := newFileContent(qemuSeries[0].Data, f)
		if !ok {
			t.Errorf("%s/%s does not create %s", PatchDir, qemuSeries[0].Name, f)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s/%s carries another %s than mvneta-emu/%s: run 'go test ./mvneta-emu -run TestDevicePatchCarriesTheModel -update'",
				PatchDir, qemuSeries[0].Name, f, f)
		}
	}
	want, err := os.ReadFile(traceEventsBlock)
	if err != nil {
		t.Fatal(err)
	}
	if got := addedLines(qemuSeries[0].Data, traceEvents); !bytes.Equal(got, want) {
		t.Errorf("%s/%s adds other lines to %s than mvneta-emu/%s: run 'go test ./mvneta-emu -run TestDevicePatchCarriesTheModel -update'",
			PatchDir, qemuSeries[0].Name, traceEvents, traceEventsBlock)
	}
}

// TestSeriesSplit checks the series is the three patches QEMU's maintainers review separately,
// each touching its own part of the tree, and that the device tree node is not dma-coherent
// (the Armada 3700's NETA is not; the guest must do the real board's cache maintenance).
func TestSeriesSplit(t *testing.T) {
	want := []struct {
		subject string
		files   *regexp.Regexp
	}{
		{"[PATCH 1/3] hw/net: ", regexp.MustCompile(`^(hw/net/(mvneta\.c|Kconfig|meson\.build|trace-events)|include/hw/net/mvneta\.h)$`)},
		{"[PATCH 2/3] hw/arm/virt: ", regexp.MustCompile(`^hw/arm/(virt\.c|Kconfig)$`)},
		{"[PATCH 3/3] hw/core/sysbus-fdt: ", regexp.MustCompile(`^hw/core/sysbus-fdt\.c$`)},
	}
	if len(qemuSeries) != len(want) {
		t.Fatalf("%d patches in %s, want %d", len(qemuSeries), PatchDir, len(want))
	}
	for i, p := range qemuSeries {
		if !strings.Contains(string(p.Data), "\nSubject: "+want[i].subject) {
			t.Errorf("%s: subject does not start with %q", p.Name, want[i].subject)
		}
		if !mailStart.Match(p.Data) {
			t.Errorf("%s is not git format-patch output", p.Name)
		}
		files := patchFiles(p.Data)
		if len(files) == 0 {
			t.Errorf("%s changes no file", p.Name)
		}
		for _, f := range files {
			if !want[i].files.MatchString(f) {
				t.Errorf("%s touches %s, outside its part", p.Name, f)
			}
		}
	}
	for _, p := range qemuSeries {
		for _, l := range strings.Split(string(p.Data), "\n") {
			if strings.HasPrefix(l, "+") && strings.Contains(l, "qemu_fdt_setprop") && strings.Contains(l, `"dma-coherent"`) {
				t.Errorf("%s adds a dma-coherent property: %s", p.Name, l)
			}
		}
	}
	if got := createdFiles(qemuSeries[0].Data); strings.Join(got, " ") != strings.Join(modelFiles, " ") {
		t.Errorf("the device patch creates %v, want %v", got, modelFiles)
	}
}

func TestSplitMails(t *testing.T) {
	from := "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
	a, b := from+"Subject: a\n\ndiff a\n", from+"Subject: b\n\ndiff b\n"
	if got := splitMails([]byte(a + b)); len(got) != 2 || string(got[0]) != a || string(got[1]) != b {
		t.Errorf("splitMails(a+b) = %q", got)
	}
	plain := "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-x\n+y\n"
	if got := splitMails([]byte(plain)); len(got) != 1 || string(got[0]) != plain {
		t.Errorf("a plain diff (the stamp of the single patch of earlier ppkit) = %q", got)
	}
}

// pristineFiles copies the files the series (and whatever series the cached tree carries)
// touches out of the QEMU source tree of an earlier 'ppkit qemu build' into a temporary
// directory, and reverts the cached tree's patches there: Debian's files, as the series
// finds them.
func pristineFiles(t *testing.T) string {
	t.Helper()
	cache, err := cachedir.Root()
	if err != nil {
		t.Fatal(err)
	}
	vs := extractedVersions(cache)
	if len(vs) == 0 {
		if os.Getenv("CI") == "true" || *update {
			t.Fatal("no QEMU source in the cache: run 'ppkit qemu build' first")
		}
		t.Skip("no QEMU source in the cache; run 'ppkit qemu build' first")
	}
	src := filepath.Join(cache, "qemu", "work", dirVersion(vs[0]), "src")
	stamp, _ := os.ReadFile(filepath.Join(src, appliedStamp))
	var all []byte
	for _, p := range qemuSeries {
		all = append(all, p.Data...)
	}
	dir := t.TempDir()
	for _, f := range patchFiles(append(all, stamp...)) {
		data, err := os.ReadFile(filepath.Join(src, f))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := atomicfile.Write(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if len(stamp) > 0 {
		if err := revertSeries(context.Background(), dir, stamp); err != nil {
			// The cached tree is wedged (see applySeries): Debian's files from the package.
			t.Logf("%v; extracting Debian's files from the source package", err)
			err := restorePristine(context.Background(), filepath.Dir(src), dir, patchFiles(append(all, stamp...)))
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, p := range qemuSeries {
		for _, f := range createdFiles(p.Data) {
			os.Remove(filepath.Join(dir, f))
		}
	}
	return dir
}

// TestSeriesAppliesToDebianSource applies the series, patch by patch as Build does, to Debian's
// versions of the files it touches, then applies it again (a no-op) and reverts it for another.
func TestSeriesAppliesToDebianSource(t *testing.T) {
	if _, err := exec.LookPath("patch"); err != nil {
		t.Fatal("patch(1) is missing: harness/install-deps.sh qemu installs it")
	}
	dir := pristineFiles(t)
	ctx := context.Background()
	before := snapshot(t, dir)
	if err := applySeries(ctx, dir, qemuSeries, nil); err != nil {
		t.Fatal(err)
	}
	for _, f := range modelFiles {
		got, _ := os.ReadFile(filepath.Join(dir, f))
		want, _ := os.ReadFile(f)
		if !bytes.Equal(got, want) {
			t.Errorf("after the series %s differs from mvneta-emu/%s", f, f)
		}
	}
	if err := applySeries(ctx, dir, qemuSeries, nil); err != nil {
		t.Fatalf("applying the same series again must be a no-op: %v", err)
	}
	// A series that fails in its last patch leaves the tree as the first one left it.
	applied := snapshot(t, dir)
	broken := append([]qemuPatch(nil), qemuSeries...)
	last := broken[len(broken)-1]
	broken[len(broken)-1] = qemuPatch{last.Name, bytes.ReplaceAll(last.Data, []byte("hw/core/sysbus-fdt.c"), []byte("hw/core/no-such-file.c"))}
	err := applySeries(ctx, dir, broken, nil)
	if err == nil || !strings.Contains(err.Error(), last.Name+" does not apply") {
		t.Fatalf("a series whose last patch does not apply: err = %v", err)
	}
	if after := snapshot(t, dir); after != before {
		t.Errorf("after a failed series the tree is not Debian's:\n%s", after)
	}
	if err := applySeries(ctx, dir, qemuSeries, nil); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, dir); after != applied {
		t.Error("the series applied after a failed one differs from the first application")
	}
}

// snapshot summarises a tree: every file's path and content.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || filepath.Base(p) == appliedStamp {
			return err
		}
		data, err := os.ReadFile(p)
		b.WriteString(p + "\n" + string(data))
		return err
	})
	return b.String()
}

// regenerateSeries rebuilds qemu-patches/ with git: Debian's files committed as the base, the
// series applied with git am, the first patch amended to carry the model files of this
// directory, and git format-patch writing the three patches again. Author, date and message
// of each patch are kept, so an unchanged model regenerates identical files.
func regenerateSeries(t *testing.T) {
	t.Helper()
	repo := pristineFiles(t)
	git := func(stdin []byte, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=ppkit", "-c", "user.email=ppkit@invalid", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = repo
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	git(nil, "init", "-q")
	git(nil, "add", "-A")
	git(nil, "commit", "-q", "-m", "Debian's QEMU 7.2")
	for i, p := range qemuSeries {
		git(p.Data, "am", "-q", "--committer-date-is-author-date")
		if i == 0 {
			for _, f := range modelFiles {
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(repo, f), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			block, err := os.ReadFile(traceEventsBlock)
			if err != nil {
				t.Fatal(err)
			}
			base := git(nil, "show", "HEAD~1:"+traceEvents)
			if err := os.WriteFile(filepath.Join(repo, traceEvents), append([]byte(base), block...), 0o644); err != nil {
				t.Fatal(err)
			}
			git(nil, "add", "-A")
			git(nil, "commit", "-q", "--amend", "--no-edit", "--allow-empty")
		}
	}
	out := filepath.Join(repo, ".series")
	git(nil, "format-patch", "-q", "--zero-commit", "--no-signature", "-o", out, "HEAD~"+strconv.Itoa(len(qemuSeries)))
	old, _ := filepath.Glob(filepath.Join(PatchDir, "*.patch"))
	for _, f := range old {
		os.Remove(f)
	}
	made, _ := filepath.Glob(filepath.Join(out, "*.patch"))
	for i, f := range made {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(PatchDir, filepath.Base(f)), data, 0o644); err != nil {
			t.Fatal(err)
		}
		qemuSeries[i] = qemuPatch{filepath.Base(f), data}
	}
	t.Logf("rewrote %d patches in %s", len(made), PatchDir)
}
