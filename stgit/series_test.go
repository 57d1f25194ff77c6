package stgit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSeries(t *testing.T) {
	for _, tc := range []struct {
		in      string
		base    string
		patches string
		err     string
	}{
		{"# This series applies on GIT commit 2c82b259aa\np1\np2 # note\n\n", "2c82b259aa", "p1,p2", ""},
		{"# This series applies on Git commit abcdef0\na -p1\n", "abcdef0", "a", ""},
		{"a\na\n", "", "", "twice"},
		{"../etc/passwd\n", "", "", "next to the series"},
		{"a -p0\n", "", "", "strip level"},
	} {
		s, err := ParseSeries(strings.NewReader(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || s.Base != tc.base || strings.Join(s.Patches, ",") != tc.patches {
			t.Errorf("%q: %+v %v", tc.in, s, err)
		}
	}
}

func FuzzParseSeries(f *testing.F) {
	f.Add("# This series applies on GIT commit 2c82b259aa\np1\np2\n")
	f.Add("a -p1\n# c\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSeries(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, p := range s.Patches {
			if p == "" || strings.Contains(p, "#") || strings.Contains(p, "..") {
				t.Fatalf("bad patch name %q", p)
			}
		}
	})
}

const stgPatch = `net: foo: patch number 1

From: Jane Dev <jane@example.org>

Long description 1.

Signed-off-by: Jane Dev <jane@example.org>
---
 net/core/skbuff.c |    1 +
 1 file changed, 1 insertion(+)

diff --git a/net/core/skbuff.c b/net/core/skbuff.c
index d072066..42f77ca 100644
--- a/net/core/skbuff.c
+++ b/net/core/skbuff.c
@@ -1,3 +1,4 @@
 int a;
 int b;
 int c;
+int x1;
@@ -10,3 +11,4 @@ int f(void)
 int a;
 int b;
 int c;
+int x1;
`

func TestParsePatchFile(t *testing.T) {
	p, err := ParsePatchFile([]byte(stgPatch))
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "net: foo: patch number 1" || p.Author != "Jane Dev <jane@example.org>" ||
		!strings.HasPrefix(p.Body, "Long description 1.") || !strings.HasSuffix(p.Body, "Signed-off-by: Jane Dev <jane@example.org>") {
		t.Fatalf("%+v", p)
	}
	if len(p.Hunks) != 2 || p.Hunks[1].OldStart != 10 || p.Hunks[1].Number != 2 || p.Files[0] != "net/core/skbuff.c" {
		t.Fatalf("hunks %+v", p.Hunks)
	}
	mbox := "From 42f77ca Mon Sep 17 00:00:00 2001\nFrom: Jane Dev <jane@example.org>\nSubject: [PATCH net-next v3 1/4] net: foo: bar\n\nBody.\n---\n" + stgPatch[strings.Index(stgPatch, "diff --git"):]
	p, err = ParsePatchFile([]byte(mbox))
	if err != nil || p.Subject != "net: foo: bar" || p.Body != "Body." {
		t.Fatalf("%+v %v", p, err)
	}
	if _, err := ParsePatchFile([]byte("just text\n")); err == nil {
		t.Fatal("patch without diff accepted")
	}
}

func FuzzParsePatchFile(f *testing.F) {
	f.Add([]byte(stgPatch))
	f.Add([]byte("From x\nSubject: [PATCH] a: b\n\ndiff --git a/x b/x\n@@ -1 +1 @@\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePatchFile(data)
		if err != nil {
			return
		}
		if p.Subject == "" || len(p.Files) == 0 {
			t.Fatalf("accepted patch without subject or files: %+v", p)
		}
		for _, h := range p.Hunks {
			if h.Number < 1 || h.File == "" {
				t.Fatalf("bad hunk %+v", h)
			}
		}
	})
}

// TestReadDesign: the design is the first line that is not blank or a comment; a missing file
// or one without such a line is an error naming the file and what to write.
func TestReadDesign(t *testing.T) {
	for _, tc := range []struct{ file, want, err string }{
		{"upstream\n", "upstream", ""},
		{"# V2\n\n  series  \nupstream\n", "series", ""},
		{"# nothing\n", "", "names no design"},
		{"-", "", "does not say its design"},
	} {
		dir := t.TempDir()
		if tc.file != "-" {
			os.WriteFile(filepath.Join(dir, DesignFile), []byte(tc.file), 0o644)
		}
		got, err := ReadDesign(dir)
		if got != tc.want || (tc.err == "") != (err == nil) || err != nil && (!strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), DesignFile)) {
			t.Errorf("%q: %q, %v; want %q, %q", tc.file, got, err, tc.want, tc.err)
		}
	}
}
