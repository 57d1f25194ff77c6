package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ppkit/ppkit/internal/syncbuf"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// BoardOptions says how to reach a real board.
type BoardOptions struct {
	URL string // ssh://[USER@]HOST[:PORT]; USER defaults to root, PORT to 22
	// KnownHosts pins the boards' host keys (default DefaultKnownHosts): a board's key is
	// pinned on first use and checked on every later login.
	KnownHosts     string
	CommandTimeout time.Duration // a command's deadline when its ctx has none (default 2 min)
	Progress       io.Writer
}

// DefaultKnownHosts is where ppkit pins the boards' host keys: ~/.config/ppkit/known_hosts
// ($XDG_CONFIG_HOME). Not in the cache: emptying a cache must not silently forget a pin.
func DefaultKnownHosts() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no place for the boards' pinned host keys: %w", err)
	}
	return filepath.Join(dir, "ppkit", "known_hosts"), nil
}

// BoardAddress is a parsed --board URL.
type BoardAddress struct {
	User string
	Host string // as given (name or address)
	Port string
}

// Addr is HOST:PORT.
func (a BoardAddress) Addr() string { return net.JoinHostPort(a.Host, a.Port) }

func (a BoardAddress) String() string { return "ssh://" + a.User + "@" + a.Addr() }

// ParseBoardURL parses ssh://[USER@]HOST[:PORT].
func ParseBoardURL(s string) (BoardAddress, error) {
	bad := fmt.Errorf("board %q: want ssh://[USER@]HOST[:PORT], e.g. ssh://root@espressobin or ssh://root@192.0.2.7:2222", s)
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "ssh" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return BoardAddress{}, bad
	}
	if _, ok := u.User.Password(); ok {
		return BoardAddress{}, fmt.Errorf("board %q: ppkit logs in with SSH keys only (your agent or ~/.ssh/id_*); drop the password from the URL", s)
	}
	a := BoardAddress{User: u.User.Username(), Host: u.Hostname(), Port: u.Port()}
	if a.User == "" {
		a.User = "root"
	}
	if a.Port == "" {
		a.Port = "22"
	}
	if a.Host == "" {
		return BoardAddress{}, bad
	}
	return a, nil
}

// SSHBoard is a real board reached over SSH: the same Remote as a VM's, with a classifier that
// knows only what SSH and the kernel log can tell, and the kernel log (/dev/kmsg, streamed from
// the moment of the login) as its console.
type SSHBoard struct {
	*Remote
	Address BoardAddress
	HostKey ssh.PublicKey
	// KeyFile is the identity file the login used ("" when the agent's key did): other SSH
	// clients that log into the board (scp on the test link) use the same.
	KeyFile string

	marker  string
	console syncbuf.Buffer     // the log stream's raw records; ConsoleLog is their text after marker
	stopLog context.CancelFunc // ends the kernel log stream
	closeMu sync.Mutex
	closed  bool
}

