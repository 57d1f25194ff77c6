package rawtrace

import (
	"archive/tar"
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"testing/fstest"
)

// Field is one field of an event's record, as its events/SYSTEM/NAME/format file describes it
// (f_show() in kernel/trace/trace_events.c: "field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;").
type Field struct {
	Name   string
	Type   string // the C type, without an array suffix ("unsigned long", "const struct page *")
	Offset int
	Size   int
	Signed bool
	// Array is the length of an array field: -1 for none, 0 for a dynamic array ("char buf[]",
	// the rest of the record), N for TYPE NAME[N].
	Array int
}

// Format is one event's format file.
type Format struct {
	System   string // the directory under events/ (the file itself does not say)
	Name     string
	ID       int
	Common   []Field // common_type, common_flags, common_preempt_count, common_pid
	Fields   []Field
	PrintFmt string
}

// Field returns the event's field of that name (common fields included), or nil.
func (f *Format) Field(name string) *Field {
	for _, l := range [2][]Field{f.Fields, f.Common} {
		for i := range l {
			if l[i].Name == name {
				return &l[i]
			}
		}
	}
	return nil
}

// FormatError is a format or header file that cannot be read: File and Line say where.
type FormatError struct {
	File string
	Line int
	Msg  string
}

func (e *FormatError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// maxFormatLine bounds a line of a format file (print fmt lines of big events are a few KB).
const maxFormatLine = 64 * 1024

// ParseFormat reads an events/SYSTEM/NAME/format file; file names it in errors.
func ParseFormat(r io.Reader, system, file string) (*Format, error) {
	f := &Format{System: system, ID: -1}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxFormatLine)
	n := 0
	fail := func(format string, args ...any) error {
		return &FormatError{File: file, Line: n, Msg: fmt.Sprintf(format, args...)}
	}
	inFields, common := false, true
	for sc.Scan() {
		n++
		line := sc.Text()
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "name: "):
			f.Name = strings.TrimSpace(line[len("name: "):])
			if f.Name == "" {
				return nil, fail("empty event name")
			}
		case strings.HasPrefix(line, "ID: "):
			id, err := strconv.Atoi(strings.TrimSpace(line[len("ID: "):]))
			if err != nil || id < 0 || id > 0xffff {
				return nil, fail("ID %q is not an event id (0..65535)", line[len("ID: "):])
			}
			f.ID = id
		case line == "format:":
			inFields = true
		case strings.HasPrefix(line, "print fmt: "):
			f.PrintFmt = line[len("print fmt: "):]
			inFields = false
		case t == "":
			if inFields && len(f.Common) > 0 {
				common = false // the blank line after the common fields
			}
		case inFields && strings.HasPrefix(t, "field:"):
			fd, err := parseField(t)
			if err != nil {
				return nil, fail("%v", err)
			}
			if common {
				f.Common = append(f.Common, fd)
			} else {
				f.Fields = append(f.Fields, fd)
			}
		default:
			return nil, fail("unexpected line %q; want an events/*/format file of tracefs", clip(line))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &FormatError{File: file, Line: n + 1, Msg: fmt.Sprintf("read: %v", err)}
	}
	switch {
	case f.Name == "":
		return nil, &FormatError{File: file, Msg: "no \"name:\" line; want an events/*/format file of tracefs"}
	case f.ID < 0:
		return nil, &FormatError{File: file, Msg: "no \"ID:\" line"}
	}
	ct := f.Field("common_type")
	if ct == nil || ct.Offset != 0 || ct.Size != 2 {
		return nil, &FormatError{File: file, Msg: "no common_type field of 2 bytes at offset 0 (5.10's struct trace_entry)"}
	}
	return f, nil
}

