// Package procedure holds ppkit's traffic procedures and the runner that drives them on a
// booted board: the step of ppkit's data flow (series → kernel → image → board → procedure →
// trace → model → verdict → report) that makes the kernel do what the series changed, and
// gathers the evidence the verdict rests on.
//
// The topology is fixed: the board is the QEMU guest whose mvneta NIC carries 192.168.200.1; the
// client is a network namespace holding the other end (a tap device), 192.168.200.2, with a route
// for 224.0.0.0/4. Procedures (multicast, tcp, gro, jumbo, splice, zerocopy, copy, defrag,
// forward, mixed, …) drive traffic between the two through the Board and Client interfaces, so
// the package never knows how the board was booted: HarnessLauncher boots it with
// harness.Prepare, and the end-to-end tests of this package also use a second network namespace
// as a stand-in board. BenchNIC, the NIC benchmark, is a procedure of its own on such a board.
//
// For each procedure the runner (Run, RunProcedure) enables the page_pool, skb and kmem
// tracepoints in the guest, streams the trace to the host, records the counters (ethtool -S,
// /proc/net/snmp, interface statistics) and the tool outputs, brings the interface down so every
// pool is destroyed, and hands that evidence to tests/verdict: the trace is replayed once through
// the reference model (verdict.CheckTraceWithModel), and verdict.Judge gives each procedure its
// verdict. The report (tests/report) is written by the caller; this package imports harness,
// gomodel and tests/verdict, and nothing that comes after the verdict.
//
// The iperf 2 parser in this package is pure: it reads its input and nothing else.
package procedure
