package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ppkit/ppkit/internal/cachedir"
)

// imageRecipe changes whenever the image layout or init changes, invalidating cached images.
const imageRecipe = "ppkit-image-2"

// ImagePackage is a Debian arm64 package to take files from. Files lists the paths to take
// ("usr/bin/scp"); an empty Files takes the package's libraries (everything under lib/ and
// usr/lib/ except gconv modules).
type ImagePackage struct {
	Name  string
	Files []string
	// Suite is the Debian suite to take the package from ("bullseye"), when it must not be the
	// host's default; its .deb is kept in a directory of that name in the .deb cache.
	Suite string
}

// DefaultImagePackages is the guest userland: busybox, the dropbear SSH server, OpenSSH's scp
// (go-scp runs `scp -t/-f` remotely and dropbear has none), iperf 2 and the libraries they need.
var DefaultImagePackages = []ImagePackage{
	{Name: "busybox-static", Files: []string{"bin/busybox"}},
	// Bullseye's dropbear (2020.81): bookworm's 2022.83 closes a session channel when a
	// SIGCHLD (any command of the connection ending) arrives between the channel's open and its
	// exec request (dropbear commit 8e6f73e8, fixed in 2024.86 by 71521d1b). ppkit runs
	// commands side by side on one connection: one failed with EOF, or started on a closed
	// channel and took the connection down, in about one splice run in three.
	{Name: "dropbear-bin", Files: []string{"usr/sbin/dropbear"}, Suite: "bullseye"},
	{Name: "openssh-client", Files: []string{"usr/bin/scp"}},
	{Name: "iperf", Files: []string{"usr/bin/iperf"}},
	{Name: "libc6"},
	{Name: "libcrypt1"},
	{Name: "libtomcrypt1"},
	{Name: "libtommath1"},
	{Name: "libgmp10"},
	{Name: "zlib1g"},
	{Name: "libgcc-s1"},
	{Name: "libstdc++6"},
}

// ImageFile is an extra file put into the image (a test helper, a config file).
type ImageFile struct {
	Path string
	Mode uint32 // permission bits
	Data []byte
}

// ImageOptions says what goes into the guest image besides the defaults.
type ImageOptions struct {
	Extra    []ImagePackage
	Files    []ImageFile
	Cache    string
	Progress io.Writer
}

// Image is a built guest initramfs with the SSH keys that go with it.
type Image struct {
	Key       string
	Dir       string
	Initramfs string        // newc cpio, uncompressed (gunzip took 0.1 s of every boot under TCG), passed to QEMU with -initrd
	ClientKey ssh.Signer    // the key the harness logs in with (root)
	HostKey   ssh.PublicKey // the guest's host key, pinned by the harness
	Cached    bool
	Elapsed   time.Duration
}

// ReadyMarker is the line the guest's init prints on the console once SSH is listening.
const ReadyMarker = "ppkit: guest ready"

// guestRCS is the guest's boot script, run by busybox init as its sysinit action.
const guestRCS = `#!/bin/sh
/bin/busybox --install -s
export PATH=` + GuestPath + `
mkdir -p /proc /sys /dev /tmp /run /var/log /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
hostname ppkit
echo 1 > /proc/sys/kernel/sysrq
ip link set lo up
# The management NIC is the virtio-net device with the management MAC (test NICs may be
# virtio-net too); the test NICs are configured by the tests.
for d in /sys/class/net/*; do
	drv=$(readlink $d/device/driver 2>/dev/null)
	if [ "${drv##*/}" = virtio_net ] && [ "$(cat $d/address)" = ` + ManagementMAC + ` ]; then
		n=${d##*/}
		ip addr add 10.0.2.15/24 dev $n
		ip link set $n up
		ip route add default via 10.0.2.2
	fi
done
# ppkit.ifup on the command line (set by 'ppkit boot') brings the test NICs up too, so their
# drivers open and their links come up; ppkit test leaves them down until its tracing is on.
if grep -qw ppkit.ifup /proc/cmdline; then
	for d in /sys/class/net/*; do
		n=${d##*/}
		[ "$n" = lo ] || ip link set $n up
	done
fi
# QMP system_powerdown presses the virt board's GPIO power key: power off on any event of it.
for e in /sys/class/input/event*; do
	if [ "$(cat $e/device/name 2>/dev/null)" = gpio-keys ]; then
		(dd if=/dev/input/${e##*/} bs=24 count=1 >/dev/null 2>&1 && echo "ppkit: power button" >/dev/console && poweroff -f) &
	fi
done
# Foreground (-F) in the background: its log (-E) stays readable in /var/log/dropbear.log.
dropbear -F -E -s -r /etc/dropbear/dropbear_ed25519_host_key -p 22 >/var/log/dropbear.log 2>&1 &
echo "` + ReadyMarker + ` after $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
`

