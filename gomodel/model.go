package gomodel

import (
	"fmt"
	"strings"
)

// Variant selects the return-hook design the model runs.
type Variant uint8

const (
	// VariantNone is stock 5.10: mvneta calls page_pool_release_page() right after build_skb()
	// and skb_add_rx_frag() (mvneta.c:2313-2330); the stack only ever sees ordinary pages.
	VariantNone Variant = iota
	// VariantPreRFC keeps xdp_mem_info inside headers_start..headers_end, so
	// __copy_skb_header() (skbuff.c:953-955) copies it into skb_copy()/pskb_copy() results, and
	// the hook in skb_free_head() trusts it.
	VariantPreRFC
	// VariantRFC places xdp_mem_info after head_frag/pfmemalloc: __skb_clone() copies it, new
	// heads (alloc_skb, skb_copy, pskb_copy, pskb_expand_head) start without it. What
	// skb_try_coalesce()/skb_gro_receive() do with a page_pool head is the Coalesce strategy.
	VariantRFC
	// VariantUpstream is Linux 5.14's design as V2 of the series backports it to 5.10:
	// skb->pp_recycle plus the page->pp_magic signature checked by page_pool_return_skb_page(),
	// for heads and frags alike, with the later fixes folded in (skb_release_data() clears
	// pp_recycle when it does not drop the last dataref; skb_try_coalesce() refuses mixed bits
	// and cloned page_pool skbs after its tailroom copy; skb_gro_receive() refuses mixed bits)
	// and V1's release in hard-irq context.
	VariantUpstream
	// VariantSeries is the shipped series (patches/): the rfc design with the release strategy
	// (skb_pp_release_head() before skb_try_coalesce()/skb_gro_receive() steal a head) plus what
	// the patches add to it: a 16-bit pp_mem_id looked up in the XDP memory model table
	// (xdp_return_skb_head(): an unknown id WARNs and the head is freed as a page fragment), a
	// hook that only considers head_frag heads, and page_pool_return_skb_page(), which releases
	// instead of recycling in hard-irq context. Every Mutant is this variant with one change.
	VariantSeries
)

var variantNames = [...]string{"none", "prerfc", "rfc", "upstream", "series"}

func (v Variant) String() string { return enumName(variantNames[:], int(v), "variant") }

// Coalesce is the rfc design's strategy when skb_try_coalesce() or skb_gro_receive() would
// turn a page_pool head into a frag of another skb.
type Coalesce uint8

const (
	// CoalesceUnhandled is 5.10's code unchanged: the head page becomes a frag still carrying
	// page_pool state and its DMA mapping; the frag's put_page() frees it (the rfc bug).
	CoalesceUnhandled Coalesce = iota
	// CoalesceRelease calls page_pool_release_page() before the head becomes a frag.
	CoalesceRelease
	// CoalesceFragList merges the skb as a frag_list member instead of stealing its head.
	CoalesceFragList
	// CoalesceReject refuses to coalesce (or GRO-merge) an skb whose head is a page_pool page.
	CoalesceReject
)

var coalesceNames = [...]string{"unhandled", "release", "fraglist", "reject"}

func (c Coalesce) String() string { return enumName(coalesceNames[:], int(c), "coalesce") }

// Mutant is a realistic single-change bug of a design: its base variant (Base: V1, "series",
// for most; V2, "upstream", for those of V2) with one change. The names of V1's are those of
// ppkit's kernel-side mutation suite.
type Mutant uint8

