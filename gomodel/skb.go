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

// hookVariant says whether the variant has the prerfc/rfc xdp_mem_info hook.
func (m *Model) hookVariant() bool {
	return m.cfg.Variant == VariantPreRFC || m.cfg.Variant == VariantRFC
}

// checkPoolFrags enforces the rfc design rule: a frag never carries page_pool state, since
// frags are freed by put_page() and only the head goes through the return hook.
func (m *Model) checkPoolFrags(d int32, from int, what string) {
	if !m.hookVariant() {
		return
	}
	fr := m.datas[d].frags
	for _, f := range fr[from:] {
		p := &m.pages[f]
		if p.kind == memPage && p.pool >= 0 && p.ref > 0 {
			m.violate(PoolPageInFrag, f, "%s made a page holding page_pool state of pool %s a frag; its put_page() will bypass the pool", what, m.poolName(p.pool))
		}
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

// buildSkb mirrors build_skb() around a driver page (head_frag=1, no new page reference) and
// then what the driver does in each variant (mvneta_swbm_build_skb(), mvneta.c:2306-2333).
func (m *Model) buildSkb(sym, pg int32) {
	p := &m.pages[pg]
	if p.ref <= 0 {
		m.violate(UseAfterFree, pg, "build_skb() around a freed page")
	}
	s := m.newSkb(sym, m.newData(pg, true))
	m.note(pg, "build_skb: head of skb %s", m.syms.Name(sym))
	if p.kind != memPage || p.pool < 0 {
		return
	}
	switch m.cfg.Variant {
	case VariantNone:
		// 5.10 mvneta: page_pool_release_page() right after build_skb() (mvneta.c:2317).
		m.poolReleasePage(p.pool, pg, "mvneta_swbm_build_skb")
	case VariantPreRFC, VariantRFC:
		// The series: the driver records the pool in the skb's xdp_mem_info.
		m.skbs[s].mem = p.pool
		m.note(pg, "skb %s: xdp_mem_info = pool %s", m.syms.Name(sym), m.poolName(p.pool))
	case VariantUpstream:
		// 5.14 skb_mark_for_recycle(): skb->pp_recycle = 1, page->pp = pool.
		m.skbs[s].ppRecycle = true
	}
}

// addRxFrag mirrors skb_add_rx_frag() (the caller's page reference moves into the frag) and
// the driver's follow-up: 5.10's mvneta releases the page from its pool right after
// (mvneta.c:2325-2330); 5.14 keeps page_pool state on frags and recycles them via pp_recycle.
func (m *Model) addRxFrag(s, pg int32) bool {
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
		case VariantNone, VariantPreRFC, VariantRFC:
			m.poolReleasePage(p.pool, pg, "mvneta_swbm_build_skb, frag")
		case VariantUpstream:
			m.skbs[s].ppRecycle = true
		}
	}
	m.checkPoolFrags(m.skbs[s].data, len(d.frags)-1, "skb_add_rx_frag")
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
	if !m.live(s, "skb_copy") {
		return
	}
	m.touch(s, "skb_copy")
	h := m.newPage(headSym, memSlab)
	m.note(h, "skb_copy: kmalloc head of skb %s, a copy of %s", m.syms.Name(sym), m.skbName(s))
	n := m.newSkb(sym, m.newData(h, false))
	m.copyHeader(n, s)
}

