// Package mvnetaemu builds the QEMU that carries ppkit's model of the Marvell Armada 3700 NETA
// (mvneta) Ethernet controller, and hands out the path of the resulting qemu-system-aarch64.
//
// The model (hw/net/mvneta.c, include/hw/net/mvneta.h) and a small patch wiring it into QEMU's
// build and `virt` machine (qemu-7.2-mvneta.patch) are embedded in this package. Build fetches
// Debian bookworm's qemu source package with apt, lets dpkg-source apply Debian's patches, adds
// the model, configures a minimal aarch64-softmmu build and runs ninja. The finished binary is
// cached under <cache>/qemu/<key>/ where key hashes every input (source package version, model
// files, patch, configure arguments): unchanged input never rebuilds. The source and build trees
// stay in <cache>/qemu/work/<source version>/ so a model change rebuilds incrementally.
package mvnetaemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ppkit/ppkit/internal/cachedir"
)

// BinaryName is the QEMU system emulator that carries the model.
const BinaryName = "qemu-system-aarch64"

// DeviceName is the -device name of the model: `-device mvneta,netdev=n0[,mac=...]`.
const DeviceName = "mvneta"

// SourceSeries is the upstream QEMU series the patch applies to: Debian bookworm's qemu source
// package. A newer bookworm security upload of the same series is picked up automatically.
const SourceSeries = "1:7.2+dfsg"

var (
	//go:embed hw/net/mvneta.c
	modelC []byte
	//go:embed include/hw/net/mvneta.h
	modelH []byte
	//go:embed qemu-7.2-mvneta.patch
	qemuPatch []byte
)

// modelFiles are copied into the QEMU source tree, keyed by their path there.
func modelFiles() map[string][]byte {
	return map[string][]byte{
		"hw/net/mvneta.c":         modelC,
		"include/hw/net/mvneta.h": modelH,
	}
}

// ConfigureArgs are the arguments of QEMU's configure: the aarch64 system emulator only, with
// the `virt` board (configs/devices/aarch64-softmmu/minimal.mak), TCG, slirp user networking and
// the system libfdt; no UI, docs, firmware blobs or optional libraries.
var ConfigureArgs = []string{
	"--meson=/usr/bin/meson",
	"--target-list=aarch64-softmmu",
	"--with-devices-aarch64=minimal",
	"--without-default-features",
	"--enable-tcg",
	"--enable-slirp",
	"--enable-fdt=system",
	"--disable-docs",
	"--disable-install-blobs",
	"--disable-werror",
}

// Options control Build.
type Options struct {
	// CacheDir is the ppkit cache root; "" means cachedir.Root().
	CacheDir string
	// Jobs is ninja's parallelism; 0 means the number of CPUs.
	Jobs int
	// Progress receives one-line progress reports; nil discards them.
	Progress io.Writer
}

// InputsKey hashes everything the binary is built from except the source package version.
func InputsKey() string {
	h := sha256.New()
	files := modelFiles()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "file %s %d\n", n, len(files[n]))
		h.Write(files[n])
	}
	fmt.Fprintf(h, "patch %d\n", len(qemuPatch))
	h.Write(qemuPatch)
	fmt.Fprintf(h, "configure %q\n", ConfigureArgs)
	return hex.EncodeToString(h.Sum(nil))
}

func binaryKey(sourceVersion string) string {
	h := sha256.Sum256([]byte("ppkit-mvneta-qemu v1\nsource " + sourceVersion + "\ninputs " + InputsKey() + "\n"))
	return hex.EncodeToString(h[:])[:20]
}

// CachedBinary returns the path of an already built binary for the current inputs, if any. It
// never builds and never runs apt; a cached build of any source version of the series counts.
func CachedBinary(cacheDir string) (string, bool) {
	if cacheDir == "" {
		d, err := cachedir.Root()
		if err != nil {
			return "", false
		}
		cacheDir = d
	}
	for _, v := range extractedVersions(cacheDir) {
		p := filepath.Join(cacheDir, "qemu", binaryKey(v), BinaryName)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, true
		}
	}
	return "", false
}

