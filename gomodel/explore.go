package gomodel

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Chooser supplies the explorer's random choices: a seeded PRNG in Explore, rapid's draws in
// property-based tests.
type Chooser interface {
	// Intn returns a number in [0, n).
	Intn(n int) int
}

type pcgChooser struct{ r *rand.Rand }

func (c pcgChooser) Intn(n int) int { return c.r.IntN(n) }

// ExploreOptions configures Explore.
type ExploreOptions struct {
	Config Config
	Ops    int   // operations to run in total (default 1,000,000)
	Seed   int64 // PRNG seed
	// EpisodeOps is the number of random operations per episode before its teardown
	// (default 40). Each episode starts from an empty model.
	EpisodeOps int
	// Context, if set, stops the exploration early (what was found so far is still shrunk).
	Context context.Context
	// Progress, if set, is called after about every million operations.
	Progress func(ops, episodes int64)
}

// ExploreResult is what Explore found.
type ExploreResult struct {
	Variant     string    `json:"variant"`
	Seed        int64     `json:"seed"`
	Ops         int64     `json:"ops"`      // operations run
	Episodes    int64     `json:"episodes"` // independent sequences tried
	Found       bool      `json:"found"`
	Findings    []Finding `json:"findings,omitempty"` // one per distinct violation, most severe first
	Interrupted bool      `json:"interrupted,omitempty"`
}

// Finding is one kind of violation Explore found, shrunk to a minimal scenario.
type Finding struct {
	Target     string      `json:"violation"` // the violation the shrinker preserved
	Episode    int64       `json:"episode"`
	FoundAtOps int64       `json:"found_at_ops"`    // operations run by explore up to the end of that episode
	FoundAfter int         `json:"found_after_ops"` // length of the failing sequence
	Minimal    int         `json:"minimal_ops"`
	Violations []Violation `json:"violations"` // those of the minimal scenario, with page histories
	Scenario   string      `json:"scenario"`   // the minimal scenario, ready for `ppkit model run`
}

// Explore runs random operation sequences under opts.Config for opts.Ops operations. An
// episode that violates an invariant is finished (its teardown frees every skb, drops every
// page reference and destroys the pools, which exposes the damage a violation leads to) and its
// most severe violation becomes a finding; the first sequence of each distinct violation is
// shrunk (delta debugging plus argument simplification) to a minimal scenario that still shows it.
func Explore(opts ExploreOptions) *ExploreResult {
	if opts.Ops <= 0 {
		opts.Ops = 1_000_000
	}
	if opts.EpisodeOps <= 0 {
		opts.EpisodeOps = 40
	}
	res := &ExploreResult{Variant: opts.Config.String(), Seed: opts.Seed}
	g := newGenerator(opts.Config, pcgChooser{rand.New(rand.NewPCG(uint64(opts.Seed), 0x9e3779b97f4a7c15))})
	type raw struct {
		episode int64
		atOps   int64
		ops     []Op
		syms    *Symbols
		leak    bool // the episode also leaked a pool's inflight count
	}
	seen := map[string]raw{}
	nextProgress := int64(1_000_000)
	for res.Ops < int64(opts.Ops) {
		if res.Episodes%256 == 0 && opts.Context != nil && opts.Context.Err() != nil {
			res.Interrupted = true
			break
		}
		if opts.Progress != nil && res.Ops >= nextProgress {
			opts.Progress(res.Ops, res.Episodes)
			nextProgress += 1_000_000
		}
		res.Episodes++
		found := g.episode(opts.EpisodeOps, int(int64(opts.Ops)-res.Ops))
		res.Ops += int64(len(g.ops))
		if !found {
			continue
		}
		target := mostSevere(g.m.Violations)
		if _, dup := seen[target]; !dup {
			leak := false
			for _, v := range g.m.Violations {
				leak = leak || v.Name == InflightLeak
			}
			seen[target] = raw{res.Episodes, res.Ops, append([]Op(nil), g.ops...), g.syms.clone(), leak}
		}
	}
	for _, name := range ViolationNames {
		r, ok := seen[name]
		if !ok {
			continue
		}
		f := Finding{Target: name, Episode: r.episode, FoundAtOps: r.atOps, FoundAfter: len(r.ops)}
		// Keep the pool's inflight leak in the minimal scenario when the episode had one:
		// it is what a page lost to its pool leads to (one more operation, the destroy).
		targets := []string{name}
		if r.leak && name != InflightLeak {
			targets = append(targets, InflightLeak)
		}
		min := Shrink(opts.Config, r.syms, r.ops, targets...)
		f.Minimal = len(min)
		sc := renamed(r.syms, min)
		if rr, err := Run(sc, opts.Config); err == nil {
			f.Violations = rr.Violations
		}
		f.Scenario = formatFound(sc, opts, f)
		res.Findings = append(res.Findings, f)
	}
	res.Found = len(res.Findings) > 0
	return res
}

