package procedure

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// helperCacheDir is one build cache for the whole test binary, so the helpers are compiled
// once per arch; TestMain removes it.
var helperCacheDir string

func helperCache(t *testing.T) string {
	t.Helper()
	if helperCacheDir == "" {
		d, err := os.MkdirTemp("", "ppkit-helpers-test-")
		if err != nil {
			t.Fatal(err)
		}
		helperCacheDir = d
	}
	return helperCacheDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if helperCacheDir != "" {
		os.RemoveAll(helperCacheDir)
	}
	os.Exit(code)
}

// needCompiler returns the compiler for arch, failing under CI=true when it is missing.
func needCompiler(t *testing.T, arch string) string {
	t.Helper()
	cc, err := HelperCompiler(arch, runtime.GOARCH)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return cc
}

func TestBuildGuestHelpers(t *testing.T) {
	machines := map[string]elf.Machine{"arm64": elf.EM_AARCH64, "amd64": elf.EM_X86_64}
	for _, arch := range []string{"arm64", runtime.GOARCH} {
		t.Run(arch, func(t *testing.T) {
			cc := needCompiler(t, arch)
			cache := helperCache(t)
			names := []string{"pktlisten", "splicerecv", "zcrecv"}
			paths, err := BuildGuestHelpers(context.Background(), cc, arch, cache, names)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range names {
				f, err := elf.Open(paths[n])
				if err != nil {
					t.Fatalf("%s: %v", n, err)
				}
				if f.Machine != machines[arch] || f.Type != elf.ET_EXEC {
					t.Errorf("%s: machine %v type %v", n, f.Machine, f.Type)
				}
				for _, p := range f.Progs {
					if p.Type == elf.PT_INTERP {
						t.Errorf("%s is dynamically linked", n)
					}
				}
				f.Close()
			}
			// A second build with the same inputs reuses the cache.
			st, _ := os.Stat(paths["zcrecv"])
			time.Sleep(10 * time.Millisecond)
			again, err := BuildGuestHelpers(context.Background(), cc, arch, cache, names)
			if err != nil {
				t.Fatal(err)
			}
			st2, _ := os.Stat(again["zcrecv"])
			if again["zcrecv"] != paths["zcrecv"] || !st2.ModTime().Equal(st.ModTime()) {
				t.Errorf("rebuilt instead of reusing %s", paths["zcrecv"])
			}
			if !strings.Contains(paths["zcrecv"], "/guest-helpers/") {
				t.Errorf("cache path %s", paths["zcrecv"])
			}
		})
	}
}

// The helpers built for this machine run: bad usage exits 2 with a usage line, a missing
// interface exits 1 naming the failing step.
func TestGuestHelpersUsage(t *testing.T) {
	cc := needCompiler(t, runtime.GOARCH)
	cache := helperCache(t)
	paths, err := BuildGuestHelpers(context.Background(), cc, runtime.GOARCH, cache, []string{"pktlisten", "splicerecv", "zcrecv"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"pktlisten", nil, 2, "usage: pktlisten IFNAME"},
		{"pktlisten", []string{"nosuchif0"}, 1, "pktlisten: no such interface"},
		{"splicerecv", []string{"port"}, 2, "usage: splicerecv PORT"},
		{"zcrecv", []string{"70000"}, 2, "usage: zcrecv PORT"},
	} {
		out, err := exec.Command(paths[tc.name], tc.args...).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != tc.code || !strings.Contains(string(out), tc.out) {
			t.Errorf("%s %v: %v, output %q; want exit %d and %q", tc.name, tc.args, err, out, tc.code, tc.out)
		}
	}
}

func TestBuildGuestHelpersErrors(t *testing.T) {
	if _, err := HelperCompiler("riscv64", runtime.GOARCH); err == nil {
		t.Error("no error for an unknown arch")
	}
	if _, err := BuildGuestHelpers(context.Background(), "/nonexistent/cc", "arm64", t.TempDir(), []string{"zcrecv"}); err == nil {
		t.Error("no error for a missing compiler")
	}
	cc := needCompiler(t, runtime.GOARCH)
	if _, err := BuildGuestHelpers(context.Background(), cc, runtime.GOARCH, t.TempDir(), []string{"nope"}); err == nil {
		t.Error("no error for an unknown helper")
	}
}
