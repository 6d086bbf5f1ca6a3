package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/social-prescribing/exchange/server/metrics"
	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/bolt"
	"github.com/social-prescribing/exchange/server/storage/etcd"
	"github.com/social-prescribing/exchange/server/storage/kv"
)

// etcdFlags are the settings of the etcd engine; without endpoints the
// store is the bbolt file in the data directory.
type etcdFlags struct {
	endpoints, ca, cert, key, prefix string
}

func (f etcdFlags) on() bool { return f.endpoints != "" }

// tlsConfig is the client TLS of --etcd-ca, --etcd-cert and --etcd-key
// (nil: plaintext, for endpoints given as http://).
func (f etcdFlags) tlsConfig() (*tls.Config, error) {
	if f.ca == "" && f.cert == "" && f.key == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("--etcd-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-ca %s: no PEM certificate in it", f.ca)
		}
	}
	if (f.cert == "") != (f.key == "") {
		return nil, errors.New("--etcd-cert and --etcd-key go together")
	}
	if f.cert != "" {
		c, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert, --etcd-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// backend is the store the exchange runs on, and what the daemon needs of
// its engine beside the Store.
type backend struct {
	store storage.Store
	size  func() int64
	// leading, on etcd, runs fn while this process leads the cluster's
	// sweeps (an etcd election), again each time it leads anew; on bbolt
	// the process is alone, and it runs fn once.
	leading func(ctx context.Context, fn func(ctx context.Context))
	// healthy reports whether the store can serve (etcd: a quorum answers).
	healthy func(ctx context.Context) error
}

func openBackend(ctx context.Context, st settings, m *metrics.Metrics, fatal chan<- error) (*backend, error) {
	if !st.etcd.on() {
		eng, err := bolt.Open(filepath.Join(st.dataDir, "exchange.db"), bolt.Options{CheckpointInterval: st.checkpointEvery,
			OnCommit: m.ObserveCommit, OnCheckpoint: m.ObserveCheckpoint, OnRefused: m.ObserveRefused,
			OnFatal: func(err error) { fatal <- err }})
		if err != nil {
			return nil, err
		}
		store, err := storeOver(ctx, eng)
		if err != nil {
			return nil, err
		}
		return &backend{store: store, size: eng.Size,
			leading: func(ctx context.Context, fn func(context.Context)) { fn(ctx) },
			healthy: func(context.Context) error { return eng.Err() }}, nil
	}
	tlsCfg, err := st.etcd.tlsConfig()
	if err != nil {
		return nil, err
	}
	eng, err := etcd.Open(ctx, etcd.Options{Endpoints: strings.Split(st.etcd.endpoints, ","), TLS: tlsCfg, Prefix: st.etcd.prefix,
		OnCommit: m.ObserveTransaction})
	if err != nil {
		return nil, err
	}
	store, err := storeOver(ctx, eng)
	if err != nil {
		return nil, err
	}
	return &backend{store: store, size: func() int64 { return eng.Size(context.Background()) },
		leading: func(ctx context.Context, fn func(context.Context)) {
			lead(ctx, eng.Client(), eng.Prefix()+"leader/sweeps", fn)
		},
		healthy: eng.Healthy}, nil
}

// storeOver opens the Store over an engine, closing the engine if it
// cannot.
func storeOver(ctx context.Context, eng kv.Engine) (storage.Store, error) {
	store, err := storage.Open(ctx, eng)
	if err != nil {
		eng.Close()
	}
	return store, err
}

// lead campaigns in an etcd election until ctx ends, running fn while this
// process is the leader: when its session's lease lapses (the process lost
// the cluster, or stalled), fn's context ends and it campaigns again; when
// the process dies its lease ends and another takes over.
func lead(ctx context.Context, cli *clientv3.Client, key string, fn func(context.Context)) {
	host, _ := os.Hostname()
	for ctx.Err() == nil {
		session, err := concurrency.NewSession(cli, concurrency.WithTTL(leaseSeconds), concurrency.WithContext(ctx))
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		e := concurrency.NewElection(session, key)
		if err := e.Campaign(ctx, fmt.Sprintf("%s/%d", host, os.Getpid())); err != nil {
			session.Close()
			sleep(ctx, time.Second)
			continue
		}
		slog.Info("this exchange runs the cluster's sweeps", "election", key)
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-session.Done():
				slog.Warn("this exchange no longer runs the cluster's sweeps: its lease lapsed")
			case <-lctx.Done():
			}
			cancel()
		}()
		fn(lctx)
		cancel()
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		e.Resign(rctx)
		rcancel()
		session.Close()
	}
}

// leaseSeconds is how long the sweeps' leader may go unheard before
// another process takes them over.
const leaseSeconds = 10

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// watchHealth keeps the gRPC health service's answer to whether the store
// can serve: NOT_SERVING while it cannot (etcd: no quorum answers within
// a second), checked every two seconds.
func watchHealth(ctx context.Context, hs *health.Server, healthy func(context.Context) error) {
	serving := true
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := healthy(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if ok := err == nil; ok != serving {
			serving = ok
			if ok {
				slog.Info("the store answers again: serving")
				hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			} else {
				slog.Warn("the store does not answer: not serving", "err", err)
				hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
			}
		}
		sleep(ctx, 2*time.Second)
	}
}

// restore is `exchange-server restore`: it writes an etcd backup (the
// logical export AdminService.Backup streams on etcd) into an empty prefix
// of a cluster, for exchanges to be started on. (A bbolt backup is a store
// file: it needs no command, see docs/operations.md.)
func restore(args []string) int {
	fs := flag.NewFlagSet("exchange-server restore", flag.ContinueOnError)
	var f etcdFlags
	fs.StringVar(&f.endpoints, "etcd-endpoints", "", "the cluster to restore into (comma-separated client URLs)")
	fs.StringVar(&f.ca, "etcd-ca", "", "PEM CA certificates that sign the etcd members' certificates")
	fs.StringVar(&f.cert, "etcd-cert", "", "PEM client certificate to present to etcd")
	fs.StringVar(&f.key, "etcd-key", "", "PEM private key of --etcd-cert")
	fs.StringVar(&f.prefix, "etcd-prefix", "/exchange/", "the prefix to restore under; it must hold nothing")
	from := fs.String("from", "", "the backup file (exchangectl backup --file)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: exchange-server restore --etcd-endpoints URLS --from FILE [flags]\n\nWrites an etcd backup into an empty prefix of a cluster. Start the exchanges on that prefix afterwards.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !f.on() || *from == "" {
		fs.Usage()
		return 2
	}
	if err := restoreFrom(context.Background(), f, *from); err != nil {
		fmt.Fprintln(os.Stderr, "restore:", err)
		return 1
	}
	fmt.Printf("restored %s into %s under %s\n", *from, f.endpoints, f.prefix)
	return 0
}

func restoreFrom(ctx context.Context, f etcdFlags, path string) error {
	tlsCfg, err := f.tlsConfig()
	if err != nil {
		return err
	}
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	return etcd.Restore(ctx, etcd.Options{Endpoints: strings.Split(f.endpoints, ","), TLS: tlsCfg, Prefix: f.prefix}, file)
}
