package procedure

import (
	"context"
	"fmt"
	"io"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/stgit"
	"github.com/ppkit/ppkit/tests/verdict"
)

// The fixed test network: the board's mvneta NIC and the client's tap live in 192.168.200.0/24,
// which exists only inside network namespaces ppkit creates.
const (
	BoardIP        = "192.168.200.1"
	ClientIP       = "192.168.200.2"
	PrefixLen      = 24
	MulticastGroup = "226.94.1.1"
	MulticastRoute = "224.0.0.0/4"
)

// The second test network (the forward procedure): the board's second NIC and a second client
// namespace, 192.168.201.0/24, which also exists only inside namespaces ppkit creates.
const (
	PeerBoardIP = "192.168.201.1"
	PeerIP      = "192.168.201.2"
)

// Peer is the second client: a network namespace of its own behind a second NIC of the board,
// so that traffic between Client and Peer.Client is routed by the board.
type Peer struct {
	Client Client // runs in the second client namespace; Client.Interface is its tap
	// BoardInterface is the board's name of its second NIC.
	BoardInterface string
}

// NeedsPeer reports whether p runs only on a PeerTestbed (it routes between two clients).
func NeedsPeer(p Procedure) bool {
	_, ok := p.(interface{ NeedsPeer() })
	return ok
}

// PeerTestbed is a Testbed whose board has a second NIC with a second client behind it.
type PeerTestbed interface {
	Testbed
	Peer() *Peer
}

// Board is the machine under test: the QEMU guest running the kernel with the series, reached
// over its management network. The harness adapts its booted guest to this interface; the
// procedures only ever talk to the board through it.
type Board interface {
	// Run runs a shell command line on the board and returns its standard output. A non-zero
	// exit status is an error that carries the command's standard error.
	Run(ctx context.Context, cmd string) ([]byte, error)
	// Start starts a shell command line on the board in the background, copying its output to
	// stdout and stderr until it exits. Cancelling ctx abandons the command. Long-running
	// commands are stopped by the procedures themselves (through a pid file), so Start needs
	// no signal support.
	Start(ctx context.Context, cmd string, stdout, stderr io.Writer) (Process, error)
	// CopyTo copies a host file to the board; mode is the remote file's permission bits.
	CopyTo(ctx context.Context, local, remote string, mode uint32) error
	// CopyFrom copies a board file to the host.
	CopyFrom(ctx context.Context, remote, local string) error
	// Interface is the board's name of the NIC under test (the mvneta port), e.g. "eth1".
	Interface() string
	// Arch is the board's GOARCH ("arm64" for the QEMU guest); guest helpers are built for it.
	Arch() string
	// ConsoleLog returns the console output captured since boot.
	ConsoleLog() []byte
	// ConsoleReports returns the kernel reports (oops, BUG, WARNING, KASAN, stalled pool
	// shutdown, …) found in the console so far, oldest first.
	ConsoleReports() []verdict.ConsoleReport
}

// Client is the client PC: a network namespace on the host holding the other end of the test
// link. Commands run inside the namespace.
type Client interface {
	// Run runs argv inside the namespace and returns its standard output; a non-zero exit is an
	// error carrying standard error.
	Run(ctx context.Context, argv ...string) ([]byte, error)
	// Start starts argv inside the namespace; cancelling ctx kills it.
	Start(ctx context.Context, argv []string, stdout, stderr io.Writer) (Process, error)
	// Interface is the name of the client's end of the test link (the tap device).
	Interface() string
	// CopyToBoard copies a host file to the board across the test link (scp to BoardIP), so the
	// transfer itself is traffic under test.
	CopyToBoard(ctx context.Context, local, remote string) error
}

// Process is a command started with Start.
type Process interface {
	// Wait waits for the command to exit and its output to be copied, and returns its status.
	Wait() error
}

// Kernel says which kernel a testbed boots: the baseline (no series) or a series directory.
type Kernel struct {
	Series   string // directory of an stg-exported series; empty with Baseline
	Baseline bool
	// Design is the gomodel variant the series implements, as its stgit.DesignFile says;
	// Run reads it when empty. The baseline is stock 5.10 ("none").
	Design string
}

// Variant is the design of k as gomodel names it: the baseline's, or the series' own
// (Design, or its stgit.DesignFile), never a guess.
func (k Kernel) Variant() (gomodel.Variant, error) {
	if k.Baseline {
		return gomodel.VariantNone, nil
	}
	design := k.Design
	if design == "" {
		var err error
		if design, err = stgit.ReadDesign(k.Series); err != nil {
			return 0, err
		}
	}
	cfg, err := gomodel.ParseVariant(design, "")
	if err != nil {
		return 0, fmt.Errorf("series %s: %w", k.Series, err)
	}
	if cfg.Mutant != gomodel.MutantNone {
		return 0, fmt.Errorf("series %s: design %s is one of the model's mutants; a series names the design it implements (series or upstream)", k.Series, design)
	}
	return cfg.Variant, nil
}

func (k Kernel) String() string {
	if k.Baseline {
		return "baseline"
	}
	return "series " + k.Series
}

// Testbed is one booted board with its client namespace, as the harness provides it.
type Testbed interface {
	Board() Board
	Client() Client
	// Close powers the board off and removes the client namespace, its tap and every temporary
	// file; it is safe to call more than once.
	Close() error
}

// Launcher boots testbeds. The harness implements it: it builds what is missing (kernel with
// the series, guest image, QEMU with the mvneta model), boots the guest with its mvneta NIC
// attached to a tap inside a fresh client namespace, and returns once SSH answers. progress
// receives human-readable progress lines.
type Launcher interface {
	Launch(ctx context.Context, k Kernel, progress io.Writer) (Testbed, error)
}

// Preflighter is a Launcher that can check, once before any procedure, what would make every
// Launch of kernel k fail (a real board that runs another kernel).
type Preflighter interface {
	Preflight(ctx context.Context, k Kernel, progress io.Writer) error
}

// BoardName says which board a launcher's testbeds are, for the report: its Board() when it
// has one.
func BoardName(l Launcher) string {
	if n, ok := l.(interface{ Board() string }); ok {
		return n.Board()
	}
	return ""
}
