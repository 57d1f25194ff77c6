package harness

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/stgit"
)

// fakeKernelTree makes a small git tree shaped like a kernel (a Makefile, two C files).
func fakeKernelTree(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("git not installed (run harness/install-deps.sh)")
		}
		t.Skip("git not installed")
	}
	dir := filepath.Join(t.TempDir(), "linux")
	for name, body := range map[string]string{
		"Makefile":             "VERSION = 5\n",
		"net/core/page_pool.c": "#include <linux/types.h>\nint pool;\n",
		"net/core/skbuff.c":    "#include <linux/skbuff.h>\nint skb;\n",
	} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"commit", "-q", "-m", "base"}} {
		if _, err := git(ctx, dir, args...); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeSeries(t *testing.T, patches map[string]string, order ...string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range patches {
		os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "series"), []byte(strings.Join(order, "\n")+"\n"), 0o644)
	return dir
}

const probePatch = `page_pool: add a probe

From: A Developer <dev@example.com>

Signed-off-by: A Developer <dev@example.com>
---
diff --git a/net/core/page_pool.c b/net/core/page_pool.c
--- a/net/core/page_pool.c
+++ b/net/core/page_pool.c
@@ -1,2 +1,3 @@
 #include <linux/types.h>
 int pool;
+int probe;
`

const skbPatch = `skbuff: add a probe

From: A Developer <dev@example.com>

Signed-off-by: A Developer <dev@example.com>
---
diff --git a/net/core/skbuff.c b/net/core/skbuff.c
--- a/net/core/skbuff.c
+++ b/net/core/skbuff.c
@@ -1,2 +1,3 @@
 #include <linux/skbuff.h>
 int skb;
+int skb_probe;
`

