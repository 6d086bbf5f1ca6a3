package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthcheck is `server healthcheck`: it asks the exchange running on this
// machine for its gRPC health and exits 0 when it is SERVING, 1 otherwise.
// Container health checks and Kubernetes exec probes run it, because the
// kubelet's own gRPC probe cannot speak TLS and a minimal image has no
// other client. It reads the same flags and EXCHANGE_* environment as the
// server, so it finds the listener and its certificate by itself.
func healthcheck(args []string) int {
	fs := flag.NewFlagSet("server healthcheck", flag.ContinueOnError)
	addr := fs.String("grpc-addr", "127.0.0.1:50051", "the exchange's gRPC listen address; a wildcard host is reached on loopback")
	cert := fs.String("tls-cert", "", "the exchange's certificate; when given, the check speaks TLS and trusts this certificate's chain")
	service := fs.String("service", "", "the health service name to check; \"\" is the whole exchange")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for an answer")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: server healthcheck [flags]\n\nExits 0 when the local exchange answers SERVING on the gRPC health service, 1 otherwise.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fromEnv(fs, "grpc-addr", "tls-cert"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	status, err := checkHealth(ctx, localAddr(*addr), *cert, *service)
	if err != nil {
		fmt.Fprintln(os.Stderr, "unhealthy:", err)
		return 1
	}
	if status != healthpb.HealthCheckResponse_SERVING {
		fmt.Fprintln(os.Stderr, "unhealthy:", status)
		return 1
	}
	fmt.Println(status)
	return 0
}

// localAddr turns a listen address into one to dial on this machine.
func localAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

func checkHealth(ctx context.Context, addr, certFile, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	creds := insecure.NewCredentials()
	if certFile != "" {
		cfg, err := trustOwnCertificate(certFile)
		if err != nil {
			return 0, err
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service}, grpc.WaitForReady(true))
	if err != nil {
		return 0, err
	}
	return resp.Status, nil
}

// trustOwnCertificate is a TLS configuration that trusts exactly the
// certificates in the server's own certificate file and checks the name of
// its leaf, so the check works on loopback without a CA bundle.
func trustOwnCertificate(certFile string) (*tls.Config, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	var leaf *x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", certFile, err)
		}
		if leaf == nil {
			leaf = c
		}
		pool.AddCert(c)
	}
	if leaf == nil {
		return nil, fmt.Errorf("%s: no PEM certificate in it", certFile)
	}
	name := leaf.Subject.CommonName
	switch {
	case len(leaf.DNSNames) > 0:
		name = leaf.DNSNames[0]
	case len(leaf.IPAddresses) > 0:
		name = leaf.IPAddresses[0].String()
	}
	if name == "" {
		return nil, errors.New("the certificate names no host")
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: name}, nil
}
