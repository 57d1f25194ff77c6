package child

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// exitOf waits for cmd in the background.
func exitOf(cmd *exec.Cmd) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- cmd.Wait() }()
	return ch
}

func killedBy(err error) (syscall.Signal, bool) {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 0, false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
}

// forkOnLockedThreadThenExit starts cmd with start from a goroutine locked to its thread and
// lets that goroutine exit locked, so the runtime destroys the thread (as ppkit's tap opener
// does). The process's main thread is never destroyed (the runtime parks it instead), so a
// goroutine that lands there keeps it and the next one is tried.
func forkOnLockedThreadThenExit(t *testing.T, cmd *exec.Cmd, start func(*exec.Cmd) error) {
	t.Helper()
	release := make(chan struct{})
	defer close(release)
	for {
		errc := make(chan error, 1)
		onMain := make(chan bool, 1)
		go func() {
			runtime.LockOSThread()
			if syscall.Gettid() == syscall.Getpid() {
				onMain <- true
				<-release // hold the main thread so that the next goroutine runs elsewhere
				return
			}
			onMain <- false
			errc <- start(cmd)
			// return without UnlockOSThread: the thread ends here
		}()
		if <-onMain {
			continue
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		return
	}
}

// The mechanism this package exists for: a child whose parent-death signal is tied to a thread
// that the runtime later destroys dies although ppkit lives. If this stops failing on some
// kernel, Start is still correct, but the reason for it is gone.
func TestPlainPdeathsigDiesWithItsThread(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	forkOnLockedThreadThenExit(t, cmd, (*exec.Cmd).Start)
	select {
	case err := <-exitOf(cmd):
		if sig, ok := killedBy(err); !ok || sig != syscall.SIGKILL {
			t.Fatalf("sleep ended with %v, want SIGKILL", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("sleep outlived the thread that forked it; the parent-death signal did not fire")
	}
}

func TestStartOutlivesDestroyedThreads(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	forkOnLockedThreadThenExit(t, cmd, Start)
	// and more threads destroyed, wherever the runtime puts their goroutines
	for i := 0; i < 20; i++ {
		done := make(chan struct{})
		go func() { runtime.LockOSThread(); close(done) }()
		<-done
	}
	exited := exitOf(cmd)
	select {
	case err := <-exited:
		t.Fatalf("sleep ended early: %v", err)
	case <-time.After(time.Second):
	}
	if pgid, err := syscall.Getpgid(cmd.Process.Pid); err != nil || pgid != cmd.Process.Pid {
		t.Errorf("Setpgid lost: pgid %d, %v", pgid, err)
	}
	cmd.Process.Kill()
	<-exited
}

// TestStartDiesWithParent runs this test binary as a parent that starts sleep with Start and
// prints its pid; killing that parent must kill sleep.
func TestStartDiesWithParent(t *testing.T) {
	if os.Getenv("PPKIT_CHILD_PARENT") == "1" {
		cmd := exec.Command("sleep", "30")
		if err := Start(cmd); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(cmd.Process.Pid)
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	parent := exec.Command(os.Args[0], "-test.run=^TestStartDiesWithParent$")
	parent.Env = append(os.Environ(), "PPKIT_CHILD_PARENT=1")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		parent.Process.Kill()
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(line[:len(line)-1])
	if err != nil {
		parent.Process.Kill()
		t.Fatalf("parent printed %q", line)
	}
	parent.Process.Kill()
	parent.Wait()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// sleep is reparented to init (or a subreaper), so read its state rather than signal it
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || zombie(data) {
			return
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("sleep pid %d outlived its killed parent", pid)
		}
	}
}

// zombie reads the state field of /proc/PID/stat ("pid (comm) S ...").
func zombie(stat []byte) bool {
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' {
			return i+2 < len(stat) && stat[i+2] == 'Z'
		}
	}
	return false
}
