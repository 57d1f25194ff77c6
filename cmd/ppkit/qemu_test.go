package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mvnetaemu "github.com/ppkit/ppkit/mvneta-emu"
)

func TestQemuCommandUsage(t *testing.T) {
	for _, args := range [][]string{{"qemu"}, {"qemu", "frobnicate"}, {"qemu", "path", "extra"}, {"qemu", "build", "--no-such-flag"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("%v: exit code %d, want 2 (stderr %q)", args, code, errb.String())
		}
	}
}

func TestQemuPathWithoutBuild(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"qemu", "path", "--cache", t.TempDir()}, &out, &errb)
	if code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if !strings.Contains(errb.String(), "ppkit qemu build") || strings.Count(errb.String(), "\n") != 1 {
		t.Errorf("want one line naming the fix, got %q", errb.String())
	}
}

func TestQemuPathJSON(t *testing.T) {
	cache := t.TempDir()
	src := filepath.Join(cache, "qemu", "work", "qemu_7.2+dfsg-7+deb12u18", "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, ".ppkit-version"), []byte("1:7.2+dfsg-7+deb12u18\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"qemu", "path", "--cache", cache}, &out, &errb); code != 1 {
		t.Fatalf("a source tree without a binary: exit %d, want 1", code)
	}
	real, ok := mvnetaemu.CachedBinary("")
	if !ok {
		t.Log("no mvneta QEMU built on this machine: the --json shape is checked once one is")
		return
	}
	out.Reset()
	if code := run(context.Background(), []string{"qemu", "path", "--json"}, &out, &errb); code != 0 {
		t.Fatalf("qemu path --json: exit %d: %s", code, errb.String())
	}
	var got map[string]string
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got["binary"] != real || got["device"] != "mvneta" {
		t.Errorf("--json = %q (%v), want binary %s, device mvneta", out.String(), err, real)
	}
}
