package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ppkit/ppkit/stgit"
)

func init() {
	register(&command{
		name:    "mail",
		summary: "post the stg series with stg mail's command line (dry-run mbox by default, --send, --reflect, --resume)",
		run:     runMail,
	})
}

// mailOption is one option of ppkit mail, spelled as stg mail spells it where stg has it.
type mailOption struct {
	long  string
	short byte
	// arg: 0 no value, 1 a value (--opt=V, --opt V, -oV, -o V), 2 an optional value (--opt=V only)
	arg   int
	meta  string
	help  string
	ppkit bool // ppkit's addition (not in stg mail)
	set   func(v string, given bool) error
}

// mailArgs are the parsed options of ppkit mail.
type mailArgs struct {
	kernel, profile, prefix, version, style, changelog, cover, template string
	to, cc, bcc                                                         []string
	all, editCover, editPatches, auto, autoCc, noThread, unrelated      bool
	attach, attachInline                                                bool
	inReplyTo, diffOpts                                                 string
	sleep                                                               int
	sleepSet                                                            bool
	mbox                                                                bool
	mboxFile                                                            string
	send, resume, reflect, yes, json, help                              bool
	server, user, tls                                                   string
	tlsSet                                                              bool
	patches                                                             []string
}

func mailOptions(a *mailArgs) []mailOption {
	str := func(dst *string) func(string, bool) error {
		return func(v string, _ bool) error { *dst = v; return nil }
	}
	list := func(dst *[]string) func(string, bool) error {
		return func(v string, _ bool) error { *dst = append(*dst, v); return nil }
	}
	flag := func(dst *bool) func(string, bool) error {
		return func(string, bool) error { *dst = true; return nil }
	}
	refuse := func(msg string) func(string, bool) error {
		return func(string, bool) error { return usageErrorf("%s", msg) }
	}
	return []mailOption{
		{long: "all", short: 'a', help: "mail all the applied patches", set: flag(&a.all)},
		{long: "to", arg: 1, meta: "TO", help: "add TO (address or mail.alias.*) to the To: list; repeatable", set: list(&a.to)},
		{long: "cc", arg: 1, meta: "CC", help: "add CC to the Cc: list; repeatable", set: list(&a.cc)},
		{long: "bcc", arg: 1, meta: "BCC", help: "add BCC to the Bcc: list (envelope only, never a header); repeatable", set: list(&a.bcc)},
		{long: "auto", help: "cc the patches' signers (Signed-off-by, Acked-by, Cc, Reviewed-by, …), as stg", set: flag(&a.auto)},
		{long: "no-thread", help: "do not send subsequent messages as replies", set: flag(&a.noThread)},
		{long: "unrelated", help: "send patches without sequence numbering", set: flag(&a.unrelated)},
		{long: "attach", help: "send a patch as attachment", set: flag(&a.attach)},
		{long: "attach-inline", help: "send a patch inline and as an attachment", set: flag(&a.attachInline)},
		{long: "version", short: 'v', arg: 1, meta: "VERSION", help: "add VERSION to the [PATCH ...] prefix (default: the version after the last one sent)", set: str(&a.version)},
		{long: "prefix", arg: 1, meta: "PREFIX", help: "add PREFIX to the [... PATCH ...] prefix (default: stgit.mail.prefix)", set: str(&a.prefix)},
		{long: "template", short: 't', arg: 1, meta: "FILE", help: "use FILE as the patch message template", set: str(&a.template)},
		{long: "cover", short: 'c', arg: 1, meta: "FILE", help: "send FILE as the cover message: an stg template (headers, %(name)s variables) or ppkit's title line + body", set: str(&a.cover)},
		{long: "edit-cover", short: 'e', help: "edit the cover message before sending (shown expanded, as stg shows it)", set: flag(&a.editCover)},
		{long: "edit-patches", short: 'E', help: "edit each patch before sending", set: flag(&a.editPatches)},
		{long: "sleep", short: 's', arg: 1, meta: "SECONDS", help: "sleep for SECONDS between e-mails sent (default: stgit.smtpdelay, else 0)", set: func(v string, _ bool) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return usageErrorf("--sleep %q: give a whole number of seconds", v)
			}
			a.sleep, a.sleepSet = n, true
			return nil
		}},
		{long: "in-reply-to", arg: 1, meta: "REFID", help: "use REFID as the reference id", set: str(&a.inReplyTo)},
		{long: "smtp-server", arg: 1, meta: "SERVER", help: "HOST[:PORT], or \"/path/to/sendmail ARGS\" (a sendmail-style program such as msmtp) (default: profile, stgit.smtpserver, sendemail.smtpServer, sendemail.sendmailCmd, localhost:25)", set: str(&a.server)},
		{long: "smtp-user", short: 'u', arg: 1, meta: "USER", help: "user name for SMTP authentication", set: str(&a.user)},
		{long: "smtp-password", short: 'p', arg: 1, meta: "PASSWORD", help: "refused: the password comes from $" + stgit.PasswordEnv + " or git's credential helper", set: refuse("--smtp-password is refused: a password on the command line lands in the shell history; set $" + stgit.PasswordEnv + " or a git credential helper")},
		{long: "smtp-tls", short: 'T', arg: 2, meta: "MODE", help: "use SMTP with TLS (STARTTLS); ppkit also takes --smtp-tls=tls (TLS from the start) or =none", set: func(v string, given bool) error {
			a.tls, a.tlsSet = "starttls", true
			if given {
				a.tls = v
			}
			return nil
		}},
		{long: "branch", short: 'b', arg: 1, meta: "BRANCH", help: "refused: ppkit mails the checked-out branch", set: refuse("-b/--branch is not supported; check out the branch and run ppkit mail there")},
		{long: "mbox", short: 'm', arg: 2, meta: "FILE", help: "write the mbox to stdout instead of sending (as stg); ppkit: --mbox=FILE writes it to FILE", set: func(v string, given bool) error {
			a.mbox = true
			if given {
				a.mboxFile = v
			}
			return nil
		}},
		{long: "git", help: "refused: ppkit sends itself", set: refuse("--git (git send-email) is not supported; ppkit sends over SMTP or a sendmail program (--smtp-server)")},
		{long: "diff-opts", short: 'O', arg: 1, meta: "OPTIONS", help: "extra options for git diff", set: str(&a.diffOpts)},

		{long: "kernel", arg: 1, meta: "DIR", ppkit: true, help: "kernel git tree holding the stg stack (default: .)", set: str(&a.kernel)},
		{long: "profile", arg: 1, meta: "NAME", ppkit: true, help: "use mail profile NAME (git config ppkit.mail.NAME.*)", set: str(&a.profile)},
		{long: "style", arg: 1, meta: "STYLE", ppkit: true, help: "subject style: stg ([net-next PATCH V3 1/4], the default) or netdev ([PATCH net-next v3 1/4]; a cover is required for 2+ patches)", set: str(&a.style)},
		{long: "changelog", arg: 1, meta: "FILE", ppkit: true, help: "FILE with the changes since the previous version (adds a cover)", set: str(&a.changelog)},
		{long: "auto-cc", ppkit: true, help: "Cc the people scripts/get_maintainer.pl names for each patch", set: flag(&a.autoCc)},
		{long: "send", ppkit: true, help: "send the series (without it, ppkit only writes the mbox: a dry run)", set: flag(&a.send)},
		{long: "reflect", ppkit: true, help: "send the series to the sender only, as the list would get it; not recorded as a version", set: flag(&a.reflect)},
		{long: "resume", ppkit: true, help: "send the rest of an interrupted --send", set: flag(&a.resume)},
		{long: "yes", short: 'y', ppkit: true, help: "do not ask for confirmation before sending (needed without a terminal)", set: flag(&a.yes)},
		{long: "json", ppkit: true, help: "print the posting (subjects, recipients, Message-IDs) as JSON", set: flag(&a.json)},
		{long: "help", short: 'h', help: "show this help", set: flag(&a.help)},
	}
}

