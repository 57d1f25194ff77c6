package stgit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// MaxSeries is the most patches netdev takes in one series.
const MaxSeries = 15

// MailOptions says what to post and how.
type MailOptions struct {
	Profile
	// Patches are the stack patches to post; empty means all applied patches.
	Patches []string
	// EditCover opens the editor on the cover letter before the series is built.
	EditCover bool
	// Editor is the command that edits the cover (default: `git var GIT_EDITOR`).
	Editor string
	// Stdout and Stderr are given to the editor and receive progress lines.
	Stdout, Stderr io.Writer
}

// Message is one message of a posting.
type Message struct {
	Subject   string   `json:"subject"`
	From      string   `json:"from"`
	To        []string `json:"to"`
	Cc        []string `json:"cc,omitempty"`
	MessageID string   `json:"message_id"`
	InReplyTo string   `json:"in_reply_to,omitempty"`
	// Raw is the message as delivered (no mbox "From " line, no Bcc header).
	Raw []byte `json:"-"`

	fromLine string   // stg's mbox separator line
	bcc      []string // Bcc header addresses stg wrote, removed from Raw
}

// Recipients returns the envelope recipients of the message: To, Cc and the Bcc list.
func (m *Message) Recipients(bcc []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range append(append(append([]string{}, m.To...), m.Cc...), bcc...) {
		if addr, err := mail.ParseAddress(a); err == nil && !seen[strings.ToLower(addr.Address)] {
			seen[strings.ToLower(addr.Address)] = true
			out = append(out, addr.Address)
		}
	}
	return out
}

// Posting is a built series ready to be written as an mbox or sent.
type Posting struct {
	Branch   string    `json:"branch"`
	Version  string    `json:"version"`
	Style    Style     `json:"style"`
	Sender   string    `json:"sender"`
	Bcc      []string  `json:"bcc,omitempty"`
	Messages []Message `json:"messages"`
	// CoverFile is where the cover text of this version is kept, if it was edited.
	CoverFile string `json:"cover_file,omitempty"`
}

// MailDir is where ppkit keeps the mail state of a branch: history.json (previous postings),
// pending.json and pending.mbox (a send in progress), cover-VERSION.txt (edited cover text).
func (r *Repo) MailDir(ctx context.Context, branch string) (string, error) {
	gd, err := r.GitDir(ctx)
	if err != nil {
		return "", err
	}
	return filepath.Join(gd, "ppkit", "mail", strings.ReplaceAll(branch, "/", "%")), nil
}

// HistoryEntry records one posting that was sent.
type HistoryEntry struct {
	Version   string    `json:"version"`
	Date      time.Time `json:"date"`
	CoverID   string    `json:"cover_message_id"`
	Subjects  []string  `json:"subjects"`
	Recipient []string  `json:"to"`
}

// History returns the postings of the branch sent so far, oldest first.
func (r *Repo) History(ctx context.Context, branch string) ([]HistoryEntry, error) {
	dir, err := r.MailDir(ctx, branch)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, "history.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var h []HistoryEntry
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("%s: %w; fix or delete the file", filepath.Join(dir, "history.json"), err)
	}
	return h, nil
}

var versionNumber = regexp.MustCompile(`^(.*?)(\d+)$`)

// NextVersion returns the version after v: V3 → V4, v1 → v2, 2 → 3, "" → v2.
func NextVersion(v string) string {
	if v == "" {
		return "v2"
	}
	m := versionNumber.FindStringSubmatch(v)
	if m == nil {
		return v + "2"
	}
	n, _ := strconv.Atoi(m[2])
	return m[1] + strconv.Itoa(n+1)
}

// versionFor renders a version in the style: netdev wants "v3".
func versionFor(style Style, v string) string {
	if style != StyleNetdev || v == "" {
		return v
	}
	if m := versionNumber.FindStringSubmatch(v); m != nil && (m[1] == "" || strings.EqualFold(m[1], "v")) {
		return "v" + m[2]
	}
	return v
}

