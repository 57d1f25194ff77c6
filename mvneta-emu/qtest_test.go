package mvnetaemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ppkit/ppkit/internal/syncbuf"
)

// This file drives the model through QEMU's qtest protocol: no guest, no kernel. QEMU runs the
// virt machine with the qtest accelerator, one mvneta on the platform bus, and a UDP socket
// netdev whose other end is this test, so every frame the model sends arrives here and every
// frame the test sends lands in the model's RX rings.

const (
	nicBase   = 0x0c000000 // first device on virt's platform bus
	nicIRQ    = 112        // virt's platform bus SPIs start at 112; GIC input number
	ramBase   = 0x40000000
	rxRing    = ramBase + 0x100000
	txRing    = ramBase + 0x110000
	rxBufBase = ramBase + 0x200000
	txBufBase = ramBase + 0x400000
	notRAM    = 0xfff00000 // nothing is mapped there on virt with 256 MiB of RAM
	flashBase = 0x1000     // inside virt's first pflash (0 to 64 MiB): a device, not RAM
)

// Register offsets used by the tests (the model's names, from the 5.10 driver).
const (
	rRXQConfig    = 0x1400
	rRXQBase      = 0x1480
	rRXQSize      = 0x14a0
	rRXQThreshold = 0x14c0
	rRXQStatus    = 0x14e0
	rRXQUpdate    = 0x1500
	rPortRXReset  = 0x1cc0
	rPortConfig   = 0x2400
	rMACLow       = 0x2414
	rMACHigh      = 0x2418
	rPortStatus   = 0x2444
	rTXQCmd       = 0x2448
	rRXTimeCoal   = 0x2580
	rNewCause     = 0x25a0
	rNewMask      = 0x25a4
	rMiscCause    = 0x25b0
	rMiscMask     = 0x25b4
	rRXQCmd       = 0x2680
	rGMACCtrl0    = 0x2c00
	rGMACCtrl2    = 0x2c08
	rGMACStatus   = 0x2c10
	rMIB          = 0x3000
	rSpecMcast    = 0x3400
	rOthMcast     = 0x3500
	rUcast        = 0x3600
	rTXQBase      = 0x3c00
	rTXQSize      = 0x3c20
	rTXQStatus    = 0x3c40
	rTXQUpdate    = 0x3c60
	rPortTXReset  = 0x3cf0
)

var nicMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0xab, 0xcd, 0x05}

// qemuBinary returns the mvneta QEMU for the tests: the cached build, or (with the e2e tag)
// a fresh build. Without a binary the test skips, except under CI=true where it fails.
func qemuBinary(t *testing.T) string {
	t.Helper()
	if p, ok := CachedBinary(""); ok {
		return p
	}
	if buildQEMUInTests {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
		defer cancel()
		p, err := Build(ctx, Options{Progress: testWriter{t}})
		if err != nil {
			t.Fatalf("build the mvneta QEMU: %v", err)
		}
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no mvneta QEMU in the cache: run 'ppkit qemu build' (or the e2e tests) first")
	}
	t.Skip("no mvneta QEMU in the cache; run 'ppkit qemu build' first (the e2e tests build it)")
	return ""
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// qtest is a running QEMU under the qtest accelerator.
type qtest struct {
	t      *testing.T
	proc   *exec.Cmd
	conn   net.Conn
	rd     *bufio.Reader
	qmp    *qmpClient
	udp    *net.UDPConn // receives what the NIC sends
	nicUDP *net.UDPAddr // where the NIC receives
	stderr *syncbuf.Buffer
	exited chan struct{}

	mu  sync.Mutex
	irq map[int]bool
}

func freeUDPPort(t *testing.T) int {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func startQtest(t *testing.T, extraArgs ...string) *qtest {
	t.Helper()
	bin := qemuBinary(t)
	dir := t.TempDir()
	qtSock := filepath.Join(dir, "qtest.sock")
	qmpSock := filepath.Join(dir, "qmp.sock")
	qtL, err := net.Listen("unix", qtSock)
	if err != nil {
		t.Fatal(err)
	}
	defer qtL.Close()
	qmpL, err := net.Listen("unix", qmpSock)
	if err != nil {
		t.Fatal(err)
	}
	defer qmpL.Close()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	nicPort := freeUDPPort(t)
	q := &qtest{t: t, udp: udp, irq: map[int]bool{}, stderr: &syncbuf.Buffer{}, exited: make(chan struct{}),
		nicUDP: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: nicPort}}
	q.proc = exec.Command(bin,
		"-M", "virt", "-cpu", "cortex-a57", "-m", "256", "-display", "none", "-nodefaults",
		"-accel", "qtest", "-qtest", "unix:"+qtSock, "-qtest-log", "/dev/null",
		"-chardev", "socket,path="+qmpSock+",id=qmp", "-mon", "chardev=qmp,mode=control",
		"-d", "guest_errors",
		"-netdev", fmt.Sprintf("socket,id=n0,udp=127.0.0.1:%d,localaddr=127.0.0.1:%d",
			udp.LocalAddr().(*net.UDPAddr).Port, nicPort),
		"-device", "mvneta,netdev=n0,id=nic0,mac="+nicMAC.String())
	q.proc.Args = append(q.proc.Args, extraArgs...)
	q.proc.Stderr = q.stderr
	q.proc.Stdout = q.stderr
	if err := q.proc.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() { q.proc.Wait(); close(q.exited) }()
	t.Cleanup(q.close)

	accept := func(l net.Listener) net.Conn {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() { c, err := l.Accept(); ch <- res{c, err} }()
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatal(r.err)
			}
			return r.c
		case <-q.exited:
			t.Fatalf("QEMU exited at start: %s", q.stderr.String())
		case <-time.After(30 * time.Second):
			t.Fatal("QEMU did not connect")
		}
		return nil
	}
	// QEMU connects the qtest chardev first, during option parsing, then the monitor.
	q.conn = accept(qtL)
	q.rd = bufio.NewReader(q.conn)
	q.qmp = newQMP(t, accept(qmpL))
	q.cmdOK("irq_intercept_in " + findGIC(t, q.qmp))
	return q
}

// qmpClient is a minimal QMP connection (the tests need a handful of commands).
type qmpClient struct {
	t   *testing.T
	c   net.Conn
	dec *json.Decoder
}

func newQMP(t *testing.T, c net.Conn) *qmpClient {
	t.Helper()
	m := &qmpClient{t: t, c: c, dec: json.NewDecoder(c)}
	var greeting map[string]any
	if err := m.dec.Decode(&greeting); err != nil {
		t.Fatalf("QMP greeting: %v", err)
	}
	m.call("qmp_capabilities", nil)
	return m
}

