// Package gateway serves the exchange's REST API: grpc-gateway handlers that
// call the gRPC services through a client connection (in the server, an
// in-process channel through the same interceptors), so authentication,
// authorisation, consent, validation and events run once, in server/api, for
// both. It also serves the OpenAPI document and the API reference page.
//
// JSON style (one for requests, responses and errors): protojson with
// lowerCamelCase field names, enums as their names, int64 as strings,
// timestamps in RFC 3339 and durations as "30s" (the proto3 JSON mapping);
// fields at their zero value (0, "", false, [], *_UNSPECIFIED) are left out
// of responses; an unknown field in a request is an error. Errors are google.rpc.Status as JSON: {"code", "message",
// "details": [ErrorInfo, BadRequest ...]} with the HTTP status of the
// grpc-gateway mapping (400, 401, 403, 404, 409, 412, 429, ...), and 413 for
// a body over the limit; FAILED_PRECONDITION is 412 (see HTTPStatus).
package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// DefaultMaxBodyBytes is the largest request body accepted unless
// Options.MaxBodyBytes says otherwise.
const DefaultMaxBodyBytes = 1 << 20

// Options configure the gateway.
type Options struct {
	// MaxBodyBytes is the largest request body; DefaultMaxBodyBytes when 0.
	MaxBodyBytes int64
}

// Marshaler is the gateway's JSON style; the web inbox and tests use it too.
var Marshaler = &jsonStyle{runtime.JSONPb{
	MarshalOptions:   protojson.MarshalOptions{},
	UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
}}

// jsonStyle is grpc-gateway's JSONPb with a decoder that parses a body
// once. JSONPb's own scans the body with encoding/json to find where the
// value ends and then hands those bytes to protojson, and a body was
// checked for JSON syntax before that: three parses of every body, a
// tenth of the server's CPU on a REST CreateReferral
// (docs/benchmarks.md). The body is already whole in memory (limitBody),
// so protojson parses it alone; only a body it refuses is checked again,
// to say where it stops being JSON.
type jsonStyle struct{ runtime.JSONPb }

var protoMessage = reflect.TypeFor[proto.Message]()

func (j *jsonStyle) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return io.EOF // no body: the handlers read the request from its path and parameters
		}
		m, ok := v.(proto.Message)
		if !ok {
			// A message field named as the body (body: "referral"): the
			// generated handler passes the field's address (a
			// **pb.Referral), the Decoder's documented argument, which
			// JSONPb's own decoder also takes apart by reflection
			// (decodeNonProtoField).
			if f := reflect.ValueOf(v); f.Kind() == reflect.Pointer && f.Elem().Kind() == reflect.Pointer && f.Elem().Type().Implements(protoMessage) {
				if f.Elem().IsNil() {
					f.Elem().Set(reflect.New(f.Elem().Type().Elem()))
				}
				m, ok = f.Elem().Interface().(proto.Message), true
			}
		}
		if ok {
			err = j.UnmarshalOptions.Unmarshal(b, m)
		} else {
			// A body naming a field that is not a message (none in the
			// contract today), as JSONPb decodes it.
			err = j.JSONPb.NewDecoder(bytes.NewReader(b)).Decode(v)
		}
		if err != nil {
			if msg := jsonSyntax(b); msg != "" {
				return errors.New(msg)
			}
		}
		return err
	})
}

// New returns the REST API handler for every RPC, calling the exchange on conn.
func New(ctx context.Context, conn grpc.ClientConnInterface, opt Options) (http.Handler, error) {
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = DefaultMaxBodyBytes
	}
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, Marshaler),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithRoutingErrorHandler(routingError),
	)
	for _, err := range []error{
		pb.RegisterDirectoryServiceHandlerClient(ctx, mux, pb.NewDirectoryServiceClient(conn)),
		pb.RegisterCapacityServiceHandlerClient(ctx, mux, pb.NewCapacityServiceClient(conn)),
		pb.RegisterConsentServiceHandlerClient(ctx, mux, pb.NewConsentServiceClient(conn)),
		pb.RegisterReferralServiceHandlerClient(ctx, mux, pb.NewReferralServiceClient(conn)),
		pb.RegisterFeedbackServiceHandlerClient(ctx, mux, pb.NewFeedbackServiceClient(conn)),
		pb.RegisterEventServiceHandlerClient(ctx, mux, pb.NewEventServiceClient(conn)),
		pb.RegisterApiKeyServiceHandlerClient(ctx, mux, pb.NewApiKeyServiceClient(conn)),
		pb.RegisterReportServiceHandlerClient(ctx, mux, pb.NewReportServiceClient(conn)),
		pb.RegisterAdminServiceHandlerClient(ctx, mux, pb.NewAdminServiceClient(conn)),
	} {
		if err != nil {
			return nil, err
		}
	}
	return limitBody(mux, opt.MaxBodyBytes), nil
}

// errorHandler is grpc-gateway's, with an ErrorInfo added to errors the
// gateway itself raises (a body or parameter it cannot parse).
func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	st := status.Convert(err)
	if st.Code() == codes.InvalidArgument && !hasErrorInfo(st) {
		// Bodies the decoder refused (not JSON, or of the wrong shape:
		// an unknown field) and unparsable parameters.
		st = withReason(st, pb.ErrorReason_ERROR_REASON_MALFORMED_REQUEST, nil)
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.RetryDelay != nil {
			// Rate limited: HTTP clients read the delay from Retry-After
			// (whole seconds, rounded up).
			secs := (ri.RetryDelay.AsDuration() + time.Second - 1) / time.Second
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(secs))))
		}
	}
	WriteError(w, HTTPStatus(st.Code()), st)
}

