package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage/bolt"
	"github.com/social-prescribing/exchange/server/storage/etcd/etcdtest"
)

var (
	buildOnce      sync.Once
	binDir         string
	buildErr       error
	exchangeBinary string
	ctlBinary      string
)

func TestMain(m *testing.M) {
	etcdtest.MaybeMember()
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds the exchange and exchangectl once per test run.
func binaries(t *testing.T) (exchange, exchangectl string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "exchange-bin"); buildErr != nil {
			return
		}
		exchangeBinary, ctlBinary = filepath.Join(binDir, "exchange"), filepath.Join(binDir, "exchangectl")
		for pkg, out := range map[string]string{".": exchangeBinary, "../client/exchangectl": ctlBinary} {
			if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return exchangeBinary, ctlBinary
}

// runToExit runs the exchange expecting it to refuse to start, and returns
// its output and how long it took.
func runToExit(t *testing.T, dir string, args ...string) (string, time.Duration) {
	t.Helper()
	bin, _ := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the exchange exited 0; want a refusal:\n%s", out)
	}
	if ctx.Err() != nil {
		t.Fatalf("the exchange hung instead of refusing:\n%s", out)
	}
	return string(out), time.Since(start)
}

func operatorKey(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "operator-key"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func as(key string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
}

// TestRefusesPlaintextOffLoopback: without TLS or --insecure the exchange
// will not listen on an address other than loopback, and says why.
func TestRefusesPlaintextOffLoopback(t *testing.T) {
	dir := t.TempDir()
	out, _ := runToExit(t, dir, "--grpc-addr", "0.0.0.0:0", "--http-addr", "127.0.0.1:0")
	if !strings.Contains(out, "refusing to serve plaintext on --grpc-addr 0.0.0.0:0") || !strings.Contains(out, "--insecure") {
		t.Errorf("refusal does not say why:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "exchange.db")); err == nil {
		t.Error("the store was created before the refusal")
	}
	for addr, want := range map[string]bool{
		"127.0.0.1:50051": true, "[::1]:50051": true, "localhost:8080": true,
		"0.0.0.0:50051": false, ":50051": false, "[::]:8080": false, "10.0.0.5:50051": false, "exchange.example:443": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v", addr, got)
		}
	}
	st := settings{grpcAddr: "0.0.0.0:1", httpAddr: "0.0.0.0:2", insecure: true}
	if err := st.checkListeners(); err != nil {
		t.Errorf("--insecure still refused: %v", err)
	}
}

// pki is a CA with a server certificate for loopback and client
// certificates named after organisations.
type pki struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "exchange test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caKey, p.serial = key, 1
	p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue makes a certificate and key signed by the CA: for the server
// (loopback addresses) or for a client with common name cn.
func (p *pki) issue(t *testing.T, cn string, server bool) (tls.Certificate, string, string) {
	t.Helper()
	p.serial++
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
		tmpl.DNSNames = []string{"localhost"}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPath := p.write(t, cn+".pem", "CERTIFICATE", der)
	keyPath := p.write(t, cn+"-key.pem", "EC PRIVATE KEY", kb)
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	return c, certPath, keyPath
}

// TestTLSAndClientCertificates runs the exchange with TLS on both
// listeners and client certificates: a certificate whose common name is an
// organisation id stands for an API key; others are refused; plaintext is
// refused; over-large messages are refused.
func TestTLSAndClientCertificates(t *testing.T) {
	bin, _ := binaries(t)
	p := newPKI(t)
	_, certFile, keyFile := p.issue(t, "localhost", true)
	dir := t.TempDir()
	s := startBinary(t, bin, dir, "--tls-cert", certFile, "--tls-key", keyFile, "--client-ca", filepath.Join(p.dir, "ca.pem"))
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)
	dial := func(certs ...tls.Certificate) *grpc.ClientConn {
		conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: certs})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}

	// The operator by API key over TLS creates an organisation.
	key := operatorKey(t, filepath.Join(dir, "data"))
	plain := dial()
	if _, err := pb.NewDirectoryServiceClient(plain).CreateOrganization(as(key), &pb.CreateOrganizationRequest{
		OrganizationId: "riverside-practice", Organization: &pb.Organization{Kind: pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE, DisplayName: "Riverside"}}); err != nil {
		t.Fatal(err)
	}
	// Its certificate alone is enough.
	practiceCert, _, _ := p.issue(t, "riverside-practice", false)
	got, err := pb.NewDirectoryServiceClient(dial(practiceCert)).GetOrganization(context.Background(), &pb.GetOrganizationRequest{Name: "organizations/riverside-practice"})
	if err != nil || got.DisplayName != "Riverside" {
		t.Fatalf("with a client certificate: %v %v", got, err)
	}
	// An unknown organisation's certificate, a certificate with another
	// organisation's key, and no credentials are refused.
	strangerCert, _, _ := p.issue(t, "nobody", false)
	_, err = pb.NewDirectoryServiceClient(dial(strangerCert)).GetOrganization(context.Background(), &pb.GetOrganizationRequest{Name: "organizations/riverside-practice"})
	exchangetest.WantErr(t, err, codes.Unauthenticated, "CERTIFICATE_NOT_MAPPED")
	_, err = pb.NewDirectoryServiceClient(dial(practiceCert)).GetOrganization(as(key), &pb.GetOrganizationRequest{Name: "organizations/riverside-practice"})
	exchangetest.WantErr(t, err, codes.Unauthenticated, "CERTIFICATE_NOT_MAPPED")
	_, err = pb.NewDirectoryServiceClient(plain).GetOrganization(context.Background(), &pb.GetOrganizationRequest{Name: "organizations/riverside-practice"})
	exchangetest.WantErr(t, err, codes.Unauthenticated, "API_KEY_MISSING")
	// The audit log names the certificate.
	_, err = pb.NewReferralServiceClient(dial(practiceCert)).ListReferrals(context.Background(), &pb.ListReferralsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	audit, err := pb.NewAdminServiceClient(plain).ListAuditEvents(as(key), &pb.ListAuditEventsRequest{Organization: "organizations/riverside-practice"})
	if err != nil || len(audit.AuditEvents) != 1 || !strings.HasPrefix(audit.AuditEvents[0].Credential, "certificates/") {
		t.Errorf("audit of a certificate's call: %v %v", audit, err)
	}

	// Plaintext gRPC to the TLS listener fails.
	insecureConn, _ := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer insecureConn.Close()
	ctx, cancel := context.WithTimeout(as(key), 3*time.Second)
	defer cancel()
	if _, err := pb.NewDirectoryServiceClient(insecureConn).ListOrganizations(ctx, &pb.ListOrganizationsRequest{}); status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("plaintext to the TLS listener: %v", err)
	}

	// HTTPS on the HTTP listener: the REST API with the same key.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	req, _ := http.NewRequest("GET", "https://"+s.http+"/v1/organizations/riverside-practice", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("REST over TLS: %v %v", resp, err)
	}
	resp.Body.Close()
	if resp, err := http.Get("http://" + s.http + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Error("plain HTTP answered on the TLS listener")
	}

	// The container's health check speaks TLS, trusting the server's own
	// certificate file.
	if b, err := exec.Command(bin, "healthcheck", "--grpc-addr", s.grpc, "--tls-cert", certFile).CombinedOutput(); err != nil {
		t.Errorf("healthcheck over TLS: %v %s", err, b)
	}
	if b, err := exec.Command(bin, "healthcheck", "--grpc-addr", s.grpc, "--timeout", "1s").CombinedOutput(); err == nil {
		t.Errorf("a plaintext healthcheck of the TLS listener passed: %s", b)
	}

	// Messages over --max-message-bytes (1 MiB) are refused.
	big := strings.Repeat("x", 2<<20)
	_, err = pb.NewDirectoryServiceClient(plain).UpdateOrganization(as(key), &pb.UpdateOrganizationRequest{
		Organization: &pb.Organization{Name: "organizations/riverside-practice", DisplayName: big}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 2 MiB message: %v, want RESOURCE_EXHAUSTED", err)
	}
}

