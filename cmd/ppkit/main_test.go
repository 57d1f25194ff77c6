package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunUnknownCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	if !strings.Contains(errb.String(), "unknown command") || strings.Count(errb.String(), "\n") != 1 {
		t.Fatalf("want one clear line, got %q", errb.String())
	}
}

func TestRunHelpListsCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"help"}, &out, &errb); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	for name := range commands {
		if !strings.Contains(out.String(), name) {
			t.Errorf("help does not list %q", name)
		}
	}
}

func TestParseFlagsInterleaved(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		wantJSON bool
		wantPos  []string
	}{
		{[]string{"file", "--json"}, true, []string{"file"}},
		{[]string{"--json", "a", "b"}, true, []string{"a", "b"}},
		{[]string{"a", "--", "--json", "-x"}, false, []string{"a", "--json", "-x"}},
		{[]string{}, false, nil},
	} {
		fs := newFlagSet("t", &bytes.Buffer{})
		j := fs.Bool("json", false, "")
		if err := parseFlags(fs, tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if *j != tc.wantJSON || strings.Join(fs.Args(), ",") != strings.Join(tc.wantPos, ",") {
			t.Errorf("%v: json=%v args=%v", tc.args, *j, fs.Args())
		}
	}
}
