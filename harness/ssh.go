package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	scp "github.com/bramvdbogaerde/go-scp"
	"golang.org/x/crypto/ssh"
)

func (vm *VM) sshConfig() *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(vm.opts.Image.ClientKey)},
		HostKeyCallback: ssh.FixedHostKey(vm.opts.Image.HostKey),
		// Offer only the pinned key's algorithm: dropbear 2022.83 picks rsa-sha2-* when offered
		// and then fails an assertion, as it has no RSA host key.
		HostKeyAlgorithms: []string{vm.opts.Image.HostKey.Type()},
		Timeout:           10 * time.Second,
	}
}

// dialSSH logs in, retrying while the guest's SSH server is still starting.
func (vm *VM) dialSSH(ctx context.Context) error {
	addr := fmt.Sprintf("127.0.0.1:%d", vm.sshPort)
	var last error
	for {
		type res struct {
			c   *ssh.Client
			err error
		}
		ch := make(chan res, 1)
		go func() {
			c, err := dialSSHOnce(addr, vm.sshConfig(), 10*time.Second)
			ch <- res{c, err}
		}()
		select {
		case r := <-ch:
			if r.err == nil {
				vm.ssh = r.c
				return nil
			}
			last = r.err
			if strings.Contains(r.err.Error(), "host key mismatch") || strings.Contains(r.err.Error(), "unable to authenticate") {
				return r.err // retrying cannot help
			}
		case <-ctx.Done():
			go func() {
				if r := <-ch; r.c != nil {
					r.c.Close()
				}
			}()
			if last != nil {
				return fmt.Errorf("%w (last attempt: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-vm.exited:
			return errors.New("QEMU exited")
		}
		select {
		case <-ctx.Done():
		case <-vm.exited:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dialSSHOnce is ssh.Dial with a deadline on the handshake too (ClientConfig.Timeout only covers
// the TCP connect, and slirp accepts at once, then waits for the guest).
func dialSSHOnce(addr string, cfg *ssh.ClientConfig, timeout time.Duration) (*ssh.Client, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

func (vm *VM) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, vm.opts.CommandTimeout)
}

// GuestPath is the PATH every guest command runs with: root's. The guest's dropbear (2020.81,
// see DefaultImagePackages) gives the commands it runs PATH=/usr/bin:/bin, whoever logs in,
// and the tools the procedures use live in /sbin and /usr/sbin too (ethtool, iptables).
const GuestPath = "/usr/sbin:/usr/bin:/sbin:/bin"

// Exec runs a shell command line in the guest with the given streams and returns its exit
// status. When ctx's deadline (or CommandTimeout) passes, a guest that no longer answers is a
// hang (a *GuestError, and the VM is ended); one that answers only timed the command out.
// Cancelling ctx abandons the command.
func (vm *VM) Exec(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	ctx, cancel := vm.withTimeout(ctx)
	defer cancel()
	what := fmt.Sprintf("run %q", command)
	sess, err := vm.newSession(ctx)
	if err != nil {
		return -1, vm.commandFailure(ctx, what, err)
	}
	defer sess.Close()
	// The session's output copiers may outlive Exec (a command abandoned or timed out keeps
	// running until the guest closes the channel): detach the caller's writers on return.
	out, errw := &detachableWriter{w: stdout}, &detachableWriter{w: stderr}
	defer out.detach()
	defer errw.detach()
	sess.Stdin, sess.Stdout, sess.Stderr = stdin, out, errw
	if err := sess.Start("PATH=" + GuestPath + "; export PATH; " + command); err != nil {
		return -1, vm.commandFailure(ctx, what, err)
	}
	return vm.sessionStatus(ctx, what, sess)
}

// sessionStatus waits for a started session (a command, a shell) and returns its exit status, or
// the failure that ended it: the session's own, ctx's (see commandFailure), or a VM that
// stopped running.
func (vm *VM) sessionStatus(ctx context.Context, what string, sess *ssh.Session) (int, error) {
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err := <-done:
		var exit *ssh.ExitError
		if err == nil {
			return 0, nil
		}
		if errors.As(err, &exit) {
			return exit.ExitStatus(), nil
		}
		return -1, vm.commandFailure(ctx, what, err)
	case <-ctx.Done():
		sess.Close()
		return -1, vm.commandFailure(ctx, what, fmt.Errorf("no answer: %w", ctx.Err()))
	case <-vm.stalled:
		sess.Close()
		return -1, vm.failure(ctx, what, fmt.Errorf("the VM stopped running (QEMU run state %q)", vm.stallState))
	}
}

// detachableWriter forwards writes to w until detach, then discards them.
type detachableWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (d *detachableWriter) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.w == nil {
		return len(p), nil
	}
	return d.w.Write(p)
}

func (d *detachableWriter) detach() {
	d.mu.Lock()
	d.w = nil
	d.mu.Unlock()
}

func (vm *VM) newSession(ctx context.Context) (*ssh.Session, error) {
	if vm.ssh == nil {
		return nil, errors.New("no SSH connection")
	}
	type res struct {
		s   *ssh.Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := vm.ssh.NewSession()
		ch <- res{s, err}
	}()
	abandon := func(err error) (*ssh.Session, error) {
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, err
	}
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		return abandon(fmt.Errorf("open SSH session: %w", ctx.Err()))
	case <-vm.stalled:
		return abandon(fmt.Errorf("open SSH session: the VM stopped running (QEMU run state %q)", vm.stallState))
	}
}

// Run runs a shell command line in the guest and returns its standard output; a non-zero exit
// status is a *CommandError carrying its standard error.
func (vm *VM) Run(ctx context.Context, command string) ([]byte, error) {
	var out, errb bytes.Buffer
	status, err := vm.Exec(ctx, command, nil, &out, &errb)
	if err != nil {
		return out.Bytes(), err
	}
	if status != 0 {
		return out.Bytes(), &CommandError{Command: command, Status: status, Stderr: errb.Bytes()}
	}
	return out.Bytes(), nil
}

// Process is a guest command started in the background.
type Process struct {
	done chan struct{}
	err  error
}

// Wait waits for the command and returns nil, a *CommandError or the failure.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Start runs a guest command in the background, copying its output to stdout and stderr.
// Cancelling ctx abandons it; the VM stays up.
func (vm *VM) Start(ctx context.Context, command string, stdout, stderr io.Writer) (*Process, error) {
	if vm.ssh == nil {
		return nil, errors.New("no SSH connection")
	}
	p := &Process{done: make(chan struct{})}
	var errb bytes.Buffer
	var w io.Writer = &errb
	if stderr != nil {
		w = io.MultiWriter(stderr, &errb)
	}
	if stdout == nil {
		stdout = io.Discard
	}
	go func() {
		defer close(p.done)
		status, err := vm.Exec(ctx, command, nil, stdout, w)
		if err == nil && status != 0 {
			err = &CommandError{Command: command, Status: status, Stderr: errb.Bytes()}
		}
		p.err = err
	}()
	return p, nil
}

// Stop ends a background command: it runs kill (a guest command line that signals it, such as
// "killall iperf") and waits for p, both within 20 s. Whatever p's end, the caller goes on: a
// command stopped by a signal ends with a failure status.
func (vm *VM) Stop(ctx context.Context, p *Process, kill string) {
	kctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	vm.Run(kctx, kill)
	done := make(chan struct{})
	go func() { p.Wait(); close(done) }()
	select {
	case <-done:
	case <-kctx.Done():
	}
}

// CopyTo copies a host file to the guest with SCP; mode is the remote file's permission bits.
func (vm *VM) CopyTo(ctx context.Context, local, remote string, mode uint32) error {
	ctx, cancel := vm.withTimeout(ctx)
	defer cancel()
	f, err := os.Open(local)
	if err != nil {
		return fmt.Errorf("copy to guest: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("copy to guest: %w", err)
	}
	c, err := scp.NewClientBySSH(vm.ssh)
	if err != nil {
		return fmt.Errorf("copy to guest: %w", err)
	}
	if err := c.Copy(ctx, f, remote, fmt.Sprintf("%04o", mode&0o7777), st.Size()); err != nil {
		return vm.scpError(ctx, fmt.Sprintf("copy %s to guest:%s", local, remote), err)
	}
	return nil
}

// CopyFrom copies a guest file to the host with SCP (written atomically).
func (vm *VM) CopyFrom(ctx context.Context, remote, local string) error {
	ctx, cancel := vm.withTimeout(ctx)
	defer cancel()
	tmp, err := os.CreateTemp(filepath.Dir(local), ".ppkit-scp-")
	if err != nil {
		return fmt.Errorf("copy from guest: %w", err)
	}
	defer os.Remove(tmp.Name())
	c, err := scp.NewClientBySSH(vm.ssh)
	if err != nil {
		tmp.Close()
		return fmt.Errorf("copy from guest: %w", err)
	}
	if err := c.CopyFromRemote(ctx, tmp, remote); err != nil {
		tmp.Close()
		return vm.scpError(ctx, fmt.Sprintf("copy guest:%s to %s", remote, local), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("copy from guest: %w", err)
	}
	return os.Rename(tmp.Name(), local)
}

func (vm *VM) scpError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return vm.commandFailure(ctx, what, err)
	}
	if errors.Is(err, io.EOF) || strings.Contains(err.Error(), "EOF") {
		return fmt.Errorf("%s: %w (the guest's scp failed or is missing: the image must carry OpenSSH's scp)", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// SSHCommand is a command line that logs into the running guest by hand.
func (vm *VM) SSHCommand() string {
	return fmt.Sprintf("ssh -p %d -i %s -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no root@127.0.0.1",
		vm.sshPort, filepath.Join(vm.opts.Image.Dir, "id_ed25519"))
}

// SSHClient is the VM's SSH connection (for callers that need more than Run and Copy*).
func (vm *VM) SSHClient() *ssh.Client { return vm.ssh }
