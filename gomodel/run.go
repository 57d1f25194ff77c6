package gomodel

import (
	"fmt"
	"strconv"
)

// errInvalid is an operation that cannot run in the current state (an undefined object, or a
// call the kernel would BUG() on). Run turns it into a *LineError; the shrinker rejects the
// candidate.
type errInvalid struct{ msg string }

func (e *errInvalid) Error() string { return e.msg }

func invalidf(format string, args ...any) error { return &errInvalid{fmt.Sprintf(format, args...)} }

func (m *Model) obj1(sym int32, what string) (int32, error) {
	i := m.lookup(sym)
	if i < 0 {
		return -1, invalidf("%s %s does not exist at this point", what, m.syms.Name(sym))
	}
	return i, nil
}

// Apply runs one operation (not an expectation) and the quiescence check after it.
func (m *Model) Apply(op Op) error {
	m.line = int(op.Line)
	err := m.apply(op)
	m.checkLeaks()
	return err
}

func (m *Model) apply(op Op) error {
	switch op.Kind {
	case OpPool:
		m.poolCreate(op.A, int(op.N), op.Flag&FlagNoDMA == 0)
		return nil
	case OpWait:
		m.wait(int64(op.N) * 1000)
		return nil
	case OpPage:
		pg := m.newPage(op.A, memPage)
		m.note(pg, "alloc_page: a page without page_pool state")
		return nil
	case OpTxAction:
		m.txAction()
		return nil
	case OpPfmemalloc:
		m.pfmemalloc = op.Flag&FlagOn != 0
		return nil
	case OpContext:
		c := execCtx{kind: ctxKind(op.N), pool: -1}
		if c.kind == CtxNAPI {
			pl, err := m.obj1(op.A, "pool")
			if err != nil {
				return err
			}
			c.pool = pl
		}
		m.ctx = c
		return nil
	}
	a, err := m.obj1(op.A, "object")
	if op.Kind == OpBuildSkb || op.Kind == OpAlloc || op.Kind == OpAllocSkb || op.Kind == OpClone ||
		op.Kind == OpCopy || op.Kind == OpPskbCopy || op.Kind == OpRx || op.Kind == OpSplice || op.Kind == OpZerocopy ||
		op.Kind == OpSegment {
		a, err = -1, nil // A is being declared
	}
	if err != nil {
		return err
	}
	var b int32 = -1
	if op.B >= 0 {
		if b, err = m.obj1(op.B, "object"); err != nil {
			return err
		}
	}
	switch op.Kind {
	case OpAlloc:
		m.poolAlloc(b, op.A)
	case OpRecycle:
		m.poolPutPage(a, b, op.Flag&FlagDirect != 0, "driver page_pool_put_page")
	case OpRelease:
		m.poolReleasePage(a, b, "driver page_pool_release_page")
	case OpPutPage:
		m.putPage(a, "put_page")
	case OpDestroy:
		m.poolDestroy(a)
	case OpRx:
		// mvneta_rx_swbm(): page_pool_alloc_pages() per buffer, then mvneta_swbm_build_skb().
		head := m.poolAlloc(b, op.C)
		if err := m.buildSkb(op.A, head, driverDefault); err != nil {
			return err
		}
		s := m.lookup(op.A)
		for i := int32(0); i < op.N; i++ {
			f := m.poolAlloc(b, op.C+1+i)
			m.addRxFrag(s, f, false)
		}
	case OpBuildSkb:
		mark := int32(driverDefault)
		switch op.Flag {
		case FlagNoMark:
			mark = driverNoMark
		case FlagMark:
			if mark, err = m.obj1(op.C, "pool"); err != nil {
				return err
			}
		}
		return m.buildSkb(op.A, b, mark)
	case OpAddRxFrag:
		if !m.addRxFrag(a, b, op.Flag&FlagKeep != 0) {
			return invalidf("skb %s already has MAX_SKB_FRAGS (%d) frags", m.syms.Name(op.A), maxSkbFrags)
		}
	case OpAllocSkb:
		m.allocSkb(op.A, op.C, op.Flag&FlagFrag != 0)
	case OpClone:
		m.clone(op.A, b)
	case OpCopy:
		m.copy(op.A, op.C, b)
	case OpPskbCopy:
		m.pskbCopy(op.A, op.C, b)
	case OpExpandHead:
		if m.skbs[a].alive && m.skbs[a].users != 1 {
			return invalidf("pskb_expand_head() on shared skb %s (users=%d) is BUG_ON(skb_shared(skb)); kfree the extra reference first", m.syms.Name(op.A), m.skbs[a].users)
		}
		m.expandHead(a, op.C)
	case OpCoalesce:
		if m.skbs[b].alive && (m.skbs[b].users != 1 || m.skbs[b].owner >= 0) {
			return invalidf("skb_try_coalesce() takes an unshared skb off the receive queue as from; %s is shared or on a frag_list", m.syms.Name(op.B))
		}
		ok, why := m.tryCoalesce(a, b, op.Flag&FlagFits != 0)
		m.noteResult(a, b, "skb_try_coalesce", ok, why)
	case OpGro:
		if sk := m.skbs[b]; sk.alive && (sk.cloned || sk.users != 1 || sk.owner >= 0 || len(m.datas[sk.data].fragList) > 0) {
			return invalidf("skb_gro_receive() takes a fresh skb from the driver; %s is cloned, shared or has a frag_list", m.syms.Name(op.B))
		}
		if sk := m.skbs[a]; sk.alive && (sk.cloned || sk.owner >= 0) {
			return invalidf("skb_gro_receive() merges into an unshared GRO head; %s is cloned or on a frag_list", m.syms.Name(op.A))
		}
		ok, why := m.groReceive(a, b)
		m.noteResult(a, b, "skb_gro_receive", ok, why)
	case OpFragList:
		if m.skbs[b].owner >= 0 {
			return invalidf("skb %s is already on a frag_list", m.syms.Name(op.B))
		}
		if m.reaches(b, a) {
			return invalidf("skb %s is on the frag_list of %s: appending would make a cycle", m.syms.Name(op.A), m.syms.Name(op.B))
		}
		m.fragListAppend(a, b)
	case OpSplice:
		if !m.splice(op.A, b, int(op.N)) {
			return invalidf("skb %s has no frag %d", m.syms.Name(op.B), op.N)
		}
	case OpZerocopy:
		if !m.zerocopy(op.A, b, int(op.N)) {
			return invalidf("skb %s has no frag %d", m.syms.Name(op.B), op.N)
		}
	case OpSkbGet:
		if m.live(a, "skb_get") {
			m.skbs[a].users++
		}
	case OpKfree:
		m.kfreeSkb(a, "kfree_skb")
	case OpConsume:
		m.kfreeSkb(a, "consume_skb")
	case OpNapiConsume:
		if !m.ctx.inServingSoftirq() {
			return invalidf("napi_consume_skb(skb, budget) runs in a NAPI poll (a zero budget takes dev_consume_skb_any()); write `context napi POOL` or `context softirq` before it")
		}
		m.napiConsume(a)
	case OpConsumeUDP:
		m.consumeUDP(a)
	case OpKfreeIRQ:
		m.kfreeIRQ(a)
	case OpSegment:
		if m.skbs[b].alive {
			if why := m.segmentCheck(b, op.Flag&FlagClone != 0); why != "" {
				return invalidf("skb_segment(%s): %s", m.syms.Name(op.B), why)
			}
		}
		m.segment(op.A, op.C, b, op.Flag&FlagClone != 0)
	default:
		return invalidf("not an operation")
	}
	return nil
}

