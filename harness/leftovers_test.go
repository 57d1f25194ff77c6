package harness

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseProcStatStart(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want uint64
		ok   bool
	}{
		{"4242 (ppkit) S 1 4242 4242 34816 4242 4194560 1 0 0 0 0 0 0 0 20 0 9 0 123456 1000 200", 123456, true},
		// the command name can hold spaces and parentheses
		{"77 (a) b (c)) R 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 1 1", 99, true},
		{"77 (short) R 1 2", 0, false},
		{"garbage", 0, false},
	} {
		got, err := parseProcStatStart([]byte(tc.stat))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseProcStatStart(%q) = %d, %v; want %d, ok %v", tc.stat, got, err, tc.want, tc.ok)
		}
	}
	// This process's own start time is what its names carry.
	start, err := processStart(os.Getpid())
	if err != nil || start == 0 {
		t.Fatalf("processStart(self) = %d, %v", start, err)
	}
	if !strings.Contains(OwnedName("net"), "-"+ownerTag()+"-") || !strings.HasSuffix(ownerTag(), "."+strconv.FormatUint(start, 10)) {
		t.Errorf("OwnedName %q does not carry pid.start %s", OwnedName("net"), ownerTag())
	}
}

func TestOwnerOf(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kind  string
		pid   int
		start uint64
		ok    bool
	}{
		{"ppkit-net-123.456-ab12cd34", "net", 123, 456, true},
		{"ppkit-vm-9.0-1234567890", "vm", 9, 0, true}, // os.MkdirTemp's random suffix is digits
		{"ppkit-1a2b3c4d", "", 0, 0, false},           // the old unowned form: never touched
		{"ppkit-vm-x.1-ab", "", 0, 0, false},
		{"ppkit-net-0.5-ab", "", 0, 0, false},
		{"other-net-1.2-ab", "", 0, 0, false},
		{"ppkit-net-1.2-ab/../x", "", 0, 0, false},
	} {
		kind, pid, start, ok := ownerOf(tc.name)
		if kind != tc.kind || pid != tc.pid || start != tc.start || ok != tc.ok {
			t.Errorf("ownerOf(%q) = %q %d %d %v; want %q %d %d %v", tc.name, kind, pid, start, ok, tc.kind, tc.pid, tc.start, tc.ok)
		}
	}
}

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
	owned := filepath.Join(tmp, "ppkit-test-301.2-abc")
	if err := os.Mkdir(owned, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(owned, "console.log"), []byte("x"), 0o644)
	gone := func(int) (uint64, error) { return 0, os.ErrNotExist }
	if n := len(findLeftovers(t.TempDir(), tmp, gone)); n != 1 {
		t.Fatalf("%d leftovers before Keep, want 1", n)
	}
	kept, err := Keep(owned)
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
