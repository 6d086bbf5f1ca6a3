package storage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/lifecycle"
	"github.com/social-prescribing/exchange/server/storage/kv"
)

// Spaces (on bbolt, buckets). Records are keyed by resource name; index keys are built from
// parts separated by a zero byte, with times and sequences as 8-byte
// big-endian numbers so that byte order is time order.
var (
	bOrgs          = "organizations"
	bServices      = "services"
	bServiceCat    = "ix_service_category" // category(2) name
	bCapacity      = "capacity"
	bReferrals     = "referrals"
	bParty         = "ix_referral_party"      // org 0 created(8) name
	bInbox         = "ix_referral_inbox"      // recipient 0 state(1) created(8) name
	bReferrer      = "ix_referral_referrer"   // referrer 0 created(8) name
	bChildren      = "ix_referral_children"   // parent 0 created(8) name
	bDue           = "ix_referral_due"        // recipient 0 reply_by(8) name, REQUESTED only
	bDueQueue      = "ix_referral_due_queue"  // reply_by(8) name, REQUESTED and no overdue event yet
	bUnanswered    = "ix_referral_unanswered" // reply_by(8) name, REQUESTED
	bOpen          = "ix_person_open"         // person(16) 0 service 0 name, open referrals
	bConsentOpen   = "ix_consent_open"        // consent 0 name, open referrals
	bConsents      = "consents"
	bPersonConsent = "ix_person_consent" // person(16) 0 created(8) name
	bFeedback      = "feedback"          // referral 0 created(8) name -> feedback
	bAPIKeys       = "api_keys"
	bIdempotency   = "idempotency"       // org 0 request_id
	bEvents        = "events"            // seq(8)
	bEventAudience = "ix_event_audience" // org 0 seq(8); "*" for public
	// Referrals by person (while the person is stored) and closed referrals
	// whose personal fields are not cleared yet, for erasure and retention.
	bPersonReferral = "ix_person_referral" // person(16) created(8) name
	bClosed         = "ix_referral_closed" // state_time(8) name
	// The audit log: append-only, by sequence, with indexes for its filters.
	bAudit         = "audit"             // seq(8)
	bAuditTime     = "ix_audit_time"     // time(8) seq(8)
	bAuditOrg      = "ix_audit_org"      // org 0 time(8) seq(8)
	bAuditResource = "ix_audit_resource" // resource 0 time(8) seq(8)

	// How many referrals are in each state, for monitoring.
	bStateCount = "referral_state_count" // state(1) shard(1) -> count(8); state(1) in older stores

	allBuckets = []string{bOrgs, bServices, bServiceCat, bCapacity, bReferrals, bParty, bInbox, bReferrer,
		bChildren, bDue, bDueQueue, bUnanswered, bOpen, bConsentOpen, bConsents, bPersonConsent, bFeedback, bAPIKeys,
		bIdempotency, bEvents, bEventAudience, bPersonReferral, bClosed, bAudit, bAuditTime, bAuditOrg, bAuditResource,
		bStateCount, bReportRows, bReportSums, bConsentRefs, bEventCapacity}

	// backfilled are indexes added after stores existed: when Open creates
	// one, it is filled from the referrals already stored by its function.
	backfilled = map[string]func(t *tx, r *pb.Referral) error{
		string(bPersonReferral): func(t *tx, r *pb.Referral) error { return t.indexRetention(nil, r) },
		string(bClosed):         func(t *tx, r *pb.Referral) error { return t.indexRetention(nil, r) },
		string(bStateCount):     func(t *tx, r *pb.Referral) error { return t.countState(nil, r) },
		string(bOpen): func(t *tx, r *pb.Referral) error {
			if !lifecycle.Open(r.State) {
				return nil
			}
			return t.b(bOpen).Put(key(person(r.Person.GetNhsNumber()), r.RecipientService, r.Name), nil)
		},
	}

	// retired are buckets older stores have that nothing reads any more:
	// Open deletes them. ix_referral_open held one open referral per person
	// and service; ix_person_open holds them all.
	retired = []string{"ix_referral_open"}
)

const publicAudience = "*"

// tx is a transaction of the typed layer over an engine's: a reader's
// (w nil) or a writer's.
type tx struct {
	r kv.Reader
	w kv.Writer
}

func key(parts ...any) []byte {
	n := 0
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			n += len(v) + 1
		case fixed:
			n += len(v)
		default:
			panic(fmt.Sprintf("key part %T", p))
		}
	}
	// Sized once: prefix appends a separator, so one byte is left for it.
	b := make([]byte, 0, n+1)
	for i, p := range parts {
		if i > 0 {
			if _, prevFixed := parts[i-1].(fixed); !prevFixed {
				b = append(b, 0)
			}
		}
		switch v := p.(type) {
		case string:
			b = append(b, v...)
		case fixed:
			b = append(b, v...)
		}
	}
	return b
}

// fixed is a fixed-width key part; no separator follows it.
type fixed []byte

func u64(n uint64) fixed { return binary.BigEndian.AppendUint64(nil, n) }

func ts(t time.Time) fixed {
	if t.IsZero() {
		return u64(0)
	}
	return u64(uint64(t.UnixNano()))
}

