//go:build e2e

package harness

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ppkit/ppkit/internal/cachedir"
	"github.com/ppkit/ppkit/internal/syncbuf"
)

// leftovers lists what this process's harness runs left behind: QEMU processes still alive
// (children of this process, or pids the harness started), network namespaces and temporary
// directories the harness created. Taps are created inside those namespaces and are not
// persistent: they exist only while a QEMU holds their descriptor, so no QEMU and no namespace
// means no tap. (Other ppkit runs on the machine may own taps and namespaces of their own;
// only what this process created is checked.)
func leftovers() []string {
	var out []string
	if b, _ := exec.Command("pgrep", "-a", "-P", fmt.Sprint(os.Getpid()), "qemu").Output(); len(b) > 0 {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			out = append(out, "child process "+l)
		}
	}
	pids, namespaces, dirs := created.snapshot()
	for _, pid := range pids {
		if data, err := os.ReadFile("/proc/" + pid + "/cmdline"); err == nil && strings.Contains(string(data), "qemu") {
			out = append(out, "QEMU pid "+pid)
		}
	}
	for _, ns := range namespaces {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			out = append(out, "netns "+ns)
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			out = append(out, "dir "+d)
		}
	}
	sort.Strings(out)
	return out
}

func TestMain(m *testing.M) {
	code := m.Run()
	if left := leftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "harness e2e: left behind after the tests:\n  %s\n", strings.Join(left, "\n  "))
		code = 99
	}
	pids, namespaces, dirs := created.snapshot()
	fmt.Fprintf(os.Stderr, "harness e2e: checked %d QEMU processes, %d namespaces, %d directories: all gone\n", len(pids), len(namespaces), len(dirs))
	os.Exit(code)
}

// requireTool skips when a prerequisite is missing, except in CI where it fails.
func requireTool(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (run harness/install-deps.sh)", tool)
		}
		t.Skipf("%s not found (run harness/install-deps.sh)", tool)
	}
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var (
	buildOnce sync.Once
	builtK    *Kernel
	builtImg  *Image
	buildErr  error
)

// guest returns the default kernel and image, building them once (or reusing the cache).
func guest(t *testing.T) (*Kernel, *Image) {
	t.Helper()
	requireTool(t, DefaultQEMU)
	requireTool(t, "aarch64-linux-gnu-gcc")
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
		defer cancel()
		builtK, buildErr = BuildKernel(ctx, KernelOptions{Progress: testLog{t}})
		if buildErr == nil {
			builtImg, buildErr = BuildImage(ctx, ImageOptions{Progress: testLog{t}})
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtK, builtImg
}

func boot(t *testing.T, ctx context.Context, opts BootOptions) *VM {
	t.Helper()
	k, img := guest(t)
	opts.Kernel, opts.Image = k, img
	opts.Progress = testLog{t}
	vm, err := Boot(ctx, opts)
	if err != nil {
		var ge *GuestError
		if errors.As(err, &ge) {
			t.Fatalf("boot: %v\n%s", err, ge.Details())
		}
		t.Fatalf("boot: %v", err)
	}
	t.Cleanup(func() { vm.Close() })
	t.Logf("SSH ready after %s", vm.BootTime)
	return vm
}

func TestBootRunCopyPoweroff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm := boot(t, ctx, BootOptions{})

	out, err := vm.Run(ctx, "cat /proc/version")
	if err != nil || !strings.Contains(string(out), "Linux version 5.10.") {
		t.Fatalf("cat /proc/version = %q, %v", out, err)
	}
	// Root's PATH, whatever the SSH server's own default (dropbear 2020.81: /usr/bin:/bin).
	if out, err := vm.Run(ctx, "echo $PATH"); err != nil || !strings.HasPrefix(strings.TrimSpace(string(out)), GuestPath+":") {
		t.Errorf("PATH of a guest command: %q, %v; want %s first", out, err, GuestPath)
	}
	_, err = vm.Run(ctx, "echo oops >&2; exit 3")
	var ce *CommandError
	if !errors.As(err, &ce) || ce.Status != 3 || strings.TrimSpace(string(ce.Stderr)) != "oops" {
		t.Errorf("exit 3: err = %v, want a CommandError with status 3 and stderr oops", err)
	}
	// The tracepoints the model checker reads, and the tracefs/debugfs mounts.
	if out, err := vm.Run(ctx, "ls -d /sys/kernel/tracing/events/page_pool /sys/kernel/tracing/events/skb /sys/kernel/tracing/events/kmem /sys/kernel/debug/tracing"); err != nil {
		t.Errorf("tracepoints: %v (%s)", err, out)
	}

	// SCP both ways, with a file big enough to span many SSH packets.
	dir := t.TempDir()
	data := make([]byte, 3<<20+123)
	rand.Read(data)
	up := filepath.Join(dir, "up.bin")
	if err := os.WriteFile(up, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := vm.CopyTo(ctx, up, "/tmp/up.bin", 0o640); err != nil {
		t.Fatal(err)
	}
	out, err = vm.Run(ctx, "stat -c '%s %a' /tmp/up.bin && cp /tmp/up.bin /tmp/down.bin")
	if err != nil || strings.TrimSpace(string(out)) != fmt.Sprintf("%d 640", len(data)) {
		t.Fatalf("remote stat = %q, %v", out, err)
	}
	down := filepath.Join(dir, "down.bin")
	if err := vm.CopyFrom(ctx, "/tmp/down.bin", down); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(down)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("round trip through the guest changed the file (%d bytes back, err %v)", len(got), err)
	}
	if err := vm.CopyFrom(ctx, "/tmp/missing", filepath.Join(dir, "x")); err == nil {
		t.Error("copying a missing guest file succeeded")
	}

	if st, err := vm.Status(); err != nil || st != "running" {
		t.Errorf("QMP status = %q, %v", st, err)
	}
	if r := vm.ConsoleReports(); len(r) > 0 {
		t.Errorf("clean run has kernel reports: %+v", r)
	}
	if err := vm.Poweroff(ctx); err != nil {
		t.Fatalf("poweroff: %v", err)
	}
	select {
	case <-vm.Exited():
	default:
		t.Fatal("QEMU still running after Poweroff")
	}
	if !strings.Contains(string(vm.ConsoleLog()), "reboot: Power down") {
		t.Errorf("guest did not power down cleanly; console tail:\n%s", tail(vm.ConsoleLog(), 10))
	}
}

