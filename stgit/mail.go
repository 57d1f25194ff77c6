package stgit

import (
	"bytes"
	"context"
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

	"github.com/ppkit/ppkit/internal/atomicfile"
	"github.com/ppkit/ppkit/internal/owned"
)

// MaxSeries is the most patches netdev takes in one series.
const MaxSeries = 15

// MailOptions says what to post and how. The fields after Profile are stg mail's options.
type MailOptions struct {
	Profile
	// Patches are stg's patch arguments: names and FIRST..LAST ranges (either end may be
	// empty), resolved as stg 0.19 does. Naming none is an error unless All is set.
	Patches []string
	// All mails every applied patch (stg's -a/--all).
	All bool
	// EditCover opens the editor on the expanded cover letter before the series is built.
	EditCover bool
	// CoverTemplate is stg's -c/--cover FILE: an stg template (headers, blank line, body, with
	// %(name)s variables), or ppkit's plain form (title line, blank line, body).
	CoverTemplate string
	// EditPatches is stg's -E/--edit-patches.
	EditPatches bool
	// PatchTemplate is stg's -t/--template FILE.
	PatchTemplate string
	// InReplyTo, NoThread, Unrelated, Attach, AttachInline, Auto and DiffOpts are passed to stg.
	InReplyTo                 string
	NoThread, Unrelated, Auto bool
	Attach, AttachInline      bool
	DiffOpts                  string
	// Sending says the posting will be sent (--send, --reflect): a cover that still holds
	// placeholder text and a patch without the sender's Signed-off-by refuse instead of warn.
	Sending bool
	// Reflect says the posting goes to the sender only: a version already sent may be reflected.
	Reflect bool
	// Editor is the command that edits the cover (default: stg's choice, GIT_EDITOR first).
	Editor string
	// Stdout and Stderr are given to the editor and receive progress lines and warnings.
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
	Date      string   `json:"date,omitempty"`
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
	Patches  []string  `json:"patches"`
	HasCover bool      `json:"cover"`
	Messages []Message `json:"messages"`
	// CoverFile is where the edited cover text of this version is kept, if it was edited.
	CoverFile string `json:"cover_file,omitempty"`
	// CoverText is the cover as the editor shows it (From, Subject, blank line, body).
	CoverText string `json:"cover_text,omitempty"`
	// Warnings are what a send would refuse (placeholder cover text, a missing sign-off).
	Warnings []string `json:"warnings,omitempty"`
}