const (
	MutantNone Mutant = iota
	// MutCloneForgetsID: __skb_clone() does not copy pp_mem_id.
	MutCloneForgetsID
	// MutExpandKeepsID: pskb_expand_head() does not clear pp_mem_id.
	MutExpandKeepsID
	// MutGroNoRelease: skb_gro_receive() steals a pool head without skb_pp_release_head().
	MutGroNoRelease
	// MutCoalesceNoRelease: skb_try_coalesce() steals a pool head without skb_pp_release_head().
	MutCoalesceNoRelease
	// MutCoalesceReleaseBeforeCloneCheck: skb_try_coalesce() calls skb_pp_release_head(from)
	// before the skb_head_is_locked(from) check, so a cloned head leaves its pool (and from
	// forgets its id) while the clone still carries the id.
	MutCoalesceReleaseBeforeCloneCheck
	// MutHookInKfreeSkbOnly: the return hook sits in __kfree_skb() instead of skb_free_head():
	// heads freed by napi_consume_skb(), __consume_stateless_skb(), net_tx_action()'s
	// __kfree_skb_defer() and pskb_expand_head() go to put_page() while DMA-mapped.
	MutHookInKfreeSkbOnly
	// MutDriverReleasesAndMarks: mvneta keeps page_pool_release_page() on the head and also
	// calls skb_mark_for_recycle().
	MutDriverReleasesAndMarks
	// MutDriverFragNoRelease: mvneta drops page_pool_release_page() after skb_add_rx_frag().
	MutDriverFragNoRelease
	// MutWrongPoolID: mvneta marks every skb with the id of its first RX queue's pool.
	MutWrongPoolID
	// MutReturnIgnoresRefcount: page_pool_return_skb_page() recycles the head even when its
	// refcount is not 1 (splice, skb_segment() or zerocopy hold it).
	MutReturnIgnoresRefcount
	// MutReturnDirect: page_pool_return_skb_page() passes allow_direct=true, so a free in any
	// softirq (not only the pool's NAPI poll) recycles into the lockless alloc cache.
	MutReturnDirect
	// MutCoalesceMixesRefs (V2): skb_try_coalesce() moves pages between skbs whatever their
	// pp_recycle bits (V2 without mainline's 1effe8ca4e34/0646dc31ca88 rule), so a page_pool
	// head stolen into a plain skb (one tcp_collapse() allocated) is freed with put_page().
	MutCoalesceMixesRefs
)

var mutantNames = [...]string{"", "clone-forgets-id", "expand-keeps-id", "gro-no-release", "coalesce-no-release",
	"coalesce-release-before-clone-check", "hook-in-kfree-skb-only", "driver-releases-and-marks",
	"driver-frag-no-release", "wrong-pool-id", "return-ignores-refcount", "return-direct", "coalesce-mixes-refs"}

// Base is the design m mutates: V2's (upstream) for V2's mutants, V1's (series) for the rest.
func (m Mutant) Base() Variant {
	if m == MutCoalesceMixesRefs {
		return VariantUpstream
	}
	return VariantSeries
}

// MutantNames lists every mutant variant name.
func MutantNames() []string { return append([]string(nil), mutantNames[1:]...) }

func (m Mutant) String() string { return enumName(mutantNames[:], int(m), "mutant") }

// Config is a variant and, for rfc, its coalesce strategy; for series, a mutant.
type Config struct {
	Variant  Variant
	Coalesce Coalesce
	Mutant   Mutant
}

// enumName is the name of value i of an enumeration named kind: names[i], or kind(i) when i
// is out of range.
func enumName(names []string, i int, kind string) string {
	if i >= 0 && i < len(names) {
		return names[i]
	}
	return fmt.Sprintf("%s(%d)", kind, i)
}

func (c Config) String() string {
	if c.Variant == VariantRFC {
		return "rfc/" + c.Coalesce.String()
	}
	return c.Name()
}

// Name is the --variant value that selects c (without the rfc coalesce strategy).
func (c Config) Name() string {
	if c.Mutant != MutantNone {
		return c.Mutant.String()
	}
	return c.Variant.String()
}

// ParseVariant parses a --variant value (a variant or a mutant name) and an optional
// --coalesce value ("" means the rfc default, unhandled: the RFC as posted). A coalesce
// strategy is refused for other variants.
func ParseVariant(variant, coalesce string) (Config, error) {
	var cfg Config
	found := false
	for i, n := range variantNames {
		if n == variant {
			cfg.Variant, found = Variant(i), true
		}
	}
	for i, n := range mutantNames {
		if i > 0 && n == variant {
			cfg.Variant, cfg.Mutant, found = Mutant(i).Base(), Mutant(i), true
		}
	}
	if !found {
		return cfg, fmt.Errorf("unknown variant %q: use one of %s, or a mutant: %s", variant,
			strings.Join(variantNames[:], ", "), strings.Join(mutantNames[1:], ", "))
	}
	if cfg.Variant == VariantSeries {
		cfg.Coalesce = CoalesceRelease // the series releases a pool head before it is stolen
	}
	if coalesce == "" {
		return cfg, nil
	}
	if cfg.Variant != VariantRFC {
		return cfg, fmt.Errorf("a coalesce strategy only applies to variant rfc, not %s (series and its mutants release): drop %q", variant, coalesce)
	}
	for i, n := range coalesceNames {
		if n == coalesce {
			cfg.Coalesce = Coalesce(i)
			return cfg, nil
		}
	}
	return cfg, fmt.Errorf("unknown coalesce strategy %q: use one of %s", coalesce, strings.Join(coalesceNames[:], ", "))
}

