// Package verdict judges one procedure's run: it turns what the board produced into evidence
// and the evidence into a Result with one typed Verdict.
//
// It sits between the procedures and the report in ppkit's data flow (series → kernel → image
// → board → procedure → trace → model → verdict → report): the procedures (tests/procedure)
// gather the Evidence — the traffic their tools reported, the board's counters before and
// after (Snapshot: interface statistics, /proc/net/snmp, ethtool -S), the console reports and
// the trace — and Judge decides. The trace is replayed once through the reference model
// (gomodel.ReadTrace, CheckTraceWithModel), which gives both the violations and every trace
// figure, with one rule for pool identity. Every reason kind maps to one Verdict (pass, the
// kernel failed, the run could not be judged, interrupted) and its exit code; CompareFigures
// compares the figures of two runs. The report (tests/report) and `ppkit ci` read the results.
//
// The package imports gomodel and nothing else of ppkit; nothing in it runs a command. Its
// parsers (/proc/net/snmp, ethtool -S, interface statistics) are pure: they read their input
// and nothing else; the ftrace text is parsed by gomodel only.
package verdict