func TestPanicIsReported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm := boot(t, ctx, BootOptions{})
	_, err := vm.Run(ctx, "echo c > /proc/sysrq-trigger")
	var ge *GuestError
	if !errors.As(err, &ge) {
		t.Fatalf("err = %v, want a GuestError", err)
	}
	if want := "Kernel panic - not syncing: sysrq triggered crash"; ge.Title != want {
		t.Errorf("title %q, want %q", ge.Title, want)
	}
	if ge.Report == nil || !strings.Contains(ge.Report.Text, "sysrq_handle_crash") && !strings.Contains(ge.Report.Text, "__handle_sysrq") {
		t.Errorf("report lacks the call trace: %+v", ge.Report)
	}
	if !strings.Contains(ge.CommandLine, "qemu-system-aarch64 -M virt") {
		t.Errorf("no reproducible command line: %q", ge.CommandLine)
	}
	select {
	case <-vm.Exited():
	case <-time.After(10 * time.Second):
		t.Error("QEMU still running after the panic verdict")
	}
}

func TestHangIsReported(t *testing.T) {
	cases := []struct {
		name    string
		hang    func(ctx context.Context, vm *VM) error
		command string
	}{
		{"vm stopped through QMP", func(ctx context.Context, vm *VM) error {
			_, err := vm.QMP("stop", nil)
			return err
		}, "true"},
		{"ssh server stopped in the guest", nil, "kill -STOP $(pidof dropbear)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			vm := boot(t, ctx, BootOptions{})
			if tc.hang != nil {
				if err := tc.hang(ctx, vm); err != nil {
					t.Fatal(err)
				}
			}
			rctx, rcancel := context.WithTimeout(ctx, 8*time.Second)
			defer rcancel()
			start := time.Now()
			_, err := vm.Run(rctx, tc.command)
			var ge *GuestError
			if !errors.As(err, &ge) || !strings.HasPrefix(ge.Title, "guest hung") {
				t.Fatalf("err = %v, want a 'guest hung' GuestError", err)
			}
			// The 8s deadline, a 5s liveness probe, 2s for a dying QEMU to flush its console.
			if d := time.Since(start); d > 25*time.Second {
				t.Errorf("hang detected after %s, want about 15s", d)
			}
			if ge.ConsoleTail == "" || ge.CommandLine == "" {
				t.Errorf("hang report lacks the console tail or the command line: %+v", ge)
			}
			select {
			case <-vm.Exited():
			case <-time.After(10 * time.Second):
				t.Error("QEMU still running after the hang verdict")
			}
		})
	}
}