// parseMailArgs parses stg mail's command line as stg's optparse does: long options with
// "--opt=value" or "--opt value" (unambiguous prefixes accepted), short ones as "-v V3", "-vV3"
// or grouped ("-ae"), options anywhere, everything after "--" a patch.
func parseMailArgs(args []string) (*mailArgs, []mailOption, error) {
	a := &mailArgs{}
	opts := mailOptions(a)
	byLong := func(name string) (*mailOption, error) {
		var found []*mailOption
		for i := range opts {
			if opts[i].long == name {
				return &opts[i], nil
			}
			if strings.HasPrefix(opts[i].long, name) {
				found = append(found, &opts[i])
			}
		}
		switch len(found) {
		case 1:
			return found[0], nil
		case 0:
			return nil, usageErrorf("unknown option --%s; 'ppkit mail --help' lists the options", name)
		}
		var names []string
		for _, o := range found {
			names = append(names, "--"+o.long)
		}
		return nil, usageErrorf("option --%s is ambiguous (%s); spell it out", name, strings.Join(names, ", "))
	}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			a.patches = append(a.patches, args[i+1:]...)
			return a, opts, nil
		case strings.HasPrefix(arg, "--"):
			name, val, hasVal := strings.Cut(arg[2:], "=")
			o, err := byLong(name)
			if err != nil {
				return nil, nil, err
			}
			switch o.arg {
			case 0:
				if hasVal {
					return nil, nil, usageErrorf("--%s takes no value (got %q)", o.long, arg)
				}
			case 1:
				if !hasVal {
					if i+1 >= len(args) {
						return nil, nil, usageErrorf("--%s needs a value: --%s=%s", o.long, o.long, o.meta)
					}
					i++
					val = args[i]
				}
			}
			if err := o.set(val, hasVal); err != nil {
				return nil, nil, err
			}
		case strings.HasPrefix(arg, "-") && len(arg) > 1:
			for j := 1; j < len(arg); j++ {
				var o *mailOption
				for k := range opts {
					if opts[k].short == arg[j] {
						o = &opts[k]
					}
				}
				if o == nil {
					return nil, nil, usageErrorf("unknown option -%c; 'ppkit mail --help' lists the options", arg[j])
				}
				if o.arg == 1 {
					val := arg[j+1:]
					if val == "" {
						if i+1 >= len(args) {
							return nil, nil, usageErrorf("-%c needs a value: -%c %s", o.short, o.short, o.meta)
						}
						i++
						val = args[i]
					}
					if err := o.set(val, true); err != nil {
						return nil, nil, err
					}
					break
				}
				if err := o.set("", false); err != nil {
					return nil, nil, err
				}
			}
		default:
			a.patches = append(a.patches, arg)
		}
	}
	return a, opts, nil
}