func atomicWrite(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Prepare validates the options, resolves the version, lets the developer edit the cover,
// and builds the posting with the real `stg mail --mbox`. Everything that can be refused
// (unknown alias, no To, too many patches, a pending send) is refused before the editor opens.
func (r *Repo) Prepare(ctx context.Context, o *MailOptions) (*Posting, error) {
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	branch, err := r.Branch(ctx)
	if err != nil {
		return nil, err
	}
	ps, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	patches := o.Patches
	if len(patches) == 0 {
		for _, p := range ps {
			if p.Applied {
				patches = append(patches, p.Name)
			}
		}
	} else {
		known := map[string]bool{}
		for _, p := range ps {
			known[p.Name] = true
		}
		for _, p := range patches {
			if !known[p] {
				return nil, fmt.Errorf("no patch %q in the stack; 'ppkit series list' shows the names", p)
			}
		}
	}
	if len(patches) == 0 {
		return nil, fmt.Errorf("no applied patch to mail; 'stg push -a' first")
	}
	if len(patches) > MaxSeries {
		return nil, fmt.Errorf("the series has %d patches; netdev takes at most %d per series, post it in parts", len(patches), MaxSeries)
	}
	if err := o.Profile.Validate(); err != nil {
		return nil, err
	}
	dir, err := r.MailDir(ctx, branch)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "pending.json")); err == nil {
		return nil, fmt.Errorf("a previous send of this series stopped half-way; run 'ppkit mail --resume' (or delete %s to drop it)", filepath.Join(dir, "pending.json"))
	}
	history, err := r.History(ctx, branch)
	if err != nil {
		return nil, err
	}
	if o.Version == "" && len(history) > 0 {
		o.Version = NextVersion(history[len(history)-1].Version)
		fmt.Fprintf(o.Stderr, "version %s (the previous posting was %s)\n", o.Version, displayVersion(history[len(history)-1].Version))
	}
	version := versionFor(o.Style, o.Version)
	for _, h := range history {
		if h.Version == o.Version || versionFor(o.Style, h.Version) == version && version != "" {
			return nil, fmt.Errorf("version %s was already sent on %s; post the new version with --version %s", displayVersion(h.Version), h.Date.Format("2006-01-02"), NextVersion(history[len(history)-1].Version))
		}
	}
	for _, f := range []string{o.Cover, o.Changelog} {
		if f != "" {
			if _, err := os.ReadFile(f); err != nil {
				return nil, fmt.Errorf("read %w; fix ppkit.mail.cover/changelog or the flag", err)
			}
		}
	}

	// The cover text: kept edited text first, then the profile's, else stg's own template.
	coverFile := filepath.Join(dir, "cover-"+safeName(displayVersion(o.Version))+".txt")
	text, err := r.coverText(ctx, o, history, coverFile)
	if err != nil {
		return nil, err
	}
	if o.EditCover {
		if _, err := os.Stat(coverFile); err != nil {
			if err := atomicWrite(coverFile, []byte(text)); err != nil {
				return nil, fmt.Errorf("save cover: %w", err)
			}
		}
		fmt.Fprintf(o.Stderr, "cover letter text is kept in %s\n", coverFile)
		if err := r.edit(ctx, o, coverFile); err != nil {
			return nil, fmt.Errorf("edit cover: %w; the text is kept in %s", err, coverFile)
		}
		data, err := os.ReadFile(coverFile)
		if err != nil {
			return nil, err
		}
		text = string(data)
	}
	title, body, _ := strings.Cut(strings.TrimLeft(text, "\n"), "\n")
	if strings.TrimSpace(title) == "" {
		return nil, fmt.Errorf("the cover letter has no title line; edit %s", coverFile)
	}
	post, err := r.buildPosting(ctx, o, patches, version, title, body)
	if err != nil {
		if o.EditCover {
			return nil, fmt.Errorf("%w (the cover text is kept in %s)", err, coverFile)
		}
		return nil, err
	}
	post.Branch = branch
	post.Version = o.Version
	if _, err := os.Stat(coverFile); err == nil {
		post.CoverFile = coverFile
	}
	if o.AutoCc {
		if err := r.autoCc(ctx, post, patches); err != nil {
			return nil, err
		}
	}
	return post, nil
}

