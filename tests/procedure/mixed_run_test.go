package procedure_test

import (
	"context"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/internal/syncbuf"
	"github.com/ppkit/ppkit/tests/procedure"
	"github.com/ppkit/ppkit/tests/procedure/boardtest"
	"github.com/ppkit/ppkit/tests/verdict"
)

// memberDirRE finds a member's board run directory in a started command's pid file.
var memberDirRE = regexp.MustCompile(`echo \$\$ > '?/tmp/ppkit/([a-z-]+)/`)

// runMixedOnFake runs `ppkit test mixed` with seed (0: draw one) on the scripted board and
// returns the result, the progress, and the order in which the members' servers started.
func runMixedOnFake(t *testing.T, seed int64, cache string) (*verdict.Result, string, []string) {
	t.Helper()
	l := &boardtest.Launcher{Prepare: func(b *boardtest.Board) { b.IPTables = true }}
	progress := &syncbuf.Buffer{}
	sum, err := procedure.Run(context.Background(), procedure.Config{Procedures: []string{"mixed"}, Kernel: procedure.Kernel{Series: "/src/patches", Design: "series"},
		Options: procedure.Options{Duration: time.Second, RateMbit: 10, Seed: seed}, ArtifactDir: t.TempDir(),
		Launcher: l, Model: boardtest.OKModel, CacheRoot: cache, Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Results) != 1 || len(l.Testbeds) != 1 {
		t.Fatalf("%d results on %d boards", len(sum.Results), len(l.Testbeds))
	}
	var order []string
	for _, cmd := range l.Testbeds[0].Scripted.Ran {
		if m := memberDirRE.FindStringSubmatch(cmd); m != nil && !slices.Contains(order, m[1]) {
			order = append(order, m[1])
		}
	}
	return sum.Results[0], progress.String(), order
}

func planNames(p procedure.MixedPlan) []string {
	var out []string
	for _, m := range p.Members {
		out = append(out, m.Procedure)
	}
	return out
}

// TestMixedSeedReplaysOnFakeBoard: the members start in the plan's order, which is a pure
// function of the seed; a run without a seed draws one, prints it and records it in the
// result, and a run given that seed (ppkit test mixed --seed N) replays the same order.
func TestMixedSeedReplaysOnFakeBoard(t *testing.T) {
	boardtest.FastTimers(t)
	cache := t.TempDir()
	for _, seed := range []int64{1, 99} { // GRO off with tcp; GRO on with all five UDP/TCP kinds
		res, progress, order := runMixedOnFake(t, seed, cache)
		want := procedure.PlanMixed(seed, time.Second)
		if !res.Pass || res.Seed != seed {
			t.Fatalf("seed %d: pass %v, recorded seed %d: %v", seed, res.Pass, res.Seed, res.Reasons)
		}
		if !reflect.DeepEqual(order, planNames(want)) {
			t.Errorf("seed %d: members started in order %v, the plan says %v", seed, order, planNames(want))
		}
		if !strings.Contains(progress, want.String()) || !strings.Contains(progress, "--seed "+strconv.FormatInt(seed, 10)) {
			t.Errorf("seed %d: the progress does not print the plan %q:\n%s", seed, want, progress)
		}
		var members []string
		for _, m := range res.Traffic.Members {
			members = append(members, m.Procedure)
			if m.Bytes == 0 || m.Port != want.Members[len(members)-1].Port {
				t.Errorf("seed %d: member traffic %+v", seed, m)
			}
		}
		if !reflect.DeepEqual(members, planNames(want)) {
			t.Errorf("seed %d: per-member traffic %v, want %v", seed, members, planNames(want))
		}
	}

	// No seed: one is drawn, printed and recorded; --seed with it replays the order.
	res, progress, order := runMixedOnFake(t, 0, cache)
	if res.Seed <= 0 || !strings.Contains(progress, "--seed "+strconv.FormatInt(res.Seed, 10)) {
		t.Fatalf("drawn seed %d not printed:\n%s", res.Seed, progress)
	}
	again, _, replayed := runMixedOnFake(t, res.Seed, cache)
	if again.Seed != res.Seed || !reflect.DeepEqual(order, replayed) || !reflect.DeepEqual(order, planNames(procedure.PlanMixed(res.Seed, time.Second))) {
		t.Errorf("seed %d: first order %v, replayed %v", res.Seed, order, replayed)
	}
}
