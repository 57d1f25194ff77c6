package procedure

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/ppkit/ppkit/gomodel/rawtrace"
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

// probePages reads testdata/forward/probes.tar: the probes.tar of a real `ppkit test forward
// --time 1s` on patches/ (the pages of both CPUs and the formats as the board gave them), with
// kallsyms cut to the callers' functions and the symbol after each (the names every hit maps
// to are the same as with the whole file).
func probePages(t testing.TB) fstest.MapFS {
	f, err := os.Open("testdata/forward/probes.tar")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fsys, err := rawtrace.ReadTar(f)
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

func TestCountProbePages(t *testing.T) {
	c, err := countProbePages(probePages(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		phase, probe, caller string
		want                 int64
	}{
		{"setup", "pskb_expand_head", "__pskb_pull_tail", 31},
		{"setup", "skb_segment", "tcp_gso_segment", 1},
		{"forward", "skb_segment", "", 947},
		{"forward", "skb_segment", "tcp_gso_segment", 947},
		{"forward", "pskb_expand_head", "", 13},
		{"forward", "pskb_expand_head", "___pskb_trim", 7},
		{"forward", "page_frag_free", "skb_free_head", 3608},
		{"capture", "pskb_expand_head", "ip_forward", 1547},
		{"capture", "page_frag_free", "skb_free_head", 2073},
		{"capture", "skb_segment", "", 510},
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
		"kprobes, capture phase: skb_segment 510 (tcp_gso_segment 510); pskb_expand_head 1605 (ip_forward 1547, __pskb_pull_tail 44, ___pskb_trim 14); page_frag_free 2073 (skb_free_head 2073)",
		"kprobes, forward phase: skb_segment 947 (tcp_gso_segment 947); pskb_expand_head 13 (___pskb_trim 7, __pskb_pull_tail 6); page_frag_free 3608 (skb_free_head 3608)",
		"kprobes, setup phase: skb_segment 1 (tcp_gso_segment 1); pskb_expand_head 31 (__pskb_pull_tail 31)",
		"kprobes: 7 events overwritten (the counts are lower bounds)",
	}
	if got := c.notes(7); !reflect.DeepEqual(got, wantNotes) {
		t.Errorf("notes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantNotes, "\n"))
	}
	// A run whose traffic took neither path says so, naming both.
	if m := (probeCounts{}).missing(); len(m) != 2 || !strings.Contains(m[0], "pskb_expand_head") || !strings.Contains(m[1], "page_frag_free") {
		t.Errorf("missing with no hits = %q", m)
	}
}

// A capture that cannot be read is an error naming what is wrong, never counts of part of it.
func TestCountProbePagesErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(fstest.MapFS)
		want string
	}{
		{"no pages", func(m fstest.MapFS) { delete(m, "cpu0.raw") }, "no cpu0.raw"},
		{"truncated page", func(m fstest.MapFS) { m["cpu1.raw"] = &fstest.MapFile{Data: m["cpu1.raw"].Data[:5000]} }, "truncated page"},
		{"no kallsyms", func(m fstest.MapFS) { delete(m, "kallsyms") }, "kallsyms"},
		{"a caller in no symbol", func(m fstest.MapFS) {
			m["kallsyms"] = &fstest.MapFile{Data: []byte("ffffffc0ffffffff T after_everything\n")}
		}, "in no kernel text symbol"},
		{"a probe without its format", func(m fstest.MapFS) { delete(m, "formats/ppkit_forward/skb_segment/format") }, "has no format"},
		{"kallsyms that is not kallsyms", func(m fstest.MapFS) { m["kallsyms"] = &fstest.MapFile{Data: []byte("hello\n")} }, "is not ADDRESS TYPE NAME"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := probePages(t)
			tc.edit(fsys)
			if _, err := countProbePages(fsys); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one saying %q", err, tc.want)
			}
		})
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

// FuzzCountProbePages: any bytes as CPU 1's pages (the real formats and symbols beside them)
// give counts or an error, never a panic; every hit is a record of at least a header and a
// caller, so there are never more hits than the pages have room for.
func FuzzCountProbePages(f *testing.F) {
	fsys := probePages(f)
	f.Add(fsys["cpu1.raw"].Data)
	f.Add(fsys["cpu0.raw"].Data[:4096])
	f.Fuzz(func(t *testing.T, data []byte) {
		m := fstest.MapFS{}
		for k, v := range fsys {
			m[k] = v
		}
		m["cpu0.raw"] = &fstest.MapFile{Data: nil}
		m["cpu1.raw"] = &fstest.MapFile{Data: data}
		c, err := countProbePages(m)
		if err != nil {
			return
		}
		var n int64
		for ph, probes := range c {
			for probe := range probes {
				n += c.total(ph, probe, "")
			}
		}
		if n > int64(len(data)/16) {
			t.Fatalf("%d hits from %d bytes", n, len(data))
		}
		c.notes(0)
		c.missing()
	})
}