func displayVersion(v string) string {
	if v == "" {
		return "v1"
	}
	return v
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 || r == ' ' {
			return '_'
		}
		return r
	}, s)
}

func (r *Repo) edit(ctx context.Context, o *MailOptions, file string) error {
	editor := o.Editor
	if editor == "" {
		out, err := r.git(ctx, "var", "GIT_EDITOR")
		if err != nil {
			return err
		}
		editor = strings.TrimSpace(out)
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", editor+` "$@"`, editor, file)
	cmd.Dir = r.Dir
	cmd.Env = append(os.Environ(), r.Env...)
	cmd.Stdin = os.Stdin
	cmd.Stdout = o.Stdout
	cmd.Stderr = o.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("editor %q: %w", editor, err)
	}
	return nil
}

// findTemplate looks a template up where stg 0.19 does: $GIT_DIR, ~/.stgit/templates, then
// /usr/share/stgit/templates.
func (r *Repo) findTemplate(ctx context.Context, name string) (string, error) {
	gd, err := r.GitDir(ctx)
	if err != nil {
		return "", err
	}
	home, _ := os.UserHomeDir()
	for _, d := range []string{gd, filepath.Join(home, ".stgit", "templates"), "/usr/share/stgit/templates"} {
		if data, err := os.ReadFile(filepath.Join(d, name)); err == nil {
			return string(data), nil
		}
	}
	return "", fmt.Errorf("stg template %s not found; is stgit installed?", name)
}

// coverText returns the editable cover: a title line, then the body (which may use stg's
// %(shortlog)s and %(diffstat)s).
func (r *Repo) coverText(ctx context.Context, o *MailOptions, history []HistoryEntry, kept string) (string, error) {
	if data, err := os.ReadFile(kept); err == nil {
		fmt.Fprintf(o.Stderr, "using the cover letter text kept in %s\n", kept)
		return string(data), nil
	}
	var title, body string
	if o.Cover != "" {
		data, err := os.ReadFile(o.Cover)
		if err != nil {
			return "", err
		}
		title, body, _ = strings.Cut(strings.TrimLeft(string(data), "\n"), "\n")
		if !strings.Contains(body, "%(shortlog)s") {
			body = strings.TrimRight(body, "\n") + "\n\n---\n\n%(shortlog)s\n%(diffstat)s\n"
		}
	} else {
		tmpl, err := r.findTemplate(ctx, "covermail.tmpl")
		if err != nil {
			return "", err
		}
		hdr, b, _ := strings.Cut(tmpl, "\n\n")
		body = "\n" + b
		for _, l := range strings.Split(hdr, "\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				if i := strings.Index(s, "] "); i >= 0 {
					title = s[i+2:]
				}
			}
		}
	}
	var log strings.Builder
	if o.Changelog != "" {
		data, err := os.ReadFile(o.Changelog)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&log, "Changes in %s:\n%s\n", versionFor(o.Style, displayVersion(o.Version)), strings.TrimRight(string(data), "\n"))
	}
	if len(history) > 0 {
		if log.Len() > 0 {
			log.WriteString("\n")
		}
		for i := len(history) - 1; i >= 0; i-- {
			h := history[i]
			fmt.Fprintf(&log, "%s: https://lore.kernel.org/r/%s\n", versionFor(o.Style, displayVersion(h.Version)), strings.Trim(h.CoverID, "<>"))
		}
	}
	if log.Len() > 0 {
		if i := strings.Index(body, "\n---\n"); i >= 0 {
			body = strings.TrimRight(body[:i], "\n") + "\n\n" + log.String() + "\n" + body[i+1:]
		} else {
			body = strings.TrimRight(body, "\n") + "\n\n" + log.String()
		}
	}
	return title + "\n" + body, nil
}

// subjectTemplate is the bracket of stg's templates for a style.
func subjectTemplate(style Style) string {
	if style == StyleNetdev {
		return "[PATCH%(pspace)s%(prefix)s%(vspace)s%(version)s%(nspace)s%(number)s]"
	}
	return "[%(prefix)s%(pspace)sPATCH%(vspace)s%(version)s%(nspace)s%(number)s]"
}

