// Package report writes the verdicts of a `ppkit test` run for people and for tools: the
// console table (WriteTable, WriteComparison), JSON (WriteJSON), JUnit XML (JUnitOf,
// WriteJUnit; `ppkit ci` merges its own suites into the same types) and the offline HTML page
// with each pool's inflight plot and the culprit pages' histories (WriteHTML); WriteReportDir
// writes all three to a directory beside the procedures' artifacts.
//
// It is the last step of ppkit's data flow (series → kernel → image → board → procedure →
// trace → model → verdict → report): it reads verdict.Summary and verdict.Result and imports
// nothing else of ppkit. It decides nothing: a <failure> or an <error>, PASS or FAIL, come
// from each result's verdict.Verdict.
package report
