package gomodel

// skb is one struct sk_buff.
type skb struct {
	name      int32
	alive     bool
	users     int32 // skb->users
	data      int32 // index of the data area's skb_shared_info
	cloned    bool  // skb->cloned
	mem       int32 // prerfc/rfc: xdp_mem_info naming a page_pool (index), -1 for none
	ppRecycle bool  // upstream: skb->pp_recycle
	owner     int32 // the skb whose frag_list holds this one, -1 for none
	tx        bool  // a segment made by skb_segment(): on its way to a NIC, never coalesced or GRO-merged
}

// shinfo is one data area: the head and the skb_shared_info at its end.
type shinfo struct {
	head     int32 // page or kmalloc area
	headFrag bool  // skb->head_frag: the head is a page fragment, freed by skb_free_frag()
	dataref  int32 // shinfo->dataref
	frags    []int32
	fragList []int32 // skbs
	// listed says the frag_list was not built by GRO (frag_list op, rfc/fraglist coalesce);
	// the generator then never uses the skb as a GRO head, as the kernel never does.
	listed bool
}

func (m *Model) newData(head int32, headFrag bool) int32 {
	n := len(m.datas)
	if n < cap(m.datas) {
		m.datas = m.datas[:n+1]
	} else {
		m.datas = append(m.datas, shinfo{})
	}
	d := &m.datas[n]
	d.head, d.headFrag, d.dataref = head, headFrag, 1
	d.frags = d.frags[:0]
	d.fragList = d.fragList[:0]
	d.listed = false
	return int32(n)
}

func (m *Model) newSkb(sym int32, data int32) int32 {
	m.skbs = append(m.skbs, skb{name: sym, alive: true, users: 1, data: data, mem: -1, owner: -1})
	idx := int32(len(m.skbs) - 1)
	m.bind(sym, int(idx))
	return idx
}

func (m *Model) skbName(s int32) string { return m.syms.Name(m.skbs[s].name) }

// live reports whether s may be used; touching a freed skb is a use-after-free.
func (m *Model) live(s int32, what string) bool {
	if m.skbs[s].alive {
		return true
	}
	m.violate(UseAfterFree, m.datas[m.skbs[s].data].head, "%s on skb %s, already freed", what, m.skbName(s))
	return false
}

// touch reads the data of s: every page it references must still be allocated.
func (m *Model) touch(s int32, what string) {
	d := &m.datas[m.skbs[s].data]
	if h := d.head; m.pages[h].ref <= 0 {
		m.violate(UseAfterFree, h, "%s reads the head of skb %s, already freed", what, m.skbName(s))
	}
	for _, f := range d.frags {
		if m.pages[f].ref <= 0 {
			m.violate(UseAfterFree, f, "%s reads a frag of skb %s, already freed", what, m.skbName(s))
		}
	}
}

// hookVariant says whether the variant has the prerfc/rfc/series mem id hook.
func (m *Model) hookVariant() bool {
	return m.cfg.Variant == VariantPreRFC || m.cfg.Variant == VariantRFC || m.cfg.Variant == VariantSeries
}

// mut reports whether the model runs mutant x (of its base design).
func (m *Model) mut(x Mutant) bool { return m.cfg.Mutant == x && m.cfg.Variant == x.Base() }

// stealStrategy is what skb_try_coalesce()/skb_gro_receive() do with a page_pool head, for the
// variants whose skb carries a mem id (rfc: the Coalesce strategy; series: release).
func (m *Model) stealStrategy() (Coalesce, bool) {
	switch m.cfg.Variant {
	case VariantRFC:
		return m.cfg.Coalesce, true
	case VariantSeries:
		return CoalesceRelease, true
	}
	return 0, false
}

// memRegistered mirrors the rhashtable_lookup() of xdp_return_skb_head() and
// xdp_release_skb_head() (the series' xdp.c): a pool's id is registered until page_pool_free().
func (m *Model) memRegistered(pl int32) bool { return pl >= 0 && !m.pools[pl].freed }

// releaseHead mirrors the series' skb_pp_release_head() (and rfc/release's equivalent): the head
// of s leaves its pool before it becomes a frag. It returns false, leaving everything as it
// was, when the id names no registered pool (series: WARN_ONCE, the caller must not steal).
func (m *Model) releaseHead(s int32, why string) bool {
	sk := &m.skbs[s]
	if sk.mem < 0 {
		return true
	}
	h := m.datas[sk.data].head
	if m.cfg.Variant == VariantSeries && !m.memRegistered(sk.mem) {
		m.note(h, "%s: WARN_ONCE skb head with unknown page_pool id (pool %s is freed): the head is not stolen", why, m.poolName(sk.mem))
		return false
	}
	m.poolReleasePage(sk.mem, h, why)
	sk.mem = -1
	return true
}

