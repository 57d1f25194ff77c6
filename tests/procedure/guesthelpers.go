package procedure

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// The guest helpers are small C programs built without a C library (tests/procedure/guest/sys.h does the
// syscalls), so any bare cross compiler builds them, static, for the board.
//
//go:embed guest/*.c guest/*.h
var guestSources embed.FS

// GuestHelpers names the helpers and says what each is for.
var GuestHelpers = map[string]string{
	"pktlisten":  "AF_PACKET listener that makes packet_rcv clone each received skb",
	"splicerecv": "TCP receiver that splice()s the data through a pipe to /dev/null",
	"slowrecv":   "TCP receiver that reads slower than the sender writes, so its queue is pruned and collapsed",
	"zcrecv":     "TCP receiver using getsockopt(TCP_ZEROCOPY_RECEIVE) on a mapping of the socket",
	"tracepages": "copies each CPU's ftrace ring-buffer pages to a virtio-serial port (the raw trace transport)",
}

// helperCFlags build a static, libc-free executable.
var helperCFlags = []string{"-static", "-nostdlib", "-ffreestanding", "-fno-builtin", "-fno-stack-protector",
	"-fno-asynchronous-unwind-tables", "-fno-pie", "-no-pie", "-O2", "-Wall", "-Wextra", "-Werror"}

// helperCompilers maps GOARCH to the C compiler that targets it.
var helperCompilers = map[string]string{"arm64": "aarch64-linux-gnu-gcc", "amd64": "x86_64-linux-gnu-gcc"}

// HelperCompiler returns the compiler for arch, falling back to plain gcc for the host's arch.
func HelperCompiler(arch, hostArch string) (string, error) {
	cc, ok := helperCompilers[arch]
	if !ok {
		return "", fmt.Errorf("guest helpers: no compiler known for %s (known: arm64, amd64)", arch)
	}
	if _, err := exec.LookPath(cc); err == nil {
		return cc, nil
	}
	if arch == hostArch {
		if _, err := exec.LookPath("gcc"); err == nil {
			return "gcc", nil
		}
	}
	return "", fmt.Errorf("guest helpers: %s not found; run harness/install-deps.sh (gcc-aarch64-linux-gnu)", cc)
}

// BuildGuestHelpers builds the named helpers for arch with cc, or reuses them from
// cacheRoot/guest-helpers/<hash>/, where the hash covers the sources, flags, arch and the
// compiler's version. It returns name → host path.
func BuildGuestHelpers(ctx context.Context, cc, arch, cacheRoot string, names []string) (map[string]string, error) {
	if len(names) == 0 {
		return map[string]string{}, nil
	}
	ver, err := exec.CommandContext(ctx, cc, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("guest helpers: %s --version: %w", cc, err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "arch=%s\ncc=%s\nflags=%s\n", arch, strings.SplitN(string(ver), "\n", 2)[0], strings.Join(helperCFlags, " "))
	files, err := fs.Glob(guestSources, "guest/*")
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	for _, f := range files {
		data, err := guestSources.ReadFile(f)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(data))
		h.Write(data)
	}
	dir := filepath.Join(cacheRoot, "guest-helpers", hex.EncodeToString(h.Sum(nil))[:16])
	out := map[string]string{}
	var missing []string
	for _, n := range names {
		if _, ok := GuestHelpers[n]; !ok {
			return nil, fmt.Errorf("guest helpers: unknown helper %q", n)
		}
		out[n] = filepath.Join(dir, n)
		if _, err := os.Stat(out[n]); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("guest helpers: %w", err)
	}
	src, err := os.MkdirTemp(filepath.Dir(dir), "build-")
	if err != nil {
		return nil, fmt.Errorf("guest helpers: %w", err)
	}
	defer os.RemoveAll(src)
	for _, f := range files {
		data, _ := guestSources.ReadFile(f)
		if err := os.WriteFile(filepath.Join(src, filepath.Base(f)), data, 0o644); err != nil {
			return nil, fmt.Errorf("guest helpers: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("guest helpers: %w", err)
	}
	for _, n := range missing {
		tmp := filepath.Join(src, n+".bin")
		args := append(append([]string{}, helperCFlags...), "-o", tmp, filepath.Join(src, n+".c"))
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, cc, args...)
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("guest helpers: build %s with %s: %w: %s", n, cc, err, tail(stderr.Bytes(), 400))
		}
		// rename is atomic: a concurrent build of the same hash leaves one complete file.
		if err := os.Rename(tmp, out[n]); err != nil {
			return nil, fmt.Errorf("guest helpers: %w", err)
		}
	}
	return out, nil
}
