// Command server runs the referral exchange: the gRPC services on an
// embedded bbolt store. `go run ./server --demo` starts it with demo
// organisations; see README.md.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/social-prescribing/exchange/gateway"
	"github.com/social-prescribing/exchange/gateway/web"
	"github.com/social-prescribing/exchange/internal/buildinfo"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/demo"
	"github.com/social-prescribing/exchange/server/metrics"
	"github.com/social-prescribing/exchange/server/storage"
)

// envName is the environment variable of a flag: --tls-cert is
// EXCHANGE_TLS_CERT.
func envName(flagName string) string {
	return "EXCHANGE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// fromEnv sets flags from their EXCHANGE_ variables (all of them, or
// those named), and says so in their help. The command line, parsed
// afterwards, wins.
func fromEnv(fs *flag.FlagSet, only ...string) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if len(only) > 0 && !slices.Contains(only, f.Name) {
			return
		}
		name := envName(f.Name)
		f.Usage += " (env " + name + ")"
		if v := os.Getenv(name); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// settings are the server's flags.
type settings struct {
	grpcAddr, httpAddr, dataDir string
	demo                        bool
	demoReferrals               int
	overdueEvery, autoReject    time.Duration
	maxBody                     int64
	maxMessage                  int
	secureCookies               bool
	reportMinCount              int
	tls                         tlsFiles
	insecure                    bool
	retention                   days
	retentionEvery              time.Duration
	limits                      api.Limits
	logFormat, logLevel         string
	benchAddr, pprofAddr        string
	checkpointEvery             time.Duration
	etcd                        etcdFlags
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "restore" {
		os.Exit(restore(os.Args[2:]))
	}
	var st settings
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	fs.StringVar(&st.grpcAddr, "grpc-addr", "127.0.0.1:50051", "gRPC listen address")
	fs.StringVar(&st.httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address of the REST API, the web inbox, /docs, /healthz and /metrics")
	fs.StringVar(&st.dataDir, "data-dir", "data", "directory of the bbolt store, its log and the operator key")
	fs.DurationVar(&st.checkpointEvery, "checkpoint-interval", 100*time.Millisecond, "how often the bbolt file is brought up to date from the store's log, beside the writes; longer holds more writes in memory and makes each checkpoint a larger burst of disk writes")
	fs.StringVar(&st.etcd.endpoints, "etcd-endpoints", "", "store everything in this etcd cluster (comma-separated client URLs, https://a:2379,https://b:2379,https://c:2379) instead of the bbolt file; any number of exchanges may share one --etcd-prefix")
	fs.StringVar(&st.etcd.ca, "etcd-ca", "", "PEM CA certificates that sign the etcd members' certificates")
	fs.StringVar(&st.etcd.cert, "etcd-cert", "", "PEM client certificate to present to etcd, when the cluster asks for one")
	fs.StringVar(&st.etcd.key, "etcd-key", "", "PEM private key of --etcd-cert")
	fs.StringVar(&st.etcd.prefix, "etcd-prefix", "/exchange/", "the prefix of every key the exchange keeps in etcd, so that several exchanges can share a cluster")
	fs.BoolVar(&st.demo, "demo", false, "create demo organisations once and print their API keys")
	fs.IntVar(&st.demoReferrals, "demo-referrals", 300, "with --demo: how many synthetic referrals, spread over the past year with outcomes, to create the first time, so reports have something to show")
	fs.DurationVar(&st.overdueEvery, "overdue-interval", 30*time.Second, "how often to look for referrals past their reply-by deadline")
	fs.DurationVar(&st.autoReject, "auto-reject-after", 0, "reject a referral still REQUESTED this long after its reply-by deadline, with reason NO_RESPONSE; 0 (the default) never does")
	fs.BoolVar(&st.secureCookies, "secure-cookies", false, "mark the web inbox's session cookie Secure: give it when the pages are served over TLS, by the exchange or a proxy in front")
	fs.Int64Var(&st.maxBody, "max-body-bytes", gateway.DefaultMaxBodyBytes, "largest REST request body; larger ones get 413")
	fs.IntVar(&st.reportMinCount, "report-min-count", api.DefaultReportMinCount, "reports suppress every count from 1 to this minus one, and every statistic of fewer referrals")
	fs.IntVar(&st.maxMessage, "max-message-bytes", 1<<20, "largest gRPC request message; larger ones get RESOURCE_EXHAUSTED")
	fs.StringVar(&st.tls.cert, "tls-cert", "", "PEM certificate (chain) for both listeners; re-read when the file changes")
	fs.StringVar(&st.tls.key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&st.tls.clientCA, "client-ca", "", "PEM CA certificates: gRPC clients may present a certificate it signed instead of an API key; its Subject common name is the organisation id")
	fs.BoolVar(&st.insecure, "insecure", false, "allow plaintext on addresses other than loopback, for a TLS-terminating proxy in front")
	st.retention = days(730 * 24 * time.Hour)
	fs.Var(&st.retention, "retention", "clear the personal fields of referrals closed longer than this (e.g. 730d, 8760h); 0 never clears")
	fs.DurationVar(&st.retentionEvery, "retention-interval", time.Hour, "how often to apply --retention and delete stored answers older than the request_id window")
	fs.Float64Var(&st.limits.Rate, "rate-limit", 50, "calls per second each organisation may make, sustained; 0 does not limit")
	fs.IntVar(&st.limits.Burst, "rate-burst", 100, "calls an organisation may make at once above --rate-limit")
	fs.IntVar(&st.limits.Streams, "max-streams", 8, "event watches and backups one organisation may have open at once; 0 does not limit")
	fs.StringVar(&st.logFormat, "log-format", "text", "log lines as text (key=value) or json, on stderr")
	fs.StringVar(&st.logLevel, "log-level", "info", "least severe log lines written: debug, info (one line per call), warn or error")
	if serveAnchors != nil {
		fs.StringVar(&st.benchAddr, "bench-addr", "", "benchmarks only: serve the anchors the exchange is measured against (a bare gRPC echo and a plain fsynced bbolt write, tools/loadtest/anchor) on this loopback address")
	}
	fs.StringVar(&st.pprofAddr, "pprof-addr", "", "profiling only: serve net/http/pprof on this loopback address")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: server [flags]\n       server healthcheck [flags]\n       server restore --etcd-endpoints URLS --from FILE\n\nRuns the social prescribing referral exchange.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fromEnv(fs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	version := fs.Bool("version", false, "print the build (module version and commit) and exit")
	fs.Parse(os.Args[1:])
	if *version {
		fmt.Println(buildinfo.String("exchange-server"))
		return
	}
	log, err := newLogger(os.Stderr, st.logFormat, st.logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	slog.SetDefault(log)
	collectGarbageLessOften()
	if err := run(st); err != nil {
		log.Error("exchange stopped", "err", err)
		os.Exit(1)
	}
}

// gcPercent is the exchange's default GOGC. Its live heap is small (tens of
// megabytes, bounded by the writes of two checkpoint intervals, not growing
// with the store) but every write allocates bbolt's
// page copies, so at Go's default of 100 the collector runs every few
// hundred writes and took a fifth of the CPU under load; at 400 CreateReferral
// at 64 clients goes a third faster when the disk is not the limit
// (docs/benchmarks.md) for a heap of some tens of megabytes more. GOGC in the environment still wins, and
// GOMEMLIMIT (set from the memory limit in deploy/kubernetes) still caps it.
const gcPercent = 400

// streamWorkers is how many goroutines the gRPC servers keep to run calls
// on. Without them gRPC starts a goroutine per call, whose stack then grows
// through the interceptors and the store, copying itself each time: a
// profile of a lone client's CreateReferral put that at about 20µs a call
// (docs/benchmarks.md). Calls beyond the workers still get a goroutine of
// their own, so this bounds nothing.
const streamWorkers = 64

func collectGarbageLessOften() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

func run(st settings) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(st.dataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if err := st.checkListeners(); err != nil {
		return err
	}
	// An address in use is reported now, before the store opens: the demo
	// then creates nothing and prints no keys for an exchange that will
	// not start. (Listening for good this early would take connections
	// the server cannot yet answer.)
	for _, a := range []struct{ flag, addr string }{{"--grpc-addr", st.grpcAddr}, {"--http-addr", st.httpAddr}, {"--pprof-addr", st.pprofAddr}, {"--bench-addr", st.benchAddr}} {
		if a.addr == "" {
			continue
		}
		l, err := net.Listen("tcp", a.addr)
		if err != nil {
			return fmt.Errorf("%s %s: %w", a.flag, a.addr, err)
		}
		l.Close()
	}
	creds, err := st.tls.load()
	if err != nil {
		return err
	}
	m := metrics.New()
	// A failed fsync stops the store for good (storage.ErrStopped): the
	// exchange then stops serving and exits non-zero, so that its
	// supervisor restarts it and the log replays what reached the disk.
	fatal := make(chan error, 1)
	be, err := openBackend(ctx, st, m, fatal)
	if err != nil {
		return err
	}
	store := be.store
	defer store.Close()
	if err := ensureOperator(ctx, store, st.dataDir); err != nil {
		return err
	}
	srv := api.New(store, api.Options{AutoRejectAfter: st.autoReject, ReportMinCount: st.reportMinCount, Limits: st.limits})
	if st.demo {
		if err := demo.Ensure(ctx, srv, st.dataDir, st.demoReferrals); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}

	m.Watch(metrics.Sources{Store: store, Size: be.size, Watchers: srv.Watchers, Now: time.Now})
	tracing, stopTracing, err := setupTracing(ctx)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopTracing(sctx)
	}()

	// One gRPC server on the network (TLS when configured), and the same
	// services on an in-process channel, which the REST gateway and the
	// web pages call, so every rule runs in one place for all callers.
	// Around the exchange's own interceptors: tracing, when on, then the
	// RPC metrics.
	unary := append([]grpc.UnaryServerInterceptor{m.UnaryInterceptor()}, srv.UnaryInterceptors()...)
	stream := append([]grpc.StreamServerInterceptor{m.StreamInterceptor()}, srv.StreamInterceptors()...)
	gopts := []grpc.ServerOption{api.ServerCodec, grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(st.maxMessage), grpc.NumStreamWorkers(streamWorkers)}
	if tracing != nil {
		gopts = append(gopts, grpc.StatsHandler(tracing))
	}
	if creds.grpc != nil {
		gopts = append(gopts, grpc.Creds(creds.grpc))
	}
	hs := health.NewServer()
	g := grpc.NewServer(gopts...)
	srv.Register(g)
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)
	inproc := newInProcess(srv, unary, stream, tracing)
	m.InitializeMetrics(g)

	gl, err := net.Listen("tcp", st.grpcAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", st.grpcAddr, err)
	}
	hl, err := net.Listen("tcp", st.httpAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", st.httpAddr, err)
	}
	if creds.http != nil {
		hl = tls.NewListener(hl, creds.http)
	}
	if err := serveDebug(ctx, st); err != nil {
		return err
	}
	handler, err := httpHandler(ctx, inproc, m.Handler(), st.maxBody, st.secureCookies)
	if err != nil {
		return err
	}
	// No write timeout: long-polls last up to a minute and event streams
	// longer; slow clients are bounded by the header and idle timeouts.
	hsrv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}

	errc := make(chan error, 2)
	go func() { errc <- g.Serve(gl) }()
	go func() { errc <- hsrv.Serve(hl) }()
	go be.leading(ctx, func(ctx context.Context) {
		go keepRetention(ctx, srv, time.Duration(st.retention), st.retentionEvery)
		sweep(ctx, srv, st.overdueEvery)
	})
	go watchHealth(ctx, hs, be.healthy)
	storeName := filepath.Join(st.dataDir, "exchange.db")
	if st.etcd.on() {
		storeName = st.etcd.endpoints + " " + st.etcd.prefix
	}
	slog.Info("exchange listening", "grpc", gl.Addr().String(), "http", hl.Addr().String(), "store", storeName,
		"tls", creds.grpc != nil, "client_certificates", st.tls.clientCA != "")

	var stopped error
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case stopped = <-fatal:
		slog.Error("the store stopped: exiting so that a supervisor restarts the exchange", "err", stopped)
	}
	slog.Info("stopping: draining calls, then closing the store")
	hs.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if hsrv.Shutdown(sctx) != nil {
		hsrv.Close() // ends REST event streams and long-polls
	}
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		g.Stop() // streams (WatchEvents) do not end by themselves
	}
	inproc.wait(sctx)
	return errors.Join(stopped, store.Close())
}

// httpHandler serves, on the HTTP address: the REST API under /v1/, the
// OpenAPI document and its reference page, health, Prometheus metrics, and
// the web inbox.
func httpHandler(ctx context.Context, conn grpc.ClientConnInterface, metrics http.Handler, maxBody int64, secureCookies bool) (http.Handler, error) {
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
	mux.Handle("GET /metrics", metrics)
	mux.Handle("/v1/", gw)
	mux.Handle("GET /openapi.json", openapi)
	mux.Handle("GET /docs", docs)
	mux.Handle("/", web.New(conn, web.Options{SecureCookies: secureCookies}).Handler())
	return mux, nil
}

// keepRetention applies the retention period now and then.
func keepRetention(ctx context.Context, srv *api.Server, period, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := srv.SweepRetention(ctx, period); err != nil && ctx.Err() == nil {
			slog.Error("retention sweep", "err", err)
		} else if n > 0 {
			slog.Info("retention: cleared the personal fields of closed referrals", "referrals", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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

// newLogger is the server's logger: text or JSON lines on w, from level up.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: give debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: give text or json", format)
}
