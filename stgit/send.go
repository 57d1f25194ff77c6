package stgit

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/ppkit/ppkit/internal/atomicfile"
	"github.com/ppkit/ppkit/internal/owned"
)

// PasswordEnv is the environment variable that may hold the SMTP password. Otherwise the
// password comes from git's credential helper (`git credential fill` for smtp://HOST:PORT).
// It is never taken from the command line and never printed.
const PasswordEnv = "PPKIT_SMTP_PASSWORD"

// autoCc adds the addresses scripts/get_maintainer.pl gives for each patch to its Cc, and
// their union to the cover's.
func (r *Repo) autoCc(ctx context.Context, post *Posting, patches []string) error {
	script := filepath.Join(r.Dir, "scripts", "get_maintainer.pl")
	if _, err := os.Stat(script); err != nil {
		return fmt.Errorf("--auto-cc needs %s; run it in a kernel tree", script)
	}
	tmp, err := owned.TempDir("autocc")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var union []string
	for i, name := range patches {
		diff, err := r.stg(ctx, "show", name)
		if err != nil {
			return fmt.Errorf("auto-cc: %w", err)
		}
		f := filepath.Join(tmp, "p.patch")
		if err := os.WriteFile(f, []byte(diff), 0o644); err != nil {
			return err
		}
		out, err := r.command(ctx, nil, "perl", script, "--no-rolestats", "--no-git", "--no-git-fallback", "--no-tree", f)
		if err != nil {
			return fmt.Errorf("auto-cc: get_maintainer.pl on %s: %w", name, err)
		}
		var addrs []string
		for _, l := range strings.Split(out, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				if _, err := mail.ParseAddress(l); err == nil {
					addrs = append(addrs, l)
				}
			}
		}
		off := 0
		if post.HasCover {
			off = 1
		}
		post.Messages[i+off].addCc(post.Sender, addrs)
		union = append(union, addrs...)
	}
	if post.HasCover {
		post.Messages[0].addCc(post.Sender, union)
	}
	return nil
}

// addCc appends addresses that are not yet recipients (nor the sender) to the Cc header.
func (m *Message) addCc(sender string, addrs []string) {
	have := map[string]bool{}
	for _, a := range append(append([]string{sender}, m.To...), m.Cc...) {
		if p, err := mail.ParseAddress(a); err == nil {
			have[strings.ToLower(p.Address)] = true
		}
	}
	added := false
	for _, a := range addrs {
		p, err := mail.ParseAddress(a)
		if err != nil || have[strings.ToLower(p.Address)] {
			continue
		}
		have[strings.ToLower(p.Address)] = true
		m.Cc = append(m.Cc, a)
		added = true
	}
	if !added {
		return
	}
	head, body, _ := bytes.Cut(m.Raw, []byte("\n\n"))
	var lines []string
	replaced := false
	for _, field := range headerFields(head) {
		name, _, _ := strings.Cut(field, ":")
		switch strings.ToLower(name) {
		case "cc":
			if !replaced {
				lines = append(lines, foldAddresses("Cc", m.Cc))
				replaced = true
			}
			continue
		case "date":
			if !replaced {
				lines = append(lines, foldAddresses("Cc", m.Cc))
				replaced = true
			}
		}
		lines = append(lines, field)
	}
	m.Raw = append([]byte(strings.Join(lines, "\n")+"\n\n"), body...)
}

func headerFields(head []byte) []string {
	var fields []string
	for _, l := range strings.Split(string(head), "\n") {
		if len(fields) > 0 && (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) {
			fields[len(fields)-1] += "\n" + l
			continue
		}
		fields = append(fields, l)
	}
	return fields
}

// foldAddresses writes an address header folded before 78 columns, like Python's email package.
func foldAddresses(name string, addrs []string) string {
	line := name + ": "
	var b strings.Builder
	for i, a := range addrs {
		piece := a
		if i < len(addrs)-1 {
			piece += ","
		}
		if i > 0 {
			if len(line)+1+len(piece) > 78 {
				b.WriteString(line + "\n")
				line = " " + piece
				continue
			}
			line += " "
		}
		line += piece
	}
	b.WriteString(line)
	return b.String()
}

