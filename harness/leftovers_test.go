package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/internal/owned"
)

// TestFindLeftovers: only names whose owner is gone (no such pid, or the pid now belongs to a
// process that started at another time) are leftovers; live owners' and foreign names stay.
func TestFindLeftovers(t *testing.T) {
	netns, tmp := t.TempDir(), t.TempDir()
	live := map[int]uint64{100: 5000, 200: 7000}
	alive := func(pid int) (uint64, error) {
		if s, ok := live[pid]; ok {
			return s, nil
		}
		return 0, os.ErrNotExist
	}
	for _, n := range []string{"ppkit-net-100.5000-aa", "ppkit-net-300.1-bb", "ppkit-net-200.6999-cc", "ppkit-abcdef12", "other"} {
		os.WriteFile(filepath.Join(netns, n), nil, 0o644)
	}
	for _, n := range []string{"ppkit-vm-100.5000-1", "ppkit-vm-301.2-2", "ppkit-test-200.6999-3"} {
		os.Mkdir(filepath.Join(tmp, n), 0o755)
	}
	os.WriteFile(filepath.Join(tmp, "ppkit-vm-302.2-4"), nil, 0o644) // a file, not a directory of ours
	got := map[string]int{}
	for _, l := range findLeftovers(netns, tmp, alive) {
		got[l.Kind+" "+filepath.Base(l.Path)] = l.Owner
	}
	want := map[string]int{
		"netns ppkit-net-300.1-bb":    300,
		"netns ppkit-net-200.6999-cc": 200, // pid 200 was reused by a process started later
		"dir ppkit-vm-301.2-2":        301,
		"dir ppkit-test-200.6999-3":   200,
	}
	if len(got) != len(want) {
		t.Fatalf("leftovers %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("leftover %s: owner %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

// A directory the user was told to read must survive the next run's sweep, once its owner is
// gone.
func TestKeptDirectoryIsNoLeftover(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "ppkit-test-301.2-abc")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "console.log"), []byte("x"), 0o644)
	gone := func(int) (uint64, error) { return 0, os.ErrNotExist }
	if n := len(findLeftovers(t.TempDir(), tmp, gone)); n != 1 {
		t.Fatalf("%d leftovers before Keep, want 1", n)
	}
	kept, err := owned.Keep(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ls := findLeftovers(t.TempDir(), tmp, gone); len(ls) != 0 {
		t.Errorf("the kept directory is still a leftover: %v", ls)
	}
	if filepath.Dir(kept) != tmp || !strings.HasPrefix(filepath.Base(kept), "ppkit-kept-") {
		t.Errorf("kept as %s", kept)
	}
	if data, err := os.ReadFile(filepath.Join(kept, "console.log")); err != nil || string(data) != "x" {
		t.Errorf("kept directory lost its content: %q %v", data, err)
	}
}