// parseField reads "field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;" (header_page's lines have
// a space after "field:").
func parseField(t string) (Field, error) {
	fd := Field{Array: -1}
	parts := strings.Split(t, ";")
	if len(parts) < 4 {
		return fd, fmt.Errorf("field line %q: want field:, offset:, size: and signed:", clip(t))
	}
	decl := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(parts[0]), "field:"))
	sp := strings.LastIndexAny(decl, " *")
	if sp < 0 || sp == len(decl)-1 {
		return fd, fmt.Errorf("field %q: want TYPE NAME", clip(decl))
	}
	fd.Name, fd.Type = decl[sp+1:], strings.TrimSpace(decl[:sp+1])
	if i := strings.IndexByte(fd.Name, '['); i >= 0 {
		if !strings.HasSuffix(fd.Name, "]") {
			return fd, fmt.Errorf("field %q: unclosed array length", clip(decl))
		}
		l := fd.Name[i+1 : len(fd.Name)-1]
		fd.Name = fd.Name[:i]
		if l == "" {
			fd.Array = 0
		} else if n, err := strconv.Atoi(l); err == nil && n > 0 {
			fd.Array = n
		} else {
			fd.Array = 0 // a length given by a macro: the size says it
		}
	}
	if fd.Name == "" || fd.Type == "" {
		return fd, fmt.Errorf("field %q: want TYPE NAME", clip(decl))
	}
	want := [...]string{"offset", "size", "signed"}
	var v [3]int
	for i, key := range want {
		kv := strings.TrimSpace(parts[i+1])
		if !strings.HasPrefix(kv, key+":") {
			return fd, fmt.Errorf("field %s: want %s: here, got %q", fd.Name, key, clip(kv))
		}
		n, err := strconv.Atoi(kv[len(key)+1:])
		if err != nil || n < 0 || n > 1<<20 {
			return fd, fmt.Errorf("field %s: %s %q is not a number", fd.Name, key, kv[len(key)+1:])
		}
		v[i] = n
	}
	fd.Offset, fd.Size, fd.Signed = v[0], v[1], v[2] != 0
	return fd, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// HeaderPage is events/header_page: where a ring-buffer page keeps its timestamp, its commit
// count (with the lost-event flags) and its data (ring_buffer_print_page_header(),
// kernel/trace/ring_buffer.c).
type HeaderPage struct {
	Timestamp Field // u64, the time of the page's first event
	Commit    Field // local_t: bytes of data committed, flags in bits 30 and 31
	Data      Field // the events; Offset+Size is the page size
}

// PageSize is the size of one page as trace_pipe_raw hands it out.
func (h *HeaderPage) PageSize() int { return h.Data.Offset + h.Data.Size }

// ParseHeaderPage reads events/header_page.
func ParseHeaderPage(r io.Reader, file string) (*HeaderPage, error) {
	h := &HeaderPage{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		t := strings.TrimSpace(sc.Text())
		if t == "" {
			continue
		}
		fd, err := parseField(t)
		if err != nil {
			return nil, &FormatError{File: file, Line: n, Msg: err.Error()}
		}
		switch fd.Name {
		case "timestamp":
			h.Timestamp = fd
		case "commit":
			h.Commit = fd
		case "data":
			h.Data = fd
		case "overwrite": // the commit word's flag bit, for old readers
			continue
		default:
			return nil, &FormatError{File: file, Line: n, Msg: fmt.Sprintf("unknown page header field %q", fd.Name)}
		}
		seen[fd.Name] = true
	}
	if err := sc.Err(); err != nil {
		return nil, &FormatError{File: file, Line: n + 1, Msg: fmt.Sprintf("read: %v", err)}
	}
	for _, name := range []string{"timestamp", "commit", "data"} {
		if !seen[name] {
			return nil, &FormatError{File: file, Msg: fmt.Sprintf("no %s field; want tracefs's events/header_page", name)}
		}
	}
	switch {
	case h.Timestamp.Size != 8:
		return nil, &FormatError{File: file, Msg: fmt.Sprintf("timestamp is %d bytes, want 8", h.Timestamp.Size)}
	case h.Commit.Size != 8 && h.Commit.Size != 4:
		return nil, &FormatError{File: file, Msg: fmt.Sprintf("commit is %d bytes, want 4 or 8", h.Commit.Size)}
	case h.Timestamp.Offset+8 > h.Data.Offset || h.Commit.Offset+h.Commit.Size > h.Data.Offset:
		return nil, &FormatError{File: file, Msg: "the timestamp or commit field overlaps the data"}
	case h.Data.Size < 16 || h.PageSize() > 1<<20:
		return nil, &FormatError{File: file, Msg: fmt.Sprintf("page data of %d bytes is not a ring-buffer page", h.Data.Size)}
	}
	return h, nil
}

