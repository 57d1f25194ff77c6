package harness

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/ppkit/ppkit/internal/atomicfile"
	"github.com/ppkit/ppkit/internal/cachedir"
	"github.com/ppkit/ppkit/internal/child"
	"github.com/ppkit/ppkit/stgit"
)

//go:embed config/ppkit.config
var ppkitConfig []byte

//go:embed config/debug.config
var debugConfig []byte

// traceEventsPatch adds the trace events ppkit/arch_sync_dma_for_device and
// ppkit/page_pool_put_page, which the reference model reads beside the page_pool and kmem
// tracepoints. It is applied after the series to every kernel ppkit builds and is never part
// of a series: as tracepoints, not kprobes, they cost the traffic a ring-buffer write instead of
// two exceptions a hit (the patch's message has the figures).
//
//go:embed config/trace-events.patch
var traceEventsPatch []byte

// TraceEventsFile is the path of the trace events patch in ppkit's source, for messages.
const TraceEventsFile = "harness/config/trace-events.patch"

// kernelRecipe changes whenever the way ppkit builds a kernel changes, invalidating cached builds.
const kernelRecipe = "ppkit-kernel-1 arm64 tinyconfig+fragment Image"

// KernelOptions says which kernel to build.
type KernelOptions struct {
	// Tree is a user's kernel git tree (its Commit is built, read-only). Empty: Debian's
	// linux-source-5.10 tarball (Tarball, default DefaultKernelTarball).
	Tree string
	// Commit is the commit of Tree the series applies to (default HEAD), e.g. the base of the
	// user's stg stack.
	Commit  string
	Tarball string
	// Series is an stg-exported series (its directory or its series file); empty builds the
	// baseline.
	Series string
	// Upto applies only the first Upto patches of the series (0: all).
	Upto int
	// Debug adds config/debug.config (KASAN, DEBUG_VM, PAGE_OWNER, lockdep).
	Debug bool
	// BaseConfig is a .config to start from instead of tinyconfig: a real board's own
	// (BoardKernelConfig), so that the kernel keeps what the board needs to boot (its MMC,
	// its PHY, its file systems). BoardModules is the board's /proc/modules: the modules it
	// has loaded become built-in (`make localyesconfig`), since ppkit installs no modules.
	// ppkit's fragment goes on top either way.
	BaseConfig   []byte
	BoardModules []byte
	// Jobs is make's -j (default: the number of CPUs).
	Jobs int
	// Cache is the cache root (default cachedir.Root()).
	Cache string
	// Progress receives human-readable progress lines (nil: discarded).
	Progress io.Writer
}

// Kernel is a built kernel, cached under Cache/kernel/<Key>.
type Kernel struct {
	Key       string
	Dir       string
	Image     string // arch/arm64/boot/Image
	Config    string // the final .config
	SystemMap string
	BuildLog  string
	Patches   []string // applied patch names, in order
	Debug     bool     // built with config/debug.config (boots with page_owner=on)
	Cached    bool     // true when nothing was built
	Elapsed   time.Duration
}

