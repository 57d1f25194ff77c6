package stgit

import (
	"testing"
)

func TestSubjectForm(t *testing.T) {
	for subj, ok := range map[string]bool{
		"net: page_pool: return pages via the skb": true,
		"mvneta: recycle RX pages":                 true,
		"net/core: fix a leak":                     true,
		"Fix the counters":                         false,
		"[PATCH] net: x":                           false,
		"net:missing space":                        false,
	} {
		if subjectForm.MatchString(subj) != ok {
			t.Errorf("%q: match %v, want %v", subj, !ok, ok)
		}
	}
}
