package harness

import (
	"strings"
	"testing"
)

func TestQEMUArgs(t *testing.T) {
	img := &Image{Initramfs: "/c/image/k/initramfs.cpio"}
	tests := []struct {
		name    string
		opts    BootOptions
		launch  qemuLaunch
		want    []string // substrings of the joined command line
		notWant []string
		wantErr string
	}{
		{
			name:   "defaults",
			opts:   BootOptions{KernelImage: "/c/Image", Image: img},
			launch: qemuLaunch{qmpSocket: "/t/qmp.sock", sshPort: 40022},
			want: []string{"-M virt -cpu cortex-a57 -smp 2 -accel tcg,thread=multi -m 1024 -nographic",
				"-kernel /c/Image -initrd /c/image/k/initramfs.cpio",
				"-append 'console=ttyAMA0 panic=-1 rdinit=/init'", "-no-reboot",
				"-qmp unix:/t/qmp.sock,server=on,wait=off",
				"-netdev user,id=mgmt,hostfwd=tcp:127.0.0.1:40022-:22",
				"-device virtio-net-pci,netdev=mgmt,mac=52:54:00:12:34:56,romfile="},
			notWant: []string{"tap", "virtio-serial"},
		},
		{
			name: "two test NICs",
			opts: BootOptions{KernelImage: "/c/Image", Image: img, NICs: []NIC{{Model: "mvneta"}, {Model: "virtio-net-pci", MAC: "02:00:00:00:00:01"}},
				CPU: "max", MemoryMB: 3072, Append: "page_owner=on"},
			launch: qemuLaunch{qmpSocket: "/t/q", sshPort: 1, tapFDs: []int{3, 4}},
			want: []string{"-cpu max", "-m 3072", "panic=-1 rdinit=/init page_owner=on'",
				"-netdev tap,id=t0,fd=3 -device mvneta,netdev=t0,mac=52:54:00:12:35:00",
				"-netdev tap,id=t1,fd=4 -device virtio-net-pci,netdev=t1,mac=02:00:00:00:00:01"},
		},
		{
			name:   "debug kernel",
			opts:   BootOptions{Kernel: &Kernel{Image: "/c/dbg/Image", Debug: true}, Image: img},
			launch: qemuLaunch{qmpSocket: "/t/q", sshPort: 2},
			want:   []string{"-kernel /c/dbg/Image", "rdinit=/init page_owner=on'"},
		},
		{
			name:   "ports",
			opts:   BootOptions{KernelImage: "/k", Image: img, Ports: []string{"ppkit.trace.0", "ppkit.trace.1"}},
			launch: qemuLaunch{qmpSocket: "/t/q", sshPort: 3, dir: "/t"},
			want: []string{"-device virtio-serial-pci,id=ppkitports",
				"-chardev file,id=port0,path=/t/port-ppkit.trace.0 -device virtserialport,bus=ppkitports.0,chardev=port0,name=ppkit.trace.0",
				"-chardev file,id=port1,path=/t/port-ppkit.trace.1 -device virtserialport,bus=ppkitports.0,chardev=port1,name=ppkit.trace.1"},
		},
		{
			// A board booted by U-Boot from a disk: it reboots instead of exiting, and a comma
			// in the disk's path is doubled.
			name:    "firmware and disk",
			opts:    BootOptions{KernelImage: "/c/Image", Image: img, Firmware: "/u/u-boot.bin", Disk: "/t/a,b/disk.img"},
			launch:  qemuLaunch{qmpSocket: "/t/q", sshPort: 4},
			want:    []string{"-bios /u/u-boot.bin", "-drive if=none,id=disk,format=raw,file=/t/a,,b/disk.img -device virtio-blk-pci,drive=disk"},
			notWant: []string{"-no-reboot", "-kernel", "-initrd", "-append"},
		},
		{name: "firmware without a disk", opts: BootOptions{Firmware: "/u/u-boot.bin"}, wantErr: "no disk"},
		{name: "a port name QEMU would misread", opts: BootOptions{KernelImage: "/k", Image: img, Ports: []string{"a,b"}}, wantErr: "lower-case"},
		{name: "too much memory", opts: BootOptions{KernelImage: "/k", Image: img, MemoryMB: 4096}, wantErr: "32-bit DMA"},
		{name: "no kernel", opts: BootOptions{Image: img}, wantErr: "no kernel"},
		{name: "NIC without model", opts: BootOptions{KernelImage: "/k", Image: img, NICs: []NIC{{}}},
			launch: qemuLaunch{tapFDs: []int{3}}, wantErr: "no device model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.defaults()
			args, err := qemuArgs(&tt.opts, tt.launch)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			line := shellJoin(args)
			for _, w := range tt.want {
				if !strings.Contains(line, w) {
					t.Errorf("command line lacks %q:\n%s", w, line)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(line, w) {
					t.Errorf("command line has %q:\n%s", w, line)
				}
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain": "plain", "": "''", "a b": "'a b'", "it's": `'it'\''s'`, "romfile=": "romfile=",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
