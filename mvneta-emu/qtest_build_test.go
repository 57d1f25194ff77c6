//go:build !e2e

package mvnetaemu

// Without the e2e tag the qtest tests use a cached QEMU and never build one (10+ minutes).
const buildQEMUInTests = false