func (s *Symbols) clone() *Symbols {
	return &Symbols{
		names:  append([]string(nil), s.names...),
		kinds:  append([]SymKind(nil), s.kinds...),
		base:   append([]int32(nil), s.base...),
		suffix: append([]string(nil), s.suffix...),
		lines:  make([]int32, len(s.kinds)),
	}
}

// mostSevere picks the violation to preserve while shrinking: the first of ViolationNames
// (real damage before the design rule) that occurred.
func mostSevere(vs []Violation) string {
	for _, name := range ViolationNames {
		for _, v := range vs {
			if v.Name == name {
				return name
			}
		}
	}
	return ""
}

// Reproduces replays ops on an empty model and reports whether they run and show every one
// of targets.
func Reproduces(cfg Config, syms *Symbols, ops []Op, targets ...string) bool {
	m := NewModel(cfg, syms, false)
	return m.reproduces(ops, targets)
}

func (m *Model) reproduces(ops []Op, targets []string) bool {
	m.reset()
	for _, op := range ops {
		if err := m.Apply(op); err != nil {
			return false
		}
	}
	for _, t := range targets {
		found := false
		for _, v := range m.Violations {
			found = found || v.Name == t
		}
		if !found {
			return false
		}
	}
	return true
}

// Shrink minimizes ops while they still produce every one of targets: ddmin over the
// operation list, then simpler arguments (fewer frags, no `fits`, no `direct`, kmalloc heads,
// no `clone` path in segment, splicing the head, the default pool size), repeated until nothing
// changes.
func Shrink(cfg Config, syms *Symbols, ops []Op, targets ...string) []Op {
	m := NewModel(cfg, syms, false)
	test := func(c []Op) bool { return m.reproduces(c, targets) }
	cur := append([]Op(nil), ops...)
	if !test(cur) {
		return cur
	}
	for {
		cur = ddmin(cur, test)
		changed := false
		// an object and everything done to it: ddmin removes one chunk at a time, so it cannot
		// drop `rx s3 rxq` and a distant `kfree s3` together
		for i := len(cur) - 1; i >= 0; i-- {
			if cand := withoutObject(syms, cur, i); len(cand) < len(cur)-1 && test(cand) {
				cur, changed = cand, true
				i = len(cur)
			}
		}
		for i := range cur {
			for _, simpler := range simplifications(cur[i]) {
				cand := append([]Op(nil), cur...)
				cand[i] = simpler
				if test(cand) {
					cur, changed = cand, true
					break
				}
			}
		}
		if !changed {
			return cur
		}
	}
}

// declares reports whether op creates the object named by its A symbol.
func declares(op Op) bool {
	switch op.Kind {
	case OpPool, OpAlloc, OpPage, OpRx, OpBuildSkb, OpAllocSkb, OpClone, OpCopy, OpPskbCopy, OpSplice, OpZerocopy, OpSegment:
		return true
	}
	return false
}

// withoutObject drops ops[i] and, if it creates an object, every later operation that uses that
// object or an object created from it.
func withoutObject(syms *Symbols, ops []Op, i int) []Op {
	gone := map[int32]bool{}
	if declares(ops[i]) {
		gone[ops[i].A] = true
	}
	isGone := func(id int32) bool {
		for id >= 0 {
			if gone[id] {
				return true
			}
			id = syms.base[id]
		}
		return false
	}
	out := make([]Op, 0, len(ops))
	out = append(out, ops[:i]...)
	for _, op := range ops[i+1:] {
		uses := isGone(op.B) || (!declares(op) && isGone(op.A))
		if uses {
			if declares(op) {
				gone[op.A] = true
			}
			continue
		}
		out = append(out, op)
	}
	return out
}

