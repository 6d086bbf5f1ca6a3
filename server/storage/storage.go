// Package storage is the exchange's Store: typed reads and writes of every
// resource, their secondary indexes, the idempotency records, the change
// feed and the audit log, all inside transactions, written once over the
// key-value engine of package kv (records.go; Open). The engines live in
// sub-packages (storage/bolt, storage/etcd); storage/storagetest is the
// conformance suite the typed layer passes on every engine, and kv/kvtest
// the one every engine passes.
//
// The store keeps records and indexes consistent; it does not decide who may
// do what. Rules live in lifecycle, policy and validate, and the api package
// calls them inside Update so a rule and the write it guards see the same data.
package storage

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"time"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/report"
	"github.com/social-prescribing/exchange/server/storage/kv"
)

// Sentinel errors. Backends wrap them; test with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrConflict      = errors.New("conflict")
	// The engine's (kv): the store was closed, a write it could not make,
	// it stopped for good after a failed fsync, it could not be reached,
	// or a transaction too large for it.
	ErrClosed      = kv.ErrClosed
	ErrWriteFailed = kv.ErrWriteFailed
	ErrStopped     = kv.ErrStopped
	ErrUnavailable = kv.ErrUnavailable
	ErrTooLarge    = kv.ErrTooLarge
)

// Store is a transactional store.
type Store interface {
	// View runs fn in a read-only transaction. Values returned by the
	// transaction are copies and stay valid after it ends.
	View(ctx context.Context, fn func(ReadTx) error) error
	// Update runs fn in a read-write transaction and returns once the
	// transaction is durably committed (fsynced). Concurrent Updates may share
	// one commit. fn may run more than once if another transaction in its
	// batch fails, so it must have no effects outside the transaction other
	// than setting its results. If fn returns an error, nothing it wrote is
	// kept.
	Update(ctx context.Context, fn func(WriteTx) error) error
	// WaitEvents blocks until an event with a sequence number above after is
	// committed, or ctx ends.
	WaitEvents(ctx context.Context, after int64) error
	// AuthVersion changes whenever an acknowledged write changes an API key
	// or an organisation, before that write is acknowledged. Who a key
	// belongs to, read after AuthVersion returned v, stays true while it
	// still returns v: callers may keep it that long.
	AuthVersion() uint64
	// Backup writes a consistent copy of the whole store, taken in one read
	// transaction while writes go on: it calls start with the copy's size,
	// then writes the copy to the writer start returns.
	Backup(ctx context.Context, start func(size int64) (io.Writer, error)) error
	// Close waits for pending commits and closes the store.
	Close() error
}

// PersonHash is how the store and the audit log name a person without the
// NHS number: a SHA-256 of it under a fixed label.
func PersonHash(nhsNumber string) [sha256.Size]byte {
	return sha256.Sum256([]byte("exchange-person:" + nhsNumber))
}

// AuditQuery selects audit events. Empty fields do not narrow.
type AuditQuery struct {
	Organization string
	Resource     string
	Start, End   time.Time // [Start, End)
}

// ReferralQuery selects referrals through one index and narrows by the
// other fields. Party, when set, is the index: the result is always a subset
// of the referrals Party may see, whatever else is set. Otherwise the first
// set of Recipient, Referrer and Parent is the index. State and DueBefore
// narrow it.
type ReferralQuery struct {
	Party     string // organisation name: every referral it is a party to
	Recipient string // organisation name: referrals received
	Referrer  string // organisation name: referrals made
	Parent    string // referral name: onward referrals
	State     pb.ReferralState
	// DueBefore, with Recipient: REQUESTED referrals whose reply_by is before it.
	DueBefore time.Time
}

// Page is a page of a list: the items and the key to continue after ("" at
// the end).
type Page[T any] struct {
	Items []T
	Next  string
}

// APIKey is an API key as stored: its secret only as a hash.
type APIKey struct {
	Name         string    `json:"name"` // organizations/{org}/apiKeys/{id}
	Organization string    `json:"organization"`
	DisplayName  string    `json:"display_name"`
	Hash         []byte    `json:"hash"`
	CreateTime   time.Time `json:"create_time"`
	RevokeTime   time.Time `json:"revoke_time,omitzero"`
}

// Idempotency is the first response to a request_id of an organisation.
type Idempotency struct {
	Method      string `json:"method"`
	RequestHash []byte `json:"request_hash"`
	Response    []byte `json:"response"` // the marshalled response message
	// Elided: Response holds only what the answer adds to the request's
	// message of its type, and the retry's request, the same bytes, fills
	// the rest back in (server/api/answer.go).
	Elided bool `json:"elided,omitempty"`
	// CreateTime is when the first response was stored; the retention
	// sweep deletes records older than the idempotency window
	// (ExpiredIdempotency, api.IdempotencyWindow).
	CreateTime time.Time `json:"create_time,omitzero"`
}

