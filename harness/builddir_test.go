package harness

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/stgit"
)

// A toy out-of-tree build with make's own dependency rules (gcc -MMD, as kbuild's fixdep
// records them): one header, one .c file, a program that prints what it was built from.
// It runs in the build directory, as kbuild's make does: the targets (and the dependency
// file's) are relative to it, so a copied directory's rules are its own.
const toyMakefile = `prog: a.o
	gcc -o $@ $<
a.o: $(SRC)/a.c
	gcc -MMD -MP -MF a.d -I$(SRC) -c -o $@ $(SRC)/a.c
-include a.d
`

const toyC = `#include <stdio.h>
#include "h.h"
#define A 0
int main(void) { printf("%d\n", V + A); return 0; }
`

func toyHeaderPatch(from, to string) string {
	return "h: V " + to + "\n\nFrom: A Developer <dev@example.com>\n\nSigned-off-by: A Developer <dev@example.com>\n---\n" +
		"diff --git a/h.h b/h.h\n--- a/h.h\n+++ b/h.h\n@@ -1 +1 @@\n-#define V " + from + "\n+#define V " + to + "\n"
}

const toyCPatch = `a: add 100

From: A Developer <dev@example.com>

Signed-off-by: A Developer <dev@example.com>
---
diff --git a/a.c b/a.c
--- a/a.c
+++ b/a.c
@@ -1,4 +1,4 @@
 #include <stdio.h>
 #include "h.h"
-#define A 0
+#define A 100
 int main(void) { printf("%d\n", V + A); return 0; }
`

