package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Build directories, one per header state.
//
// A kernel's objects depend on hundreds of headers: a series that changes mm_types.h or
// skbuff.h and one that does not (the baseline, another design, a prefix of the series) share
// next to no objects. With one build directory, every switch between such kernels recompiled
// the ~800 objects that include the header, through ccache when it had them (57 s on the
// 2-core machines), from scratch when it did not. So each header state gets a build directory
// of its own: the state of a tree is every file it changes against the base commit that is
// not a .c file, with its content (headers, Makefiles, Kconfig, assembly, linker scripts).
// Kernels whose trees differ in .c files only (a mutant, the next patch of a series that
// touches skbuff.c) share a directory and rebuild those files.
//
// The work tree stays one checkout, so make has to be told which header changes a directory
// has already seen. Two rules keep the out-of-tree build exact:
//
//   - .c files keep the modification time git gives them when it writes them: an object older
//     than its .c file is rebuilt, in every directory;
//   - every other file the series changes, and every one a switch of the work tree rewrites, is
//     dated oldTime. Within one directory their content never changes (that is what the
//     directory's state means), so no object there depends on a newer version of them.
//
// A directory for a new state starts as a copy of the directory whose state is closest (fewest
// differing non-.c files); the files that differ are dated now for that build, so make
// rebuilds what includes them and nothing else, and dated oldTime again once it succeeded. A
// copy whose build failed or was interrupted is removed (a marker file says a copy is not yet
// built), because dating the files back would hide its stale objects.

// oldTime dates the non-.c files of the work tree: older than any object ppkit builds.
var oldTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	stateTreeFile = ".ppkit-tree"    // in a build directory: a tree built there
	seedingFile   = ".ppkit-seeding" // in a copied build directory not yet built
)

// changedNonC lists the files that differ between trees a and b and are not .c files (a
// deleted file included).
func changedNonC(ctx context.Context, work, a, b string) ([]string, error) {
	if a == b {
		return nil, nil
	}
	out, err := git(ctx, work, "diff-tree", "-r", "--no-renames", "--name-only", a, b)
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, p := range strings.Split(out, "\n") {
		if p != "" && !strings.HasSuffix(p, ".c") {
			paths = append(paths, p)
		}
	}
	return paths, nil
}

// headerState names the header state of tree: a hash of every non-.c file it changes against
// base, with its content.
func headerState(ctx context.Context, work, base, tree string) (string, error) {
	h := sha256.New()
	if base != tree {
		out, err := git(ctx, work, "diff-tree", "-r", "--no-renames", base, tree)
		if err != nil {
			return "", err
		}
		lines := strings.Split(out, "\n")
		sort.Strings(lines)
		for _, l := range lines {
			// ":100644 100644 <old> <new> M\tpath"
			meta, path, ok := strings.Cut(l, "\t")
			if !ok || strings.HasSuffix(path, ".c") {
				continue
			}
			f := strings.Fields(meta)
			if len(f) < 4 {
				return "", fmt.Errorf("git diff-tree: unexpected line %q", l)
			}
			fmt.Fprintf(h, "%s %s %s\n", path, f[1], f[3])
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// setTimes dates paths (relative to work) t; a path the tree does not have is skipped.
func setTimes(work string, paths []string, t time.Time) error {
	for _, p := range paths {
		if err := os.Chtimes(filepath.Join(work, p), t, t); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// readyBuildDir makes dir (named for tree's header state, under the sibling directories of
// the same source and config matching glob) ready for a build of tree, which the work tree
// holds since a switch from prev ("" when the work tree is new). done is called with the
// build's outcome.
func readyBuildDir(ctx context.Context, work, base, prev, tree, dir, glob string) (done func(ok bool) error, err error) {
	settle, err := changedNonC(ctx, work, base, tree)
	if err != nil {
		return nil, err
	}
	if prev != "" {
		switched, err := changedNonC(ctx, work, prev, tree)
		if err != nil {
			return nil, err
		}
		settle = append(settle, switched...)
	}
	if err := setTimes(work, settle, oldTime); err != nil {
		return nil, err
	}
	// The index keeps the files' dates: git then sees them unchanged and does not rewrite
	// them (with a new date) on the next switch.
	if _, err := git(ctx, work, "update-index", "-q", "--refresh"); err != nil {
		return nil, err
	}
	recordTree := func(ok bool) error {
		if !ok {
			return nil
		}
		return os.WriteFile(filepath.Join(dir, stateTreeFile), []byte(tree+"\n"), 0o644)
	}
	if _, err := os.Stat(filepath.Join(dir, seedingFile)); err == nil {
		// A copy whose build never finished: its objects cannot be trusted.
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
	}
	os.RemoveAll(dir + ".copy")
	if _, err := os.Stat(dir); err == nil {
		return recordTree, nil
	}
	pruneBuildDirs(glob, keepBuildDirs-1)
	seed, seedTree, touched := closestBuildDir(ctx, work, tree, glob)
	if seed == "" {
		return recordTree, nil // a directory of its own, built from nothing
	}
	tmp := dir + ".copy"
	if out, err := exec.CommandContext(ctx, "cp", "-a", seed, tmp).CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("copy build directory %s: %v: %s", seed, err, strings.TrimSpace(string(out)))
	}
	if err := os.WriteFile(filepath.Join(tmp, seedingFile), []byte(seedTree+"\n"), 0o644); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := setTimes(work, touched, time.Now()); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return func(ok bool) error {
		if !ok {
			// Only this copy's objects depended on the new dates.
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
			return setTimes(work, touched, oldTime)
		}
		if err := setTimes(work, touched, oldTime); err != nil {
			return err
		}
		if _, err := git(ctx, work, "update-index", "-q", "--refresh"); err != nil {
			return err
		}
		if err := os.Remove(filepath.Join(dir, seedingFile)); err != nil {
			return err
		}
		return recordTree(true)
	}, nil
}

// keepBuildDirs bounds the build directories of one source and config (~170 MB each): a
// developer who edits a header of the series makes a new state with every edit.
const keepBuildDirs = 8

// pruneBuildDirs removes all but the keep most recently built directories matching glob.
func pruneBuildDirs(glob string, keep int) {
	dirs, _ := filepath.Glob(glob)
	built := func(d string) time.Time {
		st, err := os.Stat(filepath.Join(d, stateTreeFile))
		if err != nil {
			return time.Time{}
		}
		return st.ModTime()
	}
	sort.Slice(dirs, func(i, j int) bool { return built(dirs[i]).After(built(dirs[j])) })
	for i := keep; i < len(dirs); i++ {
		os.RemoveAll(dirs[i])
	}
}

// closestBuildDir finds, among the built directories matching glob, the one whose recorded
// tree differs from tree in the fewest non-.c files, and returns it with that tree and those
// files; "" when there is none.
func closestBuildDir(ctx context.Context, work, tree, glob string) (dir, dirTree string, differ []string) {
	candidates, _ := filepath.Glob(glob)
	best := -1
	for _, c := range candidates {
		if strings.HasSuffix(c, ".copy") {
			continue
		}
		if _, err := os.Stat(filepath.Join(c, seedingFile)); err == nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(c, stateTreeFile))
		if err != nil {
			continue
		}
		t := strings.TrimSpace(string(data))
		d, err := changedNonC(ctx, work, t, tree)
		if err != nil { // a tree this work tree no longer has
			continue
		}
		if best < 0 || len(d) < best {
			best, dir, dirTree, differ = len(d), c, t, d
		}
	}
	return dir, dirTree, differ
}
