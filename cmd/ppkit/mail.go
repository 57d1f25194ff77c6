package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ppkit/ppkit/stgit"
)

func init() {
	register(&command{
		name:    "mail",
		summary: "post the stg series the way 'stg mail' does (dry-run mbox by default, --send, --resume)",
		run:     runMail,
	})
}

// mailListFlag is a repeatable flag (--to a --to b).
type mailListFlag []string

func (l *mailListFlag) String() string { return strings.Join(*l, ", ") }
func (l *mailListFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func runMail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("mail", stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ppkit mail [flags] [PATCH...]   (default: all applied patches; a dry run that writes an mbox)")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nThe SMTP password comes from $%s or git's credential helper, never from the command line.\n", stgit.PasswordEnv)
	}
	kernel := fs.String("kernel", ".", "kernel git `tree` holding the stg stack")
	profile := fs.String("profile", "", "use mail profile `NAME` (git config ppkit.mail.NAME.*)")
	prefix := fs.String("prefix", "", "tree `prefix`, e.g. net-next (default: profile, stgit.mail.prefix)")
	version := fs.String("version", "", "series `version`, e.g. V3 (default: the version after the last one sent)")
	style := fs.String("style", "", "subject style: stg ([net-next PATCH V3 1/4]) or netdev ([PATCH net-next v3 1/4])")
	var to, cc, bcc mailListFlag
	fs.Var(&to, "to", "add a To `address` or alias (repeatable)")
	fs.Var(&cc, "cc", "add a Cc `address` or alias (repeatable)")
	fs.Var(&bcc, "bcc", "add a Bcc `address` or alias (repeatable; envelope only)")
	cover := fs.String("cover", "", "cover letter text `file`: title line, blank line, body")
	changelog := fs.String("changelog", "", "`file` with the changes since the previous version")
	editCover := fs.Bool("edit-cover", false, "edit the cover letter before building the series")
	autoCc := fs.Bool("auto-cc", false, "Cc the people scripts/get_maintainer.pl names for each patch")
	mbox := fs.String("mbox", "", "write the dry run to this mbox `file` (default: under .git/ppkit/mail)")
	send := fs.Bool("send", false, "send the series over SMTP")
	resume := fs.Bool("resume", false, "send the rest of an interrupted --send")
	server := fs.String("smtp-server", "", "SMTP server `host:port` (default: profile, stgit.smtpserver, localhost:25)")
	user := fs.String("smtp-user", "", "SMTP `user` (default: profile, stgit.smtpuser)")
	tlsMode := fs.String("smtp-tls", "", "SMTP encryption: starttls, tls or none")
	jsonOut := fs.Bool("json", false, "print the posting (subjects, recipients, Message-IDs) as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *send && *resume {
		return usageErrorf("--send and --resume do not go together; --resume alone sends the rest")
	}
	if *mbox != "" && (*send || *resume) {
		return usageErrorf("--mbox is the dry run; drop it to --send")
	}
	repo, err := stgit.Open(ctx, *kernel)
	if err != nil {
		return failf("%v", err)
	}
	prof, err := repo.LoadProfile(ctx, *profile)
	if err != nil {
		return failf("%v", err)
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&prof.Prefix, *prefix)
	set(&prof.Version, *version)
	if *style != "" {
		prof.Style = stgit.Style(*style)
	}
	prof.To = append(prof.To, to...)
	prof.Cc = append(prof.Cc, cc...)
	prof.Bcc = append(prof.Bcc, bcc...)
	set(&prof.Cover, mailAbs(*cover))
	set(&prof.Changelog, mailAbs(*changelog))
	prof.AutoCc = prof.AutoCc || *autoCc
	set(&prof.SMTPServer, *server)
	set(&prof.SMTPUser, *user)
	set(&prof.SMTPTLS, *tlsMode)
	if prof.SMTPServer == "" {
		prof.SMTPServer = "localhost:25"
	}
	smtp := &stgit.SMTPServer{Addr: prof.SMTPServer, User: prof.SMTPUser, TLS: prof.SMTPTLS}

	if *resume {
		if err := repo.Password(ctx, smtp); err != nil {
			return failf("%v", err)
		}
		rep, err := repo.Resume(ctx, smtp, stderr)
		if err != nil {
			return failf("%v", err)
		}
		fmt.Fprintf(stdout, "resumed: sent the remaining %d of %d messages to %s\n", len(rep.Sent), rep.Total, smtp.Addr)
		return nil
	}
	if *send {
		// Everything that can be refused is refused before the editor opens or mail leaves.
		if err := repo.Password(ctx, smtp); err != nil {
			return failf("%v", err)
		}
	}
	post, err := repo.Prepare(ctx, &stgit.MailOptions{
		Profile:   *prof,
		Patches:   fs.Args(),
		EditCover: *editCover,
		Stdout:    stdout,
		Stderr:    stderr,
	})
	if err != nil {
		return failf("%v", err)
	}
	if !*send {
		path := *mbox
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
		if *jsonOut {
			return seriesWriteJSON(stdout, mailResult{Posting: post, Mbox: path})
		}
		post.Summary(stdout)
		fmt.Fprintf(stdout, "dry run: %d messages written to %s; add --send to post them\n", len(post.Messages), path)
		return nil
	}
	if !*jsonOut {
		post.Summary(stdout)
	}
	rep, err := repo.Send(ctx, post, smtp, stderr)
	if err != nil {
		return failf("%v", err)
	}
	if *jsonOut {
		return seriesWriteJSON(stdout, mailResult{Posting: post, Sent: len(rep.Sent)})
	}
	fmt.Fprintf(stdout, "sent %d messages to %s\n", len(rep.Sent), smtp.Addr)
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
