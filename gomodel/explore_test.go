package gomodel

import (
	"strings"
	"testing"

	"pgregory.net/rapid"
)

var correctConfigs = []Config{
	{Variant: VariantNone},
	{Variant: VariantUpstream},
	{Variant: VariantRFC, Coalesce: CoalesceRelease},
	{Variant: VariantRFC, Coalesce: CoalesceFragList},
	{Variant: VariantRFC, Coalesce: CoalesceReject},
	{Variant: VariantSeries, Coalesce: CoalesceRelease},
}

// mutantFindings is the invariant explore finds first (with --seed 1) for each mutant of the
// series; "" means the change is equivalent in the shipped series and nothing can be found.
var mutantFindings = map[string]string{
	"clone-forgets-id":                    DMAMappedPageFreed,
	"expand-keeps-id":                     "",
	"gro-no-release":                      DMAMappedPageFreed,
	"coalesce-no-release":                 DMAMappedPageFreed,
	"coalesce-release-before-clone-check": DoubleReturn,
	"hook-in-kfree-skb-only":              DMAMappedPageFreed,
	"driver-releases-and-marks":           DoubleReturn,
	"driver-frag-no-release":              DMAMappedPageFreed,
	"wrong-pool-id":                       ForeignPageReturned,
	"return-ignores-refcount":             SharedPageRecycled,
	"return-direct":                       DirectRecycleOutsideNAPI,
	"coalesce-mixes-refs":                 DMAMappedPageFreed,
}

// baseConfig is the design a mutant mutates, as ParseVariant configures it.
func baseConfig(t *testing.T, mutant string) Config {
	t.Helper()
	cfg, err := ParseVariant(mutant, "")
	if err != nil {
		t.Fatal(err)
	}
	base, err := ParseVariant(cfg.Mutant.Base().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	return base
}

// TestExploreFindsMutants: explore finds the bug of every mutant from scratch, and its minimal
// scenario passes under the design the mutant mutates (the mutant's change is the culprit).
func TestExploreFindsMutants(t *testing.T) {
	if len(mutantFindings) != len(MutantNames()) {
		t.Fatalf("mutantFindings lists %d mutants, the model has %d", len(mutantFindings), len(MutantNames()))
	}
	ops := 1_000_000
	if testing.Short() {
		ops = 200_000
	}
	for _, name := range MutantNames() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg, err := ParseVariant(name, "")
			if err != nil {
				t.Fatal(err)
			}
			res := Explore(ExploreOptions{Config: cfg, Ops: ops, Seed: 1})
			want := mutantFindings[name]
			if want == "" {
				for _, f := range res.Findings {
					t.Errorf("equivalent mutant, but explore found %s:\n%s", f.Target, f.Scenario)
				}
				return
			}
			if !res.Found || res.Findings[0].Target != want {
				t.Fatalf("findings %+v, want %s first", res.Findings, want)
			}
			sc, err := ParseScenario(strings.NewReader(res.Findings[0].Scenario), "found.scn")
			if err != nil {
				t.Fatal(err)
			}
			if sc.Config != cfg {
				t.Errorf("the scenario pins %v, want %v", sc.Config, cfg)
			}
			if rr, err := Run(sc, baseConfig(t, name)); err != nil || !rr.Passed {
				t.Errorf("the minimal scenario fails under %s too: %v %+v", baseConfig(t, name), err, rr)
			}
		})
	}
}

