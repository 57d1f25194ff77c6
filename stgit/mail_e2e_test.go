//go:build e2e

package stgit

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/stgit/stgtest"
)

var update = flag.Bool("update", false, "rewrite stgit/testdata/stg-mail/*.mbox from the real stg 0.19")

// mailCase is one golden posting: the real `stg mail` arguments and the equivalent ppkit options.
type mailCase struct {
	name     string
	patches  []stgtest.Patch
	config   [][2]string // git config key, value
	stgArgs  []string    // after `stg mail --mbox`
	cover    bool        // stg ran with -e, so the golden has a cover
	opts     func(*MailOptions)
	compared string // "all": every field of every message; "patches": Subject/From/To/Cc of patches
}

var aliases = [][2]string{
	{"mail.alias.netdev", "netdev@vger.kernel.org"},
	{"mail.alias.davem", `"David S. Miller" <davem@davemloft.net>`},
}

var mailCases = []mailCase{
	{
		name:    "net-next-v3-cover",
		patches: stgtest.DefaultPatches(4),
		config:  aliases,
		stgArgs: []string{"--prefix=net-next", "--version=V3", "--to", "netdev", "--cc", "davem", "-e", "-a"},
		cover:   true,
		opts: func(o *MailOptions) {
			o.Prefix, o.Version, o.To, o.Cc = "net-next", "V3", []string{"netdev"}, []string{"davem"}
			// As stg ran: -e with an editor that changes nothing.
			o.All, o.EditCover, o.Editor = true, true, "true"
		},
		compared: "all",
	},
	{
		// No cover asked: none in stg, none in ppkit; patches thread to the first patch.
		name:    "net-next-v3-all",
		patches: stgtest.DefaultPatches(4),
		config:  aliases,
		stgArgs: []string{"--prefix=net-next", "--version=V3", "--to", "netdev", "--cc", "davem", "-a"},
		opts: func(o *MailOptions) {
			o.Prefix, o.Version, o.To, o.Cc = "net-next", "V3", []string{"netdev"}, []string{"davem"}
			o.All = true
		},
		compared: "all",
	},
	{
		// Folded Cc, a patch by another author (From: line in the body), stgit.autobcc and
		// stgit.mail.prefix from git config, ten patches (zero-padded numbers).
		name: "folded-cc-autobcc-10",
		patches: func() []stgtest.Patch {
			ps := stgtest.DefaultPatches(10)
			ps[1].Author = "Ilias Apalodimas <ilias.apalodimas@linaro.org>"
			ps[4].Body += "\n\n100% of the pages come back."
			return ps
		}(),
		config: append([][2]string{
			{"stgit.autobcc", "audit@example.org"},
			{"stgit.mail.prefix", "RFC net-next"},
			{"mail.alias.willy", "Matthew Wilcox <willy@infradead.org>"},
		}, aliases...),
		stgArgs: []string{"--version=v2", "--to", "netdev", "--to", "linux-mm@kvack.org",
			"--cc", "davem", "--cc", "willy", "--cc", "Jesper Dangaard Brouer <hawk@kernel.org>",
			"--cc", "Ilias Apalodimas <ilias.apalodimas@linaro.org>", "--cc", "kuba@kernel.org",
			"--cc", "Eric Dumazet <edumazet@google.com>", "--cc", "pabeni@redhat.com", "-e", "-a"},
		cover: true,
		opts: func(o *MailOptions) {
			o.Version = "v2"
			o.To = []string{"netdev", "linux-mm@kvack.org"}
			o.Cc = []string{"davem", "willy", "Jesper Dangaard Brouer <hawk@kernel.org>",
				"Ilias Apalodimas <ilias.apalodimas@linaro.org>", "kuba@kernel.org",
				"Eric Dumazet <edumazet@google.com>", "pabeni@redhat.com"}
			o.All, o.EditCover, o.Editor = true, true, "true"
		},
		compared: "all",
	},
}

