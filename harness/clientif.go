package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// LinkState is what moving an interface into another namespace loses and Restore puts back:
// its addresses, whether it was up, its MTU and the routes through it that the kernel did not
// make itself.
type LinkState struct {
	Name   string
	Up     bool
	MTU    int
	Addrs  []string // "ADDR/PREFIX" (inet and inet6; kernel-made link-local and SLAAC ones left out)
	Routes [][]string
}

// ParseLinkState reads `ip -j addr show dev IFACE` and `ip -j route show dev IFACE` (IPv4 and
// IPv6 concatenated, each a JSON array).
func ParseLinkState(addrJSON, routeJSON []byte) (LinkState, error) {
	var links []struct {
		Name     string   `json:"ifname"`
		Flags    []string `json:"flags"`
		MTU      int      `json:"mtu"`
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			Prefixlen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
			Dynamic   bool   `json:"dynamic"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(addrJSON, &links); err != nil {
		return LinkState{}, fmt.Errorf("ip -j addr: %w", err)
	}
	if len(links) != 1 {
		return LinkState{}, fmt.Errorf("ip -j addr: want one interface, got %d", len(links))
	}
	l := links[0]
	st := LinkState{Name: l.Name, Up: slices.Contains(l.Flags, "UP"), MTU: l.MTU}
	for _, a := range l.AddrInfo {
		if a.Dynamic || (a.Family == "inet6" && a.Scope == "link") {
			continue // the kernel makes these again by itself
		}
		st.Addrs = append(st.Addrs, a.Local+"/"+strconv.Itoa(a.Prefixlen))
	}
	dec := json.NewDecoder(strings.NewReader(string(routeJSON)))
	for dec.More() {
		var routes []map[string]any
		if err := dec.Decode(&routes); err != nil {
			return LinkState{}, fmt.Errorf("ip -j route: %w", err)
		}
		for _, r := range routes {
			if p, _ := r["protocol"].(string); p == "kernel" || p == "ra" {
				continue
			}
			argv := []string{fmt.Sprint(r["dst"])}
			for _, k := range []string{"gateway", "metric", "scope", "protocol", "prefsrc"} {
				if v, ok := r[k]; ok {
					name := map[string]string{"gateway": "via", "prefsrc": "src", "protocol": "proto"}[k]
					if name == "" {
						name = k
					}
					argv = append(argv, name, fmt.Sprint(v))
				}
			}
			st.Routes = append(st.Routes, argv)
		}
	}
	return st, nil
}

// MovedInterface is a host interface moved into a network namespace of ppkit's for a run.
type MovedInterface struct {
	Before LinkState
	netns  string
}

// Netns is the namespace now holding the interface.
func (m *MovedInterface) Netns() string { return m.netns }

// MoveInterface moves the host's interface iface (the NIC cabled to a real board) into a new
// network namespace named for this process, after recording its state. The namespace sees
// nothing of the host's other interfaces, as the QEMU board's client namespace does. Restore
// moves it back; if this process is killed, the namespace's removal (RemoveLeftovers) returns a
// physical NIC to the host without its addresses.
func MoveInterface(iface string) (*MovedInterface, error) {
	if _, err := net.InterfaceByName(iface); err != nil {
		return nil, fmt.Errorf("client interface %s: %w (name the host's NIC cabled to the board, see ip link)", iface, err)
	}
	st, err := linkState("", iface)
	if err != nil {
		return nil, err
	}
	name, err := addOwnedNetns()
	if err != nil {
		return nil, err
	}
	if out, err := exec.Command("ip", "link", "set", "dev", iface, "netns", name).CombinedOutput(); err != nil {
		deleteNetns(name)
		return nil, fmt.Errorf("move %s into a client namespace: %w: %s", iface, err, strings.TrimSpace(string(out)))
	}
	return &MovedInterface{Before: st, netns: name}, nil
}

// Restore moves the interface back to the host's namespace, puts back its MTU, addresses,
// routes and up state, and removes the namespace. It may be called repeatedly.
func (m *MovedInterface) Restore() error {
	if m == nil || m.netns == "" {
		return nil
	}
	ns := m.netns
	var errs []error
	run := func(argv ...string) {
		cmd := exec.Command(argv[0], argv[1:]...)
		// A group of its own: the terminal's Ctrl-C to ppkit's group must not stop a restore.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out))))
		}
	}
	name := m.Before.Name
	run("ip", "-n", ns, "link", "set", "dev", name, "down")
	run("ip", "-n", ns, "link", "set", "dev", name, "netns", "1")
	if len(errs) > 0 {
		return fmt.Errorf("move %s back to the host: %w (it stays in namespace %s: ip -n %s link set dev %s netns 1)", name, errors.Join(errs...), ns, ns, name)
	}
	m.netns = ""
	run("ip", "link", "set", "dev", name, "mtu", strconv.Itoa(m.Before.MTU))
	if m.Before.Up {
		run("ip", "link", "set", "dev", name, "up")
	}
	for _, a := range m.Before.Addrs {
		run("ip", "addr", "replace", a, "dev", name)
	}
	for _, r := range m.Before.Routes {
		run(append([]string{"ip", "route", "replace"}, append(r, "dev", name)...)...)
	}
	if err := deleteNetns(ns); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("restore %s: %w", name, errors.Join(errs...))
	}
	return nil
}

// linkState records iface's state in namespace ns ("" for the host's).
func linkState(ns, iface string) (LinkState, error) {
	ip := func(args ...string) ([]byte, error) {
		if ns != "" {
			args = append([]string{"-n", ns}, args...)
		}
		out, err := exec.Command("ip", args...).Output()
		if err != nil {
			return nil, fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
		}
		return out, nil
	}
	addrs, err := ip("-j", "addr", "show", "dev", iface)
	if err != nil {
		return LinkState{}, err
	}
	r4, err := ip("-j", "-4", "route", "show", "dev", iface)
	if err != nil {
		return LinkState{}, err
	}
	r6, err := ip("-j", "-6", "route", "show", "dev", iface)
	if err != nil {
		return LinkState{}, err
	}
	return ParseLinkState(addrs, append(r4, r6...))
}

// CurrentLinkState records iface's state in the host's namespace (to check a Restore).
func CurrentLinkState(iface string) (LinkState, error) { return linkState("", iface) }

// RouteDevice is the host's interface that carries traffic to ip (ip route get).
func RouteDevice(ip string) (string, error) {
	out, err := exec.Command("ip", "-j", "route", "get", ip).Output()
	if err != nil {
		return "", fmt.Errorf("ip route get %s: %w", ip, err)
	}
	var r []struct {
		Dev string `json:"dev"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r) == 0 {
		return "", fmt.Errorf("ip route get %s: %q", ip, out)
	}
	return r[0].Dev, nil
}
