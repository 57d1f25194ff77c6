package gomodel

// pfnTable holds the replay's state of each page. A trace touches the pfns of a few
// contiguous ranges (the guest's memory), so the states sit in chunks of pfnChunk pages,
// found by pfn from a base through a small table that grows to cover each new pfn while it
// spans at most maxDensePfns: a lookup is a subtraction, a chunk pointer that stays in the
// cache, and the state's own cache line (three lookups per packet: the replay's hottest
// access). A pfn that would stretch the table further (scattered pfns, not a guest's) gets a
// state of its own in a map; when the map comes to hold more pages than the chunks, the table
// starts again around the next such pfn (a trace whose first pfn was a stray one).
type pfnTable struct {
	base     uint64                // pfn of chunks[0][0], a multiple of pfnChunk
	chunks   []*[pfnChunk]pfnState // nil: no known page there; known states have pfKnown
	inChunks int                   // known pages in chunks
	sparse   map[uint64]*pfnState  // known pages outside the chunks' span
	rebaseAt int                   // the known pages at which the table may start again
}

const (
	pfnChunkBits = 9
	pfnChunk     = 1 << pfnChunkBits // 512 pages, 40 KiB of states
	maxDensePfns = 1 << 20           // 4 GiB of 4 KiB pages: 2048 chunk pointers
)

// get is the state of a page the trace has met, nil if none.
func (t *pfnTable) get(pfn uint64) *pfnState {
	if i := pfn - t.base; i>>pfnChunkBits < uint64(len(t.chunks)) {
		if ch := t.chunks[i>>pfnChunkBits]; ch != nil {
			if st := &ch[i&(pfnChunk-1)]; st.flags&pfKnown != 0 {
				return st
			}
		}
		return nil
	}
	return t.sparse[pfn]
}

// add makes pfn known, with no holder and not released, and returns its state. pfn must not
// be known.
func (t *pfnTable) add(pfn uint64) *pfnState {
	st := t.slot(pfn)
	*st = pfnState{holder: -1, released: -1, flags: pfKnown}
	return st
}

func (t *pfnTable) slot(pfn uint64) *pfnState {
	if i := pfn - t.base; i>>pfnChunkBits < uint64(len(t.chunks)) {
		ch := t.chunks[i>>pfnChunkBits]
		if ch == nil {
			ch = new([pfnChunk]pfnState)
			t.chunks[i>>pfnChunkBits] = ch
		}
		t.inChunks++
		return &ch[i&(pfnChunk-1)]
	}
	lo := pfn &^ (pfnChunk - 1)
	switch hi, end := t.base+uint64(len(t.chunks))*pfnChunk, lo+pfnChunk; {
	case end < lo: // the last chunk of the pfn space: not a guest's page
	case len(t.chunks) > 0 && max(hi, end)-min(lo, t.base) <= maxDensePfns:
		t.span(min(lo, t.base), max(hi, end))
		return t.slot(pfn)
	case len(t.chunks) == 0 || len(t.sparse) > t.inChunks && t.len() >= t.rebaseAt:
		t.span(lo, end)
		t.rebaseAt = 2 * t.len()
		return t.slot(pfn)
	}
	if t.sparse == nil {
		t.sparse = map[uint64]*pfnState{}
	}
	st := new(pfnState)
	t.sparse[pfn] = st
	return st
}

// span makes the chunks cover lo..hi-1 (multiples of pfnChunk) and moves every known state
// where it now belongs: the chunks inside the new span stay where they are, uncounted again
// (a guest's fresh pages come in rising pfns: a span grows a chunk at a time).
func (t *pfnTable) span(lo, hi uint64) {
	base, chunks, sparse := t.base, t.chunks, t.sparse
	t.base, t.chunks, t.sparse = lo, make([]*[pfnChunk]pfnState, (hi-lo)/pfnChunk), nil
	put := func(pfn uint64, st *pfnState) {
		if i := pfn - t.base; i>>pfnChunkBits < uint64(len(t.chunks)) {
			*t.slot(pfn) = *st
			return
		}
		if t.sparse == nil {
			t.sparse = map[uint64]*pfnState{}
		}
		t.sparse[pfn] = st
	}
	for k, ch := range chunks {
		if ch == nil {
			continue
		}
		first := base + uint64(k)*pfnChunk
		if i := first - t.base; i>>pfnChunkBits < uint64(len(t.chunks)) {
			t.chunks[i>>pfnChunkBits] = ch // its states stay counted in inChunks
			continue
		}
		for j := range ch {
			if ch[j].flags&pfKnown != 0 {
				st := ch[j]
				t.inChunks--
				put(first+uint64(j), &st)
			}
		}
	}
	for pfn, st := range sparse {
		put(pfn, st)
	}
}

// len is the number of known pages.
func (t *pfnTable) len() int { return t.inChunks + len(t.sparse) }

// reset forgets every page.
func (t *pfnTable) reset() { *t = pfnTable{} }
