package procedure

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ppkit/ppkit/harness"
	mvnetaemu "github.com/ppkit/ppkit/mvneta-emu"
)

// The NIC benchmark measures the device model, not the series: TCP client → guest throughput
// over the mvneta model beside virtio-net in one guest and one run, and the rate of 64-byte UDP
// frames the guest receives. It is a procedure on a board like the others, so it lives here,
// above the board, and boots through harness.Prepare.

// VirtioModel is the reference NIC of the benchmark, with its default offloads: the host hands
// it 64 KiB TSO/GSO segments with partial checksums. romfile= keeps QEMU from looking for a PCI
// option ROM the mvneta build does not install.
const VirtioModel = "virtio-net-pci,romfile="

// VirtioFramesModel is virtio-net without offloads: like mvneta it carries MTU-sized frames with
// full checksums, so the comparison measures the per-frame cost of the two device models.
const VirtioFramesModel = "virtio-net-pci,romfile=,csum=off,gso=off,guest_csum=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off,mrg_rxbuf=off"

// TCPRatioGoal is the goal for mvneta's TCP receive throughput relative to virtio-net's.
const TCPRatioGoal = 0.5

// NICBenchOptions configure BenchNIC. Board says which kernel and image; BenchNIC sets the
// NICs.
type NICBenchOptions struct {
	Board    harness.Spec
	Rounds   int           // iperf runs per NIC, alternating (default 3)
	Duration time.Duration // per iperf run (default 5s)
	Progress io.Writer
}

// NICFigures are one NIC's measurements.
type NICFigures struct {
	Model      string    `json:"model"`
	TCPRxMbps  []float64 `json:"tcp_rx_mbps"`        // client → guest, one per round
	TCPRxMed   float64   `json:"tcp_rx_median_mbps"` // median of the rounds
	UDP64RxPPS float64   `json:"udp64_rx_pps"`       // 64-byte frames the guest received per second
	UDP64Loss  float64   `json:"udp64_loss"`         // fraction lost at the offered rate
}

// NICBenchResult is what `ppkit bench nic` reports.
type NICBenchResult struct {
	Mvneta       NICFigures `json:"mvneta"`
	Virtio       NICFigures `json:"virtio"`        // default offloads (TSO/GSO into the guest)
	VirtioFrames NICFigures `json:"virtio_frames"` // offloads off: MTU-sized frames like mvneta
	// TCPRatio is mvneta / virtio-net with default offloads; TCPRatioFrames is mvneta /
	// virtio-net without offloads. Medians of one run.
	TCPRatio       float64 `json:"tcp_ratio"`
	TCPRatioFrames float64 `json:"tcp_ratio_frames"`
	Goal           float64 `json:"tcp_ratio_goal"`
}

// nicBenchAddrs: one /28 per NIC, so that all three live in one namespace and one guest.
var nicBenchAddrs = []struct{ host, guest string }{
	{"192.168.200.1", "192.168.200.2"},
	{"192.168.200.17", "192.168.200.18"},
	{"192.168.200.33", "192.168.200.34"},
}

