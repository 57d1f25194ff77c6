package rawtrace

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/ppkit/ppkit/gomodel"
)

// FuzzFormat: any input is a format (with sane fields) or a *FormatError; never a panic. A
// format that parses decodes a record of its id (the input's bytes after the id) to an event
// or a *DecodeError, and the event replays or is a *gomodel.LineError: malformed formats of
// the events gomodel reads (the kprobe events' fetchargs among them) are errors, not panics.
func FuzzFormat(f *testing.F) {
	for _, text := range testFormats {
		f.Add([]byte(text))
	}
	f.Add([]byte(headerPage510))
	hp, err := ParseHeaderPage(strings.NewReader(headerPage510), "header_page")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ef, err := ParseFormat(bytes.NewReader(data), "sys", "format")
		var fe *FormatError
		switch {
		case err != nil && !errors.As(err, &fe):
			t.Fatalf("not a *FormatError: %v", err)
		case err == nil:
			if ef.Name == "" || ef.ID < 0 || ef.ID > 0xffff || ef.Field("common_type") == nil {
				t.Fatalf("accepted %+v", ef)
			}
			for _, fd := range append(ef.Common, ef.Fields...) {
				if fd.Name == "" || fd.Offset < 0 || fd.Size < 0 {
					t.Fatalf("field %+v", fd)
				}
			}
			fm := NewFormats(hp)
			if err := fm.Add(ef); err != nil {
				t.Fatal(err)
			}
			rec := &Record{CPU: 0, TS: 1e9, Data: append([]byte{byte(ef.ID), byte(ef.ID >> 8)}, data[:min(len(data), 256)]...)}
			var ev gomodel.Event
			if err := NewDecoder(fm).Decode(rec, &ev); err != nil {
				var de *DecodeError
				if !errors.As(err, &de) {
					t.Fatalf("not a *DecodeError: %v", err)
				}
			} else if ev.Order > 4 {
				return // the replay frees 2^order pages per event: too slow to fuzz
			} else if err := gomodel.NewTraceStream(gomodel.TraceOptions{}).Event(&ev); err != nil {
				var le *gomodel.LineError
				if !errors.As(err, &le) {
					t.Fatalf("not a *gomodel.LineError: %v", err)
				}
			}
		}
		h, err := ParseHeaderPage(bytes.NewReader(data), "header_page")
		if err == nil && (h.PageSize() <= h.Data.Offset || h.Timestamp.Size != 8) {
			t.Fatalf("accepted header %+v", h)
		}
	})
}

