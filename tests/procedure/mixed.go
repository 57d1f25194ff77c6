package procedure

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ppkit/ppkit/tests/verdict"
)

// ---- mixed: several procedures at once on one board ----

// MixedMember says whether a procedure may run inside mixed, and why. A real machine combines
// paths — a capture next to TCP, reassembly next to multicast — so their skbs meet in one pool;
// procedures that need conflicting NIC-wide settings cannot be combined.
type MixedMember struct {
	Procedure string
	Member    bool
	// GRO is the NIC-wide GRO state a member needs: "on", "off", or "" for either.
	GRO    string
	Reason string
}

// MixedMembers classifies every procedure. A new procedure needs a line here
// (TestMixedMembersCoverEveryProcedure); a member gets the iperf port MixedBasePort + its index.
var MixedMembers = []MixedMember{
	{"multicast", true, "", "UDP multicast; its packet socket reads the NIC, so every other member's frames are cloned too (the capture paths for all)"},
	{"tcp", true, "off", "needs GRO off: a member when the seed draws GRO off"},
	{"gro", true, "on", "needs GRO on: a member when the seed draws GRO on"},
	{"splice", true, "", "on its member port instead of SplicePort; with GRO on its segments are merged first"},
	{"copy", true, "", "its TEE rule matches all UDP on the NIC: the multicast and defrag members' packets are copied too (pskb_copy of their heads and fragments)"},
	{"defrag", true, "", "needs MTU 1500 (its datagrams must fragment), which mixed keeps; ipfrag_time 1 s changes nothing for the others"},
	{"jumbo", false, "", "needs MTU 9000 on both ends: defrag's datagrams would not fragment and every TCP member would become jumbo"},
	{"zerocopy", false, "", "needs MTU 9000 on both ends (as jumbo)"},
	{"tcp-capture", false, "", "is tcp with a packet socket: multicast's packet socket captures every member"},
	{"gro-capture", false, "", "is gro with a packet socket: multicast's packet socket captures every member"},
	{"tcp-rps", false, "", "RPS is drawn for the whole run, so it is the tcp member with RPS on"},
	{"tcp-slowread", false, "", "its reader falls behind on purpose: inside mixed its full queue would only hold the other members' pages longer"},
	{"forward", false, "", "runs two timed phases of its own (without, then with a packet socket on the NIC) through the second client; inside mixed its phase checks would not hold"},
	{"mixed", false, "", "itself"},
}

// MixedBasePort is the first member's iperf port: members never share iperf's default 5001.
const MixedBasePort = 5101

// mixedMinMembers is the fewest members a plan draws (or all candidates, if fewer).
const mixedMinMembers = 3

// mixedStartStep is the resolution of the start offsets; they lie in [0, T/3].
const mixedStartStep = 250 * time.Millisecond

// MixedPlan is one draw of mixed: the NIC-wide settings and the members in the order they
// start, each with its start offset after the begin marker. It is a pure function of the seed
// and the traffic time (PlanMixed).
type MixedPlan struct {
	Seed    int64           `json:"seed"`
	GRO     bool            `json:"gro"`
	RPS     bool            `json:"rps"`
	Members []PlannedMember `json:"members"`
}

// PlannedMember is one member of a plan.
type PlannedMember struct {
	Procedure string        `json:"procedure"`
	Start     time.Duration `json:"start_ns"`
	Port      int           `json:"port"`
}

func (p MixedPlan) String() string {
	onOff := map[bool]string{true: "on", false: "off"}
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: GRO %s, RPS %s; start order", p.Seed, onOff[p.GRO], onOff[p.RPS])
	for _, m := range p.Members {
		fmt.Fprintf(&b, " %s@%.2fs", m.Procedure, m.Start.Seconds())
	}
	return b.String()
}

// PlanMixed draws a plan from seed for traffic time d: GRO on or off, RPS on or off, at least
// mixedMinMembers of the members that fit that GRO state in a shuffled order, start offsets in
// [0, d/3] (the first member starts at once; each runs until d). The generator is PCG with a
// fixed stream and plain modulo draws, so a seed means the same plan on every machine and Go
// version (TestPlanMixed pins it).
func PlanMixed(seed int64, d time.Duration) MixedPlan {
	src := rand.NewPCG(uint64(seed), 0x6d69786564) // "mixed"
	draw := func(n int) int { return int(src.Uint64() % uint64(n)) }
	p := MixedPlan{Seed: seed, GRO: draw(2) == 1, RPS: draw(2) == 1}
	var cands []PlannedMember
	for i, m := range MixedMembers {
		if m.Member && m.fits(p.GRO) {
			cands = append(cands, PlannedMember{Procedure: m.Procedure, Port: MixedBasePort + i})
		}
	}
	for i := len(cands) - 1; i > 0; i-- { // Fisher–Yates
		j := draw(i + 1)
		cands[i], cands[j] = cands[j], cands[i]
	}
	n := len(cands)
	if n > mixedMinMembers {
		n = mixedMinMembers + draw(n-mixedMinMembers+1)
	}
	p.Members = cands[:n]
	steps := int(d / 3 / mixedStartStep)
	starts := make([]int, n)
	for i := 1; i < n; i++ {
		starts[i] = draw(steps + 1)
	}
	slices.Sort(starts)
	for i := range p.Members {
		p.Members[i].Start = time.Duration(starts[i]) * mixedStartStep
	}
	return p
}

func (m MixedMember) fits(gro bool) bool {
	return m.GRO == "" || (m.GRO == "on") == gro
}

// NewSeed draws a seed for a run that was given none: small enough to retype.
func NewSeed() int64 { return 1 + rand.Int64N(999_999) }