// person is the index key of a person: a hash of the NHS number, so raw
// NHS numbers are not spread through index keys.
func person(nhs string) fixed {
	h := PersonHash(nhs)
	return h[:16]
}

func prefix(parts ...any) []byte { return append(key(parts...), 0) }

func getProto[T proto.Message](b space, k string, m T) (T, error) {
	v := b.Get([]byte(k))
	if v == nil {
		var zero T
		return zero, fmt.Errorf("%s: %w", k, ErrNotFound)
	}
	if err := proto.Unmarshal(v, m); err != nil {
		var zero T
		return zero, fmt.Errorf("decode %s: %w", k, err)
	}
	return m, nil
}

func putProto(b space, k string, m proto.Message) error {
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", k, err)
	}
	return b.Put([]byte(k), v)
}

func (t *tx) b(name string) space { return space{name: name, t: t} }

// space is one of the engine's spaces as the transaction sees it.
type space struct {
	name string
	t    *tx
}

func (b space) Get(k []byte) []byte   { return b.t.r.Get(b.name, k) }
func (b space) Cursor() kv.Cursor     { return b.t.r.Cursor(b.name) }
func (b space) Delete(k []byte) error { return b.writer().Delete(b.name, k) }
func (b space) Put(k, v []byte) error { return b.writer().Put(b.name, k, v) }
func (b space) writer() kv.Writer {
	if b.t.w == nil {
		return readOnly{}
	}
	return b.t.w
}

