package rawtrace

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ppkit/ppkit/gomodel"
	"github.com/ppkit/ppkit/internal/testfile"
)

var benchArtifact = flag.String("rawtrace.artifact", "", "BenchmarkCapture also replays this ppkit test artifact directory (cpuN.raw, formats.tar: ppkit test PROCEDURE --report DIR keeps them in DIR/series/PROCEDURE)")

// BenchmarkCapture is the measure of decoding and checking: Replay of whole
// procedures' traces, in events per second of the benchmark's thread and of its CPU time.
// testdata/bench holds two (README.md there): tcp, the default set's common case (a packet is
// a return through the hook, its put and its sync, runs on one CPU) and forward, the slow
// path's (a hold, a release and a page free for most packets). Each is replayed twice:
// memory, the pages in memory decoded in place (decoding and checking alone), and files, the
// pages read from files as ppkit reads them (tests/verdict: a bufio.Reader of each file, its
// pages decoded in its buffer), which adds the read(2) copy.
func BenchmarkCapture(b *testing.B) {
	dirs, _ := filepath.Glob("testdata/bench/*")
	if len(dirs) == 0 {
		b.Fatal("no captures in testdata/bench")
	}
	if *benchArtifact != "" {
		dirs = append(dirs, *benchArtifact)
	}
	for _, dir := range dirs {
		b.Run(filepath.Base(dir), func(b *testing.B) {
			fm, cpus := readArtifact(b, dir)
			var size int64
			var files []string
			for i, c := range cpus {
				size += int64(len(c))
				files = append(files, filepath.Join(b.TempDir(), fmt.Sprintf("cpu%d.raw", i)))
				if err := os.WriteFile(files[i], c, 0o644); err != nil {
					b.Fatal(err)
				}
			}
			memory := func() (*gomodel.TraceReport, Stats, error) {
				var rs []io.Reader
				for _, c := range cpus {
					rs = append(rs, &memPages{b: c})
				}
				return Replay(rs, fm, gomodel.TraceOptions{File: dir})
			}
			fromFiles := func() (*gomodel.TraceReport, Stats, error) {
				var rs []io.Reader
				for _, name := range files {
					f, err := os.Open(name)
					if err != nil {
						b.Fatal(err)
					}
					defer f.Close()
					rs = append(rs, NewFileReader(f))
				}
				return Replay(rs, fm, gomodel.TraceOptions{File: dir})
			}
			for _, m := range []struct {
				name   string
				replay func() (*gomodel.TraceReport, Stats, error)
			}{{"memory", memory}, {"files", fromFiles}} {
				b.Run(m.name, func(b *testing.B) {
					rep, st, err := m.replay()
					if err != nil || !rep.Passed || st.Events < 100000 || st.Gaps != 0 {
						b.Fatalf("%s: %v; %d events, %d gaps: not a whole passing procedure's trace", dir, err, st.Events, st.Gaps)
					}
					b.SetBytes(size)
					eventRate(b, st.Events, func() {
						if _, _, err := m.replay(); err != nil {
							b.Fatal(err)
						}
					})
				})
			}
		})
	}
}

// readArtifact reads a ppkit test artifact directory: formats.tar and cpuN.raw, each also
// as its .gz.
func readArtifact(t testing.TB, dir string) (*Formats, [][]byte) {
	read := func(name string) []byte {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			return b
		}
		if _, err := os.Stat(filepath.Join(dir, name+".gz")); err != nil {
			return nil
		}
		return testfile.Gunzip(t, filepath.Join(dir, name+".gz"))
	}
	tar := read("formats.tar")
	if tar == nil {
		t.Fatalf("%s: no formats.tar", dir)
	}
	fm, err := ReadFormatsTar(bytes.NewReader(tar), "")
	if err != nil {
		t.Fatal(err)
	}
	var cpus [][]byte
	for i := 0; ; i++ {
		raw := read(fmt.Sprintf("cpu%d.raw", i))
		if raw == nil {
			break
		}
		cpus = append(cpus, raw)
	}
	if len(cpus) == 0 {
		t.Fatalf("%s: no cpu0.raw", dir)
	}
	return fm, cpus
}