// Event is a change-feed entry and the organisations that may see it
// (Public: every organisation).
type Event struct {
	Event    *pb.Event
	Audience []string
	Public   bool
}

// ReadTx reads inside a transaction. Get methods return ErrNotFound.
// List methods take the Next of the previous page ("" for the first) and a
// limit; keep, when not nil, drops items from the page (the scan still
// advances), so a page may be shorter than limit before the end.
type ReadTx interface {
	GetOrganization(name string) (*pb.Organization, error)
	ListOrganizations(after string, limit int) (Page[*pb.Organization], error)
	GetService(name string) (*pb.Service, error)
	// ListServices lists one organisation's services, or all with org "".
	ListServices(org, after string, limit int) (Page[*pb.Service], error)
	// ServicesInCategory lists services offering category c, in name order.
	ServicesInCategory(c pb.Category, after string, limit int) (Page[*pb.Service], error)
	GetCapacity(service string) (*pb.Capacity, error)

	GetReferral(name string) (*pb.Referral, error)
	ListReferrals(q ReferralQuery, after string, limit int, keep func(*pb.Referral) bool) (Page[*pb.Referral], error)
	// OpenReferralsFor returns the open referrals of the person (NHS number)
	// to the service, if any: more than one when organisations that may not
	// see each other's referred the person there.
	OpenReferralsFor(nhsNumber, service string) ([]string, error)
	// OpenReferralsByConsent returns the names of open referrals relying on
	// the consent.
	OpenReferralsByConsent(consent string) ([]string, error)
	// DueReferrals returns REQUESTED referrals whose reply_by is before t and
	// which have not yet had an overdue event, oldest deadline first.
	DueReferrals(before time.Time, limit int) ([]*pb.Referral, error)
	// UnansweredReferrals returns REQUESTED referrals whose reply_by is
	// before t, notified or not, oldest deadline first.
	UnansweredReferrals(before time.Time, limit int) ([]*pb.Referral, error)

	GetConsent(name string) (*pb.Consent, error)
	ListConsents(nhsNumber, after string, limit int, keep func(*pb.Consent) bool) (Page[*pb.Consent], error)

	ListFeedback(referral, after string, limit int, keep func(*pb.Feedback) bool) (Page[*pb.Feedback], error)

	GetAPIKey(name string) (*APIKey, error)
	ListAPIKeys(org, after string, limit int) (Page[*APIKey], error)

	GetIdempotency(org, requestID string) (*Idempotency, error)
	// ExpiredIdempotency reads at most scan stored answers, in the store's
	// order from position from ("": the first), and returns the positions
	// of those made before before (and of any it cannot read), and the
	// position to go on from ("": none left). Positions are opaque, for
	// DeleteExpiredIdempotency. The retention sweep walks the answers this
	// way, a bounded piece per read, so that no write waits for a walk of
	// them all.
	ExpiredIdempotency(before time.Time, from string, scan int) (expired []string, next string, err error)

	// ListEvents returns events after sequence after, in order: those whose
	// audience includes org or that are public, or every event when org is
	// "". It returns the events and the last sequence it looked at (at least
	// after; the last sequence in the store when it reached the end).
	ListEvents(org string, after int64, limit int) ([]*pb.Event, int64, error)
	LastSequence() (int64, error)

	// ReferralsOfPerson returns the names of every referral whose person has
	// the NHS number, oldest first.
	ReferralsOfPerson(nhsNumber string) ([]string, error)
	// ClosedReferralsBefore returns closed referrals whose personal fields
	// are not yet cleared and whose state_time is before t, oldest first.
	ClosedReferralsBefore(before time.Time, limit int) ([]*pb.Referral, error)

	// ListAudit returns audit events matching q, oldest first.
	ListAudit(q AuditQuery, after string, limit int) (Page[*pb.AuditEvent], error)
	// LastAuditSequence is the sequence of the newest audit event.
	LastAuditSequence() (int64, error)

	// Figures for monitoring; each costs at most one read per item counted.
	// ReferralStates counts the stored referrals in each state (kept as the
	// referrals change, so it costs nothing to read).
	ReferralStates() (map[pb.ReferralState]int64, error)
	// CountUnanswered counts REQUESTED referrals whose reply_by is before t.
	CountUnanswered(before time.Time) (int, error)
	// ListCapacity lists every service's capacity, in service name order.
	ListCapacity(after string, limit int) (Page[*pb.Capacity], error)

	// ReportSums gives into what reports count of the referrals made in
	// [from, to) (a zero time: no bound) to service ("": to any; else
	// its sums alone are sought in each period), encoded: the sums
	// (report.Sums) of whole months and of whole days (UK time), each
	// with the time its period starts, and the rows of single referrals
	// for the part of a day at either end. They are kept as referrals,
	// their outcome feedback and their consents change, in the same
	// transaction, so a report reads sums and not referrals.
	ReportSums(from, to time.Time, service string, into report.Sink) error
	// OverdueReportRows visits the report rows of the counted referrals
	// overdue at now (lifecycle.Overdue), found by their deadline.
	OverdueReportRows(now time.Time, visit func(*report.Row) error) error
	// CapacityEvents returns the CAPACITY_CHANGED events of a capacity
	// ({service}/capacity), in sequence order.
	CapacityEvents(capacity string) ([]*pb.Event, error)
}

