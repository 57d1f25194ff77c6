//go:build e2e

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/stgit"
	"github.com/ppkit/ppkit/stgit/stgtest"
)

// mailKernel is the acceptance set-up: a scratch kernel with a 4-patch stg stack and the
// aliases in git config mail.alias.*.
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

func TestMailDryRunMatchesStgMail(t *testing.T) {
	dir := mailKernel(t)
	out := filepath.Join(t.TempDir(), "out.mbox")
	code, stdout, stderr := ppkit(t, "mail", "--kernel", dir, "--prefix", "net-next", "--version", "V3", "--to", "netdev", "--cc", "davem", "--mbox", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := readMbox(t, data)
	if len(got) != 5 || !strings.HasPrefix(got[0].Subject, "[net-next PATCH V3 0/4] ") {
		t.Fatalf("%d messages, cover %q", len(got), got[0].Subject)
	}
	if !strings.Contains(stdout, "dry run: 5 messages") || !strings.Contains(stdout, "To: netdev@vger.kernel.org") {
		t.Fatalf("summary:\n%s", stdout)
	}
	cmd := exec.Command("stg", "mail", "--prefix=net-next", "--version=V3", "--to", "netdev", "--cc", "davem", "--mbox", "-a")
	cmd.Dir = dir
	stgOut, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want := readMbox(t, stgOut)
	if len(want) != 4 {
		t.Fatalf("stg wrote %d messages", len(want))
	}
	for i, w := range want {
		g := got[i+1]
		if g.Subject != w.Subject || g.From != w.From || strings.Join(g.To, ",") != strings.Join(w.To, ",") || strings.Join(g.Cc, ",") != strings.Join(w.Cc, ",") {
			t.Errorf("patch %d:\n ppkit %q %q %q %q\n   stg %q %q %q %q", i+1, g.Subject, g.From, g.To, g.Cc, w.Subject, w.From, w.To, w.Cc)
		}
	}

	code, stdout, stderr = ppkit(t, "mail", "--kernel", dir, "--prefix", "net-next", "--version", "V3", "--to", "netdev", "--cc", "davem", "--mbox", out, "--style", "netdev", "--json")
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

func TestMailSendAndResume(t *testing.T) {
	dir := mailKernel(t)
	srv := stgtest.StartSMTP(t, 0, "jane", "pw-from-env")
	t.Setenv(stgit.PasswordEnv, "pw-from-env")
	code, stdout, stderr := ppkit(t, "mail", "--kernel", dir, "--prefix", "net-next", "--version", "V3", "--to", "netdev", "--cc", "davem",
		"--send", "--smtp-server", srv.Addr, "--smtp-user", "jane")
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
	code, _, stderr = ppkit(t, "mail", "--kernel", dir2, "--to", "netdev", "--send", "--smtp-server", bad.Addr)
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

func TestMailBadInputChangesNothing(t *testing.T) {
	dir := mailKernel(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown alias", []string{"--to", "netdev", "--cc", "dave-typo"}, "unknown mail alias"},
		{"missing To", []string{"--cc", "davem"}, "no To address"},
		{"no SMTP server", []string{"--to", "netdev", "--send", "--smtp-server", closed}, "connect to SMTP server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := stgtest.Snapshot(t, dir)
			code, _, stderr := ppkit(t, append([]string{"mail", "--kernel", dir}, tc.args...)...)
			if code == 0 || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want one line with %q", code, stderr, tc.want)
			}
			if stgtest.Snapshot(t, dir) != before {
				t.Fatal("the repository changed")
			}
		})
	}
}

func TestMailAutoCc(t *testing.T) {
	stgtest.Hermetic(t)
	stgtest.Require(t, "perl")
	dir := stgtest.KernelRepo(t)
	stgtest.AddKernelScripts(t, dir)
	stgtest.Stack(t, dir, stgtest.DefaultPatches(2))
	out := filepath.Join(t.TempDir(), "out.mbox")
	code, _, stderr := ppkit(t, "mail", "--kernel", dir, "--to", "linux-mm@kvack.org", "--auto-cc", "--mbox", out)
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
