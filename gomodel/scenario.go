package gomodel

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// SymKind is what a scenario name stands for.
type SymKind uint8

const (
	SymPool SymKind = iota + 1
	SymPage
	SymSkb
)

var symKindNames = [...]string{"", "pool", "page", "skb"}

// Symbols names the pools, pages and skbs of a scenario. A derived name (the head page of skb
// s1 is "s1.head") is its base's name plus a suffix, so renaming the base renames it.
type Symbols struct {
	names  []string
	kinds  []SymKind
	base   []int32
	suffix []string
	lines  []int32
	index  map[string]int32
}

// NewSymbols returns an empty symbol table.
func NewSymbols() *Symbols { return &Symbols{index: map[string]int32{}} }

// Len is the number of symbols.
func (s *Symbols) Len() int { return len(s.kinds) }

// Name returns the name of symbol id.
func (s *Symbols) Name(id int32) string {
	if id < 0 || int(id) >= len(s.kinds) {
		return "?"
	}
	if b := s.base[id]; b >= 0 {
		return s.Name(b) + s.suffix[id]
	}
	return s.names[id]
}

// Kind returns the kind of symbol id.
func (s *Symbols) Kind(id int32) SymKind { return s.kinds[id] }

func (s *Symbols) add(name string, kind SymKind, base int32, suffix string, line int) int32 {
	s.names = append(s.names, name)
	s.kinds = append(s.kinds, kind)
	s.base = append(s.base, base)
	s.suffix = append(s.suffix, suffix)
	s.lines = append(s.lines, int32(line))
	id := int32(len(s.kinds) - 1)
	if s.index != nil {
		s.index[s.Name(id)] = id
	}
	return id
}

// Add declares a plain name.
func (s *Symbols) Add(name string, kind SymKind) int32 { return s.add(name, kind, -1, "", 0) }

// AddDerived declares base's name plus suffix.
func (s *Symbols) AddDerived(base int32, suffix string, kind SymKind) int32 {
	return s.add("", kind, base, suffix, 0)
}

// OpKind is a scenario operation or expectation.
type OpKind uint8

const (
	OpPool OpKind = iota + 1
	OpAlloc
	OpPage
	OpRecycle
	OpRelease
	OpPutPage
	OpDestroy
	OpWait
	OpRx
	OpBuildSkb
	OpAddRxFrag
	OpAllocSkb
	OpClone
	OpCopy
	OpPskbCopy
	OpExpandHead
	OpCoalesce
	OpGro
	OpFragList
	OpSplice
	OpZerocopy
	OpSkbGet
	OpKfree
	OpConsume
	OpSegment
	OpNapiConsume
	OpConsumeUDP
	OpKfreeIRQ
	OpTxAction
	OpContext
	OpPfmemalloc
	// expectations
	OpExpectViolation
	OpExpectNoViolation
	OpExpectInflight
	OpExpectHold
	OpExpectRelease
	OpExpectReturned
	OpExpectState
	OpExpectRefcount
	OpExpectStalled
	OpExpectPool
	OpExpectSkb
)

var opNames = map[OpKind]string{
	OpPool: "pool", OpAlloc: "alloc", OpPage: "page", OpRecycle: "recycle", OpRelease: "release",
	OpPutPage: "put_page", OpDestroy: "destroy", OpWait: "wait", OpRx: "rx", OpBuildSkb: "build_skb",
	OpAddRxFrag: "add_rx_frag", OpAllocSkb: "alloc_skb", OpClone: "clone", OpCopy: "copy",
	OpPskbCopy: "pskb_copy", OpExpandHead: "expand_head", OpCoalesce: "coalesce", OpGro: "gro",
	OpFragList: "frag_list", OpSplice: "splice", OpZerocopy: "zerocopy", OpSkbGet: "skb_get",
	OpKfree: "kfree", OpConsume: "consume", OpSegment: "segment", OpNapiConsume: "napi_consume",
	OpConsumeUDP: "consume_udp", OpKfreeIRQ: "kfree_irq", OpTxAction: "tx_action", OpContext: "context",
	OpPfmemalloc: "pfmemalloc",
}

// lastOp is the last operation (not expectation) kind.
const lastOp = OpPfmemalloc