func (b space) ForEach(fn func(k, v []byte) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// readOnly refuses the writes of a read transaction.
type readOnly struct{ kv.Reader }

var errReadOnly = errors.New("a write in a read-only transaction")

func (readOnly) Put(string, []byte, []byte) error         { return errReadOnly }
func (readOnly) Delete(string, []byte) error              { return errReadOnly }
func (readOnly) Append(string, []byte, ...kv.Index) error { return errReadOnly }

// scan walks keys under pfx after the key after, calling visit for each
// until it returns false or limit items were taken. It returns the key to
// continue from, or "" at the end.
func scan(b space, pfx []byte, after string, limit int, visit func(k, v []byte) (took bool, err error)) (string, error) {
	c := b.Cursor()
	k, v := seekAfter(c, pfx, after)
	taken, scanned := 0, 0
	maxScan := limit*20 + 1000 // a page of a selective filter stops early rather than scan everything
	for ; k != nil && bytes.HasPrefix(k, pfx); k, v = c.Next() {
		if taken >= limit || scanned >= maxScan {
			return string(lastKey(c, k)), nil
		}
		scanned++
		took, err := visit(k, v)
		if err == errStop {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		if took {
			taken++
		}
	}
	return "", nil
}

// scanKept lists, after after, up to limit of the items under pfx that keep
// accepts (all when keep is nil), and gives a next key only when a further
// accepted item exists; that key is the last item's own. It has no scan
// budget: it serves lists bounded by what they are of (a person's
// consents, a referral's feedback), filtered by what the caller may see,
// so that neither a page's length nor its token tells of what keep
// refuses.
func scanKept[T any](b space, pfx []byte, after string, limit int, decode func(k, v []byte) (T, error), keep func(T) bool) (Page[T], error) {
	var p Page[T]
	c := b.Cursor()
	k, v := seekAfter(c, pfx, after)
	var last []byte
	for ; k != nil && bytes.HasPrefix(k, pfx); k, v = c.Next() {
		item, err := decode(k, v)
		if err != nil {
			return Page[T]{}, err
		}
		if keep != nil && !keep(item) {
			continue
		}
		if len(p.Items) == limit {
			p.Next = string(last)
			return p, nil
		}
		p.Items = append(p.Items, item)
		last = append(last[:0], k...)
	}
	return p, nil
}

// seekAfter puts c on the first key of a page: the first under pfx, or the
// first after the key a previous page ended at.
func seekAfter(c kv.Cursor, pfx []byte, after string) (k, v []byte) {
	if after == "" {
		return c.Seek(pfx)
	}
	if k, v = c.Seek([]byte(after)); k != nil && string(k) == after {
		return c.Next()
	}
	return k, v
}

// errStop ends a scan early, at the end of the list.
var errStop = errors.New("stop")

// lastKey returns the key before k: where the next page continues from.
func lastKey(c kv.Cursor, k []byte) []byte {
	pk, _ := c.Prev()
	return append([]byte(nil), pk...)
}

// Organisations.

func (t *tx) GetOrganization(name string) (*pb.Organization, error) {
	return getProto(t.b(bOrgs), name, &pb.Organization{})
}

func (t *tx) ListOrganizations(after string, limit int) (Page[*pb.Organization], error) {
	var p Page[*pb.Organization]
	var err error
	p.Next, err = scan(t.b(bOrgs), nil, after, limit, func(k, v []byte) (bool, error) {
		o := &pb.Organization{}
		if err := proto.Unmarshal(v, o); err != nil {
			return false, err
		}
		p.Items = append(p.Items, o)
		return true, nil
	})
	return p, err
}

func (t *tx) CreateOrganization(o *pb.Organization) error {
	if t.b(bOrgs).Get([]byte(o.Name)) != nil {
		return fmt.Errorf("%s: %w", o.Name, ErrAlreadyExists)
	}
	return putProto(t.b(bOrgs), o.Name, o)
}

func (t *tx) UpdateOrganization(o *pb.Organization) error {
	if t.b(bOrgs).Get([]byte(o.Name)) == nil {
		return fmt.Errorf("%s: %w", o.Name, ErrNotFound)
	}
	return putProto(t.b(bOrgs), o.Name, o)
}

// Services and capacity.

func (t *tx) GetService(name string) (*pb.Service, error) {
	return getProto(t.b(bServices), name, &pb.Service{})
}

func (t *tx) ListServices(org, after string, limit int) (Page[*pb.Service], error) {
	var pfx []byte
	if org != "" {
		pfx = []byte(org + "/services/")
	}
	var p Page[*pb.Service]
	var err error
	p.Next, err = scan(t.b(bServices), pfx, after, limit, func(k, v []byte) (bool, error) {
		s := &pb.Service{}
		if err := proto.Unmarshal(v, s); err != nil {
			return false, err
		}
		p.Items = append(p.Items, s)
		return true, nil
	})
	return p, err
}

func categoryKey(c pb.Category) fixed { return fixed{byte(c >> 8), byte(c)} }

func (t *tx) ServicesInCategory(c pb.Category, after string, limit int) (Page[*pb.Service], error) {
	var p Page[*pb.Service]
	var err error
	p.Next, err = scan(t.b(bServiceCat), categoryKey(c), after, limit, func(k, _ []byte) (bool, error) {
		s, err := t.GetService(string(k[2:]))
		if err != nil {
			return false, err
		}
		p.Items = append(p.Items, s)
		return true, nil
	})
	return p, err
}

func (t *tx) CreateService(s *pb.Service) error {
	if t.b(bServices).Get([]byte(s.Name)) != nil {
		return fmt.Errorf("%s: %w", s.Name, ErrAlreadyExists)
	}
	return t.putService(nil, s)
}

func (t *tx) UpdateService(s *pb.Service) error {
	old, err := t.GetService(s.Name)
	if err != nil {
		return err
	}
	return t.putService(old, s)
}

func (t *tx) putService(old, s *pb.Service) error {
	ix := t.b(bServiceCat)
	for _, c := range old.GetCategories() {
		if err := ix.Delete(key(categoryKey(c), s.Name)); err != nil {
			return err
		}
	}
	for _, c := range s.Categories {
		if err := ix.Put(key(categoryKey(c), s.Name), nil); err != nil {
			return err
		}
	}
	return putProto(t.b(bServices), s.Name, s)
}

func (t *tx) GetCapacity(service string) (*pb.Capacity, error) {
	return getProto(t.b(bCapacity), service, &pb.Capacity{})
}

func (t *tx) PutCapacity(c *pb.Capacity) error {
	svc := c.Name[:len(c.Name)-len("/capacity")]
	return putProto(t.b(bCapacity), svc, c)
}

// Referrals.

func (t *tx) GetReferral(name string) (*pb.Referral, error) {
	return getProto(t.b(bReferrals), name, &pb.Referral{})
}

func (t *tx) ListReferrals(q ReferralQuery, after string, limit int, keep func(*pb.Referral) bool) (Page[*pb.Referral], error) {
	var b space
	var pfx []byte
	var stop func(k []byte) bool
	switch {
	case q.Party != "":
		b, pfx = t.b(bParty), prefix(q.Party)
	case q.Recipient != "" && !q.DueBefore.IsZero():
		b, pfx = t.b(bDue), prefix(q.Recipient)
		end := append(append([]byte(nil), pfx...), ts(q.DueBefore)...)
		stop = func(k []byte) bool { return bytes.Compare(k, end) >= 0 }
	case q.Recipient != "" && q.State != 0:
		b, pfx = t.b(bInbox), append(prefix(q.Recipient), byte(q.State))
	case q.Recipient != "":
		b, pfx = t.b(bInbox), prefix(q.Recipient)
	case q.Referrer != "":
		b, pfx = t.b(bReferrer), prefix(q.Referrer)
	case q.Parent != "":
		b, pfx = t.b(bChildren), prefix(q.Parent)
	default:
		return Page[*pb.Referral]{}, fmt.Errorf("list referrals: no index selected")
	}
	var p Page[*pb.Referral]
	var err error
	stopped := false
	p.Next, err = scan(b, pfx, after, limit, func(k, _ []byte) (bool, error) {
		if stop != nil && stop(k) {
			stopped = true
			return false, errStop
		}
		r, err := t.GetReferral(string(k[bytes.LastIndex(k, []byte("referrals/")):]))
		if err != nil {
			return false, err
		}
		if (q.State != 0 && r.State != q.State) ||
			(q.Recipient != "" && r.Recipient != q.Recipient) ||
			(q.Referrer != "" && r.Referrer != q.Referrer) ||
			(q.Parent != "" && r.ParentReferral != q.Parent) ||
			(!q.DueBefore.IsZero() && !lifecycle.Overdue(r, q.DueBefore)) ||
			(keep != nil && !keep(r)) {
			return false, nil
		}
		p.Items = append(p.Items, r)
		return true, nil
	})
	if stopped {
		p.Next, err = "", nil
	}
	return p, err
}

func (t *tx) OpenReferralsFor(nhsNumber, service string) ([]string, error) {
	var out []string
	pfx := prefix(person(nhsNumber), service)
	c := t.b(bOpen).Cursor()
	for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
		out = append(out, string(k[len(pfx):]))
	}
	return out, nil
}

func (t *tx) OpenReferralsByConsent(consent string) ([]string, error) {
	var out []string
	pfx := prefix(consent)
	c := t.b(bConsentOpen).Cursor()
	for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
		out = append(out, string(k[len(pfx):]))
	}
	return out, nil
}