func (m *qmpClient) call(cmd string, args any) json.RawMessage {
	m.t.Helper()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	m.c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := json.NewEncoder(m.c).Encode(req); err != nil {
		m.t.Fatal(err)
	}
	for {
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  any             `json:"error"`
			Event  string          `json:"event"`
		}
		if err := m.dec.Decode(&resp); err != nil {
			m.t.Fatalf("QMP %s: %v", cmd, err)
		}
		if resp.Event != "" {
			continue
		}
		if resp.Error != nil {
			m.t.Fatalf("QMP %s: %v", cmd, resp.Error)
		}
		return resp.Return
	}
}

// findGIC asks QMP for the QOM path of the GIC, whose inputs the test intercepts.
func findGIC(t *testing.T, m *qmpClient) string {
	t.Helper()
	var props []struct{ Name, Type string }
	if err := json.Unmarshal(m.call("qom-list", map[string]string{"path": "/machine/unattached"}), &props); err != nil {
		t.Fatal(err)
	}
	for _, p := range props {
		if strings.HasPrefix(p.Type, "child<arm_gic") {
			return "/machine/unattached/" + p.Name
		}
	}
	t.Fatal("no GIC under /machine/unattached")
	return ""
}

func (q *qtest) close() {
	if q.conn != nil {
		q.conn.Close()
	}
	if q.qmp != nil {
		q.qmp.c.Close()
	}
	q.udp.Close()
	if q.proc.Process != nil {
		q.proc.Process.Kill()
		<-q.exited
	}
}

// cmd sends one qtest command and returns its reply, recording IRQ events on the way.
func (q *qtest) do(line string) string {
	q.t.Helper()
	q.conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(q.conn, "%s\n", line); err != nil {
		q.t.Fatalf("qtest %q: %v (QEMU alive: %v)\n%s", line, err, q.alive(), q.stderr.String())
	}
	for {
		resp, err := q.rd.ReadString('\n')
		if err != nil {
			q.t.Fatalf("qtest %q: %v (QEMU alive: %v)\n%s", line, err, q.alive(), q.stderr.String())
		}
		resp = strings.TrimSpace(resp)
		if f := strings.Fields(resp); len(f) == 3 && f[0] == "IRQ" {
			n, _ := strconv.Atoi(f[2])
			q.mu.Lock()
			q.irq[n] = f[1] == "raise"
			q.mu.Unlock()
			continue
		}
		return resp
	}
}

func (q *qtest) cmdOK(line string) string {
	q.t.Helper()
	r := q.do(line)
	if !strings.HasPrefix(r, "OK") {
		q.t.Fatalf("qtest %q: %s", line, r)
	}
	return strings.TrimSpace(strings.TrimPrefix(r, "OK"))
}

func (q *qtest) alive() bool {
	select {
	case <-q.exited:
		return false
	default:
		return true
	}
}

func (q *qtest) readl(addr uint64) uint32 {
	q.t.Helper()
	v, err := strconv.ParseUint(q.cmdOK(fmt.Sprintf("readl 0x%x", addr)), 0, 32)
	if err != nil {
		q.t.Fatal(err)
	}
	return uint32(v)
}

func (q *qtest) writel(addr uint64, v uint32) {
	q.t.Helper()
	q.cmdOK(fmt.Sprintf("writel 0x%x 0x%x", addr, v))
}

func (q *qtest) reg(off uint64) uint32       { q.t.Helper(); return q.readl(nicBase + off) }
func (q *qtest) setReg(off uint64, v uint32) { q.t.Helper(); q.writel(nicBase+off, v) }
func (q *qtest) memWrite(addr uint64, b []byte) {
	q.t.Helper()
	q.cmdOK(fmt.Sprintf("write 0x%x 0x%x 0x%x", addr, len(b), b))
}
func (q *qtest) clockStep(ns int64) { q.t.Helper(); q.cmdOK(fmt.Sprintf("clock_step %d", ns)) }
func (q *qtest) memRead(addr uint64, n int) []byte {
	q.t.Helper()
	s := q.cmdOK(fmt.Sprintf("read 0x%x 0x%x", addr, n))
	b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
	if err != nil {
		q.t.Fatalf("read: %v", err)
	}
	return b
}

// irqLevel returns the NIC's interrupt line as the GIC sees it; a readl first flushes events.
func (q *qtest) irqLevel() bool {
	q.t.Helper()
	q.reg(rPortStatus)
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.irq[nicIRQ]
}

// rxDesc / txDesc are the 32-byte descriptors of the 5.10 driver.
func rxDescBytes(buf uint32) []byte {
	d := make([]byte, 32)
	binary.LittleEndian.PutUint32(d[8:], buf)
	return d
}

func txDescBytes(cmd uint32, size uint16, buf uint32) []byte {
	d := make([]byte, 32)
	binary.LittleEndian.PutUint32(d[0:], cmd)
	binary.LittleEndian.PutUint16(d[6:], size)
	binary.LittleEndian.PutUint32(d[8:], buf)
	return d
}

const (
	rxdL3IP4   = 1 << 25
	rxdLast    = 1 << 26
	rxdFirst   = 1 << 27
	rxdL4OK    = 1 << 30
	txdIPCsum  = 1 << 18
	txdZPad    = 1 << 19
	txdLast    = 1 << 20
	txdFirst   = 1 << 21
	txdL4Full  = 1 << 30
	txdUDP     = 1 << 16
	newMaskAll = 0x8000ffff
)

// setupPort does what the driver's open does: rings, buffers, MAC, filters, port enable.
func (q *qtest) setupPort(rxSize, bufSize uint32, nbufs int) {
	q.t.Helper()
	q.setReg(rMACHigh, uint32(nicMAC[0])<<24|uint32(nicMAC[1])<<16|uint32(nicMAC[2])<<8|uint32(nicMAC[3]))
	q.setReg(rMACLow, uint32(nicMAC[4])<<8|uint32(nicMAC[5]))
	nib := uint64(nicMAC[5] & 0xf)
	q.setReg(rUcast+nib/4*4, 1<<(8*(nib%4)))
	q.setReg(rPortConfig, 0)
	q.setReg(rRXQBase, rxRing)
	q.setReg(rRXQSize, rxSize|(bufSize>>3)<<19)
	q.setReg(rRXQConfig, 0)
	q.setReg(rRXQThreshold, 1)
	for i := 0; i < int(rxSize); i++ {
		q.memWrite(rxRing+uint64(i)*32, rxDescBytes(uint32(rxBufBase+i*0x1000)))
	}
	if nbufs > 0 {
		q.setReg(rRXQUpdate, uint32(nbufs)<<16)
	}
	q.setReg(rTXQBase, txRing)
	q.setReg(rTXQSize, 64)
	q.setReg(rGMACCtrl0, q.reg(rGMACCtrl0)|1)
	q.setReg(rRXQCmd, 1)
	q.setReg(rTXQCmd, 1)
	q.setReg(rNewMask, newMaskAll)
}