// usage is the syntax of each operation, quoted in error messages.
var usage = map[string]string{
	"variant":      "variant none|prerfc|rfc|upstream|series|MUTANT [unhandled|release|fraglist|reject]",
	"pool":         "pool POOL [size N] [nodma]",
	"alloc":        "alloc PAGE POOL",
	"page":         "page PAGE",
	"recycle":      "recycle POOL PAGE [direct]",
	"release":      "release POOL PAGE",
	"put_page":     "put_page PAGE",
	"destroy":      "destroy POOL",
	"wait":         "wait SECONDS",
	"rx":           "rx SKB POOL [frags N]",
	"build_skb":    "build_skb SKB PAGE [nomark|mark POOL]",
	"add_rx_frag":  "add_rx_frag SKB PAGE [norelease]",
	"alloc_skb":    "alloc_skb SKB [kmalloc|frag]",
	"clone":        "clone NEW SKB",
	"copy":         "copy NEW SKB",
	"pskb_copy":    "pskb_copy NEW SKB",
	"expand_head":  "expand_head SKB",
	"coalesce":     "coalesce TO FROM [fits]",
	"gro":          "gro P SKB",
	"frag_list":    "frag_list TO FROM",
	"splice":       "splice REF SKB head|frag N",
	"zerocopy":     "zerocopy REF SKB N",
	"skb_get":      "skb_get SKB",
	"kfree":        "kfree SKB",
	"consume":      "consume SKB",
	"segment":      "segment SEG SKB [clone]",
	"napi_consume": "napi_consume SKB",
	"consume_udp":  "consume_udp SKB",
	"kfree_irq":    "kfree_irq SKB",
	"tx_action":    "tx_action",
	"context":      "context process|softirq|irq|napi POOL",
	"pfmemalloc":   "pfmemalloc on|off",
	"expect":       "expect violation NAME | no-violation | inflight POOL N | hold POOL N | release POOL N | returned PAGE N | state PAGE STATE | refcount PAGE N | stalled POOL | pool POOL alive|deferred|freed | skb SKB alive|freed",
}

// Flags of operations.
const (
	FlagNoDMA  = 1 // pool: no PP_FLAG_DMA_MAP
	FlagDirect = 1 // recycle: allow_direct
	FlagFrag   = 1 // alloc_skb: page_frag head
	FlagFits   = 1 // coalesce: from fits in to's tailroom
	FlagNoMark = 1 // build_skb: the driver neither releases nor marks
	FlagMark   = 2 // build_skb: the driver marks with pool C
	FlagKeep   = 1 // add_rx_frag: no page_pool_release_page()
	FlagClone  = 1 // segment: frag_list members go through skb_clone + skb_cow_head
	FlagOn     = 1 // pfmemalloc on
)

// Op is one line of a scenario.
type Op struct {
	Kind    OpKind
	A, B, C int32 // symbol ids, -1 when unused
	N       int32
	Flag    uint8
	Line    int32
	Str     string // expect violation NAME
}

// Scenario is a parsed scenario file.
type Scenario struct {
	File string
	// Config is the variant the file pins with a `variant` line; Pinned says whether it does.
	Config Config
	Pinned bool
	Ops    []Op
	Syms   *Symbols
}

