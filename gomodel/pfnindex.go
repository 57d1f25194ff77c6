package gomodel

// pfnIndex maps a pfn to its index in traceChecker.pfns. A trace touches pfns of a few
// contiguous ranges (the guest's memory), so a table of 4096-entry chunks with the last chunk
// cached beats a map on every event (the replay's hottest lookup). Past maxPfnChunks chunks
// (16 GiB of 4 KiB pages, 16 MiB of table: a trace of scattered pfns, not of a guest) new pfns go to a map.
type pfnIndex struct {
	chunks  map[uint64]*[pfnChunk]int32 // entries are index+1; 0: none
	lastKey uint64
	last    *[pfnChunk]int32 // chunk lastKey, nil if it has none
	sparse  map[uint64]int32
}

const (
	pfnChunkBits = 12
	pfnChunk     = 1 << pfnChunkBits
	maxPfnChunks = 1024
)

func (x *pfnIndex) chunk(key uint64) *[pfnChunk]int32 {
	if x.last != nil && key == x.lastKey {
		return x.last
	}
	ch := x.chunks[key]
	if ch != nil {
		x.lastKey, x.last = key, ch
	}
	return ch
}

func (x *pfnIndex) get(pfn uint64) (int32, bool) {
	if ch := x.chunk(pfn >> pfnChunkBits); ch != nil {
		if i := ch[pfn&(pfnChunk-1)]; i != 0 {
			return i - 1, true
		}
		return 0, false
	}
	i, ok := x.sparse[pfn]
	return i, ok
}

func (x *pfnIndex) set(pfn uint64, i int32) {
	key := pfn >> pfnChunkBits
	ch := x.chunk(key)
	if ch == nil && len(x.chunks) < maxPfnChunks {
		if x.chunks == nil {
			x.chunks = map[uint64]*[pfnChunk]int32{}
		}
		ch = new([pfnChunk]int32)
		x.chunks[key] = ch
		x.lastKey, x.last = key, ch
	}
	if ch == nil {
		if x.sparse == nil {
			x.sparse = map[uint64]int32{}
		}
		x.sparse[pfn] = i
		return
	}
	ch[pfn&(pfnChunk-1)] = i + 1
}

func (x *pfnIndex) reset() { *x = pfnIndex{} }
