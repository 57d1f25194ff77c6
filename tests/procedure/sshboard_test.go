package procedure

import (
	"testing"
)

func TestLoginArrivesOn(t *testing.T) {
	// `echo "$SSH_CONNECTION"; ip -o addr show dev IFACE` as a board prints it.
	const eth0 = "2: eth0    inet 192.0.2.7/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever preferred_lft forever\n" +
		"2: eth0    inet6 fe80::5054:ff:fe12:3500/64 scope link \\       valid_lft forever preferred_lft forever\n"
	tests := []struct {
		name, out string
		want      bool
	}{
		{"login over the mvneta port", "192.0.2.1 51234 192.0.2.7 22\n" + eth0, true},
		{"login over another interface", "10.0.2.2 40000 10.0.2.15 22\n" + eth0, false},
		{"a longer address with the same start", "192.0.2.1 51234 192.0.2.70 22\n" + eth0, false},
		{"login over IPv6 link-local on the port", "fe80::1 51234 fe80::5054:ff:fe12:3500 22\n" + eth0, true},
		{"the port has no address", "10.0.2.2 40000 10.0.2.15 22\n", false},
		{"no SSH_CONNECTION", "\n" + eth0, false},
	}
	for _, tc := range tests {
		if got := loginArrivesOn(tc.out); got != tc.want {
			t.Errorf("%s: loginArrivesOn = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNeedsPeer(t *testing.T) {
	all := Procedures()
	for _, name := range DefaultProcedures {
		if got, want := NeedsPeer(all[name]), name == "forward"; got != want {
			t.Errorf("NeedsPeer(%s) = %v, want %v", name, got, want)
		}
	}
}