// sendFrame hands a frame to the NIC's wire.
func (q *qtest) sendFrame(f []byte) {
	q.t.Helper()
	if _, err := q.udp.WriteToUDP(f, q.nicUDP); err != nil {
		q.t.Fatal(err)
	}
}

// waitOccupied polls RXQ0's occupied count until it reaches want.
func (q *qtest) waitOccupied(want uint32) {
	q.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := q.reg(rRXQStatus) & 0x3fff
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			q.t.Fatalf("RXQ0 occupied = %d, want %d", got, want)
		}
		q.clockStep(1000)
		time.Sleep(5 * time.Millisecond)
	}
}

// recvFrame returns the next frame the NIC sent, or nil after the timeout.
func (q *qtest) recvFrame(timeout time.Duration) []byte {
	q.t.Helper()
	buf := make([]byte, 65536)
	q.udp.SetReadDeadline(time.Now().Add(timeout))
	n, _, err := q.udp.ReadFromUDP(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// udpFrame builds an Ethernet/IPv4/UDP frame with correct checksums.
func udpFrame(dst net.HardwareAddr, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:6], dst)
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[8] = 64
	ip[9] = 17
	copy(ip[12:16], net.IPv4(192, 168, 200, 1).To4())
	copy(ip[16:20], net.IPv4(192, 168, 200, 2).To4())
	binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip, 0))
	udp := f[34:]
	binary.BigEndian.PutUint16(udp[0:], 5000)
	binary.BigEndian.PutUint16(udp[2:], 5001)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	binary.BigEndian.PutUint16(udp[6:], udpChecksum(ip, udp))
	return f
}

func inetChecksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func udpChecksum(ip, udp []byte) uint16 {
	var sum uint32
	for i := 12; i < 20; i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	sum += 17 + uint32(len(udp))
	c := inetChecksum(udp, sum)
	if c == 0 {
		c = 0xffff
	}
	return c
}

func TestQtestIdleRegisters(t *testing.T) {
	q := startQtest(t)
	if v := q.reg(rPortStatus); v&(1<<8) == 0 {
		t.Errorf("PORT_STATUS = %#x, want TX FIFO empty (bit 8): mvneta_port_down waits 10 s for it", v)
	}
	if v := q.reg(rGMACStatus); v&0xb != 0xb {
		t.Errorf("GMAC_STATUS = %#x, want link up, 1000, full duplex", v)
	}
	q.setReg(rGMACCtrl2, 1<<6|1<<4)
	if v := q.reg(rGMACCtrl2); v&(1<<6) != 0 || v&(1<<4) == 0 {
		t.Errorf("GMAC_CTRL_2 = %#x: PORT_RESET must read 0 (mac_config spins on it), other bits stored", v)
	}
	mac := uint32(nicMAC[0])<<24 | uint32(nicMAC[1])<<16 | uint32(nicMAC[2])<<8 | uint32(nicMAC[3])
	if v := q.reg(rMACHigh); v != mac {
		t.Errorf("MAC_ADDR_HIGH at reset = %#x, want the device's MAC %#x", v, mac)
	}
	q.setReg(rRXQCmd, 0xff)
	q.setReg(rTXQCmd, 0x0f)
	if v := q.reg(rRXQCmd); v != 0xff {
		t.Errorf("RXQ_CMD after enabling all = %#x", v)
	}
	q.setReg(rRXQCmd, 0xff00)
	q.setReg(rTXQCmd, 0x0f00)
	if v, w := q.reg(rRXQCmd), q.reg(rTXQCmd); v != 0 || w != 0 {
		t.Errorf("after disabling: RXQ_CMD = %#x, TXQ_CMD = %#x; port_down waits until both read 0", v, w)
	}
	q.setReg(0x2500, 0x1234) // ACC_MODE: plain storage
	if v := q.reg(0x2500); v != 0x1234 {
		t.Errorf("plain register 0x2500 = %#x, want 0x1234", v)
	}
	if q.irqLevel() {
		t.Error("interrupt raised on an idle device")
	}
}

func TestQtestReceive(t *testing.T) {
	q := startQtest(t)
	q.setupPort(16, 3520, 16)
	if q.irqLevel() {
		t.Fatal("interrupt before any frame")
	}
	frame := udpFrame(nicMAC, []byte("hello mvneta"))
	q.sendFrame(frame)
	q.waitOccupied(1)
	if !q.irqLevel() {
		t.Error("no interrupt with one occupied descriptor and threshold 1")
	}
	if c := q.reg(rNewCause); c&(1<<8) == 0 {
		t.Errorf("NEW_CAUSE = %#x, want RXQ0 (bit 8)", c)
	}
	d := q.memRead(rxRing, 32)
	status := binary.LittleEndian.Uint32(d[0:])
	size := binary.LittleEndian.Uint16(d[6:])
	if status&(rxdFirst|rxdLast) != rxdFirst|rxdLast {
		t.Errorf("RX status %#x lacks FIRST|LAST", status)
	}
	if status&(rxdL3IP4|rxdL4OK) != rxdL3IP4|rxdL4OK {
		t.Errorf("RX status %#x: checksums are right, want L3_IP4|L4_CSUM_OK", status)
	}
	if status&(1<<16) != 0 {
		t.Errorf("RX status %#x has the error summary bit", status)
	}
	wantLen := 60 // padded to the Ethernet minimum
	if int(size) != 2+wantLen+4 {
		t.Errorf("data_size = %d, want 2 + %d + 4", size, wantLen)
	}
	if got := binary.LittleEndian.Uint32(d[8:]); got != rxBufBase {
		t.Errorf("buf_phys_addr overwritten: %#x, want %#x", got, rxBufBase)
	}
	data := q.memRead(rxBufBase, 2+len(frame))
	if data[0] != 0 || data[1] != 0 || !bytes.Equal(data[2:], frame) {
		t.Errorf("buffer = %x, want 0000 + %x", data, frame)
	}
	// The driver returns the descriptor and refills it: the line drops.
	q.setReg(rRXQUpdate, 1|1<<16)
	if q.irqLevel() {
		t.Error("interrupt still raised after RXQ_STATUS_UPDATE emptied the queue")
	}
	if v := q.reg(rRXQStatus); v&0x3fff != 0 || v>>16 != 16 {
		t.Errorf("RXQ_STATUS = %#x, want 0 occupied, 16 free", v)
	}
	// A bad IPv4 header checksum loses the checksum bits but is delivered.
	bad := udpFrame(nicMAC, []byte("bad checksum"))
	bad[14+10] ^= 0xff
	q.sendFrame(bad)
	q.waitOccupied(1)
	if st := binary.LittleEndian.Uint32(q.memRead(rxRing+32, 4)); st&(rxdL3IP4|rxdL4OK) != 0 {
		t.Errorf("RX status %#x for a broken IP header, want no checksum bits", st)
	}
	// MIB counters: two good frames, read-to-clear, 64-bit low then high.
	if v := q.reg(rMIB + 0x10); v != 2 {
		t.Errorf("good_frames_received = %d, want 2", v)
	}
	if v := q.reg(rMIB + 0x10); v != 0 {
		t.Errorf("good_frames_received after a read = %d, want 0 (read-to-clear)", v)
	}
	if lo, hi := q.reg(rMIB), q.reg(rMIB+4); lo != 2*64 || hi != 0 {
		t.Errorf("good_octets_received = %d/%d, want 128/0", lo, hi)
	}
}

