package procedure

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestCheckReceiveSmall(t *testing.T) {
	// 64 feature bits as virtio's sysfs prints them, bit 0 first.
	bits := func(on ...int) []byte {
		b := []byte(strings.Repeat("0", 64))
		for _, i := range on {
			b[i] = '1'
		}
		return append(b, '\n')
	}
	// PeerNICModel's features as negotiated: csum (0), guest_csum (1), mac (5), host_tso4/6 (11,
	// 12), host_ecn (13), host_ufo (14), status (16), ctrl_vq… (17-22), version_1 (32).
	if err := checkReceiveSmall(bits(0, 1, 5, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 32)); err != nil {
		t.Errorf("receive_small features refused: %v", err)
	}
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{bits(0, 15), "mrg_rxbuf"},
		{bits(7, 10), "guest_tso4, guest_ufo"},
		{bits(9), "guest_ecn"},
		{[]byte("0101x\n"), "want a string of 0 and 1"},
		{[]byte(""), "want a string of 0 and 1"},
	} {
		err := checkReceiveSmall(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkReceiveSmall(%q) = %v, want an error naming %q", tc.in, err, tc.want)
		}
	}
}

func TestEthtoolFeature(t *testing.T) {
	out := []byte("Features for eth2:\nrx-checksumming: on [fixed]\ntcp-segmentation-offload: off\n\ttx-tcp-segmentation: off\n" +
		"generic-segmentation-offload: on\n")
	for name, want := range map[string]string{"tcp-segmentation-offload": "off", "rx-checksumming": "on [fixed]",
		"tx-tcp-segmentation": "off", "generic-segmentation-offload": "on"} {
		if got, ok := ethtoolFeature(out, name); !ok || got != want {
			t.Errorf("ethtoolFeature(%s) = %q %v, want %q", name, got, ok, want)
		}
	}
	if _, ok := ethtoolFeature(out, "large-receive-offload"); ok {
		t.Error("a feature ethtool did not print was found")
	}
}

func TestProcNetListening(t *testing.T) {
	tcp := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1389 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0 100 0 0 10 0
   1: 0100A8C0:138A 0200A8C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1235 1 0 100 0 0 10 0
`)
	if !procNetListening(tcp, "tcp", 5001) {
		t.Error("the listener on 5001 (0x1389) not found")
	}
	if procNetListening(tcp, "tcp", 5002) {
		t.Error("an established socket on 5002 taken for a listener")
	}
	if !procNetListening(tcp, "udp", 5002) {
		t.Error("udp: any socket bound to the port listens")
	}
}

func TestParseProbeTrace(t *testing.T) {
	data, err := os.ReadFile("testdata/forward/probes.txt")
	if err != nil {
		t.Fatal(err)
	}
	c := parseProbeTrace(data)
	for _, tc := range []struct {
		phase, probe, caller string
		want                 int64
	}{
		{"setup", "pskb_expand_head", "__pskb_pull_tail", 1},
		{"forward", "skb_segment", "", 3},
		{"forward", "skb_segment", "tcp_gso_segment", 3},
		{"forward", "pskb_expand_head", "", 1},
		{"forward", "pskb_expand_head", "___pskb_trim", 1},
		{"forward", "page_frag_free", "skb_free_head", 1},
		{"capture", "pskb_expand_head", "ip_forward", 2},
		{"capture", "page_frag_free", "skb_free_head", 2},
		{"capture", "skb_segment", "", 1},
		{"nosuchphase", "skb_segment", "", 0},
	} {
		if got := c.total(tc.phase, tc.probe, tc.caller); got != tc.want {
			t.Errorf("%s %s from %q: %d hits, want %d", tc.phase, tc.probe, tc.caller, got, tc.want)
		}
	}
	if m := c.missing(); len(m) != 0 {
		t.Errorf("missing = %q, want none", m)
	}
	wantNotes := []string{
		"kprobes, capture phase: skb_segment 1 (tcp_gso_segment 1); pskb_expand_head 2 (ip_forward 2); page_frag_free 2 (skb_free_head 2)",
		"kprobes, forward phase: skb_segment 3 (tcp_gso_segment 3); pskb_expand_head 1 (___pskb_trim 1); page_frag_free 1 (skb_free_head 1)",
		"kprobes, setup phase: pskb_expand_head 1 (__pskb_pull_tail 1)",
		"kprobes: 7 events overwritten (the counts are lower bounds)",
	}
	if got := c.notes(7); !reflect.DeepEqual(got, wantNotes) {
		t.Errorf("notes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantNotes, "\n"))
	}
	// A run whose traffic took neither path says so, naming both.
	empty := parseProbeTrace([]byte("# tracer: nop\n"))
	if m := empty.missing(); len(m) != 2 || !strings.Contains(m[0], "pskb_expand_head") || !strings.Contains(m[1], "page_frag_free") {
		t.Errorf("missing on an empty trace = %q", m)
	}
}

func TestForwardRuleCount(t *testing.T) {
	out := []byte(`Chain FORWARD (policy ACCEPT 31000 packets, 4100000 bytes)
    pkts      bytes target     prot opt in     out     source               destination
    2981  4315180 RETURN     0    --  eth2   eth1    0.0.0.0/0            0.0.0.0/0
      12     1000 RETURN     0    --  eth1   eth2    0.0.0.0/0            0.0.0.0/0
`)
	if n, err := forwardRuleCount(out, "eth2", "eth1"); err != nil || n != 2981 {
		t.Errorf("forwardRuleCount = %d, %v; want 2981", n, err)
	}
	if _, err := forwardRuleCount(out, "eth0", "eth1"); err == nil {
		t.Error("a rule for other interfaces was taken")
	}
	if _, err := forwardRuleCount([]byte("    x  1 RETURN 0 -- eth2 eth1 0/0 0/0\n"), "eth2", "eth1"); err == nil {
		t.Error("a counter that is no number was taken")
	}
}

// FuzzParseProbeTrace: any text parses; every counted hit is a probe line's, so a phase's
// hits never exceed the lines of the input.
func FuzzParseProbeTrace(f *testing.F) {
	if data, err := os.ReadFile("testdata/forward/probes.txt"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("x: skb_segment: () caller=a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := parseProbeTrace(data)
		lines := int64(strings.Count(string(data), "\n") + 1)
		var n int64
		for ph, probes := range c {
			for probe := range probes {
				n += c.total(ph, probe, "")
			}
		}
		if n > lines {
			t.Fatalf("%d hits from %d lines", n, lines)
		}
		c.notes(0)
		c.missing()
	})
}