// mailRepo builds the scratch kernel with the case's stack and config.
func mailRepo(t *testing.T, patches []stgtest.Patch, config [][2]string) *Repo {
	t.Helper()
	stgtest.Hermetic(t)
	dir := stgtest.KernelRepo(t)
	stgtest.Stack(t, dir, patches)
	for _, kv := range config {
		stgtest.Git(t, dir, "config", kv[0], kv[1])
	}
	r, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func realStgMail(t *testing.T, r *Repo, args []string) []byte {
	t.Helper()
	cmd := exec.Command("stg", append([]string{"mail", "--mbox"}, args...)...)
	cmd.Dir = r.Dir
	cmd.Env = append(os.Environ(), "GIT_EDITOR=true")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("stg mail %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// TestGoldenStgMail checks that the goldens are what the installed stg 0.19 writes (rewrite them
// with -update) and that ppkit's stg-style posting equals them field by field.
func TestGoldenStgMail(t *testing.T) {
	ctx := context.Background()
	for _, tc := range mailCases {
		t.Run(tc.name, func(t *testing.T) {
			r := mailRepo(t, tc.patches, tc.config)
			golden := filepath.Join("testdata", "stg-mail", tc.name+".mbox")
			real := normalize(realStgMail(t, r, tc.stgArgs))
			if *update {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				header := "# stg mail --mbox " + strings.Join(tc.stgArgs, " ") + "\n"
				if err := os.WriteFile(golden, append([]byte(header), real...), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			data, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./stgit -run TestGoldenStgMail -update)", err)
			}
			_, want, _ := bytes.Cut(data, []byte("\n"))
			if !bytes.Equal(real, want) {
				t.Fatalf("the installed stg no longer writes %s:\n%s", golden, lineDiff(string(want), string(real)))
			}
			wantMsgs, err := ParseMbox(want)
			if err != nil {
				t.Fatal(err)
			}

			o := &MailOptions{}
			prof, err := r.LoadProfile(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			o.Profile = *prof
			tc.opts(o)
			post, err := r.Prepare(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseMbox(normalize(post.Mbox()))
			if err != nil {
				t.Fatal(err)
			}
			wantN := len(tc.patches)
			if tc.cover {
				wantN++
			}
			if len(got) != wantN || post.HasCover != tc.cover {
				t.Fatalf("ppkit built %d messages (cover %v) for %d patches", len(got), post.HasCover, len(tc.patches))
			}
			if len(got) != len(wantMsgs) {
				t.Fatalf("%d messages, golden has %d", len(got), len(wantMsgs))
			}
			for i := range got {
				g, w := got[i], wantMsgs[i]
				for _, f := range []struct{ name, got, want string }{
					{"Subject", g.Subject, w.Subject},
					{"From", g.From, w.From},
					{"To", strings.Join(g.To, ", "), strings.Join(w.To, ", ")},
					{"Cc", strings.Join(g.Cc, ", "), strings.Join(w.Cc, ", ")},
				} {
					if f.got != f.want {
						t.Errorf("message %d %s:\n got %q\nwant %q", i, f.name, f.got, f.want)
					}
				}
				if tc.compared == "all" {
					if g.InReplyTo != w.InReplyTo {
						t.Errorf("message %d In-Reply-To %q, want %q", i, g.InReplyTo, w.InReplyTo)
					}
					// ParseMbox removed stg's Bcc header from w: the one intended difference.
					if !bytes.Equal(w.Raw, g.Raw) {
						t.Errorf("message %d differs from stg's:\n%s", i, lineDiff(string(w.Raw), string(g.Raw)))
					}
				}
			}
			if bytes.Contains(post.Mbox(), []byte("\nBcc:")) {
				t.Error("ppkit's mbox carries a Bcc header")
			}
			if tc.name == "folded-cc-autobcc-10" {
				if !bytes.Contains(want, []byte("\nBcc: audit@example.org")) {
					t.Error("golden lost stg's Bcc header (the leak ppkit removes)")
				}
				if strings.Join(post.Bcc, ",") == "" || !strings.Contains(strings.Join(post.Bcc, ","), "audit@example.org") {
					t.Errorf("stgit.autobcc not kept for the envelope: %v", post.Bcc)
				}
			}
		})
	}
}

func TestMailNetdevStyle(t *testing.T) {
	ctx := context.Background()
	r := mailRepo(t, stgtest.DefaultPatches(4), aliases)
	prof, _ := r.LoadProfile(ctx, "")
	o := &MailOptions{Profile: *prof}
	o.Prefix, o.Version, o.To, o.Cc, o.Style = "net-next", "V3", []string{"netdev"}, []string{"davem"}, StyleNetdev
	o.All = true
	if _, err := r.Prepare(ctx, o); err == nil || !strings.Contains(err.Error(), "netdev wants a cover letter") {
		t.Fatalf("netdev style without a cover: %v", err)
	}
	o.CoverTemplate = writeCover(t, "page_pool: return pages via the skb\n\nThe pages come back.\n")
	post, err := r.Prepare(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range post.Messages {
		want := fmt.Sprintf("[PATCH net-next v3 %d/4] ", i)
		if !strings.HasPrefix(m.Subject, want) {
			t.Errorf("subject %q, want prefix %q", m.Subject, want)
		}
		if i > 0 && m.InReplyTo != post.Messages[0].MessageID {
			t.Errorf("patch %d replies to %q, not the cover", i, m.InReplyTo)
		}
	}
}

// writeCover writes a cover file (ppkit's form: title line, blank line, body) and returns its path.
func writeCover(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cover.txt")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
