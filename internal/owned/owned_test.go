package owned

import (
	"os"
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
	start, err := ProcessStart(os.Getpid())
	if err != nil || start == 0 {
		t.Fatalf("ProcessStart(self) = %d, %v", start, err)
	}
	if !strings.Contains(Name("net"), "-"+Tag()+"-") || !strings.HasSuffix(Tag(), "."+strconv.FormatUint(start, 10)) {
		t.Errorf("OwnedName %q does not carry pid.start %s", Name("net"), Tag())
	}
}

func TestParse(t *testing.T) {
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
		kind, pid, start, ok := Parse(tc.name)
		if kind != tc.kind || pid != tc.pid || start != tc.start || ok != tc.ok {
			t.Errorf("Parse(%q) = %q %d %d %v; want %q %d %d %v", tc.name, kind, pid, start, ok, tc.kind, tc.pid, tc.start, tc.ok)
		}
	}
}
