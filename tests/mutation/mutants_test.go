package mutation

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestShippedMutants: the suite parses, has at least ten real and two equivalent mutants, each
// changes exactly its patch, and its series is patches/ with that one file replaced.
func TestShippedMutants(t *testing.T) {
	ms, err := ReadMutants("../fixtures/mutants", "../../patches")
	if err != nil {
		t.Fatal(err)
	}
	real, equivalent := 0, 0
	for _, m := range ms {
		if m.Equivalent {
			equivalent++
		} else {
			real++
		}
		orig, err := os.ReadFile(filepath.Join("../../patches", m.Patch))
		if err != nil {
			t.Fatal(err)
		}
		mut, _ := os.ReadFile(filepath.Join(m.Dir, m.Patch))
		if bytes.Equal(orig, mut) || m.Description == "" {
			t.Errorf("%s: no change to %s, or no description", m.Name, m.Patch)
		}
		dir := t.TempDir()
		if err := m.Series("../../patches", dir); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(dir, m.Patch))
		series, _ := os.ReadFile(filepath.Join(dir, "series"))
		want, _ := os.ReadFile("../../patches/series")
		if !bytes.Equal(got, mut) || !bytes.Equal(series, want) {
			t.Errorf("%s: the mutant series does not carry the mutant patch and the same series file", m.Name)
		}
	}
	if real < 10 || equivalent < 2 {
		t.Errorf("%d real and %d equivalent mutants; want at least 10 and 2", real, equivalent)
	}
}

func TestReadMutantsBadInput(t *testing.T) {
	for name, content := range map[string]string{
		"bad kind":          "m1 maybe multicast: x\n",
		"unknown procedure": "m1 real frobnicate: x\n",
		"no directory":      "m2 real multicast: x\n",
		"twice":             "m1 real multicast: x\nm1 real multicast: x\n",
	} {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "m1"), 0o755)
		os.WriteFile(filepath.Join(dir, "m1", "net-skbuff-return-page_pool-heads-in-skb_free_head"), []byte("x"), 0o644)
		os.WriteFile(filepath.Join(dir, "MUTANTS"), []byte(content), 0o644)
		if _, err := ReadMutants(dir, "../../patches"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