// SMTPServer says where and how to deliver: an SMTP server (Addr), or a sendmail-style
// program (Program: stg's "--smtp-server=/usr/bin/msmtp ARGS", split on blanks; or Shell:
// git's sendemail.sendmailCmd, run by sh). A program gets "-i -f SENDER RECIPIENT..." appended
// and the message on stdin, as git send-email runs it.
type SMTPServer struct {
	Addr    string // host:port
	TLS     string // "", "none", "starttls" or "tls"
	User    string
	Program []string
	Shell   string
	// Delay is the pause between two messages (stg's --sleep, stgit.smtpdelay).
	Delay time.Duration
	// Password is resolved by Password() and never printed.
	password string
	rootCAs  *x509.CertPool // nil: the system's
}

// ParseServer reads stg's --smtp-server value: "HOST:PORT", "HOST" (port 25), or an absolute
// path to a sendmail-style program followed by its arguments (checked by Check, and again
// before the first message).
func ParseServer(v string) (*SMTPServer, error) {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "/") {
		return &SMTPServer{Program: strings.Fields(v)}, nil
	}
	if v == "" {
		v = "localhost:25"
	}
	if _, _, err := net.SplitHostPort(v); err != nil {
		v = net.JoinHostPort(v, "25")
	}
	return &SMTPServer{Addr: v}, nil
}

// Check refuses, before anything is built, a server ppkit would not send through: a sendmail
// program that is missing or reads the recipients from the headers.
func (s *SMTPServer) Check() error {
	if len(s.Program) > 0 || s.Shell != "" {
		return s.checkProgram()
	}
	return nil
}

// checkProgram refuses a sendmail command that would pick its recipients from the headers:
// ppkit gives them itself, so that Bcc stays in the envelope and --reflect reaches the sender only.
func (s *SMTPServer) checkProgram() error {
	args := s.Program
	if s.Shell != "" {
		args = strings.Fields(s.Shell)
	}
	for _, a := range args[min(1, len(args)):] {
		if a == "-t" || a == "--read-recipients" || strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && strings.Contains(a[1:], "t") && !strings.ContainsAny(a[1:], "=/.") && len(a) <= 4 {
			return fmt.Errorf("sendmail command %q reads the recipients from the headers (%s); drop it, ppkit passes the recipients itself as git send-email does", strings.Join(args, " "), a)
		}
	}
	if s.Shell == "" {
		if fi, err := os.Stat(s.Program[0]); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("sendmail program %s is not an executable file; install it or fix --smtp-server", s.Program[0])
		}
	}
	return nil
}

// String names the server for messages.
func (s *SMTPServer) String() string {
	switch {
	case s.Shell != "":
		return s.Shell
	case len(s.Program) > 0:
		return strings.Join(s.Program, " ")
	}
	return s.Addr
}

// transport delivers one message to its envelope recipients.
type transport interface {
	deliver(ctx context.Context, from string, rcpts []string, msg []byte) error
	close(ok bool)
}

type smtpTransport struct{ c *smtp.Client }

func (t *smtpTransport) deliver(_ context.Context, from string, rcpts []string, msg []byte) error {
	return t.c.SendMail(from, rcpts, bytes.NewReader(msg))
}

func (t *smtpTransport) close(ok bool) {
	if ok {
		t.c.Quit()
	}
	t.c.Close()
}

type programTransport struct{ s *SMTPServer }

func (t *programTransport) deliver(ctx context.Context, from string, rcpts []string, msg []byte) error {
	args := []string{"-i", "-f", from}
	for _, a := range rcpts {
		if strings.HasPrefix(a, "-") {
			return fmt.Errorf("recipient %q starts with '-'; fix the address", a)
		}
		args = append(args, a)
	}
	var cmd *exec.Cmd
	if t.s.Shell != "" {
		cmd = exec.CommandContext(ctx, "sh", append([]string{"-c", t.s.Shell + ` "$@"`, t.s.Shell}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, t.s.Program[0], append(append([]string{}, t.s.Program[1:]...), args...)...)
	}
	cmd.Stdin = bytes.NewReader(msg)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if i := strings.LastIndex(msg, "\n"); i >= 0 {
			msg = strings.TrimSpace(msg[i+1:])
		}
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("%s: %s", filepath.Base(cmd.Args[0]), msg)
	}
	return nil
}