// Mixed runs several procedures at once on one board for the traffic time: which ones, in
// what order, with what start offsets, and GRO and RPS for the whole NIC are drawn from
// Options.Seed (PlanMixed). Each member keeps its own Setup, Run and Collect, in its own
// artifact directory, board run directory and iperf port; the run has one trace and one model
// check, and each member's traffic is judged on its own (verdict.MemberTraffic).
type Mixed struct {
	plan    MixedPlan
	members []Procedure
	envs    []*Env
}

func (*Mixed) Name() string { return "mixed" }
func (*Mixed) Description() string {
	return "several procedures at once on one board; members, start order and offsets, GRO and RPS drawn from --seed"
}

// Paths are the members' paths (any may be drawn) and RPS's.
func (*Mixed) Paths() []string {
	paths := []string{"get_rps_cpu", "enqueue_to_backlog", "process_backlog"}
	for _, m := range mixedCandidates() {
		for _, p := range m.Paths() {
			if !slices.Contains(paths, p) {
				paths = append(paths, p)
			}
		}
	}
	return paths
}

// Helpers are every candidate's: the plan is drawn after they are copied.
func (*Mixed) Helpers() []string {
	var hs []string
	for _, m := range mixedCandidates() {
		for _, h := range m.Helpers() {
			if !slices.Contains(hs, h) {
				hs = append(hs, h)
			}
		}
	}
	return hs
}

// usesSeed marks the procedures whose run Options.Seed decides (runKernel records it).
func (*Mixed) usesSeed() {}

func mixedCandidates() []Procedure {
	all := Procedures()
	var out []Procedure
	for _, m := range MixedMembers {
		if m.Member {
			out = append(out, all[m.Procedure])
		}
	}
	return out
}

// Setup draws the plan, prints it, sets GRO and RPS for the NIC, and sets up each member in
// the plan's order, each in its own directories and port.
func (x *Mixed) Setup(ctx context.Context, env *Env) error {
	if env.Options.Seed == 0 {
		return errors.New("mixed needs a seed (Options.Seed): Run draws one")
	}
	x.plan = PlanMixed(env.Options.Seed, env.Options.Duration)
	env.logf("mixed: %s (replay: ppkit test mixed --seed %d --time %s)", x.plan, x.plan.Seed, env.Options.Duration)
	if err := setGRO(ctx, env, x.plan.GRO); err != nil {
		return err
	}
	if x.plan.RPS {
		if err := steerToOtherCPU(ctx, env); err != nil {
			return err
		}
	}
	udp := 0
	for _, m := range x.plan.Members {
		if m.udp() {
			udp++
		}
	}
	all := Procedures() // fresh instances: procedures keep per-run state
	for _, m := range x.plan.Members {
		menv := *env
		menv.Dir = filepath.Join(env.Dir, m.Procedure)
		menv.RunDir = env.runDir() + "/" + m.Procedure
		menv.Port = m.Port
		menv.Options.Duration = max(env.Options.Duration-m.Start, time.Second)
		if m.udp() { // the UDP members share the offered load: R in total
			menv.Options.RateMbit = max(env.Options.RateMbit/udp, 1)
		}
		if err := os.MkdirAll(menv.Dir, 0o755); err != nil {
			return fmt.Errorf("artifact directory: %w", err)
		}
		p := all[m.Procedure]
		x.members, x.envs = append(x.members, p), append(x.envs, &menv)
		if err := p.Setup(ctx, &menv); err != nil {
			return fmt.Errorf("member %s: %w", m.Procedure, err)
		}
	}
	return nil
}

// udp says whether a member sends UDP at Options.RateMbit.
func (m PlannedMember) udp() bool {
	return m.Procedure == "multicast" || m.Procedure == "copy" || m.Procedure == "defrag"
}

// Run starts each member at its offset and waits for all of them.
func (x *Mixed) Run(ctx context.Context, env *Env) error {
	errs := make([]error, len(x.members))
	var wg sync.WaitGroup
	for i, p := range x.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := x.plan.Members[i]
			if err := sleepCtx(ctx, m.Start); err != nil {
				errs[i] = fmt.Errorf("member %s: %w", m.Procedure, err)
				return
			}
			env.logf("mixed: %s starts at +%.2fs", m.Procedure, m.Start.Seconds())
			if err := p.Run(ctx, x.envs[i]); err != nil {
				errs[i] = fmt.Errorf("member %s: %w", m.Procedure, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Collect collects every member in plan order: the total of their traffic, and each member's
// own (verdict.Traffic.Members), which the verdict checks one by one.
func (x *Mixed) Collect(ctx context.Context, env *Env) (verdict.Traffic, error) {
	t := verdict.Traffic{Notes: []string{x.plan.String()}}
	var errs []error
	for i, p := range x.members {
		m := x.plan.Members[i]
		mt, err := p.Collect(ctx, x.envs[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("member %s: %w", m.Procedure, err))
		}
		t.Bytes += mt.Bytes
		t.BitsPerSecond += mt.BitsPerSecond
		t.Datagrams += mt.Datagrams
		t.Lost += mt.Lost
		t.Notes = append(t.Notes, fmt.Sprintf("%s (port %d, +%.2fs): %d bytes, %s", m.Procedure, m.Port, m.Start.Seconds(),
			mt.Bytes, verdict.FormatBitRate(mt.BitsPerSecond)))
		for _, n := range mt.Notes {
			t.Notes = append(t.Notes, m.Procedure+": "+n)
		}
		t.Members = append(t.Members, verdict.MemberTraffic{Procedure: m.Procedure, Start: m.Start, Port: m.Port,
			Bytes: mt.Bytes, BitsPerSecond: mt.BitsPerSecond, Datagrams: mt.Datagrams, Lost: mt.Lost})
	}
	return t, errors.Join(errs...)
}
