package harness

import (
	"os"
	"os/exec"
	"testing"

	"github.com/ppkit/ppkit/internal/owned"
)

// TestTestNetOwnNamespace: a NIC with OwnNetns gets a namespace of its own, named for this
// process like the shared one (so Abandon and the next run's RemoveLeftovers find it), and
// close removes both. No QEMU: the taps live while the test holds their descriptors.
func TestTestNetOwnNamespace(t *testing.T) {
	if _, err := exec.LookPath("ip"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ip not found (run harness/install-deps.sh)")
		}
		t.Skip("ip not found (run harness/install-deps.sh)")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("test NICs need root")
		}
		t.Skip("test NICs need root")
	}
	tn, err := newTestNet([]NIC{{Model: "a"}, {Model: "b", OwnNetns: true}, {Model: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.close()
	if len(tn.names) != 2 || len(tn.taps) != 3 {
		t.Fatalf("namespaces %v, taps %v: want 2 namespaces and 3 taps", tn.names, tn.taps)
	}
	shared, own := tn.netnsOf(0), tn.netnsOf(1)
	if shared == own || tn.netnsOf(2) != shared {
		t.Errorf("taps in %s, %s, %s: want the second alone", tn.netnsOf(0), tn.netnsOf(1), tn.netnsOf(2))
	}
	for _, ns := range tn.names {
		if kind, pid, _, ok := owned.Parse(ns); !ok || kind != "net" || pid != os.Getpid() {
			t.Errorf("namespace %s is not named for this process (owned.Parse: %q %d %v)", ns, kind, pid, ok)
		}
	}
	for i, tap := range tn.taps {
		for _, ns := range tn.names {
			err := exec.Command("ip", "-n", ns, "link", "show", tap).Run()
			if in := ns == tn.netnsOf(i); (err == nil) != in {
				t.Errorf("tap %s in %s: %v, want present %v", tap, ns, err, in)
			}
		}
	}
	if err := tn.close(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range tn.names {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			t.Errorf("namespace %s left after close", ns)
		}
	}
}
