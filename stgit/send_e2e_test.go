//go:build e2e

package stgit

import (
	"bytes"
	"context"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/stgit/stgtest"
)

func netNextOptions(t *testing.T, r *Repo) *MailOptions {
	t.Helper()
	prof, err := r.LoadProfile(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	o := &MailOptions{Profile: *prof, All: true}
	o.Prefix, o.Version, o.To, o.Cc = "net-next", "V3", []string{"netdev"}, []string{"davem"}
	o.Bcc = append(o.Bcc, "secret-audit@example.org")
	o.CoverTemplate = writeCover(t, "page_pool: return pages via the skb\n\nThe pages come back to their pool.\n")
	return o
}

// checkThread checks the delivered messages: the cover first, every patch replying to it, and
// no Bcc header anywhere although the Bcc address got the message.
func checkThread(t *testing.T, got []stgtest.Received, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("server received %d messages, want %d", len(got), n)
	}
	var coverID string
	ids := map[string]bool{}
	for i, rcv := range got {
		msg, err := mail.ReadMessage(bytes.NewReader(rcv.Data))
		if err != nil {
			t.Fatal(err)
		}
		for k := range msg.Header {
			if strings.EqualFold(k, "Bcc") {
				t.Fatalf("message %d carries a Bcc header", i)
			}
		}
		if bytes.Contains(rcv.Data, []byte("secret-audit")) {
			t.Fatalf("message %d leaks the Bcc address", i)
		}
		if !strings.Contains(strings.Join(rcv.To, ","), "secret-audit@example.org") {
			t.Fatalf("message %d was not sent to the Bcc address: %v", i, rcv.To)
		}
		id := msg.Header.Get("Message-ID")
		if ids[id] {
			t.Fatalf("message %s delivered twice", id)
		}
		ids[id] = true
		subj := msg.Header.Get("Subject")
		if i == 0 {
			coverID = id
			if !strings.HasPrefix(subj, "[net-next PATCH V3 0/4]") || msg.Header.Get("In-Reply-To") != "" {
				t.Fatalf("first message is not a new-thread cover: %q", subj)
			}
			continue
		}
		if msg.Header.Get("In-Reply-To") != coverID || msg.Header.Get("References") != coverID {
			t.Fatalf("message %d (%s) is not threaded to the cover %s", i, subj, coverID)
		}
	}
}

