package harness

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// cpio file type bits (the st_mode high bits, as in the newc format).
const (
	cpioTypeDir     = 0o040000
	cpioTypeRegular = 0o100000
	cpioTypeSymlink = 0o120000
	cpioTypeChar    = 0o020000
)

// CPIOEntry is one file of an initramfs. Paths are relative to the root ("bin/busybox").
type CPIOEntry struct {
	Path     string
	Mode     uint32 // type bits | permission bits
	Data     []byte // regular files: content; symlinks: target
	DevMajor uint32 // character devices
	DevMinor uint32
}

// CPIOArchive collects the entries of an initramfs and writes them in the newc format the kernel
// unpacks. Parent directories are created implicitly; later entries for the same path win.
type CPIOArchive struct {
	entries map[string]CPIOEntry
}

// NewCPIOArchive returns an empty archive.
func NewCPIOArchive() *CPIOArchive { return &CPIOArchive{entries: map[string]CPIOEntry{}} }

func cleanCPIOPath(p string) (string, error) {
	c := strings.TrimPrefix(path.Clean("/"+p), "/")
	if c == "" || c == "." {
		return "", fmt.Errorf("cpio: empty path %q", p)
	}
	return c, nil
}

func (a *CPIOArchive) add(e CPIOEntry) error {
	p, err := cleanCPIOPath(e.Path)
	if err != nil {
		return err
	}
	e.Path = p
	for d := path.Dir(p); d != "."; d = path.Dir(d) {
		if old, ok := a.entries[d]; ok {
			if old.Mode&0o170000 != cpioTypeDir {
				return fmt.Errorf("cpio: %s: parent %s is not a directory", p, d)
			}
			continue
		}
		a.entries[d] = CPIOEntry{Path: d, Mode: cpioTypeDir | 0o755}
	}
	a.entries[p] = e
	return nil
}

// AddFile adds a regular file with permission bits perm.
func (a *CPIOArchive) AddFile(p string, perm uint32, data []byte) error {
	return a.add(CPIOEntry{Path: p, Mode: cpioTypeRegular | perm&0o7777, Data: data})
}

// AddDir adds a directory with permission bits perm.
func (a *CPIOArchive) AddDir(p string, perm uint32) error {
	return a.add(CPIOEntry{Path: p, Mode: cpioTypeDir | perm&0o7777})
}

// AddSymlink adds a symbolic link p pointing at target.
func (a *CPIOArchive) AddSymlink(p, target string) error {
	return a.add(CPIOEntry{Path: p, Mode: cpioTypeSymlink | 0o777, Data: []byte(target)})
}

// AddCharDev adds a character device node (no root needed: the kernel creates it on unpack).
func (a *CPIOArchive) AddCharDev(p string, perm, major, minor uint32) error {
	return a.add(CPIOEntry{Path: p, Mode: cpioTypeChar | perm&0o7777, DevMajor: major, DevMinor: minor})
}

// Has reports whether the archive holds p.
func (a *CPIOArchive) Has(p string) bool {
	c, err := cleanCPIOPath(p)
	if err != nil {
		return false
	}
	_, ok := a.entries[c]
	return ok
}

// Len is the number of entries, implicit directories included.
func (a *CPIOArchive) Len() int { return len(a.entries) }

// WriteTo writes the archive in newc format, sorted by path so that parents precede children and
// the output is reproducible (all times are zero, all owners root).
func (a *CPIOArchive) WriteTo(w io.Writer) (int64, error) {
	paths := make([]string, 0, len(a.entries))
	for p := range a.entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	cw := &countingWriter{w: bufio.NewWriterSize(w, 1<<20)}
	ino := uint32(1)
	for _, p := range paths {
		e := a.entries[p]
		writeCPIORecord(cw, ino, e.Mode, e.DevMajor, e.DevMinor, p, e.Data)
		ino++
	}
	writeCPIORecord(cw, 0, 0, 0, 0, "TRAILER!!!", nil)
	if cw.err == nil {
		cw.err = cw.w.(*bufio.Writer).Flush()
	}
	return cw.n, cw.err
}

type countingWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

func (c *countingWriter) pad4() {
	if r := c.n % 4; r != 0 {
		c.Write(make([]byte, 4-r))
	}
}

func writeCPIORecord(w *countingWriter, ino, mode, rmaj, rmin uint32, name string, data []byte) {
	nlink := uint32(1)
	if mode&0o170000 == cpioTypeDir {
		nlink = 2
	}
	// newc: magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
	// rdevminor, namesize (with NUL), check.
	fmt.Fprintf(w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
	w.Write([]byte(name))
	w.Write([]byte{0})
	w.pad4()
	w.Write(data)
	w.pad4()
}
