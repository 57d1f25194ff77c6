package verdict

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// SNMP is /proc/net/snmp: protocol → counter → value (e.g. SNMP["Udp"]["InDatagrams"]).
type SNMP map[string]map[string]int64

// ParseSNMP parses /proc/net/snmp, whose protocols come as pairs of lines: a header line of
// counter names and a value line, both starting with "Proto:".
func ParseSNMP(data []byte) (SNMP, error) {
	s := SNMP{}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read snmp: %w", err)
	}
	if len(lines)%2 != 0 {
		return nil, fmt.Errorf("snmp: %d non-empty lines, want header/value pairs", len(lines))
	}
	for i := 0; i < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) < 2 || !strings.HasSuffix(names[0], ":") {
			return nil, fmt.Errorf("snmp line %d: want \"Proto: Name…\", got %q", i+1, lines[i])
		}
		if values[0] != names[0] {
			return nil, fmt.Errorf("snmp line %d: values for %q follow header %q", i+2, values[0], names[0])
		}
		if len(values) != len(names) {
			return nil, fmt.Errorf("snmp line %d: %d values for %d %s counters", i+2, len(values)-1, len(names)-1, names[0])
		}
		proto := strings.TrimSuffix(names[0], ":")
		if _, dup := s[proto]; dup {
			return nil, fmt.Errorf("snmp line %d: protocol %s twice", i+1, proto)
		}
		m := make(map[string]int64, len(names)-1)
		for j := 1; j < len(names); j++ {
			v, err := strconv.ParseInt(values[j], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("snmp line %d: %s %s: %w", i+2, proto, names[j], err)
			}
			m[names[j]] = v
		}
		s[proto] = m
	}
	return s, nil
}

// Delta returns after − before for every counter present in both.
func (after SNMP) Delta(before SNMP) SNMP {
	d := SNMP{}
	for proto, m := range after {
		for name, v := range m {
			if b, ok := before[proto][name]; ok {
				if d[proto] == nil {
					d[proto] = map[string]int64{}
				}
				d[proto][name] = v - b
			}
		}
	}
	return d
}

// EthtoolStats is `ethtool -S IF`: statistic name → value.
type EthtoolStats map[string]uint64

// ParseEthtoolStats parses `ethtool -S` output: a "NIC statistics:" line, then "name: value"
// lines. Names may contain spaces and brackets (some drivers print "rx_queue_0_packets" or
// "rx queue 0 packets"); the value is the text after the last colon.
func ParseEthtoolStats(data []byte) (EthtoolStats, error) {
	st := EthtoolStats{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	sawHeader := false
	for lineNo := 1; sc.Scan(); lineNo++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" {
			continue
		}
		if !sawHeader {
			if l != "NIC statistics:" {
				return nil, fmt.Errorf("ethtool -S line %d: want \"NIC statistics:\", got %q", lineNo, l)
			}
			sawHeader = true
			continue
		}
		i := strings.LastIndexByte(l, ':')
		if i <= 0 {
			return nil, fmt.Errorf("ethtool -S line %d: want \"name: value\", got %q", lineNo, l)
		}
		name := strings.TrimSpace(l[:i])
		v, err := strconv.ParseUint(strings.TrimSpace(l[i+1:]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("ethtool -S line %d: %s: %w", lineNo, name, err)
		}
		st[name] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read ethtool -S: %w", err)
	}
	if !sawHeader {
		return nil, fmt.Errorf("ethtool -S: empty output")
	}
	return st, nil
}

// Delta returns after − before per statistic (counters that went down, e.g. after a reset,
// report the after value).
func (after EthtoolStats) Delta(before EthtoolStats) EthtoolStats {
	d := EthtoolStats{}
	for k, v := range after {
		if b, ok := before[k]; ok && v >= b {
			d[k] = v - b
		} else {
			d[k] = v
		}
	}
	return d
}

// InterfaceCounters are the kernel's own interface statistics (/sys/class/net/IF/statistics).
type InterfaceCounters struct {
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	RxDropped uint64 `json:"rx_dropped"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
}

// ParseInterfaceCounters parses "name value" lines, one per file of
// /sys/class/net/IF/statistics, as the procedures print them.
func ParseInterfaceCounters(data []byte) (InterfaceCounters, error) {
	var c InterfaceCounters
	fields := map[string]*uint64{"rx_packets": &c.RxPackets, "rx_bytes": &c.RxBytes,
		"rx_dropped": &c.RxDropped, "tx_packets": &c.TxPackets, "tx_bytes": &c.TxBytes}
	seen := 0
	for lineNo, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			return c, fmt.Errorf("interface counters line %d: want \"name value\", got %q", lineNo+1, l)
		}
		p, ok := fields[f[0]]
		if !ok {
			return c, fmt.Errorf("interface counters line %d: unknown counter %q", lineNo+1, f[0])
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return c, fmt.Errorf("interface counters line %d: %s: %w", lineNo+1, f[0], err)
		}
		*p = v
		seen++
	}
	if seen != len(fields) {
		return c, fmt.Errorf("interface counters: %d of %d counters present", seen, len(fields))
	}
	return c, nil
}

// Snapshot is the board's counters at one moment.
type Snapshot struct {
	Interface InterfaceCounters `json:"interface"`
	SNMP      SNMP              `json:"snmp"`
	Ethtool   EthtoolStats      `json:"ethtool,omitempty"`
}
