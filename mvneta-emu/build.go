// Package mvnetaemu builds the QEMU that carries ppkit's model of the Marvell Armada 3700 NETA
// (mvneta) Ethernet controller, and hands out the path of the resulting qemu-system-aarch64.
//
// The model is a QEMU patch series in qemu-patches/ (git format-patch output, embedded in this
// package): the device (hw/net/mvneta.c, include/hw/net/mvneta.h, Kconfig, meson, trace events),
// the virt board wiring, and the device-tree node. hw/net/mvneta.c and include/hw/net/mvneta.h
// in this directory are the files the first patch carries, kept whole for reading and editing
// (TestDevicePatchCarriesTheModel keeps them equal). Build fetches Debian bookworm's qemu source
// package with apt, lets dpkg-source apply Debian's patches, applies the series, configures a
// minimal aarch64-softmmu build and runs ninja. The finished binary is cached under
// <cache>/qemu/<key>/ where key hashes every input (source package version, patches, configure
// arguments): unchanged input never rebuilds. The source and build trees stay in
// <cache>/qemu/work/<source version>/ so a model change rebuilds incrementally.
package mvnetaemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
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

	"github.com/ppkit/ppkit/internal/atomicfile"
	"github.com/ppkit/ppkit/internal/cachedir"
	"github.com/ppkit/ppkit/internal/child"
)

// BinaryName is the QEMU system emulator that carries the model.
const BinaryName = "qemu-system-aarch64"

// DeviceName is the -device name of the model: `-device mvneta,netdev=n0[,mac=...]`.
const DeviceName = "mvneta"

// SourceSeries is the upstream QEMU series the patch applies to: Debian bookworm's qemu source
// package. A newer bookworm security upload of the same series is picked up automatically.
const SourceSeries = "1:7.2+dfsg"

//go:embed qemu-patches/*.patch
var patchFS embed.FS

// PatchDir is where the QEMU series lives in this package's directory.
const PatchDir = "qemu-patches"

// qemuPatch is one patch of the series: its file name (NNNN-subject.patch) and content.
type qemuPatch struct {
	Name string
	Data []byte
}