// checkPoolFrag enforces the rfc design rule (prerfc, rfc, series): a page holding page_pool
// state never becomes a frag on the reference the pool accounts for (a stolen head, a driver's
// frag), since frags are freed by put_page() and only the head goes through the hook. A frag
// that takes its own reference (skb_segment(), pskb_copy(), splice) is fine: the refcount rule
// of page_pool_put_page() releases the page when its head is freed first. Moving existing frags
// (GRO's frags branch, skb_try_coalesce()) creates no such frag either.
func (m *Model) checkPoolFrag(f int32, what string) {
	if !m.hookVariant() {
		return
	}
	if p := &m.pages[f]; p.kind == memPage && p.pool >= 0 && p.ref > 0 {
		m.violate(PoolPageInFrag, f, "%s made a page holding page_pool state of pool %s a frag; its put_page() will bypass the pool", what, m.poolName(p.pool))
	}
}

// ---- allocation: net/core/skbuff.c, drivers/net/ethernet/marvell/mvneta.c ----

// allocSkb mirrors __alloc_skb() (kmalloc head) or, with frag, napi_alloc_skb() whose head comes
// from the per-CPU page_frag cache (head_frag=1). The model gives each page_frag head its own
// page holding one reference.
func (m *Model) allocSkb(sym, headSym int32, frag bool) {
	kind := memSlab
	if frag {
		kind = memPage
	}
	h := m.newPage(headSym, kind)
	if frag {
		m.note(h, "napi_alloc_skb: page_frag head of skb %s", m.syms.Name(sym))
	} else {
		m.note(h, "__alloc_skb: kmalloc head of skb %s", m.syms.Name(sym))
	}
	m.newSkb(sym, m.newData(h, frag))
}

// Driver steps of build_skb and add_rx_frag (`build_skb SKB PAGE nomark|mark POOL`,
// `add_rx_frag SKB PAGE norelease`): what the scenario says the driver does instead of the
// variant's driver code.
const (
	driverDefault = -1 // the variant's driver code
	driverNoMark  = -2 // neither page_pool_release_page() nor skb_mark_for_recycle()
)

// buildSkb mirrors build_skb() around a driver page (head_frag=1, no new page reference;
// skbuff.c:331-341 also sets skb->pfmemalloc for a pfmemalloc page, which the model does not
// need: only page_pool_put_page() looks at the page's flag) and then what the driver does in
// each variant (mvneta_swbm_build_skb(), mvneta.c:2306-2333). mark is driverDefault,
// driverNoMark, or the pool whose id the driver marks the skb with.
func (m *Model) buildSkb(sym, pg int32, mark int32) error {
	p := &m.pages[pg]
	if p.ref <= 0 {
		m.violate(UseAfterFree, pg, "build_skb() around a freed page")
	}
	if mark >= 0 && m.cfg.Variant == VariantNone {
		return invalidf("variant none has no skb_mark_for_recycle(): the driver releases its pages")
	}
	s := m.newSkb(sym, m.newData(pg, true))
	m.note(pg, "build_skb: head of skb %s", m.syms.Name(sym))
	if p.kind != memPage || p.pool < 0 {
		if mark >= 0 {
			m.markSkb(s, pg, mark)
		}
		return nil
	}
	switch {
	case mark == driverNoMark:
		m.note(pg, "driver: neither page_pool_release_page() nor skb_mark_for_recycle() on the head of %s", m.syms.Name(sym))
		return nil
	case mark >= 0:
		m.markSkb(s, pg, mark)
		return nil
	}
	switch m.cfg.Variant {
	case VariantNone:
		// 5.10 mvneta: page_pool_release_page() right after build_skb() (mvneta.c:2317).
		m.poolReleasePage(p.pool, pg, "mvneta_swbm_build_skb")
	case VariantSeries:
		// The series (net-mvneta-recycle-rx-heads-through-the-skb): skb_mark_for_recycle(skb,
		// &rxq->xdp_rxq.mem) instead of page_pool_release_page().
		pl := p.pool
		if m.mut(MutDriverReleasesAndMarks) {
			m.poolReleasePage(pl, pg, "mvneta_swbm_build_skb (driver-releases-and-marks)")
		}
		if m.mut(MutWrongPoolID) {
			pl = 0 // &pp->rxqs[0].xdp_rxq.mem: the first queue's pool
		}
		m.markSkb(s, pg, pl)
	case VariantPreRFC, VariantRFC:
		// The design: the driver records the pool in the skb's xdp_mem_info.
		m.markSkb(s, pg, p.pool)
	case VariantUpstream:
		// 5.14 skb_mark_for_recycle(): skb->pp_recycle = 1, page->pp = pool.
		m.skbs[s].ppRecycle = true
	}
	return nil
}

// markSkb mirrors skb_mark_for_recycle() naming pool pl: the mem id (prerfc, rfc, series), or
// 5.14's skb->pp_recycle and page->pp (page_pool_store_mem_info()).
func (m *Model) markSkb(s, pg, pl int32) {
	if m.cfg.Variant == VariantUpstream {
		m.skbs[s].ppRecycle = true
		if pl != m.pages[pg].pool {
			m.pages[pg].pp = pl
		}
	} else {
		m.skbs[s].mem = pl
	}
	m.note(pg, "skb %s: marked for recycle into pool %s", m.skbName(s), m.poolName(pl))
}

