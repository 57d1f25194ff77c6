package gomodel

import (
	"fmt"
	"strings"
	"testing"
)

func newTestModel(cfg Config) (*Model, *Symbols) {
	syms := NewSymbols()
	return NewModel(cfg, syms, true), syms
}

func mustApply(t *testing.T, m *Model, op Op) {
	t.Helper()
	if err := m.Apply(op); err != nil {
		t.Fatal(err)
	}
}

// TestAllocCacheAndRing follows page_pool.c's numbers: the alloc cache holds 128 pages, a
// refill moves up to 64 pages from the ptr_ring, the ring holds pool_size pages.
func TestAllocCacheAndRing(t *testing.T) {
	for _, tc := range []struct {
		name              string
		size, pages       int
		direct            bool
		wantCache, wantRg int // after recycling all pages
		afterAllocCache   int // after one more allocation
		afterAllocRing    int
		wantRelease       uint32
	}{
		{"ring then refill 64", 1024, 100, false, 0, 100, 63, 36, 0},
		{"ring refill takes all when fewer", 1024, 10, false, 0, 10, 9, 0, 0},
		{"cache holds 128", 1024, 130, true, 128, 2, 127, 2, 0},
		{"ring full releases", 16, 20, false, 0, 16, 15, 0, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, syms := newTestModel(Config{Variant: VariantNone})
			pl := syms.Add("p", SymPool)
			mustApply(t, m, Op{Kind: OpPool, A: pl, B: -1, C: -1, N: int32(tc.size)})
			var pages []int32
			for i := 0; i < tc.pages; i++ {
				pg := syms.Add(fmt.Sprintf("a%d", i), SymPage)
				mustApply(t, m, Op{Kind: OpAlloc, A: pg, B: pl, C: -1})
				pages = append(pages, pg)
			}
			var flag uint8
			if tc.direct {
				flag = FlagDirect
			}
			for _, pg := range pages {
				mustApply(t, m, Op{Kind: OpRecycle, A: pl, B: pg, C: -1, Flag: flag})
			}
			p := &m.pools[0]
			if len(p.cache) != tc.wantCache || p.ringLen() != tc.wantRg || p.release != tc.wantRelease {
				t.Fatalf("cache %d ring %d release %d, want %d %d %d", len(p.cache), p.ringLen(), p.release, tc.wantCache, tc.wantRg, tc.wantRelease)
			}
			mustApply(t, m, Op{Kind: OpAlloc, A: syms.Add("b", SymPage), B: pl, C: -1})
			if len(p.cache) != tc.afterAllocCache || p.ringLen() != tc.afterAllocRing {
				t.Fatalf("after alloc: cache %d ring %d, want %d %d", len(p.cache), p.ringLen(), tc.afterAllocCache, tc.afterAllocRing)
			}
			if p.hold != uint32(tc.pages) {
				t.Errorf("hold %d, want %d: recycled allocations must not take the slow path", p.hold, tc.pages)
			}
			if len(m.Violations) != 0 {
				t.Errorf("violations: %v", m.Violations)
			}
		})
	}
}

// TestViolationReportsHistory: a violation names its operation and the page's past.
func TestViolationReportsHistory(t *testing.T) {
	res, err := runText(t, "variant rfc unhandled\npool rxq\nrx to rxq\nrx from rxq\ncoalesce to from\nkfree to\n")
	if err != nil {
		t.Fatal(err)
	}
	var v *Violation
	for i := range res.Violations {
		if res.Violations[i].Name == DMAMappedPageFreed {
			v = &res.Violations[i]
		}
	}
	if v == nil {
		t.Fatalf("no dma-mapped-page-freed in %v", res.Violations)
	}
	if v.Line != 6 || v.Op != "kfree to" || v.Page != "from.head" {
		t.Errorf("got line %d op %q page %q", v.Line, v.Op, v.Page)
	}
	hist := strings.Join(v.History, "\n")
	for _, want := range []string{"line 4: rx from rxq: page_pool_alloc_pages slow path", "line 5: coalesce to from: skb_try_coalesce: head of from stolen", "line 6: kfree to: put_page"} {
		if !strings.Contains(hist, want) {
			t.Errorf("history lacks %q:\n%s", want, hist)
		}
	}
}

// TestVariantsDifferOnlyWhereDesigned runs the same operations under every variant.
func TestVariantsDifferOnlyWhereDesigned(t *testing.T) {
	body := "pool rxq\nrx s rxq frags 1\ncopy c s\npskb_copy d s\nclone e s\nkfree c\nkfree d\nkfree e\nkfree s\ndestroy rxq\n"
	for _, tc := range []struct {
		variant string
		want    string // violations, comma-separated
		freed   bool   // pool freed at the end
	}{
		{"none", "", true},
		{"prerfc", "foreign-page-returned,foreign-page-returned", true}, // the foreign areas are quarantined, not put in the ring
		{"rfc unhandled", "", true},
		{"rfc release", "", true},
		{"upstream", "", true},
		{"series", "", true},
	} {
		t.Run(tc.variant, func(t *testing.T) {
			res, err := runText(t, "variant "+tc.variant+"\n"+body)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range res.Violations {
				got = append(got, v.Name)
			}
			if strings.Join(got, ",") != tc.want {
				t.Errorf("violations %v, want %q", got, tc.want)
			}
			if res.Pools[0].Freed != tc.freed {
				t.Errorf("pool freed %v, want %v: %+v", res.Pools[0].Freed, tc.freed, res.Pools[0])
			}
		})
	}
}

func TestParseVariant(t *testing.T) {
	for _, tc := range []struct {
		v, c, want string
		err        bool
	}{
		{"none", "", "none", false},
		{"rfc", "", "rfc/unhandled", false},
		{"rfc", "fraglist", "rfc/fraglist", false},
		{"upstream", "", "upstream", false},
		{"upstream", "release", "", true},
		{"rfc", "maybe", "", true},
		{"5.10", "", "", true},
		{"series", "", "series", false},
		{"series", "release", "", true},
		{"return-direct", "", "return-direct", false},
		{"clone-forgets-id", "unhandled", "", true},
	} {
		cfg, err := ParseVariant(tc.v, tc.c)
		if (err != nil) != tc.err || (err == nil && cfg.String() != tc.want) {
			t.Errorf("ParseVariant(%q, %q) = %v, %v", tc.v, tc.c, cfg, err)
		}
	}
}
