package procedure

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/ppkit/ppkit/internal/child"
)

// NetnsClient is the client PC as a network namespace on the host: commands run through
// `ip netns exec`. The harness creates the namespace and moves the board's tap into it; this
// type only runs things there.
type NetnsClient struct {
	Namespace string // as listed by `ip netns list`
	Iface     string // the client's end of the test link (the tap)
	// SSHKey and KnownHosts let CopyToBoard log into the board's SSH server on the test link
	// with the image's client key (a real board: the user's key file, or "" for the agent's)
	// and pinned host key; SSHUser defaults to root.
	SSHKey, KnownHosts, SSHUser string
}

var _ Client = (*NetnsClient)(nil)

func (n *NetnsClient) command(ctx context.Context, argv []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Namespace}, argv...)...)
	// ip netns exec execs argv, so the signal reaches the command itself; iperf prints its
	// report on SIGTERM, so try that before SIGKILL.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	// Short: an interrupted ppkit must be gone within seconds.
	cmd.WaitDelay = 2 * time.Second
	// Run and Start use package child: a ppkit killed outright takes its client processes with
	// it, so that nothing goes on sending into a namespace that the next run removes.
	return cmd
}

// HostToolError says that a program the client runs is not installed on the host: the run
// cannot be judged, and the host, not the kernel, is at fault.
type HostToolError struct{ Tool string }

func (e *HostToolError) Error() string {
	return fmt.Sprintf("%s is not installed on this host (run harness/install-deps.sh)", e.Tool)
}

// lookTool finds argv[0] on the host (the namespace shares the host's files).
func lookTool(argv []string) error {
	if _, err := exec.LookPath(argv[0]); err != nil {
		return &HostToolError{Tool: argv[0]}
	}
	return nil
}

// Run runs argv inside the namespace.
func (n *NetnsClient) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("netns %s: empty command", n.Namespace)
	}
	if err := lookTool(argv); err != nil {
		return nil, fmt.Errorf("netns %s: %w", n.Namespace, err)
	}
	var stdout, stderr bytes.Buffer
	cmd := n.command(ctx, argv)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := child.Run(cmd); err != nil {
		return append(stdout.Bytes(), stderr.Bytes()...), fmt.Errorf("netns %s: %s: %w: %s", n.Namespace,
			strings.Join(argv, " "), err, tail(stderr.Bytes(), 300))
	}
	// iperf prints its failures on stdout and stderr alike; keep both for the parsers.
	return append(stdout.Bytes(), stderr.Bytes()...), nil
}

// Start starts argv inside the namespace; cancelling ctx stops it (SIGTERM, then SIGKILL).
func (n *NetnsClient) Start(ctx context.Context, argv []string, stdout, stderr io.Writer) (Process, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("netns %s: empty command", n.Namespace)
	}
	if err := lookTool(argv); err != nil {
		return nil, fmt.Errorf("netns %s: %w", n.Namespace, err)
	}
	cmd := n.command(ctx, argv)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := child.Start(cmd); err != nil {
		return nil, fmt.Errorf("netns %s: start %s: %w", n.Namespace, strings.Join(argv, " "), err)
	}
	return netnsProcess{cmd}, nil
}

// netnsProcess is a process Start started; Kill ends it without a signal it could handle.
type netnsProcess struct{ *exec.Cmd }

func (p netnsProcess) Kill() error { return p.Process.Kill() }

// Interface is the client's end of the test link.
func (n *NetnsClient) Interface() string { return n.Iface }

// CopyToBoard copies local to the board with scp across the test link (OpenSSH's scp in legacy
// mode, which dropbear needs), pinning the board's host key.
func (n *NetnsClient) CopyToBoard(ctx context.Context, local, remote string) error {
	if n.KnownHosts == "" {
		return fmt.Errorf("scp to the board: no known_hosts for the test link (NetnsClient.KnownHosts)")
	}
	_, err := n.Run(ctx, scpArgs(n.SSHKey, n.KnownHosts, n.SSHUser, local, remote)...)
	if err != nil {
		return fmt.Errorf("scp to the board: %w", err)
	}
	return nil
}

// scpArgs is the scp command line CopyToBoard runs inside the namespace.
func scpArgs(key, knownHosts, user, local, remote string) []string {
	if user == "" {
		user = "root"
	}
	argv := []string{"scp", "-O", "-q"}
	if key != "" {
		argv = append(argv, "-i", key) // else the agent's keys (SSH_AUTH_SOCK)
	}
	return append(argv, "-o", "UserKnownHostsFile="+knownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "HostKeyAlias=ppkit-board",
		local, user+"@"+BoardIP+":"+remote)
}
