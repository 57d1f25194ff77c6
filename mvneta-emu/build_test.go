package mvnetaemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestInputsKeyCoversModelPatchAndConfigure(t *testing.T) {
	base := InputsKey()
	if base != InputsKey() {
		t.Fatal("InputsKey is not deterministic")
	}
	for name, mutate := range map[string]func() func(){
		"model": func() func() {
			old := modelC
			modelC = append(append([]byte{}, old...), ' ')
			return func() { modelC = old }
		},
		"header": func() func() {
			old := modelH
			modelH = append(append([]byte{}, old...), ' ')
			return func() { modelH = old }
		},
		"patch": func() func() {
			old := qemuPatch
			qemuPatch = append(append([]byte{}, old...), '\n')
			return func() { qemuPatch = old }
		},
		"configure": func() func() {
			old := ConfigureArgs
			ConfigureArgs = append(append([]string{}, old...), "--enable-debug")
			return func() { ConfigureArgs = old }
		},
	} {
		restore := mutate()
		if InputsKey() == base {
			t.Errorf("changing the %s does not change the cache key", name)
		}
		restore()
	}
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
	old := modelC
	modelC = []byte("older model")
	defer func() { modelC = old }()
	if _, ok := CachedBinary(cache); ok {
		t.Error("a binary of different model sources is reported as cached")
	}
}

func TestApplyPatchRevertsAnEarlierOne(t *testing.T) {
	if _, err := exec.LookPath("patch"); err != nil {
		t.Skip("patch(1) not installed")
	}
	ctx := context.Background()
	src := t.TempDir()
	orig := "one\ntwo\nthree\n"
	os.WriteFile(filepath.Join(src, "f.txt"), []byte(orig), 0o644)
	p1 := []byte("--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n")
	p2 := []byte("--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n one\n two\n-three\n+THREE\n")
	read := func() string { b, _ := os.ReadFile(filepath.Join(src, "f.txt")); return string(b) }
	if err := applyPatch(ctx, src, p1); err != nil {
		t.Fatal(err)
	}
	if read() != "one\nTWO\nthree\n" {
		t.Fatalf("after p1: %q", read())
	}
	if err := applyPatch(ctx, src, p1); err != nil {
		t.Fatalf("re-applying the same patch must be a no-op: %v", err)
	}
	if read() != "one\nTWO\nthree\n" {
		t.Fatalf("after p1 twice: %q", read())
	}
	if err := applyPatch(ctx, src, p2); err != nil {
		t.Fatal(err)
	}
	if read() != "one\ntwo\nTHREE\n" {
		t.Fatalf("after p2: %q (p1 must be reverted first)", read())
	}
	bad := []byte("--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n nope\n-nothing\n+x\n here\n")
	err := applyPatch(ctx, src, bad)
	if err == nil || !strings.Contains(err.Error(), "does not apply") {
		t.Fatalf("a patch that does not apply: err = %v", err)
	}
	if read() != orig {
		t.Errorf("after a failed apply the tree is %q, want the pristine %q", read(), orig)
	}
}

func TestIperfParsers(t *testing.T) {
	udp, _ := os.ReadFile("testdata/iperf-udp-client.txt")
	pps, loss, ok := udpServerReport(string(udp))
	if !ok {
		t.Fatal("UDP server report not found")
	}
	if want := float64(1204212-1151424) / 5.0043; pps < want-0.5 || pps > want+0.5 {
		t.Errorf("pps = %v, want %v", pps, want)
	}
	if loss < 0.956 || loss > 0.957 {
		t.Errorf("loss = %v, want 0.956", loss)
	}
	tcp, _ := os.ReadFile("testdata/iperf-tcp-client.txt")
	if got := lastRate(string(tcp)); got != 74.3 {
		t.Errorf("lastRate = %v, want 74.3", got)
	}
	if _, _, ok := udpServerReport(string(tcp)); ok {
		t.Error("a TCP report parsed as a UDP server report")
	}
}

func FuzzIperfParsers(f *testing.F) {
	for _, name := range []string{"testdata/iperf-udp-client.txt", "testdata/iperf-tcp-client.txt"} {
		b, _ := os.ReadFile(name)
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, s string) {
		if pps, loss, ok := udpServerReport(s); ok && (pps < 0 || loss < 0 || loss > 1) {
			t.Errorf("udpServerReport(%q) = %v, %v", s, pps, loss)
		}
		lastRate(s)
	})
}