// MailDir is where ppkit keeps the local mail state of a branch: pending.json and pending.mbox
// (a send in progress), cover-VERSION.txt (edited cover text), dry-run mboxes. The history of
// sent postings is in HistoryRef.
func (r *Repo) MailDir(ctx context.Context, branch string) (string, error) {
	gd, err := r.GitDir(ctx)
	if err != nil {
		return "", err
	}
	return filepath.Join(gd, "ppkit", "mail", strings.ReplaceAll(branch, "/", "%")), nil
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

// SelectPatches resolves stg mail's patch arguments against the stack exactly as stg 0.19's
// parse_patches does: names of applied or unapplied patches and FIRST..LAST ranges (inclusive;
// an empty end stops at the applied/unapplied boundary unless the other end crosses it). With
// all, every applied patch. Neither is an error, as in stg.
func SelectPatches(ps []StackPatch, args []string, all bool) ([]string, error) {
	var applied, list []string
	for _, p := range ps {
		if p.Applied {
			applied = append(applied, p.Name)
		}
	}
	for _, p := range ps {
		list = append(list, p.Name) // applied first, then unapplied (hidden ones are not listed)
	}
	if all {
		if len(args) > 0 {
			return nil, fmt.Errorf("-a/--all and patch names (%s) do not go together; give one or the other", strings.Join(args, " "))
		}
		if len(applied) == 0 {
			return nil, fmt.Errorf("no applied patch to mail; 'stg push -a' first")
		}
		return applied, nil
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("no patches named; name them (PATCH, or FIRST..LAST as stg takes them) or give -a/--all for every applied patch")
	}
	index := func(name string) int {
		for i, n := range list {
			if n == name {
				return i
			}
		}
		return -1
	}
	boundary := len(applied)
	if boundary == 0 {
		boundary = len(list)
	}
	var out []string
	for _, arg := range args {
		pair := strings.Split(arg, "..")
		for _, p := range pair {
			if p != "" && index(p) < 0 {
				return nil, fmt.Errorf("no patch %q in the stack (in %q); 'stg series -a' lists the names", p, arg)
			}
		}
		switch len(pair) {
		case 1:
			out = append(out, pair[0])
		case 2:
			first, last := -1, -1
			if pair[0] != "" {
				first = index(pair[0])
			}
			if pair[1] != "" {
				last = index(pair[1]) + 1
			}
			if first < 0 {
				if last <= boundary {
					first = 0
				} else {
					first = boundary
				}
			}
			if last < 0 {
				if first < boundary {
					last = boundary
				} else {
					last = len(list)
				}
			}
			if last > first {
				out = append(out, list[first:last]...)
			} else {
				for i := first; i >= last-1 && i >= 0; i-- {
					out = append(out, list[i])
				}
			}
		default:
			return nil, fmt.Errorf("malformed patch range %q; write FIRST..LAST", arg)
		}
	}
	seen := map[string]bool{}
	for _, p := range out {
		if seen[p] {
			return nil, fmt.Errorf("patch %s is named twice; name each patch once", p)
		}
		seen[p] = true
	}
	return out, nil
}

// placeholders are the texts of stg's covermail.tmpl and of ppkit's changelog section that a
// real cover letter replaces.
var placeholders = []string{"Series short description", "The following series implements...", "\n--\nSignature", changelogPlaceholder}

const changelogPlaceholder = "(describe the changes since"

// Prepare validates the options, resolves the version, lets the developer edit the cover,
// and builds the posting with the real `stg mail --mbox`. Everything that can be refused
// (unknown alias, no To, no patch named, too many patches, a pending send, a missing sign-off
// when sending) is refused before the editor opens.
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
	patches, err := SelectPatches(ps, o.Patches, o.All)
	if err != nil {
		return nil, err
	}
	if len(patches) > MaxSeries {
		return nil, fmt.Errorf("the series has %d patches; netdev takes at most %d per series, post it in parts", len(patches), MaxSeries)
	}
	if err := o.Profile.Validate(); err != nil {
		return nil, err
	}
	if o.InReplyTo != "" && (o.NoThread || o.Unrelated) {
		return nil, fmt.Errorf("--in-reply-to does not go with --no-thread or --unrelated (as in stg); drop one")
	}
	if o.Attach && o.AttachInline {
		return nil, fmt.Errorf("--attach and --attach-inline do not go together; give one")
	}
	for _, p := range patches {
		out, err := r.git(ctx, "rev-parse", "refs/patches/"+branch+"/"+p+"^{tree}", "refs/patches/"+branch+"/"+p+"^^{tree}")
		if err != nil {
			return nil, fmt.Errorf("patch %s: %w", p, err)
		}
		if f := strings.Fields(out); len(f) == 2 && f[0] == f[1] {
			return nil, fmt.Errorf("patch %s is empty (stg refuses to mail it); refresh it or leave it out", p)
		}
	}
	var warnings []string
	warn := func(format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		if o.Sending {
			return errors.New(msg)
		}
		warnings = append(warnings, msg)
		fmt.Fprintf(o.Stderr, "warning: %s (a send refuses this)\n", msg)
		return nil
	}
	if err := r.checkSignoffs(ctx, branch, patches, o.Sender, warn); err != nil {
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
	if !o.Reflect {
		for _, h := range history {
			if h.Version == o.Version || versionFor(o.Style, h.Version) == version && version != "" {
				return nil, fmt.Errorf("version %s was already sent on %s; post the new version with --version %s", displayVersion(h.Version), h.Date.Format("2006-01-02"), NextVersion(history[len(history)-1].Version))
			}
		}
	}
	cover := o.CoverTemplate
	if cover == "" {
		cover = o.Cover
	}
	for _, f := range []string{cover, o.Changelog, o.PatchTemplate} {
		if f != "" {
			if _, err := os.ReadFile(f); err != nil {
				return nil, fmt.Errorf("read %w; fix the file name (--cover, --template, --changelog or ppkit.mail.cover/changelog)", err)
			}
		}
	}
	wantCover := o.EditCover || cover != "" || o.Changelog != ""
	if wantCover && o.Unrelated {
		return nil, fmt.Errorf("a cover letter does not go with --unrelated (as in stg); drop one")
	}
	if !wantCover && o.Style == StyleNetdev && len(patches) > 1 {
		return nil, fmt.Errorf("netdev wants a cover letter for a series of %d patches; add --edit-cover (or --cover FILE)", len(patches))
	}

	post := &Posting{Branch: branch, Version: o.Version, Style: o.Style, Sender: o.Sender, Patches: patches, HasCover: wantCover}
	var tmpl string
	coverFile := filepath.Join(dir, "cover-"+safeName(displayVersion(o.Version))+".txt")
	if wantCover {
		var expanded bool
		if tmpl, expanded, err = r.coverTemplate(ctx, o, branch, cover, history, coverFile); err != nil {
			return nil, err
		}
		if o.EditCover {
			if !expanded {
				// Show the editor what stg shows: the template expanded by stg itself.
				msgs, err := r.buildMessages(ctx, o, patches, version, tmpl, false)
				if err != nil {
					return nil, err
				}
				if err := atomicfile.Write(coverFile, []byte(editableCover(&msgs[0])), 0o644); err != nil {
					return nil, fmt.Errorf("save cover: %w", err)
				}
			}
			fmt.Fprintf(o.Stderr, "cover letter text is kept in %s\n", coverFile)
			if err := r.edit(ctx, o, coverFile); err != nil {
				return nil, fmt.Errorf("edit cover: %w; the text is kept in %s and the next run starts from it", err, coverFile)
			}
			data, err := os.ReadFile(coverFile)
			if err != nil {
				return nil, err
			}
			if !IsStgTemplate(string(data)) {
				return nil, fmt.Errorf("the edited cover in %s has no header lines with a Subject: at the top; keep the From: and Subject: lines, a blank line, then the text, and run again", coverFile)
			}
			tmpl = strings.ReplaceAll(string(data), "%", "%%")
		}
	}
	msgs, err := r.buildMessages(ctx, o, patches, version, tmpl, o.EditPatches)
	if err != nil {
		if o.EditCover {
			return nil, fmt.Errorf("%w (the cover text is kept in %s)", err, coverFile)
		}
		return nil, err
	}
	post.Messages = msgs
	for _, m := range msgs {
		post.Bcc = append(post.Bcc, m.bcc...)
	}
	post.Bcc = append(post.Bcc, o.Bcc...)
	if wantCover {
		post.CoverText = editableCover(&msgs[0])
		if _, err := os.Stat(coverFile); err == nil {
			post.CoverFile = coverFile
		}
		for _, ph := range placeholders {
			if strings.Contains("\n"+post.CoverText, ph) {
				fix := "edit it with --edit-cover"
				if post.CoverFile != "" {
					fix = "edit it with --edit-cover (the text is kept in " + post.CoverFile + ")"
				}
				if err := warn("the cover letter still holds the placeholder %q; %s", strings.TrimSpace(ph), fix); err != nil {
					return nil, err
				}
				break
			}
		}
	}
	if o.AutoCc {
		if err := r.autoCc(ctx, post, patches); err != nil {
			return nil, err
		}
	}
	post.Warnings = warnings
	post.SetDates(time.Now())
	return post, nil
}

// checkSignoffs wants a Signed-off-by of the sender in every patch.
func (r *Repo) checkSignoffs(ctx context.Context, branch string, patches []string, sender string, warn func(string, ...any) error) error {
	want, err := mail.ParseAddress(sender)
	if err != nil {
		return fmt.Errorf("sender %q: %v; fix user.email or stgit.sender", sender, err)
	}
	for _, p := range patches {
		msg, err := r.git(ctx, "log", "-1", "--format=%B", "refs/patches/"+branch+"/"+p)
		if err != nil {
			return fmt.Errorf("patch %s: %w", p, err)
		}
		found := false
		for _, l := range strings.Split(msg, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Signed-off-by:"); ok {
				if a, err := mail.ParseAddress(strings.TrimSpace(v)); err == nil && strings.EqualFold(a.Address, want.Address) {
					found = true
				}
			}
		}
		if !found {
			if err := warn("patch %s has no Signed-off-by: %s; add it with 'stg edit --sign %s'", p, sender, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// SetDates dates the messages one second apart, the last at now, as git send-email does, so
// that readers sort the series in order.
func (p *Posting) SetDates(now time.Time) {
	n := len(p.Messages)
	for i := range p.Messages {
		m := &p.Messages[i]
		d := now.Add(-time.Duration(n-1-i) * time.Second).Format(time.RFC1123Z)
		head, body, ok := bytes.Cut(m.Raw, []byte("\n\n"))
		if !ok {
			continue
		}
		fields := headerFields(head)
		for j, f := range fields {
			if name, _, _ := strings.Cut(f, ":"); strings.EqualFold(name, "date") {
				fields[j] = "Date: " + d
			}
		}
		m.Raw = append([]byte(strings.Join(fields, "\n")+"\n\n"), body...)
		m.Date = d
	}
}

// editableCover is a built cover as stg's editor shows it: the template's From and Subject
// headers, a blank line, the body.
func editableCover(m *Message) string {
	_, body, _ := bytes.Cut(m.Raw, []byte("\n\n"))
	return "From: " + m.From + "\nSubject: " + m.Subject + "\n\n" + string(body)
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

// editorCommand picks the editor as stg 0.19 does: GIT_EDITOR, stgit.editor, core.editor,
// VISUAL, EDITOR, then "editor".
func (r *Repo) editorCommand(ctx context.Context) string {
	env := func(k string) string {
		for i := len(r.Env) - 1; i >= 0; i-- {
			if v, ok := strings.CutPrefix(r.Env[i], k+"="); ok {
				return v
			}
		}
		return os.Getenv(k)
	}
	for _, e := range []string{env("GIT_EDITOR"), r.lastConfig(ctx, "stgit.editor"), r.lastConfig(ctx, "core.editor"), env("VISUAL"), env("EDITOR")} {
		if e != "" {
			return e
		}
	}
	return "editor"
}

func (r *Repo) lastConfig(ctx context.Context, key string) string {
	v := r.Config(ctx, key)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func (r *Repo) edit(ctx context.Context, o *MailOptions, file string) error {
	editor := o.Editor
	if editor == "" {
		editor = r.editorCommand(ctx)
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", editor+` "$@"`, editor, file)
	cmd.Dir = r.Dir
	cmd.Env = r.environ()
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

var templateHeader = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]*:`)

// IsStgTemplate reports whether text is an stg mail template (header lines with a Subject,
// a blank line, the body) rather than ppkit's plain cover (title line, blank line, body).
func IsStgTemplate(text string) bool {
	head, _, _ := strings.Cut(strings.TrimLeft(text, "\n"), "\n\n")
	lines := strings.Split(head, "\n")
	if !templateHeader.MatchString(lines[0]) {
		return false
	}
	for _, l := range lines {
		if strings.HasPrefix(strings.ToLower(l), "subject:") {
			return true
		}
	}
	return false
}

// coverTemplate returns the cover's stg template: the edited text kept from an earlier run
// (expanded already), else --cover's file, else the previous version's cover with a changelog
// section, else stg's covermail.tmpl. Changelog and links to previous postings go in before
// the "---" line.
func (r *Repo) coverTemplate(ctx context.Context, o *MailOptions, branch, cover string, history []HistoryEntry, kept string) (tmpl string, expanded bool, err error) {
	// The text kept from an earlier edit is where editing resumes; an explicit --cover file
	// without --edit-cover wins (the kept text stays on disk).
	if data, err := os.ReadFile(kept); err == nil && (o.EditCover || o.CoverTemplate == "") {
		fmt.Fprintf(o.Stderr, "using the cover letter text kept in %s\n", kept)
		return strings.ReplaceAll(string(data), "%", "%%"), true, nil
	}
	var log strings.Builder
	if o.Changelog != "" {
		data, err := os.ReadFile(o.Changelog)
		if err != nil {
			return "", false, err
		}
		fmt.Fprintf(&log, "Changes in %s:\n%s\n", versionFor(o.Style, displayVersion(o.Version)), strings.TrimRight(string(data), "\n"))
	}
	var prev string
	if len(history) > 0 {
		last := history[len(history)-1]
		if cover == "" {
			prev = r.SentCover(ctx, branch, last.Version)
		}
		if prev != "" && log.Len() == 0 {
			fmt.Fprintf(&log, "Changes in %s:\n- %s %s)\n", versionFor(o.Style, displayVersion(o.Version)), changelogPlaceholder, versionFor(o.Style, displayVersion(last.Version)))
		}
		if log.Len() > 0 {
			log.WriteString("\n")
		}
		for i := len(history) - 1; i >= 0; i-- {
			h := history[i]
			fmt.Fprintf(&log, "%s: https://lore.kernel.org/r/%s\n", versionFor(o.Style, displayVersion(h.Version)), strings.Trim(h.CoverID, "<>"))
		}
	}
	switch {
	case prev != "":
		// V(n+1) starts from V(n)'s cover: its title and description, a new changelog section,
		// and a fresh shortlog and diffstat.
		head, body, _ := strings.Cut(prev, "\n\n")
		title := ""
		for _, l := range strings.Split(head, "\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				title = s
				if i := strings.Index(s, "] "); i >= 0 && strings.HasPrefix(s, "[") {
					title = s[i+2:]
				}
			}
		}
		if i := strings.Index(body, "\n---\n"); i >= 0 {
			body = body[:i]
		}
		tmpl = "From: %(sender)s\nSubject: " + subjectTemplate(o.Style) + " " + escapePercent(title) + "\n\n" +
			escapePercent(strings.TrimRight(body, "\n")) + "\n\n" + escapePercent(log.String()) + "\n---\n\n%(shortlog)s\n%(diffstat)s\n"
		return tmpl, false, nil
	case cover != "":
		data, err := os.ReadFile(cover)
		if err != nil {
			return "", false, err
		}
		if IsStgTemplate(string(data)) {
			tmpl = string(data)
		} else {
			title, body, _ := strings.Cut(strings.TrimLeft(string(data), "\n"), "\n")
			if strings.TrimSpace(title) == "" {
				return "", false, fmt.Errorf("cover file %s has no title line; write the title on its first line", cover)
			}
			body = escapePercent(body)
			if !strings.Contains(body, "%(shortlog)s") {
				body = strings.TrimRight(body, "\n") + "\n\n---\n\n%(shortlog)s\n%(diffstat)s\n"
			}
			tmpl = "From: %(sender)s\nSubject: " + subjectTemplate(o.Style) + " " + escapePercent(strings.TrimSpace(title)) + "\n" + body
		}
	default:
		if tmpl, err = r.findTemplate(ctx, "covermail.tmpl"); err != nil {
			return "", false, err
		}
	}
	if o.Style != StyleStg {
		tmpl = stgSubjectLine.ReplaceAllLiteralString(tmpl, "Subject: "+subjectTemplate(o.Style))
	}
	if log.Len() > 0 {
		l := escapePercent(log.String())
		head, body, _ := strings.Cut(tmpl, "\n\n")
		if i := strings.Index(body, "\n---\n"); i >= 0 {
			body = strings.TrimRight(body[:i], "\n") + "\n\n" + l + "\n" + body[i+1:]
		} else {
			body = strings.TrimRight(body, "\n") + "\n\n" + l
		}
		tmpl = head + "\n\n" + body
	}
	return tmpl, false, nil
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

// buildMessages runs the real `stg mail --mbox` with the cover template (none when empty).
func (r *Repo) buildMessages(ctx context.Context, o *MailOptions, patches []string, version, coverTmpl string, editPatches bool) ([]Message, error) {
	tmp, err := owned.TempDir("mail")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	args := []string{"mail", "--mbox"}
	if coverTmpl != "" {
		if err := os.WriteFile(filepath.Join(tmp, "cover.tmpl"), []byte(coverTmpl), 0o644); err != nil {
			return nil, err
		}
		args = append(args, "-c", filepath.Join(tmp, "cover.tmpl"))
	}
	if o.Style != StyleStg || o.PatchTemplate != "" {
		var tmpl string
		if o.PatchTemplate != "" {
			data, err := os.ReadFile(o.PatchTemplate)
			if err != nil {
				return nil, err
			}
			tmpl = string(data)
		} else {
			name := "patchmail.tmpl"
			switch {
			case o.Attach:
				name = "mailattch.tmpl"
			case o.AttachInline:
				name = "patchandattch.tmpl"
			}
			if tmpl, err = r.findTemplate(ctx, name); err != nil {
				return nil, err
			}
		}
		if o.Style != StyleStg {
			tmpl = stgSubjectLine.ReplaceAllLiteralString(tmpl, "Subject: "+subjectTemplate(o.Style))
		}
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
	if o.InReplyTo != "" {
		args = append(args, "--in-reply-to="+o.InReplyTo)
	}
	for _, f := range []struct {
		on   bool
		flag string
	}{{o.NoThread, "--no-thread"}, {o.Unrelated, "--unrelated"}, {o.Auto, "--auto"}, {o.Attach, "--attach"}, {o.AttachInline, "--attach-inline"}, {editPatches, "-E"}} {
		if f.on {
			args = append(args, f.flag)
		}
	}
	if o.DiffOpts != "" {
		args = append(args, "--diff-opts="+o.DiffOpts)
	}
	if o.senderSet {
		// stg reads the sender from stgit.sender; pass ours through the environment-scoped config.
		args = append([]string{"-c", "stgit.sender=" + o.Sender}, args...)
	}
	args = append(args, "--")
	args = append(args, patches...)
	var env []string
	if editPatches {
		// stg runs the editor with its stdout, which is the mbox: send the editor's output to the
		// terminal (or stderr).
		editor := o.Editor
		if editor == "" {
			editor = r.editorCommand(ctx)
		}
		env = append(env, "PPKIT_PATCH_EDITOR="+editor, `GIT_EDITOR=sh -c 'if (exec </dev/tty) 2>/dev/null; then eval "$PPKIT_PATCH_EDITOR \"\$0\"" </dev/tty >/dev/tty; else eval "$PPKIT_PATCH_EDITOR \"\$0\"" >&2; fi'`)
	}
	out, err := r.stgMail(ctx, args, env, editPatches)
	if err != nil {
		return nil, err
	}
	msgs, err := ParseMbox(out)
	if err != nil {
		return nil, fmt.Errorf("read stg mail output: %w", err)
	}
	want := len(patches)
	if coverTmpl != "" {
		want++
	}
	if len(msgs) != want {
		return nil, fmt.Errorf("stg mail wrote %d messages for %d patches (cover: %v); nothing was sent, run 'stg mail --mbox' to see why", len(msgs), len(patches), coverTmpl != "")
	}
	return msgs, nil
}

// stgMail runs `stg mail`; git's -c option cannot reach stg, so config overrides go through
// GIT_CONFIG_PARAMETERS, which stg's `git config --list` honours.
func (r *Repo) stgMail(ctx context.Context, args, extraEnv []string, interactive bool) ([]byte, error) {
	var params []string
	for len(args) >= 2 && args[0] == "-c" {
		k, v, _ := strings.Cut(args[1], "=")
		params = append(params, "'"+k+"'='"+strings.ReplaceAll(v, "'", `'\''`)+"'")
		args = args[2:]
	}
	env := append(append([]string{}, r.Env...), extraEnv...)
	if len(params) > 0 {
		if old := os.Getenv("GIT_CONFIG_PARAMETERS"); old != "" {
			params = append([]string{old}, params...)
		}
		env = append(env, "GIT_CONFIG_PARAMETERS="+strings.Join(params, " "))
	}
	// With GIT_AUTHOR_DATE or GIT_COMMITTER_DATE set, stg 0.19's `mail --mbox` silently writes
	// fewer messages (none, or all but the last); mail does not need them.
	sub := &Repo{Dir: r.Dir, Env: env, dropEnv: map[string]bool{"GIT_AUTHOR_DATE": true, "GIT_COMMITTER_DATE": true}}
	// An editor (-E) needs the terminal's foreground process group.
	sub.foreground = interactive
	out, err := sub.command(ctx, nil, "stg", args...)
	if err != nil {
		return nil, err // CommandError already reads "stg mail: …"
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
