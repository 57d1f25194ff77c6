package verdict

import (
	"os"
	"testing"
)

// testdata/snmp/host-6.18-netns.txt is the real /proc/net/snmp of the board namespace after the
// iperf runs that produced testdata/iperf (Linux 6.18).
func TestParseSNMP(t *testing.T) {
	data, err := os.ReadFile("testdata/snmp/host-6.18-netns.txt")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSNMP(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		proto, name string
		want        int64
	}{
		{"Ip", "InReceives", 112095}, {"Tcp", "InSegs", 83555}, {"Tcp", "MaxConn", -1},
		{"Udp", "InDatagrams", 28518}, {"Udp", "RcvbufErrors", 22}, {"Icmp", "InMsgs", 0}, {"UdpLite", "MemErrors", 0},
	} {
		if got, ok := s[tc.proto][tc.name]; !ok || got != tc.want {
			t.Errorf("%s %s = %d (%v), want %d", tc.proto, tc.name, got, ok, tc.want)
		}
	}
	after := SNMP{"Udp": {"InDatagrams": 28600, "NoPorts": 1}, "Tcp": {"InSegs": 1}}
	d := after.Delta(s)
	if d["Udp"]["InDatagrams"] != 82 || d["Udp"]["NoPorts"] != 1 || d["Tcp"]["InSegs"] != 1-83555 {
		t.Errorf("delta %v", d)
	}
	if _, ok := d["Ip"]; ok {
		t.Errorf("delta has Ip, absent from after")
	}
}

func TestParseSNMPRejects(t *testing.T) {
	for name, in := range map[string]string{
		"odd lines":        "Ip: Forwarding\n",
		"no colon":         "Ip Forwarding\nIp 1\n",
		"mismatched":       "Ip: Forwarding\nTcp: 1\n",
		"count":            "Ip: Forwarding DefaultTTL\nIp: 1\n",
		"not a number":     "Ip: Forwarding\nIp: x\n",
		"protocol twice":   "Ip: A\nIp: 1\nIp: A\nIp: 2\n",
		"header too short": "Ip:\nIp:\n",
	} {
		if _, err := ParseSNMP([]byte(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseEthtoolStats(t *testing.T) {
	data, err := os.ReadFile("testdata/ethtool/veth.txt")
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseEthtoolStats(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 10 || st["peer_ifindex"] != 5 || st["rx_queue_0_xdp_packets"] != 0 {
		t.Errorf("got %v", st)
	}
	// mvneta's names (drivers/net/ethernet/marvell/mvneta.c, mvneta_statistics) and a driver
	// that puts spaces in names.
	st, err = ParseEthtoolStats([]byte("NIC statistics:\n     good_octets_received: 1234\n     good_frames_received: 10\n     rx queue 0 packets: 7\n"))
	if err != nil {
		t.Fatal(err)
	}
	if st["good_octets_received"] != 1234 || st["good_frames_received"] != 10 || st["rx queue 0 packets"] != 7 {
		t.Errorf("got %v", st)
	}
	d := EthtoolStats{"good_frames_received": 25, "new": 3}.Delta(st)
	if d["good_frames_received"] != 15 || d["new"] != 3 {
		t.Errorf("delta %v", d)
	}
	for _, bad := range []string{"", "no stats here\n", "NIC statistics:\n  x 1\n", "NIC statistics:\n  x: -1\n", "NIC statistics:\n  : 1\n"} {
		if _, err := ParseEthtoolStats([]byte(bad)); err == nil {
			t.Errorf("ParseEthtoolStats(%q): no error", bad)
		}
	}
}

func TestParseInterfaceCounters(t *testing.T) {
	c, err := ParseInterfaceCounters([]byte("rx_packets 10\nrx_bytes 15000\nrx_dropped 1\ntx_packets 3\ntx_bytes 180\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c != (InterfaceCounters{10, 15000, 1, 3, 180}) {
		t.Errorf("got %+v", c)
	}
	for _, bad := range []string{"", "rx_packets 10\n", "rx_packets x\nrx_bytes 1\nrx_dropped 1\ntx_packets 1\ntx_bytes 1\n", "foo 1\n"} {
		if _, err := ParseInterfaceCounters([]byte(bad)); err == nil {
			t.Errorf("ParseInterfaceCounters(%q): no error", bad)
		}
	}
}

func FuzzParseSNMP(f *testing.F) {
	data, _ := os.ReadFile("testdata/snmp/host-6.18-netns.txt")
	f.Add(data)
	f.Add([]byte("Ip: A B\nIp: 1 2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSNMP(data)
		if err == nil && s == nil {
			t.Fatal("nil result without error")
		}
	})
}

func FuzzParseEthtoolStats(f *testing.F) {
	data, _ := os.ReadFile("testdata/ethtool/veth.txt")
	f.Add(data)
	f.Add([]byte("NIC statistics:\n rx queue 0: 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if st, err := ParseEthtoolStats(data); err == nil && st == nil {
			t.Fatal("nil result without error")
		}
	})
}

func FuzzParseInterfaceCounters(f *testing.F) {
	f.Add([]byte("rx_packets 10\nrx_bytes 15000\nrx_dropped 1\ntx_packets 3\ntx_bytes 180\n"))
	f.Fuzz(func(t *testing.T, data []byte) { ParseInterfaceCounters(data) })
}
