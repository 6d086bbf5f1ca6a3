//go:build bench

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"

	"github.com/social-prescribing/exchange/tools/loadtest/anchor"
)

// The anchors the exchange is measured against are linked only into a
// build for measurement (go build -tags bench ./server, as scripts/bench.sh
// does), never into exchange-server.
func init() { serveAnchors = anchors }

// anchors serves the anchors on st.benchAddr until ctx ends.
func anchors(ctx context.Context, st settings) error {
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
	return nil
}