func (m *Model) noteResult(a, b int32, what string, ok bool, why string) {
	if !m.history || ok {
		return
	}
	m.note(m.datas[m.skbs[b].data].head, "%s(%s, %s) refused: %s", what, m.skbName(a), m.skbName(b), why)
}

// ExpectResult is one `expect` line's outcome.
type ExpectResult struct {
	Line int    `json:"line"`
	Text string `json:"expect"`
	OK   bool   `json:"ok"`
	Got  string `json:"got,omitempty"`
}

// PoolSummary is a pool's state at the end of a run.
type PoolSummary struct {
	Name       string   `json:"name"`
	Hold       uint32   `json:"hold"`
	Release    uint32   `json:"release"`
	Inflight   int32    `json:"inflight"`
	Cache      int      `json:"alloc_cache"`
	Ring       int      `json:"ptr_ring"`
	Destroyed  bool     `json:"destroyed"`
	Freed      bool     `json:"freed"`
	Warnings   []string `json:"warnings,omitempty"`
	CritErrors []string `json:"crit,omitempty"`
}

// ScenarioResult is what Run reports of one scenario under one variant.
type ScenarioResult struct {
	File         string         `json:"file"`
	Variant      string         `json:"variant"`
	Violations   []Violation    `json:"violations"`
	Expectations []ExpectResult `json:"expectations"`
	Pools        []PoolSummary  `json:"pools"`
	Passed       bool           `json:"passed"`
}

