package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// What a ppkit process makes in places shared with other processes — network namespaces and
// temporary directories — is named ppkit-<kind>-<pid>.<start>-<random>: the process's pid and
// its start time (in clock ticks since boot, /proc/PID/stat field 22), so that a pid reused by
// another process never passes for the owner. A process killed with SIGKILL cannot remove what
// it made; RemoveLeftovers, which every boot runs once per process, finds the names whose owner
// is gone and removes them.

var ownerTag = sync.OnceValue(func() string {
	start, err := processStart(os.Getpid())
	if err != nil {
		start = 0 // no /proc: the name still carries the pid
	}
	return fmt.Sprintf("%d.%d", os.Getpid(), start)
})

// processStart returns the start time of process pid in clock ticks since boot.
func processStart(pid int) (uint64, error) {
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

// OwnedName returns a fresh name ppkit-<kind>-<pid>.<start>-<random> for something this process
// makes in a shared place. kind is lower-case letters only.
func OwnedName(kind string) string {
	var rnd [4]byte
	rand.Read(rnd[:])
	return "ppkit-" + kind + "-" + ownerTag() + "-" + hex.EncodeToString(rnd[:])
}

// TempDir makes a temporary directory named for kind and this process (see OwnedName), so that
// RemoveLeftovers can remove it if this process is killed before it does.
func TempDir(kind string) (string, error) {
	dir, err := os.MkdirTemp("", "ppkit-"+kind+"-"+ownerTag()+"-")
	if err != nil {
		return "", err
	}
	created.add(&created.dirs, dir)
	return dir, nil
}

var ownedRe = regexp.MustCompile(`^ppkit-([a-z]+)-([0-9]+)\.([0-9]+)-[0-9A-Za-z]+$`)

// ownerOf parses an owned name: the kind, the owner's pid and start time.
func ownerOf(name string) (kind string, pid int, start uint64, ok bool) {
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

// ownerGone reports whether the process that made an owned name has exited: no process with
// that pid, or one that started at another time (the pid was reused).
func ownerGone(pid int, start uint64, alive func(pid int) (uint64, error)) bool {
	got, err := alive(pid)
	if err != nil {
		return os.IsNotExist(err) || err == syscall.ESRCH
	}
	return start != 0 && got != start
}

// Leftover is something a dead ppkit process made and left behind.
type Leftover struct {
	Kind  string // "netns" or "dir"
	Path  string // the namespace name or the directory
	Owner int    // the dead owner's pid
}

func (l Leftover) String() string {
	if l.Kind == "netns" {
		return fmt.Sprintf("network namespace %s", l.Path)
	}
	return fmt.Sprintf("directory %s", l.Path)
}

// findLeftovers lists the owned names in the network-namespace directory and the temporary
// directory whose owner is gone. It only reads.
func findLeftovers(netnsDir, tmpDir string, alive func(pid int) (uint64, error)) []Leftover {
	var out []Leftover
	scan := func(dir, kind string, onlyDirs bool) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range ents {
			_, pid, start, ok := ownerOf(e.Name())
			if !ok || pid == os.Getpid() {
				continue
			}
			if onlyDirs {
				st, err := os.Lstat(filepath.Join(dir, e.Name()))
				if err != nil || !st.IsDir() {
					continue
				}
				if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
					continue // another user's: not ours to remove
				}
			}
			if !ownerGone(pid, start, alive) {
				continue
			}
			path := e.Name()
			if kind == "dir" {
				path = filepath.Join(dir, e.Name())
			}
			out = append(out, Leftover{Kind: kind, Path: path, Owner: pid})
		}
	}
	scan(netnsDir, "netns", false)
	scan(tmpDir, "dir", true)
	return out
}

var leftoversOnce sync.Once

// RemoveLeftovers removes the network namespaces and temporary directories of ppkit processes
// that are gone (killed before they could clean up), saying on progress what it removed. It
// runs once per process; later calls do nothing.
func RemoveLeftovers(progress io.Writer) {
	leftoversOnce.Do(func() {
		if progress == nil {
			progress = io.Discard
		}
		for _, l := range findLeftovers("/run/netns", os.TempDir(), processStart) {
			var err error
			switch l.Kind {
			case "netns":
				if out, e := exec.Command("ip", "netns", "del", l.Path).CombinedOutput(); e != nil {
					err = fmt.Errorf("%w: %s", e, strings.TrimSpace(string(out)))
				}
			case "dir":
				err = os.RemoveAll(l.Path)
			}
			if err != nil {
				fmt.Fprintf(progress, "cleanup: could not remove the %s left by ppkit pid %d, which is gone: %v\n", l, l.Owner, err)
				continue
			}
			fmt.Fprintf(progress, "cleanup: removed the %s left by ppkit pid %d, which is gone\n", l, l.Owner)
		}
	})
}

// liveGroups are the process groups this process leads and has not yet seen exit: QEMU and the
// kernel build's make. Abandon kills them.
var liveGroups = struct {
	sync.Mutex
	pgids map[int]bool
}{pgids: map[int]bool{}}

func trackGroup(pgid int) {
	liveGroups.Lock()
	liveGroups.pgids[pgid] = true
	liveGroups.Unlock()
}

func untrackGroup(pgid int) {
	liveGroups.Lock()
	delete(liveGroups.pgids, pgid)
	liveGroups.Unlock()
}

// Abandon is the last resort of an interrupted ppkit that cannot wait for its graceful steps
// (a second Ctrl-C, or a step that does not end): it kills every process group this process
// started that is still running (QEMU, make) and removes every network namespace and
// temporary directory named for this process. It returns what it removed. The caller exits
// right after.
func Abandon() []string {
	var done []string
	liveGroups.Lock()
	for pgid := range liveGroups.pgids {
		if syscall.Kill(-pgid, syscall.SIGKILL) == nil {
			done = append(done, fmt.Sprintf("process group %d", pgid))
		}
	}
	liveGroups.Unlock()
	mine := func(name string) bool {
		_, pid, start, ok := ownerOf(name)
		return ok && fmt.Sprintf("%d.%d", pid, start) == ownerTag()
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if mine(e.Name()) && exec.Command("ip", "netns", "del", e.Name()).Run() == nil {
				done = append(done, "network namespace "+e.Name())
			}
		}
	}
	if ents, err := os.ReadDir(os.TempDir()); err == nil {
		for _, e := range ents {
			if mine(e.Name()) && e.IsDir() {
				p := filepath.Join(os.TempDir(), e.Name())
				if os.RemoveAll(p) == nil {
					done = append(done, "directory "+p)
				}
			}
		}
	}
	return done
}

// removeAll removes dir; when ctx was cancelled (ppkit must be gone within seconds) a large
// directory — a partly extracted kernel tree — is renamed out of the way at once and deleted by
// a detached rm that outlives ppkit.
func removeAll(ctx context.Context, dir string) {
	if ctx.Err() != nil {
		trash := dir + ".removing"
		if os.Rename(dir, trash) == nil {
			cmd := exec.Command("rm", "-rf", "--", trash)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			if cmd.Start() == nil {
				cmd.Process.Release()
				return
			}
			dir = trash
		}
	}
	os.RemoveAll(dir)
}

// Keep takes a directory made by TempDir out of the leftover sweep, for one the user is told to
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
