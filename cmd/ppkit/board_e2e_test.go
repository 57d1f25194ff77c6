//go:build e2e

package main

// `ppkit test --board`: the procedures on a real board reached over SSH. The board here is a
// QEMU guest that ppkit is told nothing about but its SSH address: it runs the series kernel
// (booted by this test through the harness, as a developer boots their Espressobin), its
// management link is QEMU's user network, and its mvneta NIC's tap sits in the host's namespace
// with an address, standing for the PC's NIC cabled to the board.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ppkit/ppkit/harness"
	"github.com/ppkit/ppkit/internal/cachedir"
	"github.com/ppkit/ppkit/tests/procedure"
	"github.com/ppkit/ppkit/tests/verdict"
	"golang.org/x/crypto/ssh"
)

// cabledBoard boots the series kernel with one mvneta NIC and moves its tap into the host's
// namespace as name, down, with a TEST-NET-2 address that nothing routes to (so no traffic
// leaves): the PC's NIC cabled to the board. The VM's Close removes everything.
func cabledBoard(t *testing.T, name string) (*harness.VM, harness.LinkState) {
	t.Helper()
	k := procedure.Kernel{Series: filepath.Join(checkoutRoot(t), "patches")}
	spec := (&procedure.HarnessLauncher{}).Spec(k, testWriter{t})
	spec.Boot.NICs = spec.Boot.NICs[:1] // a real board has no second test NIC
	spec.Boot.Ports = nil               // nor trace ports: its trace leaves as text over SSH
	vm, err := harness.Prepare(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm, cable(t, vm, name)
}

// cable moves the VM's mvneta tap into the host's namespace as name, down, with a TEST-NET-2
// address: the PC's NIC cabled to the board. It returns the link's state.
func cable(t *testing.T, vm *harness.VM, name string) harness.LinkState {
	t.Helper()
	ns := vm.NetNS()
	for _, argv := range [][]string{
		{"ip", "-n", ns, "link", "set", "dev", vm.Taps()[0], "name", name},
		{"ip", "-n", ns, "link", "set", "dev", name, "netns", "1"},
		{"ip", "addr", "add", "198.51.100.7/32", "dev", name},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	before, err := harness.CurrentLinkState(name)
	if err != nil {
		t.Fatal(err)
	}
	if before.Up || len(before.Addrs) != 1 {
		t.Fatalf("the cabled NIC before the run: %+v", before)
	}
	return before
}

// leftoversBut is r.leftovers() without the cabled NIC, which belongs in the host's namespace.
func leftoversBut(r *ppkitRun, tap string) []string {
	var out []string
	for _, l := range r.leftovers() {
		if strings.HasPrefix(l, "tap in the host namespace") {
			links, _ := exec.Command("ip", "-o", "link", "show", "type", "tun").Output()
			for _, link := range strings.Split(strings.TrimSpace(string(links)), "\n") {
				if link != "" && !strings.Contains(link, " "+tap+":") {
					out = append(out, "tap in the host namespace: "+link)
				}
			}
			continue
		}
		out = append(out, l)
	}
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// userHome is a home directory whose ~/.ssh/id_ed25519 is the key the board authorizes: the
// developer's key, as ppkit finds it. Its ~/.config/ppkit/known_hosts starts empty.
func userHome(t *testing.T, vm *harness.VM) string {
	t.Helper()
	home := t.TempDir()
	key, err := os.ReadFile(filepath.Join(vm.Image().Dir, "id_ed25519"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	if err := os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	return home
}

func TestE2EBoardOverSSH(t *testing.T) {
	needBoard(t)
	tap := fmt.Sprintf("ppkb%d", os.Getpid()%100000)
	vm, before := cabledBoard(t, tap)
	home := userHome(t, vm)
	url := fmt.Sprintf("ssh://root@127.0.0.1:%d", vm.SSHPort())
	cache, err := cachedir.Root() // resolved with the real HOME: the kernel is built once
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=", "SSH_AUTH_SOCK=", "PPKIT_CACHE=" + cache}
	cabledBack := func(when string) {
		t.Helper()
		after, err := harness.CurrentLinkState(tap)
		if err != nil {
			t.Fatalf("%s: the cabled NIC is not back in the host's namespace: %v", when, err)
		}
		if !reflect.DeepEqual(after, before) {
			t.Errorf("%s: the cabled NIC came back as %+v, was %+v", when, after, before)
		}
	}

	t.Run("multicast and tcp pass", func(t *testing.T) {
		report := t.TempDir()
		r := startPPKitEnv(t, env, "test", "multicast", "tcp", "--time", "5s", "--board", url, "--client-if", tap, "--report", report)
		<-r.done
		if r.err != nil {
			t.Fatalf("ppkit test --board: %v\n%s", r.err, lastLinesOf(r.stderr(), 60))
		}
		t.Logf("ppkit test --board:\n%s", r.stderr())
		if !strings.Contains(r.stderr(), "pinned its host key") {
			t.Errorf("first login: no pinned host key in:\n%s", lastLinesOf(r.stderr(), 40))
		}
		data, err := os.ReadFile(filepath.Join(report, "results.json"))
		if err != nil {
			t.Fatal(err)
		}
		var s verdict.Summary
		if err := json.Unmarshal(data, &s); err != nil {
			t.Fatal(err)
		}
		if !s.Pass || len(s.Results) != 2 || !strings.HasPrefix(s.Board, url) {
			t.Errorf("summary: pass %v, %d results, board %q", s.Pass, len(s.Results), s.Board)
		}
		for _, res := range s.Results {
			if res.Verdict != verdict.VerdictPass || res.Traffic.Bytes == 0 {
				t.Errorf("%s: %s, %d bytes received", res.Procedure, res.Verdict, res.Traffic.Bytes)
			}
		}
		html, _ := os.ReadFile(filepath.Join(report, "index.html"))
		if !strings.Contains(string(html), "Board: "+url) {
			t.Errorf("the HTML report does not name the board %s", url)
		}
		cabledBack("after the run")
		if left := leftoversBut(r, tap); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})

	t.Run("Ctrl-C during the traffic", func(t *testing.T) {
		r := startPPKitEnv(t, env, "test", "tcp", "--time", "30s", "--board", url, "--client-if", tap)
		if !r.waitFor("traffic for", 3*time.Minute) {
			t.Fatalf("no traffic:\n%s", lastLinesOf(r.stderr(), 30))
		}
		time.Sleep(2 * time.Second)
		syscall.Kill(r.cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("ppkit still running 30 s after SIGINT:\n%s", lastLinesOf(r.stderr(), 30))
		}
		t.Logf("interrupted:\n%s", lastLinesOf(r.stderr(), 25))
		if code := r.cmd.ProcessState.ExitCode(); code != 130 {
			t.Errorf("exit %d after SIGINT, want 130", code)
		}
		cabledBack("after Ctrl-C")
		if left := leftoversBut(r, tap); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})

	t.Run("a board whose host key changed is refused", func(t *testing.T) {
		known := filepath.Join(home, ".config", "ppkit", "known_hosts")
		data, err := os.ReadFile(known)
		if err != nil {
			t.Fatal(err)
		}
		// Another ed25519 key for the same address: the board "was reinstalled".
		line := strings.Fields(string(data))
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		other, err := ssh.NewPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(known, []byte(line[0]+" "+string(ssh.MarshalAuthorizedKey(other))), 0o600); err != nil {
			t.Fatal(err)
		}
		r := startPPKitEnv(t, env, "test", "multicast", "--board", url, "--client-if", tap)
		<-r.done
		out := r.stderr()
		t.Logf("refused:\n%s", out)
		if code := r.cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(out, "its host key changed") || !strings.Contains(out, "delete that line") {
			t.Errorf("exit %d, want 2 and the changed key named:\n%s", code, lastLinesOf(out, 20))
		}
		if strings.Contains(out, "traffic for") {
			t.Errorf("traffic ran on a board whose key changed")
		}
		cabledBack("after the refusal")
	})
}
