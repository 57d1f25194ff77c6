// Package stgtest builds hermetic scratch repositories with real git and stg stacks for the
// tests of stgit and cmd/ppkit: no ambient git configuration leaks in, and a missing tool fails
// the test when CI=true instead of skipping it.
package stgtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/internal/cachedir"
)

// Require fails (CI=true) or skips the test when a tool is not installed.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required (install it with harness/install-deps.sh): %v", tool, err)
			}
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
}

// Hermetic gives the test a HOME and global git config of its own, removes GIT_* and EDITOR
// variables, and pins the author and committer identity. It returns the HOME. (Dates are not
// pinned through GIT_AUTHOR_DATE: with it set, stg 0.19's `mail --mbox` silently drops messages.)
func Hermetic(t testing.TB) string {
	t.Helper()
	Require(t, "git", "stg")
	home := t.TempDir()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "GIT_") || k == "EDITOR" || k == "VISUAL" || strings.HasPrefix(k, "PPKIT_") {
			// t.Setenv restores the old value when the test ends; then unset it for the test.
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_CONFIG_GLOBAL", filepath.Join(home, ".gitconfig"))
	t.Setenv("TZ", "UTC")
	t.Setenv("LC_ALL", "C")
	Git(t, home, "config", "--global", "user.name", "Jane Dev")
	Git(t, home, "config", "--global", "user.email", "jane@example.org")
	Git(t, home, "config", "--global", "init.defaultBranch", "master")
	Git(t, home, "config", "--global", "advice.detachedHead", "false")
	return home
}

// Run runs a command in dir and fails the test if it fails.
func Run(t testing.TB, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdin = nil
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Git runs git in dir.
func Git(t testing.TB, dir string, args ...string) string { return Run(t, dir, "git", args...) }

// Stg runs stg in dir.
func Stg(t testing.TB, dir string, args ...string) string { return Run(t, dir, "stg", args...) }

// WriteFile writes a file under dir, creating directories.
func WriteFile(t testing.TB, dir, name, content string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// BaseFile is the C file of the scratch kernel that the generated patches change.
const BaseFile = "net/core/skbuff.c"

// KernelRepo creates a small kernel-like git repository (a Makefile that builds objects with
// $(CROSS_COMPILE)gcc into O=, a C file per subsystem, the MAINTAINERS file) with one commit,
// and returns its directory. Call Hermetic first.
func KernelRepo(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "linux")
	Git(t, filepath.Dir(dir), "init", "-q", dir)
	WriteFile(t, dir, "Makefile", kernelMakefile)
	var b strings.Builder
	b.WriteString("// SPDX-License-Identifier: GPL-2.0\n#include \"skbuff.h\"\n\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "int skb_counter_%d;\n", i)
	}
	WriteFile(t, dir, BaseFile, b.String())
	WriteFile(t, dir, "net/core/skbuff.h", "/* SPDX-License-Identifier: GPL-2.0 */\nextern int skb_counter_1;\n")
	WriteFile(t, dir, "net/core/page_pool.c", "// SPDX-License-Identifier: GPL-2.0\nint page_pool_users;\n")
	// What checkpatch.pl and get_maintainer.pl take for the top of a kernel tree.
	for _, f := range []string{"COPYING", "CREDITS", "Kbuild", "README"} {
		WriteFile(t, dir, f, "scratch kernel for ppkit tests\n")
	}
	for _, d := range []string{"Documentation", "arch", "include", "drivers", "fs", "init", "ipc", "kernel", "lib", "scripts"} {
		WriteFile(t, dir, d+"/.gitignore", "")
	}
	WriteFile(t, dir, "MAINTAINERS", "NETWORKING [GENERAL]\nM:\t\"David S. Miller\" <davem@davemloft.net>\nL:\tnetdev@vger.kernel.org\nS:\tMaintained\nF:\tnet/\n")
	Git(t, dir, "add", ".")
	// A fixed date gives every scratch kernel the same base commit.
	cmd := exec.Command("git", "commit", "-q", "-m", "Linux 5.10-scratch")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_DATE=2024-01-02T03:04:05+00:00", "GIT_COMMITTER_DATE=2024-01-02T03:04:05+00:00")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git commit: %v\n%s", err, out)
	}
	return dir
}

// kernelMakefile mimics Kbuild's interface: `make O=DIR defconfig|olddefconfig|prepare|path/x.o`.
const kernelMakefile = `O ?= .
CC := $(CROSS_COMPILE)gcc
.PHONY: defconfig olddefconfig prepare
defconfig olddefconfig:
	@mkdir -p $(O) && echo CONFIG_NET=y > $(O)/.config
prepare:
	@test -f $(O)/.config
%.o: %.c
	@mkdir -p $(O)/$(dir $@)
	$(CC) -Wall -Werror -c -o $(O)/$@ $<
`

// Patch describes one patch to create with Stack.
type Patch struct {
	Name    string
	Subject string
	Body    string // long description; a Signed-off-by line is added unless NoSignoff
	File    string // file to change (default BaseFile)
	Line    string // line appended to File
	// Replace replaces the Nth line (1-based) of File with Line instead of appending.
	Replace   int
	NoSignoff bool
	Author    string // "Name <email>", default the committer
}

// DefaultPatches returns n well-formed patches touching BaseFile.
func DefaultPatches(n int) []Patch {
	ps := make([]Patch, n)
	for i := range ps {
		ps[i] = Patch{
			Name:    fmt.Sprintf("net-foo-patch-number-%d", i+1),
			Subject: fmt.Sprintf("net: foo: patch number %d", i+1),
			Body:    fmt.Sprintf("Make the page_pool return hook count event %d so that the\nrecycling path can be audited.", i+1),
			Replace: 2 + 2*i,
			Line:    fmt.Sprintf("int skb_counter_%d = %d;", 2*i+1, i+1),
		}
	}
	return ps
}

