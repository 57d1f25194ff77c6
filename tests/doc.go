// Package tests holds ppkit's traffic procedures and the plumbing that turns one run of them on
// a booted board into a verdict.
//
// The topology is fixed: the board is the QEMU guest whose mvneta NIC carries 192.168.200.1; the
// client is a network namespace holding the other end (a tap device), 192.168.200.2, with a route
// for 224.0.0.0/4. Procedures (multicast, tcp, gro, jumbo, splice, zerocopy, copy) drive traffic
// between the two through the Board and Client interfaces, so the package never knows how the
// board was booted: the harness adapts its QEMU guest to Board, and the end-to-end tests of this
// package use a second network namespace as a stand-in board.
//
// For each procedure the runner enables the page_pool, skb and kmem tracepoints in the guest,
// streams the trace to the host, records the counters (ethtool -S, /proc/net/snmp, interface
// statistics) and the tool outputs, brings the interface down so every pool is destroyed, and
// then judges: the trace is replayed once through the reference model (gomodel), which gives both
// the violations and every trace figure, and the procedure
// fails on any model violation, any console report, an inflight that does not drain to 0 after
// the pool is destroyed, or no traffic moved. Results are written as a table, JSON, JUnit XML and
// an offline HTML report.
//
// Parsers in this package (iperf 2, /proc/net/snmp, ethtool -S) are pure: they read their input
// and nothing else. The ftrace text is parsed by gomodel only.
package tests
