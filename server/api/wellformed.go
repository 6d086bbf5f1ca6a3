package api

import (
	"context"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/validate"
)

// A request the exchange cannot read (bytes that are not its message,
// strings that are not UTF-8) is the caller's fault: INVALID_ARGUMENT with
// the reason MALFORMED_REQUEST, as over REST, never INTERNAL.
//
// grpc-go decodes a request before any interceptor runs and reports a
// failure there as INTERNAL without details. So the server's codec
// (ServerCodec) decodes as protobuf does and, when that fails, notes the
// failure against the message and lets the call go on; UnaryWellFormed,
// next inside the call log, refuses the call on that note. It also checks
// the strings of requests that reach the services without being decoded
// (the REST gateway and the web pages call them in process, copying
// messages).

// ServerCodec is the server option that installs the exchange's codec.
var ServerCodec = grpc.ForceServerCodecV2(codec{encoding.GetCodecV2("proto")})

type codec struct{ encoding.CodecV2 }

// undecodable holds, by request message, why it could not be decoded,
// until UnaryWellFormed or the stream's RecvMsg takes it (or StreamLog,
// for the request of a stream refused before its handler read it).
var undecodable sync.Map

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err != nil {
		if m, ok := v.(proto.Message); ok {
			proto.Reset(m)
			undecodable.Store(v, err.Error())
			return nil
		}
	}
	return err
}

// malformed is the refusal of a request that cannot be read; field, when
// known, is the offending field.
func malformed(why, field string) error {
	var extra []*errdetails.BadRequest_FieldViolation
	msg := "the request is not a well-formed message: " + why
	if field != "" {
		extra = append(extra, &errdetails.BadRequest_FieldViolation{Field: field, Description: "is not valid UTF-8"})
		msg = "the request's " + field + " is not valid UTF-8"
	}
	return apiError(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_MALFORMED_REQUEST, msg, nil,
		&errdetails.BadRequest{FieldViolations: extra})
}

// wellFormed reports why req cannot be read, or nil.
func wellFormed(req any) error {
	if why, ok := undecodable.LoadAndDelete(req); ok {
		return malformed(why.(string), "")
	}
	if m, ok := req.(proto.Message); ok {
		if field, bad := validate.BadUTF8(m.ProtoReflect()); bad {
			return malformed("", field)
		}
	}
	return nil
}

// UnaryWellFormed refuses a request that cannot be read.
func (s *Server) UnaryWellFormed(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := wellFormed(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// StreamWellFormed refuses a stream's request that cannot be read.
func (s *Server) StreamWellFormed(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, wellFormedStream{ss})
}

type wellFormedStream struct{ grpc.ServerStream }

func (w wellFormedStream) RecvMsg(m any) error {
	if err := w.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return wellFormed(m)
}
