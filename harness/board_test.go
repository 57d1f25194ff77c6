package harness

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestParseBoardURL(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "ssh://root@espressobin", want: "ssh://root@espressobin:22"},
		{in: "ssh://espressobin", want: "ssh://root@espressobin:22"},
		{in: "ssh://dev@192.0.2.7:2222", want: "ssh://dev@192.0.2.7:2222"},
		{in: "ssh://root@[2001:db8::1]:22", want: "ssh://root@[2001:db8::1]:22"},
		{in: "root@espressobin", err: "want ssh://[USER@]HOST[:PORT]"},
		{in: "http://espressobin", err: "want ssh://[USER@]HOST[:PORT]"},
		{in: "ssh://root@espressobin/boot", err: "want ssh://[USER@]HOST[:PORT]"},
		{in: "ssh://", err: "want ssh://[USER@]HOST[:PORT]"},
		{in: "ssh://root:secret@espressobin", err: "drop the password"},
	}
	for _, tc := range tests {
		a, err := ParseBoardURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseBoardURL(%q) = %v, %v; want an error with %q", tc.in, a, err, tc.err)
			}
			continue
		}
		if err != nil || a.String() != tc.want {
			t.Errorf("ParseBoardURL(%q) = %v, %v; want %s", tc.in, a, err, tc.want)
		}
	}
}

func TestKmsgText(t *testing.T) {
	// Records as /dev/kmsg gives them: PRI,SEQ,USEC,FLAGS;MESSAGE with dictionary lines.
	raw := "6,100,5123456,-;earlier run's message\n" +
		"12,101,7000000,-;ppkit-run-1\n" +
		"4,102,7000100,-;------------[ cut here ]------------\n" +
		" SUBSYSTEM=net\n" +
		" DEVICE=n2\n" +
		"4,103,7000200,c;WARNING: CPU: 1 PID: 0 at net/core/page_pool.c:402 page_pool_release+0x1c/0x80\n" +
		"6,104,12345678901,-;tab\\x09in it\n" +
		"6,105,7000300,-;cut off at the e"
	want := "[    7.000100] ------------[ cut here ]------------\n" +
		"[    7.000200] WARNING: CPU: 1 PID: 0 at net/core/page_pool.c:402 page_pool_release+0x1c/0x80\n" +
		"[12345.678901] tab\tin it\n" +
		"[    7.000300] cut off at the e\n"
	if got := string(KmsgText([]byte(raw), "ppkit-run-1")); got != want {
		t.Errorf("KmsgText:\n%s\nwant:\n%s", got, want)
	}
	if got := string(KmsgText([]byte(raw), "ppkit-run-2")); got != "" {
		t.Errorf("KmsgText before the marker is written: %q, want nothing", got)
	}
	if got := string(KmsgText([]byte(raw), "")); !strings.HasPrefix(got, "[    5.123456] earlier run's message\n") {
		t.Errorf("KmsgText without a marker starts %q, want every record", got)
	}
	reports := ParseReports(KmsgText([]byte(raw), "ppkit-run-1"))
	if len(reports) != 1 || !strings.Contains(reports[0].Title, "WARNING in page_pool_release") {
		t.Errorf("reports in the kernel log: %+v, want the WARNING", reports)
	}
}

func FuzzKmsgText(f *testing.F) {
	f.Add([]byte("6,1,2,-;ppkit-run-1\n4,2,3,-;hello\\x41\n SUB=x\n"), "ppkit-run-1")
	f.Add([]byte("garbage;\n,,,;\\x\\xZZ"), "")
	f.Fuzz(func(t *testing.T, raw []byte, marker string) {
		out := KmsgText(raw, marker)
		if marker != "" && !bytes.Contains(raw, []byte(marker)) && len(out) > 0 {
			t.Fatalf("text before a marker that never came: %q", out)
		}
	})
}

func TestNoteBuildIDRealKernel(t *testing.T) {
	notes, err := os.ReadFile("testdata/kernel-notes/real-5.10.223-arm64.notes")
	if err != nil {
		t.Fatal(err)
	}
	id, err := NoteBuildID(notes)
	if err != nil || id != "1bee1746236b60f59598ec73dd148a2a794e6c64" {
		t.Errorf("NoteBuildID = %q, %v", id, err)
	}
	if _, err := NoteBuildID(notes[:30]); err == nil || !strings.Contains(err.Error(), "past the end") {
		t.Errorf("truncated notes: %v, want an error", err)
	}
	if _, err := NoteBuildID(notes[36:]); err == nil || !strings.Contains(err.Error(), "no GNU build id") {
		t.Errorf("only the Linux note: %v, want an error", err)
	}
}

func TestKernelNotes(t *testing.T) {
	notes, err := os.ReadFile("testdata/kernel-notes/real-5.10.223-arm64.notes")
	if err != nil {
		t.Fatal(err)
	}
	// An Image whose notes lie at 0x100 from _text, a vDSO-like build id before them.
	image := make([]byte, 0x200)
	copy(image[0x20:], notes[:36])
	binary.LittleEndian.PutUint32(image[0x30:], 0xdeadbeef) // not the kernel's id
	copy(image[0x100:], notes)
	sysmap := fmt.Sprintf("ffffffc010000000 T _text\nffffffc010000100 R __start_notes\nffffffc0%08x R __stop_notes\n", 0x10000100+len(notes))
	got, err := KernelNotes(image, []byte(sysmap))
	if err != nil || !bytes.Equal(got, notes) {
		t.Fatalf("KernelNotes = %x, %v; want %x", got, err, notes)
	}
	if _, err := KernelNotes(image[:0x110], []byte(sysmap)); err == nil {
		t.Error("notes past the Image's end: no error")
	}
	if _, err := KernelNotes(image, []byte("ffffffc010000000 T _text\n")); err == nil {
		t.Error("System.map without the notes symbols: no error")
	}
}

func FuzzNoteBuildID(f *testing.F) {
	notes, _ := os.ReadFile("testdata/kernel-notes/real-5.10.223-arm64.notes")
	f.Add(notes)
	f.Fuzz(func(t *testing.T, b []byte) { NoteBuildID(b) })
}

func TestKernelRelease(t *testing.T) {
	// The banner as ppkit's Image carries it.
	image := []byte("\x00\x01Linux version 5.10.223 (ppkit@ppkit) (aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0, GNU ld\x00")
	if got := KernelRelease(image); got != "5.10.223" {
		t.Errorf("KernelRelease = %q", got)
	}
	if got := KernelRelease([]byte("no banner")); got != "" {
		t.Errorf("KernelRelease without a banner = %q", got)
	}
}
