//go:build e2e

package procedure

import (
	"context"
	"testing"
	"time"

	"github.com/ppkit/ppkit/harness"
)

// BenchmarkNIC measures TCP client→guest throughput over mvneta and virtio-net in one guest and
// one run (ratio goal >= 0.5) and 64-byte UDP receive rates. One iteration is one full run:
// go test -tags e2e -run XXX -bench NIC -benchtime 1x ./tests/procedure
func BenchmarkNIC(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	for i := 0; i < b.N; i++ {
		res, err := BenchNIC(ctx, NICBenchOptions{
			Board:  harness.Spec{Boot: harness.BootOptions{MemoryMB: 1024}, Progress: benchWriter{b}},
			Rounds: 3, Duration: 5 * time.Second, Progress: benchWriter{b},
		})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.Mvneta.TCPRxMed, "mvneta-Mbit/s")
		b.ReportMetric(res.Virtio.TCPRxMed, "virtio-Mbit/s")
		b.ReportMetric(res.VirtioFrames.TCPRxMed, "virtio-nooffload-Mbit/s")
		b.ReportMetric(res.TCPRatio, "tcp-ratio")
		b.ReportMetric(res.TCPRatioFrames, "tcp-ratio-nooffload")
		b.ReportMetric(res.VirtioFrames.UDP64RxPPS, "virtio-nooffload-udp64-pps")
		b.ReportMetric(res.Mvneta.UDP64RxPPS, "mvneta-udp64-pps")
		b.ReportMetric(res.Virtio.UDP64RxPPS, "virtio-udp64-pps")
		b.Logf("TCP medians: mvneta %.1f, virtio %.1f, virtio without offloads %.1f Mbit/s (rounds %v / %v / %v)",
			res.Mvneta.TCPRxMed, res.Virtio.TCPRxMed, res.VirtioFrames.TCPRxMed,
			res.Mvneta.TCPRxMbps, res.Virtio.TCPRxMbps, res.VirtioFrames.TCPRxMbps)
		if res.TCPRatio < TCPRatioGoal {
			b.Logf("TCP ratio %.2f is below the goal %.2f", res.TCPRatio, TCPRatioGoal)
		}
	}
}

type benchWriter struct{ b *testing.B }

func (w benchWriter) Write(p []byte) (int, error) { w.b.Log(string(p)); return len(p), nil }