func simplifications(op Op) []Op {
	var out []Op
	switch op.Kind {
	case OpRx:
		for n := int32(0); n < op.N; n++ {
			o := op
			o.N = n
			out = append(out, o)
		}
	case OpPool:
		if op.N != defaultPoolSize {
			o := op
			o.N = defaultPoolSize
			out = append(out, o)
		}
	case OpCoalesce, OpRecycle, OpAllocSkb, OpSegment:
		if op.Flag != 0 {
			o := op
			o.Flag = 0
			out = append(out, o)
		}
	case OpSplice:
		if op.N >= 0 {
			o := op
			o.N = -1
			out = append(out, o)
		}
	}
	return out
}

// ddmin is Zeller's delta debugging minimization: the result fails test and removing any one
// operation from it makes it pass.
func ddmin(ops []Op, test func([]Op) bool) []Op {
	n := 2
	for len(ops) >= 2 {
		chunk := (len(ops) + n - 1) / n
		reduced := false
		for start := 0; start < len(ops); start += chunk {
			end := min(start+chunk, len(ops))
			cand := make([]Op, 0, len(ops)-(end-start))
			cand = append(cand, ops[:start]...)
			cand = append(cand, ops[end:]...)
			if test(cand) {
				ops = cand
				n = max(n-1, 2)
				reduced = true
				break
			}
		}
		if !reduced {
			if n >= len(ops) {
				break
			}
			n = min(n*2, len(ops))
		}
	}
	return ops
}

// renamed copies the symbols used by ops with readable names in order of appearance: pools
// rxq, rxq2, ...; skbs s1, s2, ...; pages p1, ...; splice/zerocopy references r1, ....
func renamed(syms *Symbols, ops []Op) *Scenario {
	ns := syms.clone()
	count := map[string]int{}
	name := func(id int32, prefix string) {
		count[prefix]++
		n := count[prefix]
		switch {
		case prefix == "rxq" && n == 1:
			ns.names[id] = "rxq"
		default:
			ns.names[id] = prefix + strconv.Itoa(n)
		}
	}
	for _, op := range ops {
		switch op.Kind {
		case OpPool:
			name(op.A, "rxq")
		case OpRx, OpBuildSkb, OpAllocSkb, OpClone, OpCopy, OpPskbCopy, OpSegment:
			name(op.A, "s")
		case OpAlloc, OpPage:
			name(op.A, "p")
		case OpSplice, OpZerocopy:
			name(op.A, "r")
		}
	}
	ns.index = map[string]int32{}
	for i := range ns.kinds {
		ns.index[ns.Name(int32(i))] = int32(i)
	}
	out := &Scenario{Syms: ns, Ops: append([]Op(nil), ops...)}
	for i := range out.Ops {
		out.Ops[i].Line = int32(i + 6) // after the header lines formatFound writes
	}
	return out
}

func formatFound(sc *Scenario, opts ExploreOptions, f Finding) string {
	var b strings.Builder
	flags := "--variant " + opts.Config.Name()
	if opts.Config.Variant == VariantRFC {
		flags += " --coalesce " + opts.Config.Coalesce.String()
	}
	fmt.Fprintf(&b, "# Found by `ppkit model explore %s --seed %d` (episode %d, %d operations),\n", flags, opts.Seed, f.Episode, f.FoundAfter)
	fmt.Fprintf(&b, "# shrunk to %d operations. They violate %s, so `expect no-violation` fails\n", len(sc.Ops), f.Target)
	fmt.Fprintf(&b, "# and `ppkit model run` on this file exits 1.\n")
	v := "variant " + opts.Config.Name()
	if opts.Config.Variant == VariantRFC {
		v += " " + opts.Config.Coalesce.String()
	}
	fmt.Fprintln(&b, v)
	fmt.Fprintln(&b)
	for _, op := range sc.Ops {
		fmt.Fprintln(&b, sc.Syms.Format(op))
	}
	fmt.Fprintln(&b, "expect no-violation")
	return b.String()
}

// ---- the generator ----

// nameCache holds the generator's names so that episodes do not allocate them; it is filled
// once and only read afterwards (Explore may run concurrently).
var nameCache = map[string][]string{}

func cachedName(prefix string, i int) string {
	if c := nameCache[prefix]; i < len(c) {
		return c[i]
	}
	return prefix + strconv.Itoa(i)
}

func init() {
	for _, p := range []string{"pool", "s", "p", "r"} {
		c := make([]string, 513)
		for i := range c {
			c[i] = p + strconv.Itoa(i)
		}
		nameCache[p] = c
	}
}