// Kernel constants (include/net/page_pool.h, include/linux/skbuff.h, net/core/page_pool.c).
const (
	allocCacheSize   = 128   // PP_ALLOC_CACHE_SIZE (page_pool.h:64)
	allocCacheRefill = 64    // PP_ALLOC_CACHE_REFILL (page_pool.h:65)
	defaultPoolSize  = 1024  // page_pool_init(): ring size defaults to 1024 (page_pool.c)
	maxPoolSize      = 32768 // page_pool_init(): larger pool_size is -E2BIG
	maxSkbFrags      = 17    // MAX_SKB_FRAGS = 65536/PAGE_SIZE + 1 with 4 KiB pages
	deferTimeMs      = 1000  // DEFER_TIME = msecs_to_jiffies(1000) (page_pool.c:21)
	deferWarnMs      = 60000 // DEFER_WARN_INTERVAL = 60 * HZ (page_pool.c:22)
)

// memKind says what kind of memory an area is.
type memKind uint8

const (
	memPage memKind = iota // a struct page from the buddy allocator (pool, page_frag or plain)
	memSlab                // a kmalloc()ed skb head
)

// PageState is where a page (or kmalloc area) is, as `expect state` names it.
type PageState uint8

const (
	StateInFlight PageState = iota // holds page_pool state, out of the pool (driver, skb, pipe)
	StateInCache                   // in its pool's alloc cache
	StateInRing                    // in its pool's ptr_ring
	StateInUse                     // alive without page_pool state (plain page, kmalloc area)
	StateFreed                     // returned to the page allocator / kfree()d
	StateLost                      // handed to a pool it does not belong to; the model stops following it
)

var stateNames = [...]string{"in-flight", "in-cache", "in-ring", "in-use", "freed", "lost"}

func (s PageState) String() string { return stateNames[s] }

// page is one struct page or kmalloc area.
type page struct {
	name     int32 // symbol id
	kind     memKind
	ref      int32 // page_ref_count(); 1 for a live kmalloc area
	pool     int32 // pool holding page_pool state (hold counted, not released), -1 if none
	mapped   bool  // page->dma_addr set by the pool's DMA mapping
	where    PageState
	pfn      uint64
	returned int32 // times the SKB return hook handed this page to a pool
	pfmem    bool  // page_is_pfmemalloc(): allocated from the emergency reserves
	released int32 // the pool that last released this page (page_pool_release_page), -1 if none
	pp       int32 // upstream: page->pp when skb_mark_for_recycle() named another pool, -1 otherwise
	hist     []string
}

// pool is one struct page_pool.
type pool struct {
	name       int32
	size       int
	dma        bool // PP_FLAG_DMA_MAP
	cache      []int32
	ring       []int32 // FIFO: produce at the end, consume from ringHead
	ringHead   int
	hold       uint32 // pages_state_hold_cnt
	release    uint32 // pages_state_release_cnt
	destroyed  bool   // page_pool_destroy() called
	freed      bool   // page_pool_free() ran
	destroyCnt int
	deferStart int64
	deferWarn  int64
	nextRetry  int64
	leakSeen   bool
	stalled    []string // pr_warn("stalled pool shutdown") lines
	crit       []string // pr_crit("page_pool refcnt violation") lines
}

func (p *pool) ringLen() int { return len(p.ring) - p.ringHead }

func (p *pool) inflight() int32 { return int32(p.hold - p.release) } // page_pool_inflight(): (s32)(hold - release)

// Model is the state of pools, pages and skbs. The zero value is not usable; use NewModel.
type Model struct {
	cfg   Config
	syms  *Symbols
	pools []pool
	pages []page
	skbs  []skb
	datas []shinfo
	obj   []int32 // symbol id -> index into pools/pages/skbs, -1 undefined
	now   int64   // milliseconds
	pfn   uint64

	history bool // record per-page history (slower; used by Run and for reports)
	line    int  // current operation's line, for reports
	opText  func() string

	Violations []Violation
	anyDestroy bool

	ctx        execCtx // the context skbs are freed in (`context` lines)
	pfmemalloc bool    // the page allocator hands out pfmemalloc pages (`pfmemalloc on`)
	completion []int32 // skbs queued by __dev_kfree_skb_irq() for net_tx_action()
	inKfree    int     // depth of __kfree_skb() calls on the stack (hook-in-kfree-skb-only)

	// tracer, when set, receives the tracepoints the kernel would emit (tests compare the
	// model with CheckTrace through it).
	tracer func(ev traceEvent)
}