const guestInittab = `::sysinit:/bin/busybox sh /etc/init.d/rcS
::shutdown:/bin/busybox echo ppkit: shutting down
`

// BuildImage builds (or finds in the cache) the guest initramfs: Debian arm64 packages fetched
// with apt-get download and unpacked with dpkg-deb, ppkit's init, and a fresh SSH host key and
// client key. Nothing needs root.
func BuildImage(ctx context.Context, opts ImageOptions) (*Image, error) {
	start := time.Now()
	cache, progress, err := cacheAndProgress(opts.Cache, opts.Progress)
	if err != nil {
		return nil, err
	}
	pkgs := append(append([]ImagePackage(nil), DefaultImagePackages...), opts.Extra...)
	debDir := filepath.Join(cache, "debs")
	debs, err := fetchDebs(ctx, debDir, pkgs, progress)
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	key, keySum := newHasher()
	key.add("recipe", []byte(imageRecipe))
	key.add("rcS", []byte(guestRCS))
	key.add("inittab", []byte(guestInittab))
	for i, p := range pkgs {
		key.add("deb", []byte(p.Suite+"/"+filepath.Base(debs[i])))
		key.add("files", []byte(strings.Join(p.Files, "\x00")))
	}
	for _, f := range opts.Files {
		key.add("file", []byte(fmt.Sprintf("%s %o", f.Path, f.Mode)))
		key.add("data", f.Data)
	}
	img := &Image{Key: keySum()}
	img.Dir = filepath.Join(cache, "image", img.Key)
	img.Initramfs = filepath.Join(img.Dir, "initramfs.cpio")
	if err := img.loadKeys(); err == nil {
		img.Cached = true
		img.Elapsed = time.Since(start)
		fmt.Fprintf(progress, "image: cached %s\n", img.Dir)
		return img, nil
	}
	if err := os.MkdirAll(filepath.Dir(img.Dir), 0o755); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(filepath.Dir(img.Dir), ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	fmt.Fprintf(progress, "image: assembling from %d packages\n", len(pkgs))
	a := NewCPIOArchive()
	for i, p := range pkgs {
		if err := addDeb(ctx, a, stage, debs[i], p); err != nil {
			return nil, fmt.Errorf("build image: %s: %w", p.Name, err)
		}
	}
	hostPub, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	clientPub, clientPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	sshClientPub, err := ssh.NewPublicKey(clientPub)
	if err != nil {
		return nil, err
	}
	sshHostPub, err := ssh.NewPublicKey(hostPub)
	if err != nil {
		return nil, err
	}
	if err := addGuestSystem(a, hostPriv, sshClientPub); err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	for _, f := range opts.Files {
		if err := a.AddFile(f.Path, f.Mode, f.Data); err != nil {
			return nil, fmt.Errorf("build image: %w", err)
		}
	}
	if missing := missingLibraries(a); len(missing) > 0 {
		return nil, fmt.Errorf("build image: unresolved shared libraries (add their packages to the image): %s",
			strings.Join(missing, "; "))
	}
	if err := writeCPIO(filepath.Join(stage, "initramfs.cpio"), a); err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(clientPriv, "ppkit client")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage, "id_ed25519"), pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage, "host_key.pub"), ssh.MarshalAuthorizedKey(sshHostPub), 0o644); err != nil {
		return nil, err
	}
	manifest, _ := json.MarshalIndent(map[string]any{"packages": debBases(debs), "entries": a.Len()}, "", "  ")
	os.WriteFile(filepath.Join(stage, "manifest.json"), manifest, 0o644)
	os.RemoveAll(filepath.Join(stage, "unpack"))
	if err := os.Rename(stage, img.Dir); err != nil {
		if _, statErr := os.Stat(img.Initramfs); statErr != nil { // not a concurrent build that won
			return nil, fmt.Errorf("build image: %w", err)
		}
	}
	if err := img.loadKeys(); err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	img.Elapsed = time.Since(start)
	st, _ := os.Stat(img.Initramfs)
	if st != nil {
		fmt.Fprintf(progress, "image: built %s (%d files, %.1f MB) in %s\n", img.Initramfs, a.Len(),
			float64(st.Size())/1e6, img.Elapsed.Round(time.Millisecond))
	}
	return img, nil
}

func debBases(debs []string) []string {
	out := make([]string, len(debs))
	for i, d := range debs {
		out[i] = filepath.Base(d)
	}
	return out
}

