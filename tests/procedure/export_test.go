package procedure

// The scripted board of fakeboard_test.go, for the external test of the mutation suite
// (mutation_test.go).
var (
	FastTimers = fastTimers
	OKModel    = okModel
)

// NewFakeTestbed is a scripted board with its client; its pool reports leak pages inflight
// after it is destroyed (a kernel failure when leak > 0).
func NewFakeTestbed(leak int64) Testbed {
	b := newFakeBoard()
	b.leak = leak
	return &fakeTestbed{board: b, client: &fakeClient{}}
}
