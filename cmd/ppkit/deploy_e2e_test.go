//go:build e2e

package main

// `ppkit test --board --deploy`: ppkit boots the kernel under test on a board that boots the
// way an Espressobin does, U-Boot reading /boot/extlinux/extlinux.conf from a disk. The board
// is a QEMU guest started by Debian's U-Boot for QEMU (u-boot-qemu) from a disk made here: its
// /boot partition holds its own kernel (the series without its last patch, built from a
// config with a disk and ext4), the guest image as its initrd, and the kernel's config as
// Debian installs it (/boot/config-RELEASE). ppkit must build the kernel under test from
// that config, add an entry, reboot the board into it and see it run there.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/internal/cachedir"
	"github.com/ppkit/ppkit/stgit"
	"github.com/ppkit/ppkit/tests/procedure"
)

// uBoot is Debian's U-Boot for QEMU's arm64 virt board (harness/install-deps.sh installs it).
const uBoot = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"

// diskBoard is a booted board with /boot on its disk, and what it was made of.
type diskBoard struct {
	vm      *harness.VM
	own     *harness.Kernel // the kernel the board boots before ppkit
	conf    []byte          // its extlinux.conf
	cabled  harness.LinkState
	release string
	// The developer: a home with the key the board authorizes, ppkit's environment with it,
	// and the board's URL.
	home, url string
	env       []string
}