// addRxFrag mirrors skb_add_rx_frag() (the caller's page reference moves into the frag) and
// the driver's follow-up: 5.10's mvneta releases the page from its pool right after
// (mvneta.c:2325-2330); 5.14 keeps page_pool state on frags and recycles them via pp_recycle.
func (m *Model) addRxFrag(s, pg int32, noRelease bool) bool {
	if !m.live(s, "skb_add_rx_frag") {
		return true
	}
	d := &m.datas[m.skbs[s].data]
	if len(d.frags) >= maxSkbFrags {
		return false
	}
	if m.pages[pg].ref <= 0 {
		m.violate(UseAfterFree, pg, "skb_add_rx_frag() of a freed page")
	}
	d.frags = append(d.frags, pg)
	m.note(pg, "skb_add_rx_frag: frag %d of skb %s", len(d.frags)-1, m.skbName(s))
	if p := &m.pages[pg]; p.kind == memPage && p.pool >= 0 {
		switch m.cfg.Variant {
		case VariantNone, VariantPreRFC, VariantRFC, VariantSeries:
			switch {
			case noRelease:
				m.note(pg, "driver: no page_pool_release_page() after skb_add_rx_frag")
			case m.mut(MutDriverFragNoRelease):
				m.note(pg, "driver: no page_pool_release_page() after skb_add_rx_frag (driver-frag-no-release)")
			default:
				m.poolReleasePage(p.pool, pg, "mvneta_swbm_build_skb, frag")
			}
		case VariantUpstream:
			m.skbs[s].ppRecycle = true
		}
	}
	m.checkPoolFrag(pg, "skb_add_rx_frag")
	return true
}

// ---- copies: net/core/skbuff.c ----

// clone mirrors skb_clone()/__skb_clone() (skbuff.c:990-1020): same head and head_frag,
// dataref++, both skbs marked cloned, no page reference. __copy_skb_header() copies prerfc's
// xdp_mem_info; rfc's sits after head_frag and is copied explicitly; 5.14 copies pp_recycle.
func (m *Model) clone(sym, s int32) {
	if !m.live(s, "skb_clone") {
		return
	}
	o := m.skbs[s]
	m.datas[o.data].dataref++
	n := m.newSkb(sym, o.data)
	m.skbs[s].cloned = true
	ns := &m.skbs[n]
	ns.cloned = true
	ns.mem = o.mem
	if m.mut(MutCloneForgetsID) {
		ns.mem = -1 // clone-forgets-id: no skb_pp_set_mem_id(n, skb_pp_mem_id(skb))
	}
	ns.ppRecycle = o.ppRecycle
	m.note(m.datas[o.data].head, "skb_clone: skb %s shares the head of %s, dataref %d", m.syms.Name(sym), m.skbName(s), m.datas[o.data].dataref)
}

// copyHeader mirrors what __copy_skb_header() (skbuff.c:938-984) carries into a copy that has
// a new head: prerfc's xdp_mem_info lies inside headers_start..headers_end and is copied (the
// prerfc bug); rfc's is not; pp_recycle lies before headers_start and is not either.
func (m *Model) copyHeader(n, s int32) {
	if m.cfg.Variant == VariantPreRFC {
		m.skbs[n].mem = m.skbs[s].mem
	}
}

// copy mirrors skb_copy() (skbuff.c:1518-1543): a new kmalloc head holding all the bytes
// (frags and frag_list linearized, no page reference), then skb_copy_header().
func (m *Model) copy(sym, headSym, s int32) {
	if d, ok := m.copyHead(sym, headSym, s, "skb_copy"); ok {
		m.copyHeader(m.newSkb(sym, d), s)
	}
}

// copyHead is how skb_copy() and __pskb_copy_fclone() begin: skb s must be live, and the copy
// sym gets a new kmalloc head. It returns the copy's data.
func (m *Model) copyHead(sym, headSym, s int32, op string) (int32, bool) {
	if !m.live(s, op) {
		return -1, false
	}
	m.touch(s, op)
	h := m.newPage(headSym, memSlab)
	m.note(h, "%s: kmalloc head of skb %s, a copy of %s", op, m.syms.Name(sym), m.skbName(s))
	return m.newData(h, false), true
}

// pskbCopy mirrors __pskb_copy_fclone() (skbuff.c:1563-1608): a new kmalloc head with the
// linear bytes, skb_frag_ref() on every frag, skb_get() on every frag_list member, then
// skb_copy_header().
func (m *Model) pskbCopy(sym, headSym, s int32) {
	d, ok := m.copyHead(sym, headSym, s, "pskb_copy")
	if !ok {
		return
	}
	od := m.skbs[s].data
	for _, f := range m.datas[od].frags {
		m.getPage(f, "pskb_copy: skb_frag_ref")
		m.datas[d].frags = append(m.datas[d].frags, f)
	}
	for _, l := range m.datas[od].fragList {
		m.skbs[l].users++ // skb_clone_fraglist(): skb_get()
		m.datas[d].fragList = append(m.datas[d].fragList, l)
	}
	m.datas[d].listed = m.datas[od].listed
	n := m.newSkb(sym, d)
	m.copyHeader(n, s)
}

