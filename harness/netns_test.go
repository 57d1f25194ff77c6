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

// TestDeleteNetns: deleteNetns (no child process, so that the Ctrl-C a terminal sends to
// ppkit's group cannot stop it; TestInterruptTestMulticast sends it) removes a namespace; one
// that is gone is no error, and a file in /run/netns with nothing mounted on it (an
// interrupted `ip netns add`) is removed.
func TestDeleteNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("network namespaces need root")
		}
		t.Skip("network namespaces need root")
	}
	name, err := addOwnedNetns()
	if err != nil {
		t.Fatal(err)
	}
	if err := deleteNetns(name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + name); !os.IsNotExist(err) {
		t.Fatalf("namespace %s still there: %v", name, err)
	}
	if err := deleteNetns(name); err != nil {
		t.Errorf("a namespace that is gone: %v", err)
	}
	half := owned.Name("net")
	if err := os.WriteFile("/run/netns/"+half, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := deleteNetns(half); err != nil {
		t.Errorf("a namespace file with nothing mounted: %v", err)
	}
	if _, err := os.Stat("/run/netns/" + half); !os.IsNotExist(err) {
		t.Errorf("%s still there", half)
	}
}
