package rawtrace

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The ring buffer's event header (include/linux/ring_buffer.h, kernel/trace/ring_buffer.c,
// 5.10): a u32 with type_len in bits 0-4 and time_delta in bits 5-31, then array[].
const (
	typeDataMax    = 28 // type_len 1..28: 4*type_len bytes of data after the header
	typePadding    = 29 // discarded event (time_delta != 0, length in array[0]) or end of page
	typeTimeExtend = 30 // time_delta + array[0]<<27 added to the time
	typeTimeStamp  = 31 // absolute time: time_delta + array[0]<<27
	tsShift        = 27
	hdrSize        = 4

	// Flags in the page's commit word (ring_buffer_read_page()).
	missedEvents = 1 << 31 // events were lost before this page
	missedStored = 1 << 30 // and their count is stored after the data, as an unsigned long
)

// PageError is a page that cannot be decoded: which CPU's stream, which page, where.
type PageError struct {
	CPU    int
	Page   int // 0-based index in the CPU's stream
	Offset int // byte offset in the page, -1 for the page as a whole
	Msg    string
}

func (e *PageError) Error() string {
	if e.Offset < 0 {
		return fmt.Sprintf("cpu%d page %d: %s", e.CPU, e.Page, e.Msg)
	}
	return fmt.Sprintf("cpu%d page %d offset %d: %s", e.CPU, e.Page, e.Offset, e.Msg)
}

// Record is what a CPU's pages hold, one at a time: an event, or a gap of lost events.
type Record struct {
	CPU int
	TS  uint64 // ns of the trace clock; for a gap, the timestamp of the page that follows it
	// Data is the event's record (common fields first), padded to 4 bytes; it points into the
	// page and is valid until the next call of Next. Nil for a gap.
	Data []byte
	// Lost is the number of events the ring buffer overwrote before this page (a gap); -1
	// when the kernel flagged the gap but had no room on the page to store the count.
	Lost int64
}

// CPUReader decodes one CPU's stream of ring-buffer pages, as per_cpu/cpuN/trace_pipe_raw
// hands them out (ring_buffer_read_page(): each page a struct buffer_data_page of
// HeaderPage.PageSize() bytes). A reader with bufio.Reader's Peek and Discard (ppkit reads a
// trace's files through a bufio.Reader) has its pages decoded in its buffer, without a copy
// into the CPUReader's own.
type CPUReader struct {
	cpu   int
	r     io.Reader
	pr    peeker // r, when it can hand out its pages in place
	held  int    // bytes pr handed out for the page being decoded, to discard before the next
	h     HeaderPage
	buf   []byte // the page being decoded
	page  int    // index of the page in the stream; -1 before the first
	data  []byte
	off   int
	ts    uint64
	lost  int64 // a gap to report before the page's first event
	gap   bool
	pages int
}

// NewFileReader is the reader to replay a CPU's trace file through: a bufio.Reader (its pages
// are decoded in its buffer) of 256 KiB, small enough that each chunk read(2) copies into it
// is still in the CPU's cache when the pages are decoded. Replaying the testdata/bench
// captures from files, 256 KiB buffers were 1.04× (forward) and 1.17× (tcp) as fast as 1 MiB
// ones; 128 and 512 KiB did as well as 256, 64 KiB 0.97×.
func NewFileReader(r io.Reader) *bufio.Reader {
	return bufio.NewReaderSize(r, 256<<10)
}

// peeker is bufio.Reader's way of handing out bytes in place.
type peeker interface {
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
}

// NewCPUReader reads the pages of one CPU from r.
func NewCPUReader(cpu int, r io.Reader, h *HeaderPage) *CPUReader {
	c := &CPUReader{cpu: cpu, r: r, h: *h, page: -1}
	if pr, ok := r.(peeker); ok {
		c.pr = pr
	} else {
		c.buf = make([]byte, h.PageSize())
	}
	return c
}

// readPage makes c.buf the next page: n bytes of it, and what the reader said.
func (c *CPUReader) readPage() (int, error) {
	if c.pr == nil {
		return io.ReadFull(c.r, c.buf)
	}
	if c.held > 0 {
		n, err := c.pr.Discard(c.held)
		c.held = 0
		if err != nil {
			return 0, fmt.Errorf("after %d of the page's %d bytes: %w", n, c.h.PageSize(), err)
		}
	}
	size := c.h.PageSize()
	b, err := c.pr.Peek(size)
	c.buf, c.held = b, len(b)
	switch {
	case len(b) == size:
		return size, nil
	case len(b) == 0 && err == io.EOF:
		return 0, io.EOF
	case err == io.EOF:
		return len(b), io.ErrUnexpectedEOF
	case err == nil: // a Peek that breaks its contract
		err = io.ErrShortBuffer
	}
	return len(b), err
}

// Pages is the number of pages read so far.
func (c *CPUReader) Pages() int { return c.pages }

func (c *CPUReader) fail(off int, format string, args ...any) error {
	return &PageError{CPU: c.cpu, Page: c.page, Offset: off, Msg: fmt.Sprintf(format, args...)}
}

