package stgit

import (
	"context"
	"fmt"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
)

// ProfileFile is the optional mail profile kept in the kernel repository, in git config syntax
// (`[ppkit "mail"]` keys and `[mail "alias"]` entries). The developer's own git config wins
// over it.
const ProfileFile = ".ppkit-mail"

// Style is the subject style of posted mail.
type Style string

const (
	// StyleStg is exactly what `stg mail` 0.19 writes: `[net-next PATCH V3 1/4]`.
	StyleStg Style = "stg"
	// StyleNetdev is what Documentation/process/maintainer-netdev.rst asks for:
	// `[PATCH net-next v3 1/4]`.
	StyleNetdev Style = "netdev"
)

// Profile is the mail set-up of a series. It is read from git config `ppkit.mail.*` (or
// `ppkit.mail.NAME.*` for a named profile), stg's own `stgit.*` keys, and the repository's
// ProfileFile, in that order of precedence.
type Profile struct {
	Prefix    string   // tree prefix, e.g. net-next
	Version   string   // e.g. V3; empty for the first posting
	To        []string // addresses or aliases
	Cc        []string
	Bcc       []string // envelope only, never a header of a delivered message
	Style     Style
	Cover     string // file with the cover letter text: title line, blank line, body
	Changelog string // file with the changes since the previous version
	AutoCc    bool   // add scripts/get_maintainer.pl's addresses
	Sender    string // From; stgit.sender, else git's user identity

	SMTPServer string // host:port, or /path/to/sendmail ARGS
	SMTPUser   string
	SMTPTLS    string // "", "starttls" or "tls"
	// SendmailCmd is git's sendemail.sendmailCmd: a shell command used as sendmail when no
	// SMTP server is configured.
	SendmailCmd string
	// SMTPDelay is stgit.smtpdelay: seconds between two messages ("" when unset).
	SMTPDelay string

	senderSet bool // Sender came from ppkit.mail.sender: pass it to stg

	// Aliases maps an alias (stg's `mail.alias.NAME`) to its address.
	Aliases map[string]string
}

type configSource map[string][]string

func (c configSource) last(key string) string {
	v := c[strings.ToLower(key)]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func (c configSource) all(key string) []string {
	var out []string
	for _, v := range c[strings.ToLower(key)] {
		for _, f := range splitAddressList(v) {
			out = append(out, f)
		}
	}
	return out
}

// splitAddressList splits "a, \"B, C\" <b@x>" on commas outside quotes and angle brackets.
func splitAddressList(s string) []string {
	var out []string
	depth, quoted, start := 0, false, 0
	for i, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
		case r == '<' && !quoted:
			depth++
		case r == '>' && !quoted && depth > 0:
			depth--
		case r == ',' && !quoted && depth == 0:
			if f := strings.TrimSpace(s[start:i]); f != "" {
				out = append(out, f)
			}
			start = i + 1
		}
	}
	if f := strings.TrimSpace(s[start:]); f != "" {
		out = append(out, f)
	}
	return out
}

func (r *Repo) readConfig(ctx context.Context, args ...string) (configSource, error) {
	out, err := r.git(ctx, append([]string{"config", "--null"}, append(args, "--list")...)...)
	if err != nil {
		return nil, err
	}
	c := configSource{}
	for _, entry := range strings.Split(out, "\x00") {
		if entry == "" {
			continue
		}
		k, v, _ := strings.Cut(entry, "\n")
		k = strings.ToLower(k)
		c[k] = append(c[k], v)
	}
	return c, nil
}

