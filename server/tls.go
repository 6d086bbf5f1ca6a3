package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// tlsFiles are the TLS settings: the server's certificate and key, and the
// CA of client certificates.
type tlsFiles struct{ cert, key, clientCA string }

// serverCreds are the listeners' TLS configurations; nil for plaintext.
type serverCreds struct {
	grpc credentials.TransportCredentials
	http *tls.Config
}

// load reads the files. The certificate is re-read when its file changes,
// so a renewed certificate needs no restart.
func (f tlsFiles) load() (serverCreds, error) {
	if f.cert == "" && f.key == "" {
		if f.clientCA != "" {
			return serverCreds{}, errors.New("--client-ca needs TLS: give --tls-cert and --tls-key too")
		}
		return serverCreds{}, nil
	}
	if f.cert == "" || f.key == "" {
		return serverCreds{}, errors.New("give both --tls-cert and --tls-key")
	}
	r := &certReloader{certFile: f.cert, keyFile: f.key}
	if _, err := r.get(nil); err != nil {
		return serverCreds{}, err
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}
	g := base.Clone()
	if f.clientCA != "" {
		pem, err := os.ReadFile(f.clientCA)
		if err != nil {
			return serverCreds{}, fmt.Errorf("--client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return serverCreds{}, fmt.Errorf("--client-ca %s: no PEM certificate in it", f.clientCA)
		}
		// A certificate is one way in; an API key stays the other, so a
		// client without a certificate is still let through to show its key.
		g.ClientCAs, g.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	h := base.Clone()
	h.NextProtos = []string{"h2", "http/1.1"}
	return serverCreds{grpc: credentials.NewTLS(g), http: h}, nil
}

// certReloader serves the key pair, loading it again when the certificate
// file's modification time changes.
type certReloader struct {
	certFile, keyFile string
	mu                sync.Mutex
	cert              *tls.Certificate
	mod               time.Time
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	st, err := os.Stat(r.certFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert != nil && st.ModTime().Equal(r.mod) {
		return r.cert, nil
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		if r.cert != nil { // keep serving the old one while a renewal is half-written
			return r.cert, nil
		}
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	r.cert, r.mod = &c, st.ModTime()
	return r.cert, nil
}

// checkListeners refuses plaintext on an address other than loopback
// unless --insecure says a TLS proxy in front takes care of it.
func (st settings) checkListeners() error {
	if st.tls.cert != "" || st.insecure {
		return nil
	}
	for _, a := range []struct{ flag, addr string }{{"--grpc-addr", st.grpcAddr}, {"--http-addr", st.httpAddr}} {
		if !isLoopback(a.addr) {
			return fmt.Errorf("refusing to serve plaintext on %s %s, which is not a loopback address: "+
				"personal data would cross the network unencrypted. Give --tls-cert and --tls-key, "+
				"or --insecure if a TLS-terminating proxy in front of the exchange is the only way in", a.flag, a.addr)
		}
	}
	return nil
}

// isLoopback reports whether a listen address can only be reached from
// this machine: localhost or a loopback IP. An empty host (all interfaces)
// is not.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// days is a duration flag that also takes whole days ("730d").
type days time.Duration

func (d *days) String() string {
	v := time.Duration(*d)
	if v%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(v/(24*time.Hour)), 10) + "d"
	}
	return v.String()
}

func (d *days) Set(s string) error {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.ParseUint(n, 10, 32)
		if err != nil {
			return fmt.Errorf("%q: want a number of days such as 730d, or a Go duration such as 8760h", s)
		}
		*d = days(time.Duration(v) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q: want a number of days such as 730d, or a Go duration such as 8760h", s)
	}
	*d = days(v)
	return nil
}