// escapePercent protects the developer's text from stg's %-substitution, keeping %(name)s.
func escapePercent(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && !(i+1 < len(s) && s[i+1] == '(') {
			b.WriteString("%%")
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var stgSubjectLine = regexp.MustCompile(`(?m)^Subject: \[[^\]\n]*\]`)

func (r *Repo) buildPosting(ctx context.Context, o *MailOptions, patches []string, version, title, body string) (*Posting, error) {
	tmp, err := os.MkdirTemp("", "ppkit-mail-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	cover := "From: %(sender)s\nSubject: " + subjectTemplate(o.Style) + " " + escapePercent(strings.TrimSpace(title)) + "\n" + escapePercent(body)
	if err := os.WriteFile(filepath.Join(tmp, "cover.tmpl"), []byte(cover), 0o644); err != nil {
		return nil, err
	}
	args := []string{"mail", "--mbox", "-c", filepath.Join(tmp, "cover.tmpl")}
	if o.Style != StyleStg {
		tmpl, err := r.findTemplate(ctx, "patchmail.tmpl")
		if err != nil {
			return nil, err
		}
		tmpl = stgSubjectLine.ReplaceAllLiteralString(tmpl, "Subject: "+subjectTemplate(o.Style))
		if err := os.WriteFile(filepath.Join(tmp, "patch.tmpl"), []byte(tmpl), 0o644); err != nil {
			return nil, err
		}
		args = append(args, "-t", filepath.Join(tmp, "patch.tmpl"))
	}
	if o.Prefix != "" {
		args = append(args, "--prefix="+o.Prefix)
	}
	if version != "" {
		args = append(args, "--version="+version)
	}
	for _, a := range o.To {
		args = append(args, "--to="+a)
	}
	for _, a := range o.Cc {
		args = append(args, "--cc="+a)
	}
	if o.senderSet {
		// stg reads the sender from stgit.sender; pass ours through the environment-scoped config.
		args = append([]string{"-c", "stgit.sender=" + o.Sender}, args...)
	}
	args = append(args, "--")
	args = append(args, patches...)
	out, err := r.stgMail(ctx, args)
	if err != nil {
		return nil, err
	}
	msgs, err := ParseMbox(out)
	if err != nil {
		return nil, fmt.Errorf("read stg mail output: %w", err)
	}
	if len(msgs) != len(patches)+1 {
		return nil, fmt.Errorf("stg mail wrote %d messages for %d patches and a cover; nothing was sent, run 'stg mail --mbox' to see why", len(msgs), len(patches))
	}
	post := &Posting{Style: o.Style, Sender: o.Sender, Messages: msgs, Bcc: o.Bcc}
	for _, m := range msgs {
		post.Bcc = append(post.Bcc, m.bcc...)
	}
	return post, nil
}

// stgMail runs `stg mail`; git's -c option cannot reach stg, so config overrides go through
// GIT_CONFIG_PARAMETERS, which stg's `git config --list` honours.
func (r *Repo) stgMail(ctx context.Context, args []string) ([]byte, error) {
	var params []string
	for len(args) >= 2 && args[0] == "-c" {
		k, v, _ := strings.Cut(args[1], "=")
		params = append(params, "'"+k+"'='"+strings.ReplaceAll(v, "'", `'\''`)+"'")
		args = args[2:]
	}
	env := append([]string{}, r.Env...)
	if len(params) > 0 {
		if old := os.Getenv("GIT_CONFIG_PARAMETERS"); old != "" {
			params = append([]string{old}, params...)
		}
		env = append(env, "GIT_CONFIG_PARAMETERS="+strings.Join(params, " "))
	}
	// With GIT_AUTHOR_DATE or GIT_COMMITTER_DATE set, stg 0.19's `mail --mbox` silently writes
	// fewer messages (none, or all but the last); mail does not need them.
	sub := &Repo{Dir: r.Dir, Env: env, dropEnv: map[string]bool{"GIT_AUTHOR_DATE": true, "GIT_COMMITTER_DATE": true}}
	out, err := sub.command(ctx, nil, "stg", args...)
	if err != nil {
		return nil, fmt.Errorf("stg mail: %w", err)
	}
	return []byte(out), nil
}

// ParseMbox splits stg's mbox output into messages, removing every Bcc header.
func ParseMbox(data []byte) ([]Message, error) {
	var msgs []Message
	parts := splitMbox(data)
	for _, part := range parts {
		m, err := parseMessage(part.raw)
		if err != nil {
			return nil, err
		}
		m.fromLine = part.from
		msgs = append(msgs, *m)
	}
	if len(msgs) == 0 {
		return nil, errors.New("no message")
	}
	return msgs, nil
}

type mboxPart struct {
	from string
	raw  []byte
}

// splitMbox splits stg's mbox: each message starts with a "From nobody " line, after a blank
// line for all but the first.
func splitMbox(data []byte) []mboxPart {
	var parts []mboxPart
	var cur *mboxPart
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("From nobody ")) && (cur == nil || bytes.HasSuffix(cur.raw, []byte("\n\n"))) {
			if cur != nil {
				parts = append(parts, *cur)
			}
			cur = &mboxPart{from: strings.TrimRight(string(line), "\n")}
			continue
		}
		if cur != nil {
			cur.raw = append(cur.raw, line...)
		}
	}
	if cur != nil {
		parts = append(parts, *cur)
	}
	// stg ends every message with the extra newline of the mbox format.
	for i, p := range parts {
		if bytes.HasSuffix(p.raw, []byte("\n\n")) {
			parts[i].raw = p.raw[:len(p.raw)-1]
		}
	}
	return parts
}

func parseMessage(raw []byte) (*Message, error) {
	head, body, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		return nil, errors.New("message without a body")
	}
	var kept [][]byte
	var bcc []string
	m := &Message{}
	lines := bytes.SplitAfter(head, []byte("\n"))
	for i := 0; i < len(lines); {
		field := append([]byte{}, lines[i]...)
		j := i + 1
		for ; j < len(lines) && len(lines[j]) > 0 && (lines[j][0] == ' ' || lines[j][0] == '\t'); j++ {
			field = append(field, lines[j]...)
		}
		i = j
		name, value, _ := strings.Cut(string(field), ":")
		value = unfold(value)
		switch strings.ToLower(name) {
		case "bcc":
			bcc = append(bcc, splitAddressList(value)...)
			continue
		case "subject":
			m.Subject = value
		case "from":
			m.From = value
		case "to":
			m.To = splitAddressList(value)
		case "cc":
			m.Cc = splitAddressList(value)
		case "message-id":
			m.MessageID = value
		case "in-reply-to":
			m.InReplyTo = value
		}
		kept = append(kept, field)
	}
	if m.MessageID == "" || m.Subject == "" {
		return nil, errors.New("message without Subject or Message-ID")
	}
	m.Raw = append(append(bytes.TrimRight(bytes.Join(kept, nil), "\n"), '\n', '\n'), body...)
	m.bcc = bcc
	return m, nil
}

