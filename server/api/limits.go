package api

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// Limits bound what one organisation may ask of the exchange, so that one
// misbehaving client cannot starve the others. Zero fields do not limit.
type Limits struct {
	// Rate is the sustained number of calls per second per organisation,
	// and Burst how many may come at once above it.
	Rate  float64
	Burst int
	// Streams is how many streams (event watches, backups) one
	// organisation may have open at once.
	Streams int
}

// limiter applies Limits per organisation.
type limiter struct {
	Limits
	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	streams map[string]int
}

func newLimiter(l Limits) *limiter {
	if l.Burst <= 0 {
		l.Burst = max(1, int(2*l.Rate))
	}
	return &limiter{Limits: l, buckets: map[string]*rate.Limiter{}, streams: map[string]int{}}
}

// allow takes one call from org's budget, or says how long to wait.
func (l *limiter) allow(org string) (time.Duration, bool) {
	if l.Rate <= 0 || org == "" {
		return 0, true
	}
	l.mu.Lock()
	b, ok := l.buckets[org]
	if !ok {
		b = rate.NewLimiter(rate.Limit(l.Rate), l.Burst)
		l.buckets[org] = b
	}
	l.mu.Unlock()
	r := b.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return d, false
	}
	return 0, true
}

// open counts a stream of org, or refuses it; close gives it back.
func (l *limiter) open(org string) bool {
	if l.Streams <= 0 || org == "" {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams[org] >= l.Streams {
		return false
	}
	l.streams[org]++
	return true
}

func (l *limiter) close(org string) {
	if l.Streams <= 0 || org == "" {
		return
	}
	l.mu.Lock()
	l.streams[org]--
	l.mu.Unlock()
}

// rateLimited is RESOURCE_EXHAUSTED with the delay as RetryInfo, and as the
// grpc-retry-pushback-ms trailer that gRPC clients' retry policies obey.
func rateLimited(ctx context.Context, wait time.Duration) error {
	// Rounded up: a client that waits exactly this long must get through.
	ms := max(1, int64((wait+time.Millisecond-1)/time.Millisecond))
	grpc.SetTrailer(ctx, metadata.Pairs("grpc-retry-pushback-ms", fmt.Sprint(ms)))
	return apiError(codes.ResourceExhausted, pb.ErrorReason_ERROR_REASON_RATE_LIMITED,
		fmt.Sprintf("too many requests from this organisation: retry in %d ms", ms),
		map[string]string{"retry_after_ms": fmt.Sprint(ms)}, &errdetails.RetryInfo{RetryDelay: durationpb.New(time.Duration(ms) * time.Millisecond)})
}

// UnaryLimit applies the rate limit to authenticated unary calls. It runs
// after authentication.
func (s *Server) UnaryLimit(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if wait, ok := s.limits.allow(CallerFrom(ctx).Org); !ok {
		return nil, rateLimited(ctx, wait)
	}
	return handler(ctx, req)
}

// StreamLimit applies the rate limit and the cap on open streams to
// authenticated streaming calls. It runs after authentication.
func (s *Server) StreamLimit(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	org := CallerFrom(ss.Context()).Org
	if wait, ok := s.limits.allow(org); !ok {
		return rateLimited(ss.Context(), wait)
	}
	if !s.limits.open(org) {
		ss.SetTrailer(metadata.Pairs("grpc-retry-pushback-ms", "-1")) // retrying will not help
		return apiError(codes.ResourceExhausted, pb.ErrorReason_ERROR_REASON_TOO_MANY_STREAMS,
			fmt.Sprintf("this organisation already has %d streams open: close one first", s.limits.Streams),
			map[string]string{"limit": fmt.Sprint(s.limits.Streams)})
	}
	defer s.limits.close(org)
	return handler(srv, ss)
}

// UnaryInterceptors are the server's interceptors of unary calls in the
// order they must run: the call log (outermost, so it times everything),
// the refusal of requests that cannot be read (UnaryWellFormed: before
// anything reads them), the caller's absolute deadline (UnaryDeadline),
// audit (so it records refusals), authentication,
// limits, then extra ones
// (tests inject faults there). StreamInterceptors are those of streams, in
// the same order. Interceptors that run before them run outside these.
func (s *Server) UnaryInterceptors(extra ...grpc.UnaryServerInterceptor) []grpc.UnaryServerInterceptor {
	return append([]grpc.UnaryServerInterceptor{s.UnaryLog, s.UnaryWellFormed, s.UnaryDeadline, s.UnaryAudit, s.UnaryAuth, s.UnaryLimit}, extra...)
}

// StreamInterceptors: see UnaryInterceptors.
func (s *Server) StreamInterceptors() []grpc.StreamServerInterceptor {
	return []grpc.StreamServerInterceptor{s.StreamLog, s.StreamWellFormed, s.StreamDeadline, s.StreamAudit, s.StreamAuth, s.StreamLimit}
}

// Interceptors are UnaryInterceptors and StreamInterceptors as server
// options, with the codec they rely on (ServerCodec). Interceptors given in
// earlier server options run outside these.
func (s *Server) Interceptors(extra ...grpc.UnaryServerInterceptor) []grpc.ServerOption {
	return []grpc.ServerOption{ServerCodec,
		grpc.ChainUnaryInterceptor(s.UnaryInterceptors(extra...)...),
		grpc.ChainStreamInterceptor(s.StreamInterceptors()...),
	}
}
