// Command server runs the referral exchange: the gRPC services on an
// embedded bbolt store. `go run ./server --demo` starts it with demo
// organisations; see README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/gateway"
	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/bolt"
	"github.com/social-prescribing/exchange/server/web"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// settings are the server's flags.
type settings struct {
	grpcAddr, httpAddr, dataDir string
	demo                        bool
	demoReferrals               int
	overdueEvery, autoReject    time.Duration
	maxBody                     int64
	secureCookies               bool
	reportMinCount              int
}

func main() {
	var st settings
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	fs.StringVar(&st.grpcAddr, "grpc-addr", env("EXCHANGE_GRPC_ADDR", "127.0.0.1:50051"), "gRPC listen address (env EXCHANGE_GRPC_ADDR)")
	fs.StringVar(&st.httpAddr, "http-addr", env("EXCHANGE_HTTP_ADDR", "127.0.0.1:8080"), "HTTP listen address of the REST API, the web inbox, /docs and /healthz (env EXCHANGE_HTTP_ADDR)")
	fs.StringVar(&st.dataDir, "data-dir", env("EXCHANGE_DATA_DIR", "data"), "directory of the bbolt store and the operator key (env EXCHANGE_DATA_DIR)")
	fs.BoolVar(&st.demo, "demo", os.Getenv("EXCHANGE_DEMO") == "true", "create demo organisations once and print their API keys (env EXCHANGE_DEMO=true)")
	fs.IntVar(&st.demoReferrals, "demo-referrals", 300, "with --demo: how many synthetic referrals, spread over the past year with outcomes, to create the first time, so reports have something to show")
	fs.DurationVar(&st.overdueEvery, "overdue-interval", 30*time.Second, "how often to look for referrals past their reply-by deadline")
	fs.DurationVar(&st.autoReject, "auto-reject-after", 0, "reject a referral still REQUESTED this long after its reply-by deadline, with reason NO_RESPONSE; 0 (the default) never does")
	fs.BoolVar(&st.secureCookies, "secure-cookies", os.Getenv("EXCHANGE_SECURE_COOKIES") == "true", "mark the web inbox's session cookie Secure, for a TLS proxy in front (env EXCHANGE_SECURE_COOKIES=true)")
	fs.Int64Var(&st.maxBody, "max-body-bytes", gateway.DefaultMaxBodyBytes, "largest REST request body; larger ones get 413")
	fs.IntVar(&st.reportMinCount, "report-min-count", api.DefaultReportMinCount, "reports suppress every count from 1 to this minus one, and every statistic of fewer referrals")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: server [flags]\n\nRuns the social prescribing referral exchange.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.Parse(os.Args[1:])
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	slog.SetDefault(log)
	if err := run(st); err != nil {
		log.Error("exchange stopped", "err", err)
		os.Exit(1)
	}
}

func run(st settings) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(st.dataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	store, err := bolt.Open(filepath.Join(st.dataDir, "exchange.db"), bolt.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	if err := ensureOperator(ctx, store, st.dataDir); err != nil {
		return err
	}
	// The demo's synthetic history is written with the clock set back; at
	// every other time the clock is the real one.
	var clock demoClock
	srv := api.New(store, api.Options{AutoRejectAfter: st.autoReject, ReportMinCount: st.reportMinCount, Now: clock.now})
	if st.demo {
		if err := ensureDemo(ctx, srv, st.dataDir, st.demoReferrals, &clock); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}

	g := grpc.NewServer(grpc.ChainUnaryInterceptor(srv.UnaryAuth), grpc.ChainStreamInterceptor(srv.StreamAuth))
	srv.Register(g)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)

	gl, err := net.Listen("tcp", st.grpcAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", st.grpcAddr, err)
	}
	hl, err := net.Listen("tcp", st.httpAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", st.httpAddr, err)
	}
	// The REST gateway and the web inbox call the gRPC server through a
	// client connection, so every rule runs in one place for all callers.
	conn, err := grpc.NewClient(loopback(gl.Addr()), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	handler, err := httpHandler(ctx, conn, st.maxBody, st.secureCookies)
	if err != nil {
		return err
	}
	// No write timeout: long-polls last up to a minute and event streams
	// longer; slow clients are bounded by the header and idle timeouts.
	hsrv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}

	errc := make(chan error, 2)
	go func() { errc <- g.Serve(gl) }()
	go func() { errc <- hsrv.Serve(hl) }()
	go sweep(ctx, srv, st.overdueEvery)
	slog.Info("exchange listening", "grpc", gl.Addr().String(), "http", hl.Addr().String(), "data", st.dataDir)

	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	slog.Info("stopping: draining calls, then closing the store")
	hs.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hsrv.Shutdown(sctx)
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		g.Stop() // streams (WatchEvents) do not end by themselves
	}
	return store.Close()
}

// loopback is the address to dial a listener on: a wildcard host becomes
// the loopback address.
func loopback(a net.Addr) string {
	t, ok := a.(*net.TCPAddr)
	if !ok || !t.IP.IsUnspecified() {
		return a.String()
	}
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(t.Port))
}

// httpHandler serves, on the HTTP address: the REST API under /v1/, the
// OpenAPI document and its reference page, health, and the web inbox.
func httpHandler(ctx context.Context, conn *grpc.ClientConn, maxBody int64, secureCookies bool) (http.Handler, error) {
	gw, err := gateway.New(ctx, conn, gateway.Options{MaxBodyBytes: maxBody})
	if err != nil {
		return nil, err
	}
	openapi, docs, err := gateway.Docs()
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("/v1/", gw)
	mux.Handle("GET /openapi.json", openapi)
	mux.Handle("GET /docs", docs)
	mux.Handle("/", web.New(conn, web.Options{SecureCookies: secureCookies}).Handler())
	return mux, nil
}

func sweep(ctx context.Context, srv *api.Server, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, rejected, err := srv.SweepOverdue(ctx); err != nil && ctx.Err() == nil {
			slog.Error("overdue sweep", "err", err)
		} else if n > 0 || rejected > 0 {
			slog.Info("overdue referrals", "notified", n, "rejected_no_response", rejected)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ensureOperator creates the operator organisation and its key on first
// start, writing the key to a file only the owner can read.
func ensureOperator(ctx context.Context, store storage.Store, dataDir string) error {
	path := filepath.Join(dataDir, "operator-key")
	secret, err := api.CreateOperator(ctx, store, time.Now().UTC())
	if errors.Is(err, storage.ErrAlreadyExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create operator: %w", err)
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write operator key: %w", err)
	}
	slog.Info("created the operator API key; keep it safe", "path", path)
	return nil
}
