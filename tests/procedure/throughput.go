package procedure

import (
	"context"
	"errors"
	"math"
	"slices"

	"github.com/ppkit/ppkit/tests/verdict"
)

// ThroughputComparison is one procedure's untraced throughput on two kernels, measured in
// alternated rounds: each round runs the procedure on a fresh board of each kernel, one right
// after the other, and the order flips every round so a drift of the machine does not favour
// either kernel. One run each cannot tell two designs apart on a noisy machine (TCG's speed
// varies by more than the designs differ); the rounds can, or say that they cannot.
type ThroughputComparison struct {
	Procedure string `json:"procedure"`
	// Kernel and Reference are the kernels compared (Config.Kernel and Config.Compare[0]).
	Kernel    string `json:"kernel"`
	Reference string `json:"reference"`
	// Ratios are the kernel's throughput over the reference's, one per round that measured
	// both (Mbit/s; packets received when the tool reports no rate).
	Ratios []float64 `json:"ratios"`
	// Missing counts rounds in which one of the two runs measured no traffic.
	Missing int `json:"missing,omitempty"`
	ThroughputJudgement
}

// ThroughputJudgement is what a set of paired ratios shows (JudgeRatios).
type ThroughputJudgement struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// Lower and Higher count the rounds in which the kernel was slower and faster.
	Lower  int `json:"lower"`
	Higher int `json:"higher"`
	// Finding is FindingLower or FindingHigher when a one-sided sign test over the rounds puts
	// the chance of that many rounds on one side below Significance if the kernels were
	// alike, FindingNoDifference otherwise (too few rounds, or too close to tell).
	Finding string `json:"finding"`
	// P is the sign test's one-sided p-value for the side the rounds lean to.
	P float64 `json:"p"`
	// FamilyFinding is Finding after Holm's correction over every procedure of the run
	// (HolmFindings): twelve procedures judged at 5 % each call one difference by chance in
	// about a third of the runs.
	FamilyFinding string `json:"family_finding"`
}

// The findings of a throughput comparison.
const (
	FindingLower        = "lower"
	FindingHigher       = "higher"
	FindingNoDifference = "no difference shown"
)

// Significance is the p-value below which a comparison calls a difference (5 %: five rounds
// all on one side, 1/32, are enough; four of five, 6/32, are not).
const Significance = 0.05

// JudgeRatios summarises paired throughput ratios (kernel over reference) with a sign test:
// it assumes nothing of the spread's shape, which on an emulated board is not normal, only
// that in rounds where the kernels were alike either order of the pair is as likely.
func JudgeRatios(ratios []float64) ThroughputJudgement {
	var j ThroughputJudgement
	j.Finding = FindingNoDifference
	j.P = 1
	if len(ratios) == 0 {
		return j
	}
	s := slices.Clone(ratios)
	slices.Sort(s)
	j.Min, j.Max = s[0], s[len(s)-1]
	if n := len(s); n%2 == 1 {
		j.Median = s[n/2]
	} else {
		j.Median = (s[n/2-1] + s[n/2]) / 2
	}
	for _, r := range s {
		switch {
		case r < 1:
			j.Lower++
		case r > 1:
			j.Higher++
		}
	}
	n := j.Lower + j.Higher // ties say nothing either way
	k, finding := j.Lower, FindingLower
	if j.Higher > j.Lower {
		k, finding = j.Higher, FindingHigher
	}
	if n == 0 {
		return j
	}
	j.P = binomialTail(n, k)
	if j.P < Significance {
		j.Finding = finding
	}
	return j
}

// HolmFindings sets each comparison's FamilyFinding: its Finding if Holm's step-down procedure
// keeps it at Significance over all of cmps (the i-th smallest p of m must be below
// Significance/(m−i), and so must every smaller one), else FindingNoDifference.
func HolmFindings(cmps []ThroughputComparison) {
	order := make([]int, len(cmps))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch pa, pb := cmps[a].P, cmps[b].P; {
		case pa < pb:
			return -1
		case pa > pb:
			return 1
		}
		return 0
	})
	m, keep := len(cmps), true
	for i, k := range order {
		c := &cmps[k]
		keep = keep && c.Finding != FindingNoDifference && c.P < Significance/float64(m-i)
		c.FamilyFinding = FindingNoDifference
		if keep {
			c.FamilyFinding = c.Finding
		}
	}
}