// Run executes a scenario under cfg. A runtime error (an operation that cannot run, such as
// pskb_expand_head on a shared skb) is a *LineError.
func Run(sc *Scenario, cfg Config) (*ScenarioResult, error) {
	m := NewModel(cfg, sc.Syms, true)
	res := &ScenarioResult{File: sc.File, Variant: cfg.String(), Passed: true}
	for i := range sc.Ops {
		op := sc.Ops[i]
		m.opText = func() string { return sc.Syms.Format(op) }
		if op.Kind >= OpExpectViolation {
			er := m.expect(op)
			if !er.OK {
				res.Passed = false
			}
			res.Expectations = append(res.Expectations, er)
			continue
		}
		if err := m.Apply(op); err != nil {
			return nil, &LineError{File: sc.File, Line: int(op.Line), Msg: err.Error()}
		}
	}
	res.Violations = append([]Violation{}, m.Violations...)
	res.Pools = m.Summaries()
	if len(res.Expectations) == 0 {
		res.Expectations = []ExpectResult{}
	}
	return res, nil
}

// Summaries reports every pool's counters.
func (m *Model) Summaries() []PoolSummary {
	out := []PoolSummary{}
	for i := range m.pools {
		p := &m.pools[i]
		out = append(out, PoolSummary{Name: m.poolName(int32(i)), Hold: p.hold, Release: p.release, Inflight: p.inflight(),
			Cache: len(p.cache), Ring: p.ringLen(), Destroyed: p.destroyed, Freed: p.freed, Warnings: p.stalled, CritErrors: p.crit})
	}
	return out
}

func (m *Model) pageState(pg int32) PageState {
	p := &m.pages[pg]
	if p.ref <= 0 {
		return StateFreed
	}
	return p.where
}

func (m *Model) expect(op Op) ExpectResult {
	r := ExpectResult{Line: int(op.Line), Text: m.syms.Format(op)}
	obj := m.lookup(op.A)
	num := func(got int64) {
		r.OK = got == int64(op.N)
		r.Got = strconv.FormatInt(got, 10)
	}
	switch op.Kind {
	case OpExpectViolation:
		for _, v := range m.Violations {
			if v.Name == op.Str {
				r.OK = true
			}
		}
		if !r.OK {
			r.Got = m.violationList()
		}
	case OpExpectNoViolation:
		r.OK = len(m.Violations) == 0
		if !r.OK {
			r.Got = m.violationList()
		}
	case OpExpectInflight, OpExpectHold, OpExpectRelease:
		if obj < 0 {
			r.Got = "pool does not exist yet"
			return r
		}
		p := &m.pools[obj]
		switch op.Kind {
		case OpExpectInflight:
			num(int64(p.inflight()))
		case OpExpectHold:
			num(int64(p.hold))
		default:
			num(int64(p.release))
		}
	case OpExpectReturned, OpExpectRefcount, OpExpectState:
		if obj < 0 {
			r.Got = "page does not exist yet"
			return r
		}
		switch op.Kind {
		case OpExpectReturned:
			num(int64(m.pages[obj].returned))
		case OpExpectRefcount:
			num(int64(m.pages[obj].ref))
		default:
			st := m.pageState(obj)
			r.OK = st == PageState(op.Flag)
			r.Got = st.String()
		}
	case OpExpectStalled:
		if obj < 0 {
			r.Got = "pool does not exist yet"
			return r
		}
		r.OK = len(m.pools[obj].stalled) > 0
		if !r.OK {
			r.Got = "no stalled-shutdown warning"
		}
	case OpExpectPool:
		if obj < 0 {
			r.Got = "pool does not exist yet"
			return r
		}
		p := &m.pools[obj]
		st := 0
		if p.freed {
			st = 2
		} else if p.destroyed {
			st = 1
		}
		r.OK, r.Got = st == int(op.Flag), poolStates[st]
	case OpExpectSkb:
		if obj < 0 {
			r.Got = "skb does not exist yet"
			return r
		}
		st := 1
		if m.skbs[obj].alive {
			st = 0
		}
		r.OK, r.Got = st == int(op.Flag), skbStates[st]
	}
	if r.OK {
		r.Got = ""
	}
	return r
}

func (m *Model) violationList() string {
	if len(m.Violations) == 0 {
		return "no violation"
	}
	s := ""
	for i, v := range m.Violations {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s (line %d)", v.Name, v.Line)
	}
	return s
}