// generator builds random operation sequences that respect each kernel function's calling
// contract, so that every violation it finds is one the kernel paths themselves cause.
type generator struct {
	cfg   Config
	rnd   Chooser
	m     *Model
	syms  *Symbols
	ops   []Op
	pools []int32 // pool symbols
	skbs  []int32 // top-level live skbs (symbols)
	held  []int32 // page symbols the scenario holds a reference on (alloc, page)
	refs  []int32 // splice / zerocopy references (page symbols)
	n     [4]int
}

func newGenerator(cfg Config, rnd Chooser) *generator {
	syms := &Symbols{}
	return &generator{cfg: cfg, rnd: rnd, syms: syms, m: NewModel(cfg, syms, false)}
}

func (g *generator) name(kind SymKind, prefix int) int32 {
	pre := [...]string{"pool", "s", "p", "r"}[prefix]
	g.n[prefix]++
	return g.syms.add(cachedName(pre, g.n[prefix]), kind, -1, "", 0)
}

func (g *generator) reset() {
	s := g.syms
	s.names, s.kinds, s.base, s.suffix, s.lines = s.names[:0], s.kinds[:0], s.base[:0], s.suffix[:0], s.lines[:0]
	g.m.reset()
	g.ops = g.ops[:0]
	g.pools, g.skbs, g.held, g.refs = g.pools[:0], g.skbs[:0], g.held[:0], g.refs[:0]
	g.n = [4]int{}
}

// do applies op, records it, and reports whether a violation occurred.
func (g *generator) do(op Op) bool {
	op.Line = int32(len(g.ops) + 1)
	if err := g.m.Apply(op); err != nil {
		panic(fmt.Sprintf("gomodel: generator produced an invalid operation %q: %v", g.syms.Format(op), err))
	}
	g.ops = append(g.ops, op)
	// keep only live, top-level skbs
	k := 0
	for _, s := range g.skbs {
		if i := g.m.lookup(s); g.m.skbs[i].alive && g.m.skbs[i].owner < 0 {
			g.skbs[k] = s
			k++
		}
	}
	g.skbs = g.skbs[:k]
	return len(g.m.Violations) > 0
}

func (g *generator) pick(list []int32) (int32, int) {
	i := g.rnd.Intn(len(list))
	return list[i], i
}

func remove(list []int32, i int) []int32 {
	list[i] = list[len(list)-1]
	return list[:len(list)-1]
}

// episode runs one random sequence of up to n operations plus its teardown (budget caps the
// total); it reports whether a violation occurred.
func (g *generator) episode(n, budget int) bool {
	g.reset()
	pools := 1 + g.rnd.Intn(2)
	for i := 0; i < pools; i++ {
		size := []int32{2, 16, defaultPoolSize}[g.rnd.Intn(3)]
		p := g.name(SymPool, 0)
		g.pools = append(g.pools, p)
		g.do(Op{Kind: OpPool, A: p, B: -1, C: -1, N: size})
	}
	for len(g.ops) < n && len(g.ops) < budget {
		if g.step() {
			break
		}
	}
	g.teardown()
	return len(g.m.Violations) > 0
}

// teardown frees every top-level skb, drops every page reference the sequence holds and
// destroys the pools.
func (g *generator) teardown() {
	for len(g.skbs) > 0 {
		g.do(Op{Kind: OpKfree, A: g.skbs[0], B: -1, C: -1})
	}
	if len(g.m.completion) > 0 {
		g.do(Op{Kind: OpTxAction, A: -1, B: -1, C: -1})
	}
	for _, r := range g.refs {
		g.do(Op{Kind: OpPutPage, A: r, B: -1, C: -1})
	}
	for _, h := range g.held {
		op, _ := g.dropHeld(h)
		g.do(op)
	}
	g.refs, g.held = g.refs[:0], g.held[:0]
	for _, p := range g.pools {
		g.do(Op{Kind: OpDestroy, A: p, B: -1, C: -1})
	}
}

// dropHeld gives back a held page: recycle a page_pool page into its pool, put_page others.
func (g *generator) dropHeld(h int32) (Op, bool) {
	pg := &g.m.pages[g.m.lookup(h)]
	if pg.pool >= 0 {
		return Op{Kind: OpRecycle, A: g.m.pools[pg.pool].name, B: h, C: -1, Flag: uint8(g.rnd.Intn(2))}, true
	}
	return Op{Kind: OpPutPage, A: h, B: -1, C: -1}, true
}

func (g *generator) skb(i int32) *skb { return &g.m.skbs[g.m.lookup(i)] }
func (g *generator) data(i int32) *shinfo {
	return &g.m.datas[g.skb(i).data]
}