func mailUsage(w io.Writer, opts []mailOption) {
	fmt.Fprint(w, `usage: ppkit mail [options] [--] [<patch1>] [<patch2>] [<patch3>..<patch4>]

Takes stg mail's (StGit 0.19) command line and builds the messages with the real 'stg mail',
so the same arguments give stg's messages. Patches are named as stg takes them (names,
FIRST..LAST ranges) or -a/--all for every applied patch; naming none is an error, as in stg.
A cover letter is sent only with -e/--edit-cover or -c/--cover (as stg), or --changelog.

What ppkit adds (marked [ppkit] below): it is a dry run by default (the mbox is written under
.git/ppkit/mail/BRANCH/, or to stdout with -m/--mbox, or FILE with --mbox=FILE); --send
delivers, after checking every patch for the sender's Signed-off-by and with the tree's
scripts/checkpatch.pl --strict (errors refuse), listing the recipients and asking for
confirmation (--yes skips it; without a terminal, --yes is required); --reflect sends to
yourself only; a cover that still holds template placeholder text is refused; the messages
are dated one second apart; the history of sent versions is kept in the ref
refs/ppkit/mail/BRANCH (push it with 'git push origin "refs/ppkit/*:refs/ppkit/*"'), so the
next version is numbered, starts from the previous cover and links it; --style netdev.

options:
`)
	for _, o := range opts {
		name := "    --" + o.long
		if o.short != 0 {
			name = fmt.Sprintf("-%c, --%s", o.short, o.long)
		}
		switch o.arg {
		case 1:
			name += "=" + o.meta
		case 2:
			name += "[=" + o.meta + "]"
		}
		help := o.help
		if o.ppkit {
			help = "[ppkit] " + help
		}
		fmt.Fprintf(w, "  %-34s %s\n", name, help)
	}
	fmt.Fprintf(w, "\nSMTP settings: --smtp-server, else ppkit.mail.smtpserver, stgit.smtpserver, git's\nsendemail.smtpServer (+ smtpServerPort, smtpEncryption, smtpUser), sendemail.sendmailCmd.\nThe SMTP password comes from $%s or git's credential helper, never from the command line.\n", stgit.PasswordEnv)
}

