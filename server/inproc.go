package main

import (
	"context"
	"sync"

	"github.com/fullstorydev/grpchan/inprocgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/social-prescribing/exchange/server/api"
)

// inProcess is the channel on which the REST gateway and the web pages
// call the exchange's services in this process: through the same
// interceptors, in the same order, and the same stats handler (tracing,
// when on) as calls over the network, with messages copied rather than
// marshalled and no HTTP/2 connection between. The calls it runs count in
// running, so that shutdown can wait for them before closing the store.
type inProcess struct {
	*inprocgrpc.Channel
	running sync.WaitGroup
}

func newInProcess(srv *api.Server, unary []grpc.UnaryServerInterceptor, stream []grpc.StreamServerInterceptor, sh stats.Handler) *inProcess {
	p := &inProcess{Channel: new(inprocgrpc.Channel)}
	count := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		p.running.Add(1)
		defer p.running.Done()
		return handler(ctx, req)
	}
	countStream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		p.running.Add(1)
		defer p.running.Done()
		return handler(srv, ss)
	}
	p.WithServerUnaryInterceptor(chainUnary(append([]grpc.UnaryServerInterceptor{count}, unary...))).
		WithServerStreamInterceptor(chainStream(append([]grpc.StreamServerInterceptor{countStream}, stream...)))
	if sh != nil {
		p.WithServerStatsHandler(sh)
	}
	srv.Register(p)
	return p
}

// wait waits for the calls running to return, or for ctx to end.
func (p *inProcess) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { p.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// chainUnary runs the interceptors as grpc.ChainUnaryInterceptor does:
// the first outermost.
func chainUnary(ints []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		for i := len(ints) - 1; i >= 0; i-- {
			next, in := handler, ints[i]
			handler = func(ctx context.Context, req any) (any, error) { return in(ctx, req, info, next) }
		}
		return handler(ctx, req)
	}
}

// chainStream is chainUnary for streams.
func chainStream(ints []grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		for i := len(ints) - 1; i >= 0; i-- {
			next, in := handler, ints[i]
			handler = func(srv any, ss grpc.ServerStream) error { return in(srv, ss, info, next) }
		}
		return handler(srv, ss)
	}
}