func (img *Image) loadKeys() error {
	if _, err := os.Stat(img.Initramfs); err != nil {
		return err
	}
	priv, err := os.ReadFile(filepath.Join(img.Dir, "id_ed25519"))
	if err != nil {
		return err
	}
	if img.ClientKey, err = ssh.ParsePrivateKey(priv); err != nil {
		return fmt.Errorf("image client key: %w", err)
	}
	pub, err := os.ReadFile(filepath.Join(img.Dir, "host_key.pub"))
	if err != nil {
		return err
	}
	if img.HostKey, _, _, _, err = ssh.ParseAuthorizedKey(pub); err != nil {
		return fmt.Errorf("image host key: %w", err)
	}
	return nil
}

// fetchDebs returns the .deb file of each package, downloading the missing ones with
// `apt-get download NAME:arm64` into dir. A .deb once fetched pins that package's version.
func fetchDebs(ctx context.Context, dir string, pkgs []ImagePackage, progress io.Writer) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// A package from another suite lives in a directory of that suite's name, so that the
	// default suite's .deb of the same name never passes for it.
	where := func(p ImagePackage) string { return filepath.Join(dir, p.Suite) }
	find := func(p ImagePackage) string {
		m, _ := filepath.Glob(filepath.Join(where(p), p.Name+"_*_arm64.deb"))
		sort.Strings(m)
		if len(m) == 0 {
			return ""
		}
		return m[len(m)-1]
	}
	var missing []ImagePackage
	for _, p := range pkgs {
		if find(p) == "" {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		lock, err := cachedir.Lock(ctx, filepath.Join(dir, ".lock"), progress)
		if err != nil {
			return nil, err
		}
		defer lock.Unlock()
		// Another ppkit may have fetched them while we waited for the lock.
		var still []ImagePackage
		for _, p := range missing {
			if find(p) == "" {
				still = append(still, p)
			}
		}
		missing = still
	}
	// One apt-get download per directory: it writes into its working directory.
	bySuite := map[string][]string{}
	var suites []string
	for _, p := range missing {
		arg := p.Name + ":arm64"
		if p.Suite != "" {
			arg += "/" + p.Suite
		}
		if bySuite[p.Suite] == nil {
			suites = append(suites, p.Suite)
		}
		bySuite[p.Suite] = append(bySuite[p.Suite], arg)
	}
	for _, suite := range suites {
		args := bySuite[suite]
		if err := os.MkdirAll(filepath.Join(dir, suite), 0o755); err != nil {
			return nil, err
		}
		fmt.Fprintf(progress, "image: apt-get download %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"-q", "-o", "APT::Sandbox::User=root", "download"}, args...)...)
		cmd.Dir = filepath.Join(dir, suite)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("apt-get download %s: %w: %s (is arm64 added with dpkg --add-architecture, the suite in apt's sources and apt-get update run? harness/install-deps.sh does all three)",
				strings.Join(args, " "), err, lastLines(out, 3))
		}
	}
	debs := make([]string, len(pkgs))
	for i, p := range pkgs {
		if debs[i] = find(p); debs[i] == "" {
			return nil, fmt.Errorf("apt-get download %s:arm64 left no .deb in %s", p.Name, where(p))
		}
	}
	return debs, nil
}

// addDeb unpacks a .deb with dpkg-deb -x (no root needed) and adds the selected files.
func addDeb(ctx context.Context, a *CPIOArchive, stage, deb string, p ImagePackage) error {
	dir, err := os.MkdirTemp(stage, "unpack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %w: %s", deb, err, lastLines(out, 3))
	}
	want := map[string]bool{}
	for _, f := range p.Files {
		want[strings.TrimPrefix(path.Clean("/"+f), "/")] = false
	}
	err = filepath.WalkDir(dir, func(full string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, full)
		rel = filepath.ToSlash(rel)
		if rel == "." || d.IsDir() {
			return nil
		}
		if len(p.Files) > 0 {
			if _, ok := want[rel]; !ok {
				return nil
			}
			want[rel] = true
		} else if !isLibraryPath(rel) {
			return nil
		}
		info, err := os.Lstat(full)
		if err != nil {
			return err
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(full)
			if err != nil {
				return err
			}
			return a.AddSymlink(rel, target)
		}
		data, err := os.ReadFile(full)
		if err != nil {
			return err
		}
		return a.AddFile(rel, uint32(info.Mode().Perm()), data)
	})
	if err != nil {
		return err
	}
	for f, found := range want {
		if !found {
			return fmt.Errorf("%s has no %s", filepath.Base(deb), f)
		}
	}
	return nil
}

