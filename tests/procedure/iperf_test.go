package procedure

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/tests/internal/golden"
)

// The inputs are real iperf 2.1.8 output captured on this machine between two network
// namespaces joined by a veth pair (see testdata/README.md).
func TestParseIperfGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/iperf/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no iperf fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := ParseIperf(data)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.MarshalIndent(rep, "", "  ")
			golden.Compare(t, strings.TrimSuffix(f, ".txt")+".json", append(got, '\n'))
		})
	}
}

func TestParseIperfFigures(t *testing.T) {
	for _, tc := range []struct {
		file                 string
		role, proto          string
		intervals            int
		totalBytes           int64
		totalBPS             float64
		received, lost, sent int64
		serverReport         bool
		errorContains        string
	}{
		{file: "udp-mcast-server.txt", role: "server", proto: "udp", intervals: 3, totalBytes: 39321600, totalBPS: 105e6,
			received: 26753 - 22, lost: 22},
		{file: "udp-mcast-client.txt", role: "client", proto: "udp", intervals: 3, totalBytes: 39321600, totalBPS: 105e6, sent: 26754},
		{file: "udp-mcast-server-1g.txt", role: "server", proto: "udp", intervals: 2, totalBytes: 187695104, totalBPS: 751e6,
			received: 178328 - 50589, lost: 50589},
		{file: "tcp-server.txt", role: "server", proto: "tcp", intervals: 3, totalBytes: 4928474972, totalBPS: 13.2e9},
		{file: "tcp-client.txt", role: "client", proto: "tcp", intervals: 3, totalBytes: 4928474972, totalBPS: 13.1e9},
		{file: "udp-client.txt", role: "client", proto: "udp", intervals: 2, totalBytes: 2631926, totalBPS: 10.5e6, sent: 1788, serverReport: true},
		{file: "udp-server.txt", role: "server", proto: "udp", intervals: 2, totalBytes: 2631926, totalBPS: 10.5e6, received: 1787},
		{file: "tcp-client-refused.txt", role: "client", proto: "tcp", errorContains: "tcp connect failed: Connection refused"},
		{file: "udp-client-noserver.txt", role: "client", proto: "udp", intervals: 1, totalBytes: 134144, totalBPS: 1.05e6, sent: 92,
			errorContains: "did not receive ack"},
		{file: "udp-mcast-server-idle.txt", role: "server", proto: "udp"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/iperf", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			r, err := ParseIperf(data)
			if err != nil {
				t.Fatal(err)
			}
			if r.Role != tc.role || r.Protocol != tc.proto {
				t.Errorf("role/protocol %s/%s, want %s/%s", r.Role, r.Protocol, tc.role, tc.proto)
			}
			if len(r.Intervals) != tc.intervals {
				t.Errorf("%d intervals, want %d", len(r.Intervals), tc.intervals)
			}
			if tc.totalBytes == 0 {
				if r.Total != nil {
					t.Errorf("total %+v, want none", *r.Total)
				}
			} else if r.Total == nil {
				t.Errorf("no total")
			} else {
				if r.Total.Bytes != tc.totalBytes || r.Total.BitsPerSecond != tc.totalBPS {
					t.Errorf("total %d bytes %.0f bit/s, want %d, %.0f", r.Total.Bytes, r.Total.BitsPerSecond, tc.totalBytes, tc.totalBPS)
				}
				if r.Total.Received() != tc.received || r.Total.Lost != tc.lost {
					t.Errorf("received %d lost %d, want %d, %d", r.Total.Received(), r.Total.Lost, tc.received, tc.lost)
				}
				if r.Total.Start != 0 {
					t.Errorf("total starts at %v", r.Total.Start)
				}
			}
			if r.SentDatagrams != tc.sent {
				t.Errorf("sent %d, want %d", r.SentDatagrams, tc.sent)
			}
			if (r.ServerReport != nil) != tc.serverReport {
				t.Errorf("server report %v, want %v", r.ServerReport, tc.serverReport)
			}
			if tc.errorContains != "" && !strings.Contains(strings.Join(r.Errors, "\n"), tc.errorContains) {
				t.Errorf("errors %q lack %q", r.Errors, tc.errorContains)
			}
			if tc.errorContains == "" && len(r.Errors) != 0 {
				t.Errorf("unexpected errors %q", r.Errors)
			}
		})
	}
}

func TestParseIperfRejects(t *testing.T) {
	for _, in := range []string{
		"",
		"hello\n",
		"[  1] 0.0000-1.0000 sec  1.10 GBytes  9.41 Gbits/sec\n", // no header: not iperf's whole output
		"Server listening on TCP port 5001\n[  1] 2.0-1.0 sec  1.10 GBytes  9.41 Gbits/sec\n",
	} {
		if r, err := ParseIperf([]byte(in)); err == nil {
			t.Errorf("ParseIperf(%q) = %+v, want an error", in, r)
		}
	}
}

func TestParseIperfShortRun(t *testing.T) {
	// A run shorter than one interval prints a single line: it is both interval and total.
	in := "Server listening on TCP port 5001\n[ ID] Interval       Transfer     Bandwidth\n" +
		"[  1] 0.0000-0.5000 sec  10.0 MBytes   168 Mbits/sec\n"
	r, err := ParseIperf([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if r.Total == nil || r.Total.Bytes != 10<<20 || len(r.Intervals) != 1 {
		t.Fatalf("got %+v", r)
	}
}

func FuzzParseIperf(f *testing.F) {
	files, _ := filepath.Glob("testdata/iperf/*.txt")
	for _, file := range files {
		data, _ := os.ReadFile(file)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseIperf(data)
		if err != nil {
			return
		}
		if r.Total != nil && (r.Total.End < r.Total.Start || r.Total.Bytes < 0) {
			t.Fatalf("bad total %+v", *r.Total)
		}
		for _, iv := range r.Intervals {
			if iv.End < iv.Start || iv.Bytes < 0 || iv.Received() < 0 {
				t.Fatalf("bad interval %+v", iv)
			}
		}
	})
}

// The NIC benchmark's figures from real iperf 2 output of `ppkit bench nic` (client in the test
// namespace, server in the guest).
func TestNICBenchFigures(t *testing.T) {
	udp, err := os.ReadFile("testdata/iperf/nicbench-udp64-client.txt")
	if err != nil {
		t.Fatal(err)
	}
	pps, loss, ok := udpReceived(udp)
	if !ok {
		t.Fatal("UDP server report not found")
	}
	if want := float64(1204212-1151424) / 5.0043; pps < want-0.5 || pps > want+0.5 {
		t.Errorf("pps = %v, want %v", pps, want)
	}
	if loss < 0.956 || loss > 0.957 {
		t.Errorf("loss = %v, want 0.956", loss)
	}
	tcp, err := os.ReadFile("testdata/iperf/nicbench-tcp-client.txt")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ParseIperf(tcp)
	if err != nil || rep.Total == nil || rep.Total.BitsPerSecond != 74.3e6 {
		t.Errorf("TCP total %+v, %v; want 74.3 Mbit/s", rep.Total, err)
	}
	if _, _, ok := udpReceived(tcp); ok {
		t.Error("a TCP report parsed as a UDP server report")
	}
}
