package harness

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"
)

// A real board boots ppkit's kernel the way its owner set it up: U-Boot's distro boot reading
// /boot/extlinux/extlinux.conf. `ppkit test --board --deploy` adds an entry for ppkit's kernel
// and makes it the default; the board's own entries stay. ppkit's files live in /boot/ppkit.

// BoardDir is where ppkit keeps its files on a board's /boot.
const BoardDir = "/boot/ppkit"

const (
	extlinuxConf     = "/boot/extlinux/extlinux.conf"
	extlinuxPrevious = extlinuxConf + ".ppkit-previous" // the file before ppkit's last switch
	extlinuxNew      = extlinuxConf + ".ppkit-new"
	// The board's own kernel config and loaded modules, saved at the first deploy: later
	// kernels are built from them, whatever kernel the board runs by then.
	boardBaseConfig  = BoardDir + "/base-config"
	boardBaseModules = BoardDir + "/base-modules"
	// mountBoot mounts /boot when the board's fstab has it and it is not mounted.
	mountBoot = `{ grep -qs ' /boot ' /proc/mounts || ! grep -qs '^[^#]*[[:space:]]/boot[[:space:]]' /etc/fstab || mount /boot; }`
)

// BoardKernelConfig reads the config ppkit builds a board's kernels from, and where it found
// it: the board's own config saved by an earlier deploy, else the running kernel's
// (/proc/config.gz, then /boot/config-$(uname -r), as Debian installs it). Modules are the
// board's loaded modules as saved or as /proc/modules lists them. A board with none of these
// gives a nil config: it runs a kernel built from ppkit's own config.
func BoardKernelConfig(ctx context.Context, r *Remote) (config, modules []byte, from string, err error) {
	script := mountBoot + ` 2>/dev/null
if [ -s ` + boardBaseConfig + ` ]; then echo ` + boardBaseConfig + `; base64 ` + boardBaseConfig + `; echo .; [ -f ` + boardBaseModules + ` ] && base64 ` + boardBaseModules + `
elif [ -r /proc/config.gz ]; then echo /proc/config.gz; zcat /proc/config.gz | base64; echo .; [ -r /proc/modules ] && base64 /proc/modules
elif [ -r /boot/config-$(uname -r) ]; then echo /boot/config-$(uname -r); base64 /boot/config-$(uname -r); echo .; [ -r /proc/modules ] && base64 /proc/modules
fi; true`
	out, err := r.Run(ctx, script)
	if err != nil {
		return nil, nil, "", fmt.Errorf("read the board's kernel config: %w", err)
	}
	from, rest, _ := strings.Cut(string(out), "\n")
	if from = strings.TrimSpace(from); from == "" {
		return nil, nil, "", nil
	}
	cfg, mods, _ := strings.Cut(rest, "\n.\n")
	if config, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(cfg), "")); err != nil {
		return nil, nil, "", fmt.Errorf("the board's kernel config %s: %w", from, err)
	}
	if modules, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(mods), "")); err != nil {
		return nil, nil, "", fmt.Errorf("the board's module list: %w", err)
	}
	if _, err := ParseKconfig(config); err != nil || !bytes.Contains(config, []byte("CONFIG_")) {
		return nil, nil, "", fmt.Errorf("the board's kernel config %s is not a kernel config", from)
	}
	return config, modules, from, nil
}

// BoardBuildID is the release and the build id of the kernel a board runs
// (/sys/kernel/notes).
func BoardBuildID(ctx context.Context, r *Remote) (release, id string, err error) {
	out, err := r.Run(ctx, "uname -r; base64 /sys/kernel/notes")
	if err != nil {
		return "", "", fmt.Errorf("read its kernel's release and build id: %w", err)
	}
	release, encoded, _ := strings.Cut(string(out), "\n")
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(encoded), ""))
	if err != nil {
		return "", "", fmt.Errorf("/sys/kernel/notes: %w", err)
	}
	id, err = NoteBuildID(raw)
	return strings.TrimSpace(release), id, err
}