// step generates and applies one random operation.
func (g *generator) step() bool {
	none := Op{A: -1, B: -1, C: -1}
	for {
		op := none
		switch g.rnd.Intn(29) {
		case 0, 1, 2, 3: // rx
			if len(g.skbs) >= 12 {
				continue
			}
			op.Kind = OpRx
			op.B = g.pools[g.rnd.Intn(len(g.pools))]
			op.N = int32([]int{0, 0, 1, 2}[g.rnd.Intn(4)])
			op.A = g.name(SymSkb, 1)
			op.C = g.syms.AddDerived(op.A, ".head", SymPage)
			for i := int32(0); i < op.N; i++ {
				g.syms.AddDerived(op.A, ".f"+strconv.Itoa(int(i)), SymPage)
			}
			g.skbs = append(g.skbs, op.A)
		case 4: // alloc_skb
			op.Kind = OpAllocSkb
			op.Flag = uint8(g.rnd.Intn(2))
			op.A = g.name(SymSkb, 1)
			op.C = g.syms.AddDerived(op.A, ".head", SymPage)
			g.skbs = append(g.skbs, op.A)
		case 5: // alloc / page
			if len(g.held) >= 4 {
				continue
			}
			op.A = g.name(SymPage, 2)
			if g.rnd.Intn(3) == 0 {
				op.Kind = OpPage
			} else {
				op.Kind = OpAlloc
				op.B = g.pools[g.rnd.Intn(len(g.pools))]
			}
			g.held = append(g.held, op.A)
		case 6: // build_skb / add_rx_frag from a held page
			if len(g.held) == 0 {
				continue
			}
			h, i := g.pick(g.held)
			if g.rnd.Intn(2) == 0 {
				op.Kind, op.A, op.B = OpBuildSkb, g.name(SymSkb, 1), h
				g.skbs = append(g.skbs, op.A)
			} else {
				if len(g.skbs) == 0 {
					continue
				}
				s, _ := g.pick(g.skbs)
				sk, d := g.skb(s), g.data(s)
				// drivers add frags to the skb they just built: never to a GRO head, a copy
				// with a frag_list or a segment
				if sk.cloned || sk.tx || sk.users != 1 || d.dataref != 1 || len(d.frags) >= maxSkbFrags || len(d.fragList) > 0 {
					continue
				}
				op.Kind, op.A, op.B = OpAddRxFrag, s, h
			}
			g.held = remove(g.held, i)
		case 7: // recycle / release a held page
			if len(g.held) == 0 {
				continue
			}
			h, i := g.pick(g.held)
			pg := &g.m.pages[g.m.lookup(h)]
			if pg.pool < 0 {
				op.Kind, op.A = OpPutPage, h
				g.held = remove(g.held, i)
			} else if g.rnd.Intn(3) == 0 {
				op.Kind, op.A, op.B = OpRelease, g.m.pools[pg.pool].name, h
			} else {
				op, _ = g.dropHeld(h)
				g.held = remove(g.held, i)
			}
		case 8, 9: // clone
			if len(g.skbs) == 0 || len(g.skbs) >= 12 {
				continue
			}
			s, _ := g.pick(g.skbs)
			op.Kind, op.A, op.B = OpClone, g.name(SymSkb, 1), s
			g.skbs = append(g.skbs, op.A)
		case 10, 11: // skb_copy / pskb_copy
			if len(g.skbs) == 0 || len(g.skbs) >= 12 {
				continue
			}
			s, _ := g.pick(g.skbs)
			op.Kind, op.B = OpCopy, s
			if g.rnd.Intn(2) == 0 {
				op.Kind = OpPskbCopy
			}
			op.A = g.name(SymSkb, 1)
			op.C = g.syms.AddDerived(op.A, ".head", SymPage)
			g.skbs = append(g.skbs, op.A)
		case 12: // pskb_expand_head
			if len(g.skbs) == 0 {
				continue
			}
			s, _ := g.pick(g.skbs)
			if g.skb(s).users != 1 {
				continue
			}
			op.Kind, op.A = OpExpandHead, s
			op.C = g.syms.AddDerived(s, ".head."+strconv.Itoa(len(g.ops)), SymPage)
		case 13, 14, 15: // skb_try_coalesce
			if len(g.skbs) < 2 {
				continue
			}
			to, _ := g.pick(g.skbs)
			from, _ := g.pick(g.skbs)
			if to == from || g.skb(from).users != 1 || g.skb(to).tx || g.skb(from).tx {
				continue
			}
			op.Kind, op.A, op.B = OpCoalesce, to, from
			if g.rnd.Intn(4) == 0 {
				op.Flag = FlagFits
			}
		case 16, 17: // GRO
			if len(g.skbs) < 2 {
				continue
			}
			p, _ := g.pick(g.skbs)
			s, _ := g.pick(g.skbs)
			ps, ss := g.skb(p), g.skb(s)
			if p == s || ps.cloned || ps.tx || ss.tx || g.data(p).listed || ss.cloned || ss.users != 1 || len(g.data(s).fragList) > 0 {
				continue
			}
			op.Kind, op.A, op.B = OpGro, p, s
		case 18: // frag_list append
			if len(g.skbs) < 2 {
				continue
			}
			to, _ := g.pick(g.skbs)
			from, _ := g.pick(g.skbs)
			if to == from || g.skb(to).cloned || g.skb(to).tx || g.skb(from).tx {
				continue
			}
			op.Kind, op.A, op.B = OpFragList, to, from
		case 19: // splice / zerocopy
			if len(g.skbs) == 0 || len(g.refs) >= 4 {
				continue
			}
			s, _ := g.pick(g.skbs)
			nf := len(g.data(s).frags)
			op.B = s
			op.A = g.name(SymPage, 3)
			switch {
			case nf > 0 && g.rnd.Intn(2) == 0:
				op.Kind, op.N = OpZerocopy, int32(g.rnd.Intn(nf))
			case nf > 0 && g.rnd.Intn(2) == 0:
				op.Kind, op.N = OpSplice, int32(g.rnd.Intn(nf))
			default:
				op.Kind, op.N = OpSplice, -1
			}
			g.refs = append(g.refs, op.A)
		case 20: // drop a splice / zerocopy reference
			if len(g.refs) == 0 {
				continue
			}
			r, i := g.pick(g.refs)
			op.Kind, op.A = OpPutPage, r
			g.refs = remove(g.refs, i)
		case 21: // skb_get
			if len(g.skbs) == 0 {
				continue
			}
			s, _ := g.pick(g.skbs)
			if g.skb(s).users >= 3 {
				continue
			}
			op.Kind, op.A = OpSkbGet, s
		case 22, 23: // kfree_skb / consume_skb
			if len(g.skbs) == 0 {
				continue
			}
			s, _ := g.pick(g.skbs)
			op.Kind, op.A = OpKfree, s
			if g.rnd.Intn(2) == 0 {
				op.Kind = OpConsume
			}
		case 24: // skb_segment: a GRO packet forwarded to a NIC without its GSO type
			if len(g.skbs) == 0 || len(g.skbs) >= 12 {
				continue
			}
			s, _ := g.pick(g.skbs)
			if g.skb(s).tx {
				continue
			}
			clone := g.rnd.Intn(2) == 0
			if g.m.segmentCheck(g.m.lookup(s), clone) != "" {
				clone = true
				if g.m.segmentCheck(g.m.lookup(s), clone) != "" {
					continue
				}
			}
			op.Kind, op.B = OpSegment, s
			if clone {
				op.Flag = FlagClone
			}
			op.A = g.name(SymSkb, 1)
			op.C = g.syms.AddDerived(op.A, ".head", SymPage)
			g.skbs = append(g.skbs, op.A)
		case 25: // the free paths that bypass __kfree_skb()
			if len(g.skbs) == 0 {
				continue
			}
			s, _ := g.pick(g.skbs)
			op.A = s
			switch r := g.rnd.Intn(3); {
			case r == 0 && g.m.ctx.inServingSoftirq():
				op.Kind = OpNapiConsume
			case r == 1:
				op.Kind = OpKfreeIRQ
			default:
				op.Kind = OpConsumeUDP
			}
		case 26: // net_tx_action
			if len(g.m.completion) == 0 {
				continue
			}
			op.Kind = OpTxAction
		case 27: // the context the next frees run in
			op.Kind = OpContext
			op.N = int32(g.rnd.Intn(4))
			if ctxKind(op.N) == CtxNAPI {
				op.A = g.pools[g.rnd.Intn(len(g.pools))]
			}
		case 28: // memory pressure: pfmemalloc pages
			op.Kind = OpPfmemalloc
			if !g.m.pfmemalloc {
				op.Flag = FlagOn
			}
		}
		return g.do(op)
	}
}
