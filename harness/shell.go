package harness

import (
	"context"
	"fmt"
	"io"
	"os"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// Shell runs an interactive login shell in the guest on a pseudo-terminal, with the local
// terminal (if stdin is one) in raw mode for the duration, and returns the shell's exit status.
func (vm *VM) Shell(ctx context.Context, stdin *os.File, stdout, stderr io.Writer) (int, error) {
	sess, err := vm.Remote.newSession(ctx)
	if err != nil {
		return -1, vm.commandFailure(ctx, "shell", err)
	}
	defer sess.Close()
	width, height := 80, 24
	fd := int(stdin.Fd())
	if ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ); err == nil {
		width, height = int(ws.Col), int(ws.Row)
	}
	if old, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		raw := *old
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Oflag &^= unix.OPOST
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		raw.Cflag &^= unix.CSIZE | unix.PARENB
		raw.Cflag |= unix.CS8
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err == nil {
			defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
		}
	}
	term := os.Getenv("TERM")
	if term == "" {
		term = "vt100"
	}
	if err := sess.RequestPty(term, height, width, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
		return -1, fmt.Errorf("shell: request pty: %w", err)
	}
	sess.Stdin, sess.Stdout, sess.Stderr = stdin, stdout, stderr
	if err := sess.Shell(); err != nil {
		return -1, fmt.Errorf("shell: %w", err)
	}
	return vm.Remote.sessionStatus(ctx, "shell", sess)
}
