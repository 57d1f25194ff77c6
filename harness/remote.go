package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	scp "github.com/bramvdbogaerde/go-scp"
	"golang.org/x/crypto/ssh"
)

// Remote is an SSH login on a machine ppkit runs commands on: a QEMU guest (VM embeds one) or a
// real board (DialBoard). It runs commands and copies files; what a failed command means —
// the command's own failure, a timeout, a machine that stopped answering, a kernel that
// crashed — is decided by its owner's failure classifier (classify), which knows the machine.
type Remote struct {
	client  *ssh.Client
	timeout time.Duration // a command's deadline when its ctx has none
	// stopped is closed when the owner knows the machine stopped running (the VM's watchdog);
	// whyStopped says why. A nil stopped never closes.
	stopped    <-chan struct{}
	whyStopped func() error
	// fail decides what the failure of a command means (the owner's classify); failStopped
	// what a command under a machine that stopped running means.
	fail, failStopped func(ctx context.Context, what string, err error) error
}

// Client is the SSH connection (for callers that need more than Run and Copy*).
func (r *Remote) Client() *ssh.Client { return r.client }

// close ends the SSH connection; commands still running on it fail.
func (r *Remote) close() {
	if r != nil && r.client != nil {
		r.client.Close()
	}
}

// responsive reports whether the machine runs a trivial command within a few seconds.
func (r *Remote) responsive() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := r.newSession(ctx)
	if err != nil {
		return false
	}
	defer sess.Close()
	done := make(chan error, 1)
	go func() { done <- sess.Run("true") }()
	select {
	case err := <-done:
		return err == nil
	case <-ctx.Done():
		return false
	}
}

func (r *Remote) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, r.timeout)
}

// GuestPath is the PATH every guest command runs with: root's. The guest's dropbear (2020.81,
// see DefaultImagePackages) gives the commands it runs PATH=/usr/bin:/bin, whoever logs in,
// and the tools the procedures use live in /sbin and /usr/sbin too (ethtool, iptables).
const GuestPath = "/usr/sbin:/usr/bin:/sbin:/bin"

// Exec runs a shell command line in the guest with the given streams and returns its exit
// status. When ctx's deadline (or CommandTimeout) passes, a guest that no longer answers is a
// hang (a *GuestError, and the VM is ended); one that answers only timed the command out.
// Cancelling ctx abandons the command.
func (r *Remote) Exec(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	ctx, cancel := r.withTimeout(ctx)
	defer cancel()
	what := fmt.Sprintf("run %q", command)
	sess, err := r.newSession(ctx)
	if err != nil {
		return -1, r.fail(ctx, what, err)
	}
	defer sess.Close()
	// The session's output copiers may outlive Exec (a command abandoned or timed out keeps
	// running until the guest closes the channel): detach the caller's writers on return.
	out, errw := &detachableWriter{w: stdout}, &detachableWriter{w: stderr}
	defer out.detach()
	defer errw.detach()
	sess.Stdin, sess.Stdout, sess.Stderr = stdin, out, errw
	// Root's directories first, the login's own after them (a real board's /usr/local/bin).
	if err := sess.Start("PATH=" + GuestPath + ":$PATH; export PATH; " + command); err != nil {
		return -1, r.fail(ctx, what, err)
	}
	return r.sessionStatus(ctx, what, sess)
}

// sessionStatus waits for a started session (a command, a shell) and returns its exit status, or
// the failure that ended it: the session's own, ctx's (see commandFailure), or a VM that
// stopped running.
func (r *Remote) sessionStatus(ctx context.Context, what string, sess *ssh.Session) (int, error) {
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
		return -1, r.fail(ctx, what, err)
	case <-ctx.Done():
		sess.Close()
		return -1, r.fail(ctx, what, fmt.Errorf("no answer: %w", ctx.Err()))
	case <-r.stopped:
		sess.Close()
		return -1, r.failStopped(ctx, what, r.whyStopped())
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

func (r *Remote) newSession(ctx context.Context) (*ssh.Session, error) {
	if r == nil || r.client == nil {
		return nil, errors.New("no SSH connection")
	}
	type res struct {
		s   *ssh.Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := r.client.NewSession()
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
	case <-r.stopped:
		return abandon(fmt.Errorf("open SSH session: %w", r.whyStopped()))
	}
}

// Run runs a shell command line in the guest and returns its standard output; a non-zero exit
// status is a *CommandError carrying its standard error.
func (r *Remote) Run(ctx context.Context, command string) ([]byte, error) {
	var out, errb bytes.Buffer
	status, err := r.Exec(ctx, command, nil, &out, &errb)
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
func (r *Remote) Start(ctx context.Context, command string, stdout, stderr io.Writer) (*Process, error) {
	if r == nil || r.client == nil {
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
		status, err := r.Exec(ctx, command, nil, stdout, w)
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
func (r *Remote) Stop(ctx context.Context, p *Process, kill string) {
	kctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	r.Run(kctx, kill)
	done := make(chan struct{})
	go func() { p.Wait(); close(done) }()
	select {
	case <-done:
	case <-kctx.Done():
	}
}

// CopyTo copies a host file to the guest with SCP; mode is the remote file's permission bits.
func (r *Remote) CopyTo(ctx context.Context, local, remote string, mode uint32) error {
	ctx, cancel := r.withTimeout(ctx)
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
	c, err := scp.NewClientBySSH(r.client)
	if err != nil {
		return fmt.Errorf("copy to guest: %w", err)
	}
	if err := c.Copy(ctx, f, remote, fmt.Sprintf("%04o", mode&0o7777), st.Size()); err != nil {
		return r.scpError(ctx, fmt.Sprintf("copy %s to guest:%s", local, remote), err)
	}
	return nil
}

// CopyFrom copies a guest file to the host with SCP (written atomically).
func (r *Remote) CopyFrom(ctx context.Context, remote, local string) error {
	ctx, cancel := r.withTimeout(ctx)
	defer cancel()
	tmp, err := os.CreateTemp(filepath.Dir(local), ".ppkit-scp-")
	if err != nil {
		return fmt.Errorf("copy from guest: %w", err)
	}
	defer os.Remove(tmp.Name())
	c, err := scp.NewClientBySSH(r.client)
	if err != nil {
		tmp.Close()
		return fmt.Errorf("copy from guest: %w", err)
	}
	if err := c.CopyFromRemote(ctx, tmp, remote); err != nil {
		tmp.Close()
		return r.scpError(ctx, fmt.Sprintf("copy guest:%s to %s", remote, local), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("copy from guest: %w", err)
	}
	return os.Rename(tmp.Name(), local)
}

func (r *Remote) scpError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return r.fail(ctx, what, err)
	}
	if errors.Is(err, io.EOF) || strings.Contains(err.Error(), "EOF") {
		return fmt.Errorf("%s: %w (the guest's scp failed or is missing: the image must carry OpenSSH's scp)", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