func (t *programTransport) close(bool) {}

// open connects to the server, or checks the program.
func (s *SMTPServer) open(ctx context.Context) (transport, error) {
	if len(s.Program) > 0 || s.Shell != "" {
		if err := s.checkProgram(); err != nil {
			return nil, err
		}
		return &programTransport{s: s}, nil
	}
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	return &smtpTransport{c: c}, nil
}

// Password finds the SMTP password: PPKIT_SMTP_PASSWORD, else git's credential helper.
func (r *Repo) Password(ctx context.Context, s *SMTPServer) error {
	if s.User == "" || len(s.Program) > 0 || s.Shell != "" {
		return nil
	}
	if v, ok := os.LookupEnv(PasswordEnv); ok && v != "" {
		s.password = v
		return nil
	}
	sub := &Repo{Dir: r.Dir, Env: append(append([]string{}, r.Env...), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=", "SSH_ASKPASS=")}
	in := fmt.Sprintf("protocol=smtp\nhost=%s\nusername=%s\n\n", s.Addr, s.User)
	out, err := sub.command(ctx, []byte(in), "git", "credential", "fill")
	if err == nil {
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(l, "password="); ok && v != "" {
				s.password = v
				return nil
			}
		}
	}
	return fmt.Errorf("no SMTP password for %s@%s; set %s or configure a git credential helper for smtp://%s", s.User, s.Addr, PasswordEnv, s.Addr)
}

func (s *SMTPServer) dial(ctx context.Context) (*smtp.Client, error) {
	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return nil, fmt.Errorf("SMTP server %q: %v; give HOST:PORT", s.Addr, err)
	}
	if s.User != "" && (s.TLS == "" || s.TLS == "none") {
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("refusing to send the SMTP password for %s unencrypted to %s; use --smtp-tls starttls (or tls)", s.User, s.Addr)
		}
	}
	cfg := &tls.Config{ServerName: host, RootCAs: s.rootCAs}
	var c *smtp.Client
	d := net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return nil, fmt.Errorf("connect to SMTP server %s: %w; check --smtp-server or ppkit.mail.smtpserver", s.Addr, err)
	}
	switch s.TLS {
	case "tls":
		c = smtp.NewClient(tls.Client(conn, cfg))
	case "starttls":
		if c, err = smtp.NewClientStartTLS(conn, cfg); err != nil {
			conn.Close()
			return nil, fmt.Errorf("STARTTLS with %s: %w", s.Addr, err)
		}
	default:
		c = smtp.NewClient(conn)
	}
	if err := c.Hello("localhost"); err != nil {
		c.Close()
		return nil, fmt.Errorf("SMTP server %s: %w", s.Addr, err)
	}
	if s.User != "" {
		if err := c.Auth(sasl.NewPlainClient("", s.User, s.password)); err != nil {
			c.Close()
			return nil, fmt.Errorf("SMTP login as %s at %s: %w", s.User, s.Addr, err)
		}
	}
	return c, nil
}

// pending is the state of a send in progress, kept in MailDir/pending.json next to the mbox.
type pending struct {
	Posting
	Sent []bool `json:"sent"`
}

// SendReport says what a send delivered.
type SendReport struct {
	Sent    []string // subjects delivered by this call
	Already int      // messages delivered by an earlier, interrupted call
	Total   int
}

