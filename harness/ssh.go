package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

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
				vm.Remote = &Remote{client: r.c, timeout: vm.opts.CommandTimeout, stopped: vm.stalled,
					whyStopped: func() error { return fmt.Errorf("the VM stopped running (QEMU run state %q)", vm.stallState) },
					fail:       vm.commandFailure, failStopped: vm.failure}
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

// SSHCommand is a command line that logs into the running guest by hand.
func (vm *VM) SSHCommand() string {
	return fmt.Sprintf("ssh -p %d -i %s -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no root@127.0.0.1",
		vm.sshPort, filepath.Join(vm.opts.Image.Dir, "id_ed25519"))
}
