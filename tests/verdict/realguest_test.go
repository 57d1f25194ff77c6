package verdict

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/internal/testfile"
)

// Fixtures captured from the real board: Linux 5.10.223 on the mvneta QEMU, baseline kernel,
// `ppkit test --baseline multicast copy --time 2 --rate 20` (counters, iperf) and
// `--time 1 --rate 1` (the trace, reduced to the pool that received the traffic: its
// page_pool events, the markers, and the mm_page_free* lines of its pages while it lived).

const realTrace = "testdata/trace/baseline-multicast-one-pool.txt.gz"

func TestRealGuestTraceFigures(t *testing.T) {
	data := testfile.Gunzip(t, realTrace)
	tf, err := ParseTraceFigures(bytes.NewReader(data), "multicast")
	if err != nil {
		t.Fatal(err)
	}
	// Every line of the real trace is an event the parser recognised: a page_pool/kmem event,
	// or one of the procedure's markers.
	rep, err := gomodel.CheckTrace(bytes.NewReader(data), gomodel.TraceOptions{Procedure: "multicast"})
	if err != nil {
		t.Fatal(err)
	}
	markers := strings.Count(string(data), ": tracing_mark_write: ")
	if rep.Events+markers != rep.Lines || int64(rep.Lines) != tf.Lines || rep.Ignored != markers {
		t.Errorf("%d events and %d markers in %d lines (%d ignored)", rep.Events, markers, rep.Lines, rep.Ignored)
	}
	// Stock 5.10 mvneta: one slow-path allocation per received packet (93 in the window), the
	// ring fill at open, every page released, the pool destroyed with inflight 0.
	if len(tf.Pools) != 1 || tf.HoldsInWindow != 93 || tf.Holds != 605 || tf.Releases != 605 || tf.SKBReturns != 0 {
		t.Errorf("figures: pools %d holds %d (window %d) releases %d skb %d", len(tf.Pools), tf.Holds, tf.HoldsInWindow, tf.Releases, tf.SKBReturns)
	}
	if p := tf.Pools[0]; !p.Destroyed || p.FinalInflight != 0 {
		t.Errorf("pool %+v", *p)
	}
}

func TestRealGuestTraceModel(t *testing.T) {
	data := testfile.Gunzip(t, realTrace)
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean.txt")
	if err := os.WriteFile(clean, data, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := CheckTraceWithModel(context.Background(), ModelInput{Procedure: "multicast", TracePath: clean, RxPackets: 93})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Violations) != 0 || rep.Predicted.Holds != 605 || rep.Predicted.Releases != 605 || rep.Predicted.FinalInflight != 0 {
		t.Fatalf("clean trace: %+v", rep)
	}
	// The same trace with a page freed to the page allocator right after a pool took it: the
	// model must call it a DMA-mapped page freed.
	lines := strings.Split(string(data), "\n")
	var mutated []string
	done := false
	for _, l := range lines {
		mutated = append(mutated, l)
		if !done && strings.Contains(l, "page_pool_state_hold:") && strings.HasSuffix(l, " hold=100") {
			pfn := regexp.MustCompile(`pfn=(\d+)`).FindStringSubmatch(l)[1]
			prefix := l[:strings.Index(l, "page_pool_state_hold:")]
			mutated = append(mutated, fmt.Sprintf("%smm_page_free: page=ffffff803e000000 pfn=%s order=0", prefix, pfn))
			done = true
		}
	}
	if !done {
		t.Fatal("no hold=100 line to mutate")
	}
	bad := filepath.Join(dir, "freed.txt")
	if err := os.WriteFile(bad, []byte(strings.Join(mutated, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err = CheckTraceWithModel(context.Background(), ModelInput{Procedure: "multicast", TracePath: bad, RxPackets: 93})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range rep.Violations {
		found = found || v.Name == "dma-mapped-page-freed"
	}
	if !found {
		t.Errorf("violations %+v, want dma-mapped-page-freed", rep.Violations)
	}
}

func TestRealGuestCounters(t *testing.T) {
	data, err := os.ReadFile("testdata/ethtool/mvneta-5.10.txt")
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseEthtoolStats(data)
	if err != nil {
		t.Fatal(err)
	}
	if st["good_frames_received"] != 3570 || st["multicast_frames_received"] != 3570 || st["frames_1024_to_max_octets"] != 3570 {
		t.Errorf("mvneta stats %v", st)
	}
	data, err = os.ReadFile("testdata/snmp/guest-5.10.txt")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSNMP(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s["Ip"]["OutTransmits"]; ok {
		t.Error("5.10 has no Ip OutTransmits")
	}
	if s["Ip"]["InReceives"] != 13627 || s["Udp"]["InDatagrams"] == 0 {
		t.Errorf("snmp %v", s)
	}
}