// DialBoard logs into the board at opts.URL with the user's SSH keys (the agent's, then
// ~/.ssh/id_ed25519, id_ecdsa, id_rsa), pinning its host key on first use, marks the start of
// the run in the board's kernel log and starts streaming that log.
func DialBoard(ctx context.Context, opts BoardOptions) (*SSHBoard, error) {
	addr, err := ParseBoardURL(opts.URL)
	if err != nil {
		return nil, err
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	if opts.CommandTimeout == 0 {
		opts.CommandTimeout = 2 * time.Minute
	}
	known := opts.KnownHosts
	if known == "" {
		if known, err = DefaultKnownHosts(); err != nil {
			return nil, &InfraError{Err: err}
		}
	}
	auth, used, closeAgent := userAuth()
	defer closeAgent()
	if len(auth) == 0 {
		return nil, &InfraError{Err: fmt.Errorf("board %s: no SSH key to log in with: start ssh-agent with your key, or create ~/.ssh/id_ed25519 and add its .pub to the board's authorized_keys", addr)}
	}
	hostKey, pinned, err := hostKeyCheck(known, addr.Addr())
	if err != nil {
		return nil, &InfraError{Err: fmt.Errorf("board %s: %w", addr, err)}
	}
	cfg := &ssh.ClientConfig{User: addr.User, Auth: auth, HostKeyCallback: hostKey.callback, Timeout: 10 * time.Second,
		HostKeyAlgorithms: pinned}
	type res struct {
		c   *ssh.Client
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := dialSSHOnce(addr.Addr(), cfg, 20*time.Second)
		ch <- res{c, err}
	}()
	var client *ssh.Client
	select {
	case r := <-ch:
		if r.err != nil {
			if hostKey.mismatch != nil {
				return nil, &InfraError{Err: fmt.Errorf("board %s: %w", addr, hostKey.mismatch)}
			}
			return nil, &InfraError{Err: fmt.Errorf("board %s: log in: %w (is the board up, its SSH server running, and your key in its authorized_keys?)", addr, r.err)}
		}
		client = r.c
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, fmt.Errorf("board %s: log in: %w", addr, ctx.Err())
	}
	if hostKey.learned != nil {
		if err := pinHostKey(known, addr.Addr(), hostKey.learned); err != nil {
			client.Close()
			return nil, &InfraError{Err: fmt.Errorf("board %s: %w", addr, err)}
		}
		fmt.Fprintf(progress, "board: first login to %s: pinned its host key %s in %s\n", addr, ssh.FingerprintSHA256(hostKey.learned), known)
	}
	b := &SSHBoard{Address: addr, HostKey: hostKey.seen, KeyFile: *used, marker: "ppkit-run-" + randomHex(8)}
	b.Remote = &Remote{client: client, timeout: opts.CommandTimeout, fail: b.commandFailure, failStopped: b.commandFailure}
	// The marker tells this run's messages from those of earlier runs since the board booted.
	if _, err := b.Run(ctx, "echo "+b.marker+" > /dev/kmsg"); err != nil {
		b.Close()
		return nil, &InfraError{Err: fmt.Errorf("board %s: write the run's mark into the kernel log (/dev/kmsg; ppkit must log in as root): %w", addr, err)}
	}
	// The stream lasts as long as the login: a deadline far away keeps the commands' default
	// one (CommandTimeout) off it, and Close cancels it before it logs out, so that its end is
	// never taken for a board that stopped answering.
	logCtx, cancel := context.WithDeadline(context.Background(), time.Now().Add(365*24*time.Hour))
	b.stopLog = cancel
	b.Start(logCtx, "exec cat /dev/kmsg", &b.console, io.Discard)
	return b, nil
}

// ConsoleLog is the board's kernel log since DialBoard, as dmesg prints it.
func (b *SSHBoard) ConsoleLog() []byte { return KmsgText([]byte(b.console.String()), b.marker) }

// ConsoleReports are the kernel reports in ConsoleLog.
func (b *SSHBoard) ConsoleReports() []Report { return ParseReports(b.ConsoleLog()) }

// Close ends the log stream and the SSH connection. It may be called repeatedly.
func (b *SSHBoard) Close() error {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.stopLog != nil {
		b.stopLog()
	}
	b.Remote.close()
	return nil
}

// commandFailure decides what a failed command on the board means (classify, with what SSH
// and the kernel log can tell: no QEMU to ask).
func (b *SSHBoard) commandFailure(ctx context.Context, what string, err error) error {
	f := facts{What: what, Err: err, Command: true, CtxErr: ctx.Err(), Board: b.Address.String()}
	if f.CtxErr != context.Canceled {
		f.Responsive = b.Remote.responsive()
		// Give the log stream a moment to carry the report of a kernel that just failed.
		if !f.Responsive {
			time.Sleep(time.Second)
		}
		f.Console = b.ConsoleLog()
	}
	d := classify(f)
	if d.EndVM {
		b.Close()
	}
	return d.Err
}

// hostKeyPin checks a board's host key against the pinned ones.
type hostKeyPin struct {
	known   ssh.HostKeyCallback
	seen    ssh.PublicKey
	learned ssh.PublicKey // first use: the key to pin once the login succeeds
	// mismatch is the error of a key other than the pinned one.
	mismatch error
}

func (p *hostKeyPin) callback(hostname string, remote net.Addr, key ssh.PublicKey) error {
	p.seen = key
	err := p.known(hostname, remote, key)
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		if len(ke.Want) == 0 {
			p.learned = key
			return nil
		}
		w := ke.Want[0]
		p.mismatch = fmt.Errorf("its host key changed: it offers %s %s, %s:%d pinned %s; if the board was reinstalled, delete that line",
			key.Type(), ssh.FingerprintSHA256(key), w.Filename, w.Line, ssh.FingerprintSHA256(w.Key))
		return p.mismatch
	}
	return err
}