// TestBuildDirPerHeaderState drives readyBuildDir through the switches a test suite makes —
// new header states, revisits, a .c change, an interrupted and a failed copy — with real git,
// make and gcc, and checks after each build that the program is what its tree says and that
// make rebuilt only what changed.
func TestBuildDirPerHeaderState(t *testing.T) {
	for _, tool := range []string{"git", "make", "gcc", "cp"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (run harness/install-deps.sh)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	ctx := context.Background()
	user := filepath.Join(t.TempDir(), "toy")
	for name, body := range map[string]string{"Makefile": toyMakefile, "h.h": "#define V 1\n", "a.c": toyC} {
		os.MkdirAll(user, 0o755)
		if err := os.WriteFile(filepath.Join(user, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"commit", "-q", "-m", "base"}} {
		if _, err := git(ctx, user, args...); err != nil {
			t.Fatal(err)
		}
	}
	src, err := userKernelSource(ctx, user, "")
	if err != nil {
		t.Fatal(err)
	}
	patches := writeSeries(t, map[string]string{
		"v2": toyHeaderPatch("1", "2"), "v3": toyHeaderPatch("1", "3"), "v4": toyHeaderPatch("1", "4"),
		"c100": toyCPatch, "broken": strings.Replace(toyHeaderPatch("1", "5"), "V 5", "V (", -1),
	})
	work := filepath.Join(t.TempDir(), "work")
	builds := filepath.Join(t.TempDir(), "build")
	os.MkdirAll(builds, 0o755)
	prefix := filepath.Join(builds, "toy")

	// prepare switches the work tree to the series of names and readies its build directory.
	prepare := func(names ...string) (dir string, done func(bool) error) {
		t.Helper()
		var series *stgit.Series
		if len(names) > 0 {
			os.WriteFile(filepath.Join(patches, "series"), []byte(strings.Join(names, "\n")+"\n"), 0o644)
			if series, err = stgit.ReadSeries(patches); err != nil {
				t.Fatal(err)
			}
		}
		prev, tree, err := prepareWorkTree(ctx, work, src, series, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		state, err := headerState(ctx, work, src.commit, tree)
		if err != nil {
			t.Fatal(err)
		}
		dir = prefix + "-" + state
		if done, err = readyBuildDir(ctx, work, src.commit, prev, tree, dir, prefix+"-*"); err != nil {
			t.Fatal(err)
		}
		return dir, done
	}
	objTime := func(dir string) time.Time {
		st, err := os.Stat(filepath.Join(dir, "a.o"))
		if err != nil {
			return time.Time{}
		}
		return st.ModTime()
	}
	dirs := map[string]string{} // the build directory of each series, by its first build
	// build builds the series and checks the program prints want; rebuilt says whether make
	// must have compiled a.o again (false: the directory's object is still the right one).
	build := func(what string, want string, rebuilt bool, names ...string) {
		t.Helper()
		time.Sleep(15 * time.Millisecond) // distinct modification times
		dir, done := prepare(names...)
		before := objTime(dir)
		os.MkdirAll(dir, 0o755) // as the kernel's configure step does
		out, err := exec.Command("make", "-s", "-C", dir, "-f", filepath.Join(work, "Makefile"), "SRC="+work).CombinedOutput()
		if derr := done(err == nil); derr != nil {
			t.Fatalf("%s: %v", what, derr)
		}
		if err != nil {
			t.Fatalf("%s: make: %v\n%s", what, err, out)
		}
		got, err := exec.Command(filepath.Join(dir, "prog")).Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(got)) != want {
			t.Errorf("%s: the program prints %s, want %s (a stale object)", what, strings.TrimSpace(string(got)), want)
		}
		if again := !objTime(dir).Equal(before); again != rebuilt {
			t.Errorf("%s: a.o rebuilt = %v, want %v", what, again, rebuilt)
		}
		if _, err := os.Stat(filepath.Join(dir, seedingFile)); err == nil {
			t.Errorf("%s: the built directory still says it is a copy being built", what)
		}
		dirs[strings.Join(names, "+")] = dir
	}

	build("V=2, a directory of its own", "2", true, "v2")
	build("V=3, a copy of V=2's", "3", true, "v3")
	if dirs["v2"] == dirs["v3"] {
		t.Fatal("two header states share a build directory")
	}
	build("V=2 again: its directory is up to date", "2", false, "v2")
	build("V=2 and a .c change: same directory, a.o rebuilt", "102", true, "v2", "c100")
	if dirs["v2+c100"] != dirs["v2"] {
		t.Error("a .c change got a build directory of its own")
	}
	build("V=3 again: a.c changed back since", "3", true, "v3")
	build("V=3 again, nothing changed", "3", false, "v3")
	build("the base", "1", true)

	// A copy whose build was interrupted (done never called) is not trusted: the next build
	// of that state copies again.
	dir, _ := prepare("v4")
	if _, err := os.Stat(filepath.Join(dir, seedingFile)); err != nil {
		t.Fatalf("a copied directory carries no marker: %v", err)
	}
	build("V=4 after an interrupted copy", "4", true, "v4")

	// A copy whose build failed is removed.
	dir, done := prepare("broken")
	out, err := exec.Command("make", "-s", "-C", dir, "-f", filepath.Join(work, "Makefile"), "SRC="+work).CombinedOutput()
	if err == nil {
		t.Fatalf("the broken header built:\n%s", out)
	}
	if err := done(false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the failed copy %s is still there", dir)
	}
	if n, _ := filepath.Glob(prefix + "-*"); len(n) != 4 { // V=2, V=3, the base, V=4; nothing of the failed copy
		t.Errorf("build directories %v", n)
	}
	// Pruning keeps the most recently built: V=4's and the base's.
	pruneBuildDirs(prefix+"-*", 2)
	if n, _ := filepath.Glob(prefix + "-*"); len(n) != 2 || !slices.Contains(n, dirs["v4"]) || !slices.Contains(n, dirs[""]) {
		t.Errorf("after pruning to 2: %v", n)
	}
	// V=2's directory is gone: a copy of the closest again.
	build("V=2 after the failed copy and the pruning", "2", true, "v2")
	build("V=2, nothing changed", "2", false, "v2")
}
