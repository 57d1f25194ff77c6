// Package harness turns a kernel series into a running arm64 guest and talks to it: it builds the
// kernel (out of tree, cached by input hash, through ppkit's own work tree so the user's tree is
// never touched), assembles the guest initramfs from Debian arm64 packages, boots QEMU's virt
// board under QMP control, runs commands and copies files over SSH with a pinned host key, and
// reads the serial console for kernel reports (oops, BUG, WARNING, KASAN, stalls, panics).
//
// Everything the harness starts (QEMU, network namespaces, tap devices, temporary directories)
// is removed when the VM is closed, including after a failure, a timeout or a cancelled context.
package harness