// TestStartupFailures: a store locked by a running exchange, and a file
// that is not a store, fail within seconds with a message that says so.
func TestStartupFailures(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	startBinary(t, bin, dir, "--rate-limit", "0")
	out, took := runToExit(t, dir, "--grpc-addr", freeAddr(t), "--http-addr", freeAddr(t))
	if !strings.Contains(out, "locked by another process") || took > 15*time.Second {
		t.Errorf("second exchange on a locked store (after %v):\n%s", took, out)
	}

	damaged := t.TempDir()
	os.MkdirAll(filepath.Join(damaged, "data"), 0o700)
	junk := bytes.Repeat([]byte("not a bbolt file "), 4096)
	if err := os.WriteFile(filepath.Join(damaged, "data", "exchange.db"), junk, 0o600); err != nil {
		t.Fatal(err)
	}
	out, took = runToExit(t, damaged, "--grpc-addr", freeAddr(t), "--http-addr", freeAddr(t))
	if !strings.Contains(out, "not an exchange store or is damaged") || !strings.Contains(out, "restore it from a backup") || took > 15*time.Second {
		t.Errorf("exchange on a damaged file (after %v):\n%s", took, out)
	}
	if err := bolt.Check(filepath.Join(damaged, "data", "exchange.db")); err == nil {
		t.Error("bolt.Check passed a damaged file")
	}

	// A store the exchange wrote, then damaged: 4 KiB of a page in use
	// inverted, or the file cut to half. Neither may start and serve, nor
	// crash with a Go stack trace.
	made := t.TempDir()
	s := startBinary(t, bin, made, "--rate-limit", "0", "--demo", "--demo-referrals", "200")
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	file := filepath.Join(made, "data", "exchange.db")
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for name, damage := range map[string]func() []byte{
		"4 KiB inverted": func() []byte {
			b := append([]byte(nil), good...)
			at := middlePageInUse(t, file)
			for i := at; i < at+4096; i++ {
				b[i] ^= 0xff
			}
			return b
		},
		"cut to half": func() []byte { return good[:len(good)/2] },
	} {
		bad := t.TempDir()
		os.MkdirAll(filepath.Join(bad, "data"), 0o700)
		if err := os.WriteFile(filepath.Join(bad, "data", "exchange.db"), damage(), 0o600); err != nil {
			t.Fatal(err)
		}
		out, took := runToExit(t, bad, "--grpc-addr", freeAddr(t), "--http-addr", freeAddr(t))
		if !strings.Contains(out, "restore it from a backup") || strings.Contains(out, "goroutine ") || took > 15*time.Second {
			t.Errorf("exchange on a store with %s (after %v):\n%s", name, took, out)
		}
	}
}