// FuzzPages: any bytes as a CPU's pages decode to a report or to a *PageError, *DecodeError or
// *gomodel.LineError (a field out of its text range); never a panic, and never a report that
// counts fewer events than were decoded.
func FuzzPages(f *testing.F) {
	fm := testFormatSet(f)
	rnd := rand.New(rand.NewSource(1))
	perCPU, _ := split(synthetic(rnd, 200))
	f.Add(pages(fm, perCPU[0], map[int]int64{0: 3}), pages(fm, perCPU[1], map[int]int64{0: -1}))
	p := &pageBuilder{ts: 1000, last: 1000}
	p.event(1010, (&tev{name: "print", marker: strings.Repeat("y", 150)}).record(fm))
	p.abs(1 << 40)
	p.discard(12)
	f.Add(p.bytes(&fm.Page), []byte{})
	perCPU, _ = split(syntheticKprobes(rnd, 100, true))
	f.Add(pages(fm, perCPU[0], nil), pages(fm, perCPU[1], map[int]int64{0: 5}))
	f.Fuzz(func(t *testing.T, cpu0, cpu1 []byte) {
		// The merger reads its common case itself: it hands out what CPUReader.Next gives.
		checkMerger(t, fm, cpu0, cpu1)
		// The decoder alone: records within their pages, events or a typed error.
		m, d := NewMerger(readers(cpu0, cpu1), &fm.Page), NewDecoder(fm)
		var ev gomodel.Event
		bigFree := false
		for {
			rec, err := m.Next()
			if err != nil {
				var pe *PageError
				if err != io.EOF && !errors.As(err, &pe) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				break
			}
			if len(rec.Data) > fm.Page.Data.Size {
				t.Fatalf("a record of %d bytes from a page of %d", len(rec.Data), fm.Page.Data.Size)
			}
			if err := d.Decode(rec, &ev); err != nil {
				var de *DecodeError
				if !errors.As(err, &de) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				break
			}
			bigFree = bigFree || ev.Order > 4
		}
		if bigFree {
			return // the replay frees 2^order pages per event: too slow to fuzz
		}
		// Through the model: a report, or one of the typed errors.
		rep, st, err := Replay(readers(cpu0, cpu1), fm, gomodel.TraceOptions{Procedure: "multicast"})
		// Pages decoded in place give the same.
		rep2, st2, err2 := Replay(inPlace(cpu0, cpu1), fm, gomodel.TraceOptions{Procedure: "multicast"})
		if fmt.Sprint(err) != fmt.Sprint(err2) || st != st2 || !reflect.DeepEqual(rep, rep2) {
			t.Fatalf("in place: %v, %+v, %+v; copied: %v, %+v, %+v", err2, st2, rep2, err, st, rep)
		}
		var pe *PageError
		var de *DecodeError
		var le *gomodel.LineError
		var nt *gomodel.NotATraceError
		var probe *gomodel.ProbeError
		switch {
		case err != nil && (errors.As(err, &pe) || errors.As(err, &de) || errors.As(err, &le)):
			if rep != nil {
				t.Fatal("a report with a decoding error")
			}
		case err != nil && !errors.As(err, &nt) && !errors.As(err, &probe):
			t.Fatalf("unexpected error type %T: %v", err, err)
		default:
			if rep.Events+rep.Ignored < st.Events {
				t.Fatalf("%d events decoded, the report has %d + %d ignored", st.Events, rep.Events, rep.Ignored)
			}
			if rep.LostEvents != st.Gaps || rep.Figures.LostEvents != st.Lost+int64(st.LostUnknown) {
				t.Fatalf("gaps: report %d markers, %d lost; stats %+v", rep.LostEvents, rep.Figures.LostEvents, st)
			}
			// Pages the replay took make a text the text parser reads to the same figures —
			// when time only goes forward in each CPU's pages, as the kernel writes them. When it
			// goes back (an absolute timestamp behind the one before: the replay counts the
			// event as reordered), the text parser sorts what lies within its reorder window,
			// while the replay of the merged pages has already replayed the later event.
			if rep.Reordered > 0 {
				return
			}
			var text bytes.Buffer
			if err := WriteText(&text, readers(cpu0, cpu1), fm); err != nil {
				t.Fatalf("WriteText of pages Replay read: %v", err)
			}
			back, berr := gomodel.ReadTrace(&text, gomodel.TraceOptions{Procedure: "multicast"})
			if (berr == nil) != (err == nil) || back == nil || back.Figures != rep.Figures || back.Lines != rep.Lines {
				t.Fatalf("written text: %v, %+v; raw: %v, %+v", berr, back, err, rep)
			}
		}
	})
}

// checkMerger compares Merger's records with a merge of CPUReader.Next's, the smallest
// timestamp first and the lower CPU on a tie: the same records, the same end or error. The
// CPUReaders copy their pages, the merger's decode them in place (inPlace).
func checkMerger(t *testing.T, fm *Formats, streams ...[]byte) {
	t.Helper()
	type head struct {
		r    *CPUReader
		rec  Record
		err  error
		live bool
	}
	heads := make([]*head, len(streams))
	for i, b := range streams {
		heads[i] = &head{r: NewCPUReader(i, bytes.NewReader(b), &fm.Page)}
	}
	m := NewMerger(inPlace(streams...), &fm.Page)
	for n := 0; ; n++ {
		var want *head
		for _, h := range heads {
			if !h.live && h.err == nil {
				h.err = h.r.Next(&h.rec)
				h.live = h.err == nil
			}
			if h.err != nil && h.err != io.EOF {
				want = h // an error stops the merge where it happens
				break
			}
			if h.live && (want == nil || h.rec.TS < want.rec.TS) {
				want = h
			}
		}
		got, err := m.Next()
		switch {
		case want == nil:
			if err != io.EOF {
				t.Fatalf("record %d: merger gave %+v, %v; want the end", n, got, err)
			}
			return
		case want.err != nil:
			if err == nil || err.Error() != want.err.Error() {
				t.Fatalf("record %d: merger gave %+v, %v; want the error %v", n, got, err, want.err)
			}
			return
		case err != nil:
			t.Fatalf("record %d: merger failed with %v; want %+v", n, err, want.rec)
		case got.CPU != want.rec.CPU || got.TS != want.rec.TS || got.Lost != want.rec.Lost ||
			!bytes.Equal(got.Data, want.rec.Data) || (got.Data == nil) != (want.rec.Data == nil):
			t.Fatalf("record %d: merger gave %+v, want %+v", n, *got, want.rec)
		}
		want.live = false
	}
}