// bootDiskBoard builds the board's own kernel and boots it from a disk whose /boot partition
// has room for spareMiB more MiB. With stale, the disk has a second partition with the same
// files, and that one is the board's /boot: U-Boot reads the first (the bootable one), Linux
// mounts the second, a stale copy — a board where editing /boot does not change what boots.
func bootDiskBoard(t *testing.T, tap string, spareMiB int, stale bool) *diskBoard {
	t.Helper()
	ctx := context.Background()
	patches := filepath.Join(checkoutRoot(t), "patches")
	series, err := stgit.ReadSeries(patches)
	if err != nil {
		t.Fatal(err)
	}
	spec := (&procedure.HarnessLauncher{}).Spec(procedure.Kernel{Series: patches}, testWriter{t})
	spec.Boot.NICs = spec.Boot.NICs[:1]
	spec.Boot.Ports = nil
	// The board's own config: ppkit's emulated-board config, which has the disk and ext4 the
	// board's /boot needs (harness/config/ppkit.config), as a distribution's kernel has them.
	ppkitKernel, err := harness.BuildKernel(ctx, spec.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(ppkitKernel.Config)
	if err != nil {
		t.Fatal(err)
	}
	v, err := harness.ParseKconfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, sym := range []string{"CONFIG_BLOCK", "CONFIG_VIRTIO_BLK", "CONFIG_EXT4_FS", "CONFIG_MSDOS_PARTITION"} {
		if v[sym] != "y" {
			t.Fatalf("ppkit's kernel config has %s=%q: the board's /boot is an ext4 partition of a virtio disk", sym, v[sym])
		}
	}
	spec.Kernel.BaseConfig = cfg
	spec.Kernel.Upto = len(series.Patches) - 1 // another kernel than the one under test
	part := 1
	if stale {
		part = 2
	}
	spec.Image.Files = append(spec.Image.Files,
		harness.ImageFile{Path: "/etc/fstab", Mode: 0o644, Data: []byte(fmt.Sprintf("/dev/vda%d /boot ext4 defaults 0 0\n", part))},
		harness.ImageFile{Path: "/boot/README", Mode: 0o644, Data: []byte("/etc/fstab mounts the board's /boot partition here\n")})
	bo, err := harness.Build(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	image, err := os.ReadFile(bo.Kernel.Image)
	if err != nil {
		t.Fatal(err)
	}
	release := harness.KernelRelease(image)
	conf := []byte("# the board's boot menu\ndefault board\n\nlabel board\n\tkernel /Image-board\n\tinitrd /initrd.img\n\tappend " +
		harness.KernelCommandLine(bo.Append) + "\n")
	dir := t.TempDir()
	files := map[string]string{
		"Image-board":            bo.Kernel.Image,
		"initrd.img":             bo.Image.Initramfs,
		"config-" + release:      bo.Kernel.Config,
		"extlinux/extlinux.conf": "",
	}
	stage := filepath.Join(dir, "boot")
	used := int64(0)
	for name, from := range files {
		p := filepath.Join(stage, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		data := conf
		if from != "" {
			if data, err = os.ReadFile(from); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		used += int64(len(data))
	}
	bo.Firmware, bo.Disk = uBoot, filepath.Join(dir, "disk.img")
	makeBootDisk(t, bo.Disk, stage, int(used>>20)+4+spareMiB, part)
	vm, err := harness.Boot(ctx, bo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	if _, err := vm.Run(ctx, "mount /boot && ls /boot/extlinux/extlinux.conf"); err != nil {
		t.Fatal(err)
	}
	cache, err := cachedir.Root() // resolved with the real HOME: the kernels are built once
	if err != nil {
		t.Fatal(err)
	}
	home := userHome(t, vm)
	return &diskBoard{vm: vm, own: bo.Kernel, conf: conf, cabled: cable(t, vm, tap), release: release,
		home: home, url: fmt.Sprintf("ssh://root@127.0.0.1:%d", vm.SSHPort()),
		env: []string{"HOME=" + home, "XDG_CONFIG_HOME=", "SSH_AUTH_SOCK=", "PPKIT_CACHE=" + cache}}
}

// makeBootDisk writes a disk with an MBR and parts Linux partitions of sizeMiB each from 1 MiB
// on, the first bootable, each an ext4 file system holding stage's files (mke2fs -d; no
// journal and none of the features newer than Linux 5.10 and U-Boot 2023.01).
func makeBootDisk(t *testing.T, disk, stage string, sizeMiB, parts int) {
	t.Helper()
	mbr := make([]byte, 512)
	for i := 0; i < parts; i++ {
		start := 1 + i*sizeMiB // MiB
		out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-O", "^has_journal,^orphan_file,^metadata_csum_seed",
			"-E", fmt.Sprintf("offset=%d", start<<20), "-d", stage, disk, fmt.Sprintf("%dM", sizeMiB)).CombinedOutput()
		if err != nil {
			t.Fatalf("mke2fs: %v: %s", err, out)
		}
		entry := mbr[446+16*i:]
		if i == 0 {
			entry[0] = 0x80 // bootable: U-Boot's distro boot scans the bootable partitions
		}
		entry[4] = 0x83 // Linux
		binary.LittleEndian.PutUint32(entry[8:], uint32(start)<<11)
		binary.LittleEndian.PutUint32(entry[12:], uint32(sizeMiB)<<11)
		copy(entry[1:4], []byte{0xfe, 0xff, 0xff}) // CHS: beyond 1024 cylinders, use LBA
		copy(entry[5:8], []byte{0xfe, 0xff, 0xff})
	}
	mbr[510], mbr[511] = 0x55, 0xaa
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
}

func TestE2EBoardDeploy(t *testing.T) {
	needBoard(t)
	if _, err := os.Stat(uBoot); err != nil {
		t.Fatalf("%v: run harness/install-deps.sh qemu (u-boot-qemu)", err)
	}
	ctx := context.Background()

	t.Run("deploy, reboot, multicast passes", func(t *testing.T) {
		tap := fmt.Sprintf("ppkd%d", os.Getpid()%100000)
		b := bootDiskBoard(t, tap, 64, false)
		home, env, url := b.home, b.env, b.url

		// Without --deploy: the board runs another kernel, and ppkit says so and how to go on.
		r := startPPKitEnv(t, env, "test", "multicast", "--time", "5s", "--board", url, "--client-if", tap)
		<-r.done
		if code := r.cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(r.stderr(), "add --deploy") {
			t.Fatalf("a board running its own kernel: exit %d, want 2 naming --deploy:\n%s", code, lastLinesOf(r.stderr(), 20))
		}
		if !strings.Contains(r.stderr(), "built from the board's config /boot/config-"+b.release) {
			t.Errorf("the kernel was not built from the board's config:\n%s", lastLinesOf(r.stderr(), 30))
		}

		r = startPPKitEnv(t, env, "test", "multicast", "--time", "5s", "--board", url, "--client-if", tap, "--deploy")
		<-r.done
		t.Logf("ppkit test --board --deploy:\n%s", r.stderr())
		if r.err != nil {
			t.Fatalf("ppkit test --board --deploy: %v\n%s", r.err, lastLinesOf(r.stderr(), 60))
		}
		for _, want := range []string{"deploy: rebooting", "runs the kernel under test"} {
			if !strings.Contains(r.stderr(), want) {
				t.Errorf("no %q in ppkit's output", want)
			}
		}
		// The board booted ppkit's entry from its extlinux.conf: U-Boot's console says so, and
		// the board keeps its own entry and saved config.
		out, err := developerLogin(t, home, url).Run(ctx, "grep -qs ' /boot ' /proc/mounts || mount /boot; cat /boot/extlinux/extlinux.conf; ls /boot/ppkit; uname -r")
		if err != nil {
			t.Fatal(err)
		}
		conf := string(out)
		if !strings.HasPrefix(strings.TrimSpace(conf), "# the board's boot menu\ndefault ppkit-") || !strings.Contains(conf, "label board\n\tkernel /Image-board") ||
			!strings.Contains(conf, "\tkernel /ppkit/Image-") || !strings.Contains(conf, "base-config") {
			t.Errorf("the board's /boot after the deploy:\n%s", conf)
		}
		if !bytes.Contains(b.vm.ConsoleLog(), []byte("Retrieving file: /ppkit/Image-")) {
			t.Errorf("U-Boot did not load ppkit's Image; console:\n%s", lastLinesOf(string(b.vm.ConsoleLog()), 40))
		}
		cabledBack(t, tap, b.cabled, "after the deploy")

		// Again: the board runs the kernel under test, nothing is deployed.
		r = startPPKitEnv(t, env, "test", "multicast", "--time", "5s", "--board", url, "--client-if", tap, "--deploy")
		<-r.done
		if r.err != nil || strings.Contains(r.stderr(), "deploy:") {
			t.Errorf("second run: %v, deployed again:\n%s", r.err, lastLinesOf(r.stderr(), 30))
		}

		// The developer's next kernel (here the series without its last patch): deployed over
		// ppkit's entry, whose files go; the board's own entry and config stay.
		shorter := t.TempDir()
		if err := os.CopyFS(shorter, os.DirFS(filepath.Join(checkoutRoot(t), "patches"))); err != nil {
			t.Fatal(err)
		}
		series, err := stgit.ReadSeries(shorter)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(shorter, "series"), []byte(strings.Join(series.Patches[:len(series.Patches)-1], "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r = startPPKitEnv(t, env, "test", "multicast", "--time", "5s", "--board", url, "--client-if", tap, "--deploy", "--series", shorter)
		<-r.done
		if r.err != nil || !strings.Contains(r.stderr(), "deploy: rebooting") {
			t.Fatalf("redeploy: %v\n%s", r.err, lastLinesOf(r.stderr(), 40))
		}
		out, err = developerLogin(t, home, url).Run(ctx, "grep -qs ' /boot ' /proc/mounts || mount /boot; grep -c '^label ppkit-' /boot/extlinux/extlinux.conf; ls /boot/ppkit")
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(string(out)); len(f) != 4 || f[0] != "1" || !strings.HasPrefix(f[1], "Image-") {
			t.Errorf("after a redeploy: want one ppkit entry and its Image beside the saved config, got %q", f)
		}
	})

	t.Run("a /boot without room restores the old entry", func(t *testing.T) {
		tap := fmt.Sprintf("ppkf%d", os.Getpid()%100000)
		b := bootDiskBoard(t, tap, 0, false)
		env, url := b.env, b.url
		r := startPPKitEnv(t, env, "test", "multicast", "--time", "5s", "--board", url, "--client-if", tap, "--deploy")
		<-r.done
		out := r.stderr()
		t.Logf("refused:\n%s", out)
		if code := r.cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(out, "No space left") || !strings.Contains(out, "deploy:") {
			t.Errorf("exit %d, want 2 and the full /boot named:\n%s", code, lastLinesOf(out, 20))
		}
		if strings.Contains(out, "traffic for") || strings.Contains(out, "rebooting") {
			t.Errorf("the run went on after the failed copy")
		}
		bootAsBefore(t, b.vm, b)
		cabledBack(t, tap, b.cabled, "after the failed deploy")
	})
}

func TestE2EBoardDeployFallsBack(t *testing.T) {
	needBoard(t)
	// U-Boot boots another /boot than the one ppkit edits: the board comes back running its
	// own kernel, and ppkit must put the entry it switched back and remove its files.
	tap := fmt.Sprintf("ppks%d", os.Getpid()%100000)
	b := bootDiskBoard(t, tap, 64, true)
	home, env, url := b.home, b.env, b.url
	r := startPPKitEnv(t, env, "test", "multicast", "--time", "5s", "--board", url, "--client-if", tap, "--deploy")
	<-r.done
	out := r.stderr()
	t.Logf("ppkit test --board --deploy:\n%s", out)
	if code := r.cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(out, "deploy: rebooting") || !strings.Contains(out, "came back running "+b.release) {
		t.Errorf("exit %d, want 2 after the reboot, naming the kernel the board came back with:\n%s", code, lastLinesOf(out, 20))
	}
	if strings.Contains(out, "traffic for") {
		t.Errorf("the procedures ran on a board that does not run the kernel under test")
	}
	bootAsBefore(t, developerLogin(t, home, url), b)
	cabledBack(t, tap, b.cabled, "after the failed deploy")
}

// developerLogin logs into the board as ppkit's user does (the VM's own login ends with a
// reboot).
func developerLogin(t *testing.T, home, url string) *harness.SSHBoard {
	t.Helper()
	t.Setenv("HOME", home)
	login, err := harness.DialBoard(context.Background(), harness.BoardOptions{URL: url, KnownHosts: filepath.Join(home, ".config", "ppkit", "known_hosts")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { login.Close() })
	return login
}

// bootAsBefore checks that the board's /boot is as bootDiskBoard made it: the same
// extlinux.conf, byte for byte, and no file of ppkit's.
func bootAsBefore(t *testing.T, board interface {
	Run(context.Context, string) ([]byte, error)
}, b *diskBoard) {
	t.Helper()
	after, err := board.Run(context.Background(), "grep -qs ' /boot ' /proc/mounts || mount /boot; cat /boot/extlinux/extlinux.conf; echo ==; ls -a /boot /boot/extlinux")
	if err != nil {
		t.Fatal(err)
	}
	conf, files, _ := strings.Cut(string(after), "==\n") // cat's output, newline included
	if conf != string(b.conf) {
		t.Errorf("extlinux.conf is not the board's own:\n%s\nwas:\n%s", conf, b.conf)
	}
	if strings.Contains(files, "ppkit") || strings.Contains(files, ".part") {
		t.Errorf("the failed deploy left files in /boot:\n%s", files)
	}
}

// cabledBack checks that the cabled NIC is in the host's namespace as it was.
func cabledBack(t *testing.T, tap string, before harness.LinkState, when string) {
	t.Helper()
	after, err := harness.CurrentLinkState(tap)
	if err != nil {
		t.Fatalf("%s: the cabled NIC is not back in the host's namespace: %v", when, err)
	}
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("%s: the cabled NIC came back as %+v, was %+v", when, after, before)
	}
}