// mailStdin and mailIsTerminal are the confirmation's input; tests replace them.
var (
	mailStdin      io.Reader = os.Stdin
	mailIsTerminal           = func() bool {
		_, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS)
		return err == nil
	}
)

func runMail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a, opts, err := parseMailArgs(args)
	if err != nil {
		return err
	}
	if a.help {
		mailUsage(stdout, opts)
		return nil
	}
	modes := 0
	for _, on := range []bool{a.send, a.resume, a.reflect, a.mbox} {
		if on {
			modes++
		}
	}
	if modes > 1 {
		return usageErrorf("--send, --reflect, --resume and --mbox do not go together; give one")
	}
	if a.resume && (len(a.patches) > 0 || a.all) {
		return usageErrorf("--resume sends the rest of the interrupted posting; name no patches")
	}
	if a.kernel == "" {
		a.kernel = "."
	}
	repo, err := stgit.Open(ctx, a.kernel)
	if err != nil {
		return failf("%v", err)
	}
	prof, err := repo.LoadProfile(ctx, a.profile)
	if err != nil {
		return failf("%v", err)
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&prof.Prefix, a.prefix)
	set(&prof.Version, a.version)
	if a.style != "" {
		prof.Style = stgit.Style(a.style)
	}
	prof.To = append(prof.To, a.to...)
	prof.Cc = append(prof.Cc, a.cc...)
	prof.Bcc = append(prof.Bcc, a.bcc...)
	set(&prof.Changelog, mailAbs(a.changelog))
	prof.AutoCc = prof.AutoCc || a.autoCc
	set(&prof.SMTPServer, a.server)
	set(&prof.SMTPUser, a.user)
	if a.tlsSet {
		prof.SMTPTLS = a.tls
	}
	srv, err := mailServer(prof, a)
	if err != nil {
		return failf("%v", err)
	}
	sending := a.send || a.reflect || a.resume
	if sending {
		// Everything that can be refused is refused before the editor opens or mail leaves.
		if err := srv.Check(); err != nil {
			return failf("%v", err)
		}
		if err := repo.Password(ctx, srv); err != nil {
			return failf("%v", err)
		}
	}
	if a.resume {
		rep, err := repo.Resume(ctx, srv, stderr)
		if err != nil {
			return failf("%v", err)
		}
		fmt.Fprintf(stdout, "resumed: sent the remaining %d of %d messages to %s\n", len(rep.Sent), rep.Total, srv)
		return nil
	}
	post, err := repo.Prepare(ctx, &stgit.MailOptions{
		Profile:       *prof,
		Patches:       a.patches,
		All:           a.all,
		EditCover:     a.editCover,
		CoverTemplate: mailAbs(a.cover),
		EditPatches:   a.editPatches,
		PatchTemplate: mailAbs(a.template),
		InReplyTo:     a.inReplyTo,
		NoThread:      a.noThread,
		Unrelated:     a.unrelated,
		Auto:          a.auto,
		Attach:        a.attach,
		AttachInline:  a.attachInline,
		DiffOpts:      a.diffOpts,
		Sending:       a.send || a.reflect,
		Reflect:       a.reflect,
		Stdout:        stderr, // stdout may be the mbox
		Stderr:        stderr,
	})
	if err != nil {
		return failf("%v", err)
	}
	if !a.send && !a.reflect {
		return mailDryRun(ctx, repo, post, a, stdout, stderr)
	}
	if err := repo.Checkpatch(ctx, post, stderr); err != nil {
		return failf("%v", err)
	}
	summary := stderr
	if !a.json {
		summary = stdout
	}
	post.Summary(summary)
	if a.reflect {
		fmt.Fprintf(summary, "reflect: the %d messages go to %s only\n", len(post.Messages), post.Sender)
	} else if err := confirmSend(post, srv, a.yes, summary); err != nil {
		return err
	}
	if a.reflect {
		rep, err := repo.Reflect(ctx, post, srv, stderr)
		if err != nil {
			return failf("%v", err)
		}
		if a.json {
			return seriesWriteJSON(stdout, mailResult{Posting: post, Sent: len(rep.Sent)})
		}
		fmt.Fprintf(stdout, "reflected %d messages to %s via %s; not recorded as a version\n", len(rep.Sent), post.Sender, srv)
		return nil
	}
	rep, err := repo.Send(ctx, post, srv, stderr)
	if err != nil {
		return failf("%v", err)
	}
	if a.json {
		return seriesWriteJSON(stdout, mailResult{Posting: post, Sent: len(rep.Sent)})
	}
	ref := stgit.HistoryRef(post.Branch)
	fmt.Fprintf(stdout, "sent %d messages via %s; recorded in %s (share it: git push origin %s)\n", len(rep.Sent), srv, ref, ref)
	return nil
}

