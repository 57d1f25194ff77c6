package harness

import (
	"os"
	"reflect"
	"testing"
)

// Real `ip -j` output of a veth with two addresses, a static route and the kernel's own.
func TestParseLinkState(t *testing.T) {
	addr, err := os.ReadFile("testdata/ip-json/veth-up.addr.json")
	if err != nil {
		t.Fatal(err)
	}
	route, err := os.ReadFile("testdata/ip-json/veth-up.route.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseLinkState(addr, route)
	if err != nil {
		t.Fatal(err)
	}
	want := LinkState{Name: "eth9", Up: true, MTU: 1400,
		Addrs:  []string{"198.51.100.7/24", "2001:db8::7/64"},
		Routes: [][]string{{"203.0.113.0/24", "via", "198.51.100.1", "metric", "50"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseLinkState:\n got %+v\nwant %+v", got, want)
	}
	if _, err := ParseLinkState([]byte("[]"), nil); err == nil {
		t.Error("no interface: no error")
	}
	if _, err := ParseLinkState(addr, []byte("[{")); err == nil {
		t.Error("cut-off routes: no error")
	}
}

func FuzzParseLinkState(f *testing.F) {
	addr, _ := os.ReadFile("testdata/ip-json/veth-up.addr.json")
	route, _ := os.ReadFile("testdata/ip-json/veth-up.route.json")
	f.Add(addr, route)
	f.Fuzz(func(t *testing.T, a, r []byte) { ParseLinkState(a, r) })
}
