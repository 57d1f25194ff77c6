package procedure

import (
	"os"
	"strings"
	"testing"
)

func TestInterfaceCountersCmd(t *testing.T) {
	if !strings.Contains(interfaceCountersCmd("eth1"), "/sys/class/net/eth1/statistics") {
		t.Errorf("command %q", interfaceCountersCmd("eth1"))
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"eth1": "eth1", "": "''", "a b": "'a b'", "it's": `'it'\''s'`, "$(x)": "'$(x)'"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestParseTraceStats(t *testing.T) {
	in := "entries: 10\noverrun: 3\ncommit overrun: 0\nbytes: 100\nentries: 2\noverrun: 4\n"
	st, err := parseTraceStats([]byte(in))
	if err != nil || st.overrun != 7 || st.entries != 12 {
		t.Errorf("stats %+v, %v; want 12 entries, 7 overrun", st, err)
	}
	if _, err := parseTraceStats([]byte("overrun: many\n")); err == nil {
		t.Error("no error on a bad overrun")
	}
}

func TestTrimPartialLine(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ in, want string }{
		{"a\nb\n", "a\nb\n"},
		{"a\nb\npage_pool_skb_return: page_pool=", "a\nb\n"},
		{"no newline at all", ""},
		{"", ""},
		{strings.Repeat("x", 70000) + "\n" + strings.Repeat("y", 70000), strings.Repeat("x", 70000) + "\n"},
	} {
		p := dir + "/trace.txt"
		if err := os.WriteFile(p, []byte(tc.in), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := trimPartialLine(p); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(p)
		if string(got) != tc.want {
			t.Errorf("trim(%.20q…) = %.20q…, want %.20q…", tc.in, got, tc.want)
		}
	}
}
