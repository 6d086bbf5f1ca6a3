package api

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/server/storage"
)

// apiError builds a status with an ErrorInfo detail carrying the reason,
// and any further details (BadRequest, RetryInfo).
func apiError(code codes.Code, reason pb.ErrorReason, msg string, meta map[string]string, extra ...protoadapt.MessageV1) error {
	info := &errdetails.ErrorInfo{Reason: pb.Code(reason), Domain: pb.ErrorDomain, Metadata: meta}
	st, err := status.New(code, msg).WithDetails(append([]protoadapt.MessageV1{info}, extra...)...)
	if err != nil {
		return status.Error(codes.Internal, "building error details")
	}
	return st.Err()
}

// invalid returns INVALID_ARGUMENT with a field violation per bad field, or
// nil when there are none.
func invalid(v validate.Violations) error {
	if len(v) == 0 {
		return nil
	}
	fields := make([]string, 0, len(v))
	for _, f := range v {
		fields = append(fields, f.Field)
	}
	return apiError(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_FIELD_INVALID,
		"invalid request: "+v[0].Field+" "+v[0].Description+more(len(v)),
		map[string]string{"fields": strings.Join(fields, ",")}, &errdetails.BadRequest{FieldViolations: v})
}

func more(n int) string {
	if n > 1 {
		return " (and more: see the field violations)"
	}
	return ""
}

func invalidField(field, desc string) error {
	var v validate.Violations
	v.Add(field, "%s", desc)
	return invalid(v)
}

func deadlinePassed(msg string) error {
	return apiError(codes.DeadlineExceeded, pb.ErrorReason_ERROR_REASON_DEADLINE_PASSED, msg, nil)
}

func notFound(resource string) error {
	return apiError(codes.NotFound, pb.ErrorReason_ERROR_REASON_RESOURCE_NOT_FOUND, resource+" not found",
		map[string]string{"resource": resource})
}

func notAllowed(resource, what string) error {
	return apiError(codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_NOT_ALLOWED, what,
		map[string]string{"resource": resource})
}

func etagMismatch(current string) error {
	return apiError(codes.Aborted, pb.ErrorReason_ERROR_REASON_ETAG_MISMATCH,
		"the resource changed since it was read: read it again", map[string]string{"etag": current})
}

// storeError maps an error from the store (or already a status) to a status.
func storeError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return deadlinePassed("the call's deadline passed before the store took it: nothing was written; retry with the same request_id")
	case errors.Is(err, storage.ErrClosed):
		return apiError(codes.Unavailable, pb.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE,
			"the exchange is shutting down: retry with the same request_id", nil)
	case errors.Is(err, storage.ErrAlreadyExists):
		return apiError(codes.AlreadyExists, pb.ErrorReason_ERROR_REASON_RESOURCE_EXISTS, "already exists", nil)
	case errors.Is(err, storage.ErrNotFound):
		return apiError(codes.NotFound, pb.ErrorReason_ERROR_REASON_RESOURCE_NOT_FOUND, "not found", nil)
	}
	slog.ErrorContext(ctx, "store failure", "err", err)
	if errors.Is(err, syscall.ENOSPC) {
		return apiError(codes.Unavailable, pb.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE,
			"the exchange's disk is full: nothing was written; retry later with the same request_id", nil)
	}
	if errors.Is(err, storage.ErrStopped) {
		return apiError(codes.Unavailable, pb.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE,
			"the exchange's disk failed and it is restarting: whether this call was kept is not known; retry with the same request_id once it is back", nil)
	}
	if errors.Is(err, storage.ErrTooLarge) {
		return apiError(codes.ResourceExhausted, pb.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE,
			"this change is larger than the store takes in one transaction (on etcd, its --max-txn-ops and --max-request-bytes): nothing was written", nil)
	}
	if errors.Is(err, storage.ErrUnavailable) {
		return apiError(codes.Unavailable, pb.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE,
			"the exchange could not reach its store: whether this call was kept is not known; retry with the same request_id", nil)
	}
	if errors.Is(err, storage.ErrWriteFailed) {
		return apiError(codes.Unavailable, pb.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE,
			"the store could not write: nothing was written; retry later with the same request_id", nil)
	}
	return apiError(codes.Internal, pb.ErrorReason_ERROR_REASON_INTERNAL, "internal error", nil)
}