// middlePageInUse returns the offset of the branch or leaf page in the
// middle of those a bbolt file uses.
func middlePageInUse(t *testing.T, path string) int {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var used []int
	db.View(func(tx *bbolt.Tx) error {
		for id := 2; ; id++ {
			p, err := tx.Page(id)
			if err != nil || p == nil {
				return err
			}
			if p.Type == "leaf" || p.Type == "branch" {
				used = append(used, id)
			}
		}
	})
	if len(used) < 3 {
		t.Fatalf("%d pages in use", len(used))
	}
	return used[len(used)/2] * db.Info().PageSize
}

// TestBackupAndRestore takes a backup with exchangectl while referrals are
// being written, then serves from the copy: it holds what was written
// before the backup began, and passes bbolt's check.
func TestBackupAndRestore(t *testing.T) {
	bin, ctl := binaries(t)
	dir := t.TempDir()
	s := startBinary(t, bin, dir, "--rate-limit", "0", "--demo", "--demo-referrals", "20")
	key := operatorKey(t, filepath.Join(dir, "data"))
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dirc := pb.NewDirectoryServiceClient(conn)
	count := func(c pb.DirectoryServiceClient) int {
		n, page := 0, ""
		for {
			l, err := c.ListOrganizations(as(key), &pb.ListOrganizationsRequest{PageSize: 1000, PageToken: page})
			if err != nil {
				t.Fatal(err)
			}
			n += len(l.Organizations)
			if page = l.NextPageToken; page == "" {
				return n
			}
		}
	}
	// Writers keep creating organisations while the backup runs.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				dirc.CreateOrganization(as(key), &pb.CreateOrganizationRequest{OrganizationId: fmt.Sprintf("group-%d-%d", w, i),
					Organization: &pb.Organization{Kind: pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION, DisplayName: "Group"}})
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	before := count(dirc)
	backup := filepath.Join(t.TempDir(), "exchange.db")
	cmd := exec.Command(ctl, "backup", "--file", backup, "--addr", s.grpc)
	cmd.Env = append(os.Environ(), "EXCHANGE_TOKEN="+key, "EXCHANGE_CONFIG=/dev/null")
	out, err := cmd.CombinedOutput()
	after := count(dirc)
	stop()
	wg.Wait()
	if err != nil || !strings.Contains(string(out), "bytes)") {
		t.Fatalf("exchangectl backup: %v\n%s", err, out)
	}
	if after <= before {
		t.Fatalf("no organisation was written during the backup (%d, %d)", before, after)
	}
	if err := bolt.Check(backup); err != nil {
		t.Fatalf("the backup fails bbolt check: %v", err)
	}

	// Restore: a data directory with the copy as exchange.db and the
	// operator key file.
	restored := t.TempDir()
	os.MkdirAll(filepath.Join(restored, "data"), 0o700)
	b, _ := os.ReadFile(backup)
	os.WriteFile(filepath.Join(restored, "data", "exchange.db"), b, 0o600)
	kb, _ := os.ReadFile(filepath.Join(dir, "data", "operator-key"))
	os.WriteFile(filepath.Join(restored, "data", "operator-key"), kb, 0o600)
	r := startBinary(t, bin, restored)
	rconn, err := grpc.NewClient(r.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer rconn.Close()
	got := count(pb.NewDirectoryServiceClient(rconn))
	if got < before || got > after {
		t.Errorf("the restored exchange has %d organisations; %d existed when the backup began and %d when it ended", got, before, after)
	}
	if _, err := pb.NewReferralServiceClient(rconn).ListReferrals(as(key), &pb.ListReferralsRequest{}); err != nil {
		t.Fatalf("the restored exchange does not serve: %v", err)
	}
	audit, err := pb.NewAdminServiceClient(rconn).ListAuditEvents(as(key), &pb.ListAuditEventsRequest{Resource: ""})
	if err != nil || len(audit.AuditEvents) == 0 {
		t.Errorf("the restored audit log: %v %v", audit, err)
	}
	t.Logf("backup of %s while writing: %d organisations before, %d restored, %d after", strings.TrimSpace(string(out)), before, got, after)
}

// TestPortInUse: an address already taken is reported before anything is
// created: no store, no operator key, no demo organisations or keys printed.
func TestPortInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, args := range [][]string{
		{"--grpc-addr", taken.Addr().String(), "--http-addr", freeAddr(t)},
		{"--grpc-addr", freeAddr(t), "--http-addr", taken.Addr().String()},
	} {
		dir := t.TempDir()
		out, _ := runToExit(t, dir, append(args, "--demo")...)
		if !strings.Contains(out, taken.Addr().String()) || !strings.Contains(out, "address already in use") || strings.Contains(out, "sprx_") {
			t.Errorf("%v: %s", args, out)
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, "data")); len(entries) > 0 {
			t.Errorf("%v: the data directory holds %v", args, entries)
		}
	}
}