// hostKeyCheck reads the pinned keys (a missing file pins nothing yet) and returns the host key
// algorithms to offer: the pinned key's, or for a first login the usual ones with ed25519 first.
func hostKeyCheck(file, addr string) (*hostKeyPin, []string, error) {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return nil, nil, err
	}
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			return nil, nil, err
		}
	}
	cb, err := knownhosts.New(file)
	if err != nil {
		return nil, nil, fmt.Errorf("read the pinned host keys: %w (fix or delete %s)", err, file)
	}
	p := &hostKeyPin{known: cb}
	// Ask the pinned file which key types it has for addr: a probe key that matches nothing.
	probe := probeKey()
	var algos []string
	var ke *knownhosts.KeyError
	if err := cb(knownhosts.Normalize(addr), &net.TCPAddr{}, probe); errors.As(err, &ke) {
		for _, w := range ke.Want {
			algos = append(algos, algorithmsFor(w.Key.Type())...)
		}
	}
	if len(algos) == 0 {
		// Offer ed25519 first: dropbear 2022.83 picks rsa-sha2-* when offered first and fails an
		// assertion without an RSA key.
		algos = []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
			ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	return p, algos, nil
}

// algorithmsFor are the host key algorithms that verify with a key of type t.
func algorithmsFor(t string) []string {
	if t == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{t}
}

func pinHostKey(file, addr string, key ssh.PublicKey) error {
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("pin the host key: %w", err)
	}
	_, err = fmt.Fprintln(f, knownhosts.Line([]string{knownhosts.Normalize(addr)}, key))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pin the host key: %w", err)
	}
	return nil
}

// userAuth is the user's SSH keys, as ssh(1) would offer them: the identity files
// ~/.ssh/id_ed25519, id_ecdsa, id_rsa that need no passphrase, then the agent's keys. used
// points at the file whose key was offered last (the accepted one once the login succeeded;
// "" for the agent's).
func userAuth() (methods []ssh.AuthMethod, used *string, closeAgent func()) {
	used = new(string)
	closeAgent = func() {}
	home, _ := os.UserHomeDir()
	for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
		file := filepath.Join(home, ".ssh", name)
		pem, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		signer, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			continue // passphrase-protected: the agent holds it, if anything does
		}
		methods = append(methods, ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
			*used = file
			return []ssh.Signer{signer}, nil
		}))
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		if conn, err := net.Dial("unix", sock); err == nil {
			closeAgent = func() { conn.Close() }
			ag := agent.NewClient(conn)
			methods = append(methods, ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
				*used = ""
				return ag.Signers()
			}))
		}
	}
	return methods, used, closeAgent
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// probeKey is an ed25519 public key that no board has (all zero), to list the pinned types.
func probeKey() ssh.PublicKey {
	k, _ := ssh.ParsePublicKey(append([]byte("\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"), make([]byte, 32)...))
	return k
}

// KmsgText turns /dev/kmsg records into the text dmesg prints ("[  SSSS.UUUUUU] message"),
// keeping only the records after the one whose message is marker (all of them when marker is
// ""). Continuation lines (" KEY=value") are dropped; a record cut off at the end is kept as
// far as it goes. Text that is not a record is passed through.
func KmsgText(raw []byte, marker string) []byte {
	var out bytes.Buffer
	started := marker == ""
	for _, line := range strings.Split(string(raw), "\n") {
		if line == "" || line[0] == ' ' {
			continue
		}
		head, msg, ok := strings.Cut(line, ";")
		fields := strings.Split(head, ",")
		if !ok || len(fields) < 4 {
			if started {
				out.WriteString(line + "\n")
			}
			continue
		}
		if !started {
			started = msg == marker
			continue
		}
		var usec uint64
		fmt.Sscan(fields[2], &usec)
		fmt.Fprintf(&out, "[%5d.%06d] %s\n", usec/1e6, usec%1e6, unescapeKmsg(msg))
	}
	return out.Bytes()
}

// unescapeKmsg undoes /dev/kmsg's \xNN escapes of non-printable bytes (a tab, a stray byte).
func unescapeKmsg(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if v, err := hex.DecodeString(s[i+2 : i+4]); err == nil {
				b.WriteByte(v[0])
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
