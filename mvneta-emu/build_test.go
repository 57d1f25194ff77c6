package mvnetaemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInputsKeyCoversPatchesAndConfigure(t *testing.T) {
	base := InputsKey()
	if base != InputsKey() {
		t.Fatal("InputsKey is not deterministic")
	}
	for i := range qemuSeries {
		old := qemuSeries[i]
		qemuSeries[i].Data = append(append([]byte{}, old.Data...), '\n')
		if InputsKey() == base {
			t.Errorf("changing %s does not change the cache key", old.Name)
		}
		qemuSeries[i] = old
	}
	oldArgs := ConfigureArgs
	ConfigureArgs = append(append([]string{}, oldArgs...), "--enable-debug")
	if InputsKey() == base {
		t.Error("changing the configure arguments does not change the cache key")
	}
	ConfigureArgs = oldArgs
	if binaryKey("1:7.2+dfsg-7+deb12u18") == binaryKey("1:7.2+dfsg-7+deb12u19") {
		t.Error("the source version is not part of the binary key")
	}
}

func TestDirVersion(t *testing.T) {
	for in, want := range map[string]string{
		"1:7.2+dfsg-7+deb12u18": "qemu_7.2+dfsg-7+deb12u18",
		"7.2+dfsg-7":            "qemu_7.2+dfsg-7",
	} {
		if got := dirVersion(in); got != want {
			t.Errorf("dirVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCachedBinary(t *testing.T) {
	cache := t.TempDir()
	if _, ok := CachedBinary(cache); ok {
		t.Fatal("empty cache reports a binary")
	}
	const v = "1:7.2+dfsg-7+deb12u18"
	src := filepath.Join(cache, "qemu", "work", dirVersion(v), "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, ".ppkit-version"), []byte(v+"\n"), 0o644)
	if _, ok := CachedBinary(cache); ok {
		t.Fatal("a source tree without a built binary counts as cached")
	}
	bin := filepath.Join(cache, "qemu", binaryKey(v), BinaryName)
	os.MkdirAll(filepath.Dir(bin), 0o755)
	os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755)
	if got, ok := CachedBinary(cache); !ok || got != bin {
		t.Fatalf("CachedBinary = %q, %v; want %q", got, ok, bin)
	}
	// A binary built from other inputs (an older model) is not this model's binary.
	old := qemuSeries[0]
	qemuSeries[0].Data = []byte("older model")
	defer func() { qemuSeries[0] = old }()
	if _, ok := CachedBinary(cache); ok {
		t.Error("a binary of different model sources is reported as cached")
	}
}

func TestApplySeriesRevertsAnEarlierOne(t *testing.T) {
	if _, err := exec.LookPath("patch"); err != nil {
		t.Fatal("patch(1) is missing: harness/install-deps.sh qemu installs it")
	}
	ctx := context.Background()
	src := t.TempDir()
	orig := "one\ntwo\nthree\n"
	os.WriteFile(filepath.Join(src, "f.txt"), []byte(orig), 0o644)
	mail := func(subject, diff string) []byte {
		return []byte("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nSubject: " + subject + "\n\n---\n" + diff)
	}
	// Two patches of one series on the same file: the second needs the first.
	s1 := []qemuPatch{
		{"0001-a.patch", mail("a", "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n")},
		{"0002-b.patch", mail("b", "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n one\n TWO\n-three\n+THREE\n")},
		{"0003-c.patch", mail("c", "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+new\n")},
	}
	s2 := []qemuPatch{{"0001-z.patch", mail("z", "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n-one\n+ONE\n two\n three\n")}}
	read := func() string { b, _ := os.ReadFile(filepath.Join(src, "f.txt")); return string(b) }
	exists := func(f string) bool { _, err := os.Stat(filepath.Join(src, f)); return err == nil }
	// The single patch of earlier ppkit, plus the model file it copied in outside the patch.
	legacy := []byte("--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n one\n two\n-three\n+3\n")
	if out, err := runPatch(ctx, src, legacy); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(src, appliedStamp), legacy, 0o644)
	os.WriteFile(filepath.Join(src, "new.txt"), []byte("copied in by an earlier ppkit\n"), 0o644)

	if err := applySeries(ctx, src, s1, nil); err != nil {
		t.Fatal(err)
	}
	if read() != "one\nTWO\nTHREE\n" || !exists("new.txt") {
		t.Fatalf("after s1 over the legacy patch: %q, new.txt %v", read(), exists("new.txt"))
	}
	if err := applySeries(ctx, src, s1, nil); err != nil {
		t.Fatalf("re-applying the same series must be a no-op: %v", err)
	}
	// A series that changes one file only (as a model change does) leaves the others' times:
	// ninja rebuilds what changed, not everything the series touches.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	os.Chtimes(filepath.Join(src, "f.txt"), old, old)
	os.Chtimes(filepath.Join(src, "new.txt"), old, old)
	s1b := append(append([]qemuPatch{}, s1[:2]...), qemuPatch{"0003-c.patch", mail("c", "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+newer\n")})
	if err := applySeries(ctx, src, s1b, nil); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(src, "f.txt")); !fi.ModTime().Equal(old) {
		t.Errorf("f.txt, unchanged by the new series, has a new time %v", fi.ModTime())
	}
	if fi, _ := os.Stat(filepath.Join(src, "new.txt")); fi.ModTime().Equal(old) {
		t.Error("new.txt, changed by the new series, kept its old time")
	}
	if err := applySeries(ctx, src, s2, nil); err != nil {
		t.Fatal(err)
	}
	if read() != "ONE\ntwo\nthree\n" || exists("new.txt") {
		t.Fatalf("after s2: %q, new.txt %v (s1 must be reverted first, last patch first)", read(), exists("new.txt"))
	}
	// A tree whose series no longer reverts (an older ppkit copied its model over a file the
	// series created, then failed to revert) is restored from Debian's files, then patched.
	if err := applySeries(ctx, src, s1, nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "new.txt"), []byte("an older ppkit's model\n"), 0o644)
	if err := applySeries(ctx, src, s2, nil); err == nil {
		t.Fatal("a series that does not revert, and no way to restore: no error")
	}
	var restored []string
	restore := func(_ context.Context, files []string) error {
		restored = files
		os.WriteFile(filepath.Join(src, "f.txt"), []byte(orig), 0o644)
		os.Remove(filepath.Join(src, "new.txt"))
		return nil
	}
	if err := applySeries(ctx, src, s2, restore); err != nil {
		t.Fatal(err)
	}
	if read() != "ONE\ntwo\nthree\n" || exists("new.txt") || strings.Join(restored, " ") != "f.txt new.txt" {
		t.Fatalf("after restoring: %q, new.txt %v, restored %v", read(), exists("new.txt"), restored)
	}
	bad := append(append([]qemuPatch{}, s1[:2]...), qemuPatch{"0003-bad.patch", mail("bad", "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n nope\n-nothing\n+x\n here\n")})
	err := applySeries(ctx, src, bad, nil)
	if err == nil || !strings.Contains(err.Error(), "0003-bad.patch does not apply") {
		t.Fatalf("a series that does not apply: err = %v", err)
	}
	if read() != orig {
		t.Errorf("after a failed series the tree is %q, want the pristine %q", read(), orig)
	}
}