// Send delivers the posting. The state is recorded after every message, so when the server
// fails mid-series the error says what was sent and Resume delivers only the rest. Bcc
// addresses go to the envelope only. The messages are dated one second apart, ending now (git
// send-email's order), so that mail readers sort them as numbered. The posting is recorded in
// HistoryRef once all messages went out.
func (r *Repo) Send(ctx context.Context, post *Posting, srv *SMTPServer, progress io.Writer) (*SendReport, error) {
	dir, err := r.MailDir(ctx, post.Branch)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "pending.json")); err == nil {
		return nil, fmt.Errorf("a previous send of this series stopped half-way; run 'ppkit mail --resume'")
	}
	t, err := srv.open(ctx)
	if err != nil {
		return nil, err // nothing sent, nothing recorded
	}
	post.SetDates(time.Now())
	st := &pending{Posting: *post, Sent: make([]bool, len(post.Messages))}
	if err := st.save(dir); err != nil {
		t.close(false)
		return nil, fmt.Errorf("record the send: %w", err)
	}
	return r.deliver(ctx, t, st, dir, srv.Delay, progress)
}

// Reflect sends the posting to its sender only (b4's send --reflect): the headers are those the
// list would get, the envelope names the sender alone. Nothing is recorded: a reflected
// posting is not a version.
func (r *Repo) Reflect(ctx context.Context, post *Posting, srv *SMTPServer, progress io.Writer) (*SendReport, error) {
	if progress == nil {
		progress = io.Discard
	}
	from, err := mail.ParseAddress(post.Sender)
	if err != nil {
		return nil, fmt.Errorf("sender %q: %v; fix user.email or stgit.sender", post.Sender, err)
	}
	t, err := srv.open(ctx)
	if err != nil {
		return nil, err
	}
	post.SetDates(time.Now())
	rep := &SendReport{Total: len(post.Messages)}
	for i := range post.Messages {
		m := &post.Messages[i]
		if i > 0 && srv.Delay > 0 {
			if err := sleepCtx(ctx, srv.Delay); err != nil {
				t.close(false)
				return rep, err
			}
		}
		if err := t.deliver(ctx, from.Address, []string{from.Address}, m.Raw); err != nil {
			t.close(false)
			return rep, fmt.Errorf("reflect stopped after %d of %d messages: message %d (%s): %w", i, len(post.Messages), i, m.Subject, err)
		}
		rep.Sent = append(rep.Sent, m.Subject)
		fmt.Fprintf(progress, "reflected %d/%d to %s: %s\n", i+1, len(post.Messages), from.Address, m.Subject)
	}
	t.close(true)
	return rep, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

// Resume delivers the messages an interrupted Send did not.
func (r *Repo) Resume(ctx context.Context, srv *SMTPServer, progress io.Writer) (*SendReport, error) {
	branch, err := r.Branch(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := r.MailDir(ctx, branch)
	if err != nil {
		return nil, err
	}
	st, err := loadPending(dir)
	if err != nil {
		return nil, err
	}
	t, err := srv.open(ctx)
	if err != nil {
		return nil, err
	}
	return r.deliver(ctx, t, st, dir, srv.Delay, progress)
}

func (st *pending) save(dir string) error {
	var mbox bytes.Buffer
	mbox.Write(st.Posting.Mbox())
	if err := atomicfile.Write(filepath.Join(dir, "pending.mbox"), mbox.Bytes(), 0o644); err != nil {
		return err
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, "pending.json"), data, 0o644)
}

func loadPending(dir string) (*pending, error) {
	data, err := os.ReadFile(filepath.Join(dir, "pending.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("nothing to resume: no interrupted send of this branch; send with --send")
	}
	if err != nil {
		return nil, err
	}
	st := &pending{}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "pending.json"), err)
	}
	mbox, err := os.ReadFile(filepath.Join(dir, "pending.mbox"))
	if err != nil {
		return nil, fmt.Errorf("pending send: %w", err)
	}
	msgs, err := ParseMbox(mbox)
	if err != nil || len(msgs) != len(st.Messages) || len(st.Sent) != len(msgs) {
		return nil, fmt.Errorf("pending send in %s is damaged; delete pending.json there and send again", dir)
	}
	for i := range msgs {
		if msgs[i].MessageID != st.Messages[i].MessageID {
			return nil, fmt.Errorf("pending send in %s is damaged; delete pending.json there and send again", dir)
		}
		st.Messages[i].Raw = msgs[i].Raw
		st.Messages[i].fromLine = msgs[i].fromLine
	}
	return st, nil
}

