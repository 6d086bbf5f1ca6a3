package api

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/validate"
)

// ErrorDomain is the ErrorInfo domain of every error the exchange returns.
const ErrorDomain = "exchange.socialprescribing.uk"

// apiError builds a status with an ErrorInfo detail carrying the reason.
func apiError(code codes.Code, reason pb.ErrorReason, msg string, meta map[string]string, extra ...*errdetails.BadRequest) error {
	st := status.New(code, msg)
	info := &errdetails.ErrorInfo{Reason: Reason(reason), Domain: ErrorDomain, Metadata: meta}
	details := []any{info}
	for _, e := range extra {
		details = append(details, e)
	}
	var err error
	if st, err = withDetails(st, details...); err != nil {
		return status.Error(codes.Internal, "building error details")
	}
	return st.Err()
}

func withDetails(st *status.Status, details ...any) (*status.Status, error) {
	var err error
	for _, d := range details {
		switch m := d.(type) {
		case *errdetails.ErrorInfo:
			st, err = st.WithDetails(m)
		case *errdetails.BadRequest:
			st, err = st.WithDetails(m)
		}
		if err != nil {
			return nil, err
		}
	}
	return st, nil
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
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, storage.ErrClosed):
		return apiError(codes.Unavailable, pb.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE,
			"the exchange is shutting down: retry with the same request_id", nil)
	case errors.Is(err, storage.ErrAlreadyExists):
		return apiError(codes.AlreadyExists, pb.ErrorReason_ERROR_REASON_RESOURCE_EXISTS, "already exists", nil)
	case errors.Is(err, storage.ErrNotFound):
		return apiError(codes.NotFound, pb.ErrorReason_ERROR_REASON_RESOURCE_NOT_FOUND, "not found", nil)
	}
	slog.ErrorContext(ctx, "store failure", "err", err)
	if strings.Contains(err.Error(), "commit") {
		return apiError(codes.Unavailable, pb.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE,
			"the store could not write: retry later with the same request_id", nil)
	}
	return apiError(codes.Internal, pb.ErrorReason_ERROR_REASON_INTERNAL, "internal error", nil)
}