// expandHead mirrors pskb_expand_head() (skbuff.c:1627-1711): a new kmalloc head; a cloned
// skb takes frag and frag_list references then drops its dataref with skb_release_data(),
// otherwise the old head goes straight to skb_free_head(). head_frag=0, cloned=0, dataref=1.
// rfc and the series clear the id on the new head (skb_pp_set_mem_id(skb, 0) after
// head_frag = 0). prerfc's id lies inside headers_start..headers_end, which pskb_expand_head()
// leaves alone like every other header field: the new kmalloc head keeps it.
func (m *Model) expandHead(s, headSym int32) {
	if !m.live(s, "pskb_expand_head") {
		return
	}
	m.touch(s, "pskb_expand_head")
	old := m.skbs[s].data
	h := m.newPage(headSym, memSlab)
	m.note(h, "pskb_expand_head: new kmalloc head of skb %s", m.skbName(s))
	d := m.newData(h, false)
	od := &m.datas[old]
	nd := &m.datas[d]
	nd.frags = append(nd.frags, od.frags...)
	nd.fragList = append(nd.fragList, od.fragList...)
	nd.listed = od.listed
	if m.skbs[s].cloned {
		for _, f := range nd.frags {
			m.getPage(f, "pskb_expand_head: skb_frag_ref")
		}
		for _, l := range nd.fragList {
			m.skbs[l].users++ // skb_clone_fraglist()
		}
		m.releaseData(s)
	} else {
		m.skbFreeHead(s)
	}
	sk := &m.skbs[s]
	sk.data = d
	sk.cloned = false
	switch {
	case m.cfg.Variant == VariantPreRFC:
		if sk.mem >= 0 {
			m.note(h, "pskb_expand_head: the header fields, xdp_mem_info among them, stay: kmalloc head with pool %s's id", m.poolName(sk.mem))
		}
	case m.mut(MutExpandKeepsID):
		if sk.mem >= 0 {
			m.note(h, "pskb_expand_head (expand-keeps-id): the new kmalloc head keeps pool %s's id", m.poolName(sk.mem))
		}
	case m.hookVariant():
		sk.mem = -1
	}
}

// ---- merging: skb_try_coalesce(), skb_gro_receive(), frag_list ----

// tryCoalesce mirrors skb_try_coalesce() (skbuff.c:5208-5282) followed by the caller's
// kfree_skb_partial(from, fragstolen) (skbuff.c:5190-5194), as tcp_try_coalesce() does.
// fits says from->len <= skb_tailroom(to): the bytes are copied. It returns whether it merged
// and, when it did not, why.
func (m *Model) tryCoalesce(to, from int32, fits bool) (bool, string) {
	if !m.live(to, "skb_try_coalesce") || !m.live(from, "skb_try_coalesce") {
		return false, "freed skb"
	}
	if m.skbs[to].cloned {
		return false, "to is cloned"
	}
	if fits {
		m.touch(from, "skb_try_coalesce")
		m.kfreeSkbNow(from, "kfree_skb_partial(from, false)")
		return true, ""
	}
	// upstream (V2 of the series; mainline 1effe8ca4e34 and 0646dc31ca88): never mix page_pool
	// and plain references in one skb, and never take the frags of a cloned page_pool skb. V2
	// checks after the tailroom copy above, which moves no page (mainline checks before it).
	if m.cfg.Variant == VariantUpstream && !m.mut(MutCoalesceMixesRefs) {
		if m.skbs[to].ppRecycle != m.skbs[from].ppRecycle {
			return false, "pp_recycle differs"
		}
		if m.skbs[from].ppRecycle && m.skbs[from].cloned {
			return false, "from is a cloned page_pool skb"
		}
	}
	td, fd := &m.datas[m.skbs[to].data], &m.datas[m.skbs[from].data]
	if len(td.fragList) > 0 || len(fd.fragList) > 0 {
		return false, "frag_list present"
	}
	if len(td.frags)+len(fd.frags) >= maxSkbFrags {
		return false, "too many frags"
	}
	if m.mut(MutCoalesceReleaseBeforeCloneCheck) && !m.releaseHead(from, "skb_try_coalesce (release-before-clone-check)") {
		return false, "series: unknown page_pool id"
	}
	if !fd.headFrag || m.skbs[from].cloned { // skb_head_is_locked() (skbuff.h:4583-4586), skbuff.c:5241
		return false, "head of from is locked"
	}
	head := fd.head
	if strat, ok := m.stealStrategy(); ok && m.skbs[from].mem >= 0 {
		switch strat {
		case CoalesceReject:
			return false, "rfc/reject: head is a page_pool page"
		case CoalesceFragList:
			m.appendFragList(to, from, "skb_try_coalesce (rfc/fraglist)")
			m.datas[m.skbs[to].data].listed = true
			return true, ""
		case CoalesceRelease:
			if m.mut(MutCoalesceNoRelease) {
				break
			}
			// the series: after every check that can still fail (skbuff.c:5241 + patch 3)
			if !m.releaseHead(from, "skb_try_coalesce: skb_pp_release_head") {
				return false, "series: unknown page_pool id"
			}
		}
	}
	m.touch(from, "skb_try_coalesce")
	start := len(td.frags)
	td.frags = append(td.frags, head)
	m.note(head, "skb_try_coalesce: head of %s stolen as frag %d of %s (no new reference)", m.skbName(from), start, m.skbName(to))
	td.frags = append(td.frags, fd.frags...)
	fd.frags = fd.frags[:0] // from is not cloned: from_shinfo->nr_frags = 0
	m.checkPoolFrag(head, "skb_try_coalesce")
	// kfree_skb_partial(from, true): skb_release_head_state() and the struct only.
	m.skbs[from].alive = false
	return true, ""
}

