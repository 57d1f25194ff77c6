//go:build e2e

package mvnetaemu

// With the e2e tag (make test) the qtest tests build the mvneta QEMU if the cache has none.
const buildQEMUInTests = true
