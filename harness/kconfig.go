package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"sort"
	"strings"
)

// KconfigValues maps CONFIG_ symbols to their values: "y", "m", a number or a quoted string, or
// "n" for a "# CONFIG_X is not set" line.
type KconfigValues map[string]string

// ParseKconfig reads a .config file or a config fragment. Comments other than "is not set" lines
// are ignored; a malformed line is an error naming it.
func ParseKconfig(data []byte) (KconfigValues, error) {
	vals := KconfigValues{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			rest := strings.TrimSpace(strings.TrimPrefix(line, "#"))
			if sym, ok := strings.CutSuffix(rest, " is not set"); ok && strings.HasPrefix(sym, "CONFIG_") && !strings.ContainsAny(sym, " \t") {
				vals[sym] = "n"
			}
			continue
		}
		sym, val, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(sym, "CONFIG_") || strings.ContainsAny(sym, " \t") || val == "" {
			return nil, fmt.Errorf("kconfig line %d: %q is neither CONFIG_X=value nor \"# CONFIG_X is not set\"", n, line)
		}
		vals[sym] = val
	}
	return vals, sc.Err()
}

// MissingKconfig returns, sorted, the wanted settings that the final .config does not carry, as
// "CONFIG_X=y (got n)" — the options Kconfig silently dropped because a dependency was unmet.
func MissingKconfig(wanted, final KconfigValues) []string {
	var missing []string
	for sym, want := range wanted {
		got, ok := final[sym]
		if !ok {
			got = "n"
		}
		if got != want {
			missing = append(missing, fmt.Sprintf("%s=%s (got %s)", sym, want, got))
		}
	}
	sort.Strings(missing)
	return missing
}
