package api

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// withCallerDeadline narrows ctx to the caller's absolute deadline
// (pb.DeadlineMetadata), when it sent one earlier than ctx's own.
func withCallerDeadline(ctx context.Context) (context.Context, context.CancelFunc, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(pb.DeadlineMetadata)
	if len(vals) == 0 {
		return ctx, func() {}, nil
	}
	var d time.Time
	for i, v := range vals { // the earliest, when a proxy added its own
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return nil, nil, apiError(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_MALFORMED_REQUEST,
				"the "+pb.DeadlineMetadata+" metadata must be an RFC 3339 time", map[string]string{"metadata": pb.DeadlineMetadata})
		}
		if i == 0 || t.Before(d) {
			d = t
		}
	}
	if !time.Now().Before(d) {
		return nil, nil, deadlinePassed("the caller's deadline passed before the exchange read the request: nothing was written")
	}
	if old, ok := ctx.Deadline(); ok && !d.Before(old) {
		return ctx, func() {}, nil
	}
	ctx, cancel := context.WithDeadline(ctx, d)
	return ctx, cancel, nil
}

// UnaryDeadline applies the caller's absolute deadline.
func (s *Server) UnaryDeadline(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, cancel, err := withCallerDeadline(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	return handler(ctx, req)
}

// StreamDeadline applies the caller's absolute deadline to a stream.
func (s *Server) StreamDeadline(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, cancel, err := withCallerDeadline(ss.Context())
	if err != nil {
		return err
	}
	defer cancel()
	return handler(srv, authedStream{ss, ctx})
}