// Binary returns the path of the mvneta QEMU, building it first if the cache has none for the
// current inputs. It is what the harness calls before every boot with an mvneta NIC.
func Binary(ctx context.Context, opts Options) (string, error) {
	if p, ok := CachedBinary(opts.CacheDir); ok {
		return p, nil
	}
	return Build(ctx, opts)
}

// Build returns the path of the mvneta QEMU for the current inputs, building it if needed.
func Build(ctx context.Context, opts Options) (string, error) {
	if opts.CacheDir == "" {
		d, err := cachedir.Root()
		if err != nil {
			return "", err
		}
		opts.CacheDir = d
	}
	if opts.Jobs <= 0 {
		opts.Jobs = runtime.NumCPU()
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	b := &builder{opts: opts, root: filepath.Join(opts.CacheDir, "qemu")}
	if err := os.MkdirAll(b.root, 0o755); err != nil {
		return "", fmt.Errorf("qemu build: %w", err)
	}
	lock, err := cachedir.Lock(ctx, filepath.Join(b.root, "build.lock"), opts.Progress)
	if err != nil {
		return "", fmt.Errorf("qemu build: %w", err)
	}
	defer lock.Unlock()
	return b.run(ctx)
}

type builder struct {
	opts Options
	root string
}

func (b *builder) logf(format string, args ...any) {
	fmt.Fprintf(b.opts.Progress, "qemu: "+format+"\n", args...)
}

func (b *builder) run(ctx context.Context) (string, error) {
	version, err := b.sourceVersion(ctx)
	if err != nil {
		return "", err
	}
	out := filepath.Join(b.root, binaryKey(version), BinaryName)
	if fi, err := os.Stat(out); err == nil && fi.Mode().IsRegular() {
		b.logf("cached %s", out)
		return out, nil
	}
	start := time.Now()
	work := filepath.Join(b.root, "work", dirVersion(version))
	src := filepath.Join(work, "src")
	if err := b.fetchSource(ctx, version, work); err != nil {
		return "", err
	}
	if err := addModel(src); err != nil {
		return "", err
	}
	if err := applyPatch(ctx, src, qemuPatch); err != nil {
		return "", err
	}
	build := filepath.Join(work, "build")
	if err := b.configure(ctx, src, build); err != nil {
		return "", err
	}
	if err := b.ninja(ctx, build); err != nil {
		return "", err
	}
	if err := copyFile(filepath.Join(build, BinaryName), out); err != nil {
		return "", fmt.Errorf("qemu build: install binary: %w", err)
	}
	b.logf("built %s in %s", out, time.Since(start).Round(time.Second))
	b.pruneOld(filepath.Dir(out))
	return out, nil
}

var keyDir = regexp.MustCompile(`^[0-9a-f]{20}$`)

// pruneAge is how long a binary of earlier inputs is kept: other ppkit processes (a test run on
// another branch, a harness that resolved the path earlier) may still start it.
const pruneAge = 7 * 24 * time.Hour

// pruneOld removes binaries of earlier inputs built more than pruneAge ago (each is ~60 MB; the
// build tree makes a rebuild incremental anyway).
func (b *builder) pruneOld(keep string) {
	entries, _ := os.ReadDir(b.root)
	for _, e := range entries {
		p := filepath.Join(b.root, e.Name())
		if !e.IsDir() || !keyDir.MatchString(e.Name()) || p == keep {
			continue
		}
		if fi, err := os.Stat(filepath.Join(p, BinaryName)); err == nil && time.Since(fi.ModTime()) > pruneAge {
			os.RemoveAll(p)
		}
	}
}

// dirVersion turns a Debian version (1:7.2+dfsg-7+deb12u18) into a directory name.
func dirVersion(v string) string {
	if i := strings.IndexByte(v, ':'); i >= 0 {
		v = v[i+1:]
	}
	return "qemu_" + v
}

// extractedVersions lists source versions whose tree is fully extracted, newest first.
func extractedVersions(cacheDir string) []string {
	dirs, _ := filepath.Glob(filepath.Join(cacheDir, "qemu", "work", "qemu_*", "src", ".ppkit-version"))
	var vs []string
	for _, d := range dirs {
		data, err := os.ReadFile(d)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(data)), SourceSeries) {
			vs = append(vs, strings.TrimSpace(string(data)))
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(vs)))
	return vs
}