// BuildKernel builds (or finds in the cache) the arm64 kernel for opts. An unchanged input returns
// at once; a changed series rebuilds incrementally in the build directory of its source, config
// and header state (builddir.go).
func BuildKernel(ctx context.Context, opts KernelOptions) (*Kernel, error) {
	start := time.Now()
	cache, progress, err := cacheAndProgress(opts.Cache, opts.Progress)
	if err != nil {
		return nil, err
	}
	var src *kernelSource
	if opts.Tree != "" {
		src, err = userKernelSource(ctx, opts.Tree, opts.Commit)
	} else {
		tarball := opts.Tarball
		if tarball == "" {
			tarball = DefaultKernelTarball
		}
		src, err = tarballKernelSource(ctx, cache, tarball, progress)
	}
	if err != nil {
		return nil, fmt.Errorf("build kernel: %w", err)
	}
	var series *stgit.Series
	var patches []string
	if opts.Series != "" {
		all, err := stgit.ReadSeries(opts.Series)
		if err != nil {
			return nil, fmt.Errorf("build kernel: %w", err)
		}
		if opts.Upto < 0 || opts.Upto > len(all.Patches) {
			return nil, fmt.Errorf("build kernel: --upto %d: the series has %d patches", opts.Upto, len(all.Patches))
		}
		series = all
		if opts.Upto > 0 {
			series = all.Prefix(opts.Upto)
		}
		patches = series.Patches
	}
	fragment := KernelConfigFragment(opts.Debug)
	cfgKey, cfgSum := newHasher()
	cfgKey.add("recipe", []byte(kernelRecipe))
	cfgKey.add("source", []byte(src.id))
	cfgKey.add("fragment", fragment)
	addBoardConfig(cfgKey, opts)
	configInputs := cfgSum()

	key, keySum := newHasher()
	key.add("recipe", []byte(kernelRecipe))
	key.add("commit", []byte(src.commit))
	key.add("fragment", fragment)
	addBoardConfig(key, opts)
	for _, name := range patches {
		data, err := os.ReadFile(series.PatchPath(name))
		if err != nil {
			return nil, fmt.Errorf("build kernel: %w", err)
		}
		key.add("patch", data)
	}
	key.add("trace-events", traceEventsPatch)
	k := &Kernel{Key: keySum(), Patches: patches, Debug: opts.Debug}
	k.Dir = filepath.Join(cache, "kernel", k.Key)
	k.Image = filepath.Join(k.Dir, "Image")
	k.Config = filepath.Join(k.Dir, "config")
	k.SystemMap = filepath.Join(k.Dir, "System.map")
	k.BuildLog = filepath.Join(k.Dir, "build.log")
	if _, err := os.Stat(k.Image); err == nil {
		k.Cached = true
		k.Elapsed = time.Since(start)
		fmt.Fprintf(progress, "kernel: cached %s (%d patches)\n", k.Dir, len(patches))
		return k, nil
	}

	// One work tree per build directory: a --debug build does not hold up (or force rebuilds
	// in) the normal one. The normal one keeps the source's plain name.
	work := filepath.Join(cache, "work", src.id)
	if opts.Debug {
		work += "-debug"
	}
	lock, err := cachedir.Lock(ctx, work+".lock", progress)
	if err != nil {
		return nil, fmt.Errorf("build kernel: %w", err)
	}
	defer lock.Unlock()
	if _, err := os.Stat(k.Image); err == nil { // built while we waited
		k.Cached = true
		k.Elapsed = time.Since(start)
		return k, nil
	}
	prev, tree, err := prepareWorkTree(ctx, work, src, series, traceEventsPatch, progress)
	if err != nil {
		return nil, fmt.Errorf("build kernel: %w", err)
	}
	state, err := headerState(ctx, work, src.commit, tree)
	if err != nil {
		return nil, fmt.Errorf("build kernel: %w", err)
	}
	stage, err := os.MkdirTemp(filepath.Join(cache, "kernel"), ".build-")
	if err != nil {
		if err := os.MkdirAll(filepath.Join(cache, "kernel"), 0o755); err != nil {
			return nil, err
		}
		if stage, err = os.MkdirTemp(filepath.Join(cache, "kernel"), ".build-"); err != nil {
			return nil, err
		}
	}
	defer os.RemoveAll(stage)
	logf, err := os.Create(filepath.Join(stage, "build.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// Build directories are named by the .config they build with, not by its inputs: a
	// board's config that resolves to ppkit's own (the deploy test's board, a board deployed
	// from the config in its /boot) builds beside ppkit's kernels instead of from nothing.
	b := &kernelBuild{ctx: ctx, work: work, dir: work + "-config", cache: cache, jobs: opts.Jobs, log: logf, progress: progress}
	config, err := b.resolvedConfig(filepath.Join(cache, "build", "config-"+configInputs), fragment, opts.BaseConfig, opts.BoardModules)
	if err != nil {
		return nil, fmt.Errorf("build kernel: %w (log: %s)", err, b.keepLog(k))
	}
	buildPrefix := filepath.Join(cache, "build", src.id+"-"+configSum(config))
	buildDir := buildPrefix + "-" + state
	done, err := readyBuildDir(ctx, work, src.commit, prev, tree, buildDir, buildPrefix+"-*")
	if err != nil {
		return nil, fmt.Errorf("build kernel: build directory: %w", err)
	}
	built := false
	defer func() {
		if err := done(built); err != nil {
			fmt.Fprintf(progress, "kernel: build directory %s: %v\n", buildDir, err)
		}
	}()
	b.dir = buildDir
	if err := b.useConfig(config); err != nil {
		return nil, fmt.Errorf("build kernel: %w (log: %s)", err, b.keepLog(k))
	}
	fmt.Fprintf(progress, "kernel: building %s with %d patches and ppkit's trace events in %s\n", src.id, len(patches), buildDir)
	if err := b.make("Image"); err != nil {
		return nil, fmt.Errorf("build kernel: %w (log: %s)", err, b.keepLog(k))
	}
	built = true
	for from, to := range map[string]string{
		"arch/arm64/boot/Image": "Image", ".config": "config", "System.map": "System.map",
	} {
		if err := copyFile(filepath.Join(buildDir, from), filepath.Join(stage, to)); err != nil {
			return nil, fmt.Errorf("build kernel: %w", err)
		}
	}
	logf.Close()
	if err := os.Rename(stage, k.Dir); err != nil {
		return nil, fmt.Errorf("build kernel: %w", err)
	}
	k.Elapsed = time.Since(start)
	fmt.Fprintf(progress, "kernel: built %s in %s\n", k.Image, k.Elapsed.Round(time.Second))
	return k, nil
}

// KernelConfigFragment returns the config fragment applied on top of tinyconfig.
func KernelConfigFragment(debug bool) []byte {
	f := append([]byte(nil), ppkitConfig...)
	if debug {
		f = append(append(f, '\n'), debugConfig...)
	}
	return f
}

// MergeKconfig returns base (a .config) with every symbol that fragment sets replaced by the
// fragment's line, as scripts/kconfig/merge_config.sh does; olddefconfig then resolves it.
func MergeKconfig(base, fragment []byte) ([]byte, error) {
	want, err := ParseKconfig(fragment)
	if err != nil {
		return nil, err
	}
	var out strings.Builder
	for _, line := range strings.Split(string(base), "\n") {
		if sym := kconfigLineSymbol(line); sym != "" {
			if _, ok := want[sym]; ok {
				continue
			}
		}
		if line != "" {
			out.WriteString(line + "\n")
		}
	}
	out.WriteString("# ppkit fragment\n")
	out.Write(fragment)
	if len(fragment) > 0 && fragment[len(fragment)-1] != '\n' {
		out.WriteString("\n")
	}
	return []byte(out.String()), nil
}

var kconfigSymRe = regexp.MustCompile(`^(?:# )?(CONFIG_[A-Za-z0-9_]+)(?:=| is not set$)`)

func kconfigLineSymbol(line string) string {
	if m := kconfigSymRe.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
		return m[1]
	}
	return ""
}

type kernelBuild struct {
	ctx      context.Context
	work     string
	dir      string
	cache    string
	jobs     int
	log      *os.File
	progress io.Writer
	env      []string // added to make's environment
}

func (b *kernelBuild) keepLog(k *Kernel) string {
	failed := filepath.Join(filepath.Dir(k.Dir), k.Key+".failed.log")
	b.log.Sync()
	copyFile(b.log.Name(), failed)
	return failed
}

// addBoardConfig keys a board's config (KernelOptions.BaseConfig): only when there is one, so
// that the emulated board's kernels keep their keys.
func addBoardConfig(h *hasher, opts KernelOptions) {
	if len(opts.BaseConfig) > 0 {
		h.add("base-config", opts.BaseConfig)
		h.add("board-modules", opts.BoardModules)
	}
}

// resolvedConfig returns the .config of a kernel configured from these inputs: read from file,
// or configured in b.dir (a scratch directory) and saved there.
func (b *kernelBuild) resolvedConfig(file string, fragment, boardConfig, boardModules []byte) ([]byte, error) {
	if data, err := os.ReadFile(file); err == nil {
		return data, nil
	}
	data, err := b.configure(fragment, boardConfig, boardModules)
	if err != nil {
		return nil, err
	}
	return data, atomicfile.Write(file, data, 0o644)
}

// configSum names a resolved .config.
func configSum(config []byte) string {
	h, sum := newHasher()
	h.add("config", config)
	return sum()
}

// configure writes b.dir's .config from its inputs and returns it: tinyconfig or the board's
// config (with its loaded modules built in), the fragment merged in, olddefconfig, then the
// check that every wanted setting survived.
func (b *kernelBuild) configure(fragment, boardConfig, boardModules []byte) ([]byte, error) {
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return nil, err
	}
	dotconfig := filepath.Join(b.dir, ".config")
	if len(boardConfig) == 0 {
		fmt.Fprintf(b.progress, "kernel: configuring (tinyconfig + harness/config fragment)\n")
		if err := b.make("tinyconfig"); err != nil {
			return nil, err
		}
	} else {
		fmt.Fprintf(b.progress, "kernel: configuring (the board's config + harness/config fragment)\n")
		if err := os.WriteFile(dotconfig, boardConfig, 0o644); err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(boardModules)) > 0 {
			lsmod := filepath.Join(b.dir, "board-modules")
			if err := os.WriteFile(lsmod, boardModules, 0o644); err != nil {
				return nil, err
			}
			b.env = []string{"LSMOD=" + lsmod}
			err := b.make("localyesconfig")
			b.env = nil
			if err != nil {
				return nil, err
			}
		}
	}
	base, err := os.ReadFile(dotconfig)
	if err != nil {
		return nil, err
	}
	merged, err := MergeKconfig(base, fragment)
	if err != nil {
		return nil, fmt.Errorf("config fragment: %w", err)
	}
	if err := os.WriteFile(dotconfig, merged, 0o644); err != nil {
		return nil, err
	}
	if err := b.make("olddefconfig"); err != nil {
		return nil, err
	}
	final, err := os.ReadFile(dotconfig)
	if err != nil {
		return nil, err
	}
	want, _ := ParseKconfig(fragment)
	got, err := ParseKconfig(final)
	if err != nil {
		return nil, err
	}
	if missing := MissingKconfig(want, got); len(missing) > 0 {
		return nil, fmt.Errorf("Kconfig dropped %d wanted option(s) (unmet dependencies; fix harness/config): %s",
			len(missing), strings.Join(missing, ", "))
	}
	return final, nil
}