func TestQtestReceiveJumboSpansDescriptors(t *testing.T) {
	q := startQtest(t)
	q.setupPort(16, 512, 16)
	payload := bytes.Repeat([]byte{0xa5}, 1400)
	frame := udpFrame(nicMAC, payload)
	total := 2 + len(frame) + 4
	ndesc := (total + 511) / 512
	q.sendFrame(frame)
	q.waitOccupied(uint32(ndesc))
	var got []byte
	for i := 0; i < ndesc; i++ {
		d := q.memRead(rxRing+uint64(i)*32, 8)
		st := binary.LittleEndian.Uint32(d)
		if (st&rxdFirst != 0) != (i == 0) || (st&rxdLast != 0) != (i == ndesc-1) {
			t.Errorf("descriptor %d status %#x: FIRST only on the first, LAST only on the last", i, st)
		}
		if i == 0 && int(binary.LittleEndian.Uint16(d[6:])) != total {
			t.Errorf("FIRST data_size = %d, want the whole %d", binary.LittleEndian.Uint16(d[6:]), total)
		}
		n := 512
		if i == ndesc-1 {
			n = total - 512*i
		}
		got = append(got, q.memRead(rxBufBase+uint64(i)*0x1000, n)...)
	}
	if !bytes.Equal(got[2:2+len(frame)], frame) {
		t.Error("frame spread over the buffers differs from the one sent")
	}

	// With fewer free buffers than the frame needs, the frame waits (nothing is written) until
	// the driver returns buffers; then it arrives whole.
	q.setReg(rRXQUpdate, uint32(ndesc))       // return the used descriptors, add none
	q.setReg(rRXQBase, rxRing)                // reset the queue: no free buffers
	q.setReg(rRXQUpdate, uint32(ndesc-1)<<16) // one buffer short
	q.sendFrame(frame)
	time.Sleep(200 * time.Millisecond)
	if v := q.reg(rRXQStatus) & 0x3fff; v != 0 {
		t.Fatalf("occupied = %d with %d of %d buffers free: a partial frame was written", v, ndesc-1, ndesc)
	}
	q.setReg(rRXQUpdate, 1<<16)
	q.waitOccupied(uint32(ndesc))
	if st := binary.LittleEndian.Uint32(q.memRead(rxRing, 4)); st&rxdFirst == 0 {
		t.Errorf("held frame delivered with status %#x, want FIRST on descriptor 0", st)
	}
}

