// Package api implements the exchange's gRPC services on a storage.Store.
// Each method validates its request (validate), then in one store
// transaction reads what it needs, applies the rules (lifecycle, policy),
// writes the change, its event and its idempotency record, and returns the
// resource as the caller may see it.
package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/policy"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/server/storage"
)

// Options configure the services.
type Options struct {
	// Now returns the current time; time.Now when nil. Tests set it.
	Now func() time.Time
	// AutoRejectAfter, when positive, is the grace period after a referral's
	// reply-by deadline after which SweepOverdue rejects a referral still
	// REQUESTED with reason NO_RESPONSE. Zero (the default) never rejects.
	AutoRejectAfter time.Duration
	// ReportMinCount is the suppression threshold of reports: counts from 1
	// to ReportMinCount-1 are not shown. DefaultReportMinCount when 0.
	ReportMinCount int
	// Limits are the per-organisation rate and stream limits; none when zero.
	Limits Limits
	// Logger gets one line per call (UnaryLog); slog.Default() when nil.
	Logger *slog.Logger
}

// core is what every service shares.
type core struct {
	store      storage.Store
	now        func() time.Time
	autoReject time.Duration
	// reportMinCount is the suppression threshold of reports.
	reportMinCount int
	// watchers counts the open event streams (WatchEvents).
	watchers atomic.Int64
	// keys remembers whom API keys authenticated (callerOf).
	keys keyCache
	// piece is how many referrals one sweep transaction takes (pieces).
	piece atomic.Int32
}

// pieces runs a sweep in transactions of at most n referrals each, n
// starting at the last size that fitted: fn does one piece and says how
// many referrals it took. A store that refuses a transaction as too large
// (etcd takes 128 writes in one) halves n, down to one, and the piece is
// tried again; the size that fits is kept for the next sweep. It stops
// when a piece takes fewer than n, and returns the total taken.
func (c *core) pieces(ctx context.Context, most int, fn func(n int) (int, error)) (int, error) {
	total := 0
	for ctx.Err() == nil {
		n := min(most, int(c.piece.Load()))
		if n <= 0 {
			n = most
		}
		took, err := fn(n)
		if errors.Is(err, storage.ErrTooLarge) && n > 1 {
			c.piece.Store(int32(n / 2))
			continue
		}
		if err != nil {
			return total, err
		}
		total += took
		if took < n {
			return total, nil
		}
	}
	return total, ctx.Err()
}

func (c *core) clock(ctx context.Context) time.Time {
	if t, ok := ctx.Value(timeKey{}).(time.Time); ok {
		return t.UTC()
	}
	return c.now().UTC()
}

type timeKey struct{}

// WithTime returns ctx for a call that happens at t instead of now, for
// in-process callers only (the wire cannot set it): the demo's synthetic
// history, whose people's journeys run side by side, each at its own time.
func WithTime(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, timeKey{}, t)
}

// Caller is the authenticated organisation of a call.
type Caller struct {
	Org      string // organizations/{org}
	Kind     pb.OrganizationKind
	KeyName  string
	Operator bool
}

type callerKey struct{}

// CallerFrom returns the caller put in ctx by the authentication interceptor.
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

func withCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns a random 16-character resource id.
// newID is a new resource id: 6 bytes of the time in milliseconds, then
// 4 random bytes. Ids made close in time share a prefix, so a commit's new
// records and their index entries land on a few neighbouring pages of the
// store instead of one random page each (docs/benchmarks.md).
func newID() string {
	b := make([]byte, 10)
	ms := uint64(time.Now().UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	rand.Read(b[6:])
	return idEncoding.EncodeToString(b)
}

// etagOf is a checksum of a message with its etag field cleared.
func etagOf(m proto.Message, clear func()) string {
	clear()
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// stampReferral sets a referral's etag, a checksum of it without the fields
// a caller may be shown it without (the person, the reason, the possible
// duplicate), so that the etag tells nobody what it was not shown. Those
// change only when erasure clears them, which sets erase_time.
func stampReferral(r *pb.Referral) {
	person, reason, dup := r.Person, r.Reason, r.PossibleDuplicateOf
	r.Etag = etagOf(r, func() { r.Etag, r.Person, r.Reason, r.PossibleDuplicateOf = "", nil, "", "" })
	r.Person, r.Reason, r.PossibleDuplicateOf = person, reason, dup
}
func stampService(s *pb.Service)   { s.Etag = etagOf(s, func() { s.Etag = "" }) }
func stampCapacity(c *pb.Capacity) { c.Etag = etagOf(c, func() { c.Etag = "" }) }
func stampOrg(o *pb.Organization)  { o.Etag = etagOf(o, func() { o.Etag = "" }) }
func stampConsent(c *pb.Consent)   { c.Etag = etagOf(c, func() { c.Etag = "" }) }

// answerNow withholds from an answer given again what its caller may no
// longer see, and gives a referral's actions as they are now; it is
// otherwise the first answer, byte for byte. A referral
// loses its person once the consent no longer allows it (the callers of the
// methods that answer one are its referrer or its receiver); a consent the
// caller may no longer read (a receiver's, once its referral closed) loses
// its NHS number.
func answerNow(tx storage.ReadTx, org string, resp proto.Message, now time.Time) error {
	switch m := resp.(type) {
	case *pb.Referral:
		return showNow(tx, org, m, now)
	case *pb.Consent:
		if m.NhsNumber == "" {
			return nil
		}
		aud, _, err := consentAudience(tx, m)
		if err != nil {
			return err
		}
		if !slices.Contains(aud, org) {
			m.NhsNumber = ""
		}
	}
	return nil
}

func showNow(tx storage.ReadTx, org string, r *pb.Referral, now time.Time) error {
	// What the caller may do with it is what it may do now, from the
	// referral as it is now (Referral.actions is computed at read).
	if cur, err := tx.GetReferral(r.Name); err == nil {
		r.Actions = policy.Actions(cur, policy.Relate(org, cur, nil))
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if r.View != pb.ReferralView_REFERRAL_VIEW_FULL {
		return nil
	}
	c, err := tx.GetConsent(r.Consent)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if v := policy.View(policy.Relate(org, r, nil), r, c, now); v != r.View {
		policy.Withhold(r, v)
	}
	return nil
}

func checkEtag(sent, current string) error {
	if sent != "" && sent != current {
		return etagMismatch(current)
	}
	return nil
}

// mutate runs a write with AIP-155 idempotency: within one transaction it
// returns the stored first response to a repeated request_id of the same
// organisation, or runs fn and stores its response with the change, less
// what the request already holds (answer.go). resp is filled with the
// response either way. The call's audit entry, when it has
// one, is written in the same transaction.
func (c *core) mutate(ctx context.Context, method, requestID string, req proto.Message, resp proto.Message, fn func(tx storage.WriteTx, now time.Time) (proto.Message, error)) error {
	caller := CallerFrom(ctx)
	var hash, reqBytes []byte
	if requestID != "" {
		var err error
		if reqBytes, err = (proto.MarshalOptions{Deterministic: true}).Marshal(req); err != nil {
			return storeError(ctx, err)
		}
		h := sha256.New()
		h.Write([]byte(method + "\x00"))
		h.Write(reqBytes)
		hash = h.Sum(nil)
	}
	err := c.store.Update(ctx, func(tx storage.WriteTx) error {
		now := c.clock(ctx)
		if requestID != "" {
			rec, err := tx.GetIdempotency(caller.Org, requestID)
			switch {
			case err == nil:
				if rec.Method != method || string(rec.RequestHash) != string(hash) {
					return apiError(codes.InvalidArgument, pb.ErrorReason_ERROR_REASON_REQUEST_ID_REUSED,
						"request_id was already used for a different request", map[string]string{"request_id": requestID})
				}
				answer := rec.Response
				if rec.Elided {
					if answer, err = restore(answer, embedded(req, reqBytes, resp)); err != nil {
						return err
					}
				}
				if err := proto.Unmarshal(answer, resp); err != nil {
					return err
				}
				if err := answerNow(tx, caller.Org, resp, now); err != nil {
					return err
				}
				return auditInTx(ctx, tx, now, req, resp)
			case !errors.Is(err, storage.ErrNotFound):
				return err
			}
		}
		out, err := fn(tx, now)
		if err != nil {
			return err
		}
		proto.Reset(resp)
		proto.Merge(resp, out)
		if err := auditInTx(ctx, tx, now, req, out); err != nil {
			return err
		}
		if requestID == "" {
			return nil
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(out)
		if err != nil {
			return err
		}
		b, elided := elide(b, embedded(req, reqBytes, out))
		return tx.PutIdempotency(caller.Org, requestID, &storage.Idempotency{Method: method, RequestHash: hash, Response: b, Elided: elided, CreateTime: now})
	})
	if n := noteFrom(ctx); n != nil && err == nil {
		n.written = true
	}
	return storeError(ctx, err)
}

// view runs a read transaction and maps store errors.
func (c *core) view(ctx context.Context, fn func(tx storage.ReadTx, now time.Time) error) error {
	return storeError(ctx, c.store.View(ctx, func(tx storage.ReadTx) error { return fn(tx, c.clock(ctx)) }))
}

// event appends an event caused by the caller.
func event(ctx context.Context, tx storage.WriteTx, now time.Time, typ pb.EventType, resource string, audience []string, public bool, state pb.ReferralState) error {
	err := tx.AppendEvent(&storage.Event{
		Event: &pb.Event{EventTime: timestamppb.New(now), Type: typ, Resource: resource,
			Actor: CallerFrom(ctx).Org, State: state},
		Audience: audience, Public: public,
	})
	return err
}

// Page tokens are opaque to callers: the store's continuation key bound to
// a hash of the list's filter, so a token cannot be used with another filter.
func pageToken(next, filter string) string {
	if next == "" {
		return ""
	}
	h := sha256.Sum256([]byte(filter))
	return base64.RawURLEncoding.EncodeToString(append(h[:4], next...))
}

func parsePageToken(v *validate.Violations, field, token, filter string) string {
	if token == "" {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	h := sha256.Sum256([]byte(filter))
	if err != nil || len(b) < 5 || string(b[:4]) != string(h[:4]) {
		v.Add(field, "is not a token returned by this list with the same filter")
		return ""
	}
	return string(b[4:])
}

func tsOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// WithCaller returns ctx acting as caller, for in-process use such as
// seeding demo data through the same services and rules as remote calls.
func WithCaller(ctx context.Context, c Caller) context.Context { return withCaller(ctx, c) }

// Services are the service implementations, for in-process callers such as
// the demo data; they apply every rule, with the caller from WithCaller.
type Services struct {
	Directory pb.DirectoryServiceServer
	Capacity  pb.CapacityServiceServer
	APIKeys   pb.ApiKeyServiceServer
	Consents  pb.ConsentServiceServer
	Referrals pb.ReferralServiceServer
	Feedback  pb.FeedbackServiceServer
	Reports   pb.ReportServiceServer
}

// Services returns the service implementations.
func (s *Server) Services() Services {
	return Services{Directory: &directory{core: s.core}, Capacity: &capacity{core: s.core}, APIKeys: &apiKeys{core: s.core},
		Consents: &consents{core: s.core}, Referrals: &referrals{core: s.core}, Feedback: &feedback{core: s.core},
		Reports: &reports{core: s.core}}
}
