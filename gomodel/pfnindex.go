package gomodel

// pfnIndex maps a pfn to its index in traceChecker.pfns. A trace touches pfns of a few
// contiguous ranges (the guest's memory), so a table of 4096-entry chunks with the last chunk
// cached beats a map on every event (the replay's hottest lookup).
type pfnIndex struct {
	chunks    map[uint64]*[pfnChunk]int32 // entries are index+1; 0: none
	lastKey   uint64
	last      *[pfnChunk]int32
	lastValid bool
}

const pfnChunkBits = 12
const pfnChunk = 1 << pfnChunkBits

func (x *pfnIndex) chunk(pfn uint64, create bool) *[pfnChunk]int32 {
	key := pfn >> pfnChunkBits
	if x.lastValid && key == x.lastKey {
		return x.last
	}
	ch := x.chunks[key]
	if ch == nil {
		if !create {
			return nil
		}
		if x.chunks == nil {
			x.chunks = map[uint64]*[pfnChunk]int32{}
		}
		ch = new([pfnChunk]int32)
		x.chunks[key] = ch
	}
	x.lastKey, x.last, x.lastValid = key, ch, true
	return ch
}

func (x *pfnIndex) get(pfn uint64) (int32, bool) {
	ch := x.chunk(pfn, false)
	if ch == nil {
		return 0, false
	}
	i := ch[pfn&(pfnChunk-1)]
	return i - 1, i != 0
}

func (x *pfnIndex) set(pfn uint64, i int32) { x.chunk(pfn, true)[pfn&(pfnChunk-1)] = i + 1 }

func (x *pfnIndex) reset() { *x = pfnIndex{} }