// sourceVersion picks the source package version: one already extracted in the cache (no
// network), or else the newest of the series apt knows.
func (b *builder) sourceVersion(ctx context.Context) (string, error) {
	if vs := extractedVersions(filepath.Dir(b.root)); len(vs) > 0 {
		return vs[0], nil
	}
	out, err := exec.CommandContext(ctx, "apt-cache", "showsrc", "qemu").Output()
	if err != nil {
		return "", fmt.Errorf("qemu build: apt-cache showsrc qemu: %w (run harness/install-deps.sh qemu: it adds bookworm's deb-src)", err)
	}
	var best string
	for _, line := range strings.Split(string(out), "\n") {
		v, ok := strings.CutPrefix(line, "Version: ")
		if ok && strings.HasPrefix(v, SourceSeries) && v > best {
			best = strings.TrimSpace(v)
		}
	}
	if best == "" {
		return "", fmt.Errorf("qemu build: apt knows no qemu source of version %s*; run harness/install-deps.sh qemu (bookworm deb-src)", SourceSeries)
	}
	return best, nil
}

// fetchSource downloads the source package and extracts it with Debian's patches applied.
func (b *builder) fetchSource(ctx context.Context, version, work string) error {
	src := filepath.Join(work, "src")
	if _, err := os.Stat(filepath.Join(src, ".ppkit-version")); err == nil {
		return nil
	}
	dl := filepath.Join(work, "download")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return fmt.Errorf("qemu source: %w", err)
	}
	b.logf("fetching Debian source package qemu %s", version)
	cmd := exec.CommandContext(ctx, "apt-get", "source", "--download-only", "qemu="+version)
	cmd.Dir = dl
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("qemu source: apt-get source qemu=%s: %w\n%s", version, err, tail(out, 10))
	}
	dscs, _ := filepath.Glob(filepath.Join(dl, "qemu_*.dsc"))
	if len(dscs) == 0 {
		return fmt.Errorf("qemu source: apt-get source left no .dsc in %s", dl)
	}
	tmp := src + ".tmp"
	os.RemoveAll(tmp)
	b.logf("extracting %s (dpkg-source applies Debian's patches)", filepath.Base(dscs[0]))
	cmd = exec.CommandContext(ctx, "dpkg-source", "--no-check", "-x", dscs[0], tmp)
	cmd.Dir = dl
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("qemu source: dpkg-source -x: %w\n%s", err, tail(out, 10))
	}
	if err := os.WriteFile(filepath.Join(tmp, ".ppkit-version"), []byte(version+"\n"), 0o644); err != nil {
		return fmt.Errorf("qemu source: %w", err)
	}
	os.RemoveAll(src)
	os.RemoveAll(filepath.Join(work, "build")) // a build tree belongs to its source tree
	if err := os.Rename(tmp, src); err != nil {
		return fmt.Errorf("qemu source: %w", err)
	}
	return nil
}

// addModel writes the model files into the tree, touching only files whose content changed so
// that ninja rebuilds only what depends on them.
func addModel(src string) error {
	for rel, data := range modelFiles() {
		p := filepath.Join(src, rel)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, data) {
			continue
		}
		if err := writeFileAtomic(p, data); err != nil {
			return fmt.Errorf("qemu source: add model file %s: %w", rel, err)
		}
	}
	return nil
}