// TestExploreFindsDesignBugs: from scratch with seed 1, the explorer finds both bugs of the
// design notes; each minimal scenario is 1-minimal and fails `model run`.
func TestExploreFindsDesignBugs(t *testing.T) {
	for _, tc := range []struct {
		cfg    Config
		target string
		ops    []string // operations the minimal scenario must contain
	}{
		{Config{Variant: VariantPreRFC}, ForeignPageReturned, []string{"rx s1 rxq", "copy s", "kfree s"}},
		{Config{Variant: VariantRFC, Coalesce: CoalesceUnhandled}, DMAMappedPageFreed, []string{"coalesce", "destroy rxq"}},
	} {
		t.Run(tc.cfg.String(), func(t *testing.T) {
			res := Explore(ExploreOptions{Config: tc.cfg, Ops: 200_000, Seed: 1})
			if !res.Found || res.Findings[0].Target != tc.target {
				t.Fatalf("found %+v, want %s first", res.Findings, tc.target)
			}
			f := res.Findings[0]
			for _, op := range tc.ops {
				if !strings.Contains(f.Scenario, op) {
					t.Errorf("minimal scenario lacks %q:\n%s", op, f.Scenario)
				}
			}
			sc, err := ParseScenario(strings.NewReader(f.Scenario), "found.scn")
			if err != nil {
				t.Fatalf("the printed scenario does not parse: %v\n%s", err, f.Scenario)
			}
			if !sc.Pinned || sc.Config != tc.cfg {
				t.Errorf("scenario pins %v, want %v", sc.Config, tc.cfg)
			}
			rr, err := Run(sc, sc.Config)
			if err != nil {
				t.Fatal(err)
			}
			if rr.Passed || mostSevere(rr.Violations) != tc.target {
				t.Errorf("rerun: passed=%v violations %v", rr.Passed, rr.Violations)
			}
			var ops []Op
			for _, op := range sc.Ops {
				if op.Kind < OpExpectViolation {
					ops = append(ops, op)
				}
			}
			targets := []string{tc.target}
			for _, v := range rr.Violations {
				if v.Name == InflightLeak {
					targets = append(targets, InflightLeak) // kept on purpose: see Explore
				}
			}
			for i := range ops {
				cand := append(append([]Op(nil), ops[:i]...), ops[i+1:]...)
				if Reproduces(tc.cfg, sc.Syms, cand, targets...) {
					t.Errorf("not minimal: still fails without %q", sc.Syms.Format(ops[i]))
				}
			}
		})
	}
}

// TestExploreCorrectVariants: no violation in a fixed design over 1,000,000 operations
// (100,000 with -short).
func TestExploreCorrectVariants(t *testing.T) {
	ops := 1_000_000
	if testing.Short() {
		ops = 100_000
	}
	for _, cfg := range correctConfigs {
		t.Run(cfg.String(), func(t *testing.T) {
			t.Parallel()
			res := Explore(ExploreOptions{Config: cfg, Ops: ops, Seed: 1})
			if res.Ops < int64(ops) {
				t.Errorf("ran %d operations, want %d", res.Ops, ops)
			}
			for _, f := range res.Findings {
				t.Errorf("%s:\n%s", f.Target, f.Scenario)
			}
		})
	}
}

type rapidChooser struct{ t *rapid.T }

func (c rapidChooser) Intn(n int) int { return rapid.IntRange(0, n-1).Draw(c.t, "choice") }

// TestPropertyFixedDesignsKeepInvariants is the property-based stateful test: rapid drives the
// generator's choices (and shrinks them) for every fixed design.
func TestPropertyFixedDesignsKeepInvariants(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		cfg := rapid.SampledFrom(correctConfigs).Draw(rt, "variant")
		g := newGenerator(cfg, rapidChooser{rt})
		if g.episode(30, 1<<30) {
			var b strings.Builder
			for _, op := range g.ops {
				b.WriteString(g.syms.Format(op) + "\n")
			}
			rt.Fatalf("%s: %v\n%s", cfg, g.m.Violations, b.String())
		}
	})
}

// TestPropertyUnhandledCoalesceAlwaysLeaks: whenever an rfc/unhandled sequence steals a
// page_pool head into a frag (pool-page-in-frag), its teardown shows the damage.
func TestPropertyUnhandledCoalesceAlwaysLeaks(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		g := newGenerator(Config{Variant: VariantRFC, Coalesce: CoalesceUnhandled}, rapidChooser{rt})
		g.episode(30, 1<<30)
		names := map[string]bool{}
		for _, v := range g.m.Violations {
			names[v.Name] = true
		}
		if names[PoolPageInFrag] && !names[DMAMappedPageFreed] && !names[InflightLeak] {
			rt.Fatalf("a pool page became a frag without damage: %v", g.m.Violations)
		}
	})
}

func TestDdmin(t *testing.T) {
	var ops []Op
	for i := 0; i < 50; i++ {
		ops = append(ops, Op{N: int32(i)})
	}
	// fails when 7, 23 and 41 are all present
	test := func(c []Op) bool {
		n := 0
		for _, op := range c {
			if op.N == 7 || op.N == 23 || op.N == 41 {
				n++
			}
		}
		return n == 3
	}
	got := ddmin(ops, test)
	if len(got) != 3 || got[0].N != 7 || got[1].N != 23 || got[2].N != 41 {
		t.Fatalf("ddmin = %v", got)
	}
}