func isLibraryPath(rel string) bool {
	if !strings.HasPrefix(rel, "lib/") && !strings.HasPrefix(rel, "usr/lib/") && !strings.HasPrefix(rel, "lib64/") {
		return false
	}
	return !strings.Contains(rel, "/gconv/") && !strings.Contains(rel, "/audit/")
}

// addGuestSystem adds ppkit's init, the device nodes init needs before devtmpfs is mounted, the
// root account, and the SSH keys.
func addGuestSystem(a *CPIOArchive, hostKey ed25519.PrivateKey, client ssh.PublicKey) error {
	steps := []error{
		a.AddSymlink("init", "bin/busybox"),
		a.AddSymlink("sbin/init", "../bin/busybox"),
		a.AddFile("etc/inittab", 0o644, []byte(guestInittab)),
		a.AddFile("etc/init.d/rcS", 0o755, []byte(guestRCS)),
		a.AddCharDev("dev/console", 0o600, 5, 1),
		a.AddCharDev("dev/null", 0o666, 1, 3),
		a.AddDir("proc", 0o755), a.AddDir("sys", 0o755), a.AddDir("tmp", 0o1777),
		a.AddDir("run", 0o755), a.AddDir("root", 0o700), a.AddDir("var/log", 0o755),
		a.AddFile("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n")),
		a.AddFile("etc/group", 0o644, []byte("root:x:0:\ntty:x:5:\n")),
		a.AddFile("etc/shells", 0o644, []byte("/bin/sh\n")),
		a.AddFile("etc/hosts", 0o644, []byte("127.0.0.1 localhost\n10.0.2.15 ppkit\n")),
		a.AddFile("etc/profile", 0o644, []byte("export PATH="+GuestPath+"\n")),
		a.AddDir("root/.ssh", 0o700),
		a.AddFile("root/.ssh/authorized_keys", 0o600, ssh.MarshalAuthorizedKey(client)),
		a.AddFile("etc/dropbear/dropbear_ed25519_host_key", 0o600, DropbearEd25519Key(hostKey)),
	}
	for _, err := range steps {
		if err != nil {
			return err
		}
	}
	return nil
}

// DropbearEd25519Key encodes an ed25519 private key in dropbear's own key file format: the string
// "ssh-ed25519", then a string holding the 32-byte seed followed by the 32-byte public key.
func DropbearEd25519Key(k ed25519.PrivateKey) []byte {
	var b bytes.Buffer
	putString := func(s []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(s)))
		b.Write(s)
	}
	putString([]byte("ssh-ed25519"))
	putString(k) // ed25519.PrivateKey is seed || public key
	return b.Bytes()
}

// missingLibraries checks that every ELF file's DT_NEEDED libraries and interpreter resolve inside
// the archive, so a missing package fails the build instead of the guest's boot.
func missingLibraries(a *CPIOArchive) []string {
	libDirs := []string{"lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib", "usr/lib"}
	var missing []string
	paths := make([]string, 0, len(a.entries))
	for p := range a.entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		e := a.entries[p]
		if e.Mode&0o170000 != cpioTypeRegular || !bytes.HasPrefix(e.Data, []byte("\x7fELF")) {
			continue
		}
		f, err := elf.NewFile(bytes.NewReader(e.Data))
		if err != nil {
			continue
		}
		needed, _ := f.ImportedLibraries()
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				data, _ := io.ReadAll(prog.Open())
				interp := strings.TrimRight(string(data), "\x00")
				if !a.resolves(interp) {
					missing = append(missing, p+" needs interpreter "+interp)
				}
			}
		}
		f.Close()
		for _, lib := range needed {
			found := false
			for _, d := range libDirs {
				if a.resolves(d + "/" + lib) {
					found = true
					break
				}
			}
			if !found {
				missing = append(missing, p+" needs "+lib)
			}
		}
	}
	return missing
}

// resolves reports whether p names a regular file in the archive, following symlinks.
func (a *CPIOArchive) resolves(p string) bool {
	for i := 0; i < 16; i++ {
		c, err := cleanCPIOPath(p)
		if err != nil {
			return false
		}
		e, ok := a.entries[c]
		if !ok {
			return false
		}
		if e.Mode&0o170000 != cpioTypeSymlink {
			return e.Mode&0o170000 == cpioTypeRegular
		}
		t := string(e.Data)
		if !strings.HasPrefix(t, "/") {
			t = path.Join(path.Dir(c), t)
		}
		p = t
	}
	return false
}

func writeCPIO(file string, a *CPIOArchive) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if _, err := a.WriteTo(w); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
