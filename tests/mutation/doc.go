// Package mutation runs the mutation suite (tests/fixtures/mutants): realistic single-change
// bugs of the series, each of which some procedure must fail, and equivalent changes, which
// every procedure must pass.
//
// It sits at the end of ppkit's data flow (series → kernel → image → board → procedure →
// trace → model → verdict → report) and drives all of it once per mutant: it writes the
// mutant's series, runs the procedures on it (tests/procedure.Run), reads their verdicts
// (tests/verdict) and writes each mutant's report directory (tests/report). WriteMutationTable
// prints the outcome and the mutation score.
package mutation
