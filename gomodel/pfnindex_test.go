package gomodel

import (
	"math/rand"
	"testing"
)

// pfnIndex answers as a map does, in dense ranges, scattered, past its chunk limit, and
// after a reset.
func TestPfnIndex(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	var x pfnIndex
	want := map[uint64]int32{}
	for i := int32(0); i < 200000; i++ {
		var pfn uint64
		switch rnd.Intn(3) {
		case 0:
			pfn = 0x40000 + uint64(rnd.Intn(1<<18))
		case 1:
			pfn = rnd.Uint64()
		default:
			pfn = uint64(rnd.Intn(64))
		}
		if _, ok := want[pfn]; !ok {
			want[pfn] = i
			x.set(pfn, i)
		}
		if i == 100000 {
			x.reset()
			clear(want)
		}
	}
	if len(x.chunks) != maxPfnChunks || len(x.sparse) == 0 {
		t.Fatalf("%d chunks, %d sparse: the test does not reach the limit", len(x.chunks), len(x.sparse))
	}
	for pfn, i := range want {
		if got, ok := x.get(pfn); !ok || got != i {
			t.Fatalf("pfn %d: got %d %v, want %d", pfn, got, ok, i)
		}
		q := pfn ^ 1<<40
		_, in := want[q]
		if _, ok := x.get(q); ok != in {
			t.Fatalf("pfn %d: got %v, want %v", q, ok, in)
		}
	}
}
