package harness

import (
	"bytes"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// readNewc is a minimal newc reader for the tests: it returns name → (mode, data, rdev).
func readNewc(t *testing.T, b []byte) map[string]CPIOEntry {
	t.Helper()
	out := map[string]CPIOEntry{}
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("bad header field at %d: %v", off, err)
		}
		return uint32(v)
	}
	pad := func(n int) int { return (n + 3) &^ 3 }
	for {
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic at %d: %q", off, b[off:off+6])
		}
		mode, size, rmaj, rmin, namesize := field(1), int(field(6)), field(9), field(10), int(field(11))
		name := string(b[off+110 : off+110+namesize-1])
		dataOff := pad(off + 110 + namesize)
		data := b[dataOff : dataOff+size]
		off = pad(dataOff + size)
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("trailer at %d, archive ends at %d", off, len(b))
			}
			return out
		}
		out[name] = CPIOEntry{Path: name, Mode: mode, Data: data, DevMajor: rmaj, DevMinor: rmin}
	}
}

func TestCPIOArchive(t *testing.T) {
	a := NewCPIOArchive()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.AddFile("/usr/bin/tool", 0o755, []byte("abc")))
	must(a.AddFile("etc/x", 0o644, []byte("12345")))
	must(a.AddSymlink("init", "bin/busybox"))
	must(a.AddCharDev("dev/console", 0o600, 5, 1))
	must(a.AddDir("tmp", 0o1777))
	must(a.AddFile("etc/x", 0o600, []byte("later wins")))
	if err := a.AddFile("etc/x/y", 0o644, nil); err == nil {
		t.Error("adding a file under a regular file succeeded")
	}
	if err := a.AddFile("/", 0o644, nil); err == nil {
		t.Error("adding the root as a file succeeded")
	}
	var buf bytes.Buffer
	if _, err := a.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	got := readNewc(t, buf.Bytes())
	want := map[string]struct {
		mode uint32
		data string
	}{
		"usr":          {cpioTypeDir | 0o755, ""},
		"usr/bin":      {cpioTypeDir | 0o755, ""},
		"usr/bin/tool": {cpioTypeRegular | 0o755, "abc"},
		"etc":          {cpioTypeDir | 0o755, ""},
		"etc/x":        {cpioTypeRegular | 0o600, "later wins"},
		"init":         {cpioTypeSymlink | 0o777, "bin/busybox"},
		"dev":          {cpioTypeDir | 0o755, ""},
		"dev/console":  {cpioTypeChar | 0o600, ""},
		"tmp":          {cpioTypeDir | 0o1777, ""},
	}
	if len(got) != len(want) {
		t.Errorf("got %d entries, want %d: %v", len(got), len(want), got)
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("missing %s", name)
			continue
		}
		if g.Mode != w.mode || string(g.Data) != w.data {
			t.Errorf("%s: mode %o data %q, want %o %q", name, g.Mode, g.Data, w.mode, w.data)
		}
	}
	if c := got["dev/console"]; c.DevMajor != 5 || c.DevMinor != 1 {
		t.Errorf("dev/console rdev %d:%d, want 5:1", c.DevMajor, c.DevMinor)
	}
	// Reproducible: the same entries give the same bytes.
	var again bytes.Buffer
	a.WriteTo(&again)
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two writes of the same archive differ")
	}
	// GNU cpio, when installed, must list the same names (a second, independent reader).
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-it", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("cpio -it: %v", err)
		}
		if n := len(strings.Fields(string(out))); n != len(want) {
			t.Errorf("cpio -it lists %d names, want %d:\n%s", n, len(want), out)
		}
	}
}

func TestResolvesFollowsSymlinks(t *testing.T) {
	a := NewCPIOArchive()
	a.AddFile("lib/aarch64-linux-gnu/libz.so.1.2.13", 0o644, []byte("x"))
	a.AddSymlink("lib/aarch64-linux-gnu/libz.so.1", "libz.so.1.2.13")
	a.AddSymlink("lib/ld.so", "/lib/aarch64-linux-gnu/libz.so.1")
	a.AddSymlink("lib/loop", "loop")
	for p, want := range map[string]bool{
		"lib/aarch64-linux-gnu/libz.so.1": true, "/lib/ld.so": true, "lib/loop": false, "lib/none": false,
	} {
		if got := a.resolves(p); got != want {
			t.Errorf("resolves(%s) = %v, want %v", p, got, want)
		}
	}
}

func TestDropbearEd25519Key(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, 32)
	key := append(append([]byte(nil), seed...), bytes.Repeat([]byte{9}, 32)...)
	got := DropbearEd25519Key(key)
	want := append([]byte("\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x40"), key...)
	if !bytes.Equal(got, want) {
		t.Errorf("got %x\nwant %x", got, want)
	}
}
