// Package owned names what a ppkit process makes in places shared with other processes —
// network namespaces, temporary directories — for the process that made it, so that a later
// run can tell a leftover of a dead ppkit from something another live ppkit still uses. It is a
// leaf: stgit's temporary directories are named here as harness's are, and harness's sweep
// (RemoveLeftovers) reads the names back with Parse.
//
// A name is ppkit-<kind>-<pid>.<start>-<random>: the process's pid and its start time (in clock
// ticks since boot, /proc/PID/stat field 22), so that a pid reused by another process never
// passes for the owner. A process killed with SIGKILL cannot remove what it made.
package owned

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Tag is this process's pid.start, as its names carry it.
var Tag = sync.OnceValue(func() string {
	start, err := ProcessStart(os.Getpid())
	if err != nil {
		start = 0 // no /proc: the name still carries the pid
	}
	return fmt.Sprintf("%d.%d", os.Getpid(), start)
})

// ProcessStart returns the start time of process pid in clock ticks since boot.
func ProcessStart(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStatStart(data)
}

// parseProcStatStart reads field 22 (starttime) of a /proc/PID/stat line. The command name
// (field 2) is in parentheses and may itself hold spaces and parentheses, so fields are counted
// from the last ')'.
func parseProcStatStart(stat []byte) (uint64, error) {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat: no command field in %q", s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command, want at least 20", len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Name returns a fresh name ppkit-<kind>-<pid>.<start>-<random> for something this process
// makes in a shared place. kind is lower-case letters only.
func Name(kind string) string {
	var rnd [4]byte
	rand.Read(rnd[:])
	return "ppkit-" + kind + "-" + Tag() + "-" + hex.EncodeToString(rnd[:])
}

// TempDir makes a temporary directory named for kind and this process (see Name), so that a
// later run can remove it if this process is killed before it does.
func TempDir(kind string) (string, error) {
	dir, err := os.MkdirTemp("", "ppkit-"+kind+"-"+Tag()+"-")
	if err != nil {
		return "", err
	}
	return dir, nil
}

var ownedRe = regexp.MustCompile(`^ppkit-([a-z]+)-([0-9]+)\.([0-9]+)-[0-9A-Za-z]+$`)

// Parse reads an owned name: the kind, the owner's pid and start time.
func Parse(name string) (kind string, pid int, start uint64, ok bool) {
	m := ownedRe.FindStringSubmatch(name)
	if m == nil {
		return "", 0, 0, false
	}
	p, err1 := strconv.Atoi(m[2])
	s, err2 := strconv.ParseUint(m[3], 10, 64)
	if err1 != nil || err2 != nil || p <= 0 {
		return "", 0, 0, false
	}
	return m[1], p, s, true
}

// Gone reports whether the process that made an owned name has exited: no process with
// that pid, or one that started at another time (the pid was reused).
func Gone(pid int, start uint64, alive func(pid int) (uint64, error)) bool {
	got, err := alive(pid)
	if err != nil {
		return os.IsNotExist(err) || err == syscall.ESRCH
	}
	return start != 0 && got != start
}

// Keep takes a directory made by TempDir out of the leftover sweep (ppkit's own RemoveLeftovers), for one the user is told to
// read: under its owned name the next ppkit run would remove it as soon as this process is
// gone. It renames dir to ppkit-kept-<time>-<random> beside it, a name that names no owner, and
// returns the new path.
func Keep(dir string) (string, error) {
	var rnd [4]byte
	rand.Read(rnd[:])
	kept := filepath.Join(filepath.Dir(dir), "ppkit-kept-"+time.Now().Format("20060102T150405")+"-"+hex.EncodeToString(rnd[:]))
	if err := os.Rename(dir, kept); err != nil {
		return dir, fmt.Errorf("keep %s: %w", dir, err)
	}
	return kept, nil
}