// Stack initialises an stg stack on the checked-out branch of dir and creates the patches.
func Stack(t testing.TB, dir string, patches []Patch) {
	t.Helper()
	if !strings.Contains(Git(t, dir, "config", "--list"), "stgit.stackformatversion") {
		Stg(t, dir, "init")
	}
	for _, p := range patches {
		msg := p.Subject + "\n"
		if p.Body != "" {
			msg += "\n" + p.Body + "\n"
		}
		if !p.NoSignoff {
			msg += "\nSigned-off-by: Jane Dev <jane@example.org>\n"
		}
		args := []string{"new", "-m", msg}
		if p.Author != "" {
			args = append(args, "--author", p.Author)
		}
		Stg(t, dir, append(args, p.Name)...)
		file := p.File
		if file == "" {
			file = BaseFile
		}
		path := filepath.Join(dir, file)
		old, _ := os.ReadFile(path)
		var content string
		if p.Replace > 0 {
			lines := strings.Split(string(old), "\n")
			lines[p.Replace] = p.Line
			content = strings.Join(lines, "\n")
		} else {
			content = string(old) + p.Line + "\n"
		}
		WriteFile(t, dir, file, content)
		Git(t, dir, "add", file)
		Stg(t, dir, "refresh")
	}
}

// Snapshot is what must not change when ppkit refuses bad input: HEAD, branches, refs
// (including the stack's), git status, the stack's series and the contents of extra directories.
func Snapshot(t testing.TB, repo string, dirs ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(Git(t, repo, "rev-parse", "HEAD"))
	b.WriteString(Run(t, repo, "git", "symbolic-ref", "-q", "HEAD"))
	b.WriteString(Git(t, repo, "for-each-ref", "--format=%(refname) %(objectname)"))
	b.WriteString(Git(t, repo, "status", "--porcelain", "--ignored"))
	b.WriteString(Git(t, repo, "stash", "list"))
	b.WriteString(Git(t, repo, "worktree", "list", "--porcelain"))
	cfg := exec.Command("git", "config", "--local", "--list")
	cfg.Dir = repo
	out, _ := cfg.Output()
	b.Write(out)
	for _, d := range append([]string{repo}, dirs...) {
		filepath.Walk(d, func(path string, fi os.FileInfo, err error) error {
			if err != nil {
				return nil
			}
			if fi.IsDir() && fi.Name() == ".git" && path != filepath.Join(repo, ".git") {
				return filepath.SkipDir
			}
			if strings.Contains(path, "/.git/objects") || strings.HasSuffix(path, ".git/index") || strings.Contains(path, "/.git/logs") {
				return nil
			}
			if fi.Mode().IsRegular() {
				data, _ := os.ReadFile(path)
				fmt.Fprintf(&b, "%s %d %x\n", strings.TrimPrefix(path, d), len(data), data)
			} else {
				fmt.Fprintf(&b, "%s %v\n", strings.TrimPrefix(path, d), fi.Mode().Type())
			}
			return nil
		})
	}
	return b.String()
}

// KernelScripts are the scripts of linux-source-5.10 that ppkit runs from a kernel tree.
var KernelScripts = []string{"scripts/checkpatch.pl", "scripts/spelling.txt", "scripts/const_structs.checkpatch", "scripts/get_maintainer.pl"}

// cacheRoot is ppkit's cache (cachedir.Root), read before Hermetic replaces HOME.
var cacheRoot = func() string {
	d, err := cachedir.Root()
	if err != nil {
		return filepath.Join(os.TempDir(), "ppkit-cache")
	}
	return d
}()

// LinuxSourceTarball is Debian's linux-source-5.10.
const LinuxSourceTarball = "/usr/src/linux-source-5.10.tar.xz"

// AddKernelScripts copies the real checkpatch.pl and get_maintainer.pl (with their data files)
// of linux-source-5.10 into the scratch kernel and commits them. They are extracted once into
// ~/.cache/ppkit/linux-5.10-scripts.
func AddKernelScripts(t testing.TB, dir string) {
	t.Helper()
	cache := filepath.Join(cacheRoot, "linux-5.10-scripts")
	if _, err := os.Stat(filepath.Join(cache, "scripts", "get_maintainer.pl")); err != nil {
		if _, err := os.Stat(LinuxSourceTarball); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required (harness/install-deps.sh installs linux-source-5.10): %v", LinuxSourceTarball, err)
			}
			t.Skipf("no %s: %v", LinuxSourceTarball, err)
		}
		tmp, err := os.MkdirTemp(filepath.Dir(cache), ".scripts-")
		if err != nil {
			if err := os.MkdirAll(filepath.Dir(cache), 0o755); err != nil {
				t.Fatal(err)
			}
			if tmp, err = os.MkdirTemp(filepath.Dir(cache), ".scripts-"); err != nil {
				t.Fatal(err)
			}
		}
		defer os.RemoveAll(tmp)
		args := []string{"-xJf", LinuxSourceTarball, "-C", tmp, "--strip-components=1", "--wildcards"}
		for _, s := range KernelScripts {
			args = append(args, "*/"+s)
		}
		Run(t, tmp, "tar", args...)
		os.RemoveAll(cache)
		if err := os.Rename(tmp, cache); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range KernelScripts {
		data, err := os.ReadFile(filepath.Join(cache, s))
		if err != nil {
			t.Fatal(err)
		}
		WriteFile(t, dir, s, string(data))
	}
	Git(t, dir, "add", "scripts")
	Git(t, dir, "commit", "-q", "-m", "scripts: add checkpatch.pl and get_maintainer.pl of Linux 5.10")
}