// binomialTail is P(X ≥ k) for X ~ Binomial(n, ½).
func binomialTail(n, k int) float64 {
	var sum float64
	for i := k; i <= n; i++ {
		sum += binomial(n, i)
	}
	return sum / math.Pow(2, float64(n))
}

func binomial(n, k int) float64 {
	r := 1.0
	for i := 1; i <= k; i++ {
		r = r * float64(n-k+i) / float64(i)
	}
	return r
}

// throughputRatio is a's throughput over b's: Mbit/s when both runs report a rate, else the
// packets the board's NIC received; 0 when b measured nothing.
func throughputRatio(a, b verdict.Traffic, aPackets, bPackets int64) float64 {
	if a.BitsPerSecond > 0 && b.BitsPerSecond > 0 {
		return a.BitsPerSecond / b.BitsPerSecond
	}
	if bPackets > 0 {
		return float64(aPackets) / float64(bPackets)
	}
	return 0
}

// CompareThroughput runs cfg's procedures untraced on cfg.Kernel and on cfg.Compare's one
// kernel, rounds times, alternating the order (ThroughputComparison), and judges each
// procedure alone (Finding) and all of them as one family (FamilyFinding).
func CompareThroughput(ctx context.Context, cfg Config, rounds int) ([]ThroughputComparison, error) {
	if len(cfg.Compare) != 1 {
		return nil, errors.New("a throughput comparison needs exactly one kernel to compare with")
	}
	if rounds < 1 {
		return nil, errors.New("a throughput comparison needs at least one round")
	}
	procs, err := LookupProcedures(cfg.Procedures)
	if err != nil {
		return nil, err
	}
	kernel, ref := cfg.Kernel, cfg.Compare[0]
	cfg.Untraced = true
	var out []ThroughputComparison
	for _, p := range procs {
		c := ThroughputComparison{Procedure: p.Name(), Kernel: kernel.String(), Reference: ref.String()}
		for round := 0; round < rounds && ctx.Err() == nil; round++ {
			one := cfg
			one.Procedures = []string{p.Name()}
			// Run runs Compare first: the reference goes first in even rounds, second in odd.
			one.Kernel, one.Compare = kernel, []Kernel{ref}
			if round%2 == 1 {
				one.Kernel, one.Compare = ref, []Kernel{kernel}
			}
			s, err := Run(ctx, one)
			if err != nil {
				return nil, err
			}
			if ctx.Err() != nil {
				break // an interrupted round measured nothing, and is not a missing one
			}
			ratio, ok := roundRatio(s, round%2 == 1)
			if !ok {
				c.Missing++
				continue
			}
			c.Ratios = append(c.Ratios, ratio)
		}
		c.ThroughputJudgement = JudgeRatios(c.Ratios)
		out = append(out, c)
		if ctx.Err() != nil {
			break
		}
	}
	HolmFindings(out)
	return out, ctx.Err()
}

// roundRatio is one round's ratio, the kernel's throughput over the reference's, from a Run of
// that round: Run puts Compare's kernel in References, so the reference is there in rounds
// where it ran first and the kernel is there when swapped. ok is false when either run measured
// nothing (or only one reported a rate).
func roundRatio(s *verdict.Summary, swapped bool) (float64, bool) {
	if len(s.Results) != 1 || len(s.References) != 1 || len(s.References[0].Results) != 1 {
		return 0, false
	}
	kernel, ref := s.Results[0], s.References[0].Results[0]
	if swapped {
		kernel, ref = ref, kernel
	}
	ratio := throughputRatio(kernel.Traffic, ref.Traffic, kernel.Figures.Packets, ref.Figures.Packets)
	if ratio == 0 || (kernel.Traffic.BitsPerSecond == 0) != (ref.Traffic.BitsPerSecond == 0) {
		return 0, false
	}
	return ratio, true
}
