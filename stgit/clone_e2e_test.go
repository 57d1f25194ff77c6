//go:build e2e

package stgit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/stgit/stgtest"
)

// commitLine appends a line to the scratch kernel's base file and commits it on the current
// branch; it returns the new commit.
func commitLine(t *testing.T, dir, subject, line string) string {
	t.Helper()
	f := filepath.Join(dir, stgtest.BaseFile)
	old, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	stgtest.WriteFile(t, dir, stgtest.BaseFile, string(old)+line+"\n")
	stgtest.Git(t, dir, "commit", "-q", "-a", "-m", subject+"\n\nSigned-off-by: Jane Dev <jane@example.org>")
	return strings.TrimSpace(stgtest.Git(t, dir, "rev-parse", "HEAD"))
}

// ExportRange exports base..HEAD as an stg series, and says in a *RangeError — a verdict on the
// branch, not a tool failure — why a range is no series: empty, with a merge, or off its base.
func TestExportRange(t *testing.T) {
	stgtest.Hermetic(t)
	ctx := context.Background()
	newTree := func() (dir, base string) {
		dir = stgtest.KernelRepo(t)
		return dir, strings.TrimSpace(stgtest.Git(t, dir, "rev-parse", "HEAD"))
	}

	t.Run("series", func(t *testing.T) {
		dir, base := newTree()
		commitLine(t, dir, "net: one", "int one;")
		commitLine(t, dir, "net: two", "int two;")
		out := filepath.Join(t.TempDir(), "patches")
		if err := OwnRepo(dir).ExportRange(ctx, base, "v5.10", "topic", out); err != nil {
			t.Fatal(err)
		}
		s, err := ReadSeries(filepath.Join(out, "series"))
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Patches) != 2 || !strings.Contains(s.Patches[0], "one") || !strings.Contains(s.Patches[1], "two") {
			t.Errorf("exported %v, want the two commits in order", s.Patches)
		}
	})

	for _, tc := range []struct {
		name, want string
		setup      func(t *testing.T, dir, base string) (newBase string)
	}{
		{"empty", "v5.10..topic holds no commit", func(t *testing.T, dir, base string) string { return base }},
		{"merge", "v5.10..topic has merge commits", func(t *testing.T, dir, base string) string {
			stgtest.Git(t, dir, "checkout", "-q", "-b", "side")
			commitLine(t, dir, "net: side", "int side;")
			stgtest.Git(t, dir, "checkout", "-q", "master")
			stgtest.WriteFile(t, dir, "net/core/page_pool.c", "// SPDX-License-Identifier: GPL-2.0\nint main_line;\n")
			stgtest.Git(t, dir, "commit", "-q", "-a", "-m", "net: main")
			stgtest.Git(t, dir, "merge", "-q", "--no-edit", "side")
			return base
		}},
		{"not an ancestor", "v5.10 is not an ancestor of topic", func(t *testing.T, dir, base string) string {
			stgtest.Git(t, dir, "checkout", "-q", "-b", "other")
			other := commitLine(t, dir, "net: elsewhere", "int elsewhere;")
			stgtest.Git(t, dir, "checkout", "-q", "master")
			commitLine(t, dir, "net: mine", "int mine;")
			return other
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, base := newTree()
			base = tc.setup(t, dir, base)
			before := stgtest.Snapshot(t, dir)
			err := OwnRepo(dir).ExportRange(ctx, base, "v5.10", "topic", filepath.Join(t.TempDir(), "patches"))
			var re *RangeError
			if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ExportRange: %v, want a *RangeError %q", err, tc.want)
			}
			if stgtest.Snapshot(t, dir) != before {
				t.Error("a refused range changed the tree")
			}
		})
	}
}