// pskbCopy mirrors __pskb_copy_fclone() (skbuff.c:1563-1608): a new kmalloc head with the
// linear bytes, skb_frag_ref() on every frag, skb_get() on every frag_list member, then
// skb_copy_header().
func (m *Model) pskbCopy(sym, headSym, s int32) {
	if !m.live(s, "pskb_copy") {
		return
	}
	m.touch(s, "pskb_copy")
	h := m.newPage(headSym, memSlab)
	m.note(h, "pskb_copy: kmalloc head of skb %s, a copy of %s", m.syms.Name(sym), m.skbName(s))
	d := m.newData(h, false)
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
// The series clears xdp_mem_info on the new head (prerfc and rfc).
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
	if m.hookVariant() {
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
	// 5.14: "We can't coalesce skb that are allocated from slab and page_pool".
	if m.cfg.Variant == VariantUpstream && m.skbs[to].ppRecycle != m.skbs[from].ppRecycle {
		return false, "pp_recycle differs"
	}
	if fits {
		m.touch(from, "skb_try_coalesce")
		m.kfreeSkbNow(from, "kfree_skb_partial(from, false)")
		return true, ""
	}
	td, fd := &m.datas[m.skbs[to].data], &m.datas[m.skbs[from].data]
	if len(td.fragList) > 0 || len(fd.fragList) > 0 {
		return false, "frag_list present"
	}
	if len(td.frags)+len(fd.frags) >= maxSkbFrags {
		return false, "too many frags"
	}
	if !fd.headFrag || m.skbs[from].cloned { // skb_head_is_locked() (skbuff.h:4583-4586)
		return false, "head of from is locked"
	}
	head := fd.head
	if m.cfg.Variant == VariantRFC && m.skbs[from].mem >= 0 {
		switch m.cfg.Coalesce {
		case CoalesceReject:
			return false, "rfc/reject: head is a page_pool page"
		case CoalesceFragList:
			m.appendFragList(to, from, "skb_try_coalesce (rfc/fraglist)")
			m.datas[m.skbs[to].data].listed = true
			return true, ""
		case CoalesceRelease:
			m.poolReleasePage(m.skbs[from].mem, head, "skb_try_coalesce (rfc/release)")
			m.skbs[from].mem = -1
		}
	}
	m.touch(from, "skb_try_coalesce")
	start := len(td.frags)
	td.frags = append(td.frags, head)
	m.note(head, "skb_try_coalesce: head of %s stolen as frag %d of %s (no new reference)", m.skbName(from), start, m.skbName(to))
	td.frags = append(td.frags, fd.frags...)
	fd.frags = fd.frags[:0] // from is not cloned: from_shinfo->nr_frags = 0
	m.checkPoolFrags(m.skbs[to].data, start, "skb_try_coalesce")
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
		start := len(ld.frags)
		ld.frags = append(ld.frags, sd.frags...)
		sd.frags = sd.frags[:0] // skbinfo->nr_frags = 0
		m.checkPoolFrags(m.skbs[lp].data, start, "skb_gro_receive")
		m.kfreeSkbNow(s, "napi_skb_finish: NAPI_GRO_FREE, __kfree_skb")
		return true, ""
	case sd.headFrag:
		if len(ld.frags)+1+len(sd.frags) > maxSkbFrags {
			break
		}
		head := sd.head
		if m.cfg.Variant == VariantRFC && m.skbs[s].mem >= 0 {
			switch m.cfg.Coalesce {
			case CoalesceReject:
				return false, "rfc/reject: head is a page_pool page"
			case CoalesceFragList:
				m.appendFragList(p, s, "skb_gro_receive (rfc/fraglist)")
				return true, ""
			case CoalesceRelease:
				m.poolReleasePage(m.skbs[s].mem, head, "skb_gro_receive (rfc/release)")
				m.skbs[s].mem = -1
			}
		}
		m.touch(s, "skb_gro_receive")
		start := len(ld.frags)
		ld.frags = append(ld.frags, head)
		m.note(head, "skb_gro_receive: head of %s stolen as a frag of %s (no new reference)", m.skbName(s), m.skbName(lp))
		ld.frags = append(ld.frags, sd.frags...)
		m.checkPoolFrags(m.skbs[lp].data, start, "skb_gro_receive")
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
			p.returned++
			m.traceReturn(p.pool, f)
			m.poolPutPage(p.pool, f, false, "page_pool_return_skb_page (frag)")
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
		// The series' hook: xdp_mem_info says page_pool, so hand virt_to_head_page(head) back
		// with page_pool_put_full_page(pool, page, false).
		if sk.mem >= 0 {
			m.pages[h].returned++
			m.traceReturn(sk.mem, h)
			m.poolPutPage(sk.mem, h, false, "skb_free_head return hook")
			return
		}
	case VariantUpstream:
		// 5.14: if (skb->head_frag && skb_pp_recycle(skb, head)) return;
		if p := &m.pages[h]; d.headFrag && sk.ppRecycle && p.kind == memPage && p.pool >= 0 && p.ref > 0 {
			p.returned++
			m.traceReturn(p.pool, h)
			m.poolPutPage(p.pool, h, false, "page_pool_return_skb_page (head)")
			return
		}
	}
	if d.headFrag {
		m.putPage(h, "skb_free_head: skb_free_frag")
	} else {
		m.kfreeArea(h)
	}
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