func TestTestNICInNamespace(t *testing.T) {
	requireTool(t, "ip")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("test NICs need root")
		}
		t.Skip("test NICs need root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm := boot(t, ctx, BootOptions{NICs: []NIC{{Model: "virtio-net-pci,romfile=", MAC: "52:54:00:aa:bb:01"},
		{Model: "virtio-net-pci,romfile=", MAC: "52:54:00:aa:bb:02", OwnNetns: true}}})
	ns, taps, own := vm.NetNS(), vm.Taps(), vm.NetNSOf(1)
	if ns == "" || len(taps) != 2 || own == "" || own == ns {
		t.Fatalf("netns %q and %q, taps %v: want two namespaces, one tap each", ns, own, taps)
	}
	if out, err := exec.Command("ip", "-n", own, "link", "show", taps[1]).CombinedOutput(); err != nil {
		t.Errorf("tap %s is not in its own namespace %s: %v: %s", taps[1], own, err, out)
	}
	if out, err := exec.Command("ip", "link", "show", taps[0]).CombinedOutput(); err == nil {
		t.Errorf("tap %s exists in the host namespace: %s", taps[0], out)
	}
	for _, args := range [][]string{
		{"-n", ns, "addr", "add", "192.168.200.2/24", "dev", taps[0]},
		{"-n", ns, "link", "set", taps[0], "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	dev, err := vm.Run(ctx, "grep -l 52:54:00:aa:bb:01 /sys/class/net/*/address | cut -d/ -f5")
	if err != nil || strings.TrimSpace(string(dev)) == "" {
		t.Fatalf("test NIC not found in the guest: %q %v", dev, err)
	}
	ifc := strings.TrimSpace(string(dev))
	if out, err := vm.Run(ctx, fmt.Sprintf("ip addr add 192.168.200.1/24 dev %s && ip link set %s up && ping -c 2 -W 5 192.168.200.2", ifc, ifc)); err != nil {
		t.Fatalf("ping across the test link: %v\n%s", err, out)
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{ns, own} {
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), n) {
			t.Errorf("netns %s left after Close", n)
		}
	}
}

func TestCancelDuringBootCleansUp(t *testing.T) {
	k, img := guest(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	vm, err := Boot(ctx, BootOptions{Kernel: k, Image: img, NICs: []NIC{{Model: "virtio-net-pci,romfile="}}})
	if err == nil {
		vm.Close()
		t.Fatal("boot succeeded within 300ms; cannot test cancellation")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	// TestMain checks that the QEMU process, the namespace and the temporary directory are gone.
}

// A cached kernel build is only a hash of the inputs: it must not rebuild.
func TestCachedKernelBuildDoesNotRebuild(t *testing.T) {
	guest(t)
	k, err := BuildKernel(context.Background(), KernelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !k.Cached {
		t.Error("second build of an unchanged input was not a cache hit")
	}
}

// writeProbeSeries writes a one-patch series (a comment added to net/core/page_pool.c, in stg
// export form) made against the pristine source, and a second series whose patch cannot apply.
func writeProbeSeries(t *testing.T, srcRepo string) (good, bad string) {
	t.Helper()
	orig, err := git(context.Background(), srcRepo, "show", "HEAD:net/core/page_pool.c")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a", "net", "core"), filepath.Join(dir, "b", "net", "core")
	os.MkdirAll(a, 0o755)
	os.MkdirAll(b, 0o755)
	os.WriteFile(filepath.Join(a, "page_pool.c"), []byte(orig+"\n"), 0o644)
	changed := strings.Replace(orig+"\n", "#include", "/* ppkit e2e: incremental build probe */\n#include", 1)
	os.WriteFile(filepath.Join(b, "page_pool.c"), []byte(changed), 0o644)
	cmd := exec.Command("git", "diff", "--no-index", "--no-prefix", "a/net/core/page_pool.c", "b/net/core/page_pool.c")
	cmd.Dir = dir
	diff, _ := cmd.Output() // exit status 1: files differ
	if !bytes.Contains(diff, []byte("@@")) {
		t.Fatalf("no diff: %s", diff)
	}
	patch := "page_pool: incremental build probe\n\nFrom: ppkit <ppkit@localhost>\n\nA comment only.\n\n" +
		"Signed-off-by: ppkit <ppkit@localhost>\n---\n" + string(diff)
	good = filepath.Join(dir, "good")
	bad = filepath.Join(dir, "bad")
	for _, d := range []string{good, bad} {
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "series"), []byte("probe.patch\n"), 0o644)
	}
	os.WriteFile(filepath.Join(good, "probe.patch"), []byte(patch), 0o644)
	os.WriteFile(filepath.Join(bad, "probe.patch"), []byte(strings.Replace(patch, " #include <linux/types.h>", " #include <linux/no-such.h>", 1)), 0o644)
	return good, bad
}