// KernelBuildID is the build id of a built kernel (the one /sys/kernel/notes shows once it
// runs).
func KernelBuildID(k *Kernel) (string, error) {
	image, err := os.ReadFile(k.Image)
	if err != nil {
		return "", err
	}
	sysmap, err := os.ReadFile(k.SystemMap)
	if err != nil {
		return "", err
	}
	notes, err := KernelNotes(image, sysmap)
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w", k.Image, err)
	}
	id, err := NoteBuildID(notes)
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w", k.Image, err)
	}
	return id, nil
}

// DeployOptions says what Deploy saves on the board besides the kernel, and how long it waits.
type DeployOptions struct {
	// BaseConfig and BaseModules are saved as the board's own config when it has none saved
	// (BoardKernelConfig's result, when it came from the running kernel).
	BaseConfig, BaseModules []byte
	// BootTimeout is how long the board may take from the reboot to its SSH login (default 5 min).
	BootTimeout time.Duration
	Progress    io.Writer
}

// DeployError is a deploy that failed. Unless Err says how to put the board's previous boot
// entry back, it is back already.
type DeployError struct{ Err error }

func (e *DeployError) Error() string { return "deploy: " + e.Err.Error() }
func (e *DeployError) Unwrap() error { return e.Err }

// Deploy boots kernel k on board b: it copies the Image (and the board's device tree, under a
// new name) into BoardDir, adds an extlinux entry for them and makes it the default, reboots the
// board, waits for it and checks the build id it runs. Whatever fails before the board
// runs k, the board's previous extlinux.conf is put back and the copied files removed; only a board that does not come back is left to its owner, with the
// way back in the error. b is closed; the returned board is the new login (opts dials it).
func Deploy(ctx context.Context, b *SSHBoard, opts BoardOptions, k *Kernel, d DeployOptions) (_ *SSHBoard, err error) {
	progress := d.Progress
	if progress == nil {
		progress = io.Discard
	}
	if d.BootTimeout == 0 {
		d.BootTimeout = 5 * time.Minute
	}
	id, err := KernelBuildID(k)
	if err != nil {
		return nil, err
	}
	short := id
	if len(short) > 12 {
		short = short[:12]
	}
	label := "ppkit-" + short

	out, err := b.Run(ctx, mountBoot+`; grep -qs ' /boot ' /proc/mounts && echo separate || echo root
if [ -f `+extlinuxConf+` ]; then echo extlinux; cat `+extlinuxConf+`; elif [ -f /boot/boot.scr ]; then echo boot.scr; else echo none; fi`)
	if err != nil {
		return nil, fmt.Errorf("deploy: read the board's boot entry: %w", err)
	}
	layout, rest, _ := strings.Cut(string(out), "\n")
	kind, conf, _ := strings.Cut(rest, "\n")
	switch strings.TrimSpace(kind) {
	case "extlinux":
	case "boot.scr":
		return nil, &DeployError{Err: fmt.Errorf("board %s boots a U-Boot script (/boot/boot.scr), which ppkit does not edit: switch the board to extlinux (U-Boot's distro boot reads %s) or boot %s by hand", b.Address, extlinuxConf, k.Image)}
	default:
		return nil, &DeployError{Err: fmt.Errorf("board %s has no %s (is /boot mounted? ppkit mounts it when /etc/fstab lists it): set up U-Boot's distro boot with extlinux, or boot %s by hand", b.Address, extlinuxConf, k.Image)}
	}
	x, err := ParseExtlinux([]byte(conf))
	if err != nil {
		return nil, &DeployError{Err: fmt.Errorf("board %s: %s: %w", b.Address, extlinuxConf, err)}
	}
	// U-Boot reads paths from the root of the partition that holds extlinux/: /boot's own
	// when /boot is a file system of its own.
	bootPath := func(p string) string { // a path on the board as U-Boot names it
		if strings.TrimSpace(layout) == "separate" {
			return strings.TrimPrefix(p, "/boot")
		}
		return p
	}
	boardPath := func(p string) string { // a path in extlinux.conf as the board names it
		if strings.TrimSpace(layout) == "separate" {
			return path.Join("/boot", p)
		}
		return p
	}
	oldLabel, oldKernel, oldFDT := x.Default()
	image := BoardDir + "/Image-" + short
	fdt := ""
	copyFDT := ""
	if oldFDT != "" {
		fdt = BoardDir + "/" + strings.TrimSuffix(path.Base(oldFDT), ".dtb") + "-" + short + ".dtb"
		copyFDT = fmt.Sprintf("cp %s %s.part && mv %s.part %s && ", shellQuote(boardPath(oldFDT)), fdt, fdt, fdt)
	}
	newConf := x.WithDefault(label, bootPath(image), bootPath(fdt), "ppkit-")
	// The files of ppkit's earlier entries, removed once the board runs k: only ppkit's own,
	// in BoardDir, whatever an entry's name says.
	var stale []string
	for _, l := range x.labels {
		if !strings.HasPrefix(l.name, "ppkit-") || l.name == label {
			continue
		}
		for _, f := range []string{l.kernel, l.fdt} {
			if f = boardPath(f); f != "" && path.Dir(path.Clean(f)) == BoardDir && f != image && f != fdt {
				stale = append(stale, shellQuote(f))
			}
		}
	}
	fmt.Fprintf(progress, "deploy: board %s boots %q (%s); adding %q (%s) as its default entry\n", b.Address, oldLabel, oldKernel, label, bootPath(image))

	// From here on the board's /boot changes: undo what was done on any failure.
	switched, savedBase := false, false
	defer func() {
		if err == nil {
			return
		}
		var de *DeployError
		if errors.As(err, &de) {
			return // decided where it failed
		}
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		undo := "cd / && rm -f " + BoardDir + "/*.part " + extlinuxNew + "; "
		if switched {
			undo += "mv " + extlinuxPrevious + " " + extlinuxConf + " && "
		}
		if savedBase {
			undo += "rm -f " + boardBaseConfig + " " + boardBaseModules + "; "
		}
		undo += "rm -f " + image + " " + fdt + "; rmdir " + BoardDir + " 2>/dev/null; sync"
		if _, uerr := b.Run(rctx, undo); uerr != nil {
			err = &DeployError{Err: fmt.Errorf("%w; putting the board's previous boot entry back failed too (%v): on the board, run: %s", err, uerr, undo)}
			return
		}
		err = &DeployError{Err: err}
	}()

	// The Image through the login's stdin: no scp needed, and a full /boot is cat's error.
	f, err := os.Open(k.Image)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var stderr bytes.Buffer
	fmt.Fprintf(progress, "deploy: copying %s to %s\n", k.Image, image)
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// The size checked before the rename: a copy cut short (Ctrl-C closes the session, and
	// cat sees only the end of its input) never takes the Image's name.
	status, err := b.Exec(ctx, fmt.Sprintf("mkdir -p %s && cat > %s.part && [ $(wc -c < %s.part) -eq %d ] && mv %s.part %s && %ssync",
		BoardDir, image, image, st.Size(), image, image, copyFDT), f, io.Discard, &stderr)
	if err != nil {
		return nil, fmt.Errorf("copy the kernel to %s: %w", BoardDir, err)
	}
	if status != 0 {
		return nil, fmt.Errorf("copy the kernel to the board's %s: %s", BoardDir, strings.TrimSpace(stderr.String()))
	}
	if len(d.BaseConfig) > 0 {
		// Through stdin too: dropbear refuses command lines over 9000 bytes.
		if out, err := b.Run(ctx, "[ -s "+boardBaseConfig+" ] && echo saved; true"); err != nil {
			return nil, err
		} else if strings.TrimSpace(string(out)) != "saved" {
			savedBase = true
			if err := writeBoardFile(ctx, b.Remote, boardBaseModules, d.BaseModules); err != nil {
				return nil, err
			}
			if err := writeBoardFile(ctx, b.Remote, boardBaseConfig, d.BaseConfig); err != nil {
				return nil, err
			}
		}
	}
	stderr.Reset()
	status, err = b.Exec(ctx, "cat > "+extlinuxNew+" && cp -p "+extlinuxConf+" "+extlinuxPrevious+" && sync && mv "+extlinuxNew+" "+extlinuxConf+" && sync",
		bytes.NewReader(newConf), io.Discard, &stderr)
	if err == nil && status != 0 {
		err = fmt.Errorf("%s", strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		return nil, fmt.Errorf("switch the boot entry in %s: %w", extlinuxConf, err)
	}
	switched = true

	before, err := b.Run(ctx, "cat /proc/sys/kernel/random/boot_id")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "deploy: rebooting %s into %s\n", b.Address, label)
	// Detached, so that the command returns before the login goes down.
	if _, err := b.Run(ctx, "(sleep 1; reboot) </dev/null >/dev/null 2>&1 &"); err != nil {
		return nil, fmt.Errorf("reboot: %w", err)
	}
	b.Close()
	nb, err := waitReboot(ctx, opts, strings.TrimSpace(string(before)), d.BootTimeout, progress)
	if err != nil {
		return nil, &DeployError{Err: fmt.Errorf("board %s after its reboot into %s: %w; if it does not come back, power-cycle it into U-Boot and boot its previous entry %q: ppkit kept the previous %s as %s (mv it back)",
			opts.URL, label, err, oldLabel, extlinuxConf, extlinuxPrevious)}
	}
	b = nb
	release, got, err := BoardBuildID(ctx, b.Remote)
	if err != nil {
		return nil, err
	}
	if got != id {
		b.Run(ctx, mountBoot) // the undo needs /boot
		return nil, fmt.Errorf("board %s came back running %s (build id %s), not %s (%s): U-Boot did not boot the new entry (it read another extlinux.conf than the one in the board's /boot, or fell back to another label); check the board's serial console",
			b.Address, release, got, label, id)
	}
	fmt.Fprintf(progress, "deploy: %s runs %s (build id %s)\n", b.Address, release, id)
	if len(stale) > 0 {
		// Earlier ppkit kernels, now out of every entry.
		if _, err := b.Run(ctx, mountBoot+" && cd / && rm -f "+strings.Join(stale, " ")+" "+BoardDir+"/*.part; sync"); err != nil {
			fmt.Fprintf(progress, "deploy: could not remove the earlier kernels %s: %v\n", strings.Join(stale, " "), err)
		}
	}
	return b, nil
}

