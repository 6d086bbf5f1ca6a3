package api

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The call log: one line per call, gRPC and REST alike (REST reaches the
// services through the in-process channel, with these interceptors), with
// the method, the calling organisation and key, the outcome and the
// duration. It never holds personal data: no request or response fields,
// no error messages (they may quote what was sent), only the code and the
// stable reason.

// UnaryLog logs each unary call when it ends. It is the outermost of the
// exchange's interceptors and starts the call's note, which the others fill
// in.
func (s *Server) UnaryLog(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, n := withNote(ctx, info.FullMethod)
	start := time.Now()
	resp, err := handler(ctx, req)
	s.logCall(ctx, n, start, err, false)
	return resp, err
}

// StreamLog logs each streaming call when it ends.
//
// It also makes sure a stream refused before its handler ran (a bad key,
// the rate limit, the cap on open streams) reads the client's request
// before the refusal goes out. A refusal sent before the request arrives
// races the client's send, and grpc-go's client, when it loses that race
// while replaying a retried stream (after RATE_LIMITED, say), reports
// io.EOF, a clean end of stream, instead of the refusal. Read first, the
// client's send has always finished when the status arrives.
func (s *Server) StreamLog(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, n := withNote(ss.Context(), info.FullMethod)
	start := time.Now()
	rs := &readStream{ServerStream: authedStream{ss, ctx}}
	err := handler(srv, rs)
	if err != nil && !rs.read && !info.IsClientStream {
		// The one request of a server-streaming call; it is discarded,
		// with the codec's note of it if it could not be decoded.
		m := new(emptypb.Empty)
		_ = ss.RecvMsg(m)
		undecodable.Delete(m)
	}
	s.logCall(ctx, n, start, err, true)
	return err
}

// readStream notes whether the handler read from the stream.
type readStream struct {
	grpc.ServerStream
	read bool
}

func (r *readStream) RecvMsg(m any) error {
	r.read = true
	return r.ServerStream.RecvMsg(m)
}

// severity is how loud a call's outcome is: a fault of the exchange is an
// error; a refusal of a bad request is an ordinary call; a health check
// that passes (probes make one every few seconds) is debug.
func severity(method string, err error) slog.Level {
	switch status.Code(err) {
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable:
		return slog.LevelError
	case codes.OK:
		if strings.HasPrefix(method, "/grpc.health.v1.Health/") {
			return slog.LevelDebug
		}
	}
	return slog.LevelInfo
}

func (s *Server) logCall(ctx context.Context, n *callNote, start time.Time, err error, stream bool) {
	log, level := s.log, severity(n.method, err)
	if log == nil {
		log = slog.Default()
	}
	if !log.Enabled(ctx, level) {
		return
	}
	code, reason := outcome(err)
	attrs := make([]slog.Attr, 0, 9)
	attrs = append(attrs,
		slog.String("method", n.method),
		slog.String("organization", n.caller.Org),
		slog.String("credential", n.caller.KeyName),
		slog.String("code", code))
	if reason != "" {
		attrs = append(attrs, slog.String("reason", reason))
	}
	attrs = append(attrs, slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000))
	if stream {
		attrs = append(attrs, slog.Bool("stream", true))
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	log.LogAttrs(ctx, level, "call", attrs...)
}
