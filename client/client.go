// Package client is the Go client of the referral exchange, for GP system
// suppliers, link worker services and scripts.
//
// Dial returns a connection that carries the organisation's API key on every
// call, gives every mutation a request_id when the caller has not set one,
// and retries UNAVAILABLE with the same request_id (gRPC's own retry policy,
// from the service config), so a retry never creates a second referral.
// Watch follows the event feed across disconnects and server restarts.
package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// Client is a connection to the exchange with every service's stub.
type Client struct {
	Conn      *grpc.ClientConn
	Directory pb.DirectoryServiceClient
	Capacity  pb.CapacityServiceClient
	Consents  pb.ConsentServiceClient
	Referrals pb.ReferralServiceClient
	Feedback  pb.FeedbackServiceClient
	Events    pb.EventServiceClient
	APIKeys   pb.ApiKeyServiceClient
	Reports   pb.ReportServiceClient
	Admin     pb.AdminServiceClient
}

type options struct {
	key      string
	tls      *tls.Config
	insecure bool
	extra    []grpc.DialOption
}

// Option configures Dial.
type Option func(*options)

// WithAPIKey sends key (sprx_...) as `authorization: Bearer <key>` on every call.
func WithAPIKey(key string) Option { return func(o *options) { o.key = key } }

// WithTLS uses TLS with cfg (nil: the system roots).
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls = cfg
	}
}

// WithInsecure uses plaintext, for an exchange on the loopback interface.
// The API key is then sent in clear, so use it only on 127.0.0.1 or ::1.
func WithInsecure() Option { return func(o *options) { o.insecure = true } }

// WithDialOptions adds gRPC dial options.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.extra = append(o.extra, opts...) }
}

// serviceConfig retries UNAVAILABLE and RESOURCE_EXHAUSTED on every
// exchange method. Mutations are safe to retry because the request_id
// interceptor runs before the retry loop: every attempt carries the same
// request_id, and the exchange returns the first response to a repeated one.
// A rate-limited call is retried after the delay the exchange sends
// (grpc-retry-pushback-ms); a refusal that waiting cannot cure (too many
// streams) says so and is not retried.
const serviceConfig = `{
  "methodConfig": [{
    "name": [
      {"service": "exchange.v1.DirectoryService"}, {"service": "exchange.v1.CapacityService"},
      {"service": "exchange.v1.ConsentService"}, {"service": "exchange.v1.ReferralService"},
      {"service": "exchange.v1.FeedbackService"}, {"service": "exchange.v1.EventService"},
      {"service": "exchange.v1.ApiKeyService"}, {"service": "exchange.v1.ReportService"},
      {"service": "exchange.v1.AdminService"}
    ],
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.2s",
      "maxBackoff": "5s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]
    }
  }]
}`

// Dial connects to the exchange at target (host:port). It does not wait
// for the connection; the first call does.
func Dial(target string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	dial := []grpc.DialOption{
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithChainUnaryInterceptor(RequestIDs, Deadlines),
		grpc.WithChainStreamInterceptor(StreamDeadlines),
	}
	switch {
	case o.tls != nil:
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(o.tls)))
	case o.insecure:
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	default:
		return nil, errors.New("client: choose WithTLS or, for loopback only, WithInsecure")
	}
	if o.key != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{key: o.key, tls: o.tls != nil}))
	}
	conn, err := grpc.NewClient(target, append(dial, o.extra...)...)
	if err != nil {
		return nil, err
	}
	return New(conn), nil
}

// New wraps an existing connection.
func New(conn *grpc.ClientConn) *Client {
	return &Client{Conn: conn,
		Directory: pb.NewDirectoryServiceClient(conn), Capacity: pb.NewCapacityServiceClient(conn),
		Consents: pb.NewConsentServiceClient(conn), Referrals: pb.NewReferralServiceClient(conn),
		Feedback: pb.NewFeedbackServiceClient(conn), Events: pb.NewEventServiceClient(conn),
		APIKeys: pb.NewApiKeyServiceClient(conn), Reports: pb.NewReportServiceClient(conn),
		Admin: pb.NewAdminServiceClient(conn)}
}

// Close closes the connection.
func (c *Client) Close() error { return c.Conn.Close() }

type bearer struct {
	key string
	tls bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.key}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.tls }

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewRequestID returns a random request_id.
func NewRequestID() string {
	b := make([]byte, 15)
	rand.Read(b)
	return idEncoding.EncodeToString(b)
}

// RequestIDs is a unary client interceptor that sets a request's
// `request_id` field, when it has one and it is empty, to a new random id,
// once per call (before gRPC's retries).
func RequestIDs(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if m, ok := req.(proto.Message); ok {
		r := m.ProtoReflect()
		if f := r.Descriptor().Fields().ByName("request_id"); f != nil && f.Kind() == protoreflect.StringKind && r.Get(f).String() == "" {
			r.Set(f, protoreflect.ValueOfString(NewRequestID()))
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// Deadlines is a unary client interceptor that sends the call's deadline,
// when it has one, as an absolute time too (pb.DeadlineMetadata), so that
// the exchange drops a call that reaches it only after its caller gave up.
func Deadlines(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(withDeadline(ctx), method, req, reply, cc, opts...)
}

// StreamDeadlines is Deadlines for streams.
func StreamDeadlines(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(withDeadline(ctx), desc, cc, method, opts...)
}

func withDeadline(ctx context.Context) context.Context {
	d, ok := ctx.Deadline()
	if !ok {
		return ctx
	}
	// Set, not appended: a context that carries one already (a proxy
	// passing on what it was sent) sends one.
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Set(pb.DeadlineMetadata, d.UTC().Format(time.RFC3339Nano))
	return metadata.NewOutgoingContext(ctx, md)
}

// Watch delivers the events the caller may see after sequence number
// after, in order, each once, to fn, until ctx ends or fn returns an error.
// It reconnects after a dropped stream or a server restart, resuming after
// the last event fn returned from, with a backoff of up to 10 seconds. It
// returns fn's error, the context's, or a non-retryable error from the
// exchange (a bad key, say). An after of -1 starts from now: the feed's
// newest sequence number is taken once, so that a reconnect before the
// first event still resumes from there.
func (c *Client) Watch(ctx context.Context, after int64, fn func(*pb.Event) error) error {
	backoff := 100 * time.Millisecond
	for after == -1 {
		now, err := c.Events.ListEvents(ctx, &pb.ListEventsRequest{After: -1})
		if err == nil {
			after = now.LastSequence
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
			return fmt.Errorf("watching events: %w", err)
		}
		time.Sleep(backoff)
	}
	for {
		stream, err := c.Events.WatchEvents(ctx, &pb.WatchEventsRequest{After: after})
		for err == nil {
			var resp *pb.WatchEventsResponse
			resp, err = stream.Recv()
			if err != nil {
				break
			}
			backoff = 100 * time.Millisecond
			e := resp.Event
			if e.Sequence <= after {
				continue
			}
			if ferr := fn(e); ferr != nil {
				return ferr
			}
			after = e.Sequence
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.Internal, codes.Unknown, codes.Canceled, codes.DeadlineExceeded, codes.Aborted:
		default:
			if !errors.Is(err, io.EOF) {
				return fmt.Errorf("watching events: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}