func TestSendDeliversThreadedSeries(t *testing.T) {
	ctx := context.Background()
	r := mailRepo(t, stgtest.DefaultPatches(4), aliases)
	srv := stgtest.StartSMTP(t, 0, "jane", "s3cret")
	// The password comes from git's credential helper.
	stgtest.Git(t, r.Dir, "config", "credential.helper", "!f() { test \"$1\" = get && echo password=s3cret; }; f")
	o := netNextOptions(t, r)
	post, err := r.Prepare(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	smtp := &SMTPServer{Addr: srv.Addr, User: "jane"}
	if err := r.Password(ctx, smtp); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	rep, err := r.Send(ctx, post, smtp, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Sent) != 5 || strings.Contains(progress.String(), "s3cret") {
		t.Fatalf("report %+v, progress %q", rep, progress.String())
	}
	checkThread(t, srv.Received(), 5)
	if got := srv.Logins(); len(got) != 1 || got[0] != "jane" {
		t.Fatalf("logins %v", got)
	}

	// The next posting bumps the version, starts a new thread, and links the previous one.
	h, err := r.History(ctx, "master")
	if err != nil || len(h) != 1 || h[0].Version != "V3" {
		t.Fatalf("history %+v %v", h, err)
	}
	o = netNextOptions(t, r)
	o.Version, o.CoverTemplate = "", ""
	o.Changelog = filepath.Join(t.TempDir(), "changes")
	os.WriteFile(o.Changelog, []byte("- count recycled pages per pool\n"), 0o644)
	post, err = r.Prepare(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	cover := post.Messages[0]
	if !strings.HasPrefix(cover.Subject, "[net-next PATCH V4 0/4]") || cover.InReplyTo != "" {
		t.Fatalf("v4 cover %q replies to %q", cover.Subject, cover.InReplyTo)
	}
	if !bytes.Contains(cover.Raw, []byte("Changes in V4:\n- count recycled pages per pool\n")) || !bytes.Contains(cover.Raw, []byte("Jane Dev (4):")) {
		t.Fatalf("v4 cover lacks the changelog or the shortlog:\n%s", cover.Raw)
	}
	if link := "V3: https://lore.kernel.org/r/" + strings.Trim(h[0].CoverID, "<>"); !bytes.Contains(cover.Raw, []byte(link)) {
		t.Fatalf("v4 cover does not link v3 (%s):\n%s", link, cover.Raw)
	}
	// V4 starts from V3's cover: its title and text.
	if cover.Subject != "[net-next PATCH V4 0/4] page_pool: return pages via the skb" || !bytes.Contains(cover.Raw, []byte("The pages come back to their pool.")) {
		t.Fatalf("v4 cover does not start from v3's:\n%s", cover.Raw)
	}
	// Without a changelog, the section is a placeholder that a send refuses.
	o = netNextOptions(t, r)
	o.Version, o.CoverTemplate, o.EditCover, o.Editor, o.Sending = "", "", false, "", true
	o.Changelog = ""
	if _, err := r.Prepare(ctx, o); err == nil {
		// No cover asked and no changelog: no cover at all, which is stg's default.
	} else {
		t.Fatalf("V4 without cover: %v", err)
	}
	// Sending V3 again is refused.
	o = netNextOptions(t, r)
	if _, err := r.Prepare(ctx, o); err == nil || !strings.Contains(err.Error(), "already sent") {
		t.Fatalf("resending V3: %v", err)
	}
}

func TestSendFailureIsResumableWithoutDuplicates(t *testing.T) {
	ctx := context.Background()
	r := mailRepo(t, stgtest.DefaultPatches(4), aliases)
	// With these set, stg 0.19 drops messages from its mbox; ppkit must still build all 5.
	t.Setenv("GIT_AUTHOR_DATE", "2024-01-02T03:04:05+00:00")
	t.Setenv("GIT_COMMITTER_DATE", "2024-01-02T03:04:05+00:00")
	srv := stgtest.StartSMTP(t, 2, "", "")
	post, err := r.Prepare(ctx, netNextOptions(t, r))
	if err != nil {
		t.Fatal(err)
	}
	smtp := &SMTPServer{Addr: srv.Addr}
	_, err = r.Send(ctx, post, smtp, nil)
	if err == nil || !strings.Contains(err.Error(), "after 2 of 5") || !strings.Contains(err.Error(), "--resume") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("send error: %v", err)
	}
	if n := len(srv.Received()); n != 2 {
		t.Fatalf("server has %d messages", n)
	}
	// A new send is refused while one is pending.
	if _, err := r.Prepare(ctx, netNextOptions(t, r)); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("prepare with a pending send: %v", err)
	}
	srv.SetFailAfter(0)
	rep, err := r.Resume(ctx, smtp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Sent) != 3 || rep.Already != 2 {
		t.Fatalf("resume report %+v", rep)
	}
	checkThread(t, srv.Received(), 5)
	if _, err := r.Resume(ctx, smtp, nil); err == nil || !strings.Contains(err.Error(), "nothing to resume") {
		t.Fatalf("second resume: %v", err)
	}
}

func TestNoSMTPServerChangesNothing(t *testing.T) {
	ctx := context.Background()
	r := mailRepo(t, stgtest.DefaultPatches(4), aliases)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	post, err := r.Prepare(ctx, netNextOptions(t, r))
	if err != nil {
		t.Fatal(err)
	}
	before := stgtest.Snapshot(t, r.Dir)
	_, err = r.Send(ctx, post, &SMTPServer{Addr: addr}, nil)
	if err == nil || !strings.Contains(err.Error(), "connect to SMTP server") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("send without server: %v", err)
	}
	if stgtest.Snapshot(t, r.Dir) != before {
		t.Fatal("a send that never connected changed the repository")
	}
}

