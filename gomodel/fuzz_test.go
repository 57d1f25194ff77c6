package gomodel

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var allConfigs = []Config{{Variant: VariantNone}, {Variant: VariantPreRFC}, {Variant: VariantRFC, Coalesce: CoalesceUnhandled},
	{Variant: VariantRFC, Coalesce: CoalesceRelease}, {Variant: VariantRFC, Coalesce: CoalesceFragList},
	{Variant: VariantRFC, Coalesce: CoalesceReject}, {Variant: VariantUpstream}, {Variant: VariantSeries, Coalesce: CoalesceRelease}}

func init() {
	for _, n := range MutantNames() {
		cfg, _ := ParseVariant(n, "")
		allConfigs = append(allConfigs, cfg)
	}
}

func addFiles(f *testing.F, pattern string) {
	files, _ := filepath.Glob(pattern)
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		if strings.HasSuffix(file, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				f.Fatal(err)
			}
			if b, err = io.ReadAll(zr); err != nil {
				f.Fatal(err)
			}
		}
		f.Add(b)
	}
}

// FuzzParseScenario: any input either parses (and then runs under every variant) or is a
// one-line *LineError; never a panic.
func FuzzParseScenario(f *testing.F) {
	addFiles(f, "testdata/scenarios/*.scn")
	f.Add([]byte("variant rfc\npool p size 1\nrx a p frags 2\nrx b p\nfrag_list a b\nfrag_list b a\nkfree a\n"))
	f.Add([]byte("variant upstream\npool p\nrx a p\npskb_copy c a\nfrag_list c a\nkfree c\nwait 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := ParseScenario(bytes.NewReader(data), "fuzz.scn")
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || strings.Contains(le.Msg, "\n") || le.Line < 1 {
				t.Fatalf("not a one-line LineError: %#v", err)
			}
			return
		}
		for _, cfg := range allConfigs {
			if _, err := Run(sc, cfg); err != nil {
				var le *LineError
				if !errors.As(err, &le) || strings.Contains(le.Msg, "\n") {
					t.Fatalf("%s: not a one-line LineError: %#v", cfg, err)
				}
			}
		}
	})
}

// FuzzCheckTrace: any input is a report, a one-line *LineError, *NotATraceError or *ProbeError; never a
// panic.
func FuzzCheckTrace(f *testing.F) {
	addFiles(f, "testdata/traces/*.trace")
	addFiles(f, "testdata/traces/*.trace.gz") // real guest traces with the kprobe events
	f.Add([]byte(ctx + "page_pool_release: page_pool=00000000aa inflight=-1 hold=0 release=1 cnt=1\n"))
	f.Add([]byte(ctx + "mm_page_free: page=00000000bb pfn=0xffffffffffffffff order=10\n"))
	f.Add([]byte(ctx + "page_pool_state_hold: page_pool=00000000aa page=00000000bb pfn=1 hold=1\n" +
		ctx + "arch_sync_dma_for_device: (arch_sync_dma_for_device+0x0/0x20) paddr=0x0 size=18446744073709551615 dir=0\n" +
		ctx + "page_pool_put_page: (page_pool_put_page+0x0/0x1a0) dma=0x1000 sync=0 direct=1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := CheckTrace(bytes.NewReader(data), TraceOptions{File: "fuzz.trace", Packets: 10})
		var nt *NotATraceError
		var pe *ProbeError
		if errors.As(err, &nt) || errors.As(err, &pe) {
			if strings.Contains(err.Error(), "\n") || pe != nil && rep == nil {
				t.Fatalf("not a one-line %T with its report: %q", err, err)
			}
			return
		}
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || strings.Contains(le.Msg, "\n") || le.Line < 1 {
				t.Fatalf("not a one-line LineError: %#v", err)
			}
			return
		}
		if rep.Events+rep.Ignored+rep.LostEvents > rep.Lines {
			t.Fatalf("more events than lines: %+v", rep)
		}
	})
}