// Violation is one broken invariant.
type Violation struct {
	Name    string   `json:"name"`
	Line    int      `json:"line"`              // scenario or trace line of the causing operation
	Op      string   `json:"op"`                // the causing operation
	Page    string   `json:"page,omitempty"`    // the page or object involved
	Detail  string   `json:"detail"`            // what happened
	History []string `json:"history,omitempty"` // what happened to the page before, oldest first
}

// Violation names (README.md describes each).
const (
	ForeignPageReturned = "foreign-page-returned"
	DoubleReturn        = "double-return"
	UseAfterFree        = "use-after-free"
	DMAMappedPageFreed  = "dma-mapped-page-freed"
	RefcountUnderflow   = "refcount-underflow"
	InflightLeak        = "inflight-leak"
	PoolPageInFrag      = "pool-page-in-frag"
	// SharedPageRecycled: a page enters its pool's alloc cache or ptr_ring while somebody else
	// (a pipe, a segment's frag, a zerocopy mapping) still holds a reference: the pool hands it
	// to the NIC, which overwrites data that is still being read.
	SharedPageRecycled = "shared-page-recycled"
	// DirectRecycleOutsideNAPI: a page enters a pool's lockless alloc cache from a context that
	// is not the NAPI poll owning that pool (page_pool_put_page() with allow_direct from another
	// softirq: TX completion, net_tx_action, another queue's poll): a data race on the cache.
	DirectRecycleOutsideNAPI = "direct-recycle-outside-napi"
	// NotSyncedForDevice (traces with TraceEventsSystem's events): a pool page is handed to the NIC — by the
	// slow path, or again after it came back to its pool — without arch_sync_dma_for_device of
	// the page since the CPU last used it. page_pool maps with DMA_ATTR_SKIP_CPU_SYNC and owns
	// the syncs (PP_FLAG_DMA_SYNC_DEV); on a device that is not DMA-coherent (the Espressobin's
	// NETA) dirty cache lines then overwrite what the NIC wrote.
	NotSyncedForDevice = "not-synced-for-device"
)

// ViolationNames lists every named invariant, most severe first.
var ViolationNames = []string{ForeignPageReturned, DoubleReturn, UseAfterFree, DMAMappedPageFreed,
	SharedPageRecycled, NotSyncedForDevice, DirectRecycleOutsideNAPI, RefcountUnderflow, InflightLeak, PoolPageInFrag}

// ctxKind is where code runs, as far as page_pool cares (in_serving_softirq(), in_irq(), and
// which NAPI poll owns a pool's alloc cache).
type ctxKind uint8

const (
	CtxProcess ctxKind = iota // task context: socket reads, sendfile, ...
	CtxSoftirq                // a softirq that is not a pool's NAPI poll: net_tx_action, another device's TX completion, timers
	CtxIRQ                    // hard irq or irqs disabled
	CtxNAPI                   // the NAPI poll owning pool ctx.pool (the driver's RX queue)
)

var ctxNames = [...]string{"process", "softirq", "irq", "napi"}

// execCtx is the current context.
type execCtx struct {
	kind ctxKind
	pool int32 // CtxNAPI: the pool whose NAPI poll runs
}

// inServingSoftirq mirrors in_serving_softirq().
func (c execCtx) inServingSoftirq() bool { return c.kind == CtxSoftirq || c.kind == CtxNAPI }

// NewModel returns an empty model for cfg whose objects are named by syms.
func NewModel(cfg Config, syms *Symbols, history bool) *Model {
	m := &Model{cfg: cfg, syms: syms, history: history}
	m.reset()
	return m
}

func (m *Model) reset() {
	m.pools = m.pools[:0]
	m.pages = m.pages[:0]
	m.skbs = m.skbs[:0]
	m.datas = m.datas[:0]
	m.obj = m.obj[:0]
	m.now, m.pfn = 0, 0x40000
	m.Violations = m.Violations[:0]
	m.anyDestroy = false
	m.ctx = execCtx{pool: -1}
	m.pfmemalloc = false
	m.completion = m.completion[:0]
	m.inKfree = 0
}

func (m *Model) bind(sym int32, idx int) {
	for int(sym) >= len(m.obj) {
		m.obj = append(m.obj, -1)
	}
	m.obj[sym] = int32(idx)
}

func (m *Model) lookup(sym int32) int32 {
	if sym < 0 || int(sym) >= len(m.obj) {
		return -1
	}
	return m.obj[sym]
}

func (m *Model) pageName(pg int32) string {
	if pg < 0 {
		return ""
	}
	return m.syms.Name(m.pages[pg].name)
}

func (m *Model) poolName(pl int32) string { return m.syms.Name(m.pools[pl].name) }

