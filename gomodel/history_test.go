package gomodel

import (
	"strings"
	"testing"
)

func TestPageHistories(t *testing.T) {
	trace := strings.Join([]string{
		"# tracer: nop",
		"          <idle>-0       [001] ..s.   10.000001: page_pool_state_hold: page_pool=00000000aa page=00000000bb pfn=4096 hold=1",
		"           iperf-412     (    410) [000] ..s1   10.000002: page_pool_state_hold: page_pool=00000000aa page=00000000cc pfn=4097 hold=2",
		"     ksoftirqd/1-17      [001] d.H.   10.000003: page_pool_skb_return: page_pool=00000000aa page=00000000bb pfn=4096",
		"           iperf-412     [000] ....   10.000004: mm_page_free: page=00000000bb pfn=0x1000 order=0",
		"          <idle>-0       [001]   10.000005: page_pool_state_release: page_pool=00000000aa page=00000000bb pfn=4096 release=1",
		"          <idle>-0       [001] ..s.   10.000006: page_pool_state_hold: page_pool=00000000aa page=00000000bb pfn=4096 hold=3",
	}, "\n") + "\n"
	got, err := PageHistories(strings.NewReader(trace), map[uint64]int{4096: 6, 9999: 0})
	if err != nil {
		t.Fatal(err)
	}
	h := got[4096]
	if len(h) != 4 || len(got[9999]) != 0 || len(got) != 1 {
		t.Fatalf("history %+v", got)
	}
	want := []PageEvent{
		{Line: 2, Timestamp: "10.000001", Task: "<idle>-0", CPU: 1, Context: "softirq", Event: "page_pool_state_hold", Fields: "page_pool=00000000aa page=00000000bb pfn=4096 hold=1"},
		{Line: 4, Timestamp: "10.000003", Task: "ksoftirqd/1-17", CPU: 1, Context: "hardirq-in-softirq", Event: "page_pool_skb_return", Fields: "page_pool=00000000aa page=00000000bb pfn=4096"},
		{Line: 5, Timestamp: "10.000004", Task: "iperf-412", CPU: 0, Context: "process", Event: "mm_page_free", Fields: "page=00000000bb pfn=0x1000 order=0"},
		{Line: 6, Timestamp: "10.000005", Task: "<idle>-0", CPU: 1, Event: "page_pool_state_release", Fields: "page_pool=00000000aa page=00000000bb pfn=4096 release=1"},
	}
	for i := range want {
		if h[i] != want[i] {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, h[i], want[i])
		}
	}
}

func FuzzPageHistories(f *testing.F) {
	addFiles(f, "testdata/traces/*.trace")
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := PageHistories(strings.NewReader(string(data)), map[uint64]int{1: 0, 4096: 0})
		if err != nil {
			return
		}
		for _, evs := range got {
			for i := 1; i < len(evs); i++ {
				if evs[i].Line <= evs[i-1].Line {
					t.Fatalf("events out of order: %+v", evs)
				}
			}
		}
	})
}
