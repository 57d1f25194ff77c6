package stgtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Received is one message an SMTPServer accepted.
type Received struct {
	From string
	To   []string // envelope recipients
	Data []byte
}

// SMTPServer is a real SMTP server on 127.0.0.1 that records what it receives.
type SMTPServer struct {
	Addr string
	// FailAfter > 0 makes the server refuse every message after that many were accepted.
	FailAfter int
	// User and Password, when set, are required (AUTH PLAIN).
	User, Password string

	mu       sync.Mutex
	received []Received
	logins   []string
}

// StartSMTP starts a server on a free loopback port; it stops when the test ends.
func StartSMTP(t testing.TB, failAfter int, user, password string) *SMTPServer {
	t.Helper()
	return startSMTP(t, failAfter, user, password, nil)
}

// StartSMTPTLS starts a server that offers STARTTLS with a self-signed certificate for
// 127.0.0.1 and accepts AUTH only over TLS. It returns the pool that trusts the certificate.
func StartSMTPTLS(t testing.TB, user, password string) (*SMTPServer, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ppkit test SMTP"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	return startSMTP(t, 0, user, password, cfg), pool
}

func startSMTP(t testing.TB, failAfter int, user, password string, tlsConfig *tls.Config) *SMTPServer {
	s := &SMTPServer{FailAfter: failAfter, User: user, Password: password}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{s: s}, nil
	}))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = tlsConfig == nil
	srv.TLSConfig = tlsConfig
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

// Received returns the messages accepted so far.
func (s *SMTPServer) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

// Logins returns the user names that authenticated.
func (s *SMTPServer) Logins() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.logins...)
}

type session struct {
	s     *SMTPServer
	authd bool
	from  string
	to    []string
}

func (ss *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *session) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != ss.s.User || password != ss.s.Password {
			return errors.New("invalid credentials")
		}
		ss.authd = true
		ss.s.mu.Lock()
		ss.s.logins = append(ss.s.logins, username)
		ss.s.mu.Unlock()
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.User != "" && !ss.authd {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if ss.s.FailAfter > 0 && len(ss.s.received) >= ss.s.FailAfter {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "test server: failing after " + itoa(ss.s.FailAfter) + " messages"}
	}
	ss.s.received = append(ss.s.received, Received{From: ss.from, To: ss.to, Data: data})
	return nil
}

func (ss *session) Reset() { ss.from, ss.to = "", nil }

func (ss *session) Logout() error { return nil }

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// SetFailAfter changes when the server starts refusing messages (0: never).
func (s *SMTPServer) SetFailAfter(n int) {
	s.mu.Lock()
	s.FailAfter = n
	s.mu.Unlock()
}