func (m *Model) note(pg int32, format string, args ...any) {
	if !m.history || pg < 0 {
		return
	}
	op := ""
	if m.opText != nil {
		op = m.opText()
	}
	m.pages[pg].hist = append(m.pages[pg].hist, fmt.Sprintf("line %d: %s: %s", m.line, op, fmt.Sprintf(format, args...)))
}

func (m *Model) violate(name string, pg int32, format string, args ...any) {
	v := Violation{Name: name, Line: m.line}
	if m.history {
		v.Detail = fmt.Sprintf(format, args...)
		if m.opText != nil {
			v.Op = m.opText()
		}
		if pg >= 0 {
			v.Page = m.pageName(pg)
			v.History = append([]string(nil), m.pages[pg].hist...)
		}
	}
	m.Violations = append(m.Violations, v)
	if pg >= 0 && m.history {
		m.note(pg, "VIOLATION %s", name)
	}
}

// newPage creates a page or kmalloc area named sym with refcount 1.
func (m *Model) newPage(sym int32, kind memKind) int32 {
	m.pfn++
	m.pages = append(m.pages, page{name: sym, kind: kind, ref: 1, pool: -1, where: StateInUse, pfn: m.pfn,
		released: -1, pp: -1, pfmem: m.pfmemalloc && kind == memPage})
	idx := int32(len(m.pages) - 1)
	if m.history {
		m.pages[idx].hist = nil
	}
	if sym >= 0 {
		m.bind(sym, int(idx))
	}
	return idx
}

// ---- pages: include/linux/mm.h, mm/page_alloc.c, mm/slab ----

// getPage mirrors get_page(): a reference on a freed page is a use-after-free.
func (m *Model) getPage(pg int32, why string) {
	p := &m.pages[pg]
	if p.ref <= 0 || p.where == StateFreed {
		m.violate(UseAfterFree, pg, "get_page() on a freed page (%s)", why)
		return
	}
	p.ref++
	m.note(pg, "get_page (%s): refcount %d", why, p.ref)
}

// putPage mirrors put_page() (and page_frag_free(), mm/page_alloc.c:5195-5201): the last
// reference frees the page. A page still DMA-mapped by its pool is dma-mapped-page-freed; one
// still holding page_pool state leaks the pool's inflight count forever.
func (m *Model) putPage(pg int32, why string) {
	p := &m.pages[pg]
	if p.kind == memSlab {
		m.violate(UseAfterFree, pg, "put_page() on a kmalloc area (%s)", why)
		return
	}
	if p.ref <= 0 {
		m.violate(RefcountUnderflow, pg, "put_page() on a page whose refcount is already 0 (%s)", why)
		return
	}
	p.ref--
	if p.ref > 0 {
		m.note(pg, "put_page (%s): refcount %d", why, p.ref)
		return
	}
	p.where = StateFreed
	if m.tracer != nil {
		m.tracer(traceEvent{kind: evPageFree, pool: -1, pfn: p.pfn})
	}
	m.note(pg, "put_page (%s): refcount 0, page freed", why)
	if p.mapped {
		m.violate(DMAMappedPageFreed, pg, "page freed by put_page() (%s) while still DMA-mapped by pool %s", why, m.poolName(p.pool))
	}
}

// kfreeArea mirrors kfree() of a kmalloc()ed head (skb_free_head(), skbuff.c:598-606).
func (m *Model) kfreeArea(pg int32) {
	p := &m.pages[pg]
	if p.kind != memSlab {
		m.violate(UseAfterFree, pg, "kfree() of a page-backed head")
		return
	}
	if p.ref <= 0 {
		m.violate(UseAfterFree, pg, "kfree() of an already freed kmalloc head")
		return
	}
	p.ref = 0
	p.where = StateFreed
	m.note(pg, "kfree: kmalloc head freed")
}

// ---- page_pool: net/core/page_pool.c ----

// poolCreate mirrors page_pool_create()/page_pool_init().
func (m *Model) poolCreate(sym int32, size int, dma bool) {
	m.pools = append(m.pools, pool{name: sym, size: size, dma: dma})
	m.bind(sym, len(m.pools)-1)
}