// routingError answers a path no method has (404) or an HTTP method the
// path does not take (405) in the gateway's error JSON, with a reason.
func routingError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	code, msg := codes.NotFound, "no method of the API has the path "+r.URL.Path
	if httpStatus == http.StatusMethodNotAllowed {
		code, msg = codes.InvalidArgument, r.Method+" is not a method of "+r.URL.Path
	} else if httpStatus != http.StatusNotFound {
		code, msg = codes.InvalidArgument, "the request cannot be routed"
	}
	WriteError(w, httpStatus, withReason(status.New(code, msg), pb.ErrorReason_ERROR_REASON_UNKNOWN_ROUTE, nil))
}

// HTTPStatus is grpc-gateway's mapping of a gRPC code to an HTTP status,
// with one change: FAILED_PRECONDITION is 412, not 400, so that a rule of
// the exchange (consent, capacity, the state of a referral) is told apart
// from a malformed request.
func HTTPStatus(c codes.Code) int {
	if c == codes.FailedPrecondition {
		return http.StatusPreconditionFailed
	}
	return runtime.HTTPStatusFromCode(c)
}

func hasErrorInfo(st *status.Status) bool {
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.ErrorInfo); ok {
			return true
		}
	}
	return false
}

func withReason(st *status.Status, reason pb.ErrorReason, meta map[string]string) *status.Status {
	info := &errdetails.ErrorInfo{Reason: pb.Code(reason), Domain: pb.ErrorDomain, Metadata: meta}
	if s, err := st.WithDetails(info); err == nil {
		return s
	}
	return st
}

// WriteError writes st as the gateway's JSON error with HTTP status code.
func WriteError(w http.ResponseWriter, code int, st *status.Status) {
	b, err := Marshaler.Marshal(st.Proto())
	if err != nil {
		b = []byte(`{"code":13,"message":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b)
}

// jsonSyntax describes where a non-empty body stops being JSON, or returns "".
func jsonSyntax(b []byte) string {
	if len(bytes.TrimSpace(b)) == 0 || json.Valid(b) {
		return ""
	}
	var v any
	err := json.Unmarshal(b, &v)
	var syn *json.SyntaxError
	if !errors.As(err, &syn) {
		return "the body is not valid JSON"
	}
	line, col := 1, 1
	for _, c := range b[:min(int(syn.Offset), len(b))] {
		if c == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return fmt.Sprintf("the body is not valid JSON: %v (line %d, column %d)", syn, line, col)
}

// limitBody refuses an address that is not UTF-8 (400) and bodies over max
// bytes (413) before any is decoded, and holds the body in memory for the
// decoder (jsonStyle).
func limitBody(next http.Handler, max int64) http.Handler {
	tooLarge := func(w http.ResponseWriter) {
		st := withReason(status.New(codes.InvalidArgument, fmt.Sprintf("the request body is larger than %d bytes", max)),
			pb.ErrorReason_ERROR_REASON_REQUEST_TOO_LARGE, map[string]string{"limit_bytes": fmt.Sprint(max)})
		WriteError(w, http.StatusRequestEntityTooLarge, st)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if field, bad := BadURL(r.URL); bad {
			// The caller's fault, logged as the call log logs one (never
			// the address itself).
			LogMalformed(r.Context(), r.Method, field)
			WriteError(w, http.StatusBadRequest, badURL(field))
			return
		}
		if r.ContentLength > max {
			tooLarge(w)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				tooLarge(w)
				return
			case err != nil:
				WriteError(w, http.StatusBadRequest, withReason(status.New(codes.InvalidArgument, "reading the request body: "+err.Error()),
					pb.ErrorReason_ERROR_REASON_MALFORMED_REQUEST, nil))
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		next.ServeHTTP(w, r)
	})
}

// badURL is the refusal of an address whose field (the path or a query
// parameter) is not valid UTF-8.
func badURL(field string) *status.Status {
	st := withReason(status.New(codes.InvalidArgument, "the request's "+field+" is not valid UTF-8"),
		pb.ErrorReason_ERROR_REASON_MALFORMED_REQUEST, nil)
	if s, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: field, Description: "is not valid UTF-8"}}}); err == nil {
		return s
	}
	return st
}

// LogMalformed logs a request the gateway or the web pages refused before
// it became a call, because field (of its address or form) is not UTF-8: as
// the caller's fault, as the server's call log logs one, never the value
// itself.
func LogMalformed(ctx context.Context, httpMethod, field string) {
	slog.InfoContext(ctx, "refused", "http_method", httpMethod, "code", "INVALID_ARGUMENT",
		"reason", "MALFORMED_REQUEST", "field", field)
}

// BadURL returns where a request's address is not valid UTF-8 once
// unescaped ("path", or the name of a query parameter), and whether it is
// anywhere. The gateway and the web pages refuse such a request as the
// caller's fault before it becomes a message (the server checks
// messages: validate.BadUTF8).
func BadURL(u *url.URL) (string, bool) {
	if !utf8.ValidString(u.Path) {
		return "path", true
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return "query", true
	}
	return BadValues(q)
}

// BadValues returns the name of the first of a query's or a form's values
// that is not valid UTF-8 ("query" for a name that is not), and whether
// there is one.
func BadValues(q url.Values) (string, bool) {
	for k, vs := range q {
		if !utf8.ValidString(k) {
			return "query", true
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return k, true
			}
		}
	}
	return "", false
}