// groReceive mirrors skb_gro_receive() (skbuff.c:4158-4267) and napi_skb_finish()'s freeing
// (dev.c:6143-6150). An skb with frags is taken to carry its payload in them (the
// headlen <= offset branch); one without frags but with a page head has that head stolen.
func (m *Model) groReceive(p, s int32) (bool, string) {
	if !m.live(p, "skb_gro_receive") || !m.live(s, "skb_gro_receive") {
		return false, "freed skb"
	}
	// upstream: "Do not splice page pool based packets w/ non-page pool packets", the check
	// skb_gro_receive() gained in 2023 ("skb: Do mix page pool and page referenced frags in
	// GRO"); 5.14 itself lacked it. The model includes it: upstream is the design as it settled.
	if m.cfg.Variant == VariantUpstream && m.skbs[p].ppRecycle != m.skbs[s].ppRecycle {
		return false, "pp_recycle differs: -ETOOMANYREFS"
	}
	lp := p // NAPI_GRO_CB(p)->last
	if fl := m.datas[m.skbs[p].data].fragList; len(fl) > 0 {
		lp = fl[len(fl)-1]
	}
	ld, sd := &m.datas[m.skbs[lp].data], &m.datas[m.skbs[s].data]
	switch {
	case len(sd.frags) > 0:
		if len(ld.frags)+len(sd.frags) > maxSkbFrags {
			break
		}
		m.touch(s, "skb_gro_receive")
		ld.frags = append(ld.frags, sd.frags...)
		sd.frags = sd.frags[:0] // skbinfo->nr_frags = 0
		m.kfreeSkbNow(s, "napi_skb_finish: NAPI_GRO_FREE, __kfree_skb")
		return true, ""
	case sd.headFrag:
		if len(ld.frags)+1+len(sd.frags) > maxSkbFrags {
			break
		}
		head := sd.head
		if strat, ok := m.stealStrategy(); ok && m.skbs[s].mem >= 0 {
			switch strat {
			case CoalesceReject:
				return false, "rfc/reject: head is a page_pool page"
			case CoalesceFragList:
				m.appendFragList(p, s, "skb_gro_receive (rfc/fraglist)")
				return true, ""
			case CoalesceRelease:
				if m.mut(MutGroNoRelease) {
					break
				}
				if !m.releaseHead(s, "skb_gro_receive: skb_pp_release_head") {
					m.appendFragList(p, s, "skb_gro_receive: unknown page_pool id, merge")
					return true, ""
				}
			}
		}
		m.touch(s, "skb_gro_receive")
		ld.frags = append(ld.frags, head)
		m.note(head, "skb_gro_receive: head of %s stolen as a frag of %s (no new reference)", m.skbName(s), m.skbName(lp))
		ld.frags = append(ld.frags, sd.frags...)
		m.checkPoolFrag(head, "skb_gro_receive")
		// napi_skb_free_stolen_head(): the struct only (dev.c:6124-6130).
		m.skbs[s].alive = false
		return true, ""
	}
	m.appendFragList(p, s, "skb_gro_receive: merge")
	return true, ""
}

// appendFragList makes s a member of p's frag_list; p now owns the reference.
func (m *Model) appendFragList(p, s int32, why string) {
	d := &m.datas[m.skbs[p].data]
	d.fragList = append(d.fragList, s)
	m.skbs[s].owner = p
	m.note(m.datas[m.skbs[s].data].head, "%s: skb %s appended to the frag_list of %s", why, m.skbName(s), m.skbName(p))
}

// fragListAppend appends from to to's frag_list (as GRO's merge path, ip_defrag and the
// fraglist strategy do); to takes over from's reference.
func (m *Model) fragListAppend(to, from int32) {
	if !m.live(to, "frag_list append") || !m.live(from, "frag_list append") {
		return
	}
	m.appendFragList(to, from, "frag_list append")
	m.datas[m.skbs[to].data].listed = true
}

// ---- GSO: skb_segment() ----

// segmentCheck returns why skb_segment() cannot run on s as the generator and scenarios use it,
// or "" (the kernel would BUG() or never build such an skb).
func (m *Model) segmentCheck(s int32, clonePath bool) string {
	for _, l := range m.datas[m.skbs[s].data].fragList {
		ld := &m.datas[m.skbs[l].data]
		if len(ld.fragList) > 0 {
			return "a frag_list member of " + m.skbName(s) + " has a frag_list of its own, which GRO never builds"
		}
		if !clonePath && len(ld.frags) == 0 && !ld.headFrag {
			return "frag_list member " + m.skbName(l) + " has a kmalloc head with payload: BUG_ON(!list_skb->head_frag) (skbuff.c:4047); use `segment ... clone`"
		}
	}
	return ""
}