// ParseHeaderEvent checks events/header_event: the event header this package decodes is 5.10's
// compressed one (ring_buffer_print_entry_header(): type_len 5 bits, time_delta 27 bits,
// padding 29, time_extend 30, time_stamp 31, data up to type_len 28).
func ParseHeaderEvent(r io.Reader, file string) error {
	want := []string{"type_len : 5 bits", "time_delta : 27 bits", "array : 32 bits",
		"padding : type == 29", "time_extend : type == 30", "time_stamp : type == 31", "data max type_len == 28"}
	b, err := io.ReadAll(io.LimitReader(r, maxFormatLine))
	if err != nil {
		return &FormatError{File: file, Msg: fmt.Sprintf("read: %v", err)}
	}
	got := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		got[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, w := range want {
		if !got[w] {
			return &FormatError{File: file, Msg: fmt.Sprintf("no %q line: not the compressed event header of Linux 5.10's ring buffer", w)}
		}
	}
	return nil
}

// Formats is what decoding a trace needs from tracefs: the page header and the format of
// every event that can appear in the pages.
type Formats struct {
	Page HeaderPage
	byID []*Format // indexed by ID
}

// NewFormats starts a set of formats for pages of that header.
func NewFormats(h *HeaderPage) *Formats { return &Formats{Page: *h} }

// Add adds an event's format; two formats with one ID are an error.
func (fs *Formats) Add(f *Format) error {
	if f.ID < len(fs.byID) && fs.byID[f.ID] != nil {
		o := fs.byID[f.ID]
		return fmt.Errorf("events %s/%s and %s/%s both have ID %d", o.System, o.Name, f.System, f.Name, f.ID)
	}
	for f.ID >= len(fs.byID) {
		fs.byID = append(fs.byID, nil)
	}
	fs.byID[f.ID] = f
	return nil
}

// ByID returns the format of an event id, or nil.
func (fs *Formats) ByID(id int) *Format {
	if id < 0 || id >= len(fs.byID) {
		return nil
	}
	return fs.byID[id]
}

// ReadFormatsTar is ReadFormats of a tar of the events directory, whose names lie below dir
// ("" for a tar made inside the directory, "events/" for one made beside it).
func ReadFormatsTar(r io.Reader, dir string) (*Formats, error) {
	fsys, err := ReadTar(r)
	if err != nil {
		return nil, fmt.Errorf("events tar: %w", err)
	}
	if dir = strings.TrimSuffix(dir, "/"); dir == "" {
		return ReadFormats(fsys)
	}
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("events tar: %w", err)
	}
	return ReadFormats(sub)
}

// ReadTar reads the regular files of a tar into memory, by their names without "./": a
// capture the board tarred up (the formats and its pages), to read with ReadFormats and
// NewMerger.
func ReadTar(r io.Reader) (fstest.MapFS, error) {
	fsys := fstest.MapFS{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return fsys, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		fsys[path.Clean(strings.TrimPrefix(h.Name, "./"))] = &fstest.MapFile{Data: b}
	}
}

// ReadFormats reads a copy of tracefs's events directory: header_page, header_event and every
// SYSTEM/NAME/format below it (a tree as `cp -r /sys/kernel/tracing/events` leaves it, or only
// the events that were enabled).
func ReadFormats(fsys fs.FS) (*Formats, error) {
	open := func(name string) (fs.File, error) {
		f, err := fsys.Open(name)
		if err != nil {
			return nil, fmt.Errorf("events directory: %w; want a copy of /sys/kernel/tracing/events", err)
		}
		return f, nil
	}
	f, err := open("header_page")
	if err != nil {
		return nil, err
	}
	h, err := ParseHeaderPage(f, "header_page")
	f.Close()
	if err != nil {
		return nil, err
	}
	if f, err = open("header_event"); err != nil {
		return nil, err
	}
	err = ParseHeaderEvent(f, "header_event")
	f.Close()
	if err != nil {
		return nil, err
	}
	fm := NewFormats(h)
	files, err := fs.Glob(fsys, "*/*/format")
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	for _, name := range files {
		f, err := fsys.Open(name)
		if err != nil {
			return nil, err
		}
		sys := path.Dir(path.Dir(name))
		ef, err := ParseFormat(f, sys, name)
		f.Close()
		if err != nil {
			return nil, err
		}
		if err := fm.Add(ef); err != nil {
			return nil, err
		}
	}
	return fm, nil
}
