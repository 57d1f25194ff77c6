package harness

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// KernelNotes returns the kernel's ELF notes as the running kernel shows them in
// /sys/kernel/notes: the bytes from __start_notes to __stop_notes, found in the Image through
// System.map (the Image is the kernel from _text on). The Image holds other build-id notes too
// (the vDSO's), so only this section tells which kernel an Image is.
func KernelNotes(image, systemMap []byte) ([]byte, error) {
	syms := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(systemMap))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		switch f[2] {
		case "_text", "__start_notes", "__stop_notes":
			v, err := strconv.ParseUint(f[0], 16, 64)
			if err != nil {
				return nil, fmt.Errorf("System.map: %s: %w", f[2], err)
			}
			syms[f[2]] = v
		}
	}
	text, okText := syms["_text"]
	start, okStart := syms["__start_notes"]
	stop, okStop := syms["__stop_notes"]
	if !okText || !okStart || !okStop {
		return nil, fmt.Errorf("System.map has no _text, __start_notes and __stop_notes")
	}
	if start < text || stop < start || stop-text > uint64(len(image)) {
		return nil, fmt.Errorf("System.map's notes (%#x-%#x, _text %#x) lie outside the %d-byte Image", start, stop, text, len(image))
	}
	return image[start-text : stop-text], nil
}

// NoteBuildID returns the GNU build id (hex) in a notes section, or an error when it has none.
func NoteBuildID(notes []byte) (string, error) {
	const ntGNUBuildID = 3
	le := binary.LittleEndian
	for p := notes; len(p) >= 12; {
		namesz, descsz, typ := le.Uint32(p), le.Uint32(p[4:]), le.Uint32(p[8:])
		nameEnd := 12 + align4(uint64(namesz))
		descEnd := nameEnd + align4(uint64(descsz))
		if descEnd > uint64(len(p)) {
			return "", fmt.Errorf("kernel notes: a note runs past the end (%d bytes)", len(notes))
		}
		name := p[12 : 12+namesz]
		if typ == ntGNUBuildID && string(bytes.TrimRight(name, "\x00")) == "GNU" {
			return hex.EncodeToString(p[nameEnd : nameEnd+uint64(descsz)]), nil
		}
		p = p[descEnd:]
	}
	return "", fmt.Errorf("kernel notes: no GNU build id (%d bytes)", len(notes))
}

func align4(n uint64) uint64 { return (n + 3) &^ 3 }

// KernelRelease is the release an Image's banner names ("Linux version 5.10.223 (…)"), as
// `uname -r` prints it on the running kernel; "" when the Image has no banner.
func KernelRelease(image []byte) string {
	const banner = "Linux version "
	i := bytes.Index(image, []byte(banner))
	if i < 0 {
		return ""
	}
	rest := image[i+len(banner):]
	if j := bytes.IndexAny(rest, " \x00\n"); j >= 0 {
		rest = rest[:j]
	}
	return string(rest)
}
