package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"

	"github.com/social-prescribing/exchange/server/loadtest/anchor"
)

// serveDebug starts the benchmark anchors (--bench-addr) and the profiler
// (--pprof-addr) when asked, on loopback only; both stop with ctx.
func serveDebug(ctx context.Context, st settings) error {
	for _, a := range []struct{ flag, addr string }{{"--bench-addr", st.benchAddr}, {"--pprof-addr", st.pprofAddr}} {
		if a.addr != "" && !isLoopback(a.addr) {
			return fmt.Errorf("%s %s: benchmark and profiling listeners are for loopback addresses only", a.flag, a.addr)
		}
	}
	if st.benchAddr != "" {
		db, err := bolt.Open(filepath.Join(st.dataDir, "bench.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
		if err != nil {
			return fmt.Errorf("--bench-addr: %w", err)
		}
		g := grpc.NewServer(grpc.MaxRecvMsgSize(st.maxMessage))
		if err := anchor.Register(g, db); err != nil {
			return err
		}
		l, err := net.Listen("tcp", st.benchAddr)
		if err != nil {
			return fmt.Errorf("--bench-addr: %w", err)
		}
		go g.Serve(l)
		go func() { <-ctx.Done(); g.Stop(); db.Close() }()
		slog.Warn("serving benchmark anchors: for measurement only", "addr", l.Addr().String())
	}
	if st.pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		l, err := net.Listen("tcp", st.pprofAddr)
		if err != nil {
			return fmt.Errorf("--pprof-addr: %w", err)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(l)
		go func() { <-ctx.Done(); srv.Close() }()
		slog.Warn("serving the profiler: for measurement only", "addr", l.Addr().String())
	}
	return nil
}