// LoadProfile reads the mail profile (name "" is the default one).
func (r *Repo) LoadProfile(ctx context.Context, name string) (*Profile, error) {
	git, err := r.readConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("read git config: %w", err)
	}
	file := configSource{}
	path := filepath.Join(r.Dir, ProfileFile)
	if _, err := os.Stat(path); err == nil {
		if file, err = r.readConfig(ctx, "-f", path); err != nil {
			return nil, fmt.Errorf("mail profile %s: %w; it must be in git config syntax", path, err)
		}
	}
	// Later sources override earlier ones.
	sources := []func(string) []string{
		func(k string) []string { return file["ppkit.mail."+k] },
		func(k string) []string { return git["ppkit.mail."+k] },
	}
	if name != "" {
		found := false
		for key := range git {
			found = found || strings.HasPrefix(key, "ppkit.mail."+strings.ToLower(name)+".")
		}
		for key := range file {
			found = found || strings.HasPrefix(key, "ppkit.mail."+strings.ToLower(name)+".")
		}
		if !found {
			return nil, fmt.Errorf("no mail profile %q; set it with 'git config ppkit.mail.%s.to ADDRESS'", name, name)
		}
		sources = append(sources,
			func(k string) []string { return file["ppkit.mail."+strings.ToLower(name)+"."+k] },
			func(k string) []string { return git["ppkit.mail."+strings.ToLower(name)+"."+k] })
	}
	get := func(key, stgKey string) string {
		v := git.last(stgKey)
		if stgKey == "" {
			v = ""
		}
		for _, src := range sources {
			if vals := src(key); len(vals) > 0 {
				v = vals[len(vals)-1]
			}
		}
		return v
	}
	list := func(key string) []string {
		var v []string
		for _, src := range sources {
			if vals := src(key); len(vals) > 0 {
				v = nil
				for _, val := range vals {
					v = append(v, splitAddressList(val)...)
				}
			}
		}
		return v
	}
	p := &Profile{
		Prefix:     get("prefix", "stgit.mail.prefix"),
		Version:    get("version", ""),
		To:         list("to"),
		Cc:         list("cc"),
		Bcc:        append(list("bcc"), git.all("stgit.autobcc")...),
		Style:      Style(get("style", "")),
		Cover:      get("cover", ""),
		Changelog:  get("changelog", ""),
		AutoCc:     get("autocc", "") == "true",
		Sender:     get("sender", ""),
		SMTPServer: get("smtpserver", "stgit.smtpserver"),
		SMTPUser:   get("smtpuser", "stgit.smtpuser"),
		SMTPTLS:    get("smtptls", ""),
		Aliases:    map[string]string{},
	}
	if p.SMTPTLS == "" && git.last("stgit.smtptls") == "yes" {
		p.SMTPTLS = "starttls"
	}
	// git send-email's keys, below stg's: sendemail.smtpServer (a host, or a sendmail path),
	// smtpServerPort, smtpEncryption (tls: STARTTLS, ssl: TLS from the start), smtpUser.
	if p.SMTPTLS == "" {
		switch strings.ToLower(git.last("sendemail.smtpencryption")) {
		case "tls":
			p.SMTPTLS = "starttls"
		case "ssl":
			p.SMTPTLS = "tls"
		}
	}
	if p.SMTPServer == "" {
		if srv := git.last("sendemail.smtpserver"); srv != "" {
			if !strings.HasPrefix(srv, "/") && !strings.Contains(srv, ":") {
				port := git.last("sendemail.smtpserverport")
				if port == "" {
					port = "25"
					if p.SMTPTLS == "tls" {
						port = "465"
					} else if p.SMTPTLS == "starttls" {
						port = "587"
					}
				}
				srv += ":" + port
			}
			p.SMTPServer = srv
		}
	}
	if p.SMTPUser == "" {
		p.SMTPUser = git.last("sendemail.smtpuser")
	}
	p.SendmailCmd = git.last("sendemail.sendmailcmd")
	p.SMTPDelay = git.last("stgit.smtpdelay")
	if p.Style == "" {
		p.Style = StyleStg
	}
	for _, src := range []configSource{file, git} {
		for k, v := range src {
			if a, ok := strings.CutPrefix(k, "mail.alias."); ok && len(v) > 0 {
				p.Aliases[a] = v[len(v)-1]
			}
		}
	}
	for _, f := range []*string{&p.Cover, &p.Changelog} {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(r.Dir, *f)
		}
	}
	p.senderSet = p.Sender != ""
	if p.Sender == "" {
		p.Sender = git.last("stgit.sender")
	}
	if p.Sender == "" {
		name, email := git.last("user.name"), git.last("user.email")
		if email != "" {
			p.Sender = (&mail.Address{Name: name, Address: email}).String()
			if name != "" && !strings.ContainsAny(name, "\"(),.:;<>@[\\]") {
				p.Sender = name + " <" + email + ">"
			}
		}
	}
	return p, nil
}

// Validate checks what must be right before any editor opens or any mail leaves, and expands
// aliases in To, Cc and Bcc.
func (p *Profile) Validate() error {
	switch p.Style {
	case StyleStg, StyleNetdev:
	default:
		return fmt.Errorf("unknown mail style %q; use --style stg or --style netdev", p.Style)
	}
	switch p.SMTPTLS {
	case "", "starttls", "tls", "none":
	default:
		return fmt.Errorf("unknown SMTP TLS mode %q; use starttls, tls or none", p.SMTPTLS)
	}
	if p.Sender == "" {
		return fmt.Errorf("no sender; set git config user.name and user.email (or stgit.sender)")
	}
	if len(p.To) == 0 {
		return fmt.Errorf("no To address; give --to ADDRESS or set 'git config ppkit.mail.to ADDRESS'")
	}
	for _, l := range []*[]string{&p.To, &p.Cc, &p.Bcc} {
		var out []string
		for _, a := range *l {
			addr, err := p.expand(a)
			if err != nil {
				return err
			}
			out = append(out, addr)
		}
		*l = out
	}
	return nil
}

// expand resolves an alias the way stg 0.19 does (a word without '@' is an alias) and checks
// that the result parses as an address.
func (p *Profile) expand(a string) (string, error) {
	addr := a
	if !strings.Contains(a, "@") {
		v, ok := p.Aliases[strings.ToLower(a)]
		if !ok {
			return "", fmt.Errorf("unknown mail alias %q; define it with 'git config mail.alias.%s \"Name <address>\"'", a, a)
		}
		addr = v
	}
	if _, err := mail.ParseAddress(addr); err != nil {
		return "", fmt.Errorf("bad address %q: %v; write it as \"Name <user@host>\"", addr, err)
	}
	return addr, nil
}