// waitReboot logs into the board again once it has booted anew (another boot_id).
func waitReboot(ctx context.Context, opts BoardOptions, before string, timeout time.Duration, progress io.Writer) (*SSHBoard, error) {
	deadline := time.Now().Add(timeout)
	opts.Progress = nil
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		b, err := DialBoard(dctx, opts)
		if err != nil && strings.Contains(err.Error(), "host key changed") {
			cancel()
			return nil, err // another machine at the board's address: waiting will not help
		}
		if err == nil {
			var out []byte
			out, err = b.Run(dctx, "cat /proc/sys/kernel/random/boot_id")
			if err == nil && strings.TrimSpace(string(out)) != before {
				cancel()
				return b, nil
			}
			b.Close()
			if err == nil {
				err = errors.New("it has not rebooted yet")
			}
		}
		cancel()
		last = err
	}
	return nil, fmt.Errorf("no login within %s (last: %v)", timeout, last)
}

// writeBoardFile writes data to a file on the board, whole or not at all.
func writeBoardFile(ctx context.Context, r *Remote, file string, data []byte) error {
	var stderr bytes.Buffer
	status, err := r.Exec(ctx, "cat > "+file+".part && mv "+file+".part "+file, bytes.NewReader(data), io.Discard, &stderr)
	if err == nil && status != 0 {
		err = fmt.Errorf("%s", strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		return fmt.Errorf("write %s on the board: %w", file, err)
	}
	return nil
}
