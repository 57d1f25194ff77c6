// Package child starts the processes ppkit must not outlive (QEMU, make, ninja, the client's
// traffic tools) so that they die with ppkit and only with ppkit.
//
// Linux sends a child its parent-death signal (PR_SET_PDEATHSIG) when the thread that forked it
// exits, not when the process does. The Go runtime destroys a thread whose goroutine exits
// while locked to it (runtime.LockOSThread), which ppkit does on purpose to open a tap inside a
// network namespace: the thread is left in that namespace and must not run anything else. Any
// child that the same thread had forked before, from any goroutine, got SIGKILL at that moment
// — a QEMU killed in the middle of a procedure, reported as a guest that stopped. Start forks
// every child from one thread that stays locked for the life of the process, so the signal
// comes when ppkit dies and never earlier.
package child

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

var (
	spawnerOnce sync.Once
	spawn       chan func()
)

// spawner runs the forks on one goroutine locked to its thread and never unlocked: the runtime
// never hands that thread to another goroutine, so nothing can end it before the process ends.
func spawner() {
	spawn = make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range spawn {
			f()
		}
	}()
}

// Start starts cmd like cmd.Start, with SIGKILL as its parent-death signal (other SysProcAttr
// fields, such as Setpgid, are kept), forked from the thread that lives as long as ppkit.
func Start(cmd *exec.Cmd) error {
	spawnerOnce.Do(spawner)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	done := make(chan error, 1)
	spawn <- func() { done <- cmd.Start() }
	return <-done
}

// Run is Start followed by cmd.Wait.
func Run(cmd *exec.Cmd) error {
	if err := Start(cmd); err != nil {
		return err
	}
	return cmd.Wait()
}