func TestWorkTreeFollowsTheSeriesAndSparesTheUserTree(t *testing.T) {
	ctx := context.Background()
	user := fakeKernelTree(t)
	src, err := userKernelSource(ctx, user, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(src.id, "user-linux-") || len(src.commit) != 40 {
		t.Errorf("source %+v", src)
	}
	cache := filepath.Join(t.TempDir(), "work")
	series, err := stgit.ReadSeries(writeSeries(t, map[string]string{"probe.patch": probePatch}, "probe.patch"))
	if err != nil {
		t.Fatal(err)
	}
	work := cache
	if _, _, err := prepareWorkTree(ctx, work, src, series, nil, nil); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(work, "net/core/page_pool.c"))
	if !strings.Contains(string(got), "int probe;") {
		t.Fatalf("patch not applied in the work tree:\n%s", got)
	}
	untouched := filepath.Join(work, "net/core/skbuff.c")
	mtimes := func() map[string]time.Time {
		m := map[string]time.Time{}
		for _, f := range []string{"Makefile", "net/core/page_pool.c", "net/core/skbuff.c"} {
			st, err := os.Stat(filepath.Join(work, f))
			if err != nil {
				t.Fatal(err)
			}
			m[f] = st.ModTime()
		}
		return m
	}
	// Each step must rewrite exactly the files whose content changes (so the out-of-tree build
	// stays incremental), and leave them as the series says.
	step := func(what string, s *stgit.Series, rewritten ...string) {
		t.Helper()
		before := mtimes()
		time.Sleep(20 * time.Millisecond)
		if _, _, err := prepareWorkTree(ctx, cache, src, s, nil, nil); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		after := mtimes()
		for f, m := range before {
			want := slices.Contains(rewritten, f)
			if got := !after[f].Equal(m); got != want {
				t.Errorf("%s: %s rewritten = %v, want %v", what, f, got, want)
			}
		}
	}
	content := func(f string) string {
		b, _ := os.ReadFile(filepath.Join(work, f))
		return string(b)
	}

	// The next prefix rewrites only its own patch's file, not the first patch's again.
	two, err := stgit.ReadSeries(writeSeries(t, map[string]string{"probe.patch": probePatch, "skb.patch": skbPatch}, "probe.patch", "skb.patch"))
	if err != nil {
		t.Fatal(err)
	}
	step("prefix 1 to 2", two, "net/core/skbuff.c")
	if !strings.Contains(content("net/core/page_pool.c"), "int probe;") || !strings.Contains(content("net/core/skbuff.c"), "int skb_probe;") {
		t.Fatalf("two patches not in the work tree:\n%s\n%s", content("net/core/page_pool.c"), content("net/core/skbuff.c"))
	}
	step("the same series again", two)
	step("back to prefix 1", series, "net/core/skbuff.c")

	// Back to the baseline: the patched file is restored, the others keep their mtime.
	step("prefix 1 to baseline", nil, "net/core/page_pool.c")
	if strings.Contains(content("net/core/page_pool.c"), "probe") || strings.Contains(content("net/core/skbuff.c"), "probe") {
		t.Error("baseline work tree still has a patch")
	}

	// A file changed behind git's back is put back as the series has it.
	os.WriteFile(filepath.Join(work, "net/core/skbuff.c"), []byte("edited\n"), 0o644)
	os.WriteFile(filepath.Join(work, "stray.o"), nil, 0o644)
	step("after a stray edit", nil, "net/core/skbuff.c")
	if content("net/core/skbuff.c") != "#include <linux/skbuff.h>\nint skb;\n" {
		t.Errorf("edited file not restored: %q", content("net/core/skbuff.c"))
	}
	if _, err := os.Stat(filepath.Join(work, "stray.o")); err == nil {
		t.Error("an untracked file survived")
	}

	// A patch that does not apply is refused before the work tree changes.
	bad, err := stgit.ReadSeries(writeSeries(t, map[string]string{"bad.patch": strings.Replace(probePatch, " int pool;", " int other;", 1)}, "bad.patch"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := prepareWorkTree(ctx, cache, src, bad, nil, nil); err == nil || !strings.Contains(err.Error(), "bad.patch") {
		t.Errorf("bad patch: err = %v, want one naming bad.patch", err)
	}

	// A new commit in the user's tree is fetched into the work tree on the next build.
	os.WriteFile(filepath.Join(user, "net/core/skbuff.c"), []byte("int skb2;\n"), 0o644)
	if _, err := git(ctx, user, "commit", "-q", "-am", "second"); err != nil {
		t.Fatal(err)
	}
	src2, err := userKernelSource(ctx, user, "")
	if err != nil || src2.commit == src.commit || src2.id != src.id {
		t.Fatalf("after a commit: %+v, %v (was %+v)", src2, err, src)
	}
	if _, _, err := prepareWorkTree(ctx, cache, src2, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(untouched); string(got) != "int skb2;\n" {
		t.Errorf("work tree not at the new commit: %q", got)
	}

	// The user's tree is untouched: same files, no stash, no worktree, no new refs.
	if out, _ := git(ctx, user, "status", "--porcelain"); out != "" {
		t.Errorf("user tree changed: %q", out)
	}
	if out, _ := git(ctx, user, "worktree", "list"); strings.Count(out, "\n") != 0 {
		t.Errorf("a worktree was added to the user's repository: %q", out)
	}
	if data, _ := os.ReadFile(filepath.Join(user, "net/core/page_pool.c")); strings.Contains(string(data), "probe") {
		t.Error("user tree patched")
	}
}

func TestKernelSourceErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := userKernelSource(ctx, t.TempDir(), ""); err == nil || !strings.Contains(err.Error(), "Makefile") {
		t.Errorf("empty dir: err = %v", err)
	}
	notGit := t.TempDir()
	os.WriteFile(filepath.Join(notGit, "Makefile"), []byte("x"), 0o644)
	if _, err := userKernelSource(ctx, notGit, ""); err == nil || !strings.Contains(err.Error(), "has no commit") {
		t.Errorf("non-git tree: err = %v", err)
	}
	if _, err := tarballKernelSource(ctx, t.TempDir(), "/nonexistent/linux.tar.xz", nil); err == nil || !strings.Contains(err.Error(), "install-deps.sh") {
		t.Errorf("missing tarball: err = %v", err)
	}
	if _, err := stgit.ReadSeries(t.TempDir()); err == nil {
		t.Error("a directory without a series file was accepted")
	}
}

func TestKernelVersion(t *testing.T) {
	dir := t.TempDir()
	mk := filepath.Join(dir, "Makefile")
	if err := os.WriteFile(mk, []byte("# SPDX\nVERSION = 5\nPATCHLEVEL = 10\nSUBLEVEL = 223\nEXTRAVERSION =\nNAME = Dare mighty things\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, err := kernelVersion(mk); err != nil || v != "5.10.223" {
		t.Fatalf("got %q, %v", v, err)
	}
	if err := os.WriteFile(mk, []byte("all:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := kernelVersion(mk); err == nil {
		t.Fatal("a Makefile without a version was accepted")
	}
}

// The import commit is the one patches/README.md spells out, whatever identity, dates, hooks
// or repository variables the caller's environment carries: the series' "applies on GIT commit"
// line names it on every machine.
func TestCommitImportIgnoresCallerEnvironment(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	ctx := context.Background()
	tree := func() string {
		dir := filepath.Join(t.TempDir(), "linux-source-5.10")
		os.MkdirAll(filepath.Join(dir, "net"), 0o755)
		os.WriteFile(filepath.Join(dir, "Makefile"), []byte("VERSION = 5\nPATCHLEVEL = 10\nSUBLEVEL = 223\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "net", "x.c"), []byte("int x;\n"), 0o644)
		for _, args := range [][]string{{"init", "-q"}, {"add", "-f", "."}} {
			if _, err := git(ctx, dir, args...); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	// As patches/README.md does it, in a clean environment.
	want := tree()
	cmd := exec.Command("git", "-c", "user.name=ppkit", "-c", "user.email=ppkit@localhost", "-c", "commit.gpgsign=false",
		"commit", "-q", "-m", "Import Debian linux-source-5.10 5.10.223")
	cmd.Dir = want
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH"), "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_DATE=2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2000-01-01T00:00:00Z"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference commit: %v\n%s", err, out)
	}
	wantSHA, _ := git(ctx, want, "rev-parse", "HEAD")

	got := tree()
	for k, v := range map[string]string{"GIT_AUTHOR_NAME": "Someone Else", "GIT_AUTHOR_EMAIL": "else@example.org",
		"GIT_COMMITTER_NAME": "Someone Else", "GIT_AUTHOR_DATE": "2024-05-05T00:00:00Z",
		"GIT_DIR": filepath.Join(t.TempDir(), "elsewhere.git"), "GIT_INDEX_FILE": filepath.Join(t.TempDir(), "index")} {
		t.Setenv(k, v)
	}
	if err := commitImport(ctx, got, "linux-source-5.10"); err != nil {
		t.Fatal(err)
	}
	if gotSHA, _ := git(ctx, got, "rev-parse", "HEAD"); gotSHA != wantSHA || wantSHA == "" {
		t.Errorf("import commit %s, want %s (patches/README.md's recipe)", gotSHA, wantSHA)
	}
}

// The trace events patch applies after the series to the lines it hooks wherever the series
// moved them, and names itself, not the series, when those lines are gone.
func TestTraceEventsPatchFollowsTheSeries(t *testing.T) {
	ctx := context.Background()
	user := fakeKernelTree(t)
	hooked := map[string]string{
		"arch/arm64/mm/dma-mapping.c": "// SPDX-License-Identifier: GPL-2.0-only\n/*\n * Copyright (C) 2012 ARM Ltd.\n */\n\n" +
			"#include <linux/gfp.h>\n#include <linux/cache.h>\n#include <linux/dma-map-ops.h>\n#include <linux/dma-iommu.h>\n" +
			"#include <xen/xen.h>\n#include <xen/swiotlb-xen.h>\n\n#include <asm/cacheflush.h>\n\n" +
			"void arch_sync_dma_for_device(phys_addr_t paddr, size_t size,\n\t\tenum dma_data_direction dir)\n{\n" +
			"\t__dma_map_area(phys_to_virt(paddr), size, dir);\n}\n\n",
		"net/core/page_pool.c": "#include <linux/types.h>\nint pool;\n#include <linux/poison.h>\n\n#include <trace/events/page_pool.h>\n\n" +
			"#define DEFER_TIME (msecs_to_jiffies(1000))\n#define DEFER_WARN_INTERVAL (60 * HZ)\n\n" +
			"void page_pool_put_page(struct page_pool *pool, struct page *page,\n\t\t\tunsigned int dma_sync_size, bool allow_direct)\n{\n" +
			"\t/* This allocator is optimized for the XDP mode that uses\n\t * one-frame-per-page.\n\t */\n}\n",
	}
	for name, body := range hooked {
		os.MkdirAll(filepath.Dir(filepath.Join(user, name)), 0o755)
		if err := os.WriteFile(filepath.Join(user, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := git(ctx, user, "add", "."); err != nil {
		t.Fatal(err)
	}
	if _, err := git(ctx, user, "commit", "-q", "-m", "hooked lines"); err != nil {
		t.Fatal(err)
	}
	src, err := userKernelSource(ctx, user, "")
	if err != nil {
		t.Fatal(err)
	}
	// The series moves page_pool_put_page down by a line; the patch follows it.
	moves := strings.Replace(probePatch, "@@ -1,2 +1,3 @@\n #include <linux/types.h>\n int pool;\n+int probe;\n",
		"@@ -1,3 +1,4 @@\n #include <linux/types.h>\n int pool;\n+int probe;\n #include <linux/poison.h>\n", 1)
	series, err := stgit.ReadSeries(writeSeries(t, map[string]string{"probe.patch": moves}, "probe.patch"))
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(t.TempDir(), "work")
	if _, _, err := prepareWorkTree(ctx, work, src, series, traceEventsPatch, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ file, want string }{
		{"net/core/page_pool.c", "int pool;\nint probe;\n"},
		{"net/core/page_pool.c", "#include <trace/events/page_pool.h>\n#include <trace/events/ppkit.h>\n"},
		{"net/core/page_pool.c", "{\n\ttrace_page_pool_put_page(page_pool_get_dma_addr(page), dma_sync_size,\n"},
		{"arch/arm64/mm/dma-mapping.c", "#define CREATE_TRACE_POINTS\n#include <trace/events/ppkit.h>\n"},
		{"arch/arm64/mm/dma-mapping.c", "{\n\ttrace_arch_sync_dma_for_device(paddr, size, dir);\n"},
		{"include/trace/events/ppkit.h", "TRACE_EVENT(page_pool_put_page,"},
	} {
		got, err := os.ReadFile(filepath.Join(work, c.file))
		if err != nil || !strings.Contains(string(got), c.want) {
			t.Errorf("%s lacks %q (%v):\n%s", c.file, c.want, err, got)
		}
	}

	// A tree without the hooked lines: the error names the patch and the file, and the work
	// tree keeps what it had.
	bare := fakeKernelTree(t)
	src2, err := userKernelSource(ctx, bare, "")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = prepareWorkTree(ctx, filepath.Join(t.TempDir(), "work"), src2, nil, traceEventsPatch, nil)
	if err == nil || !strings.Contains(err.Error(), TraceEventsFile) || !strings.Contains(err.Error(), "do not apply after the series") {
		t.Fatalf("error %v, want one naming %s", err, TraceEventsFile)
	}
}