// WriteTx writes inside a transaction. Create methods return
// ErrAlreadyExists; Update methods ErrNotFound.
type WriteTx interface {
	ReadTx
	CreateOrganization(o *pb.Organization) error
	UpdateOrganization(o *pb.Organization) error
	CreateService(s *pb.Service) error
	UpdateService(s *pb.Service) error
	// PutCapacity creates or replaces a service's capacity.
	PutCapacity(c *pb.Capacity) error

	// CreateReferral stores a new referral and its index entries; parties are
	// the organisations that may see it (referrer, recipient, upstream).
	CreateReferral(r *pb.Referral, parties []string) error
	// UpdateReferral replaces a referral and moves its index entries.
	UpdateReferral(r *pb.Referral) error
	// MarkOverdueNotified removes a referral from DueReferrals.
	MarkOverdueNotified(name string) error

	CreateConsent(c *pb.Consent) error
	UpdateConsent(c *pb.Consent) error

	CreateFeedback(f *pb.Feedback) error
	// UpdateFeedback replaces a feedback entry (to clear its text).
	UpdateFeedback(f *pb.Feedback) error

	CreateAPIKey(k *APIKey) error
	UpdateAPIKey(k *APIKey) error

	PutIdempotency(org, requestID string, rec *Idempotency) error
	// DeleteIdempotency deletes the stored responses for which drop returns
	// true, and any it cannot read, and returns how many; it reads every
	// record in the writer, so it is for erasure, which must find every
	// answer that holds the person in its own transaction, never for a
	// request.
	DeleteIdempotency(drop func(*Idempotency) bool) (int, error)
	// DeleteExpiredIdempotency deletes the stored answers at the positions
	// ExpiredIdempotency found that are still made before before (or still
	// unreadable), and returns how many: an answer stored again at a
	// position since is kept.
	DeleteExpiredIdempotency(at []string, before time.Time) (int, error)

	// AppendAudit stores the audit event; it is numbered (its sequence)
	// in commit order as the transaction commits. There is no way to
	// change or delete an audit event.
	AppendAudit(e *pb.AuditEvent) error

	// AppendEvent stores the event; it is numbered (its sequence) in
	// commit order as the transaction commits. Sequences increase
	// strictly but may have gaps.
	AppendEvent(e *Event) error
}

// AnswerSweepPiece is how many stored answers the retention sweep reads at
// a time (a few milliseconds of a reader); the expired among them are
// deleted in one write, so no write waits for the sweep for longer.
const AnswerSweepPiece = 4096

// DeleteExpiredAnswers deletes the stored answers made before before (and
// any that cannot be read), a piece at a time: a read finds the expired
// among the next scan answers (ExpiredIdempotency), a write deletes those
// still expired (DeleteExpiredIdempotency; several, where the store takes
// fewer in one), and so on to the end. No write
// waits for it for longer than one piece, however many answers are
// stored. It returns how many it deleted.
func DeleteExpiredAnswers(ctx context.Context, s Store, before time.Time, scan int) (int, error) {
	deleted := 0
	for from := ""; ; {
		var expired []string
		err := s.View(ctx, func(tx ReadTx) (err error) {
			expired, from, err = tx.ExpiredIdempotency(before, from, scan)
			return err
		})
		// The deletes go in one write, or, where the store takes fewer in
		// one (etcd: 128), in halves until they fit.
		for chunk := len(expired); err == nil && len(expired) > 0; {
			n, at := 0, expired[:min(chunk, len(expired))]
			err = s.Update(ctx, func(tx WriteTx) (err error) {
				n, err = tx.DeleteExpiredIdempotency(at, before)
				return err
			})
			if errors.Is(err, ErrTooLarge) && chunk > 1 {
				chunk, err = chunk/2, nil
				continue
			}
			if err == nil {
				deleted += n
				expired = expired[len(at):]
			}
		}
		if err != nil || from == "" {
			return deleted, err
		}
	}
}