// poolAlloc mirrors page_pool_alloc_pages() (page_pool.c:247-259).
func (m *Model) poolAlloc(pl int32, sym int32) int32 {
	p := &m.pools[pl]
	if p.freed {
		m.violate(UseAfterFree, -1, "page_pool_alloc_pages() on pool %s, already freed by page_pool_destroy()", m.poolName(pl))
	}
	// __page_pool_get_cached(): pop the alloc cache (page_pool.c:161-163) ...
	if n := len(p.cache); n > 0 {
		pg := p.cache[n-1]
		p.cache = p.cache[:n-1]
		return m.handOut(pl, pg, sym, "from the alloc cache")
	}
	// ... or refill up to PP_ALLOC_CACHE_REFILL pages from the ptr_ring
	// (page_pool_refill_alloc_cache(), page_pool.c:104-153; the model has one NUMA node).
	if p.ringLen() > 0 {
		for len(p.cache) < allocCacheRefill && p.ringLen() > 0 {
			pg := p.ring[p.ringHead]
			p.ringHead++
			p.cache = append(p.cache, pg)
			m.pages[pg].where = StateInCache
		}
		p.compactRing()
		n := len(p.cache)
		pg := p.cache[n-1]
		p.cache = p.cache[:n-1]
		return m.handOut(pl, pg, sym, "refilled from the ptr_ring")
	}
	// __page_pool_alloc_pages_slow(): alloc_pages_node, dma_map_page_attrs, hold_cnt++ and the
	// page_pool_state_hold tracepoint (page_pool.c:185-242).
	pg := m.newPage(-1, memPage)
	pp := &m.pages[pg]
	pp.pool = pl
	pp.mapped = p.dma
	pp.where = StateInFlight
	p.hold++
	if m.tracer != nil {
		m.tracer(traceEvent{kind: evHold, pool: pl, pfn: pp.pfn, count: p.hold})
	}
	if sym >= 0 {
		pp.name = sym
		m.bind(sym, int(pg))
	}
	m.note(pg, "page_pool_alloc_pages slow path: new page, DMA-mapped=%v, pfmemalloc=%v, pool %s hold=%d", p.dma, pp.pfmem, m.poolName(pl), p.hold)
	return pg
}

func (p *pool) compactRing() {
	if p.ringHead > 64 && p.ringHead*2 > len(p.ring) {
		n := copy(p.ring, p.ring[p.ringHead:])
		p.ring = p.ring[:n]
		p.ringHead = 0
	}
}

// handOut gives a recycled page a new name: the driver now holds it.
func (m *Model) handOut(pl, pg int32, sym int32, how string) int32 {
	pp := &m.pages[pg]
	pp.where = StateInFlight
	if sym >= 0 {
		pp.name = sym
		m.bind(sym, int(pg))
	}
	m.note(pg, "page_pool_alloc_pages: recycled page %s (pool %s)", how, m.poolName(pl))
	return pg
}

// poolReleasePage mirrors page_pool_release_page() (page_pool.c:286-310): unmap when the pool
// maps pages, release_cnt++ and the page_pool_state_release tracepoint; the page leaves the pool.
func (m *Model) poolReleasePage(pl, pg int32, why string) {
	pp := &m.pages[pg]
	if pp.kind == memPage && pp.pool < 0 && pp.released == pl && pp.ref > 0 {
		m.violate(DoubleReturn, pg, "page_pool_release_page(%s) of a page that pool already released (%s)", m.poolName(pl), why)
		return
	}
	if pp.pool != pl || pp.kind != memPage {
		m.violate(ForeignPageReturned, pg, "page_pool_release_page(%s) of %s, which does not hold page_pool state of that pool (%s)",
			m.poolName(pl), m.ownerString(pg), why)
		return
	}
	if pp.ref <= 0 {
		m.violate(UseAfterFree, pg, "page_pool_release_page() of a freed page (%s)", why)
	}
	pp.mapped = false
	pp.pool = -1
	pp.released = pl
	if pp.where == StateInFlight {
		pp.where = StateInUse
	}
	m.pools[pl].release++
	if m.tracer != nil {
		m.tracer(traceEvent{kind: evRelease, pool: pl, pfn: pp.pfn, count: m.pools[pl].release})
	}
	m.note(pg, "page_pool_release_page (%s): unmapped, pool %s release=%d", why, m.poolName(pl), m.pools[pl].release)
}

func (m *Model) ownerString(pg int32) string {
	pp := &m.pages[pg]
	switch {
	case pp.kind == memSlab:
		return "a kmalloc area"
	case pp.pool >= 0:
		return "a page of pool " + m.poolName(pp.pool)
	default:
		return "a page without page_pool state"
	}
}

// poolReturnPage mirrors page_pool_return_page() (page_pool.c:314-323).
func (m *Model) poolReturnPage(pl, pg int32, why string) {
	m.poolReleasePage(pl, pg, why)
	m.putPage(pg, why)
}

// poolPutPage mirrors the driver's page_pool_put_page() (page_pool.c:367-410): the driver
// runs in the NAPI poll owning the pool, so allow_direct recycles into the alloc cache.
func (m *Model) poolPutPage(pl, pg int32, allowDirect bool, why string) {
	m.poolPut(pl, pg, putArgs{direct: allowDirect, driver: true}, why)
}