// BenchNIC boots one board with an mvneta NIC and two virtio-net NICs side by side, and
// measures iperf TCP throughput client → guest over each (alternating rounds, medians) and the
// rate of 64-byte UDP frames the guest receives.
func BenchNIC(ctx context.Context, opts NICBenchOptions) (*NICBenchResult, error) {
	if opts.Rounds <= 0 {
		opts.Rounds = 3
	}
	if opts.Duration <= 0 {
		opts.Duration = 5 * time.Second
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	spec := opts.Board
	spec.Boot.NICs = []harness.NIC{
		{Model: mvnetaemu.DeviceName, MAC: "52:54:00:12:35:00"},
		{Model: VirtioModel, MAC: "52:54:00:12:35:01"},
		{Model: VirtioFramesModel, MAC: "52:54:00:12:35:02"},
	}
	vm, err := harness.Prepare(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer vm.Close()
	client := &NetnsClient{Namespace: vm.NetNS()}
	taps := vm.Taps()
	host := func(args ...string) ([]byte, error) {
		hctx, cancel := context.WithTimeout(ctx, opts.Duration+time.Minute)
		defer cancel()
		return client.Run(hctx, args...)
	}
	res := &NICBenchResult{Goal: TCPRatioGoal}
	figs := []*NICFigures{&res.Mvneta, &res.Virtio, &res.VirtioFrames}
	res.Mvneta.Model, res.Virtio.Model, res.VirtioFrames.Model = mvnetaemu.DeviceName, "virtio-net", "virtio-net-no-offload"
	// Guest interfaces in NIC order: by MAC.
	for i, nic := range spec.Boot.NICs {
		iface, err := vm.Run(ctx, fmt.Sprintf(`for d in /sys/class/net/*; do [ "$(cat $d/address)" = %s ] && echo ${d##*/}; done; true`, nic.MAC))
		if err != nil || strings.TrimSpace(string(iface)) == "" {
			return nil, fmt.Errorf("bench: no guest interface with MAC %s (%v)", nic.MAC, err)
		}
		name := strings.TrimSpace(string(iface))
		if _, err := host("ip", "addr", "add", nicBenchAddrs[i].host+"/28", "dev", taps[i]); err != nil {
			return nil, err
		}
		if _, err := host("ip", "link", "set", taps[i], "up"); err != nil {
			return nil, err
		}
		if out, err := vm.Run(ctx, fmt.Sprintf("ip addr add %s/28 dev %s && ip link set %s up", nicBenchAddrs[i].guest, name, name)); err != nil {
			return nil, fmt.Errorf("bench: configure guest %s: %w: %s", name, err, out)
		}
	}
	for i := range spec.Boot.NICs {
		if err := waitPing(ctx, host, nicBenchAddrs[i].guest); err != nil {
			return nil, fmt.Errorf("bench: %s: %w", figs[i].Model, err)
		}
	}
	srv, err := vm.Start(ctx, "iperf -s -p 5201 >/dev/null 2>&1", nil, nil)
	if err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond)
	secs := strconv.Itoa(int(opts.Duration.Seconds()))
	for r := 0; r < opts.Rounds; r++ {
		for i, f := range figs {
			out, err := host("iperf", "-c", nicBenchAddrs[i].guest, "-p", "5201", "-t", secs)
			if err != nil {
				return nil, err
			}
			rep, err := ParseIperf(out)
			if err != nil {
				return nil, fmt.Errorf("bench: %s: %w", f.Model, err)
			}
			if rep.Total == nil {
				return nil, fmt.Errorf("bench: %s: iperf printed no total:\n%s", f.Model, out)
			}
			mbps := rep.Total.BitsPerSecond / 1e6
			f.TCPRxMbps = append(f.TCPRxMbps, mbps)
			fmt.Fprintf(progress, "bench: round %d/%d %s TCP client→guest %.1f Mbit/s\n", r+1, opts.Rounds, f.Model, mbps)
		}
	}
	vm.Stop(ctx, srv, "killall iperf")
	for _, f := range figs {
		f.TCPRxMed = median(f.TCPRxMbps)
	}
	if res.Virtio.TCPRxMed > 0 {
		res.TCPRatio = res.Mvneta.TCPRxMed / res.Virtio.TCPRxMed
	}
	if res.VirtioFrames.TCPRxMed > 0 {
		res.TCPRatioFrames = res.Mvneta.TCPRxMed / res.VirtioFrames.TCPRxMed
	}
	// 64-byte frames: 18 bytes of UDP payload + 8 UDP + 20 IP + 14 Ethernet + 4 FCS.
	usrv, err := vm.Start(ctx, "iperf -s -u -p 5202 >/dev/null 2>&1", nil, nil)
	if err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond)
	for i, f := range figs {
		out, err := host("iperf", "-c", nicBenchAddrs[i].guest, "-p", "5202", "-u", "-l", "18", "-b", "200M", "-t", secs)
		if err != nil {
			return nil, err
		}
		pps, loss, ok := udpReceived(out)
		if !ok {
			return nil, fmt.Errorf("bench: %s: no iperf UDP server report:\n%s", f.Model, out)
		}
		f.UDP64RxPPS, f.UDP64Loss = pps, loss
		fmt.Fprintf(progress, "bench: %s 64-byte UDP client→guest %.0f pps received (%.0f%% lost)\n", f.Model, pps, loss*100)
	}
	vm.Stop(ctx, usrv, "killall iperf")
	return res, nil
}

// udpReceived reads a UDP client's relayed server report: datagrams received per second and
// the fraction lost.
func udpReceived(out []byte) (pps, loss float64, ok bool) {
	rep, err := ParseIperf(out)
	if err != nil || rep.ServerReport == nil || !rep.ServerReport.HasDatagrams {
		return 0, 0, false
	}
	sr := rep.ServerReport
	if sr.End <= sr.Start || sr.Datagrams == 0 || sr.Lost > sr.Datagrams {
		return 0, 0, false
	}
	return float64(sr.Received()) / (sr.End - sr.Start), float64(sr.Lost) / float64(sr.Datagrams), true
}

func waitPing(ctx context.Context, host func(...string) ([]byte, error), ip string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := host("ping", "-c", "1", "-W", "2", ip)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("guest %s does not answer ping: %w", ip, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