// mailServer picks the transport: --smtp-server (or the profile's, stg's, git's server), a
// "/path/to/sendmail ARGS" value as a program, else sendemail.sendmailCmd, else localhost:25.
func mailServer(prof *stgit.Profile, a *mailArgs) (*stgit.SMTPServer, error) {
	var srv *stgit.SMTPServer
	if prof.SMTPServer == "" && prof.SendmailCmd != "" {
		srv = &stgit.SMTPServer{Shell: prof.SendmailCmd}
	} else {
		var err error
		if srv, err = stgit.ParseServer(prof.SMTPServer); err != nil {
			return nil, err
		}
	}
	srv.User, srv.TLS = prof.SMTPUser, prof.SMTPTLS
	switch {
	case a.sleepSet:
		srv.Delay = time.Duration(a.sleep) * time.Second
	case prof.SMTPDelay != "":
		n, err := strconv.Atoi(prof.SMTPDelay)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("stgit.smtpdelay %q is not a number of seconds; fix it with 'git config stgit.smtpdelay 5'", prof.SMTPDelay)
		}
		srv.Delay = time.Duration(n) * time.Second
	}
	return srv, nil
}

// confirmSend lists every recipient and asks; --yes skips the question, and without a terminal
// --yes is required.
func confirmSend(post *stgit.Posting, srv *stgit.SMTPServer, yes bool, w io.Writer) error {
	seen := map[string]bool{}
	var all []string
	for i := range post.Messages {
		for _, r := range post.Messages[i].Recipients(post.Bcc) {
			if !seen[r] {
				seen[r] = true
				all = append(all, r)
			}
		}
	}
	sort.Strings(all)
	fmt.Fprintf(w, "%d messages from %s to %d recipients via %s: %s\n", len(post.Messages), post.Sender, len(all), srv, strings.Join(all, ", "))
	if yes {
		return nil
	}
	if !mailIsTerminal() {
		return failf("not sending without confirmation: no terminal to ask on; check the recipients above and add --yes")
	}
	fmt.Fprintf(w, "Send them? [y/N] ")
	line, _ := bufio.NewReader(mailStdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return failf("not sent: not confirmed (answer y to send)")
}

func mailDryRun(ctx context.Context, repo *stgit.Repo, post *stgit.Posting, a *mailArgs, stdout, stderr io.Writer) error {
	if a.mbox && a.mboxFile == "" {
		// stg's -m/--mbox: the mbox on stdout, the summary on stderr.
		if _, err := stdout.Write(post.Mbox()); err != nil {
			return failf("write mbox: %v", err)
		}
		fmt.Fprintf(stderr, "dry run: %d messages written to stdout; add --send to post them\n", len(post.Messages))
		return nil
	}
	path := a.mboxFile
	if path == "" {
		dir, err := repo.MailDir(ctx, post.Branch)
		if err != nil {
			return failf("%v", err)
		}
		path = filepath.Join(dir, "dry-run-"+strings.ReplaceAll(mailDisplayVersion(post.Version), "/", "_")+".mbox")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return failf("%v", err)
		}
	}
	if err := os.WriteFile(path, post.Mbox(), 0o644); err != nil {
		return failf("write mbox: %v", err)
	}
	if a.json {
		return seriesWriteJSON(stdout, mailResult{Posting: post, Mbox: path})
	}
	post.Summary(stdout)
	fmt.Fprintf(stdout, "dry run: %d messages written to %s; add --send to post them\n", len(post.Messages), path)
	return nil
}

// mailResult is the --json output of ppkit mail.
type mailResult struct {
	*stgit.Posting
	Mbox string `json:"mbox,omitempty"`
	Sent int    `json:"sent"`
}

func mailDisplayVersion(v string) string {
	if v == "" {
		return "v1"
	}
	return v
}

func mailAbs(p string) string {
	if p == "" {
		return ""
	}
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}
