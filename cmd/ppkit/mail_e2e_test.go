//go:build e2e

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/stgit"
	"github.com/ppkit/ppkit/stgit/stgtest"
)

// mailKernel is a scratch kernel with a 4-patch stg stack and the aliases in git config
// mail.alias.*.
func mailKernel(t *testing.T) string {
	t.Helper()
	stgtest.Hermetic(t)
	dir := stgtest.KernelRepo(t)
	stgtest.Stack(t, dir, stgtest.DefaultPatches(4))
	stgtest.Git(t, dir, "config", "mail.alias.netdev", "netdev@vger.kernel.org")
	stgtest.Git(t, dir, "config", "mail.alias.davem", `"David S. Miller" <davem@davemloft.net>`)
	return dir
}

func ppkit(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func readMbox(t *testing.T, data []byte) []stgit.Message {
	t.Helper()
	msgs, err := stgit.ParseMbox(data)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// coverFile writes a cover in ppkit's plain form and returns its path.
func coverFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cover.txt")
	if err := os.WriteFile(path, []byte("page_pool: return pages via the skb\n\nThe pages come back to their pool.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// devNotesCommand is the `stg mail` command of the series' development notes, verbatim.
const devNotesCommand = `stg mail --prefix=net-next --version="V3" --edit-cover  --cc meup \
 --to netdev --to linux-mm@kvack.org \
 --cc willy@infradead.org --cc davem \
 --cc mgorman@techsingularity.net --cc akpm \
 --cc toke --cc ilias \
 --cc tariq --cc saeed \
 --cc alex \
 mm-dma_addr_to-struct-page..dma_attr`

// shellWords splits a command line as sh does for the quoting the notes use: blanks,
// backslash-newline, double and single quotes.
func shellWords(s string) []string {
	s = strings.ReplaceAll(s, "\\\n", " ")
	var words []string
	var cur strings.Builder
	in := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

var (
	msgIDRe = regexp.MustCompile(`<[^<>@\s]+@[^<>\s]+>`)
	dateRe  = regexp.MustCompile(`(?m)^Date: .*$`)
)

func normalizeMsg(raw []byte) string {
	ids := map[string]string{}
	out := msgIDRe.ReplaceAllFunc(raw, func(id []byte) []byte {
		if _, ok := ids[string(id)]; !ok {
			ids[string(id)] = fmt.Sprintf("<ID%d>", len(ids)+1)
		}
		return []byte(ids[string(id)])
	})
	return string(dateRe.ReplaceAll(out, []byte("Date: DATE")))
}

// notesKernel is the series of the development notes: the patches the notes' range names, and
// one more (a WIP patch) on top, outside the range; the aliases of the notes in git config.
func notesKernel(t *testing.T) string {
	t.Helper()
	stgtest.Hermetic(t)
	dir := stgtest.KernelRepo(t)
	ps := stgtest.DefaultPatches(5)
	for i, n := range []struct{ name, subject string }{
		{"mm-dma_addr_to-struct-page", "mm: add dma_addr_t to struct page"},
		{"page_pool-skb-return-hook", "page_pool: recycle pages via the SKB return hook"},
		{"mvneta-page_pool-recycle", "net: mvneta: recycle pages through page_pool"},
		{"dma_attr", "page_pool: use DMA_ATTR_SKIP_CPU_SYNC for DMA mappings"},
		{"wip-debug-counters", "net: core: WIP debug counters, not for posting"},
	} {
		ps[i].Name, ps[i].Subject = n.name, n.subject
	}
	stgtest.Stack(t, dir, ps)
	for alias, addr := range map[string]string{
		"meup":   "Jane Dev <jane@example.org>",
		"netdev": "netdev@vger.kernel.org",
		"davem":  `"David S. Miller" <davem@davemloft.net>`,
		"akpm":   "Andrew Morton <akpm@linux-foundation.org>",
		"toke":   "Toke Høiland-Jørgensen <toke@redhat.com>",
		"ilias":  "Ilias Apalodimas <ilias.apalodimas@linaro.org>",
		"tariq":  "Tariq Toukan <tariqt@nvidia.com>",
		"saeed":  "Saeed Mahameed <saeedm@nvidia.com>",
		"alex":   "Alexander Duyck <alexander.duyck@gmail.com>",
	} {
		stgtest.Git(t, dir, "config", "mail.alias."+alias, addr)
	}
	return dir
}

// TestMailDevNotesCommand runs the notes' command verbatim with the real stg (--mbox) and with
// ppkit (--mbox, its dry run on stdout): the same editor script writes the cover in both, and
// every message is the same but for Date and Message-ID; the WIP patch is not mailed.
func TestMailDevNotesCommand(t *testing.T) {
	dir := notesKernel(t)
	editor := filepath.Join(t.TempDir(), "edit-cover.sh")
	stgtest.WriteFile(t, filepath.Dir(editor), "edit-cover.sh", `#!/bin/sh
sed -i -e 's/Series short description/page_pool: recycle buffers via the SKB return hook/' \
	-e 's/The following series implements.../The pages of a page_pool come back to it when the SKB is freed./' \
	-e '/^--$/d' -e '/^Signature$/d' "$1"
`)
	os.Chmod(editor, 0o755)
	t.Setenv("GIT_EDITOR", editor)
	words := shellWords(devNotesCommand)
	if words[0] != "stg" || words[1] != "mail" || len(words) != 30 {
		t.Fatalf("notes command split into %d words: %q", len(words), words)
	}
	args := append(append([]string{}, words[2:]...), "--mbox")

	cmd := exec.Command("stg", append([]string{"mail"}, args...)...)
	cmd.Dir = dir
	var stgErr bytes.Buffer
	cmd.Stderr = &stgErr
	stgOut, err := cmd.Output()
	if err != nil {
		t.Fatalf("stg mail: %v\n%s", err, stgErr.String())
	}
	want := readMbox(t, stgOut)

	code, stdout, stderr := ppkit(t, append([]string{"mail", "--kernel", dir}, args...)...)
	if code != 0 {
		t.Fatalf("ppkit mail: exit %d: %s", code, stderr)
	}
	got := readMbox(t, []byte(stdout))
	if len(want) != 5 || len(got) != 5 {
		t.Fatalf("stg wrote %d messages, ppkit %d; want a cover and 4 patches", len(want), len(got))
	}
	for i := range want {
		g, w := got[i], want[i]
		for _, f := range []struct{ name, got, want string }{
			{"Subject", g.Subject, w.Subject},
			{"From", g.From, w.From},
			{"To", strings.Join(g.To, ", "), strings.Join(w.To, ", ")},
			{"Cc", strings.Join(g.Cc, ", "), strings.Join(w.Cc, ", ")},
		} {
			if f.got != f.want {
				t.Errorf("message %d %s:\nppkit %q\n  stg %q", i, f.name, f.got, f.want)
			}
		}
		if normalizeMsg(g.Raw) != normalizeMsg(w.Raw) {
			t.Errorf("message %d differs:\nppkit:\n%s\nstg:\n%s", i, normalizeMsg(g.Raw), normalizeMsg(w.Raw))
		}
	}
	cover := string(got[0].Raw)
	if got[0].Subject != "[net-next PATCH V3 0/4] page_pool: recycle buffers via the SKB return hook" ||
		!strings.Contains(cover, "\n\nThe pages of a page_pool come back to it when the SKB is freed.\n") {
		t.Fatalf("edited cover:\n%s", cover)
	}
	if strings.Contains(stdout, "WIP") || strings.Contains(stdout, "wip-debug") {
		t.Fatal("the patch outside the range was mailed")
	}
	if len(got[0].Cc) != 10 || !strings.Contains(strings.Join(got[0].Cc, ","), "Toke Høiland-Jørgensen") && !strings.Contains(strings.Join(got[0].Cc, ","), "toke@redhat.com") {
		t.Fatalf("cover Cc: %q", got[0].Cc)
	}
}

func TestMailDryRunMatchesStgMail(t *testing.T) {
	dir := mailKernel(t)
	out := filepath.Join(t.TempDir(), "out.mbox")
	code, stdout, stderr := ppkit(t, "mail", "--kernel", dir, "--prefix", "net-next", "-v", "V3", "--to", "netdev", "--cc=davem", "--mbox="+out, "-a")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := readMbox(t, data)
	if len(got) != 4 || !strings.HasPrefix(got[0].Subject, "[net-next PATCH V3 1/4] ") {
		t.Fatalf("%d messages, first %q; want 4 patches and no cover (none asked)", len(got), got[0].Subject)
	}
	if !strings.Contains(stdout, "dry run: 4 messages") || !strings.Contains(stdout, "To: netdev@vger.kernel.org") {
		t.Fatalf("summary:\n%s", stdout)
	}
	cmd := exec.Command("stg", "mail", "--prefix=net-next", "--version=V3", "--to", "netdev", "--cc", "davem", "--mbox", "-a")
	cmd.Dir = dir
	stgOut, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want := readMbox(t, stgOut)
	for i, w := range want {
		if normalizeMsg(got[i].Raw) != normalizeMsg(w.Raw) {
			t.Errorf("patch %d:\nppkit:\n%s\nstg:\n%s", i+1, normalizeMsg(got[i].Raw), normalizeMsg(w.Raw))
		}
	}

	code, stdout, stderr = ppkit(t, "mail", "--kernel", dir, "--prefix", "net-next", "--version", "V3", "--to", "netdev", "--cc", "davem", "--mbox="+out, "--style", "netdev", "--json", "-c", coverFile(t), "-a")
	if code != 0 {
		t.Fatalf("netdev style: exit %d: %s", code, stderr)
	}
	var res struct {
		Mbox     string
		Messages []stgit.Message
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Mbox != out || len(res.Messages) != 5 || res.Messages[2].InReplyTo != res.Messages[0].MessageID {
		t.Fatalf("--json: %v %s", err, stdout)
	}
	data, _ = os.ReadFile(out)
	for i, m := range readMbox(t, data) {
		if want := "[PATCH net-next v3 " + string(rune('0'+i)) + "/4] "; !strings.HasPrefix(m.Subject, want) {
			t.Errorf("netdev subject %q, want %q…", m.Subject, want)
		}
	}
}

// TestMailLonePatchAndStgTemplate: one patch gets no cover unless asked; an stg cover template
// (headers and %(name)s variables) is read as stg reads it: one Subject, stg's bytes.
func TestMailLonePatchAndStgTemplate(t *testing.T) {
	dir := mailKernel(t)
	code, stdout, stderr := ppkit(t, "mail", "--kernel", dir, "--to", "netdev", "-m", "net-foo-patch-number-2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if msgs := readMbox(t, []byte(stdout)); len(msgs) != 1 || msgs[0].Subject != "[PATCH] net: foo: patch number 2" {
		t.Fatalf("lone patch: %d messages %+v", len(msgs), msgs)
	}
	tmpl := filepath.Join(t.TempDir(), "cover.tmpl")
	stgtest.WriteFile(t, filepath.Dir(tmpl), "cover.tmpl", "From: %(sender)s\nSubject: [%(prefix)s%(pspace)sPATCH%(vspace)s%(version)s%(nspace)s%(number)s] page_pool: the cover\n\n100% of the %(totalnr)s patches:\n\n%(shortlog)s\n%(diffstat)s\n")
	stgtest.WriteFile(t, filepath.Dir(tmpl), "cover.tmpl", strings.Replace(string(must(os.ReadFile(tmpl))), "100%", "100%%", 1))
	args := []string{"--prefix=net-next", "--to", "netdev", "-c", tmpl, "net-foo-patch-number-1..net-foo-patch-number-3"}
	code, stdout, stderr = ppkit(t, append([]string{"mail", "--kernel", dir, "--mbox"}, args...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := readMbox(t, []byte(stdout))
	if n := strings.Count(string(got[0].Raw), "\nSubject:") + strings.Count(string(got[0].Raw[:9]), "Subject:"); n != 1 {
		t.Fatalf("cover has %d Subject headers:\n%s", n, got[0].Raw)
	}
	cmd := exec.Command("stg", append([]string{"mail", "--mbox"}, args...)...)
	cmd.Dir = dir
	stgOut, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want := readMbox(t, stgOut)
	if len(want) != len(got) || normalizeMsg(want[0].Raw) != normalizeMsg(got[0].Raw) {
		t.Fatalf("cover from the template:\nppkit:\n%s\nstg:\n%s", got[0].Raw, want[0].Raw)
	}
	if !strings.Contains(string(got[0].Raw), "100% of the 3 patches:") {
		t.Fatalf("template variables not expanded:\n%s", got[0].Raw)
	}
}

// TestMailEditPatches: -E opens the editor on each patch as stg does; the result is stg's.
func TestMailEditPatches(t *testing.T) {
	dir := mailKernel(t)
	editor := filepath.Join(t.TempDir(), "edit-patch.sh")
	stgtest.WriteFile(t, filepath.Dir(editor), "edit-patch.sh", "#!/bin/sh\necho editing \"$1\"\nsed -i -e 's/so that the/so that the edited/' \"$1\"\n")
	os.Chmod(editor, 0o755)
	t.Setenv("GIT_EDITOR", editor)
	args := []string{"--to", "netdev", "-E", "net-foo-patch-number-1..net-foo-patch-number-2"}
	code, stdout, stderr := ppkit(t, append([]string{"mail", "--kernel", dir, "-m"}, args...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := readMbox(t, []byte(stdout))
	cmd := exec.Command("stg", append([]string{"mail", "--mbox"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_EDITOR="+editor+" >/dev/null")
	stgOut, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want := readMbox(t, stgOut)
	if len(got) != 2 || len(want) != 2 {
		t.Fatalf("ppkit %d, stg %d messages", len(got), len(want))
	}
	for i := range got {
		if !bytes.Contains(got[i].Raw, []byte("so that the edited")) || normalizeMsg(got[i].Raw) != normalizeMsg(want[i].Raw) {
			t.Fatalf("patch %d:\nppkit:\n%s\nstg:\n%s", i, got[i].Raw, want[i].Raw)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// msmtprc writes an msmtp configuration for the test server and returns its path.
func msmtprc(t *testing.T, addr string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	path := filepath.Join(t.TempDir(), "msmtprc")
	if err := os.WriteFile(path, []byte("defaults\nauth off\ntls off\naccount default\nhost "+host+"\nport "+port+"\nfrom jane@example.org\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// delivered checks what a server got: n messages, one second apart in order, no Bcc header,
// every envelope recipient in rcpt.
func delivered(t *testing.T, got []stgtest.Received, n int, rcpt func(i int, to []string) error) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("server received %d messages, want %d", len(got), n)
	}
	var prev time.Time
	for i, r := range got {
		m, err := mail.ReadMessage(bytes.NewReader(r.Data))
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get("Bcc") != "" {
			t.Fatalf("message %d has a Bcc header", i)
		}
		d, err := m.Header.Date()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if i > 0 && d.Sub(prev) != time.Second {
			t.Fatalf("message %d is dated %v after the previous one, want 1s", i, d.Sub(prev))
		}
		prev = d
		if err := rcpt(i, r.To); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
}

func historyRef(t *testing.T, dir string) string {
	t.Helper()
	return stgtest.Git(t, dir, "for-each-ref", "refs/ppkit")
}

// TestMailSendSMTPMsmtpReflect delivers the series to the real SMTP server on 127.0.0.1 over
// SMTP, then through the real msmtp configured against it, and reflects it to the sender only,
// which leaves the history as it was.
func TestMailSendSMTPMsmtpReflect(t *testing.T) {
	stgtest.Require(t, "msmtp")
	dir := mailKernel(t)
	cover := coverFile(t)
	srv := stgtest.StartSMTP(t, 0, "", "")
	base := []string{"mail", "--kernel", dir, "--prefix", "net-next", "--to", "netdev", "--cc", "davem", "--bcc", "audit@example.org", "-c", cover, "-a", "--yes"}

	// --reflect first: to the sender only, not a version.
	code, stdout, stderr := ppkit(t, append(base, "--version", "V3", "--reflect", "--smtp-server", srv.Addr)...)
	if code != 0 {
		t.Fatalf("reflect: exit %d: %s", code, stderr)
	}
	delivered(t, srv.Received(), 5, func(_ int, to []string) error {
		if strings.Join(to, ",") != "jane@example.org" {
			return fmt.Errorf("reflected to %v", to)
		}
		return nil
	})
	if h := historyRef(t, dir); h != "" || !strings.Contains(stdout, "not recorded") {
		t.Fatalf("reflect recorded a version: %q %q", h, stdout)
	}

	// SMTP.
	code, stdout, stderr = ppkit(t, append(base, "--version", "V3", "--send", "--smtp-server", srv.Addr)...)
	if code != 0 {
		t.Fatalf("send: exit %d: %s", code, stderr)
	}
	all := srv.Received()[5:]
	delivered(t, all, 5, func(_ int, to []string) error {
		if got := strings.Join(to, ","); got != "netdev@vger.kernel.org,davem@davemloft.net,audit@example.org" {
			return fmt.Errorf("envelope %s", got)
		}
		return nil
	})
	if !strings.Contains(stdout, "to 3 recipients") || !strings.Contains(stdout, "audit@example.org") {
		t.Fatalf("recipients not listed before sending:\n%s", stdout)
	}
	if historyRef(t, dir) == "" {
		t.Fatal("the send was not recorded in refs/ppkit/mail/master")
	}

	// msmtp as a sendmail-style program (stg's --smtp-server=/path ARGS); the version is the next.
	msmtp, _ := exec.LookPath("msmtp")
	rc := msmtprc(t, srv.Addr)
	code, stdout, stderr = ppkit(t, append(base, "--send", "--smtp-server="+msmtp+" -C "+rc)...)
	if code != 0 {
		t.Fatalf("msmtp send: exit %d: %s %s", code, stdout, stderr)
	}
	viaMsmtp := srv.Received()[10:]
	delivered(t, viaMsmtp, 5, func(_ int, to []string) error {
		if got := strings.Join(to, ","); got != "netdev@vger.kernel.org,davem@davemloft.net,audit@example.org" {
			return fmt.Errorf("envelope %s", got)
		}
		return nil
	})
	m, _ := mail.ReadMessage(bytes.NewReader(viaMsmtp[0].Data))
	if !strings.HasPrefix(m.Header.Get("Subject"), "[net-next PATCH V4 0/4]") {
		t.Fatalf("msmtp posting is %q, want V4", m.Header.Get("Subject"))
	}

	// git's sendemail.sendmailCmd, and a reflect after sends leaves the history alone.
	before := historyRef(t, dir)
	stgtest.Git(t, dir, "config", "sendemail.sendmailCmd", msmtp+" -C "+rc)
	code, _, stderr = ppkit(t, append(base, "--version", "V4", "--reflect")...)
	if code != 0 {
		t.Fatalf("reflect via sendemail.sendmailCmd: exit %d: %s", code, stderr)
	}
	delivered(t, srv.Received()[15:], 5, func(_ int, to []string) error {
		if strings.Join(to, ",") != "jane@example.org" {
			return fmt.Errorf("reflected to %v", to)
		}
		return nil
	})
	if historyRef(t, dir) != before {
		t.Fatal("reflect changed the history")
	}
}

// TestMailSendemailConfig reads git send-email's server keys.
func TestMailSendemailConfig(t *testing.T) {
	dir := mailKernel(t)
	srv := stgtest.StartSMTP(t, 0, "jane", "pw")
	t.Setenv(stgit.PasswordEnv, "pw")
	host, port, _ := net.SplitHostPort(srv.Addr)
	stgtest.Git(t, dir, "config", "sendemail.smtpServer", host)
	stgtest.Git(t, dir, "config", "sendemail.smtpServerPort", port)
	stgtest.Git(t, dir, "config", "sendemail.smtpUser", "jane")
	code, _, stderr := ppkit(t, "mail", "--kernel", dir, "--to", "netdev", "--send", "--yes", "net-foo-patch-number-1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if len(srv.Received()) != 1 || len(srv.Logins()) != 1 {
		t.Fatalf("received %d, logins %v", len(srv.Received()), srv.Logins())
	}
}

func TestMailSendAndResume(t *testing.T) {
	dir := mailKernel(t)
	t.Setenv("GIT_EDITOR", "true")
	srv := stgtest.StartSMTP(t, 0, "jane", "pw-from-env")
	t.Setenv(stgit.PasswordEnv, "pw-from-env")
	code, stdout, stderr := ppkit(t, "mail", "--kernel", dir, "--prefix", "net-next", "--version", "V3", "--to", "netdev", "--cc", "davem",
		"--send", "--yes", "--smtp-server", srv.Addr, "--smtp-user", "jane", "-e", "-a")
	if code == 0 || !strings.Contains(stderr, "placeholder") || len(srv.Received()) != 0 {
		t.Fatalf("stg's unedited cover was not refused: exit %d %s", code, stderr)
	}
	code, stdout, stderr = ppkit(t, "mail", "--kernel", dir, "--prefix", "net-next", "--version", "V3", "--to", "netdev", "--cc", "davem",
		"--send", "--yes", "--smtp-server", srv.Addr, "--smtp-user", "jane", "-c", coverFile(t), "-a")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stdout+stderr, "pw-from-env") {
		t.Fatal("the password was printed")
	}
	got := srv.Received()
	if len(got) != 5 {
		t.Fatalf("delivered %d messages", len(got))
	}
	threadedToCover(t, got)

	// A server that fails after 2 messages, then --resume delivers exactly the other 3.
	dir2 := mailKernel(t)
	bad := stgtest.StartSMTP(t, 2, "", "")
	code, _, stderr = ppkit(t, "mail", "--kernel", dir2, "--to", "netdev", "--send", "--yes", "--smtp-server", bad.Addr, "-c", coverFile(t), "-a")
	if code == 0 || strings.Count(strings.TrimSpace(stderr), "\n") > 5 || !strings.Contains(stderr, "after 2 of 5") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	bad.SetFailAfter(0)
	code, stdout, stderr = ppkit(t, "mail", "--kernel", dir2, "--resume", "--smtp-server", bad.Addr)
	if code != 0 || !strings.Contains(stdout, "remaining 3 of 5") {
		t.Fatalf("resume: exit %d %s %s", code, stdout, stderr)
	}
	if n := len(bad.Received()); n != 5 {
		t.Fatalf("server holds %d messages after resume, want 5", n)
	}
	threadedToCover(t, bad.Received())
}

// TestMailConfirmation: on a terminal, --send lists the recipients and sends only on "y".
func TestMailConfirmation(t *testing.T) {
	dir := mailKernel(t)
	srv := stgtest.StartSMTP(t, 0, "", "")
	savedTerm, savedIn := mailIsTerminal, mailStdin
	t.Cleanup(func() { mailIsTerminal, mailStdin = savedTerm, savedIn })
	mailIsTerminal = func() bool { return true }
	args := []string{"mail", "--kernel", dir, "--to", "netdev", "--cc", "davem", "--send", "--smtp-server", srv.Addr, "net-foo-patch-number-1"}
	mailStdin = strings.NewReader("n\n")
	code, stdout, stderr := ppkit(t, args...)
	if code == 0 || !strings.Contains(stderr, "not confirmed") || len(srv.Received()) != 0 ||
		!strings.Contains(stdout, "davem@davemloft.net, netdev@vger.kernel.org") || !strings.Contains(stdout, "Send them? [y/N]") {
		t.Fatalf("answer n: exit %d\n%s\n%s", code, stdout, stderr)
	}
	mailStdin = strings.NewReader("y\n")
	if code, _, stderr := ppkit(t, args...); code != 0 || len(srv.Received()) != 1 {
		t.Fatalf("answer y: exit %d %s; %d received", code, stderr, len(srv.Received()))
	}
}

func threadedToCover(t *testing.T, got []stgtest.Received) {
	t.Helper()
	seen := map[string]bool{}
	var cover string
	for i, r := range got {
		m, err := mail.ReadMessage(bytes.NewReader(r.Data))
		if err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get("Message-ID")
		if seen[id] {
			t.Fatalf("duplicate %s", id)
		}
		seen[id] = true
		if i == 0 {
			cover = id
		} else if m.Header.Get("In-Reply-To") != cover {
			t.Fatalf("message %d not threaded to the cover", i)
		}
	}
}

// TestMailBadInputChangesNothing: each bad input gives one line naming the fix; the
// repository (and the kept cover text) is as before and the server received nothing.
func TestMailBadInputChangesNothing(t *testing.T) {
	stgtest.Hermetic(t)
	stgtest.Require(t, "perl")
	dir := stgtest.KernelRepo(t)
	stgtest.AddKernelScripts(t, dir)
	stgtest.Stack(t, dir, stgtest.DefaultPatches(4))
	stgtest.Git(t, dir, "config", "mail.alias.netdev", "netdev@vger.kernel.org")
	stgtest.Git(t, dir, "config", "mail.alias.davem", `"David S. Miller" <davem@davemloft.net>`)
	// An unsigned patch, and one with a checkpatch error (trailing whitespace), both unapplied.
	stgtest.Stack(t, dir, []stgtest.Patch{
		{Name: "unsigned", Subject: "net: unsigned change", File: "net/core/page_pool.c", Line: "int unsigned_change;", NoSignoff: true},
		{Name: "ugly", Subject: "net: ugly change", File: "net/core/page_pool.c", Line: "int ugly_change; "},
	})
	stgtest.Stg(t, dir, "pop", "-n", "2")
	srv := stgtest.StartSMTP(t, 0, "", "")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	tmpl := filepath.Join(t.TempDir(), "bad.tmpl")
	stgtest.WriteFile(t, filepath.Dir(tmpl), "bad.tmpl", "From: %(sender)s\nSubject: [PATCH] %(shortdescr)s %(bogus)s\n\n%(diff)s\n")
	// A kept, edited cover text must survive every refusal.
	mdir := filepath.Join(dir, ".git", "ppkit", "mail", "master")
	stgtest.WriteFile(t, mdir, "cover-V7.txt", "From: Jane Dev <jane@example.org>\nSubject: [PATCH V7 0/4] kept text\n\nHours of work.\n")
	send := []string{"--send", "--yes", "--smtp-server", srv.Addr}
	p1 := "net-foo-patch-number-1"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no patch named", []string{"--to", "netdev"}, "give -a/--all"},
		{"unknown patch", []string{"--to", "netdev", p1 + "..nope"}, `no patch "nope"`},
		{"notes range, one end missing", []string{"--to", "netdev", "mm-dma_addr_to-struct-page..dma_attr"}, `no patch "mm-dma_addr_to-struct-page"`},
		{"unknown alias", []string{"--to", "netdev", "--cc", "dave-typo", "-a"}, "unknown mail alias"},
		{"missing To", []string{"--cc", "davem", "-a"}, "no To address"},
		{"unknown option", []string{"--to", "netdev", "--frobnicate", "-a"}, "unknown option --frobnicate"},
		{"password on the command line", []string{"--to", "netdev", "-p", "secret", "-a"}, "PPKIT_SMTP_PASSWORD"},
		{"no value", []string{"--to"}, "--to needs a value"},
		{"two modes", []string{"--to", "netdev", "-a", "--send", "--mbox"}, "do not go together"},
		{"bad template variable", []string{"--to", "netdev", "-t", tmpl, p1}, "Unknown patch template variable"},
		{"in-reply-to with no-thread", []string{"--to", "netdev", "--in-reply-to", "<x@y>", "--no-thread", p1}, "--in-reply-to does not go with --no-thread"},
		{"netdev style without cover", []string{"--to", "netdev", "--style", "netdev", "-a"}, "netdev wants a cover letter"},
		{"placeholder cover", append([]string{"--to", "netdev", "-e", "-a", "-v", "V3"}, send...), `placeholder "Series short description"`},
		{"no Signed-off-by", append([]string{"--to", "netdev", "unsigned"}, send...), "no Signed-off-by: Jane Dev <jane@example.org>; add it with 'stg edit --sign unsigned'"},
		{"checkpatch error", append([]string{"--to", "netdev", "ugly"}, send...), "checkpatch --strict finds"},
		{"no terminal, no --yes", []string{"--to", "netdev", p1, "--send", "--smtp-server", srv.Addr}, "add --yes"},
		{"sendmail -t", []string{"--to", "netdev", p1, "--send", "--yes", "--smtp-server", "/usr/bin/msmtp -t"}, "drop it"},
		{"no SMTP server", []string{"--to", "netdev", p1, "--send", "--yes", "--smtp-server", closed}, "connect to SMTP server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GIT_EDITOR", "true")
			before := stgtest.Snapshot(t, dir)
			code, _, stderr := ppkit(t, append([]string{"mail", "--kernel", dir}, tc.args...)...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			if code == 0 || !strings.Contains(last, tc.want) || strings.Contains(last, "stg mail: stg mail:") {
				t.Fatalf("exit %d, stderr %q; want a last line with %q", code, stderr, tc.want)
			}
			for _, l := range lines[:len(lines)-1] {
				// Only progress and findings may come before the error line.
				if !strings.HasPrefix(l, "checkpatch ") && !strings.HasPrefix(l, "cover letter text is kept") && !strings.HasPrefix(l, "[") && !strings.HasPrefix(l, "    ") && !strings.Contains(l, "recipients via") {
					t.Fatalf("stderr has more than the error line: %q", stderr)
				}
			}
			if tc.name != "placeholder cover" {
				if after := stgtest.Snapshot(t, dir); after != before {
					t.Fatal("the repository changed")
				}
			}
			if n := len(srv.Received()); n != 0 {
				t.Fatalf("the server received %d messages", n)
			}
			if data, _ := os.ReadFile(filepath.Join(mdir, "cover-V7.txt")); !strings.Contains(string(data), "Hours of work.") {
				t.Fatal("the kept cover text was lost")
			}
		})
	}
}

// TestMailHistoryInRef: the history is a ref that can be pushed and fetched; in a fresh clone
// that fetched it, the next version is numbered after it, starts from its cover and links it.
// An old .git/ppkit history is read when the ref does not exist.
func TestMailHistoryInRef(t *testing.T) {
	dir := mailKernel(t)
	srv := stgtest.StartSMTP(t, 0, "", "")
	code, _, stderr := ppkit(t, "mail", "--kernel", dir, "--to", "netdev", "-v", "v2", "-c", coverFile(t), "-a", "--send", "--yes", "--smtp-server", srv.Addr)
	if code != 0 {
		t.Fatalf("send: exit %d: %s", code, stderr)
	}
	first, err := mail.ReadMessage(bytes.NewReader(srv.Received()[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	coverID := first.Header.Get("Message-ID")
	bare := filepath.Join(t.TempDir(), "shared.git")
	stgtest.Git(t, dir, "init", "-q", "--bare", bare)
	stgtest.Git(t, dir, "push", "-q", bare, "master", "refs/ppkit/*:refs/ppkit/*")
	clone := filepath.Join(t.TempDir(), "clone")
	stgtest.Git(t, filepath.Dir(clone), "clone", "-q", bare, clone)
	stgtest.Git(t, clone, "fetch", "-q", "origin", "refs/ppkit/*:refs/ppkit/*")
	// The clone has the same stack to post.
	stgtest.Git(t, clone, "config", "mail.alias.netdev", "netdev@vger.kernel.org")
	stgtest.Stack(t, clone, []stgtest.Patch{{Name: "again", Subject: "net: again", File: "net/core/page_pool.c", Line: "int again;"}})
	t.Setenv("GIT_EDITOR", "true")
	code, stdout, stderr := ppkit(t, "mail", "--kernel", clone, "--to", "netdev", "-e", "-a", "-m")
	if code != 0 {
		t.Fatalf("clone: exit %d: %s", code, stderr)
	}
	msgs := readMbox(t, []byte(stdout))
	if msgs[0].Subject != "[PATCH v3] page_pool: return pages via the skb" {
		t.Fatalf("clone's next cover %q", msgs[0].Subject)
	}
	if link := "v2: https://lore.kernel.org/r/" + strings.Trim(coverID, "<>"); !bytes.Contains(msgs[0].Raw, []byte(link)) ||
		!bytes.Contains(msgs[0].Raw, []byte("The pages come back to their pool.")) || !bytes.Contains(msgs[0].Raw, []byte("Changes in v3:")) {
		t.Fatalf("v3 cover does not start from v2's with a changelog and link %s:\n%s", link, msgs[0].Raw)
	}

	// Legacy: .git/ppkit/mail/BRANCH/history.json without the ref.
	legacy := mailKernel(t)
	stgtest.WriteFile(t, filepath.Join(legacy, ".git", "ppkit", "mail", "master"), "history.json",
		`[{"version":"V5","date":"2025-01-02T03:04:05Z","cover_message_id":"<old@stgit>","subjects":["x"],"to":["netdev@vger.kernel.org"]}]`)
	code, stdout, stderr = ppkit(t, "mail", "--kernel", legacy, "--to", "netdev", "-a", "-m", "--changelog", coverFile(t))
	if code != 0 || !strings.Contains(stdout, "[PATCH V6 0/4]") || !strings.Contains(stdout, "V5: https://lore.kernel.org/r/old@stgit") {
		t.Fatalf("legacy history not read: exit %d %s\n%s", code, stderr, stdout)
	}
}

func TestMailAutoCc(t *testing.T) {
	stgtest.Hermetic(t)
	stgtest.Require(t, "perl")
	dir := stgtest.KernelRepo(t)
	stgtest.AddKernelScripts(t, dir)
	stgtest.Stack(t, dir, stgtest.DefaultPatches(2))
	out := filepath.Join(t.TempDir(), "out.mbox")
	code, _, stderr := ppkit(t, "mail", "--kernel", dir, "--to", "linux-mm@kvack.org", "--auto-cc", "--mbox="+out, "-c", coverFile(t), "-a")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	data, _ := os.ReadFile(out)
	for i, m := range readMbox(t, data) {
		cc := strings.Join(m.Cc, ", ")
		if !strings.Contains(cc, "davem@davemloft.net") || !strings.Contains(cc, "netdev@vger.kernel.org") {
			t.Errorf("message %d Cc %q lacks the MAINTAINERS entries", i, cc)
		}
		if strings.Contains(cc, "jane@example.org") {
			t.Errorf("message %d Cc's the sender", i)
		}
	}
}

// TestMailArgs checks stg's spellings: --opt=value and --opt value, short forms, grouped
// flags, unambiguous prefixes, options after patches, and "--".
func TestMailArgs(t *testing.T) {
	a, _, err := parseMailArgs([]string{"--prefix=net-next", "-vV3", "-ae", "--to", "netdev", "p1..p2", "-E", "-t", "tmpl", "--in-reply-to=<x@y>", "--no-thr", "--sleep=2", "-m", "--auto", "-c", "c.txt", "-T", "--", "-odd-name"})
	if err != nil {
		t.Fatal(err)
	}
	if a.prefix != "net-next" || a.version != "V3" || !a.all || !a.editCover || strings.Join(a.to, ",") != "netdev" ||
		!a.editPatches || a.template != "tmpl" || a.inReplyTo != "<x@y>" || !a.noThread || a.sleep != 2 || !a.mbox || a.mboxFile != "" ||
		!a.auto || a.cover != "c.txt" || a.tls != "starttls" || strings.Join(a.patches, ",") != "p1..p2,-odd-name" {
		t.Fatalf("%+v", a)
	}
	a, _, err = parseMailArgs([]string{"--mbox=out.mbox", "--smtp-tls=tls", "--version", "v2"})
	if err != nil || a.mboxFile != "out.mbox" || a.tls != "tls" || a.version != "v2" {
		t.Fatalf("%+v %v", a, err)
	}
	for _, bad := range [][]string{{"--edit"}, {"--sleep=x"}, {"-Z"}, {"--all=yes"}, {"-v"}} {
		if _, _, err := parseMailArgs(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	var out bytes.Buffer
	mailUsage(&out, mailOptions(&mailArgs{}))
	for _, s := range []string{"-e, --edit-cover", "-E, --edit-patches", "-v, --version=VERSION", "-t, --template=FILE", "--in-reply-to=REFID", "--no-thread", "--auto ", "-s, --sleep=SECONDS", "-m, --mbox[=FILE]", "[ppkit] send the series", "--reflect", "dry run by default", "--style"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help lacks %q", s)
		}
	}
}

// TestMailStgOptionsPassThrough: stg's threading and Cc options give stg's messages.
func TestMailStgOptionsPassThrough(t *testing.T) {
	dir := mailKernel(t)
	ps := []stgtest.Patch{{Name: "acked", Subject: "net: acked change", File: "net/core/page_pool.c", Line: "int acked;",
		Body: "Count it.\n\nAcked-by: Ilias Apalodimas <ilias.apalodimas@linaro.org>\nReported-by: Tariq Toukan <tariqt@nvidia.com>"}}
	stgtest.Stack(t, dir, ps)
	for _, args := range [][]string{
		{"--to", "netdev", "--auto", "-a"},
		{"--to", "netdev", "--no-thread", "-a"},
		{"--to", "netdev", "--in-reply-to=<20211001.1234@example.org>", "-a"},
		{"--to", "netdev", "--unrelated", "-a"},
		{"--to", "netdev", "--cc", "davem", "--prefix", "RFC net-next", "-v", "2", "..net-foo-patch-number-2", "acked"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := ppkit(t, append([]string{"mail", "--kernel", dir, "-m"}, args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			cmd := exec.Command("stg", append([]string{"mail", "--mbox"}, args...)...)
			cmd.Dir = dir
			stgOut, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			got, want := readMbox(t, []byte(stdout)), readMbox(t, stgOut)
			if len(got) != len(want) {
				t.Fatalf("ppkit %d messages, stg %d", len(got), len(want))
			}
			for i := range got {
				if normalizeMsg(got[i].Raw) != normalizeMsg(want[i].Raw) {
					t.Fatalf("message %d:\nppkit:\n%s\nstg:\n%s", i, normalizeMsg(got[i].Raw), normalizeMsg(want[i].Raw))
				}
			}
		})
	}
}

// TestMailV2Series: the series in patches/ (V2), imported with the real stg onto ppkit's import
// of linux-source-5.10, gives `[net-next PATCH V2 n/N]` subjects in ppkit's dry run with the
// development notes' options, and the cover is patches/cover-letter with its "Changes since V1".
func TestMailV2Series(t *testing.T) {
	src, err := harness.LinuxSourceTree(context.Background(), "", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "linux")
	stgtest.Git(t, filepath.Dir(dir), "clone", "-q", "--shared", src, dir)
	stgtest.Git(t, dir, "config", "user.name", "ppkit developer")
	stgtest.Git(t, dir, "config", "user.email", "dev@ppkit.invalid")
	root := checkoutRoot(t)
	stgtest.Stg(t, dir, "init")
	stgtest.Stg(t, dir, "import", "--series", filepath.Join(root, "patches", "series"))
	s, err := stgit.ReadSeries(filepath.Join(root, "patches"))
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := ppkit(t, "mail", "--kernel", dir, "--all", "-v", "V2", "--prefix", "net-next",
		"--to", "netdev@vger.kernel.org", "--cover", filepath.Join(root, "patches", "cover-letter"), "--mbox")
	if code != 0 {
		t.Fatalf("ppkit mail: exit %d: %s", code, stderr)
	}
	msgs := readMbox(t, []byte(stdout))
	if len(msgs) != len(s.Patches)+1 {
		t.Fatalf("%d messages, want a cover and %d patches", len(msgs), len(s.Patches))
	}
	for i, m := range msgs {
		want := fmt.Sprintf("[net-next PATCH V2 %d/%d] ", i, len(s.Patches))
		if !strings.HasPrefix(m.Subject, want) {
			t.Errorf("message %d: subject %q, want %q…", i, m.Subject, want)
		}
	}
	if cover := string(msgs[0].Raw); !strings.Contains(cover, "\nChanges since V1\n----------------\n") {
		t.Errorf("the cover has no \"Changes since V1\" section:\n%s", cover)
	}
}
