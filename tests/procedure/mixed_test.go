package procedure

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

// TestPlanMixed pins the generator: a seed printed by a run must mean the same plan on every
// machine and every later ppkit (PCG, plain modulo draws). Changing MixedMembers or the
// draws changes these plans; say so in tests/README.md when you update them.
func TestPlanMixed(t *testing.T) {
	s := time.Second / 4
	for _, tc := range []struct {
		seed int64
		d    time.Duration
		want MixedPlan
	}{
		{1, 10 * time.Second, MixedPlan{Seed: 1, Members: []PlannedMember{
			{"defrag", 0, 5106}, {"splice", s, 5104}, {"tcp", 8 * s, 5102}, {"multicast", 8 * s, 5101}}}},
		{4, 10 * time.Second, MixedPlan{Seed: 4, GRO: true, RPS: true, Members: []PlannedMember{
			{"gro", 0, 5103}, {"splice", 3 * s, 5104}, {"copy", 13 * s, 5105}}}},
		{99, 10 * time.Second, MixedPlan{Seed: 99, GRO: true, Members: []PlannedMember{
			{"splice", 0, 5104}, {"defrag", 0, 5106}, {"copy", 2 * s, 5105}, {"multicast", 2 * s, 5101}, {"gro", 10 * s, 5103}}}},
		// The traffic time only scales the offsets: same members, same order.
		{99, time.Second, MixedPlan{Seed: 99, GRO: true, Members: []PlannedMember{
			{"splice", 0, 5104}, {"defrag", 0, 5106}, {"copy", 0, 5105}, {"multicast", 0, 5101}, {"gro", 0, 5103}}}},
	} {
		if got := PlanMixed(tc.seed, tc.d); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("PlanMixed(%d, %s) = %s\nwant %s", tc.seed, tc.d, got, tc.want)
		}
	}
}

// TestPlanMixedInvariants: over many seeds every plan is valid (members that fit its GRO
// state, each once, on its own port, starting in order within the first third), the draw is a
// pure function of the seed, and every setting and member shows up.
func TestPlanMixedInvariants(t *testing.T) {
	const d = 30 * time.Second
	seen := map[string]bool{}
	for seed := int64(1); seed <= 500; seed++ {
		p := PlanMixed(seed, d)
		if !reflect.DeepEqual(p, PlanMixed(seed, d)) {
			t.Fatalf("seed %d: two draws differ", seed)
		}
		if len(p.Members) < mixedMinMembers {
			t.Errorf("seed %d: %d members", seed, len(p.Members))
		}
		seen[map[bool]string{true: "GRO on", false: "GRO off"}[p.GRO]] = true
		seen[map[bool]string{true: "RPS on", false: "RPS off"}[p.RPS]] = true
		ports := map[int]bool{}
		names := map[string]bool{}
		for i, m := range p.Members {
			seen[m.Procedure] = true
			i2 := slices.IndexFunc(MixedMembers, func(mm MixedMember) bool { return mm.Procedure == m.Procedure })
			if i2 < 0 || !MixedMembers[i2].Member || !MixedMembers[i2].fits(p.GRO) {
				t.Errorf("seed %d: %s is no member with GRO %v", seed, m.Procedure, p.GRO)
			}
			if names[m.Procedure] || ports[m.Port] || m.Port == 5001 || m.Port == SplicePort || m.Port == ZerocopyPort || m.Port < MixedBasePort {
				t.Errorf("seed %d: member %s port %d repeats or collides", seed, m.Procedure, m.Port)
			}
			names[m.Procedure], ports[m.Port] = true, true
			if (i == 0 && m.Start != 0) || m.Start < 0 || m.Start > d/3 || (i > 0 && m.Start < p.Members[i-1].Start) {
				t.Errorf("seed %d: member %d starts at %s", seed, i, m.Start)
			}
		}
	}
	for _, want := range []string{"GRO on", "GRO off", "RPS on", "RPS off", "multicast", "tcp", "gro", "splice", "copy", "defrag"} {
		if !seen[want] {
			t.Errorf("no plan of 500 seeds has %s", want)
		}
	}
	if PlanMixed(1, d).String() == PlanMixed(2, d).String() {
		t.Error("seeds 1 and 2 draw the same plan")
	}
}

// TestMixedMembersCoverEveryProcedure: each procedure is explicitly a member of mixed or not,
// with the reason; a new procedure must be classified.
func TestMixedMembersCoverEveryProcedure(t *testing.T) {
	all := Procedures()
	listed := map[string]bool{}
	for _, m := range MixedMembers {
		if _, ok := all[m.Procedure]; !ok {
			t.Errorf("MixedMembers lists %q, which is no procedure", m.Procedure)
		}
		if listed[m.Procedure] || m.Reason == "" || (m.GRO != "" && m.GRO != "on" && m.GRO != "off") {
			t.Errorf("MixedMembers: %+v repeats, has no reason, or a bad GRO", m)
		}
		listed[m.Procedure] = true
	}
	for name := range all {
		if !listed[name] {
			t.Errorf("procedure %s: say in MixedMembers whether it may run inside mixed, and why", name)
		}
	}
}