func TestSeriesBuildIsIncrementalAndCached(t *testing.T) {
	baseline, _ := guest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	_, src := testKernelSource(ctx, t)
	good, bad := writeProbeSeries(t, src.repo)

	k, err := BuildKernel(ctx, KernelOptions{Series: good, Progress: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	if k.Key == baseline.Key || len(k.Patches) != 1 || k.Patches[0] != "probe.patch" {
		t.Fatalf("series build %+v is not distinct from the baseline %s", k, baseline.Key)
	}
	if _, err := os.Stat(k.Image); err != nil {
		t.Fatal(err)
	}
	t.Logf("one-patch build took %s (cached=%v)", k.Elapsed, k.Cached)
	again, err := BuildKernel(ctx, KernelOptions{Series: good})
	if err != nil || !again.Cached || again.Key != k.Key {
		t.Fatalf("second build of the same series: %+v, %v; want a cache hit", again, err)
	}

	_, err = BuildKernel(ctx, KernelOptions{Series: bad})
	if err == nil || !strings.Contains(err.Error(), "probe.patch") || !strings.Contains(err.Error(), "does not apply") {
		t.Fatalf("bad series: err = %v, want one naming probe.patch as not applying", err)
	}
	// The user's source (here the pristine repository) is never modified.
	if out, err := git(ctx, src.repo, "status", "--porcelain", "--untracked-files=no"); err != nil || out != "" {
		t.Errorf("source repository changed: %q %v", out, err)
	}
}

// Kconfig silently drops options whose dependencies are unmet: run the configure step (not the
// build) for both fragments and check that every wanted line survived.
func TestConfigFragmentsSurviveKconfig(t *testing.T) {
	guest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cache, src := testKernelSource(ctx, t)
	// newBuild is a build in a directory of its own. The pristine repository is a full tree;
	// configuring out of tree only reads it.
	newBuild := func(t *testing.T) *kernelBuild {
		logf, err := os.Create(filepath.Join(t.TempDir(), "log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { logf.Close() })
		return &kernelBuild{ctx: ctx, work: src.repo, dir: t.TempDir(), cache: cache, log: logf, progress: testLog{t}}
	}
	// configure configures a build directory of its own and returns its .config.
	configure := func(t *testing.T, debug bool, base, mods []byte) []byte {
		t.Helper()
		data, err := newBuild(t).configure(KernelConfigFragment(debug), base, mods)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	values := func(t *testing.T, data []byte) KconfigValues {
		t.Helper()
		v, err := ParseKconfig(data)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, debug := range []bool{false, true} {
		t.Run(fmt.Sprintf("debug=%v", debug), func(t *testing.T) { configure(t, debug, nil, nil) })
	}
	// Build directories are named by the resolved .config: a board whose config is the one
	// ppkit's kernel was built with (the deploy tests' board) builds in that kernel's directory.
	t.Run("own config is a fixed point", func(t *testing.T) {
		tiny := configure(t, false, nil, nil)
		if again := configure(t, false, tiny, nil); !bytes.Equal(again, tiny) {
			t.Errorf("ppkit's .config as a board's config resolves to another .config (%d bytes, want %d)", len(again), len(tiny))
		}
		if err := newBuild(t).useConfig(tiny); err != nil { // olddefconfig leaves it as it is
			t.Error(err)
		}
	})
	// A real board's config (`ppkit test --board`): its own, with the modules it has loaded
	// built in by localyesconfig, ppkit's fragment on top.
	t.Run("board config", func(t *testing.T) {
		tiny := values(t, configure(t, false, nil, nil))
		var board bytes.Buffer
		for sym, val := range tiny {
			fmt.Fprintf(&board, "%s=%s\n", sym, val)
		}
		// The board's distribution kernel: modules, a CD-ROM file system and a NAND flash driver
		// among them.
		board.WriteString("CONFIG_MODULES=y\nCONFIG_ISO9660_FS=m\nCONFIG_MTD=m\nCONFIG_MVNETA=m\n")
		lsmod := []byte("mtd 61440 0 - Live 0xffff800008f00000\n")
		got := values(t, configure(t, false, board.Bytes(), lsmod))
		for sym, want := range map[string]string{
			"CONFIG_MTD":        "y", // loaded on the board: built in
			"CONFIG_ISO9660_FS": "n", // not loaded: localyesconfig drops it
			"CONFIG_MVNETA":     "y", // ppkit's fragment
			"CONFIG_MODULES":    "y", // the board's own
		} {
			if got[sym] != want {
				t.Errorf("%s=%q, want %q", sym, got[sym], want)
			}
		}
	})
}

// A guest that ignores the power button is stopped with QMP quit, and that is reported.
func TestPoweroffEscalatesWhenIgnored(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm := boot(t, ctx, BootOptions{PoweroffTimeout: 3 * time.Second})
	// The power-button watcher is the only dd in the guest.
	if _, err := vm.Run(ctx, "killall dd"); err != nil {
		t.Fatal(err)
	}
	err := vm.Poweroff(ctx)
	if err == nil || !strings.Contains(err.Error(), "ignored system_powerdown") {
		t.Fatalf("err = %v, want the ignored power button reported", err)
	}
	select {
	case <-vm.Exited():
	default:
		t.Fatal("QEMU still running after Poweroff")
	}
}

// A guest that never gets ready is a verdict too: a panic at boot by its title, a hang by the
// boot deadline; both with the console tail and nothing left behind.
func TestBootFailuresAreReported(t *testing.T) {
	k, img := guest(t)
	for _, tc := range []struct {
		name, append, wantTitle string
	}{
		// Words without "=" after rdinit= become init's arguments: PID 1 is `busybox false`.
		{"init exits", "rdinit=/bin/busybox false", "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"},
		{"init hangs", "rdinit=/bin/busybox sleep 1000", "guest hung: boot failed: no readiness marker on the console"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			vm, err := Boot(ctx, BootOptions{Kernel: k, Image: img, Append: tc.append, BootTimeout: 15 * time.Second})
			if err == nil {
				vm.Close()
				t.Fatal("boot succeeded")
			}
			var ge *GuestError
			if !errors.As(err, &ge) || !strings.HasPrefix(ge.Title, tc.wantTitle) {
				t.Fatalf("err = %v, want a GuestError titled %q", err, tc.wantTitle)
			}
			if !strings.Contains(ge.ConsoleTail, "Run /bin/busybox as init process") {
				t.Errorf("console tail does not show the boot:\n%s", ge.ConsoleTail)
			}
		})
	}
}

// A slow command on a healthy guest is the command's timeout, not a hang; an abandoned command
// leaves the guest up.
func TestCommandTimeoutAndAbandonKeepTheGuest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm := boot(t, ctx, BootOptions{})

	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := vm.Run(rctx, "sleep 30")
	rcancel()
	var ge *GuestError
	if err == nil || errors.As(err, &ge) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("slow command: err = %v, want a plain timeout", err)
	}

	sctx, scancel := context.WithCancel(ctx)
	var out bytes.Buffer
	p, err := vm.Start(sctx, "echo started; sleep 30", &out, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	scancel()
	if err := p.Wait(); err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("abandoned command: Wait = %v, want context.Canceled", err)
	}
	if !strings.Contains(out.String(), "started") {
		t.Errorf("background output %q", out.String())
	}

	if got, err := vm.Run(ctx, "echo alive"); err != nil || strings.TrimSpace(string(got)) != "alive" {
		t.Fatalf("guest after timeout and abandon: %q, %v", got, err)
	}
	if err := vm.Poweroff(ctx); err != nil {
		t.Fatal(err)
	}
}

// Commands side by side on one connection, beside a stream, must not fail: bookworm's dropbear
// (2022.83) closed a session channel whenever a SIGCHLD (another command ending) arrived between
// the channel's open and its exec request (see DefaultImagePackages).
func TestCommandsSideBySide(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm := boot(t, ctx, BootOptions{})
	var streamed byteCounter
	stream, err := vm.Start(ctx, "echo $$ > /tmp/stream.pid && exec cat /dev/zero", &streamed, nil)
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 4, 50
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for i := 0; i < each; i++ {
				want := fmt.Sprintf("ok %d %d", w, i)
				got, err := vm.Run(ctx, "echo "+want)
				if err != nil || strings.TrimSpace(string(got)) != want {
					errs <- fmt.Errorf("command %d of worker %d: %q, %v", i, w, got, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil {
			t.Errorf("%v (%d bytes streamed)", err, streamed.n.Load())
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if streamed.n.Load() == 0 {
		t.Fatal("the stream sent nothing: the commands ran beside no traffic")
	}
	if _, err := vm.Run(ctx, "kill -TERM $(cat /tmp/stream.pid)"); err != nil {
		t.Fatal(err)
	}
	var ge *GuestError
	if err := stream.Wait(); errors.As(err, &ge) {
		t.Fatalf("the stopped stream ended the guest: %v", err)
	}
	if got, err := vm.Run(ctx, "echo alive"); err != nil || strings.TrimSpace(string(got)) != "alive" {
		t.Fatalf("guest after the stream: %q, %v", got, err)
	}
	t.Logf("%d commands side by side beside %d streamed bytes", workers*each, streamed.n.Load())
}

// A virtio-serial port carries the guest's bytes, all of them and unchanged, into its host
// file: the way the raw trace leaves the guest.
func TestPortCarriesGuestBytes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm := boot(t, ctx, BootOptions{Ports: []string{"ppkit.test"}})
	const size = 4 << 20
	out, err := vm.Run(ctx, fmt.Sprintf(`set -e
p=$(grep -lx ppkit.test /sys/class/virtio-ports/*/name)
dev=/dev/$(basename $(dirname $p))
head -c %d /dev/urandom > /tmp/payload
cat /tmp/payload > $dev
md5sum < /tmp/payload`, size))
	if err != nil {
		t.Fatalf("guest: %v: %s", err, out)
	}
	want := strings.Fields(string(out))[0]
	// QEMU writes the file as the virtqueue drains, a moment after the guest's write returned.
	var data []byte
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		data, _ = os.ReadFile(vm.PortFile("ppkit.test"))
		if len(data) >= size || time.Now().After(deadline) {
			break
		}
	}
	if len(data) != size {
		t.Fatalf("host file %s holds %d bytes, want %d", vm.PortFile("ppkit.test"), len(data), size)
	}
	if got := fmt.Sprintf("%x", md5.Sum(data)); got != want {
		t.Fatalf("host file md5 %s, guest's %s", got, want)
	}
}

// byteCounter counts what a stream wrote and discards it.
type byteCounter struct{ n atomic.Int64 }

func (c *byteCounter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}

// Shell gives a login shell on a pseudo-terminal and returns its exit status.
func TestShell(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm := boot(t, ctx, BootOptions{})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Type the exit only once the command's output has arrived, as a person would: dropbear
	// may close the channel before it drains the pty of a shell that exits at once.
	var out syncbuf.Buffer
	go func() {
		defer w.Close()
		w.WriteString("echo shell-$((6*7))\n")
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if strings.Contains(out.String(), "shell-42") {
				break
			}
		}
		w.WriteString("exit 4\n")
		time.Sleep(5 * time.Second)
	}()
	status, err := vm.Shell(ctx, r, &out, &out)
	if err != nil || status != 4 || !strings.Contains(out.String(), "shell-42") {
		t.Fatalf("shell: status %d, err %v, output %q", status, err, out.String())
	}
}

// testKernelSource is the cache and the unpacked Debian kernel source the kernel tests build from.
func testKernelSource(ctx context.Context, t *testing.T) (string, *kernelSource) {
	t.Helper()
	cache, err := cachedir.Root()
	if err != nil {
		t.Fatal(err)
	}
	src, err := tarballKernelSource(ctx, cache, DefaultKernelTarball, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	return cache, src
}