// useConfig makes config (resolved by configure) the build directory's .config. olddefconfig
// writes what Kbuild derives from it and must leave it as it is.
func (b *kernelBuild) useConfig(config []byte) error {
	dotconfig := filepath.Join(b.dir, ".config")
	if old, err := os.ReadFile(dotconfig); err == nil && bytes.Equal(old, config) {
		return nil
	}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dotconfig, config, 0o644); err != nil {
		return err
	}
	if err := b.make("olddefconfig"); err != nil {
		return err
	}
	final, err := os.ReadFile(dotconfig)
	if err != nil {
		return err
	}
	if !bytes.Equal(final, config) {
		return fmt.Errorf("olddefconfig changed the resolved .config in %s", b.dir)
	}
	return nil
}

// make runs one kernel make target, niced, with ccache when present, copying its output to the
// build log and printing a progress line every few seconds.
func (b *kernelBuild) make(target string) error {
	jobs := b.jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	cc := "aarch64-linux-gnu-gcc"
	if _, err := exec.LookPath(cc); err != nil {
		return fmt.Errorf("cross compiler %s not found (run harness/install-deps.sh kernel)", cc)
	}
	if _, err := exec.LookPath("ccache"); err == nil {
		cc = "ccache " + cc
	}
	args := []string{"-n", "10", "make", "-C", b.work, "O=" + b.dir, "ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-",
		"CC=" + cc, "LOCALVERSION=", fmt.Sprintf("-j%d", jobs), target}
	cmd := exec.CommandContext(b.ctx, "nice", args...)
	// CCACHE_BASEDIR: ccache hashes the compiler's command line, whose -I paths are absolute
	// (the work tree); relative to the build directory they are the same in every cache root,
	// so a build in another checkout's or a test's cache hits the same entries.
	cmd.Env = append(os.Environ(), "CCACHE_DIR="+filepath.Join(b.cache, "ccache"), "CCACHE_BASEDIR="+b.cache,
		"KBUILD_BUILD_USER=ppkit", "KBUILD_BUILD_HOST=ppkit", "KBUILD_BUILD_TIMESTAMP=2024-08-10")
	cmd.Env = append(cmd.Env, b.env...)
	// Kbuild re-invokes make in the build directory: on cancellation kill the whole process
	// group, or the sub-make would go on building after ppkit returned.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	fmt.Fprintf(b.log, "$ nice %s\n", strings.Join(args, " "))
	if err := child.Start(cmd); err != nil {
		return fmt.Errorf("make %s: %w", target, err)
	}
	trackGroup(cmd.Process.Pid)
	defer untrackGroup(cmd.Process.Pid)
	done := make(chan struct{})
	var tail []string
	go func() {
		defer close(done)
		start := time.Now()
		last := start
		objects := 0
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(b.log, line)
			tail = append(tail, line)
			if len(tail) > 20 {
				tail = tail[1:]
			}
			if f := strings.Fields(line); len(f) == 2 && (f[0] == "CC" || f[0] == "AS" || f[0] == "LD" || f[0] == "AR") {
				objects++
			}
			if time.Since(last) >= 5*time.Second {
				last = time.Now()
				fmt.Fprintf(b.progress, "kernel: %s %5s, %d steps: %s\n", target,
					time.Since(start).Round(time.Second), objects, strings.TrimSpace(line))
			}
		}
	}()
	err := cmd.Wait()
	pw.Close()
	<-done
	if err != nil {
		if b.ctx.Err() != nil {
			return fmt.Errorf("make %s: %w", target, b.ctx.Err())
		}
		return fmt.Errorf("make %s: %w:\n%s", target, err, strings.Join(tail, "\n"))
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
