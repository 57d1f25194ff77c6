package stgit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	msgIDRe    = regexp.MustCompile(`<\d+\.\d+\.\d+\.stgit@[^>]+>`)
	dateRe     = regexp.MustCompile(`(?m)^Date: .*$`)
	fromLineRe = regexp.MustCompile(`(?m)^From nobody .*$`)
)

// normalize replaces what differs between two runs: dates and Message-IDs (numbered in order).
func normalize(mbox []byte) []byte {
	ids := map[string]string{}
	out := msgIDRe.ReplaceAllFunc(mbox, func(id []byte) []byte {
		if _, ok := ids[string(id)]; !ok {
			ids[string(id)] = fmt.Sprintf("<ID%d@stgit>", len(ids)+1)
		}
		return []byte(ids[string(id)])
	})
	out = dateRe.ReplaceAll(out, []byte("Date: DATE"))
	return fromLineRe.ReplaceAll(out, []byte("From nobody DATE"))
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n-%s\n+%s\n", i+1, wl, gl)
			if b.Len() > 2000 {
				break
			}
		}
	}
	return b.String()
}

func TestNextVersion(t *testing.T) {
	for in, want := range map[string]string{"V3": "V4", "v1": "v2", "2": "3", "": "v2", "v9": "v10", "RFC": "RFC2"} {
		if got := NextVersion(in); got != want {
			t.Errorf("NextVersion(%q) = %q, want %q", in, got, want)
		}
	}
	if got := versionFor(StyleNetdev, "V3"); got != "v3" {
		t.Errorf("netdev version %q", got)
	}
}

func FuzzParseMbox(f *testing.F) {
	f.Add([]byte("From nobody Mon\nSubject: a\nMessage-ID: <x>\nBcc: a@b\n\nbody\n\nFrom nobody Tue\nSubject: b\nMessage-ID: <y>\n\nb\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := ParseMbox(data)
		if err != nil {
			return
		}
		for _, m := range msgs {
			if bytes.Contains(bytes.ToLower(m.Raw), []byte("\nbcc:")) || bytes.HasPrefix(bytes.ToLower(m.Raw), []byte("bcc:")) {
				head, _, _ := bytes.Cut(m.Raw, []byte("\n\n"))
				if bytes.Contains(bytes.ToLower(append([]byte("\n"), head...)), []byte("\nbcc:")) {
					t.Fatalf("Bcc header kept: %q", m.Raw)
				}
			}
		}
	})
}

// TestGoldenMboxStructure reads the goldens of real stg output without running stg: every
// golden parses, patches reply to the cover, and ParseMbox takes stg's Bcc header out.
func TestGoldenMboxStructure(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "stg-mail", "*.mbox"))
	if len(files) < 3 {
		t.Fatalf("goldens missing: %v", files)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, mbox, _ := bytes.Cut(data, []byte("\n"))
		msgs, err := ParseMbox(mbox)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for i, m := range msgs {
			if bytes.Contains(m.Raw, []byte("\nBcc:")) {
				t.Errorf("%s: message %d keeps Bcc", f, i)
			}
			if i > 0 && m.InReplyTo != msgs[0].MessageID {
				t.Errorf("%s: message %d replies to %q, not %q", f, i, m.InReplyTo, msgs[0].MessageID)
			}
		}
		if bytes.Contains(mbox, []byte("\nBcc: ")) {
			if len(msgs[0].bcc) == 0 {
				t.Errorf("%s: the Bcc addresses were not kept for the envelope", f)
			}
		}
	}
}

// TestSelectPatches checks stg 0.19's patch selection; the expectations are what stg's own
// parse_patches returns for a stack a b c applied, d e unapplied.
func TestSelectPatches(t *testing.T) {
	ps := []StackPatch{{Name: "a", Applied: true}, {Name: "b", Applied: true}, {Name: "c", Applied: true, Top: true}, {Name: "d"}, {Name: "e"}}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"b"}, "b"},
		{[]string{"a..c"}, "a b c"},
		{[]string{"..b"}, "a b"},
		{[]string{"b.."}, "b c"},
		{[]string{"..d"}, "d"},
		{[]string{"d.."}, "d e"},
		{[]string{"c..a"}, "c b a"},
		{[]string{"e..b"}, "e d c b"},
		{[]string{"a..e"}, "a b c d e"},
		{[]string{".."}, "a b c"},
		{[]string{"d", "a"}, "d a"},
		{[]string{"b..c", "e"}, "b c e"},
		{[]string{"c..c"}, "c"},
	} {
		got, err := SelectPatches(ps, tc.args, false)
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("%v: %v %v, want %s", tc.args, got, err, tc.want)
		}
	}
	if got, err := SelectPatches(ps, nil, true); err != nil || strings.Join(got, " ") != "a b c" {
		t.Errorf("--all: %v %v", got, err)
	}
	for _, tc := range []struct {
		args []string
		all  bool
		want string
	}{
		{nil, false, "give -a/--all"},
		{[]string{"a..x"}, false, `no patch "x"`},
		{[]string{"a", "a..b"}, false, "named twice"},
		{[]string{"a..b..c"}, false, "malformed"},
		{[]string{"a"}, true, "do not go together"},
	} {
		_, err := SelectPatches(ps, tc.args, tc.all)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v all=%v: %v, want one line with %q", tc.args, tc.all, err, tc.want)
		}
	}
}

func TestIsStgTemplate(t *testing.T) {
	for text, want := range map[string]bool{
		"From: %(sender)s\nSubject: [PATCH] x\n\nbody\n":   true,
		"Subject: [PATCH%(nspace)s%(number)s] x\n\nbody\n": true,
		"page_pool: return pages\n\nbody\n":                false,
		"net: fix: the thing\n\nbody\n":                    false, // a title, not a header block with Subject
		"To: a@b\n\nbody\n":                                false,
	} {
		if got := IsStgTemplate(text); got != want {
			t.Errorf("IsStgTemplate(%q) = %v", text, got)
		}
	}
}

func TestSetDatesOneSecondApart(t *testing.T) {
	p := &Posting{Messages: []Message{
		{Raw: []byte("Subject: a\nDate: x\nMessage-ID: <1>\n\nbody\n")},
		{Raw: []byte("Subject: b\nDate: x\nMessage-ID: <2>\n\nbody\n")},
		{Raw: []byte("Subject: c\nDate: x\nMessage-ID: <3>\n\nbody\n")},
	}}
	now := time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)
	p.SetDates(now)
	for i, want := range []string{"Fri, 04 Dec 2026 17:59:58 +0000", "Fri, 04 Dec 2026 17:59:59 +0000", "Fri, 04 Dec 2026 18:00:00 +0000"} {
		if !bytes.Contains(p.Messages[i].Raw, []byte("\nDate: "+want+"\n")) || bytes.Count(p.Messages[i].Raw, []byte("Date:")) != 1 {
			t.Errorf("message %d:\n%s", i, p.Messages[i].Raw)
		}
	}
}

func TestCommandErrorWrapsOnce(t *testing.T) {
	e := &CommandError{Args: []string{"stg", "mail", "--mbox"}, Stderr: "stg mail: Unknown patch name: x\n", Err: errors.New("exit status 2")}
	if got := e.Error(); got != "stg mail: Unknown patch name: x" {
		t.Fatalf("%q", got)
	}
}
