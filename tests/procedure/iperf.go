package procedure

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// IperfReport is what one iperf 2 process (client or server, TCP or UDP, with `-i 1`) printed.
type IperfReport struct {
	Role     string `json:"role"`     // "client" or "server"
	Protocol string `json:"protocol"` // "tcp" or "udp"
	// Intervals are the per-interval lines, in order, except the total.
	Intervals []IperfInterval `json:"intervals"`
	// Total is the whole-run line (the last line starting at 0.0 once an interval line was
	// seen, or the only line of a run shorter than the interval); nil if iperf printed none.
	Total *IperfInterval `json:"total,omitempty"`
	// SentDatagrams is a UDP client's "Sent N datagrams" (0 if absent).
	SentDatagrams int64 `json:"sent_datagrams,omitempty"`
	// ServerReport is the server's figures as relayed to a UDP unicast client.
	ServerReport *IperfInterval `json:"server_report,omitempty"`
	// Errors are the failure lines iperf printed ("tcp connect failed: …", "read failed: …",
	// "WARNING: did not receive ack …"). iperf 2 exits 0 even after most of these.
	Errors []string `json:"errors,omitempty"`
}

// IperfInterval is one report line.
type IperfInterval struct {
	ID            string  `json:"id"` // "1", "3" or "SUM"
	Start         float64 `json:"start"`
	End           float64 `json:"end"`
	Bytes         int64   `json:"bytes"` // as printed (iperf rounds to 3 significant digits)
	BitsPerSecond float64 `json:"bits_per_second"`
	// UDP server columns.
	HasDatagrams bool    `json:"has_datagrams,omitempty"`
	JitterMs     float64 `json:"jitter_ms,omitempty"`
	Lost         int64   `json:"lost,omitempty"`
	Datagrams    int64   `json:"datagrams,omitempty"` // total expected, received + lost
}

// Received is the number of datagrams that arrived (Datagrams − Lost), 0 without UDP columns.
func (iv IperfInterval) Received() int64 {
	if !iv.HasDatagrams || iv.Lost > iv.Datagrams {
		return 0
	}
	return iv.Datagrams - iv.Lost
}

var (
	iperfLineRE = regexp.MustCompile(`^\[\s*(\d+|SUM)\]\s+(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s+sec\s+(\d+(?:\.\d+)?)\s+([KMGT]?Bytes)\s+(\d+(?:\.\d+)?)\s+([KMGT]?bits/sec)(.*)$`)
	iperfUDPRE  = regexp.MustCompile(`^\s+(\d+(?:\.\d+)?)\s+ms\s+(-?\d+)/\s*(\d+)\s+\(`)
	iperfSentRE = regexp.MustCompile(`^\[\s*\d+\]\s+Sent\s+(\d+)\s+datagrams`)
)

var iperfByteUnits = map[string]float64{"Bytes": 1, "KBytes": 1 << 10, "MBytes": 1 << 20, "GBytes": 1 << 30, "TBytes": 1 << 40}
var iperfBitUnits = map[string]float64{"bits/sec": 1, "Kbits/sec": 1e3, "Mbits/sec": 1e6, "Gbits/sec": 1e9, "Tbits/sec": 1e12}