func (r *Repo) deliver(ctx context.Context, t transport, st *pending, dir string, delay time.Duration, progress io.Writer) (*SendReport, error) {
	if progress == nil {
		progress = io.Discard
	}
	rep := &SendReport{Total: len(st.Messages)}
	for _, s := range st.Sent {
		if s {
			rep.Already++
		}
	}
	from := st.Sender
	if a, err := mail.ParseAddress(st.Sender); err == nil {
		from = a.Address
	}
	first := true
	for i := range st.Messages {
		if st.Sent[i] {
			continue
		}
		m := &st.Messages[i]
		if !first && delay > 0 {
			if err := sleepCtx(ctx, delay); err != nil {
				t.close(false)
				return rep, r.stopped(st, dir, err)
			}
		}
		first = false
		if err := ctx.Err(); err != nil {
			t.close(false)
			return rep, r.stopped(st, dir, err)
		}
		if err := t.deliver(ctx, from, m.Recipients(st.Bcc), m.Raw); err != nil {
			t.close(false)
			return rep, r.stopped(st, dir, fmt.Errorf("message %d (%s): %w", i, m.Subject, err))
		}
		st.Sent[i] = true
		rep.Sent = append(rep.Sent, m.Subject)
		fmt.Fprintf(progress, "sent %d/%d: %s\n", i+1, len(st.Messages), m.Subject)
		if err := st.save(dir); err != nil {
			t.close(false)
			return rep, fmt.Errorf("record the send (message %d was delivered): %w", i, err)
		}
	}
	t.close(true)
	return rep, r.finish(ctx, st, dir)
}

func (r *Repo) stopped(st *pending, dir string, cause error) error {
	n := 0
	for _, s := range st.Sent {
		if s {
			n++
		}
	}
	return fmt.Errorf("sending stopped after %d of %d messages: %w; run 'ppkit mail --resume' to send the other %d", n, len(st.Sent), cause, len(st.Sent)-n)
}

// finish records the posting in the history ref and drops the pending state.
func (r *Repo) finish(ctx context.Context, st *pending, dir string) error {
	if err := r.recordPosting(context.WithoutCancel(ctx), &st.Posting); err != nil {
		return fmt.Errorf("all %d messages were sent, but recording the posting failed: %w; the next version will not link this one", len(st.Messages), err)
	}
	os.Remove(filepath.Join(dir, "pending.json"))
	os.Remove(filepath.Join(dir, "pending.mbox"))
	return nil
}

// Checkpatch runs the tree's scripts/checkpatch.pl --strict on every patch of the posting, as
// git format-patch writes it. Warnings and checks are printed; errors refuse the send. A tree
// without checkpatch.pl is said so and not checked.
func (r *Repo) Checkpatch(ctx context.Context, post *Posting, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	script := filepath.Join(r.Dir, "scripts", "checkpatch.pl")
	if _, err := os.Stat(script); err != nil {
		fmt.Fprintf(progress, "checkpatch: the tree has no scripts/checkpatch.pl; style not checked\n")
		return nil
	}
	var errs []string
	for _, p := range post.Patches {
		formatted, err := r.git(ctx, "format-patch", "-1", "--stdout", "refs/patches/"+post.Branch+"/"+p)
		if err != nil {
			return fmt.Errorf("checkpatch: format %s: %w", p, err)
		}
		out, _ := r.command(ctx, []byte(formatted), "perl", script, "--strict", "--terse", "--show-types", "--no-summary", "-")
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, l := range strings.Split(out, "\n") {
			m := checkpatchLine.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			line := fmt.Sprintf("checkpatch %s: %s %s: %s (line %s of the patch)", p, m[2], m[3], m[4], m[1])
			fmt.Fprintln(progress, line)
			if m[2] == "ERROR" {
				errs = append(errs, fmt.Sprintf("%s: %s", p, m[4]))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("checkpatch --strict finds %d errors (first: %s); fix them and refresh the patches before sending", len(errs), errs[0])
	}
	return nil
}
