package verdict

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ppkit/ppkit/gomodel/rawtrace"
	"github.com/ppkit/ppkit/internal/testfile"
)

// A real capture (gomodel/rawtrace/testdata/multicast-tracepoints: one buffer saved as the kernel's
// text and as its pages) judged from the pages gives the model report and the figures of its
// text, and the text the pages are written as gives them again.
func TestCheckTraceWithModelRaw(t *testing.T) {
	const capture = "../../gomodel/rawtrace/testdata/multicast-tracepoints"
	dir := t.TempDir()
	raw := &RawTrace{}
	for _, cpu := range []string{"cpu0.raw", "cpu1.raw"} {
		p := filepath.Join(dir, cpu)
		if err := os.WriteFile(p, testfile.Gunzip(t, filepath.Join(capture, cpu+".gz")), 0o644); err != nil {
			t.Fatal(err)
		}
		raw.CPUs = append(raw.CPUs, p)
	}
	var err error
	if raw.Formats, err = rawtrace.ReadFormatsTar(bytes.NewReader(testfile.Gunzip(t, filepath.Join(capture, "events.tar.gz"))), "events/"); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "kernel-trace.txt")
	if err := os.WriteFile(text, testfile.Gunzip(t, filepath.Join(capture, "trace.txt.gz")), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fromPages, err := CheckTraceWithModel(ctx, ModelInput{Procedure: "multicast", Raw: raw, RxPackets: 100})
	if err != nil {
		t.Fatal(err)
	}
	fromText, err := CheckTraceWithModel(ctx, ModelInput{Procedure: "multicast", TracePath: text, RxPackets: 100})
	if err != nil {
		t.Fatal(err)
	}
	written := filepath.Join(dir, "trace.txt")
	if err := raw.WriteText(ctx, written); err != nil {
		t.Fatal(err)
	}
	fromWritten, err := CheckTraceWithModel(ctx, ModelInput{Procedure: "multicast", TracePath: written, RxPackets: 100})
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]*ModelReport{"kernel's text": fromText, "written text": fromWritten} {
		a, b := *fromPages.Trace, *m.Trace
		a.Lines, b.Lines = 0, 0 // the kernel's text has its header lines
		if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(fromPages.Predicted, m.Predicted) || len(fromPages.Violations) != len(m.Violations) {
			t.Errorf("pages: %+v %+v\n%s: %+v %+v", a.TraceFigures, fromPages.Predicted, name, b.TraceFigures, m.Predicted)
		}
	}
	if fromPages.Trace.Holds == 0 || fromPages.Trace.DMASyncs == 0 || len(fromPages.Trace.Pools) == 0 {
		t.Fatalf("the capture judged nothing: %+v", fromPages.Trace)
	}
	if err := raw.WriteText(ctx, filepath.Join(dir, "no-such-dir", "trace.txt")); err == nil {
		t.Error("WriteText into a missing directory: no error")
	}
}