func TestMailRefusesBadInputBeforeEditor(t *testing.T) {
	ctx := context.Background()
	r := mailRepo(t, stgtest.DefaultPatches(16), aliases)
	marker := filepath.Join(t.TempDir(), "editor-ran")
	editor := "touch " + marker + " #"
	for _, tc := range []struct {
		name string
		set  func(o *MailOptions)
		want string
	}{
		{"unknown alias", func(o *MailOptions) { o.Patches = []string{"net-foo-patch-number-1"}; o.Cc = []string{"nobody-alias"} }, `unknown mail alias "nobody-alias"`},
		{"no To", func(o *MailOptions) { o.Patches = []string{"net-foo-patch-number-1"}; o.To = nil }, "no To address"},
		{"16 patches", func(o *MailOptions) { o.All = true }, "at most 15"},
		{"bad style", func(o *MailOptions) { o.Patches = []string{"net-foo-patch-number-1"}; o.Style = "linux" }, "unknown mail style"},
		{"no patch named", func(o *MailOptions) {}, "give -a/--all"},
		{"unknown patch", func(o *MailOptions) { o.Patches = []string{"net-foo-patch-number-1..nope"} }, `no patch "nope"`},
		{"all and names", func(o *MailOptions) { o.All = true; o.Patches = []string{"net-foo-patch-number-1"} }, "do not go together"},
		{"in-reply-to and no-thread", func(o *MailOptions) {
			o.Patches = []string{"net-foo-patch-number-1"}
			o.InReplyTo, o.NoThread = "<x@y>", true
		}, "--in-reply-to does not go with --no-thread"},
		{"missing cover file", func(o *MailOptions) {
			o.Patches = []string{"net-foo-patch-number-1"}
			o.CoverTemplate = "/nonexistent/cover"
		}, "fix the file name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := stgtest.Snapshot(t, r.Dir)
			o := netNextOptions(t, r)
			o.All = false
			o.EditCover, o.Editor = true, editor
			tc.set(o)
			_, err := r.Prepare(ctx, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err %v, want one line with %q", err, tc.want)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("the editor ran before the input was checked")
			}
			if stgtest.Snapshot(t, r.Dir) != before {
				t.Fatal("refused input changed the repository")
			}
		})
	}
}

func TestEditedCoverIsKept(t *testing.T) {
	ctx := context.Background()
	r := mailRepo(t, stgtest.DefaultPatches(4), aliases)
	script := filepath.Join(t.TempDir(), "edit.sh")
	// The editor gets the cover expanded, as stg shows it: it replaces the placeholders.
	stgtest.WriteFile(t, filepath.Dir(script), "edit.sh", "#!/bin/sh\nsed -i -e 's/Series short description/page_pool: return pages via the skb/' -e 's/The following series implements.../A cover that took 100% of an hour./' -e '/^--$/d' -e '/^Signature$/d' \"$1\"\n")
	os.Chmod(script, 0o755)
	o := netNextOptions(t, r)
	o.CoverTemplate = ""
	o.EditCover, o.Editor = true, script
	var stderr bytes.Buffer
	o.Stderr = &stderr
	post, err := r.Prepare(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if post.CoverFile == "" || !strings.Contains(stderr.String(), post.CoverFile) {
		t.Fatalf("cover file %q not printed: %q", post.CoverFile, stderr.String())
	}
	cover := post.Messages[0]
	if cover.Subject != "[net-next PATCH V3 0/4] page_pool: return pages via the skb" ||
		!bytes.Contains(cover.Raw, []byte("took 100% of an hour")) || !bytes.Contains(cover.Raw, []byte("Jane Dev (4):")) {
		t.Fatalf("cover:\n%s", cover.Raw)
	}
	// Sending fails (no server): the edited text stays and the next run starts from it.
	_, err = r.Send(ctx, post, &SMTPServer{Addr: "127.0.0.1:1"}, nil)
	if err == nil {
		t.Fatal("send to a closed port succeeded")
	}
	data, err := os.ReadFile(post.CoverFile)
	if err != nil || !strings.Contains(string(data), "took 100%") {
		t.Fatalf("edited cover lost: %q %v", data, err)
	}
	o = netNextOptions(t, r)
	o.CoverTemplate, o.EditCover, o.Editor = "", true, "true"
	post, err = r.Prepare(ctx, o)
	if err != nil || !strings.Contains(post.Messages[0].Subject, "page_pool: return pages via the skb") {
		t.Fatalf("next run did not reuse the kept cover: %v", err)
	}
	// An editor that fails leaves the text too.
	o = netNextOptions(t, r)
	o.EditCover, o.Editor = true, "false"
	if _, err := r.Prepare(ctx, o); err == nil || !strings.Contains(err.Error(), post.CoverFile) || !strings.Contains(err.Error(), "next run starts from it") {
		t.Fatalf("failing editor: %v", err)
	}
	if data, _ := os.ReadFile(post.CoverFile); !strings.Contains(string(data), "took 100%") {
		t.Fatal("a failing editor lost the kept text")
	}
	// An editor that throws the headers away is refused with the fix, and the text stays.
	o = netNextOptions(t, r)
	o.CoverTemplate, o.EditCover, o.Editor = "", true, "sed -i -e '1,/^$/d'"
	if _, err := r.Prepare(ctx, o); err == nil || !strings.Contains(err.Error(), "keep the From: and Subject: lines") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("cover without headers: %v", err)
	}
}