func TestQtestReceiveTimeCoalescing(t *testing.T) {
	q := startQtest(t)
	q.setupPort(16, 3520, 16)
	q.setReg(rRXQThreshold, 32)
	q.setReg(rRXTimeCoal, 2400) // 100 us at 24 MHz
	q.sendFrame(udpFrame(nicMAC, []byte("one")))
	deadline := time.Now().Add(5 * time.Second)
	for q.reg(rRXQStatus)&0x3fff != 1 {
		if time.Now().After(deadline) {
			t.Fatal("frame not received")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if q.irqLevel() {
		t.Fatal("interrupt before the count or the time threshold was reached")
	}
	q.clockStep(150000)
	if !q.irqLevel() {
		t.Fatal("no interrupt 150 us after the frame with 100 us time coalescing")
	}
	q.setReg(rNewMask, 0) // the ISR masks, the poll unmasks
	if q.irqLevel() {
		t.Error("NEW_MASK = 0 does not lower the line")
	}
	q.setReg(rRXQUpdate, 1|1<<16)
	q.setReg(rNewMask, newMaskAll)
	if q.irqLevel() {
		t.Error("line raised after the queue was emptied and unmasked")
	}
}

func TestQtestFiltering(t *testing.T) {
	q := startQtest(t)
	q.setupPort(16, 3520, 16)
	other := net.HardwareAddr{0x52, 0x54, 0x00, 0x99, 0x99, 0x99}
	q.sendFrame(udpFrame(other, []byte("not for us")))
	q.sendFrame(udpFrame(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, []byte("broadcast")))
	q.waitOccupied(1)
	time.Sleep(50 * time.Millisecond)
	if v := q.reg(rRXQStatus) & 0x3fff; v != 1 {
		t.Fatalf("occupied = %d: a frame for another MAC was accepted", v)
	}
	// 224.0.0.251 (01:00:5e:00:00:fb) rejected until its special-table entry is set.
	mdns := net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb}
	q.sendFrame(udpFrame(mdns, []byte("mdns")))
	time.Sleep(50 * time.Millisecond)
	q.setReg(rSpecMcast+0xf8, 1<<24) // entry 0xfb: accept, queue 0
	q.sendFrame(udpFrame(mdns, []byte("mdns")))
	q.waitOccupied(2)
	// Other multicast through the CRC-8 table.
	v6 := net.HardwareAddr{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
	crc := addrCRC8(v6)
	q.setReg(rOthMcast+uint64(crc/4*4), 1<<(8*(crc%4)))
	q.sendFrame(udpFrame(v6, []byte("all nodes")))
	q.waitOccupied(3)
	// Promiscuous: anything.
	q.setReg(rPortConfig, 1)
	q.sendFrame(udpFrame(other, []byte("promisc")))
	q.waitOccupied(4)
}

func addrCRC8(a net.HardwareAddr) int {
	crc := 0
	for i := 0; i < 6; i++ {
		crc = (crc ^ int(a[i])) << 8
		for j := 7; j >= 0; j-- {
			if crc&(0x100<<j) != 0 {
				crc ^= 0x107 << j
			}
		}
	}
	return crc
}

func TestQtestTransmitGatherAndChecksum(t *testing.T) {
	q := startQtest(t)
	q.setupPort(16, 3520, 16)
	frame := udpFrame(net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, bytes.Repeat([]byte("tx"), 300))
	want := append([]byte(nil), frame...)
	// Zero both checksums: the device must insert them.
	frame[14+10], frame[14+11] = 0, 0
	frame[34+6], frame[34+7] = 0, 0
	head, tail := frame[:100], frame[100:]
	q.memWrite(txBufBase, head)
	q.memWrite(txBufBase+0x1000, tail)
	cmd := uint32(14) | 5<<8 | txdUDP | txdIPCsum | txdL4Full
	q.memWrite(txRing, txDescBytes(cmd|txdFirst, uint16(len(head)), txBufBase))
	q.memWrite(txRing+32, txDescBytes(txdLast|txdZPad, uint16(len(tail)), txBufBase+0x1000))
	q.setReg(rTXQUpdate, 2)
	got := q.recvFrame(5 * time.Second)
	if got == nil {
		t.Fatal("no frame on the wire after TXQ_UPDATE")
	}
	if !bytes.Equal(got, want) {
		t.Errorf("sent frame differs:\n got %x\nwant %x", got, want)
	}
	if v := q.reg(rTXQStatus); v>>16&0x3fff != 2 {
		t.Errorf("TXQ_STATUS = %#x, want 2 sent descriptors", v)
	}
	if !q.irqLevel() {
		t.Error("no TX interrupt with sent descriptors")
	}
	d := q.memRead(txRing, 12)
	if binary.LittleEndian.Uint16(d[6:]) != 100 || binary.LittleEndian.Uint32(d[8:]) != txBufBase {
		t.Error("TX descriptor size/address modified by the device; the driver unmaps with them")
	}
	q.setReg(rTXQUpdate, 2<<16)
	if q.irqLevel() {
		t.Error("TX interrupt still raised after releasing every sent descriptor")
	}
	// A short frame is padded to 60 bytes.
	short := make([]byte, 42)
	copy(short, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06})
	q.memWrite(txBufBase, short)
	q.memWrite(txRing+64, txDescBytes(txdFirst|txdLast|txdZPad, 42, txBufBase))
	q.setReg(rTXQUpdate, 1)
	if got := q.recvFrame(5 * time.Second); len(got) != 60 {
		t.Errorf("short frame sent as %d bytes, want 60", len(got))
	}
	if v := q.reg(rMIB + 0x40); v != 2 {
		t.Errorf("good_frames_sent = %d, want 2", v)
	}
}

// TestQtestGuestErrors drives every guest mistake the model must survive; after each QEMU must
// still answer, and the mistake must be logged as a guest error.
func TestQtestGuestErrors(t *testing.T) {
	q := startQtest(t)
	q.setupPort(16, 3520, 16)
	cases := []struct {
		name string
		do   func()
		log  string
	}{
		{"RX ring outside RAM", func() {
			q.setReg(rRXQBase, notRAM)
			q.setReg(rRXQUpdate, 16<<16)
			q.sendFrame(udpFrame(nicMAC, []byte("x")))
			time.Sleep(100 * time.Millisecond)
		}, "RXQ0 descriptor 0 at 0xfff00000 (32 bytes) is not in RAM"},
		{"RX buffer outside RAM", func() {
			q.setReg(rRXQBase, rxRing)
			q.memWrite(rxRing, rxDescBytes(notRAM))
			q.setReg(rRXQUpdate, 16<<16)
			q.sendFrame(udpFrame(nicMAC, []byte("x")))
			time.Sleep(100 * time.Millisecond)
			if v := q.reg(rRXQStatus) & 0x3fff; v != 0 {
				t.Errorf("occupied = %d: a frame whose buffer is not in RAM was counted", v)
			}
		}, "RXQ0 buffer of descriptor 0 at 0xfff00000 (66 bytes) is not in RAM"},
		{"RX buffer in the flash", func() {
			// What a corrupted guest did: buffers inside virt's pflash, whose write handler
			// takes frame data for flash commands.
			q.setReg(rRXQBase, rxRing)
			q.memWrite(rxRing, rxDescBytes(flashBase))
			q.setReg(rRXQUpdate, 16<<16)
			q.sendFrame(udpFrame(nicMAC, bytes.Repeat([]byte{0x60, 0xd0, 0xff, 0x98}, 64)))
			time.Sleep(100 * time.Millisecond)
			if v := q.reg(rRXQStatus) & 0x3fff; v != 0 {
				t.Errorf("occupied = %d: a frame was written into the flash", v)
			}
		}, "RXQ0 buffer of descriptor 0 at 0x1000 ("},
		{"RX ring in the flash", func() {
			q.setReg(rRXQBase, flashBase)
			q.setReg(rRXQUpdate, 16<<16)
			q.sendFrame(udpFrame(nicMAC, []byte("x")))
			time.Sleep(100 * time.Millisecond)
			q.setReg(rRXQBase, rxRing)
		}, "RXQ0 descriptor 0 at 0x1000 (32 bytes) is not in RAM"},
		{"RX descriptor counted free without a buffer", func() {
			q.setReg(rRXQBase, rxRing)
			q.memWrite(rxRing, rxDescBytes(0))
			q.setReg(rRXQUpdate, 16<<16)
			q.sendFrame(udpFrame(nicMAC, []byte("x")))
			time.Sleep(100 * time.Millisecond)
			if v := q.reg(rRXQStatus) & 0x3fff; v != 0 {
				t.Errorf("occupied = %d: a frame was written to buffer address 0", v)
			}
		}, "has no buffer"},
		{"RX with no buffers", func() {
			q.setReg(rPortRXReset, 1)
			q.setReg(rPortRXReset, 0)
			for i := 0; i < 20; i++ {
				q.sendFrame(udpFrame(nicMAC, []byte("no buffers")))
			}
			time.Sleep(100 * time.Millisecond)
			if v := q.reg(rRXQStatus) & 0x3fff; v != 0 {
				t.Errorf("occupied = %d with no buffers", v)
			}
		}, ""},
		{"RX ring size 0", func() {
			q.setReg(rRXQSize, 0|3520>>3<<19)
			q.setReg(rRXQUpdate, 16<<16)
			q.sendFrame(udpFrame(nicMAC, []byte("x")))
			time.Sleep(100 * time.Millisecond)
		}, "ring size 0"},
		{"RX ring size above 16383", func() {
			q.setReg(rRXQSize, 0xffffffff)
			q.setReg(rRXQUpdate, 255<<16)
			q.sendFrame(udpFrame(nicMAC, []byte("x")))
			time.Sleep(100 * time.Millisecond)
		}, ""},
		{"RXQ_STATUS_UPDATE returning more than occupied", func() {
			q.setReg(rRXQUpdate, 200)
		}, "only"},
		{"TX ring outside RAM", func() {
			q.setReg(rTXQBase, notRAM)
			q.setReg(rTXQSize, 64)
			q.setReg(rTXQUpdate, 3)
		}, "not in RAM"},
		{"TX buffer outside RAM", func() {
			q.setReg(rTXQBase, txRing)
			q.memWrite(txRing, txDescBytes(txdFirst|txdLast, 1500, notRAM))
			q.setReg(rTXQUpdate, 1)
		}, "TXQ0 buffer of descriptor 0 at 0xfff00000 (1500 bytes) is not in RAM"},
		{"TX buffer in the flash", func() {
			q.setReg(rTXQBase, txRing)
			q.memWrite(txRing, txDescBytes(txdFirst|txdLast, 1500, flashBase))
			q.setReg(rTXQUpdate, 1)
		}, "TXQ0 buffer of descriptor 0 at 0x1000 (1500 bytes) is not in RAM"},
		{"TX descriptor without FIRST", func() {
			q.setReg(rTXQBase, txRing)
			q.memWrite(txRing, txDescBytes(txdLast, 60, txBufBase))
			q.setReg(rTXQUpdate, 1)
		}, "lacks FIRST"},
		{"TXQ_UPDATE larger than the ring", func() {
			q.setReg(rTXQBase, txRing)
			q.setReg(rTXQSize, 16)
			for i := 0; i < 16; i++ {
				q.memWrite(txRing+uint64(i)*32, txDescBytes(txdFirst, 60, txBufBase))
			}
			q.setReg(rTXQUpdate, 255)
		}, "exceed the ring size"},
		{"TX ring size 0", func() {
			q.setReg(rTXQBase, txRing)
			q.setReg(rTXQSize, 0)
			q.setReg(rTXQUpdate, 5)
		}, "ring size 0"},
		{"TX release more than sent", func() {
			q.setReg(rTXQBase, txRing)
			q.setReg(rTXQUpdate, 200<<16)
		}, "only"},
		{"oversized TX frame", func() {
			q.setReg(rTXQBase, txRing)
			q.setReg(rTXQSize, 64)
			for i := 0; i < 5; i++ {
				q.memWrite(txRing+uint64(i)*32, txDescBytes(0, 0xffff, txBufBase))
			}
			q.memWrite(txRing, txDescBytes(txdFirst, 0xffff, txBufBase))
			q.memWrite(txRing+4*32, txDescBytes(txdLast, 0xffff, txBufBase))
			q.setReg(rTXQUpdate, 5)
		}, "longer than"},
		{"misaligned and unknown registers", func() {
			q.setReg(0x3ffc, 0xffffffff)
			q.reg(0x3ffc)
			q.setReg(rNewCause, 0xffffffff)
			q.setReg(rMiscCause, 0xffffffff)
		}, ""},
	}
	for _, c := range cases {
		before := len(q.stderr.String())
		c.do()
		if !q.alive() {
			t.Fatalf("%s: QEMU died:\n%s", c.name, q.stderr.String())
		}
		if v := q.reg(rPortStatus); v&(1<<8) == 0 {
			t.Errorf("%s: device no longer answers (PORT_STATUS %#x)", c.name, v)
		}
		if c.log != "" {
			time.Sleep(20 * time.Millisecond)
			if logged := q.stderr.String()[before:]; !strings.Contains(logged, c.log) {
				t.Errorf("%s: no guest-error log containing %q; got %q", c.name, c.log, logged)
			}
		}
	}
	// After all that, a reset port works again.
	q.setReg(rPortRXReset, 1)
	q.setReg(rPortRXReset, 0)
	q.setReg(rPortTXReset, 1)
	q.setReg(rPortTXReset, 0)
	q.setupPort(16, 3520, 16)
	q.sendFrame(udpFrame(nicMAC, []byte("alive")))
	q.waitOccupied(1)
}

// waitMigration polls query-migrate until it reports completed.
func (m *qmpClient) waitMigration() {
	m.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct{ Status string }
		json.Unmarshal(m.call("query-migrate", nil), &st)
		switch st.Status {
		case "completed":
			return
		case "failed", "cancelled":
			m.t.Fatalf("migration %s", st.Status)
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("migration still %q after 60 s", st.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestQtestMigration saves a device with frames waiting in its RX ring and sent TX descriptors,
// loads it into a second QEMU and checks the counters, the interrupt line and the ring position.
func TestQtestMigration(t *testing.T) {
	a := startQtest(t)
	a.setupPort(16, 3520, 16)
	for i := 0; i < 3; i++ {
		a.sendFrame(udpFrame(nicMAC, []byte(fmt.Sprintf("frame %d", i))))
	}
	a.waitOccupied(3)
	a.memWrite(txBufBase, udpFrame(net.HardwareAddr{2, 0, 0, 0, 0, 1}, []byte("tx")))
	a.memWrite(txRing, txDescBytes(txdFirst|txdLast|txdZPad, 60, txBufBase))
	a.setReg(rTXQUpdate, 1)
	if a.recvFrame(5*time.Second) == nil {
		t.Fatal("TX before migration failed")
	}
	wantRX, wantTX, wantMask := a.reg(rRXQStatus), a.reg(rTXQStatus), a.reg(rNewMask)
	state := filepath.Join(t.TempDir(), "state")
	a.qmp.call("migrate", map[string]string{"uri": "exec:cat > " + state})
	a.qmp.waitMigration()

	b := startQtest(t, "-incoming", "defer")
	b.qmp.call("migrate-incoming", map[string]string{"uri": "exec:cat " + state})
	b.qmp.waitMigration()
	if got := b.reg(rRXQStatus); got != wantRX {
		t.Errorf("RXQ_STATUS after migration = %#x, want %#x", got, wantRX)
	}
	if got := b.reg(rTXQStatus); got != wantTX {
		t.Errorf("TXQ_STATUS after migration = %#x, want %#x", got, wantTX)
	}
	if got := b.reg(rNewMask); got != wantMask {
		t.Errorf("NEW_MASK after migration = %#x, want %#x", got, wantMask)
	}
	if !b.irqLevel() {
		t.Error("interrupt line low after migration with occupied descriptors")
	}
	// The ring position travelled too: the next frame lands in descriptor 3.
	b.setReg(rRXQUpdate, 3|3<<16)
	b.sendFrame(udpFrame(nicMAC, []byte("after migration")))
	b.waitOccupied(1)
	if st := binary.LittleEndian.Uint32(b.memRead(rxRing+3*32, 4)); st&(rxdFirst|rxdLast) != rxdFirst|rxdLast {
		t.Errorf("descriptor 3 status %#x after migration, want FIRST|LAST", st)
	}
}

// tcp6Frame builds an Ethernet/IPv6/TCP frame with a correct TCP checksum.
func tcp6Frame(dst net.HardwareAddr, payload []byte) []byte {
	f := make([]byte, 14+40+20+len(payload))
	copy(f[0:6], dst)
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	ip := f[14:54]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(20+len(payload)))
	ip[6] = 6
	ip[7] = 64
	copy(ip[8:24], net.ParseIP("fd00:200::2"))
	copy(ip[24:40], net.ParseIP("fd00:200::1"))
	tcp := f[54:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5001)
	tcp[12] = 5 << 4
	tcp[13] = 0x18
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	copy(tcp[20:], payload)
	var sum uint32
	for i := 8; i < 40; i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	sum += uint32(len(tcp)) + 6
	binary.BigEndian.PutUint16(tcp[16:], inetChecksum(tcp, sum))
	return f
}

func TestQtestTransmitIPv6Checksum(t *testing.T) {
	q := startQtest(t)
	q.setupPort(16, 3520, 16)
	frame := tcp6Frame(net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, bytes.Repeat([]byte("v6"), 333))
	want := append([]byte(nil), frame...)
	frame[54+16], frame[54+17] = 0, 0
	q.memWrite(txBufBase, frame)
	// L3 offset 14, IPv6 header 10 words, L3_IP6, full L4 checksum, TCP (no UDP bit).
	cmd := uint32(14) | 10<<8 | 1<<17 | txdL4Full | txdFirst | txdLast | txdZPad
	q.memWrite(txRing, txDescBytes(cmd, uint16(len(frame)), txBufBase))
	q.setReg(rTXQUpdate, 1)
	got := q.recvFrame(5 * time.Second)
	if got == nil {
		t.Fatal("no frame on the wire")
	}
	if !bytes.Equal(got, want) {
		t.Errorf("IPv6 TCP checksum: got %x, want %x", got[54+16:54+18], want[54+16:54+18])
	}
}

// TestQtestDMAIntoItsOwnRegisters points RX buffers, RX rings and TX buffers at the device's own
// MMIO window: a DMA that re-enters the device must be refused, not recurse or crash.
func TestQtestDMAIntoItsOwnRegisters(t *testing.T) {
	q := startQtest(t)
	q.setupPort(16, 3520, 16)
	q.memWrite(rxRing, rxDescBytes(nicBase+0x1500-2)) // lands on RXQ_STATUS_UPDATE
	q.sendFrame(udpFrame(nicMAC, bytes.Repeat([]byte{0xff}, 64)))
	time.Sleep(100 * time.Millisecond)
	q.setReg(rRXQBase, nicBase+0x1400) // the ring itself inside the registers
	q.setReg(rRXQUpdate, 16<<16)
	q.sendFrame(udpFrame(nicMAC, []byte("ring in MMIO")))
	time.Sleep(100 * time.Millisecond)
	q.setReg(rTXQBase, nicBase+0x3c00)
	q.setReg(rTXQUpdate, 4)
	q.setReg(rTXQBase, txRing)
	q.memWrite(txRing, txDescBytes(txdFirst|txdLast, 1024, nicBase))
	q.setReg(rTXQUpdate, 1)
	if !q.alive() {
		t.Fatalf("QEMU died:\n%s", q.stderr.String())
	}
	if log := q.stderr.String(); !strings.Contains(log, "not in RAM") {
		t.Errorf("DMA into the device's own registers was not refused and logged:\n%s", log)
	}
	if v := q.reg(rPortStatus); v&(1<<8) == 0 {
		t.Fatalf("device no longer answers (PORT_STATUS %#x)", v)
	}
}

// TestQtestRandomRegisterWrites writes pseudo-random values to every register while frames
// arrive and are sent: whatever the guest does, QEMU keeps running.
func TestQtestRandomRegisterWrites(t *testing.T) {
	q := startQtest(t)
	q.setupPort(16, 3520, 16)
	q.memWrite(txBufBase, udpFrame(net.HardwareAddr{2, 0, 0, 0, 0, 1}, []byte("tx")))
	for i := 0; i < 16; i++ {
		q.memWrite(txRing+uint64(i)*32, txDescBytes(txdFirst|txdLast, 60, txBufBase))
	}
	seed := uint64(0x9e3779b97f4a7c15)
	next := func() uint64 { // xorshift64: reproducible without math/rand state
		seed ^= seed << 13
		seed ^= seed >> 7
		seed ^= seed << 17
		return seed
	}
	// Values are biased towards RAM addresses and small counts so that rings get exercised.
	for i := 0; i < 3000; i++ {
		off := next() % 0x4000 &^ 3
		var v uint32
		switch next() % 4 {
		case 0:
			v = uint32(next())
		case 1:
			v = uint32(ramBase + next()%0x800000)
		case 2:
			v = uint32(next() % 64)
		default:
			v = uint32(next()%256) | uint32(next()%256)<<16
		}
		q.setReg(off, v)
		if i%50 == 0 {
			q.sendFrame(udpFrame(nicMAC, []byte("fuzz")))
			q.sendFrame(udpFrame(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, bytes.Repeat([]byte{1}, 3000)))
		}
		if i%500 == 0 && !q.alive() {
			t.Fatalf("QEMU died after %d writes:\n%s", i, q.stderr.String())
		}
	}
	q.clockStep(1_000_000)
	if v := q.reg(rPortStatus); v&(1<<8) == 0 {
		t.Fatalf("device no longer answers (PORT_STATUS %#x)", v)
	}
}

// miscInternalAddrErr is MVNETA_CAUSE_INTERNAL_ADDR_ERR: the DMA engine met an address with no
// RAM behind it.
const (
	miscInternalAddrErr = 1 << 7
	newCauseMisc        = 1 << 31
	rRXDiscard          = 0x2484
)

// quit stops QEMU through QMP and waits for it, so that its log files are complete.
func (q *qtest) quit() {
	q.t.Helper()
	q.qmp.call("quit", nil)
	select {
	case <-q.exited:
	case <-time.After(30 * time.Second):
		q.t.Fatal("QEMU did not exit after quit")
	}
}

// TestQtestDMAErrorCause checks what a failed DMA does besides the guest-error log: the misc
// cause latches INTERNAL_ADDR_ERR, which interrupts only when the driver unmasks it (Linux 5.10
// unmasks link changes only, so a guest never sees an interrupt storm from it), the driver's
// write of 0 acknowledges it, and the frame is dropped and counted.
func TestQtestDMAErrorCause(t *testing.T) {
	q := startQtest(t)
	q.setupPort(16, 3520, 16)
	q.setReg(rNewMask, newCauseMisc)
	q.setReg(rMiscMask, 0x3) // what mvneta_open unmasks: PHY status and link changes

	// TX: a buffer outside RAM. Nothing goes on the wire; the descriptor counts as sent.
	q.memWrite(txRing, txDescBytes(txdFirst|txdLast, 100, notRAM))
	q.setReg(rTXQUpdate, 1)
	if f := q.recvFrame(200 * time.Millisecond); f != nil {
		t.Errorf("a frame whose buffer is not in RAM was sent: %x", f)
	}
	if v := q.reg(rTXQStatus) >> 16; v != 1 {
		t.Errorf("TXQ sent = %d, want 1: the descriptor is consumed", v)
	}
	if c := q.reg(rMiscCause); c&miscInternalAddrErr == 0 {
		t.Errorf("MISC_CAUSE = %#x after a TX DMA error, want INTERNAL_ADDR_ERR (bit 7)", c)
	}
	if q.irqLevel() {
		t.Error("interrupt from a cause the driver left masked")
	}
	q.setReg(rMiscMask, 0x3|miscInternalAddrErr)
	if c := q.reg(rNewCause); c&newCauseMisc == 0 {
		t.Errorf("NEW_CAUSE = %#x with an unmasked misc cause, want bit 31", c)
	}
	if !q.irqLevel() {
		t.Error("no interrupt for an unmasked INTERNAL_ADDR_ERR")
	}
	q.setReg(rMiscCause, 0) // mvneta_poll's acknowledgement
	if q.irqLevel() {
		t.Error("line still raised after MISC_CAUSE was cleared")
	}
	q.setReg(rTXQUpdate, 1<<16)

	// RX: a buffer outside RAM. The frame is dropped whole, counted as a discard.
	q.reg(rRXDiscard)
	q.memWrite(rxRing, rxDescBytes(notRAM))
	q.sendFrame(udpFrame(nicMAC, []byte("to nowhere")))
	deadline := time.Now().Add(5 * time.Second)
	for q.reg(rMiscCause)&miscInternalAddrErr == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no INTERNAL_ADDR_ERR after an RX DMA error")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !q.irqLevel() {
		t.Error("no interrupt for an unmasked INTERNAL_ADDR_ERR on RX")
	}
	if v := q.reg(rRXQStatus) & 0x3fff; v != 0 {
		t.Errorf("occupied = %d: the frame was counted", v)
	}
	if v := q.reg(rRXDiscard); v != 1 {
		t.Errorf("RX_DISCARD = %d, want 1", v)
	}
	// The next frame with a good buffer is received as usual.
	q.setReg(rMiscCause, 0)
	q.memWrite(rxRing, rxDescBytes(rxBufBase))
	q.sendFrame(udpFrame(nicMAC, []byte("to RAM")))
	q.waitOccupied(1)
	if c := q.reg(rMiscCause); c != 0 {
		t.Errorf("MISC_CAUSE = %#x after a good frame, want 0", c)
	}
}

// TestQtestDMALinkSetByVirt checks that the virt board links the device's DMA to system memory.
func TestQtestDMALinkSetByVirt(t *testing.T) {
	q := startQtest(t)
	var path string
	raw := q.qmp.call("qom-get", map[string]string{"path": "/machine/peripheral/nic0", "property": "dma-memory"})
	if err := json.Unmarshal(raw, &path); err != nil {
		t.Fatalf("qom-get dma-memory: %v (%s)", err, raw)
	}
	// get_system_memory() has no owner: QOM files it as /machine/unattached/system[0].
	if !strings.HasSuffix(path, "/system[0]") {
		t.Errorf("dma-memory links %q, want the system memory region", path)
	}
}

// TestQtestTraceEvents runs QEMU with -trace 'mvneta_*' into a file and checks that the paths
// that used to be silent report themselves.
func TestQtestTraceEvents(t *testing.T) {
	trace := filepath.Join(t.TempDir(), "trace.log")
	q := startQtest(t, "-trace", "enable=mvneta_*,file="+trace)
	q.setupPort(16, 512, 2)  // two free 512-byte buffers
	q.setReg(0x2500, 0x1234) // ACC_MODE: a register without behaviour
	q.setReg(rRXQStatus, 5)  // read-only
	one := udpFrame(nicMAC, []byte("one"))
	q.sendFrame(one)
	q.waitOccupied(1)
	notOurs := udpFrame(net.HardwareAddr{0x52, 0x54, 0x00, 0x99, 0x99, 0x99}, []byte("not ours"))
	q.sendFrame(notOurs)
	big := udpFrame(nicMAC, bytes.Repeat([]byte{7}, 700)) // two buffers, one free: held
	q.sendFrame(big)
	time.Sleep(100 * time.Millisecond)
	q.setReg(rRXQUpdate, 1<<16) // one more buffer: the held frame lands
	q.waitOccupied(3)
	q.sendFrame(one) // no free buffer at all: QEMU keeps it
	time.Sleep(100 * time.Millisecond)
	q.memWrite(txRing, txDescBytes(txdFirst|txdLast, 100, notRAM))
	q.setReg(rTXQUpdate, 1)
	q.qmp.call("set_link", map[string]any{"name": "nic0", "up": false})
	q.quit()

	data, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	log := string(data)
	for _, want := range []string{
		"mvneta_reset",
		"mvneta_reg_write offset 0x2c00",
		"mvneta_reg_read offset 0x14e0",
		"mvneta_reg_storage_write offset 0x2500 value 0x00001234: no behaviour modelled",
		"mvneta_reg_readonly_write offset 0x14e0 value 0x00000005",
		fmt.Sprintf("mvneta_rx_frame RXQ0: %d-byte frame in 1 descriptors from 0, status 0x", len(one)),
		fmt.Sprintf("mvneta_rx_ignore %d-byte frame not received: destination address filtered out", len(notOurs)),
		fmt.Sprintf("mvneta_rx_hold RXQ0: %d-byte frame needs 2 descriptors, 1 free", len(big)),
		fmt.Sprintf("mvneta_rx_frame RXQ0: %d-byte frame in 2 descriptors from 1,", len(big)),
		"mvneta_rx_no_buffers RXQ0: no free descriptor",
		"mvneta_dma_error TXQ0 buffer of descriptor 0 at 0xfff00000 (100 bytes): no RAM there",
		"mvneta_tx_drop TXQ0: frame at descriptor 0 dropped: buffer not in RAM",
		"mvneta_irq new cause 0x00000100 mask 0x8000ffff level 1",
		"mvneta_link_change link up 0",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("trace lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("trace:\n%s", log)
	}
}
