package gomodel

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func shippedScenarios(t testing.TB) []string {
	files, err := filepath.Glob("testdata/scenarios/*.scn")
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func parseFile(t testing.TB, file string) *Scenario {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc, err := ParseScenario(f, file)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func runText(t *testing.T, text string) (*ScenarioResult, error) {
	t.Helper()
	sc, err := ParseScenario(strings.NewReader(text), "inline.scn")
	if err != nil {
		return nil, err
	}
	if !sc.Pinned {
		t.Fatalf("inline scenario without a variant line")
	}
	return Run(sc, sc.Config)
}

// TestShippedScenarios runs every scenario under the variant it pins: all its expectations hold.
func TestShippedScenarios(t *testing.T) {
	files := shippedScenarios(t)
	if len(files) < 30 {
		t.Fatalf("%d shipped scenarios, want at least 30", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			sc := parseFile(t, file)
			if !sc.Pinned {
				t.Fatalf("%s does not pin a variant", file)
			}
			res, err := Run(sc, sc.Config)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Expectations) == 0 {
				t.Fatalf("%s has no expectations", file)
			}
			for _, e := range res.Expectations {
				if !e.OK {
					t.Errorf("line %d: %s: got %s", e.Line, e.Text, e.Got)
				}
			}
		})
	}
}

// TestDesignBugs checks that the two bugs of the design notes happen under their variant, with
// the named violations, and under no fixed variant.
func TestDesignBugs(t *testing.T) {
	fixed := []Config{{Variant: VariantRFC, Coalesce: CoalesceRelease}, {Variant: VariantRFC, Coalesce: CoalesceFragList}, {Variant: VariantRFC, Coalesce: CoalesceReject}, {Variant: VariantUpstream}, {Variant: VariantSeries, Coalesce: CoalesceRelease}}
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"prerfc-skb-copy-foreign.scn", []string{ForeignPageReturned}},
		{"prerfc-pskb-copy-foreign.scn", []string{ForeignPageReturned}},
		{"rfc-unhandled-coalesce.scn", []string{PoolPageInFrag, DMAMappedPageFreed, InflightLeak}},
		{"rfc-unhandled-gro.scn", []string{PoolPageInFrag, DMAMappedPageFreed, InflightLeak}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			sc := parseFile(t, filepath.Join("testdata/scenarios", tc.file))
			res, err := Run(sc, sc.Config)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range res.Violations {
				got = append(got, v.Name)
				if v.Op == "" || v.Detail == "" || v.Page == "" || len(v.History) == 0 {
					t.Errorf("violation %s lacks its operation, page or history: %+v", v.Name, v)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("violations %v, want %v", got, tc.want)
			}
			for _, cfg := range fixed {
				res, err := Run(sc, cfg)
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Violations) != 0 {
					t.Errorf("under %s: %v", cfg, res.Violations)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		line       int
		want       string
	}{
		{"unknown op", "variant none\nfrobnicate x\n", 2, "unknown operation \"frobnicate\""},
		{"unknown variant", "variant maybe\n", 1, "unknown variant"},
		{"coalesce on prerfc", "variant prerfc release\n", 1, "only applies to variant rfc"},
		{"variant late", "pool p\nvariant none\n", 2, "before the first operation"},
		{"two variants", "variant none\nvariant rfc\n", 2, "second variant"},
		{"unknown pool", "variant none\nalloc a nopool\n", 2, "unknown pool \"nopool\""},
		{"kind mismatch", "variant none\npool p\nkfree p\n", 3, "is a pool (line 2), not a skb"},
		{"duplicate", "variant none\npool p\npool p\n", 3, "already used (line 2)"},
		{"derived duplicate", "variant none\npool p\npage s.head\nrx s p\n", 4, "derived from \"s\""},
		{"too many args", "variant none\npool p\nrx s p frags\n", 3, "rx SKB POOL [frags N]"},
		{"bad number", "variant none\npool p size -3\n", 2, "pool size must be a whole number"},
		{"too many frags", "variant none\npool p\nrx s p frags 18\n", 3, "frags must be a whole number from 0 to 17"},
		{"bad state", "variant none\npool p\nalloc a p\nexpect state a sleeping\n", 4, "unknown page state"},
		{"bad violation", "variant none\nexpect violation oops\n", 2, "unknown violation"},
		{"bad expect", "variant none\nexpect\n", 2, "expect violation NAME"},
		{"same skb", "variant none\npool p\nrx s p\ncoalesce s s\n", 4, "two different skbs"},
		{"bad name", "variant none\npool -p\n", 2, "not a valid name"},
		{"empty", "# nothing\n", 1, "no operations"},
		{"splice syntax", "variant none\npool p\nrx s p\nsplice r s middle\n", 4, "splice REF SKB head|frag N"},
		{"context napi needs a pool", "variant series\ncontext napi\n", 2, "context process|softirq|irq|napi POOL"},
		{"context pool on process", "variant series\npool p\ncontext process p\n", 3, "context process|softirq|irq|napi POOL"},
		{"pfmemalloc syntax", "variant series\npfmemalloc maybe\n", 2, "pfmemalloc on|off"},
		{"mark needs a pool", "variant series\npool p\nalloc a p\nbuild_skb s a mark\n", 4, "build_skb SKB PAGE [nomark|mark POOL]"},
		{"mark unknown pool", "variant series\npool p\nalloc a p\nbuild_skb s a mark q\n", 4, "unknown pool \"q\""},
		{"norelease syntax", "variant series\npool p\nrx s p\nalloc a p\nadd_rx_frag s a keep\n", 5, "add_rx_frag SKB PAGE [norelease]"},
		{"segment flag", "variant series\npool p\nrx s p\nsegment g s aligned\n", 4, "segment SEG SKB [clone]"},
		{"mutant with coalesce", "variant return-direct release\n", 1, "only applies to variant rfc"},
		{"unknown mutant", "variant return-indirect\n", 1, "or a mutant: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseScenario(strings.NewReader(tc.text), "x.scn")
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want a LineError", err)
			}
			if le.Line != tc.line || !strings.Contains(le.Msg, tc.want) || !strings.HasPrefix(le.Error(), "x.scn:") {
				t.Errorf("got %q at line %d, want %q at line %d", le.Msg, le.Line, tc.want, tc.line)
			}
		})
	}
}

func TestRuntimeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		line       int
		want       string
	}{
		{"expand shared", "variant none\npool p\nrx s p\nskb_get s\nexpand_head s\n", 5, "BUG_ON(skb_shared(skb))"},
		{"no such frag", "variant none\npool p\nrx s p frags 1\nsplice r s frag 3\n", 4, "has no frag 3"},
		{"gro cloned", "variant none\npool p\nrx a p\nrx b p\nclone c b\ngro a b\n", 6, "fresh skb"},
		{"max frags", "variant none\npool p\nrx s p frags 17\npage x\nadd_rx_frag s x\n", 5, "MAX_SKB_FRAGS"},
		{"napi_consume in process", "variant series\npool p\nrx s p\nnapi_consume s\n", 4, "runs in a NAPI poll"},
		{"mark under none", "variant none\npool p\nalloc a p\nbuild_skb s a mark p\n", 4, "variant none has no skb_mark_for_recycle()"},
		{"segment BUG", "variant series\npool p\nrx s p\nalloc_skb k\nfrag_list s k\nsegment g s\n", 6, "BUG_ON(!list_skb->head_frag)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runText(t, tc.text)
			var le *LineError
			if !errors.As(err, &le) || le.Line != tc.line || !strings.Contains(le.Msg, tc.want) {
				t.Fatalf("got %v, want line %d: %q", err, tc.line, tc.want)
			}
		})
	}
}

// TestFormatRoundTrip: every shipped operation prints back to text that parses to the same op.
func TestFormatRoundTrip(t *testing.T) {
	for _, file := range shippedScenarios(t) {
		sc := parseFile(t, file)
		var b strings.Builder
		b.WriteString("variant " + strings.ReplaceAll(sc.Config.String(), "/", " ") + "\n")
		for _, op := range sc.Ops {
			b.WriteString(sc.Syms.Format(op) + "\n")
		}
		sc2, err := ParseScenario(strings.NewReader(b.String()), "round.scn")
		if err != nil {
			t.Fatalf("%s: %v\n%s", file, err, b.String())
		}
		for i := range sc.Ops {
			if a, b := sc.Syms.Format(sc.Ops[i]), sc2.Syms.Format(sc2.Ops[i]); a != b {
				t.Errorf("%s: %q became %q", file, a, b)
			}
		}
	}
}

// TestMutantScenarios: each mutant has its scenario, which shows the mutant's violation (none
// for the equivalent expand-keeps-id) and nothing at all under the design it mutates.
func TestMutantScenarios(t *testing.T) {
	for _, name := range MutantNames() {
		t.Run(name, func(t *testing.T) {
			sc := parseFile(t, filepath.Join("testdata/scenarios", "mutant-"+name+".scn"))
			if sc.Config.Name() != name {
				t.Fatalf("pins %s, want %s", sc.Config.Name(), name)
			}
			res, err := Run(sc, sc.Config)
			if err != nil {
				t.Fatal(err)
			}
			want := mutantFindings[name]
			got := false
			for _, v := range res.Violations {
				got = got || v.Name == want
			}
			if want != "" && !got {
				t.Errorf("violations %v, want %s", res.Violations, want)
			}
			if want == "" && len(res.Violations) > 0 {
				t.Errorf("equivalent mutant, violations %v", res.Violations)
			}
			res, err = Run(sc, baseConfig(t, name))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Violations) != 0 {
				t.Errorf("under %s: %v", baseConfig(t, name), res.Violations)
			}
		})
	}
}
