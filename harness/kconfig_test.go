package harness

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseKconfig(t *testing.T) {
	got, err := ParseKconfig([]byte("# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n\nCONFIG_D=4\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := KconfigValues{"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": `"x y"`, "CONFIG_D": "4"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"CONFIG_A", "A=y", "CONFIG_A =y", "CONFIG_A="} {
		if _, err := ParseKconfig([]byte(bad)); err == nil {
			t.Errorf("ParseKconfig(%q) accepted a malformed line", bad)
		}
	}
}

func TestMergeKconfigAndMissing(t *testing.T) {
	base := "CONFIG_SLOB=y\n# CONFIG_SLUB is not set\n# CONFIG_NET is not set\nCONFIG_KEEP=y\n"
	fragment := "# CONFIG_SLOB is not set\nCONFIG_SLUB=y\nCONFIG_NET=y\nCONFIG_MVNETA=y\n"
	merged, err := MergeKconfig([]byte(base), []byte(fragment))
	if err != nil {
		t.Fatal(err)
	}
	vals, err := ParseKconfig(merged)
	if err != nil {
		t.Fatal(err)
	}
	want := KconfigValues{"CONFIG_SLOB": "n", "CONFIG_SLUB": "y", "CONFIG_NET": "y", "CONFIG_MVNETA": "y", "CONFIG_KEEP": "y"}
	if !reflect.DeepEqual(vals, want) {
		t.Errorf("merged %v, want %v", vals, want)
	}
	if strings.Count(string(merged), "CONFIG_SLOB") != 1 {
		t.Errorf("CONFIG_SLOB appears more than once:\n%s", merged)
	}
	// Kconfig dropped MVNETA (say ARCH_MVEBU was off) and kept SLOB.
	final := KconfigValues{"CONFIG_SLOB": "y", "CONFIG_SLUB": "y", "CONFIG_NET": "y"}
	wantFrag, _ := ParseKconfig([]byte(fragment))
	missing := MissingKconfig(wantFrag, final)
	if !reflect.DeepEqual(missing, []string{"CONFIG_MVNETA=y (got n)", "CONFIG_SLOB=n (got y)"}) {
		t.Errorf("missing = %q", missing)
	}
}

// The shipped fragments must parse, and the debug one must only add to the base one.
func TestShippedFragments(t *testing.T) {
	base, err := ParseKconfig(KernelConfigFragment(false))
	if err != nil {
		t.Fatal(err)
	}
	for _, sym := range []string{"CONFIG_MVNETA", "CONFIG_ARCH_MVEBU", "CONFIG_PAGE_POOL", "CONFIG_IP_MULTICAST",
		"CONFIG_PACKET", "CONFIG_VIRTIO_NET", "CONFIG_SERIAL_AMBA_PL011_CONSOLE", "CONFIG_BLK_DEV_INITRD",
		"CONFIG_FTRACE", "CONFIG_DEBUG_FS", "CONFIG_FIXED_PHY", "CONFIG_NETFILTER_XT_TARGET_TEE",
		"CONFIG_KPROBES", "CONFIG_KPROBE_EVENTS", "CONFIG_VIRTIO_CONSOLE"} {
		if base[sym] != "y" {
			t.Errorf("ppkit.config: %s=%q, want y", sym, base[sym])
		}
	}
	debug, err := ParseKconfig(KernelConfigFragment(true))
	if err != nil {
		t.Fatal(err)
	}
	if debug["CONFIG_KASAN"] != "y" || base["CONFIG_KASAN"] == "y" {
		t.Error("CONFIG_KASAN must be set by --debug only")
	}
}
