package harness

import (
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// DefaultQEMU is the QEMU binary used unless BootOptions.QEMU says otherwise.
const DefaultQEMU = "qemu-system-aarch64"

// MaxMemoryMB is the guest RAM limit: mvneta's DMA mask is 32-bit, and above 3 GiB of RAM the
// guest would bounce its DMA through swiotlb.
const MaxMemoryMB = 3072

// NIC is one extra test NIC: a QEMU device model attached to a tap device inside the VM's test
// network namespace.
type NIC struct {
	Model string // QEMU -device model, e.g. "mvneta" or "virtio-net-pci"
	MAC   string // default 52:54:00:12:35:0N
	// OwnNetns puts the NIC's tap in a network namespace of its own (VM.NetNSOf) instead of the
	// shared one: a client there reaches the other NICs' clients only through the guest, which
	// then routes between them.
	OwnNetns bool
}

// ManagementMAC is the MAC address of the guest's management NIC (virtio-net on QEMU's user
// network, SSH forwarded from the host): the guest's init finds it by this address, since test
// NICs may be virtio-net too.
const ManagementMAC = "52:54:00:12:34:56"

// BootOptions says how to boot a guest.
type BootOptions struct {
	Kernel *Kernel // or KernelImage
	Image  *Image

	KernelImage string // an Image file, when Kernel is nil
	QEMU        string // binary (default DefaultQEMU); the mvneta-emu build passes its own
	CPU         string // default cortex-a57
	SMP         int    // default 2
	MemoryMB    int    // default 1024, at most MaxMemoryMB
	Append      string // extra kernel command line
	NICs        []NIC
	// Ports are virtio-serial ports (on one virtio-serial-pci controller) whose bytes QEMU
	// writes into a host file each (VM.PortFile): a way out of the guest beside SSH and the
	// NIC under test, for bulk data such as the raw trace. The guest finds a port by its name
	// in /sys/class/virtio-ports/vportNpM/name; its device is /dev/vportNpM. Names are
	// lower-case letters, digits and dots.
	Ports []string
	// Firmware boots the board through a firmware (QEMU's -bios) from Disk, a raw disk image on
	// a virtio-blk device, instead of QEMU's loader: U-Boot reading the disk's
	// extlinux/extlinux.conf, as a real board boots. Kernel, Image and Append are then the
	// disk's business, and a reboot restarts the firmware instead of ending QEMU.
	Firmware string
	Disk     string

	BootTimeout    time.Duration // QEMU start to SSH ready (default 90s)
	CommandTimeout time.Duration // default timeout of Run/CopyTo/CopyFrom when ctx has none (default 10m)
	QMPTimeout     time.Duration // per QMP command (default 10s)
	// PoweroffTimeout is how long Poweroff waits for the guest to power off before QMP quit
	// (default 30s).
	PoweroffTimeout time.Duration

	// Console receives a live copy of the serial console (nil: none). It is always kept in
	// memory and in console.log in the VM's directory as well.
	Console  io.Writer
	Progress io.Writer
}

func (o *BootOptions) defaults() {
	if o.QEMU == "" {
		o.QEMU = DefaultQEMU
	}
	if o.CPU == "" {
		o.CPU = "cortex-a57"
	}
	if o.SMP == 0 {
		o.SMP = 2
	}
	if o.MemoryMB == 0 {
		o.MemoryMB = 1024
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 90 * time.Second
	}
	if o.CommandTimeout == 0 {
		o.CommandTimeout = 10 * time.Minute
	}
	if o.QMPTimeout == 0 {
		o.QMPTimeout = 10 * time.Second
	}
	if o.PoweroffTimeout == 0 {
		o.PoweroffTimeout = 30 * time.Second
	}
	if o.KernelImage == "" && o.Kernel != nil {
		o.KernelImage = o.Kernel.Image
	}
}

// qemuLaunch is what the command line depends on besides the options: paths and ports chosen at
// boot time.
type qemuLaunch struct {
	qmpSocket string
	sshPort   int
	tapFDs    []int  // file descriptor numbers in QEMU, one per NIC
	dir       string // the VM's directory, where the ports' files are
}

// portFile is where QEMU writes what the guest sends on port name.
func portFile(dir, name string) string { return filepath.Join(dir, "port-"+name) }

var portNameRE = regexp.MustCompile(`^[a-z0-9.]+$`)

// KernelCommandLine is the guest kernel's command line: PL011 console, and a panic that makes
// QEMU exit at once (panic=-1 with -no-reboot) so that the report is the console's last word.
func KernelCommandLine(extra string) string {
	cl := "console=ttyAMA0 panic=-1 rdinit=/init"
	if extra = strings.TrimSpace(extra); extra != "" {
		cl += " " + extra
	}
	return cl
}

// qemuArgs returns QEMU's arguments (without the binary).
func qemuArgs(o *BootOptions, l qemuLaunch) ([]string, error) {
	if o.MemoryMB > MaxMemoryMB {
		return nil, fmt.Errorf("guest memory %d MiB is above %d MiB (mvneta's 32-bit DMA mask)", o.MemoryMB, MaxMemoryMB)
	}
	if o.Firmware != "" && o.Disk == "" {
		return nil, fmt.Errorf("firmware %s: no disk to boot from", o.Firmware)
	}
	if o.Firmware == "" && o.KernelImage == "" {
		return nil, fmt.Errorf("no kernel image to boot")
	}
	if o.Firmware == "" && (o.Image == nil || o.Image.Initramfs == "") {
		return nil, fmt.Errorf("no guest image to boot")
	}
	extra := o.Append
	if o.Kernel != nil && o.Kernel.Debug {
		extra = "page_owner=on " + extra
	}
	if len(l.tapFDs) != len(o.NICs) {
		return nil, fmt.Errorf("internal: %d tap descriptors for %d NICs", len(l.tapFDs), len(o.NICs))
	}
	args := []string{
		"-M", "virt", "-cpu", o.CPU, "-smp", fmt.Sprint(o.SMP), "-accel", "tcg,thread=multi",
		"-m", fmt.Sprint(o.MemoryMB), "-nographic", "-monitor", "none", "-serial", "stdio",
	}
	if o.Firmware == "" {
		args = append(args, "-no-reboot", "-kernel", o.KernelImage, "-initrd", o.Image.Initramfs, "-append", KernelCommandLine(extra))
	} else {
		args = append(args, "-bios", o.Firmware,
			// A comma in an option's value is written twice (QEMU's option syntax).
			"-drive", "if=none,id=disk,format=raw,file="+strings.ReplaceAll(o.Disk, ",", ",,"), "-device", "virtio-blk-pci,drive=disk")
	}
	args = append(args,
		"-qmp", "unix:"+l.qmpSocket+",server=on,wait=off",
		// A second monitor for the developer (and the tests): ppkit holds the first.
		"-qmp", "unix:"+userQMPSocket(l.qmpSocket)+",server=on,wait=off",
		"-netdev", fmt.Sprintf("user,id=mgmt,hostfwd=tcp:127.0.0.1:%d-:22", l.sshPort),
		"-device", "virtio-net-pci,netdev=mgmt,mac="+ManagementMAC+",romfile=",
		"-device", "virtio-rng-pci",
	)
	for i, nic := range o.NICs {
		if nic.Model == "" {
			return nil, fmt.Errorf("test NIC %d: no device model", i)
		}
		mac := nic.MAC
		if mac == "" {
			mac = fmt.Sprintf("52:54:00:12:35:%02x", i)
		}
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=t%d,fd=%d", i, l.tapFDs[i]),
			"-device", fmt.Sprintf("%s,netdev=t%d,mac=%s", nic.Model, i, mac))
	}
	if len(o.Ports) > 0 {
		args = append(args, "-device", "virtio-serial-pci,id=ppkitports")
	}
	for i, name := range o.Ports {
		if !portNameRE.MatchString(name) {
			return nil, fmt.Errorf("port %q: want lower-case letters, digits and dots", name)
		}
		args = append(args,
			"-chardev", fmt.Sprintf("file,id=port%d,path=%s", i, portFile(l.dir, name)),
			"-device", fmt.Sprintf("virtserialport,bus=ppkitports.0,chardev=port%d,name=%s", i, name))
	}
	return args, nil
}

// userQMPSocket is the QMP socket ppkit leaves free, beside its own.
func userQMPSocket(own string) string { return filepath.Join(filepath.Dir(own), "qmp-user.sock") }

// shellQuote quotes a word for a POSIX shell, so that printed command lines can be pasted.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shellJoin(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = shellQuote(w)
	}
	return strings.Join(q, " ")
}