// segment mirrors validate_xmit_skb() (dev.c:3667-3676) forwarding a GRO packet to a NIC
// without the packet's GSO type: skb_gso_segment() -> skb_segment() (skbuff.c:3808-4156), then
// consume_skb() of the original. Every segment gets a new __alloc_skb() head holding the
// headers and any linear payload (copied: no reference on s's head), then
// __copy_skb_header(nskb, head_skb) (3992): prerfc's id is copied into it. Payload in frags is
// shared: __skb_frag_ref() on each of s's frags (4066-4067), and for each frag_list member its
// frags, and its head, turned into a frag by skb_head_frag_to_page_desc() (3673-3684, 4033-4052)
// when a segment runs into it; with clonePath a member whose linear data starts a segment is
// skb_clone()d (3936), pskb_trim()med and skb_cow_head()ed (3966), i.e. pskb_expand_head() on
// the clone: a kmalloc copy of its head, references on its frags, dataref back to 1 (the
// member stays cloned), and the clone's id cleared with the old head (series; kept by
// expand-keeps-id). The model merges the segments into one skb: freeing it drops every
// segment's references, as the TX completion of the last segment would.
func (m *Model) segment(sym, headSym, s int32, clonePath bool) {
	if !m.live(s, "skb_segment") {
		return
	}
	m.touch(s, "skb_segment")
	h := m.newPage(headSym, memSlab)
	m.note(h, "skb_segment: __alloc_skb head of the segments %s of %s", m.syms.Name(sym), m.skbName(s))
	d := m.newData(h, false)
	ref := func(f int32, why string) {
		m.getPage(f, why)
		m.datas[d].frags = append(m.datas[d].frags, f)
	}
	for _, f := range m.datas[m.skbs[s].data].frags {
		ref(f, "skb_segment: __skb_frag_ref")
	}
	stale := int32(-1)
	for _, l := range m.datas[m.skbs[s].data].fragList {
		m.touch(l, "skb_segment")
		ld := &m.datas[m.skbs[l].data]
		if len(ld.frags) == 0 {
			if clonePath {
				// skb_clone(list_skb): list_skb->cloned = 1, the clone copies the id; its
				// pskb_expand_head() drops the dataref again and clears the id (series).
				m.skbs[l].cloned = true
				m.note(ld.head, "skb_segment: skb_clone(%s) + skb_cow_head(): the head is copied into a kmalloc head", m.skbName(l))
				if m.mut(MutExpandKeepsID) && !m.mut(MutCloneForgetsID) && m.skbs[l].mem >= 0 && stale < 0 {
					stale = m.skbs[l].mem
				}
				continue
			}
			ref(ld.head, "skb_segment: skb_head_frag_to_page_desc + __skb_frag_ref")
			continue
		}
		for _, f := range ld.frags {
			ref(f, "skb_segment: __skb_frag_ref (frag_list member)")
		}
	}
	n := m.newSkb(sym, d)
	m.skbs[n].tx = true
	m.copyHeader(n, s)
	if stale >= 0 && m.skbs[n].mem < 0 {
		m.skbs[n].mem = stale
	}
	m.kfreeSkb(s, "validate_xmit_skb: consume_skb")
}

// ---- extra page references: splice, TCP zerocopy ----

// splice mirrors __skb_splice_bits() (skbuff.c:2402-2448): frags and an unlocked page head get
// get_page() (the pipe's put_page() drops it); a locked head (kmalloc or cloned) is copied into
// the socket's page_frag by linear_to_page(), modelled as a fresh page the pipe holds.
func (m *Model) splice(refSym, s int32, frag int) bool {
	if !m.live(s, "skb_splice_bits") {
		return true
	}
	m.touch(s, "skb_splice_bits")
	d := &m.datas[m.skbs[s].data]
	if frag >= 0 {
		if frag >= len(d.frags) {
			return false
		}
		m.getPage(d.frags[frag], "skb_splice_bits: frag into a pipe")
		m.bind(refSym, int(d.frags[frag]))
		return true
	}
	if !d.headFrag || m.skbs[s].cloned {
		c := m.newPage(refSym, memPage)
		m.note(c, "linear_to_page: copy of the locked head of skb %s", m.skbName(s))
		return true
	}
	m.getPage(d.head, "skb_splice_bits: head into a pipe")
	m.bind(refSym, int(d.head))
	return true
}

// zerocopy mirrors tcp_zerocopy_receive() (tcp.c:1887): vm_insert_pages() takes a reference on
// a full-page frag (can_map_frag(), tcp.c:1781-1794; vm_insert_pages, tcp.c:1869); munmap drops it.
func (m *Model) zerocopy(refSym, s int32, frag int) bool {
	if !m.live(s, "tcp_zerocopy_receive") {
		return true
	}
	d := &m.datas[m.skbs[s].data]
	if frag < 0 || frag >= len(d.frags) {
		return false
	}
	m.touch(s, "tcp_zerocopy_receive")
	m.getPage(d.frags[frag], "tcp_zerocopy_receive: vm_insert_pages")
	m.bind(refSym, int(d.frags[frag]))
	return true
}