// applyPatch applies patch to the tree, first reverting a different one applied earlier (kept in
// .ppkit-applied.patch); the same patch is not applied twice.
func applyPatch(ctx context.Context, src string, patch []byte) error {
	stamp := filepath.Join(src, ".ppkit-applied.patch")
	old, err := os.ReadFile(stamp)
	if err == nil && bytes.Equal(old, patch) {
		return nil
	}
	if err == nil {
		if out, err := runPatch(ctx, src, old, "-R"); err != nil {
			return fmt.Errorf("qemu source: revert the previous mvneta patch: %w\n%s", err, out)
		}
		os.Remove(stamp)
	}
	if out, err := runPatch(ctx, src, patch, "--dry-run"); err != nil {
		return fmt.Errorf("qemu source: mvneta patch does not apply to %s: %w\n%s", src, err, out)
	}
	if out, err := runPatch(ctx, src, patch); err != nil {
		return fmt.Errorf("qemu source: apply mvneta patch: %w\n%s", err, out)
	}
	return writeFileAtomic(stamp, patch)
}

func runPatch(ctx context.Context, dir string, patch []byte, extra ...string) ([]byte, error) {
	args := append([]string{"-p1", "--forward", "--batch", "--no-backup-if-mismatch"}, extra...)
	cmd := exec.CommandContext(ctx, "patch", args...)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(patch)
	return cmd.CombinedOutput()
}

func (b *builder) configure(ctx context.Context, src, build string) error {
	stamp := filepath.Join(build, ".ppkit-configured")
	want := strings.Join(ConfigureArgs, "\n") + "\n"
	if got, err := os.ReadFile(stamp); err == nil && string(got) == want {
		return nil
	}
	if _, err := os.Stat("/usr/bin/meson"); err != nil {
		return errors.New("qemu configure: /usr/bin/meson is missing; run harness/install-deps.sh qemu")
	}
	os.RemoveAll(build)
	if err := os.MkdirAll(build, 0o755); err != nil {
		return fmt.Errorf("qemu configure: %w", err)
	}
	b.logf("configuring (%s)", strings.Join(ConfigureArgs[1:], " "))
	logPath := filepath.Join(build, "configure.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("qemu configure: %w", err)
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, "nice", append([]string{"-n", "10", filepath.Join(src, "configure")}, ConfigureArgs...)...)
	cmd.Dir = build
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		data, _ := os.ReadFile(logPath)
		return fmt.Errorf("qemu configure failed (%w); log %s ends:\n%s\nmissing build dependencies are installed by harness/install-deps.sh qemu", err, logPath, tail(data, 15))
	}
	return os.WriteFile(stamp, []byte(want), 0o644)
}

var ninjaStep = regexp.MustCompile(`^\[(\d+)/(\d+)\]`)

func (b *builder) ninja(ctx context.Context, build string) error {
	logPath := filepath.Join(build, "ninja.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("qemu build: %w", err)
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, "nice", "-n", "10", "ninja", "-C", build, "-j", strconv.Itoa(b.opts.Jobs), BinaryName)
	cmd.Env = append(os.Environ(), "NINJA_STATUS=[%f/%t] ")
	// On cancellation stop the whole group (ninja and its compilers; ninja removes the outputs
	// of the steps it stops), and never let it outlive ppkit: an orphaned compiler would hold
	// the output pipe, and Wait with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 3 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("qemu build: start ninja: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		last := time.Time{}
		lastPct := -1
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			m := ninjaStep.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			k, _ := strconv.Atoi(m[1])
			n, _ := strconv.Atoi(m[2])
			if n == 0 {
				continue
			}
			pct := k * 100 / n
			if pct != lastPct && (time.Since(last) > 10*time.Second || pct/10 != lastPct/10 || k == n) {
				b.logf("building %d/%d steps (%d%%)", k, n, pct)
				last, lastPct = time.Now(), pct
			}
		}
	}()
	err = cmd.Wait()
	pw.Close()
	<-done
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("qemu build: %w", ctx.Err())
		}
		data, _ := os.ReadFile(logPath)
		return fmt.Errorf("qemu build: ninja failed (%w); log %s ends:\n%s", err, logPath, tail(data, 25))
	}
	return nil
}

func tail(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	tmp := to + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, to)
}
