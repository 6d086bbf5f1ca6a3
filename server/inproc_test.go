package main

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage/bolt"
)

// TestChainRunsFirstOutermost: the in-process channel's chains run their
// interceptors in the order grpc.ChainUnaryInterceptor and
// grpc.ChainStreamInterceptor do, so REST calls meet the rules in the same
// order as gRPC ones.
func TestChainRunsFirstOutermost(t *testing.T) {
	want := []string{"a in", "b in", "c in", "handler", "c out", "b out", "a out"}
	for _, kind := range []string{"unary", "stream"} {
		t.Run(kind, func(t *testing.T) {
			var got []string
			var unary []grpc.UnaryServerInterceptor
			var stream []grpc.StreamServerInterceptor
			for _, name := range []string{"a", "b", "c"} {
				unary = append(unary, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
					got = append(got, name+" in")
					defer func() { got = append(got, name+" out") }()
					return h(ctx, req)
				})
				stream = append(stream, func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
					got = append(got, name+" in")
					defer func() { got = append(got, name+" out") }()
					return h(srv, ss)
				})
			}
			if kind == "unary" {
				chainUnary(unary)(context.Background(), nil, &grpc.UnaryServerInfo{}, func(context.Context, any) (any, error) {
					got = append(got, "handler")
					return nil, nil
				})
			} else {
				chainStream(stream)(nil, nil, &grpc.StreamServerInfo{}, func(any, grpc.ServerStream) error {
					got = append(got, "handler")
					return nil
				})
			}
			if !slices.Equal(got, want) {
				t.Errorf("ran %q, want %q", got, want)
			}
		})
	}
}

// TestInProcessWaitsForRunningCalls: shutdown's wait on the in-process
// channel returns only once the calls it runs have returned (or its
// context ends), so the store is not closed under them; and the calls run
// through the interceptors given.
func TestInProcessWaitsForRunningCalls(t *testing.T) {
	store, err := exchangetest.OpenBolt(filepath.Join(t.TempDir(), "exchange.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	entered, release := make(chan struct{}), make(chan struct{})
	hold := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		close(entered)
		<-release
		return h(ctx, req)
	}
	srv := api.New(store, api.Options{})
	p := newInProcess(srv, append([]grpc.UnaryServerInterceptor{hold}, srv.UnaryInterceptors()...), nil, nil)
	done := make(chan error, 1)
	go func() {
		_, err := pb.NewDirectoryServiceClient(p).ListOrganizations(context.Background(), &pb.ListOrganizationsRequest{})
		done <- err
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	p.wait(ctx)
	select {
	case err := <-done:
		t.Fatalf("the call returned (%v) while held", err)
	default:
	}
	if ctx.Err() == nil {
		t.Fatal("wait returned while a call was running")
	}
	close(release)
	p.wait(context.Background())
	// It ran through the exchange's interceptors: without a key, it is
	// refused.
	if err := <-done; status.Code(err) != codes.Unauthenticated {
		t.Fatalf("the call without a key, released: %v; want UNAUTHENTICATED", err)
	}
}