// ---- freeing ----

// kfreeSkb mirrors kfree_skb()/consume_skb() (skbuff.c:705-712, 843-849): drop skb->users and,
// at zero, __kfree_skb(): skb_release_all() -> skb_release_data().
func (m *Model) kfreeSkb(s int32, why string) {
	if !m.live(s, why) {
		return
	}
	m.skbs[s].users--
	if m.skbs[s].users > 0 {
		return
	}
	m.kfreeSkbNow(s, why)
}

// kfreeSkbNow mirrors __kfree_skb() (skbuff.c:691-697), which ignores skb->users.
func (m *Model) kfreeSkbNow(s int32, why string) {
	m.skbs[s].alive = false // before releasing: a frag_list that leads back here is a use-after-free, not a loop
	m.skbs[s].users = 0
	m.inKfree++
	m.releaseData(s)
	m.inKfree--
}

// unref mirrors skb_unref(): drop skb->users, true when it was the last.
func (m *Model) unref(s int32, why string) bool {
	if !m.live(s, why) {
		return false
	}
	m.skbs[s].users--
	return m.skbs[s].users <= 0
}

// napiConsume mirrors napi_consume_skb(skb, budget != 0) (skbuff.c:907-928): skb_unref(), then
// _kfree_skb_defer() (880-900): skb_release_all() and the struct into the NAPI skb cache. It
// bypasses __kfree_skb() (the model's skbs are never fclones, which would take __kfree_skb()).
func (m *Model) napiConsume(s int32) {
	if !m.unref(s, "napi_consume_skb") {
		return
	}
	m.freeBypassing(s, "napi_consume_skb: _kfree_skb_defer")
}

// consumeUDP mirrors skb_consume_udp() (udp.c:1637-1655): skb_unref(), then
// __consume_stateless_skb() (skbuff.c:861-866): skb_release_data() and kfree_skbmem().
func (m *Model) consumeUDP(s int32) {
	if !m.unref(s, "skb_consume_udp") {
		return
	}
	m.freeBypassing(s, "skb_consume_udp: __consume_stateless_skb")
}

// kfreeIRQ mirrors __dev_kfree_skb_irq() (dev.c:3098-3118), what dev_kfree_skb_any() and
// dev_consume_skb_any() do in hard irq or with irqs disabled: drop skb->users and, at zero,
// queue the skb on the CPU's completion_queue for net_tx_action(). The data stays until then.
func (m *Model) kfreeIRQ(s int32) {
	if !m.unref(s, "dev_kfree_skb_irq") {
		return
	}
	sk := &m.skbs[s]
	sk.alive, sk.users = false, 0
	m.completion = append(m.completion, s)
	m.note(m.datas[sk.data].head, "__dev_kfree_skb_irq: skb %s queued on the completion_queue", m.skbName(s))
}

// txAction mirrors net_tx_action() (dev.c:4904-4934), a softirq that is not a NAPI poll: every
// skb on the completion_queue goes to __kfree_skb_defer() -> _kfree_skb_defer() ->
// skb_release_all().
func (m *Model) txAction() {
	saved := m.ctx
	m.ctx = execCtx{kind: CtxSoftirq, pool: -1}
	for len(m.completion) > 0 {
		s := m.completion[0]
		m.completion = m.completion[1:]
		m.releaseData(s)
	}
	m.completion = m.completion[:0]
	m.ctx = saved
}

// freeBypassing frees the skb's data without __kfree_skb(): skb_release_all() or
// skb_release_data() straight from the caller.
func (m *Model) freeBypassing(s int32, why string) {
	sk := &m.skbs[s]
	sk.alive, sk.users = false, 0
	m.note(m.datas[sk.data].head, "%s: skb %s freed without __kfree_skb()", why, m.skbName(s))
	m.releaseData(s)
}

// releaseData mirrors skb_release_data() (skbuff.c:608-626): only the last dataref frees the
// frags (put_page; 5.14 recycles pp_recycle frags), the frag_list and the head.
func (m *Model) releaseData(s int32) {
	sk := &m.skbs[s]
	d := &m.datas[sk.data]
	if sk.cloned {
		d.dataref--
		if d.dataref > 0 {
			m.note(d.head, "skb_release_data: skb %s drops its dataref, %d left", m.skbName(s), d.dataref)
			sk.ppRecycle = false // 5.14: "one SKB responsible for triggering the recycle path"
			return
		}
		if d.dataref < 0 {
			m.violate(UseAfterFree, d.head, "skb_release_data() of skb %s whose data is already released", m.skbName(s))
			return
		}
	} else {
		d.dataref = 0
	}
	for _, f := range d.frags {
		m.fragUnref(s, f)
	}
	for _, l := range d.fragList {
		m.kfreeSkb(l, "kfree_skb_list (frag_list)")
	}
	m.skbFreeHead(s)
	m.skbs[s].ppRecycle = false
}