func unfold(v string) string {
	v = strings.ReplaceAll(v, "\r", "")
	v = strings.ReplaceAll(v, "\n\t", " ")
	v = strings.ReplaceAll(v, "\n", "")
	return strings.TrimSpace(v)
}

// Mbox returns the posting as an mbox, the way `stg mail --mbox` prints it (without Bcc).
func (p *Posting) Mbox() []byte {
	var b bytes.Buffer
	for _, m := range p.Messages {
		from := m.fromLine
		if from == "" {
			from = "From nobody " + time.Now().Format(time.ANSIC)
		}
		b.WriteString(from + "\n")
		b.Write(m.Raw)
		b.WriteString("\n")
	}
	return b.Bytes()
}

// Summary writes one block per message: subject and recipients.
func (p *Posting) Summary(w io.Writer) {
	for _, m := range p.Messages {
		fmt.Fprintf(w, "%s\n    To: %s\n", m.Subject, strings.Join(m.To, ", "))
		if len(m.Cc) > 0 {
			fmt.Fprintf(w, "    Cc: %s\n", strings.Join(m.Cc, ", "))
		}
		if len(p.Bcc) > 0 {
			fmt.Fprintf(w, "    Bcc (envelope only): %s\n", strings.Join(p.Bcc, ", "))
		}
	}
}