// putArgs says how page_pool_put_page() is called.
type putArgs struct {
	direct    bool // allow_direct
	driver    bool // called by the driver in its own NAPI poll (in_serving_softirq() holds)
	ignoreRef bool // return-ignores-refcount: the refcount test is skipped
}

// poolPut mirrors page_pool_put_page() (page_pool.c:367-410) for any caller.
func (m *Model) poolPut(pl, pg int32, a putArgs, why string) {
	p := &m.pools[pl]
	pp := &m.pages[pg]
	if p.freed {
		m.violate(UseAfterFree, pg, "page_pool_put_page() into pool %s, already freed by page_pool_destroy() (%s)", m.poolName(pl), why)
		pp.where = StateLost
		return
	}
	if pp.kind == memPage && pp.pool < 0 && pp.released == pl && pp.ref > 0 {
		// page_pool_put_page() does not check: the unmapped page would go into the ring and
		// be handed to the NIC again with dma_addr 0, and released a second time.
		m.violate(DoubleReturn, pg, "page_pool_put_page(%s) of a page that pool already released (%s)", m.poolName(pl), why)
		pp.where = StateLost
		return
	}
	if pp.kind != memPage || pp.pool != pl {
		m.violate(ForeignPageReturned, pg, "page_pool_put_page(%s) of %s (%s)", m.poolName(pl), m.ownerString(pg), why)
		if pp.ref > 0 {
			pp.where = StateLost
		}
		return
	}
	if pp.ref <= 0 || pp.where == StateFreed {
		m.violate(UseAfterFree, pg, "page_pool_put_page() of a freed page (%s)", why)
		return
	}
	if pp.where == StateInCache || pp.where == StateInRing {
		m.violate(DoubleReturn, pg, "page_pool_put_page() of a page already in pool %s's %s (%s)", m.poolName(pl), pp.where, why)
		return
	}
	// page_ref_count(page) == 1 && pool_page_reusable() (376-377); pool_page_reusable() is
	// !page_is_pfmemalloc(page) (356-359)
	if (pp.ref == 1 || a.ignoreRef) && !pp.pfmem {
		if pp.ref != 1 {
			m.violate(SharedPageRecycled, pg, "page_pool_put_page(%s) recycles a page whose refcount is %d (%s): the pool will hand it to the NIC while another holder reads it",
				m.poolName(pl), pp.ref, why)
		}
		// page_pool_recycle_in_cache() when allow_direct && in_serving_softirq() (384-386, 342-351)
		if a.direct && (a.driver || m.ctx.inServingSoftirq()) && len(p.cache) < allocCacheSize {
			if !a.driver && (m.ctx.kind != CtxNAPI || m.ctx.pool != pl) {
				m.violate(DirectRecycleOutsideNAPI, pg, "page_pool_put_page(%s, allow_direct) in %s puts the page into the lockless alloc cache outside the pool's NAPI poll (%s)",
					m.poolName(pl), m.ctxString(), why)
			}
			p.cache = append(p.cache, pg)
			pp.where = StateInCache
			m.note(pg, "page_pool_put_page (%s): recycled into pool %s's alloc cache", why, m.poolName(pl))
			return
		}
		// page_pool_recycle_in_ring(): ptr_ring_produce (325-335)
		if p.ringLen() < p.size {
			p.ring = append(p.ring, pg)
			pp.where = StateInRing
			m.note(pg, "page_pool_put_page (%s): recycled into pool %s's ptr_ring", why, m.poolName(pl))
			return
		}
		// ring full: page_pool_return_page() (388-390)
		m.note(pg, "page_pool_put_page (%s): pool %s's ptr_ring is full", why, m.poolName(pl))
		m.poolReturnPage(pl, pg, why+", ring full")
		return
	}
	// refcount != 1 or pfmemalloc: page_pool_release_page() then put_page() (408-409): the page
	// leaves the pool.
	if pp.pfmem {
		m.note(pg, "page_pool_put_page (%s): pfmemalloc page is not reusable, page leaves pool %s", why, m.poolName(pl))
	} else {
		m.note(pg, "page_pool_put_page (%s): refcount %d != 1, page leaves pool %s", why, pp.ref, m.poolName(pl))
	}
	m.poolReleasePage(pl, pg, why)
	m.putPage(pg, why)
}

func (m *Model) ctxString() string {
	if m.ctx.kind == CtxNAPI {
		return "the NAPI poll of pool " + m.poolName(m.ctx.pool)
	}
	return ctxNames[m.ctx.kind] + " context"
}

