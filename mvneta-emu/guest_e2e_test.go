//go:build e2e

package mvnetaemu_test

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ppkit/ppkit/harness"
	mvnetaemu "github.com/ppkit/ppkit/mvneta-emu"
)

// The guest tests boot the Debian 5.10 kernel (harness.BuildKernel, cached) with ppkit's guest
// image on the mvneta QEMU, one mvneta NIC attached to a tap device inside a network namespace
// the harness creates, and drive the real mvneta driver with real traffic against that
// namespace. Nothing touches any other network.

const (
	hostIP  = "192.168.200.1"
	guestIP = "192.168.200.2"
)

// guestNet is a booted guest with its mvneta interface configured and the namespace's tap up.
type guestNet struct {
	t     *testing.T
	vm    *harness.VM
	ns    string
	tap   string
	iface string
}

func bootMvnetaGuest(t *testing.T, ctx context.Context) *guestNet {
	t.Helper()
	vm, err := harness.Prepare(ctx, harness.Spec{
		Image:    harness.ImageOptions{Extra: []harness.ImagePackage{{Name: "ethtool", Files: []string{"sbin/ethtool"}}, {Name: "libmnl0"}}},
		Boot:     harness.BootOptions{MemoryMB: 1024, NICs: []harness.NIC{{Model: mvnetaemu.DeviceName, MAC: "52:54:00:12:35:00"}}},
		Progress: logWriter{t},
	})
	if err != nil {
		t.Fatalf("board: %v", err)
	}
	t.Cleanup(func() { vm.Close() })
	g := &guestNet{t: t, vm: vm, ns: vm.NetNS(), tap: vm.Taps()[0]}
	g.iface = strings.TrimSpace(g.run(ctx, `for d in /sys/class/net/*; do drv=$(readlink $d/device/driver); [ "${drv##*/}" = mvneta ] && echo ${d##*/}; done; true`))
	if g.iface == "" {
		t.Fatalf("no interface bound to the mvneta driver; dmesg:\n%s", g.run(ctx, "dmesg | tail -40"))
	}
	g.host("ip", "addr", "add", hostIP+"/24", "dev", g.tap)
	g.host("ip", "link", "set", g.tap, "up")
	g.run(ctx, fmt.Sprintf("ip addr add %s/24 dev %s && ip link set %s up", guestIP, g.iface, g.iface))
	g.waitLinkUp(ctx)
	return g
}

// run runs a guest shell command and fails the test if it fails.
func (g *guestNet) run(ctx context.Context, cmd string) string {
	g.t.Helper()
	out, err := g.vm.Run(ctx, cmd)
	if err != nil {
		g.t.Fatalf("guest %q: %v\n%s", cmd, err, out)
	}
	return string(out)
}

// host runs a command inside the test namespace.
func (g *guestNet) host(args ...string) string {
	g.t.Helper()
	full := append([]string{"netns", "exec", g.ns}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		g.t.Fatalf("host %q: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (g *guestNet) waitLinkUp(ctx context.Context) {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := g.run(ctx, "cat /sys/class/net/"+g.iface+"/operstate; dmesg | grep -i 'link is up' | tail -1")
		if strings.HasPrefix(out, "up") {
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("%s not up after 30 s: %s\n%s", g.iface, out, g.run(ctx, "dmesg | tail -30"))
		}
		time.Sleep(time.Second)
	}
}

// dmesgClean fails on kernel warnings or mvneta timeouts in the guest log.
func (g *guestNet) dmesgClean(ctx context.Context) {
	g.t.Helper()
	out := g.run(ctx, "dmesg")
	for _, bad := range []string{"WARNING:", "Call trace", "Call Trace", "BUG:", "not stopped", "TIMEOUT", "timeout"} {
		if strings.Contains(out, bad) {
			g.t.Errorf("guest dmesg contains %q:\n%s", bad, out)
		}
	}
}

var iperfRate = regexp.MustCompile(`([\d.]+) ([KMG]?)bits/sec`)

// bitsPerSec extracts the last rate of an iperf 2 report.
func bitsPerSec(out string) float64 {
	m := iperfRate.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return 0
	}
	last := m[len(m)-1]
	v, _ := strconv.ParseFloat(last[1], 64)
	switch last[2] {
	case "K":
		v *= 1e3
	case "M":
		v *= 1e6
	case "G":
		v *= 1e9
	}
	return v
}

