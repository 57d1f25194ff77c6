package harness

import (
	"fmt"
	"strings"
)

// GuestError reports that the guest failed: the kernel crashed or reported a bug, the guest hung,
// or it never became ready. It is the verdict on the kernel, as opposed to an InfraError.
type GuestError struct {
	Title       string  // the report's title, or "guest hung: ..." / "boot failed: ..."
	Report      *Report // the first kernel report, if the console has one
	ConsoleTail string
	CommandLine string // copy-pasteable QEMU command line
	Err         error
}

func (e *GuestError) Error() string {
	if e.Err != nil {
		return e.Title + ": " + e.Err.Error()
	}
	return e.Title
}
func (e *GuestError) Unwrap() error { return e.Err }

// Details is the text a developer needs: the report (or the console tail) and the QEMU command.
func (e *GuestError) Details() string {
	var b strings.Builder
	if e.Report != nil {
		fmt.Fprintf(&b, "--- kernel report ---\n%s", e.Report.Text)
	} else if e.ConsoleTail != "" {
		fmt.Fprintf(&b, "--- console tail ---\n%s\n", strings.TrimRight(e.ConsoleTail, "\n"))
	}
	if e.CommandLine != "" {
		fmt.Fprintf(&b, "--- QEMU command line ---\n%s\n", e.CommandLine)
	}
	return b.String()
}

// InfraError reports that the harness or the host failed (QEMU missing, port in use, ...): the
// run says nothing about the kernel.
type InfraError struct {
	Err         error
	CommandLine string
}

func (e *InfraError) Error() string { return e.Err.Error() }
func (e *InfraError) Unwrap() error { return e.Err }

// Details returns the QEMU command line, when there was one.
func (e *InfraError) Details() string {
	if e.CommandLine == "" {
		return ""
	}
	return "--- QEMU command line ---\n" + e.CommandLine + "\n"
}

// CommandError is a guest command that ran and exited with a non-zero status.
type CommandError struct {
	Command string
	Status  int
	Stderr  []byte
}

// NotInGuest reports whether the guest's shell could not find or run the program (status 127
// or 126): the guest image lacks it, which is not the kernel's doing.
func (e *CommandError) NotInGuest() bool { return e.Status == 127 || e.Status == 126 }

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("guest command %q exited with status %d", e.Command, e.Status)
	if s := strings.TrimSpace(string(e.Stderr)); s != "" {
		msg += ": " + lastLines([]byte(s), 5)
	}
	return msg
}
