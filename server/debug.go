package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// serveDebug starts the benchmark anchors (--bench-addr, in a build with
// the bench tag) and the profiler (--pprof-addr) when asked, on loopback
// only; both stop with ctx.
func serveDebug(ctx context.Context, st settings) error {
	for _, a := range []struct{ flag, addr string }{{"--bench-addr", st.benchAddr}, {"--pprof-addr", st.pprofAddr}} {
		if a.addr != "" && !isLoopback(a.addr) {
			return fmt.Errorf("%s %s: benchmark and profiling listeners are for loopback addresses only", a.flag, a.addr)
		}
	}
	if st.benchAddr != "" {
		if err := serveAnchors(ctx, st); err != nil {
			return err
		}
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

// serveAnchors serves the benchmark anchors; set only in a build with the
// bench tag (anchors.go).
var serveAnchors func(ctx context.Context, st settings) error