// fragUnref mirrors __skb_frag_unref(): put_page(), or in 5.14 with skb->pp_recycle
// page_pool_return_skb_page() when page->pp_magic carries the page_pool signature.
func (m *Model) fragUnref(s, f int32) {
	if m.cfg.Variant == VariantUpstream && m.skbs[s].ppRecycle {
		if p := &m.pages[f]; p.kind == memPage && p.pool >= 0 && p.ref > 0 {
			m.upstreamReturn(p.pool, f, "page_pool_return_skb_page (frag)")
			return
		}
	}
	m.putPage(f, "skb_release_data: frag")
}

// skbFreeHead mirrors skb_free_head() (skbuff.c:598-606) with the variant's return hook.
func (m *Model) skbFreeHead(s int32) {
	sk := &m.skbs[s]
	d := &m.datas[sk.data]
	h := d.head
	switch m.cfg.Variant {
	case VariantPreRFC, VariantRFC:
		// The design's hook: xdp_mem_info says page_pool, so hand virt_to_head_page(head)
		// back with page_pool_put_page(pool, page, -1, false), whatever the head is.
		if sk.mem >= 0 {
			m.pages[h].returned++
			m.traceReturn(sk.mem, h)
			m.poolPut(sk.mem, h, putArgs{}, "skb_free_head return hook")
			return
		}
	case VariantSeries:
		// The series: if (skb->head_frag) { if (skb_pp_recycle(skb, head)) return;
		// skb_free_frag(head); } else kfree(head);
		if d.headFrag && sk.mem >= 0 && m.seriesReturn(sk.mem, h) {
			return
		}
	case VariantUpstream:
		// 5.14: if (skb->head_frag && skb_pp_recycle(skb, head)) return;
		if p := &m.pages[h]; d.headFrag && sk.ppRecycle && p.kind == memPage && p.pool >= 0 && p.ref > 0 {
			pl := p.pool
			if p.pp >= 0 {
				pl = p.pp // page->pp as skb_mark_for_recycle() stored it
			}
			m.upstreamReturn(pl, h, "page_pool_return_skb_page (head)")
			return
		}
	}
	if d.headFrag {
		m.putPage(h, "skb_free_head: skb_free_frag")
	} else {
		m.kfreeArea(h)
	}
}

// seriesReturn mirrors the series' skb_pp_recycle() -> xdp_return_skb_head() ->
// page_pool_return_skb_page() for a head_frag head marked with pool pl's id. It returns false
// when the head must be freed as an ordinary page fragment (unknown id; hook-in-kfree-skb-only
// outside __kfree_skb()).
func (m *Model) seriesReturn(pl, h int32) bool {
	if m.mut(MutHookInKfreeSkbOnly) && m.inKfree == 0 {
		m.note(h, "skb_free_head (hook-in-kfree-skb-only): not under __kfree_skb(), no return hook")
		return false
	}
	if !m.memRegistered(pl) {
		m.note(h, "xdp_return_skb_head: WARN_ONCE skb head with unknown page_pool id (pool %s is freed)", m.poolName(pl))
		return false
	}
	m.pages[h].returned++
	m.traceReturn(pl, h)
	// page_pool_return_skb_page(): in_irq() || irqs_disabled(): release and put_page()
	if m.ctx.kind == CtxIRQ {
		m.note(h, "page_pool_return_skb_page: hard irq, the page is released")
		m.poolReleasePage(pl, h, "page_pool_return_skb_page (irq)")
		m.putPage(h, "page_pool_return_skb_page (irq)")
		return true
	}
	m.poolPut(pl, h, putArgs{direct: m.mut(MutReturnDirect), ignoreRef: m.mut(MutReturnIgnoresRefcount)},
		"page_pool_return_skb_page: page_pool_put_full_page")
	return true
}

// upstreamReturn mirrors V2's page_pool_return_skb_page() for a page whose signature names
// pool pl: the tracepoint, then page_pool_put_full_page(pp, page, false), or, in hard irq
// context or with irqs disabled (the ring's spin_lock_bh() is not allowed there), release and
// put_page() as V1 does.
func (m *Model) upstreamReturn(pl, pg int32, why string) {
	m.pages[pg].returned++
	m.traceReturn(pl, pg)
	if m.ctx.kind == CtxIRQ {
		m.note(pg, "page_pool_return_skb_page: hard irq, the page is released")
		m.poolReleasePage(pl, pg, why+" (irq)")
		m.putPage(pg, why+" (irq)")
		return
	}
	m.poolPut(pl, pg, putArgs{}, why)
}

// traceReturn emits the series' page_pool_skb_return tracepoint.
func (m *Model) traceReturn(pl, pg int32) {
	if m.tracer != nil {
		m.tracer(traceEvent{kind: evSkbReturn, pool: pl, pfn: m.pages[pg].pfn})
	}
}

// reaches reports whether target is s or on the frag_list tree below s.
func (m *Model) reaches(s, target int32) bool {
	if s == target {
		return true
	}
	for _, l := range m.datas[m.skbs[s].data].fragList {
		if l == s || m.reaches(l, target) {
			return true
		}
	}
	return false
}