// nextPage reads and checks the next page's header; io.EOF at the end of the stream.
func (c *CPUReader) nextPage() error {
	n, err := c.readPage()
	c.page++
	switch {
	case err == io.EOF:
		return io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		return c.fail(-1, "truncated page: %d of %d bytes", n, c.h.PageSize())
	case err != nil:
		return c.fail(-1, "read: %v", err)
	}
	c.pages++
	h := &c.h
	c.ts = binary.LittleEndian.Uint64(c.buf[h.Timestamp.Offset:])
	var commit uint64
	if h.Commit.Size == 8 {
		commit = binary.LittleEndian.Uint64(c.buf[h.Commit.Offset:])
		// RB_MISSED_EVENTS is (1 << 31), an int: local_add() sign-extends it into the long.
		if hi := commit >> 32; hi != 0 && !(hi == 0xffffffff && commit&missedEvents != 0) {
			return c.fail(-1, "commit word %#x has bits above 31 set: not a ring-buffer page", commit)
		}
	} else {
		commit = uint64(binary.LittleEndian.Uint32(c.buf[h.Commit.Offset:]))
	}
	size := int(commit & (missedStored - 1))
	data := c.buf[h.Data.Offset:]
	if size > len(data) {
		return c.fail(-1, "commit %d is beyond the page's %d data bytes", size, len(data))
	}
	c.data, c.off, c.gap, c.lost = data[:size], 0, false, 0
	switch {
	case commit&missedStored != 0 && commit&missedEvents == 0:
		return c.fail(-1, "commit word %#x has RB_MISSED_STORED without RB_MISSED_EVENTS", commit)
	case commit&missedStored != 0:
		// an unsigned long, the size of local_t
		if size+h.Commit.Size > len(data) {
			return c.fail(-1, "lost-event count stored at %d, past the page's %d data bytes", size, len(data))
		}
		var n uint64
		if h.Commit.Size == 8 {
			n = binary.LittleEndian.Uint64(data[size:])
		} else {
			n = uint64(binary.LittleEndian.Uint32(data[size:]))
		}
		if n == 0 || n > 1<<62 {
			return c.fail(size, "stored lost-event count %d is not a count", n)
		}
		c.gap, c.lost = true, int64(n)
	case commit&missedEvents != 0:
		c.gap, c.lost = true, -1
	}
	return nil
}

// Next returns the CPU's next record: io.EOF at the end of its stream, a *PageError for a page
// that is not what the kernel writes.
func (c *CPUReader) Next(rec *Record) error {
	for {
		if c.page < 0 || c.off >= len(c.data) && !c.gap {
			if err := c.nextPage(); err != nil {
				return err
			}
			continue
		}
		if c.gap {
			c.gap = false
			rec.CPU, rec.TS, rec.Data, rec.Lost = c.cpu, c.ts, nil, c.lost
			return nil
		}
		d, off := c.data, c.off
		if off+hdrSize > len(d) {
			return c.fail(off, "truncated event header: %d bytes left of the page's commit %d", len(d)-off, len(d))
		}
		hdr := binary.LittleEndian.Uint32(d[off:])
		typeLen, delta := hdr&31, uint64(hdr>>5)
		switch {
		case typeLen == typePadding && delta == 0:
			c.off = len(d) // the rest of the page is padding
			continue
		case typeLen == 0 || typeLen > typeDataMax:
			if off+8 > len(d) {
				return c.fail(off, "truncated event: type_len %d needs 8 bytes, %d left of the page's commit %d", typeLen, len(d)-off, len(d))
			}
		}
		arr := uint64(0)
		if off+8 <= len(d) {
			arr = uint64(binary.LittleEndian.Uint32(d[off+4:]))
		}
		switch typeLen {
		case typePadding: // a discarded event: the kernel's reader skips it, time unchanged
			end := off + hdrSize + int(arr)
			if arr < 4 || end > len(d) {
				return c.fail(off, "discarded event of %d bytes runs past the page's commit %d", hdrSize+arr, len(d))
			}
			c.off = end
			continue
		case typeTimeExtend:
			c.ts += arr<<tsShift + delta
			c.off = off + 8
			continue
		case typeTimeStamp:
			c.ts = arr<<tsShift + delta
			c.off = off + 8
			continue
		}
		var start, end int
		if typeLen == 0 { // the length is in array[0], the data follows it
			if arr < 4 {
				return c.fail(off, "event length %d in array[0] is shorter than the length word", arr)
			}
			start, end = off+8, off+hdrSize+int(arr)
		} else {
			start, end = off+hdrSize, off+hdrSize+4*int(typeLen)
		}
		if end > len(d) {
			return c.fail(off, "event of %d bytes runs past the page's commit %d", end-off, len(d))
		}
		c.ts += delta
		c.off = end
		// Field by field: a composite literal would copy the Record with write barriers.
		rec.CPU, rec.TS, rec.Data, rec.Lost = c.cpu, c.ts, d[start:end], 0
		return nil
	}
}