// poolDestroy mirrors page_pool_destroy() (page_pool.c:510-526).
func (m *Model) poolDestroy(pl int32) {
	p := &m.pools[pl]
	if p.destroyed {
		m.violate(UseAfterFree, -1, "page_pool_destroy() of pool %s twice", m.poolName(pl))
		return
	}
	p.destroyed = true
	m.anyDestroy = true
	if m.poolRelease(pl) == 0 {
		return
	}
	p.deferStart = m.now
	p.deferWarn = m.now + deferWarnMs
	p.nextRetry = m.now + deferTimeMs
}

// poolRelease mirrors page_pool_release() (page_pool.c:469-479): page_pool_scrub() empties the
// alloc cache on the first attempt only (441-456) and the ptr_ring each time (413-426); the pool
// is freed once inflight is 0.
func (m *Model) poolRelease(pl int32) int32 {
	p := &m.pools[pl]
	if p.destroyCnt == 0 {
		for len(p.cache) > 0 {
			pg := p.cache[len(p.cache)-1]
			p.cache = p.cache[:len(p.cache)-1]
			m.pages[pg].where = StateInFlight
			m.poolReturnPage(pl, pg, "page_pool_empty_alloc_cache_once")
		}
	}
	p.destroyCnt++
	for p.ringLen() > 0 {
		pg := p.ring[p.ringHead]
		p.ringHead++
		m.pages[pg].where = StateInFlight
		if r := m.pages[pg].ref; r != 1 {
			p.crit = append(p.crit, fmt.Sprintf("page_pool_empty_ring() page_pool refcnt %d violation", r))
		}
		m.poolReturnPage(pl, pg, "page_pool_empty_ring")
	}
	p.ring, p.ringHead = p.ring[:0], 0
	in := p.inflight()
	if m.tracer != nil { // page_pool_inflight() emits page_pool_release
		m.tracer(traceEvent{kind: evPoolRelease, pool: pl, inflight: in, hold: p.hold, release: p.release, cnt: uint64(p.destroyCnt)})
	}
	if in == 0 {
		p.freed = true // page_pool_free()
	}
	return in
}

// wait advances time, running page_pool_release_retry() (page_pool.c:481-502) every DEFER_TIME
// for pools whose destroy is deferred, with its "stalled pool shutdown" warning.
func (m *Model) wait(ms int64) {
	end := m.now + ms
	for {
		next := int64(-1)
		for i := range m.pools {
			p := &m.pools[i]
			if p.destroyed && !p.freed && p.nextRetry <= end && (next < 0 || p.nextRetry < next) {
				next = p.nextRetry
			}
		}
		if next < 0 {
			break
		}
		m.now = next
		for i := range m.pools {
			p := &m.pools[i]
			if !p.destroyed || p.freed || p.nextRetry != next {
				continue
			}
			in := m.poolRelease(int32(i))
			if in == 0 {
				continue
			}
			if m.now >= p.deferWarn {
				sec := (m.now - p.deferStart) / 1000
				p.stalled = append(p.stalled, fmt.Sprintf("page_pool_release_retry() stalled pool shutdown %d inflight %d sec", in, sec))
				p.deferWarn = m.now + deferWarnMs
			}
			p.nextRetry = m.now + deferTimeMs
		}
	}
	m.now = end
}

// checkLeaks reports inflight-leak for destroyed pools that are quiescent: no page holding the
// pool's state is out of the pool or waiting in its ptr_ring, yet inflight != 0, so
// page_pool_release_retry() can never free the pool.
func (m *Model) checkLeaks() {
	if !m.anyDestroy {
		return
	}
	for i := range m.pools {
		p := &m.pools[i]
		if !p.destroyed || p.freed || p.leakSeen {
			continue
		}
		pending := int32(p.ringLen())
		quiet := true
		for j := range m.pages {
			pg := &m.pages[j]
			if pg.pool == int32(i) && pg.ref > 0 && pg.where == StateInFlight {
				quiet = false
				break
			}
		}
		if !quiet || p.inflight() == pending {
			continue
		}
		p.leakSeen = true
		culprit := int32(-1)
		for j := range m.pages {
			if m.pages[j].pool == int32(i) && m.pages[j].ref <= 0 {
				culprit = int32(j)
				break
			}
		}
		m.violate(InflightLeak, culprit, "pool %s is destroyed and quiescent but inflight=%d (hold=%d release=%d): page_pool_release_retry() will retry forever",
			m.poolName(int32(i)), p.inflight(), p.hold, p.release)
	}
}