// LineError is a malformed or impossible line: File:Line: Msg.
type LineError struct {
	File string
	Line int
	Msg  string
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

type parser struct {
	sc       *Scenario
	line     int
	expands  map[int32]int
	sawOp    bool
	maxLines int
}

func (p *parser) errf(format string, args ...any) error {
	return &LineError{File: p.sc.File, Line: p.line, Msg: fmt.Sprintf(format, args...)}
}

// ParseScenario parses a scenario file. Errors are *LineError.
func ParseScenario(r io.Reader, file string) (*Scenario, error) {
	p := &parser{sc: &Scenario{File: file, Syms: NewSymbols()}, expands: map[int32]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		p.line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		if err := p.parseLine(f); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &LineError{File: file, Line: p.line + 1, Msg: fmt.Sprintf("read: %v (lines are limited to 1 MiB)", err)}
	}
	if len(p.sc.Ops) == 0 {
		return nil, &LineError{File: file, Line: max(p.line, 1), Msg: "no operations: a scenario needs at least one line such as `pool rxq`"}
	}
	return p.sc, nil
}

func (p *parser) want(f []string, min, max int) error {
	if len(f) < min || len(f) > max {
		return p.errf("%s takes %s; write `%s`", f[0], argCount(min-1, max-1), usage[f[0]])
	}
	return nil
}

func argCount(min, max int) string {
	if min == max {
		return fmt.Sprintf("%d argument(s)", min)
	}
	return fmt.Sprintf("%d to %d arguments", min, max)
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, c := range s {
		ok := c == '_' || c == '-' || c == '.' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if !ok || (i == 0 && (c == '.' || c == '-')) {
			return false
		}
	}
	return true
}

// declare binds a new name.
func (p *parser) declare(name string, kind SymKind) (int32, error) {
	if !validName(name) {
		return -1, p.errf("%q is not a valid name: use letters, digits, '_', '-' and '.', starting with a letter or digit", name)
	}
	if id, dup := p.sc.Syms.index[name]; dup {
		return -1, p.errf("name %q is already used (line %d); pick a new name", name, p.sc.Syms.lines[id])
	}
	id := p.sc.Syms.add(name, kind, -1, "", p.line)
	return id, nil
}

func (p *parser) derive(base int32, suffix string, kind SymKind) (int32, error) {
	name := p.sc.Syms.Name(base) + suffix
	if id, dup := p.sc.Syms.index[name]; dup {
		return -1, p.errf("name %q (derived from %q) is already used (line %d); rename one of them", name, p.sc.Syms.Name(base), p.sc.Syms.lines[id])
	}
	return p.sc.Syms.add("", kind, base, suffix, p.line), nil
}

// ref resolves a name that must exist with the given kind.
func (p *parser) ref(name string, kind SymKind) (int32, error) {
	id, ok := p.sc.Syms.index[name]
	if !ok {
		return -1, p.errf("unknown %s %q: create it first (e.g. `%s`)", symKindNames[kind], name, creator(kind))
	}
	if k := p.sc.Syms.kinds[id]; k != kind {
		return -1, p.errf("%q is a %s (line %d), not a %s", name, symKindNames[k], p.sc.Syms.lines[id], symKindNames[kind])
	}
	return id, nil
}

func creator(k SymKind) string {
	switch k {
	case SymPool:
		return "pool NAME"
	case SymPage:
		return "alloc NAME POOL"
	default:
		return "rx NAME POOL"
	}
}

func (p *parser) num(s string, min, max int, what string) (int32, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < min || n > max {
		return 0, p.errf("%s must be a whole number from %d to %d, not %q", what, min, max, s)
	}
	return int32(n), nil
}

func (p *parser) parseLine(f []string) error {
	op := Op{A: -1, B: -1, C: -1, Line: int32(p.line)}
	var err error
	switch f[0] {
	case "variant":
		if err := p.want(f, 2, 3); err != nil {
			return err
		}
		if p.sc.Pinned {
			return p.errf("a second variant line: a scenario pins one variant; delete one of them")
		}
		if p.sawOp {
			return p.errf("variant must come before the first operation; move this line to the top")
		}
		c := ""
		if len(f) == 3 {
			c = f[2]
		}
		cfg, err := ParseVariant(f[1], c)
		if err != nil {
			return p.errf("%v", err)
		}
		p.sc.Config, p.sc.Pinned = cfg, true
		return nil
	case "pool":
		if err := p.want(f, 2, 5); err != nil {
			return err
		}
		op.Kind, op.N = OpPool, defaultPoolSize
		rest := f[2:]
		for len(rest) > 0 {
			switch {
			case rest[0] == "size" && len(rest) >= 2:
				if op.N, err = p.num(rest[1], 1, maxPoolSize, "pool size"); err != nil {
					return err
				}
				rest = rest[2:]
			case rest[0] == "nodma":
				op.Flag |= FlagNoDMA
				rest = rest[1:]
			default:
				return p.errf("unexpected %q; write `%s`", rest[0], usage["pool"])
			}
		}
		if op.A, err = p.declare(f[1], SymPool); err != nil {
			return err
		}
	case "alloc":
		if err := p.want(f, 3, 3); err != nil {
			return err
		}
		op.Kind = OpAlloc
		if op.B, err = p.ref(f[2], SymPool); err != nil {
			return err
		}
		if op.A, err = p.declare(f[1], SymPage); err != nil {
			return err
		}
	case "page":
		if err := p.want(f, 2, 2); err != nil {
			return err
		}
		op.Kind = OpPage
		if op.A, err = p.declare(f[1], SymPage); err != nil {
			return err
		}
	case "recycle", "release":
		if err := p.want(f, 3, 4); err != nil {
			return err
		}
		op.Kind = OpRelease
		if f[0] == "recycle" {
			op.Kind = OpRecycle
			if len(f) == 4 {
				if f[3] != "direct" {
					return p.errf("unexpected %q; write `%s`", f[3], usage["recycle"])
				}
				op.Flag = FlagDirect
			}
		} else if len(f) == 4 {
			return p.errf("release takes 2 arguments; write `%s`", usage["release"])
		}
		if op.A, err = p.ref(f[1], SymPool); err != nil {
			return err
		}
		if op.B, err = p.ref(f[2], SymPage); err != nil {
			return err
		}
	case "put_page":
		if err := p.want(f, 2, 2); err != nil {
			return err
		}
		op.Kind = OpPutPage
		if op.A, err = p.ref(f[1], SymPage); err != nil {
			return err
		}
	case "destroy":
		if err := p.want(f, 2, 2); err != nil {
			return err
		}
		op.Kind = OpDestroy
		if op.A, err = p.ref(f[1], SymPool); err != nil {
			return err
		}
	case "wait":
		if err := p.want(f, 2, 2); err != nil {
			return err
		}
		op.Kind = OpWait
		if op.N, err = p.num(f[1], 0, 86400, "wait SECONDS"); err != nil {
			return err
		}
	case "rx":
		if err := p.want(f, 3, 5); err != nil {
			return err
		}
		op.Kind = OpRx
		if len(f) == 4 || (len(f) == 5 && f[3] != "frags") {
			return p.errf("write `%s`", usage["rx"])
		}
		if len(f) == 5 {
			if op.N, err = p.num(f[4], 0, maxSkbFrags, "frags"); err != nil {
				return err
			}
		}
		if op.B, err = p.ref(f[2], SymPool); err != nil {
			return err
		}
		if op.A, err = p.declare(f[1], SymSkb); err != nil {
			return err
		}
		if op.C, err = p.derive(op.A, ".head", SymPage); err != nil {
			return err
		}
		for i := 0; i < int(op.N); i++ {
			if _, err = p.derive(op.A, ".f"+strconv.Itoa(i), SymPage); err != nil {
				return err
			}
		}
	case "build_skb", "add_rx_frag":
		if err := p.want(f, 3, 5); err != nil {
			return err
		}
		if op.B, err = p.ref(f[2], SymPage); err != nil {
			return err
		}
		if f[0] == "build_skb" {
			op.Kind = OpBuildSkb
			switch {
			case len(f) == 3:
			case len(f) == 4 && f[3] == "nomark":
				op.Flag = FlagNoMark
			case len(f) == 5 && f[3] == "mark":
				op.Flag = FlagMark
				if op.C, err = p.ref(f[4], SymPool); err != nil {
					return err
				}
			default:
				return p.errf("write `%s`", usage["build_skb"])
			}
			op.A, err = p.declare(f[1], SymSkb)
		} else {
			op.Kind = OpAddRxFrag
			switch {
			case len(f) == 3:
			case len(f) == 4 && f[3] == "norelease":
				op.Flag = FlagKeep
			default:
				return p.errf("write `%s`", usage["add_rx_frag"])
			}
			op.A, err = p.ref(f[1], SymSkb)
		}
		if err != nil {
			return err
		}
	case "alloc_skb":
		if err := p.want(f, 2, 3); err != nil {
			return err
		}
		op.Kind = OpAllocSkb
		if len(f) == 3 {
			switch f[2] {
			case "kmalloc":
			case "frag":
				op.Flag = FlagFrag
			default:
				return p.errf("unexpected %q; write `%s`", f[2], usage["alloc_skb"])
			}
		}
		if op.A, err = p.declare(f[1], SymSkb); err != nil {
			return err
		}
		if op.C, err = p.derive(op.A, ".head", SymPage); err != nil {
			return err
		}
	case "clone", "copy", "pskb_copy":
		if err := p.want(f, 3, 3); err != nil {
			return err
		}
		op.Kind = map[string]OpKind{"clone": OpClone, "copy": OpCopy, "pskb_copy": OpPskbCopy}[f[0]]
		if op.B, err = p.ref(f[2], SymSkb); err != nil {
			return err
		}
		if op.A, err = p.declare(f[1], SymSkb); err != nil {
			return err
		}
		if op.Kind != OpClone {
			if op.C, err = p.derive(op.A, ".head", SymPage); err != nil {
				return err
			}
		}
	case "expand_head":
		if err := p.want(f, 2, 2); err != nil {
			return err
		}
		op.Kind = OpExpandHead
		if op.A, err = p.ref(f[1], SymSkb); err != nil {
			return err
		}
		p.expands[op.A]++
		if op.C, err = p.derive(op.A, ".head."+strconv.Itoa(p.expands[op.A]+1), SymPage); err != nil {
			return err
		}
	case "coalesce", "gro", "frag_list":
		max := 3
		if f[0] == "coalesce" {
			max = 4
		}
		if err := p.want(f, 3, max); err != nil {
			return err
		}
		op.Kind = map[string]OpKind{"coalesce": OpCoalesce, "gro": OpGro, "frag_list": OpFragList}[f[0]]
		if len(f) == 4 {
			if f[3] != "fits" {
				return p.errf("unexpected %q; write `%s`", f[3], usage["coalesce"])
			}
			op.Flag = FlagFits
		}
		if op.A, err = p.ref(f[1], SymSkb); err != nil {
			return err
		}
		if op.B, err = p.ref(f[2], SymSkb); err != nil {
			return err
		}
		if op.A == op.B {
			return p.errf("%s needs two different skbs", f[0])
		}
	case "splice":
		if err := p.want(f, 4, 5); err != nil {
			return err
		}
		op.Kind, op.N = OpSplice, -1
		switch {
		case len(f) == 4 && f[3] == "head":
		case len(f) == 5 && f[3] == "frag":
			if op.N, err = p.num(f[4], 0, maxSkbFrags-1, "frag index"); err != nil {
				return err
			}
		default:
			return p.errf("write `%s`", usage["splice"])
		}
		if op.B, err = p.ref(f[2], SymSkb); err != nil {
			return err
		}
		if op.A, err = p.declare(f[1], SymPage); err != nil {
			return err
		}
	case "zerocopy":
		if err := p.want(f, 4, 4); err != nil {
			return err
		}
		op.Kind = OpZerocopy
		if op.N, err = p.num(f[3], 0, maxSkbFrags-1, "frag index"); err != nil {
			return err
		}
		if op.B, err = p.ref(f[2], SymSkb); err != nil {
			return err
		}
		if op.A, err = p.declare(f[1], SymPage); err != nil {
			return err
		}
	case "skb_get", "kfree", "consume", "napi_consume", "consume_udp", "kfree_irq":
		if err := p.want(f, 2, 2); err != nil {
			return err
		}
		op.Kind = map[string]OpKind{"skb_get": OpSkbGet, "kfree": OpKfree, "consume": OpConsume,
			"napi_consume": OpNapiConsume, "consume_udp": OpConsumeUDP, "kfree_irq": OpKfreeIRQ}[f[0]]
		if op.A, err = p.ref(f[1], SymSkb); err != nil {
			return err
		}
	case "segment":
		if err := p.want(f, 3, 4); err != nil {
			return err
		}
		op.Kind = OpSegment
		if len(f) == 4 {
			if f[3] != "clone" {
				return p.errf("unexpected %q; write `%s`", f[3], usage["segment"])
			}
			op.Flag = FlagClone
		}
		if op.B, err = p.ref(f[2], SymSkb); err != nil {
			return err
		}
		if op.A, err = p.declare(f[1], SymSkb); err != nil {
			return err
		}
		if op.C, err = p.derive(op.A, ".head", SymPage); err != nil {
			return err
		}
	case "tx_action":
		if err := p.want(f, 1, 1); err != nil {
			return err
		}
		op.Kind = OpTxAction
	case "context":
		if err := p.want(f, 2, 3); err != nil {
			return err
		}
		op.Kind = OpContext
		k := indexOf(ctxNames[:], f[1])
		if k < 0 || (k == int(CtxNAPI)) != (len(f) == 3) {
			return p.errf("write `%s`", usage["context"])
		}
		op.N = int32(k)
		if len(f) == 3 {
			if op.A, err = p.ref(f[2], SymPool); err != nil {
				return err
			}
		}
	case "pfmemalloc":
		if err := p.want(f, 2, 2); err != nil {
			return err
		}
		op.Kind = OpPfmemalloc
		switch f[1] {
		case "on":
			op.Flag = FlagOn
		case "off":
		default:
			return p.errf("write `%s`", usage["pfmemalloc"])
		}
	case "expect":
		if err := p.parseExpect(f, &op); err != nil {
			return err
		}
	default:
		return p.errf("unknown operation %q; operations are: %s (see gomodel/README.md)", f[0], opList())
	}
	if op.Kind < OpExpectViolation {
		p.sawOp = true
	}
	p.sc.Ops = append(p.sc.Ops, op)
	return nil
}

func opList() string {
	var names []string
	for k := OpPool; k <= lastOp; k++ {
		names = append(names, opNames[k])
	}
	return strings.Join(names, ", ") + ", expect"
}

var stateByName = map[string]PageState{}

func init() {
	for i, n := range stateNames {
		stateByName[n] = PageState(i)
	}
}

var poolStates = []string{"alive", "deferred", "freed"}
var skbStates = []string{"alive", "freed"}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

func (p *parser) parseExpect(f []string, op *Op) error {
	var err error
	bad := func() error { return p.errf("write `%s`", usage["expect"]) }
	if len(f) < 2 {
		return bad()
	}
	n := func(i int) error {
		op.N, err = p.num(f[i], 0, 1<<30, "the expected count")
		return err
	}
	switch f[1] {
	case "violation":
		if len(f) != 3 {
			return bad()
		}
		if indexOf(ViolationNames, f[2]) < 0 {
			return p.errf("unknown violation %q: use one of %s", f[2], strings.Join(ViolationNames, ", "))
		}
		op.Kind, op.Str = OpExpectViolation, f[2]
		return nil
	case "no-violation":
		if len(f) != 2 {
			return bad()
		}
		op.Kind = OpExpectNoViolation
		return nil
	case "inflight", "hold", "release":
		if len(f) != 4 {
			return bad()
		}
		op.Kind = map[string]OpKind{"inflight": OpExpectInflight, "hold": OpExpectHold, "release": OpExpectRelease}[f[1]]
		if op.A, err = p.ref(f[2], SymPool); err != nil {
			return err
		}
		return n(3)
	case "returned", "refcount":
		if len(f) != 4 {
			return bad()
		}
		op.Kind = OpExpectReturned
		if f[1] == "refcount" {
			op.Kind = OpExpectRefcount
		}
		if op.A, err = p.ref(f[2], SymPage); err != nil {
			return err
		}
		return n(3)
	case "state":
		if len(f) != 4 {
			return bad()
		}
		st, ok := stateByName[f[3]]
		if !ok {
			return p.errf("unknown page state %q: use one of %s", f[3], strings.Join(stateNames[:], ", "))
		}
		op.Kind, op.Flag = OpExpectState, uint8(st)
		op.A, err = p.ref(f[2], SymPage)
		return err
	case "stalled":
		if len(f) != 3 {
			return bad()
		}
		op.Kind = OpExpectStalled
		op.A, err = p.ref(f[2], SymPool)
		return err
	case "pool", "skb":
		if len(f) != 4 {
			return bad()
		}
		list, kind := poolStates, SymPool
		op.Kind = OpExpectPool
		if f[1] == "skb" {
			list, kind, op.Kind = skbStates, SymSkb, OpExpectSkb
		}
		i := indexOf(list, f[3])
		if i < 0 {
			return p.errf("unknown %s state %q: use one of %s", f[1], f[3], strings.Join(list, ", "))
		}
		op.Flag = uint8(i)
		op.A, err = p.ref(f[2], kind)
		return err
	}
	return bad()
}

// Format prints op in the scenario language.
func (s *Symbols) Format(op Op) string {
	n := s.Name
	switch op.Kind {
	case OpPool:
		out := "pool " + n(op.A)
		if op.N != defaultPoolSize {
			out += " size " + strconv.Itoa(int(op.N))
		}
		if op.Flag&FlagNoDMA != 0 {
			out += " nodma"
		}
		return out
	case OpAlloc:
		return "alloc " + n(op.A) + " " + n(op.B)
	case OpPage, OpPutPage, OpDestroy, OpExpandHead, OpSkbGet, OpKfree, OpConsume, OpNapiConsume, OpConsumeUDP, OpKfreeIRQ:
		return opNames[op.Kind] + " " + n(op.A)
	case OpTxAction:
		return "tx_action"
	case OpContext:
		if ctxKind(op.N) == CtxNAPI {
			return "context napi " + n(op.A)
		}
		return "context " + ctxNames[op.N]
	case OpPfmemalloc:
		if op.Flag&FlagOn != 0 {
			return "pfmemalloc on"
		}
		return "pfmemalloc off"
	case OpSegment:
		if op.Flag&FlagClone != 0 {
			return "segment " + n(op.A) + " " + n(op.B) + " clone"
		}
		return "segment " + n(op.A) + " " + n(op.B)
	case OpBuildSkb:
		switch op.Flag {
		case FlagNoMark:
			return "build_skb " + n(op.A) + " " + n(op.B) + " nomark"
		case FlagMark:
			return "build_skb " + n(op.A) + " " + n(op.B) + " mark " + n(op.C)
		}
		return "build_skb " + n(op.A) + " " + n(op.B)
	case OpAddRxFrag:
		if op.Flag&FlagKeep != 0 {
			return "add_rx_frag " + n(op.A) + " " + n(op.B) + " norelease"
		}
		return "add_rx_frag " + n(op.A) + " " + n(op.B)
	case OpRecycle:
		out := "recycle " + n(op.A) + " " + n(op.B)
		if op.Flag&FlagDirect != 0 {
			out += " direct"
		}
		return out
	case OpRelease:
		return "release " + n(op.A) + " " + n(op.B)
	case OpWait:
		return "wait " + strconv.Itoa(int(op.N))
	case OpRx:
		out := "rx " + n(op.A) + " " + n(op.B)
		if op.N > 0 {
			out += " frags " + strconv.Itoa(int(op.N))
		}
		return out
	case OpClone, OpCopy, OpPskbCopy, OpGro, OpFragList:
		return opNames[op.Kind] + " " + n(op.A) + " " + n(op.B)
	case OpAllocSkb:
		if op.Flag&FlagFrag != 0 {
			return "alloc_skb " + n(op.A) + " frag"
		}
		return "alloc_skb " + n(op.A)
	case OpCoalesce:
		out := "coalesce " + n(op.A) + " " + n(op.B)
		if op.Flag&FlagFits != 0 {
			out += " fits"
		}
		return out
	case OpSplice:
		if op.N < 0 {
			return "splice " + n(op.A) + " " + n(op.B) + " head"
		}
		return "splice " + n(op.A) + " " + n(op.B) + " frag " + strconv.Itoa(int(op.N))
	case OpZerocopy:
		return "zerocopy " + n(op.A) + " " + n(op.B) + " " + strconv.Itoa(int(op.N))
	case OpExpectViolation:
		return "expect violation " + op.Str
	case OpExpectNoViolation:
		return "expect no-violation"
	case OpExpectInflight, OpExpectHold, OpExpectRelease:
		w := map[OpKind]string{OpExpectInflight: "inflight", OpExpectHold: "hold", OpExpectRelease: "release"}[op.Kind]
		return "expect " + w + " " + n(op.A) + " " + strconv.Itoa(int(op.N))
	case OpExpectReturned:
		return "expect returned " + n(op.A) + " " + strconv.Itoa(int(op.N))
	case OpExpectRefcount:
		return "expect refcount " + n(op.A) + " " + strconv.Itoa(int(op.N))
	case OpExpectState:
		return "expect state " + n(op.A) + " " + stateNames[op.Flag]
	case OpExpectStalled:
		return "expect stalled " + n(op.A)
	case OpExpectPool:
		return "expect pool " + n(op.A) + " " + poolStates[op.Flag]
	case OpExpectSkb:
		return "expect skb " + n(op.A) + " " + skbStates[op.Flag]
	}
	return fmt.Sprintf("?op%d", op.Kind)
}