func TestGuestMvneta(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	g := bootMvnetaGuest(t, ctx)

	g0 := g
	sub := func(name string, f func(t *testing.T, g *guestNet)) {
		t.Run(name, func(t *testing.T) {
			gg := *g0
			gg.t = t
			f(t, &gg)
		})
	}
	sub("probe", func(t *testing.T, g *guestNet) {
		out := g.run(ctx, "dmesg | grep -i mvneta")
		if !strings.Contains(out, "Using device tree mac address 52:54:00:12:35:00") {
			t.Errorf("mvneta probe message missing:\n%s", out)
		}
		if !strings.Contains(out, "Link is Up - 1Gbps/Full") {
			t.Errorf("no 'Link is Up - 1Gbps/Full':\n%s", out)
		}
	})
	sub("ping", func(t *testing.T, g *guestNet) {
		g.run(ctx, "ping -c 3 -W 5 "+hostIP)
		g.host("ping", "-c", "3", "-W", "5", guestIP)
	})
	sub("tcp", func(t *testing.T, g *guestNet) {
		srv, err := g.vm.Start(ctx, "iperf -s -p 5001", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer g.vm.Stop(ctx, srv, "killall iperf")
		time.Sleep(500 * time.Millisecond)
		in := bitsPerSec(g.host("iperf", "-c", guestIP, "-p", "5001", "-t", "3"))
		g.run(ctx, "killall iperf")
		srvHost := exec.Command("ip", "netns", "exec", g.ns, "iperf", "-s", "-p", "5002")
		if err := srvHost.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { srvHost.Process.Kill(); srvHost.Wait() }()
		time.Sleep(300 * time.Millisecond)
		out := bitsPerSec(g.run(ctx, "iperf -c "+hostIP+" -p 5002 -t 3"))
		t.Logf("TCP client→guest %.1f Mbit/s, guest→client %.1f Mbit/s", in/1e6, out/1e6)
		if in == 0 || out == 0 {
			t.Errorf("TCP throughput in=%v out=%v bit/s", in, out)
		}
	})
	sub("ipv6-tcp", func(t *testing.T, g *guestNet) {
		// IPv6 TCP exercises the model's TX checksum insertion over IPv6 (L3_IP6).
		g.host("ip", "-6", "addr", "add", "fd00:200::1/64", "dev", g.tap, "nodad")
		g.run(ctx, "echo 0 > /proc/sys/net/ipv6/conf/"+g.iface+"/accept_dad; ip -6 addr add fd00:200::2/64 dev "+g.iface)
		g.host("ping", "-6", "-c", "3", "-W", "5", "fd00:200::2")
		srvHost := exec.Command("ip", "netns", "exec", g.ns, "iperf", "-s", "-V", "-p", "5007")
		if err := srvHost.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { srvHost.Process.Kill(); srvHost.Wait() }()
		time.Sleep(300 * time.Millisecond)
		out := bitsPerSec(g.run(ctx, "iperf -V -c fd00:200::1 -p 5007 -t 2"))
		if out == 0 {
			t.Error("no IPv6 TCP throughput guest→client (TX checksum over IPv6?)")
		}
		t.Logf("IPv6 TCP guest→client %.1f Mbit/s", out/1e6)
		// Every checksum the model inserted must verify on the client.
		nstat := g.host("nstat", "-az", "TcpInCsumErrors", "Udp6InCsumErrors", "Ip6InHdrErrors")
		for _, line := range strings.Split(nstat, "\n") {
			if f := strings.Fields(line); len(f) >= 2 && strings.HasSuffix(f[0], "Errors") && f[1] != "0" {
				t.Errorf("client saw checksum errors: %s", line)
			}
		}
	})
	sub("udp", func(t *testing.T, g *guestNet) {
		srv, err := g.vm.Start(ctx, "iperf -s -u -p 5003", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer g.vm.Stop(ctx, srv, "killall iperf")
		time.Sleep(500 * time.Millisecond)
		in := g.host("iperf", "-c", guestIP, "-u", "-p", "5003", "-t", "2", "-b", "20M")
		g.run(ctx, "killall iperf")
		if !strings.Contains(in, "Server Report") {
			t.Errorf("client→guest UDP: no server report:\n%s", in)
		}
		srvHost := exec.Command("ip", "netns", "exec", g.ns, "iperf", "-s", "-u", "-p", "5004")
		var srvOut strings.Builder
		srvHost.Stdout = &srvOut
		if err := srvHost.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { srvHost.Process.Kill(); srvHost.Wait() }()
		time.Sleep(300 * time.Millisecond)
		out := g.run(ctx, "iperf -c "+hostIP+" -u -p 5004 -t 2 -b 20M")
		if !strings.Contains(out, "Server Report") {
			t.Errorf("guest→client UDP: no server report:\n%s", out)
		}
	})
	sub("multicast", func(t *testing.T, g *guestNet) {
		g.host("ip", "route", "add", "224.0.0.0/4", "dev", g.tap)
		// The management NIC holds the default route: join the group on the mvneta.
		g.run(ctx, "ip route add 224.0.0.0/4 dev "+g.iface)
		srv, err := g.vm.Start(ctx, "iperf -s -u -B 239.1.2.3 -p 5005 -i 1 > /tmp/mcast.out 2>&1", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		g.host("iperf", "-c", "239.1.2.3", "-u", "-p", "5005", "-T", "1", "-t", "2", "-b", "1M")
		time.Sleep(time.Second)
		g.vm.Stop(ctx, srv, "killall iperf")
		out := g.run(ctx, "cat /tmp/mcast.out")
		if bitsPerSec(out) == 0 {
			t.Errorf("guest received no multicast datagrams:\n%s\n%s", out,
				g.run(ctx, "cat /proc/net/dev_mcast; ethtool -S "+g.iface+" | grep -v ': 0$'"))
		}
	})
	sub("mtu9000", func(t *testing.T, g *guestNet) {
		g.run(ctx, "ip link set dev "+g.iface+" mtu 9000")
		g.host("ip", "link", "set", g.tap, "mtu", "9000")
		g.waitLinkUp(ctx)
		g.host("ping", "-c", "3", "-W", "5", "-M", "do", "-s", "8972", guestIP)
		g.run(ctx, "ping -c 3 -W 5 -s 8972 "+hostIP)
		srv, err := g.vm.Start(ctx, "iperf -s -p 5006", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer g.vm.Stop(ctx, srv, "killall iperf")
		time.Sleep(500 * time.Millisecond)
		in := bitsPerSec(g.host("iperf", "-c", guestIP, "-p", "5006", "-t", "2"))
		g.run(ctx, "killall iperf")
		if in == 0 {
			t.Error("no TCP throughput at MTU 9000")
		}
		g.run(ctx, "ip link set dev "+g.iface+" mtu 1500")
		g.host("ip", "link", "set", g.tap, "mtu", "1500")
		g.waitLinkUp(ctx)
	})
	sub("link-down-up", func(t *testing.T, g *guestNet) {
		start := time.Now()
		g.run(ctx, "ip link set "+g.iface+" down")
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("ip link set down took %s (port_down timeouts?)", d)
		}
		g.run(ctx, "ip link set "+g.iface+" up")
		g.waitLinkUp(ctx)
		g.run(ctx, "ip addr show "+g.iface+" | grep -q "+guestIP+" || ip addr add "+guestIP+"/24 dev "+g.iface)
		g.run(ctx, "ping -c 3 -W 5 "+hostIP)
		// QEMU-side link loss (set_link) is seen by the guest as a link-change interrupt.
		if _, err := g.vm.QMP("set_link", map[string]any{"name": "t0", "up": false}); err != nil {
			t.Errorf("QMP set_link down: %v", err)
		}
		if _, err := g.vm.QMP("set_link", map[string]any{"name": "t0", "up": true}); err != nil {
			t.Errorf("QMP set_link up: %v", err)
		}
		g.run(ctx, "ping -c 3 -W 5 "+hostIP)
		g.dmesgClean(ctx)
	})
	sub("no-interrupt-storm", func(t *testing.T, g *guestNet) {
		// Cause bits are level-derived: an idle NIC must not interrupt.
		count := func() int {
			out := g.run(ctx, "grep -w "+g.iface+" /proc/interrupts")
			n := 0
			for _, f := range strings.Fields(out)[1:] {
				v, err := strconv.Atoi(f)
				if err != nil {
					break
				}
				n += v
			}
			return n
		}
		a := count()
		time.Sleep(3 * time.Second)
		b := count()
		if b-a > 20 {
			t.Errorf("%d mvneta interrupts in 3 s on an idle link (storm)", b-a)
		}
		t.Logf("idle: %d mvneta interrupts in 3 s", b-a)
	})
	sub("client-checksums", func(t *testing.T, g *guestNet) {
		// After all the traffic, the client must have seen no bad checksum from the model.
		nstat := g.host("nstat", "-az", "TcpInCsumErrors", "UdpInCsumErrors", "Udp6InCsumErrors", "IpInHdrErrors")
		for _, line := range strings.Split(nstat, "\n") {
			if f := strings.Fields(line); len(f) >= 2 && strings.HasSuffix(f[0], "Errors") && f[1] != "0" {
				t.Errorf("client saw errors: %s", line)
			}
		}
	})
	sub("ethtool", func(t *testing.T, g *guestNet) {
		out := g.run(ctx, "ethtool -S "+g.iface)
		for _, want := range []string{"good_octets_received", "good_frames_received", "good_frames_sent", "rx_discard"} {
			if !strings.Contains(out, want) {
				t.Errorf("ethtool -S lacks %s:\n%s", want, out)
			}
		}
		m := regexp.MustCompile(`good_frames_received: (\d+)`).FindStringSubmatch(out)
		if m == nil || m[1] == "0" {
			t.Errorf("good_frames_received is zero after all the traffic:\n%s", out)
		}
	})
}

// logWriter sends progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