func (t *tx) DueReferrals(before time.Time, limit int) ([]*pb.Referral, error) {
	return t.byDeadline(bDueQueue, before, limit)
}

func (t *tx) UnansweredReferrals(before time.Time, limit int) ([]*pb.Referral, error) {
	return t.byDeadline(bUnanswered, before, limit)
}

// byDeadline reads up to limit referrals from an index keyed reply_by(8)
// name, those with reply_by before t, oldest first.
func (t *tx) byDeadline(index string, before time.Time, limit int) ([]*pb.Referral, error) {
	var out []*pb.Referral
	end := []byte(ts(before))
	c := t.b(index).Cursor()
	for k, _ := c.First(); k != nil && len(out) < limit && bytes.Compare(k[:8], end) < 0; k, _ = c.Next() {
		r, err := t.GetReferral(string(k[8:]))
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (t *tx) MarkOverdueNotified(name string) error {
	r, err := t.GetReferral(name)
	if err != nil {
		return err
	}
	return t.b(bDueQueue).Delete(key(ts(r.ReplyBy.AsTime()), r.Name))
}

func (t *tx) CreateReferral(r *pb.Referral, parties []string) error {
	if t.b(bReferrals).Get([]byte(r.Name)) != nil {
		return fmt.Errorf("%s: %w", r.Name, ErrAlreadyExists)
	}
	created := ts(r.CreateTime.AsTime())
	seen := map[string]bool{}
	for _, org := range parties {
		if seen[org] {
			continue
		}
		seen[org] = true
		if err := t.b(bParty).Put(key(org, created, r.Name), nil); err != nil {
			return err
		}
	}
	if err := t.b(bReferrer).Put(key(r.Referrer, created, r.Name), nil); err != nil {
		return err
	}
	if r.ParentReferral != "" {
		if err := t.b(bChildren).Put(key(r.ParentReferral, created, r.Name), nil); err != nil {
			return err
		}
	}
	if err := t.indexState(nil, r); err != nil {
		return err
	}
	if err := t.indexRetention(nil, r); err != nil {
		return err
	}
	if err := t.indexConsent(nil, r); err != nil {
		return err
	}
	if err := t.retally(r); err != nil {
		return err
	}
	return putProto(t.b(bReferrals), r.Name, r)
}

// indexConsent keeps r in the referrals of its consent (retallyConsent).
func (t *tx) indexConsent(old, r *pb.Referral) error {
	if old != nil && old.Consent == r.Consent {
		return nil
	}
	if old != nil && old.Consent != "" {
		if err := t.b(bConsentRefs).Delete(key(old.Consent, r.Name)); err != nil {
			return err
		}
	}
	if r.Consent == "" {
		return nil
	}
	return t.b(bConsentRefs).Put(key(r.Consent, r.Name), nil)
}

func (t *tx) UpdateReferral(r *pb.Referral) error {
	old, err := t.GetReferral(r.Name)
	if err != nil {
		return err
	}
	if err := t.indexState(old, r); err != nil {
		return err
	}
	if err := t.indexRetention(old, r); err != nil {
		return err
	}
	if err := t.indexConsent(old, r); err != nil {
		return err
	}
	if err := t.retally(r); err != nil {
		return err
	}
	return putProto(t.b(bReferrals), r.Name, r)
}

// retentionKeys are a referral's entries in the person and closed indexes
// (nil where it has none).
func retentionKeys(r *pb.Referral) (byPerson, closed []byte) {
	if r == nil {
		return nil, nil
	}
	if nhs := r.Person.GetNhsNumber(); nhs != "" {
		byPerson = key(person(nhs), ts(r.CreateTime.AsTime()), r.Name)
	}
	if !lifecycle.Open(r.State) && r.EraseTime == nil {
		closed = key(ts(r.StateTime.AsTime()), r.Name)
	}
	return byPerson, closed
}

// indexRetention moves a referral's person and closed index entries from
// what old needs (nil: none) to what r needs.
func (t *tx) indexRetention(old, r *pb.Referral) error {
	op, oc := retentionKeys(old)
	np, nc := retentionKeys(r)
	for _, m := range []struct {
		bucket   string
		old, new []byte
	}{{bPersonReferral, op, np}, {bClosed, oc, nc}} {
		if bytes.Equal(m.old, m.new) {
			continue
		}
		if m.old != nil {
			if err := t.b(m.bucket).Delete(m.old); err != nil {
				return err
			}
		}
		if m.new != nil {
			if err := t.b(m.bucket).Put(m.new, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *tx) ReferralsOfPerson(nhsNumber string) ([]string, error) {
	var out []string
	pfx := []byte(person(nhsNumber))
	c := t.b(bPersonReferral).Cursor()
	for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
		out = append(out, string(k[len(pfx)+8:]))
	}
	return out, nil
}

func (t *tx) ClosedReferralsBefore(before time.Time, limit int) ([]*pb.Referral, error) {
	return t.byDeadline(bClosed, before, limit)
}

// indexState moves the state-dependent index entries of a referral from
// what old needs (nil: none) to what r needs.
func (t *tx) indexState(old, r *pb.Referral) error {
	created := ts(r.CreateTime.AsTime())
	requested := pb.ReferralState_REFERRAL_STATE_REQUESTED
	if old != nil && old.State == r.State {
		return nil
	}
	if err := t.countState(old, r); err != nil {
		return err
	}
	if old != nil {
		if err := t.b(bInbox).Delete(key(old.Recipient, fixed{byte(old.State)}, created, old.Name)); err != nil {
			return err
		}
		if old.State == requested {
			due := ts(old.ReplyBy.AsTime())
			if err := t.b(bDue).Delete(key(old.Recipient, due, old.Name)); err != nil {
				return err
			}
			if err := t.b(bDueQueue).Delete(key(due, old.Name)); err != nil {
				return err
			}
			if err := t.b(bUnanswered).Delete(key(due, old.Name)); err != nil {
				return err
			}
		}
		if lifecycle.Open(old.State) && !lifecycle.Open(r.State) {
			if err := t.b(bOpen).Delete(key(person(old.Person.GetNhsNumber()), old.RecipientService, old.Name)); err != nil {
				return err
			}
			if err := t.b(bConsentOpen).Delete(key(old.Consent, old.Name)); err != nil {
				return err
			}
		}
	}
	if err := t.b(bInbox).Put(key(r.Recipient, fixed{byte(r.State)}, created, r.Name), nil); err != nil {
		return err
	}
	if r.State == requested && old == nil {
		due := ts(r.ReplyBy.AsTime())
		if err := t.b(bDue).Put(key(r.Recipient, due, r.Name), nil); err != nil {
			return err
		}
		if err := t.b(bDueQueue).Put(key(due, r.Name), nil); err != nil {
			return err
		}
		if err := t.b(bUnanswered).Put(key(due, r.Name), nil); err != nil {
			return err
		}
	}
	if old == nil && lifecycle.Open(r.State) {
		if err := t.b(bOpen).Put(key(person(r.Person.GetNhsNumber()), r.RecipientService, r.Name), nil); err != nil {
			return err
		}
		if err := t.b(bConsentOpen).Put(key(r.Consent, r.Name), nil); err != nil {
			return err
		}
	}
	return nil
}

// countState moves a referral from old's state (nil: new) to r's in the
// per-state counts. Each state's count is kept in stateShards keys, the
// referral's name choosing one, so that concurrent writers on an engine
// that detects conflicts by key (etcd) seldom touch the same count.
func (t *tx) countState(old, r *pb.Referral) error {
	b := t.b(bStateCount)
	shard := byte(crc32.ChecksumIEEE([]byte(r.Name)) % stateShards)
	add := func(s pb.ReferralState, d int64) error {
		k := []byte{byte(s), shard}
		var n int64
		if v := b.Get(k); len(v) == 8 {
			n = int64(binary.BigEndian.Uint64(v))
		}
		return b.Put(k, u64(uint64(n+d)))
	}
	if old != nil {
		if err := add(old.State, -1); err != nil {
			return err
		}
	}
	return add(r.State, 1)
}

// stateShards is how many keys each state's count is spread over.
const stateShards = 64

// ReferralStates sums each state's shards (and the one key per state of
// stores written before there were shards).
func (t *tx) ReferralStates() (map[pb.ReferralState]int64, error) {
	out := map[pb.ReferralState]int64{}
	err := t.b(bStateCount).ForEach(func(k, v []byte) error {
		if (len(k) == 1 || len(k) == 2) && len(v) == 8 {
			out[pb.ReferralState(k[0])] += int64(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	return out, err
}

func (t *tx) CountUnanswered(before time.Time) (int, error) {
	n, end := 0, []byte(ts(before))
	c := t.b(bUnanswered).Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], end) < 0; k, _ = c.Next() {
		n++
	}
	return n, nil
}

func (t *tx) ListCapacity(after string, limit int) (Page[*pb.Capacity], error) {
	var p Page[*pb.Capacity]
	next, err := scan(t.b(bCapacity), nil, after, limit, func(k, v []byte) (bool, error) {
		c := &pb.Capacity{}
		if err := proto.Unmarshal(v, c); err != nil {
			return false, fmt.Errorf("decode capacity %s: %w", k, err)
		}
		p.Items = append(p.Items, c)
		return true, nil
	})
	p.Next = next
	return p, err
}

// Consents.

func (t *tx) GetConsent(name string) (*pb.Consent, error) {
	return getProto(t.b(bConsents), name, &pb.Consent{})
}

func (t *tx) ListConsents(nhsNumber, after string, limit int, keep func(*pb.Consent) bool) (Page[*pb.Consent], error) {
	pfx := []byte(person(nhsNumber))
	return scanKept(t.b(bPersonConsent), pfx, after, limit, func(k, _ []byte) (*pb.Consent, error) {
		return t.GetConsent(string(k[len(pfx)+8:]))
	}, keep)
}

func (t *tx) CreateConsent(c *pb.Consent) error {
	if t.b(bConsents).Get([]byte(c.Name)) != nil {
		return fmt.Errorf("%s: %w", c.Name, ErrAlreadyExists)
	}
	if err := t.b(bPersonConsent).Put(key(person(c.NhsNumber), ts(c.CreateTime.AsTime()), c.Name), nil); err != nil {
		return err
	}
	return putProto(t.b(bConsents), c.Name, c)
}

func (t *tx) UpdateConsent(c *pb.Consent) error {
	old, err := t.GetConsent(c.Name)
	if err != nil {
		return err
	}
	if old.NhsNumber != "" && old.NhsNumber != c.NhsNumber {
		if err := t.b(bPersonConsent).Delete(key(person(old.NhsNumber), ts(old.CreateTime.AsTime()), old.Name)); err != nil {
			return err
		}
		if c.NhsNumber != "" {
			if err := t.b(bPersonConsent).Put(key(person(c.NhsNumber), ts(c.CreateTime.AsTime()), c.Name), nil); err != nil {
				return err
			}
		}
	}
	if err := putProto(t.b(bConsents), c.Name, c); err != nil {
		return err
	}
	// What reports count of its referrals follows the consent.
	return t.retallyConsent(c.Name)
}

// Feedback.

func (t *tx) ListFeedback(referral, after string, limit int, keep func(*pb.Feedback) bool) (Page[*pb.Feedback], error) {
	return scanKept(t.b(bFeedback), prefix(referral), after, limit, func(_, v []byte) (*pb.Feedback, error) {
		f := &pb.Feedback{}
		return f, proto.Unmarshal(v, f)
	}, keep)
}

func (t *tx) CreateFeedback(f *pb.Feedback) error {
	referral := f.Name[:bytes.LastIndex([]byte(f.Name), []byte("/feedback/"))]
	k := key(referral, ts(f.CreateTime.AsTime()), f.Name)
	if t.b(bFeedback).Get(k) != nil {
		return fmt.Errorf("%s: %w", f.Name, ErrAlreadyExists)
	}
	if err := putProto(t.b(bFeedback), string(k), f); err != nil {
		return err
	}
	return t.retallyFeedback(referral, f)
}

// retallyFeedback retallies the referral when f is an outcome, the only
// feedback reports count.
func (t *tx) retallyFeedback(referral string, f *pb.Feedback) error {
	if f.GetOutcome() == nil {
		return nil
	}
	r, err := t.GetReferral(referral)
	if err != nil {
		return err
	}
	return t.retally(r)
}

func (t *tx) UpdateFeedback(f *pb.Feedback) error {
	referral := f.Name[:bytes.LastIndex([]byte(f.Name), []byte("/feedback/"))]
	k := key(referral, ts(f.CreateTime.AsTime()), f.Name)
	if t.b(bFeedback).Get(k) == nil {
		return fmt.Errorf("%s: %w", f.Name, ErrNotFound)
	}
	if err := putProto(t.b(bFeedback), string(k), f); err != nil {
		return err
	}
	return t.retallyFeedback(referral, f)
}

// API keys.

func (t *tx) GetAPIKey(name string) (*APIKey, error) {
	v := t.b(bAPIKeys).Get([]byte(name))
	if v == nil {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	k := &APIKey{}
	return k, json.Unmarshal(v, k)
}

func (t *tx) ListAPIKeys(org, after string, limit int) (Page[*APIKey], error) {
	var p Page[*APIKey]
	var err error
	p.Next, err = scan(t.b(bAPIKeys), []byte(org+"/apiKeys/"), after, limit, func(_, v []byte) (bool, error) {
		k := &APIKey{}
		if err := json.Unmarshal(v, k); err != nil {
			return false, err
		}
		p.Items = append(p.Items, k)
		return true, nil
	})
	return p, err
}

func (t *tx) CreateAPIKey(k *APIKey) error {
	if t.b(bAPIKeys).Get([]byte(k.Name)) != nil {
		return fmt.Errorf("%s: %w", k.Name, ErrAlreadyExists)
	}
	return t.putJSON(bAPIKeys, []byte(k.Name), k)
}

func (t *tx) UpdateAPIKey(k *APIKey) error {
	if t.b(bAPIKeys).Get([]byte(k.Name)) == nil {
		return fmt.Errorf("%s: %w", k.Name, ErrNotFound)
	}
	return t.putJSON(bAPIKeys, []byte(k.Name), k)
}

func (t *tx) putJSON(bucket string, k []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return t.b(bucket).Put(k, b)
}

// Idempotency.

func (t *tx) GetIdempotency(org, requestID string) (*Idempotency, error) {
	v := t.b(bIdempotency).Get(key(org, requestID))
	if v == nil {
		return nil, ErrNotFound
	}
	return decodeIdempotency(v)
}

func (t *tx) PutIdempotency(org, requestID string, rec *Idempotency) error {
	return t.b(bIdempotency).Put(key(org, requestID), encodeIdempotency(rec))
}

// Stored answers are written as a version byte (1, or 2 for an elided
// response), the method and the request hash each after its length as a
// uvarint, the create time as a varint of Unix nanoseconds (0: none), then
// the response's bytes. Stores written before this format hold JSON (which
// starts with '{'); all are read. The binary form saves the JSON's field
// names and the base64 of its []byte fields (a quarter of the answer's
// size) and the writer's time.
const (
	idempotencyV1     = 1
	idempotencyElided = 2
)

func encodeIdempotency(rec *Idempotency) []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(rec.Method)+len(rec.RequestHash)+binary.MaxVarintLen64+len(rec.Response))
	if rec.Elided {
		b = append(b, idempotencyElided)
	} else {
		b = append(b, idempotencyV1)
	}
	b = binary.AppendUvarint(b, uint64(len(rec.Method)))
	b = append(b, rec.Method...)
	b = binary.AppendUvarint(b, uint64(len(rec.RequestHash)))
	b = append(b, rec.RequestHash...)
	var created int64
	if !rec.CreateTime.IsZero() {
		created = rec.CreateTime.UnixNano()
	}
	b = binary.AppendVarint(b, created)
	return append(b, rec.Response...)
}

func decodeIdempotency(v []byte) (*Idempotency, error) {
	rec := &Idempotency{}
	if len(v) > 0 && v[0] == '{' {
		return rec, json.Unmarshal(v, rec)
	}
	elided, method, hash, created, response, ok := splitIdempotency(v)
	if !ok {
		return nil, errors.New("decode stored answer: damaged record")
	}
	rec.Elided = elided
	rec.Method = string(method)
	rec.RequestHash = slices.Clone(hash)
	if created != 0 {
		rec.CreateTime = time.Unix(0, created).UTC()
	}
	rec.Response = slices.Clone(response)
	return rec, nil
}

// splitIdempotency reads a stored answer in the binary form into its parts,
// without copying them; ok is false for a damaged record (or a JSON one).
func splitIdempotency(v []byte) (elided bool, method, hash []byte, created int64, response []byte, ok bool) {
	if len(v) == 0 || v[0] != idempotencyV1 && v[0] != idempotencyElided {
		return false, nil, nil, 0, nil, false
	}
	elided = v[0] == idempotencyElided
	v = v[1:]
	field := func() ([]byte, bool) {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > uint64(len(v)-k) {
			return nil, false
		}
		f := v[k : k+int(n)]
		v = v[k+int(n):]
		return f, true
	}
	method, ok1 := field()
	hash, ok2 := field()
	created, k := binary.Varint(v)
	if !ok1 || !ok2 || k <= 0 {
		return false, nil, nil, 0, nil, false
	}
	return elided, method, hash, created, v[k:], true
}

// answerGoes is the rule erasure and the retention sweep share for a
// stored answer: one that cannot be read goes whatever drop says (it can
// answer no retry, and might hold the personal data an erasure removes),
// rather than stop every later sweep and erasure; the others go when drop
// says so.
func answerGoes(v []byte, drop func(*Idempotency) bool) bool {
	rec, err := decodeIdempotency(v)
	return err != nil || drop(rec)
}

// answerExpired is answerGoes for the retention sweep: an answer goes once
// it was made before before (or has no time). A binary record's time is
// read without copying its answer; an older store's JSON is decoded.
func answerExpired(v []byte, before time.Time) bool {
	if len(v) > 0 && v[0] == '{' {
		return answerGoes(v, func(rec *Idempotency) bool { return rec.CreateTime.Before(before) })
	}
	_, _, _, created, _, ok := splitIdempotency(v)
	return !ok || created == 0 || time.Unix(0, created).Before(before)
}

func (t *tx) ExpiredIdempotency(before time.Time, from string, scan int) ([]string, string, error) {
	scan = max(scan, 1)
	var expired []string
	c := t.b(bIdempotency).Cursor()
	k, v := c.First()
	if from != "" {
		k, v = c.Seek([]byte(from))
	}
	for n := 0; k != nil; k, v = c.Next() {
		if n == scan {
			return expired, string(k), nil
		}
		n++
		if answerExpired(v, before) {
			expired = append(expired, string(k))
		}
	}
	return expired, "", nil
}

func (t *tx) DeleteExpiredIdempotency(at []string, before time.Time) (int, error) {
	b := t.b(bIdempotency)
	n := 0
	for _, k := range at {
		if v := b.Get([]byte(k)); v == nil || !answerExpired(v, before) {
			continue
		}
		if err := b.Delete([]byte(k)); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (t *tx) DeleteIdempotency(drop func(*Idempotency) bool) (int, error) {
	b := t.b(bIdempotency)
	var doomed [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if answerGoes(v, drop) {
			doomed = append(doomed, append([]byte(nil), k...))
		}
	}
	for _, k := range doomed { // deleting while iterating skips keys in bbolt
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(doomed), nil
}

// Audit.

func (t *tx) AppendAudit(e *pb.AuditEvent) error {
	if t.w == nil {
		return errReadOnly
	}
	e.Sequence = 0 // the engine numbers it; readers set it from the key
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode audit event: %w", err)
	}
	at := ts(e.EventTime.AsTime())
	ix := []kv.Index{{Space: bAuditTime, Key: key(at)}, {Space: bAuditOrg, Key: key(e.Organization, at)}}
	for _, r := range append([]string{e.Resource}, e.Shown...) {
		if r != "" {
			ix = append(ix, kv.Index{Space: bAuditResource, Key: key(r, at)})
		}
	}
	return t.w.Append(bAudit, v, ix...)
}

func (t *tx) LastAuditSequence() (int64, error) { return int64(t.r.Last(bAudit)), nil }

// ListAudit walks the most selective index (resource, then organisation,
// then time) from the start time and stops at the end time.
func (t *tx) ListAudit(q AuditQuery, after string, limit int) (Page[*pb.AuditEvent], error) {
	var b space
	var pfx []byte
	switch {
	case q.Resource != "":
		b, pfx = t.b(bAuditResource), prefix(q.Resource)
	case q.Organization != "":
		b, pfx = t.b(bAuditOrg), prefix(q.Organization)
	default:
		b, pfx = t.b(bAuditTime), nil
	}
	if after == "" && !q.Start.IsZero() {
		// No key equals prefix+time (keys go on with the sequence), so the
		// scan starts at the first key at or after the start time.
		after = string(append(append([]byte(nil), pfx...), ts(q.Start)...))
	}
	var end []byte
	if !q.End.IsZero() {
		end = append(append([]byte(nil), pfx...), ts(q.End)...)
	}
	var p Page[*pb.AuditEvent]
	var err error
	stopped := false
	p.Next, err = scan(b, pfx, after, limit, func(k, _ []byte) (bool, error) {
		if end != nil && bytes.Compare(k, end) >= 0 {
			stopped = true
			return false, errStop
		}
		seq := k[len(k)-8:]
		e, err := getProto(t.b(bAudit), string(seq), &pb.AuditEvent{})
		if err != nil {
			return false, err
		}
		e.Sequence = int64(binary.BigEndian.Uint64(seq))
		if (q.Organization != "" && e.Organization != q.Organization) ||
			(q.Resource != "" && e.Resource != q.Resource && !slices.Contains(e.Shown, q.Resource)) {
			return false, nil
		}
		p.Items = append(p.Items, e)
		return true, nil
	})
	if stopped {
		p.Next, err = "", nil
	}
	return p, err
}

// Events.

func (t *tx) AppendEvent(e *Event) error {
	if t.w == nil {
		return errReadOnly
	}
	ev := e.Event
	if ev.Sequence != 0 { // the engine numbers it; readers set it from the key
		ev = proto.Clone(ev).(*pb.Event)
		ev.Sequence = 0
	}
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	aud := e.Audience
	if e.Public {
		aud = []string{publicAudience}
	}
	ix := make([]kv.Index, 0, len(aud))
	seen := map[string]bool{}
	for _, org := range aud {
		if !seen[org] {
			seen[org] = true
			ix = append(ix, kv.Index{Space: bEventAudience, Key: prefix(org)})
		}
	}
	if ev.Type == pb.EventType_EVENT_TYPE_CAPACITY_CHANGED {
		ix = append(ix, kv.Index{Space: bEventCapacity, Key: prefix(ev.Resource)})
	}
	return t.w.Append(bEvents, v, ix...)
}

func (t *tx) LastSequence() (int64, error) { return int64(t.r.Last(bEvents)), nil }

func (t *tx) ListEvents(org string, after int64, limit int) ([]*pb.Event, int64, error) {
	events := t.b(bEvents)
	var out []*pb.Event
	load := func(seq []byte) error {
		e := &pb.Event{}
		if err := proto.Unmarshal(events.Get(seq), e); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		e.Sequence = int64(binary.BigEndian.Uint64(seq))
		out = append(out, e)
		return nil
	}
	start := u64(uint64(after) + 1)
	if org == "" {
		c := events.Cursor()
		for k, _ := c.Seek(start); k != nil; k, _ = c.Next() {
			if len(out) == limit {
				return out, out[len(out)-1].Sequence, nil
			}
			if err := load(k); err != nil {
				return nil, 0, err
			}
		}
		return out, int64(t.r.Last(bEvents)), nil
	}
	// Merge the caller's own events with the public ones, in sequence order.
	open := func(aud string) (kv.Cursor, []byte, func() []byte) {
		pfx := prefix(aud)
		c := t.b(bEventAudience).Cursor()
		k, _ := c.Seek(append(append([]byte(nil), pfx...), start...))
		cur := func() []byte {
			if k == nil || !bytes.HasPrefix(k, pfx) {
				return nil
			}
			return k[len(pfx):]
		}
		return c, pfx, cur
	}
	ca, _, curA := open(org)
	cb, _, curB := open(publicAudience)
	a, b := curA(), curB()
	next := func(c kv.Cursor, pfx []byte) []byte {
		k, _ := c.Next()
		if k == nil || !bytes.HasPrefix(k, pfx) {
			return nil
		}
		return k[len(pfx):]
	}
	pa, pbx := prefix(org), prefix(publicAudience)
	for a != nil || b != nil {
		if len(out) == limit {
			return out, out[len(out)-1].Sequence, nil
		}
		switch {
		case b == nil || (a != nil && bytes.Compare(a, b) < 0):
			if err := load(a); err != nil {
				return nil, 0, err
			}
			a = next(ca, pa)
		case a == nil || bytes.Compare(b, a) < 0:
			if err := load(b); err != nil {
				return nil, 0, err
			}
			b = next(cb, pbx)
		default: // the same event in both
			if err := load(a); err != nil {
				return nil, 0, err
			}
			a, b = next(ca, pa), next(cb, pbx)
		}
	}
	return out, int64(t.r.Last(bEvents)), nil
}