// qemuSeries is the series in the order it applies: device, virt board, device tree.
var qemuSeries = func() []qemuPatch {
	entries, err := patchFS.ReadDir(PatchDir)
	if err != nil {
		panic(err)
	}
	var series []qemuPatch
	for _, e := range entries { // ReadDir sorts by name: 0001-, 0002-, ...
		data, err := patchFS.ReadFile(PatchDir + "/" + e.Name())
		if err != nil {
			panic(err)
		}
		series = append(series, qemuPatch{e.Name(), data})
	}
	return series
}()

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
	for _, p := range qemuSeries {
		fmt.Fprintf(h, "patch %s %d\n", p.Name, len(p.Data))
		h.Write(p.Data)
	}
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
	restore := func(ctx context.Context, files []string) error {
		b.logf("the patches applied earlier do not revert; taking Debian's %s again", strings.Join(files, ", "))
		return restorePristine(ctx, work, src, files)
	}
	if err := applySeries(ctx, src, qemuSeries, restore); err != nil {
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

// appliedStamp, in the source tree, holds the series applied to it: the patches concatenated.
const appliedStamp = ".ppkit-applied.patch"

// applySeries applies the patches in order, first reverting a different series applied earlier
// (the stamp); the same series is not applied twice. Each patch is tried with --dry-run before
// it is applied, and a failure reverts the ones applied before it: the tree is left as it was,
// pristine, never half-patched. If the earlier series does not revert — files changed under
// it, as an older ppkit sharing the cache does when it copies its model files in before
// reverting — restore (if not nil) puts Debian's version of the files it names back.
func applySeries(ctx context.Context, src string, series []qemuPatch, restore func(ctx context.Context, files []string) error) error {
	stamp := filepath.Join(src, appliedStamp)
	var all []byte
	for _, p := range series {
		all = append(all, p.Data...)
	}
	old, err := os.ReadFile(stamp)
	if err == nil && bytes.Equal(old, all) {
		return nil
	}
	if err == nil {
		// Files the swap leaves as they were keep their modification time, so that ninja
		// rebuilds only what changed: after a model change, mvneta.c and the link.
		kept := fileStates(src, patchFiles(append(append([]byte{}, old...), all...)))
		defer kept.restoreUnchanged(src)
		if err := revertSeries(ctx, src, old); err != nil {
			if restore == nil {
				return err
			}
			if rerr := restore(ctx, patchFiles(append(append([]byte{}, old...), all...))); rerr != nil {
				return fmt.Errorf("%w; restoring Debian's files failed too: %v", err, rerr)
			}
		}
		os.Remove(stamp)
	}
	// A file the series creates is not in Debian's tree; a copy there is what an earlier ppkit
	// put in outside its patch (it copied the model files in), and would block the patch.
	for _, p := range series {
		for _, f := range createdFiles(p.Data) {
			os.Remove(filepath.Join(src, f))
		}
	}
	for i, p := range series {
		out, err := runPatch(ctx, src, p.Data, "--dry-run")
		if err == nil {
			out, err = runPatch(ctx, src, p.Data)
		}
		if err != nil {
			for j := i - 1; j >= 0; j-- {
				runPatch(ctx, src, series[j].Data, "-R")
			}
			return fmt.Errorf("qemu source: %s/%s does not apply to %s: %w\n%s", PatchDir, p.Name, src, err, out)
		}
	}
	return atomicfile.Write(stamp, all, 0o644)
}

// restorePristine writes Debian's version of files into dst, and deletes those Debian's tree
// lacks, from a scratch extraction of the source package downloaded into work; the build tree
// stays, so the rebuild is incremental.
func restorePristine(ctx context.Context, work, dst string, files []string) error {
	dscs, _ := filepath.Glob(filepath.Join(work, "download", "qemu_*.dsc"))
	if len(dscs) == 0 {
		return fmt.Errorf("no source package in %s", filepath.Join(work, "download"))
	}
	tmp, err := os.MkdirTemp(work, "pristine-")
	if err != nil {
		return err
	}
	tmp = filepath.Join(tmp, "src")
	defer os.RemoveAll(filepath.Dir(tmp))
	cmd := exec.CommandContext(ctx, "dpkg-source", "--no-check", "-x", dscs[0], tmp)
	cmd.Dir = filepath.Dir(dscs[0])
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-source -x: %w\n%s", err, tail(out, 10))
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(tmp, f))
		switch {
		case os.IsNotExist(err):
			os.Remove(filepath.Join(dst, f))
		case err != nil:
			return err
		default:
			if err := atomicfile.Write(filepath.Join(dst, f), data, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// revertSeries reverts a series applied earlier, last patch first. A stamp from before the
// series was split is one plain diff, reverted as one.
func revertSeries(ctx context.Context, src string, applied []byte) error {
	parts := splitMails(applied)
	for i := len(parts) - 1; i >= 0; i-- {
		if out, err := runPatch(ctx, src, parts[i], "-R"); err != nil {
			return fmt.Errorf("qemu source: revert the mvneta patches applied earlier to %s: %w\n%s", src, err, out)
		}
	}
	return nil
}

// splitMails cuts concatenated git format-patch output at its "From <commit> <date>" lines.
func splitMails(data []byte) [][]byte {
	var parts [][]byte
	start := 0
	for i := 0; i < len(data); {
		end := bytes.IndexByte(data[i:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += i + 1
		}
		if i > start && mailStart.Match(data[i:end]) {
			parts = append(parts, data[start:i])
			start = i
		}
		i = end
	}
	return append(parts, data[start:])
}

var mailStart = regexp.MustCompile(`^From [0-9a-f]{40} `)

// patchFiles lists the files a patch touches, in either format-patch or diff -ruN form.
func patchFiles(patch []byte) []string {
	seen := map[string]bool{}
	var files []string
	for _, l := range strings.Split(string(patch), "\n") {
		var f string
		switch {
		case strings.HasPrefix(l, "--- a/"):
			f = strings.TrimPrefix(l, "--- a/")
		case strings.HasPrefix(l, "+++ b/"):
			f = strings.TrimPrefix(l, "+++ b/")
		default:
			continue
		}
		if i := strings.IndexByte(f, '\t'); i >= 0 {
			f = f[:i]
		}
		if !seen[f] {
			seen[f] = true
			files = append(files, f)
		}
	}
	return files
}

type fileState struct {
	data  []byte
	mtime time.Time
}

type fileStateMap map[string]fileState

// fileStates records the content and modification time of the files that exist.
func fileStates(dir string, files []string) fileStateMap {
	m := fileStateMap{}
	for _, f := range files {
		p := filepath.Join(dir, f)
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if data, err := os.ReadFile(p); err == nil {
			m[f] = fileState{data, fi.ModTime()}
		}
	}
	return m
}

// restoreUnchanged gives every file whose content is what it was its old modification time.
func (m fileStateMap) restoreUnchanged(dir string) {
	for f, st := range m {
		p := filepath.Join(dir, f)
		if data, err := os.ReadFile(p); err == nil && bytes.Equal(data, st.data) {
			os.Chtimes(p, st.mtime, st.mtime)
		}
	}
}

// createdFiles lists the files a patch creates (its "--- /dev/null" sections).
func createdFiles(patch []byte) []string {
	var files []string
	lines := strings.Split(string(patch), "\n")
	for i := 0; i+1 < len(lines); i++ {
		if lines[i] == "--- /dev/null" && strings.HasPrefix(lines[i+1], "+++ b/") {
			files = append(files, strings.TrimPrefix(lines[i+1], "+++ b/"))
		}
	}
	return files
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
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 3 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := child.Start(cmd); err != nil {
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
