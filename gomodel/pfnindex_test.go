package gomodel

import (
	"math/rand"
	"testing"
)

// pfnTable answers as a map does: in dense ranges that grow down and up, scattered past its
// span limit, with states that keep what was written to them, and after a reset.
func TestPfnTable(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	var x pfnTable
	want := map[uint64]int32{}
	for i := int32(0); i < 200000; i++ {
		var pfn uint64
		switch rnd.Intn(4) {
		case 0:
			pfn = 0x40000 + uint64(rnd.Intn(1<<18))
		case 1:
			pfn = rnd.Uint64()
		case 2:
			pfn = 0x40000 - uint64(rnd.Intn(1<<16)) // below the first base: the table grows down
		default:
			pfn = uint64(rnd.Intn(64)) // too far below: a sparse state
		}
		if _, ok := want[pfn]; !ok {
			if x.get(pfn) != nil {
				t.Fatalf("pfn %#x: known before it was added", pfn)
			}
			want[pfn] = i
			st := x.add(pfn)
			if st.holder != -1 || st.released != -1 || st.flags != pfKnown || st.nh != 0 {
				t.Fatalf("pfn %#x: new state %+v", pfn, *st)
			}
			st.holder = i
		}
		if i == 150000 {
			// The pfn space's last chunk (pfn fields are whatever the trace says).
			for _, pfn := range []uint64{^uint64(0), ^uint64(0) - 1, ^uint64(0) &^ (pfnChunk - 1)} {
				if _, ok := want[pfn]; !ok {
					want[pfn] = i
					x.add(pfn).holder = i
				}
			}
		}
		if i == 100000 {
			x.reset()
			clear(want)
			if x.len() != 0 {
				t.Fatalf("%d pages known after a reset", x.len())
			}
		}
	}
	if len(x.sparse) == 0 || len(x.chunks)*pfnChunk > maxDensePfns || len(x.chunks)*pfnChunk < 1<<18 {
		t.Fatalf("%d chunks, %d sparse: the test does not reach the limit", len(x.chunks), len(x.sparse))
	}
	if x.len() != len(want) {
		t.Fatalf("len %d, want %d", x.len(), len(want))
	}
	for pfn, i := range want {
		if st := x.get(pfn); st == nil || st.holder != i {
			t.Fatalf("pfn %#x: got %+v, want holder %d", pfn, st, i)
		}
		q := pfn ^ 1<<40
		_, in := want[q]
		if st := x.get(q); (st != nil) != in {
			t.Fatalf("pfn %#x: got %v, want %v", q, st != nil, in)
		}
	}
}
