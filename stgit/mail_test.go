package stgit

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
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