func TestProfileFromGitConfigAndFile(t *testing.T) {
	ctx := context.Background()
	r := mailRepo(t, stgtest.DefaultPatches(2), aliases)
	stgtest.WriteFile(t, r.Dir, ProfileFile, "[ppkit \"mail\"]\n\tprefix = net\n\tto = netdev\n\tstyle = netdev\n[mail \"alias\"]\n\tmm = linux-mm@kvack.org\n[ppkit \"mail.mm\"]\n\tcc = mm\n")
	stgtest.Git(t, r.Dir, "config", "ppkit.mail.prefix", "net-next")
	stgtest.Git(t, r.Dir, "config", "ppkit.mail.version", "v2")
	p, err := r.LoadProfile(ctx, "mm")
	if err != nil {
		t.Fatal(err)
	}
	if p.Prefix != "net-next" || p.Version != "v2" || p.Style != StyleNetdev || strings.Join(p.To, ",") != "netdev" || strings.Join(p.Cc, ",") != "mm" {
		t.Fatalf("profile %+v", p)
	}
	if err := p.Validate(); err != nil || p.Cc[0] != "linux-mm@kvack.org" {
		t.Fatalf("validate: %v %v", err, p.Cc)
	}
	if _, err := r.LoadProfile(ctx, "nope"); err == nil || !strings.Contains(err.Error(), "no mail profile") {
		t.Fatalf("unknown profile: %v", err)
	}
}

func TestSendOverSTARTTLS(t *testing.T) {
	ctx := context.Background()
	r := mailRepo(t, stgtest.DefaultPatches(2), aliases)
	srv, pool := stgtest.StartSMTPTLS(t, "jane", "tls-pw")
	t.Setenv(PasswordEnv, "tls-pw")
	o := netNextOptions(t, r)
	o.Version = "V1"
	post, err := r.Prepare(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	// Without TLS the server refuses the login: the password never crosses in clear.
	plain := &SMTPServer{Addr: srv.Addr, User: "jane", TLS: "none"}
	if err := r.Password(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Send(ctx, post, plain, nil); err == nil || !strings.Contains(err.Error(), "SMTP login") {
		t.Fatalf("plain login: %v", err)
	}
	// A password never goes in clear to a host that is not this machine.
	remote := &SMTPServer{Addr: "192.0.2.1:587", User: "jane", password: "x"}
	if _, err := remote.dial(ctx); err == nil || !strings.Contains(err.Error(), "unencrypted") {
		t.Fatalf("cleartext login to a remote host: %v", err)
	}
	s := &SMTPServer{Addr: srv.Addr, User: "jane", TLS: "starttls", rootCAs: pool}
	if err := r.Password(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Send(ctx, post, s, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Received()); n != 3 || len(srv.Logins()) != 1 {
		t.Fatalf("received %d, logins %v", n, srv.Logins())
	}
}
