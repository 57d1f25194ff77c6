package harness

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/ppkit/ppkit/internal/owned"
)

// What a ppkit process makes in shared places is named for it (package owned); RemoveLeftovers,
// which every boot runs once per process, finds the names whose owner is gone and removes them.

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
			_, pid, start, ok := owned.Parse(e.Name())
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
			if !owned.Gone(pid, start, alive) {
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
		for _, l := range findLeftovers("/run/netns", os.TempDir(), owned.ProcessStart) {
			var err error
			switch l.Kind {
			case "netns":
				err = deleteNetns(l.Path)
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

// TempDir is owned.TempDir, recorded so that tests can check that the directory is gone.
func TempDir(kind string) (string, error) {
	dir, err := owned.TempDir(kind)
	if err != nil {
		return "", err
	}
	created.add(&created.dirs, dir)
	return dir, nil
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
		_, pid, start, ok := owned.Parse(name)
		return ok && fmt.Sprintf("%d.%d", pid, start) == owned.Tag()
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if mine(e.Name()) && deleteNetns(e.Name()) == nil {
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