// ParseIperf parses the text iperf 2 printed (stdout and stderr together). It fails only on
// output that is not iperf 2's: a report that moved no data parses fine with no Total.
func ParseIperf(out []byte) (*IperfReport, error) {
	r := &IperfReport{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	var lines []IperfInterval
	inServerReport := false
	sawHeader := false
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := strings.TrimRight(sc.Text(), "\r")
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "Client connecting to "):
			r.Role, sawHeader = "client", true
			r.Protocol = iperfProtocol(trimmed)
			continue
		case strings.HasPrefix(trimmed, "Server listening on "):
			r.Role, sawHeader = "server", true
			r.Protocol = iperfProtocol(trimmed)
			continue
		case strings.HasSuffix(trimmed, "Server Report:"):
			inServerReport = true
			continue
		case strings.Contains(trimmed, "failed:") || strings.Contains(trimmed, "WARNING:") ||
			strings.HasPrefix(trimmed, "error"):
			r.Errors = append(r.Errors, trimmed)
			continue
		}
		if m := iperfSentRE.FindStringSubmatch(trimmed); m != nil {
			n, err := strconv.ParseInt(m[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("iperf output line %d: datagram count %q: %w", lineNo, m[1], err)
			}
			r.SentDatagrams = n
			continue
		}
		m := iperfLineRE.FindStringSubmatch(trimmed)
		if m == nil {
			continue // headers, "connected with", out-of-order notes, blank lines
		}
		iv, err := parseIperfInterval(m)
		if err != nil {
			return nil, fmt.Errorf("iperf output line %d: %w", lineNo, err)
		}
		if inServerReport {
			r.ServerReport = &iv
			inServerReport = false
			continue
		}
		lines = append(lines, iv)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read iperf output: %w", err)
	}
	if !sawHeader {
		return nil, fmt.Errorf("not iperf 2 output: no \"Client connecting to\" or \"Server listening on\" line")
	}
	// The total is the last line that starts at 0 after at least one other line; a run shorter
	// than one interval prints a single line, which is both.
	for i := len(lines) - 1; i >= 0; i-- {
		if lines[i].Start == 0 && (i > 0 || len(lines) == 1) {
			total := lines[i]
			r.Total = &total
			if len(lines) > 1 {
				lines = append(lines[:i:i], lines[i+1:]...)
			}
			break
		}
	}
	r.Intervals = lines
	return r, nil
}

func iperfProtocol(line string) string {
	switch {
	case strings.Contains(line, "UDP port"):
		return "udp"
	case strings.Contains(line, "TCP port"):
		return "tcp"
	}
	return ""
}

func parseIperfInterval(m []string) (IperfInterval, error) {
	iv := IperfInterval{ID: m[1]}
	var err error
	if iv.Start, err = strconv.ParseFloat(m[2], 64); err != nil {
		return iv, fmt.Errorf("interval start %q: %w", m[2], err)
	}
	if iv.End, err = strconv.ParseFloat(m[3], 64); err != nil {
		return iv, fmt.Errorf("interval end %q: %w", m[3], err)
	}
	if iv.End < iv.Start {
		return iv, fmt.Errorf("interval %s-%s ends before it starts", m[2], m[3])
	}
	amount, err := strconv.ParseFloat(m[4], 64)
	if err != nil {
		return iv, fmt.Errorf("transfer %q: %w", m[4], err)
	}
	bytes := amount * iperfByteUnits[m[5]]
	if bytes > math.MaxInt64/2 {
		return iv, fmt.Errorf("transfer %s %s out of range", m[4], m[5])
	}
	iv.Bytes = int64(math.Round(bytes))
	rate, err := strconv.ParseFloat(m[6], 64)
	if err != nil {
		return iv, fmt.Errorf("bandwidth %q: %w", m[6], err)
	}
	iv.BitsPerSecond = rate * iperfBitUnits[m[7]]
	if u := iperfUDPRE.FindStringSubmatch(m[8]); u != nil {
		iv.HasDatagrams = true
		if iv.JitterMs, err = strconv.ParseFloat(u[1], 64); err != nil {
			return iv, fmt.Errorf("jitter %q: %w", u[1], err)
		}
		if iv.Lost, err = strconv.ParseInt(u[2], 10, 64); err != nil {
			return iv, fmt.Errorf("lost datagrams %q: %w", u[2], err)
		}
		if iv.Datagrams, err = strconv.ParseInt(u[3], 10, 64); err != nil {
			return iv, fmt.Errorf("total datagrams %q: %w", u[3], err)
		}
	}
	return iv, nil
}
