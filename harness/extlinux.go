package harness

import (
	"bytes"
	"fmt"
	"strings"
)

// Extlinux is a board's /boot/extlinux/extlinux.conf as U-Boot's distro boot reads it
// (boot/pxe_utils.c: keywords are case-insensitive; "kernel" and "linux" name the image,
// "fdt" and "devicetree" the device tree, "default" the label booted without a menu choice).
// Only what ppkit changes is interpreted; every other line is kept as written.
type Extlinux struct {
	lines  []string
	labels []extlinuxLabel
	dflt   int // line index of the "default" keyword, -1 when there is none
}

type extlinuxLabel struct {
	name       string
	start, end int // lines [start, end): the label line and its keywords
	kernel     string
	fdt        string
}

// ParseExtlinux reads an extlinux.conf. A file without a label, or a label without a kernel,
// is not one U-Boot can boot.
func ParseExtlinux(data []byte) (*Extlinux, error) {
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, fmt.Errorf("extlinux.conf: a NUL byte: not a text file")
	}
	x := &Extlinux{lines: strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"), dflt: -1}
	cur := -1
	for i, line := range x.lines {
		key, val := extlinuxKeyword(line)
		switch key {
		case "label":
			if cur >= 0 {
				x.labels[cur].end = i
			}
			if val == "" {
				return nil, fmt.Errorf("extlinux.conf line %d: a label without a name", i+1)
			}
			x.labels = append(x.labels, extlinuxLabel{name: val, start: i})
			cur = len(x.labels) - 1
		case "menu", "timeout", "prompt", "include", "ontimeout", "fallback", "totaltimeout":
			// Global keywords end the label before them; "menu label" inside a label is the
			// label's own and "menu" keywords inside one stay with it.
			if cur >= 0 && key != "menu" {
				x.labels[cur].end = i
				cur = -1
			}
		case "default":
			if cur >= 0 {
				x.labels[cur].end = i
				cur = -1
			}
			x.dflt = i
		case "kernel", "linux":
			if cur >= 0 {
				x.labels[cur].kernel = val
			}
		case "fdt", "devicetree":
			if cur >= 0 {
				x.labels[cur].fdt = val
			}
		}
	}
	if cur >= 0 {
		x.labels[cur].end = len(x.lines)
	}
	if len(x.labels) == 0 {
		return nil, fmt.Errorf("extlinux.conf has no label: not a boot menu U-Boot can use")
	}
	for _, l := range x.labels {
		if l.kernel == "" {
			return nil, fmt.Errorf("extlinux.conf: label %q has no kernel line", l.name)
		}
	}
	return x, nil
}

// extlinuxKeyword splits a line into its lower-cased keyword and the rest.
func extlinuxKeyword(line string) (string, string) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", ""
	}
	key, val, _ := strings.Cut(line, " ")
	if k, v, ok := strings.Cut(line, "\t"); ok && len(k) < len(key) {
		key, val = k, v
	}
	return strings.ToLower(key), strings.TrimSpace(val)
}

// Default is the label U-Boot boots: the one "default" names, else the first.
func (x *Extlinux) Default() (name, kernel, fdt string) {
	l := x.labels[x.defaultLabel()]
	return l.name, l.kernel, l.fdt
}

func (x *Extlinux) defaultLabel() int {
	if x.dflt >= 0 {
		_, name := extlinuxKeyword(x.lines[x.dflt])
		for i, l := range x.labels {
			if l.name == name {
				return i
			}
		}
	}
	return 0
}

// WithDefault returns the file with a new label, first of all labels and the default: the
// default label's lines (its initrd, its command line) with kernel and, when fdt is not
// empty, the device tree replaced. Labels whose name starts with drop (ppkit's earlier
// entries) are left out; the label the new one copies may be one of them.
func (x *Extlinux) WithDefault(label, kernel, fdt, drop string) []byte {
	src := x.labels[x.defaultLabel()]
	var entry []string
	hasFDT := false
	for i := src.start; i < src.end; i++ {
		line := x.lines[i]
		key, _ := extlinuxKeyword(line)
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		switch key {
		case "label":
			line = indent + "label " + label
		case "kernel", "linux":
			line = indent + key + " " + kernel
		case "fdt", "devicetree", "fdtdir":
			if fdt == "" {
				break
			}
			if hasFDT {
				continue
			}
			hasFDT = true
			line = indent + "fdt " + fdt
		case "menu":
			if sub, _ := extlinuxKeyword(strings.TrimSpace(line)[len("menu"):]); sub == "label" {
				line = indent + "menu label " + label
			}
		}
		entry = append(entry, line)
	}
	if fdt != "" && !hasFDT {
		entry = append(entry, "\tfdt "+fdt)
	}
	// The entry ends with the blank lines its source had; keep one between labels.
	for len(entry) > 1 && strings.TrimSpace(entry[len(entry)-1]) == "" {
		entry = entry[:len(entry)-1]
	}
	entry = append(entry, "")

	skip := make([]bool, len(x.lines))
	for _, l := range x.labels {
		if drop != "" && strings.HasPrefix(l.name, drop) {
			for i := l.start; i < l.end; i++ {
				skip[i] = true
			}
		}
	}
	var out []string
	if x.dflt < 0 {
		out = append(out, "default "+label)
	}
	for i, line := range x.lines {
		if i == x.labels[0].start {
			out = append(out, entry...)
		}
		if skip[i] {
			continue
		}
		if i == x.dflt {
			line = "default " + label
		}
		out = append(out, line)
	}
	return []byte(strings.Join(out, "\n") + "\n")
}
