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
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
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
	tmp, err := os.MkdirTemp("", "ppkit-autocc-")
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
		post.Messages[i+1].addCc(post.Sender, addrs)
		union = append(union, addrs...)
	}
	post.Messages[0].addCc(post.Sender, union)
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

// SMTPServer says where and how to deliver.
type SMTPServer struct {
	Addr string // host:port
	TLS  string // "", "none", "starttls" or "tls"
	User string
	// Password is resolved by Password() and never printed.
	password string
	rootCAs  *x509.CertPool // nil: the system's
}

// Password finds the SMTP password: PPKIT_SMTP_PASSWORD, else git's credential helper.
func (r *Repo) Password(ctx context.Context, s *SMTPServer) error {
	if s.User == "" {
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
// addresses go to the envelope only.
func (r *Repo) Send(ctx context.Context, post *Posting, srv *SMTPServer, progress io.Writer) (*SendReport, error) {
	dir, err := r.MailDir(ctx, post.Branch)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "pending.json")); err == nil {
		return nil, fmt.Errorf("a previous send of this series stopped half-way; run 'ppkit mail --resume'")
	}
	c, err := srv.dial(ctx)
	if err != nil {
		return nil, err // nothing sent, nothing recorded
	}
	st := &pending{Posting: *post, Sent: make([]bool, len(post.Messages))}
	if err := st.save(dir); err != nil {
		c.Close()
		return nil, fmt.Errorf("record the send: %w", err)
	}
	return r.deliver(ctx, c, st, dir, progress)
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
	c, err := srv.dial(ctx)
	if err != nil {
		return nil, err
	}
	return r.deliver(ctx, c, st, dir, progress)
}

func (st *pending) save(dir string) error {
	var mbox bytes.Buffer
	mbox.Write(st.Posting.Mbox())
	if err := atomicWrite(filepath.Join(dir, "pending.mbox"), mbox.Bytes()); err != nil {
		return err
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicWrite(filepath.Join(dir, "pending.json"), data)
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

func (r *Repo) deliver(ctx context.Context, c *smtp.Client, st *pending, dir string, progress io.Writer) (*SendReport, error) {
	defer c.Close()
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
	for i := range st.Messages {
		if st.Sent[i] {
			continue
		}
		m := &st.Messages[i]
		if err := ctx.Err(); err != nil {
			return rep, r.stopped(st, dir, err)
		}
		if err := c.SendMail(from, m.Recipients(st.Bcc), bytes.NewReader(m.Raw)); err != nil {
			return rep, r.stopped(st, dir, fmt.Errorf("message %d (%s): %w", i, m.Subject, err))
		}
		st.Sent[i] = true
		rep.Sent = append(rep.Sent, m.Subject)
		fmt.Fprintf(progress, "sent %d/%d: %s\n", i+1, len(st.Messages), m.Subject)
		if err := st.save(dir); err != nil {
			return rep, fmt.Errorf("record the send (message %d was delivered): %w", i, err)
		}
	}
	c.Quit()
	return rep, r.finish(st, dir)
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

// finish records the posting in the history and drops the pending state.
func (r *Repo) finish(st *pending, dir string) error {
	var h []HistoryEntry
	if data, err := os.ReadFile(filepath.Join(dir, "history.json")); err == nil {
		json.Unmarshal(data, &h)
	}
	e := HistoryEntry{Version: st.Version, Date: time.Now().UTC(), CoverID: st.Messages[0].MessageID}
	for _, m := range st.Messages {
		e.Subjects = append(e.Subjects, m.Subject)
	}
	e.Recipient = st.Messages[0].To
	h = append(h, e)
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicWrite(filepath.Join(dir, "history.json"), data); err != nil {
		return fmt.Errorf("record the posting: %w", err)
	}
	os.Remove(filepath.Join(dir, "pending.json"))
	os.Remove(filepath.Join(dir, "pending.mbox"))
	return nil
}
