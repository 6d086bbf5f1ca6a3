package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/lifecycle"
	"github.com/social-prescribing/exchange/server/rules/report"
)

// What reports count, kept as the referrals change (report.RowFor): each
// counted referral's row, and the sums of the rows of each day and month
// (UK time) and report.Key. Written in the same transaction as the change
// to the referral, its outcome feedback or its consent, on every engine.
var (
	bReportRows  = "report_rows"         // created(8) name -> report.Row
	bReportSums  = "report_sums"         // kind(1) period(4) service 0 referrer 0 route(1) needs(8) -> report.Sums
	bConsentRefs = "ix_consent_referral" // consent 0 name, every referral
	// CAPACITY_CHANGED events by their capacity's name, for the reports'
	// capacity history (an index of the event log).
	bEventCapacity = "ix_event_capacity" // resource 0 seq(8)
)

// The kinds of sums: a day's and a month's.
const (
	sumsDay   = 'd'
	sumsMonth = 'm'
)

func dayNumber(t time.Time) uint32 {
	uk := t.In(report.London)
	return uint32(uk.Year()*10000 + int(uk.Month())*100 + uk.Day())
}

func monthNumber(t time.Time) uint32 {
	uk := t.In(report.London)
	return uint32(uk.Year()*100 + int(uk.Month()))
}

func sumsKey(kind byte, period uint32, k report.Key) []byte {
	return key(fixed{kind}, fixed(binary.BigEndian.AppendUint32(nil, period)), k.Service, k.Referrer,
		fixed{byte(k.Route)}, u64(k.Needs))
}

func rowKey(r *pb.Referral) []byte { return key(ts(r.CreateTime.AsTime()), r.Name) }

// retally brings the report row of referral r, as stored in this
// transaction, and the sums it is in up to date: the old row is taken out
// of its sums and the new one added. Idempotent: a row already up to date
// changes nothing, so an upgrade cut short can run it again.
func (t *tx) retally(r *pb.Referral) error {
	var c *pb.Consent
	if r.Consent != "" {
		c, _ = t.GetConsent(r.Consent) // none: not counted
	}
	var feedback []*pb.Feedback
	for after := ""; ; {
		p, err := t.ListFeedback(r.Name, after, 1000, func(f *pb.Feedback) bool { return f.GetOutcome() != nil })
		if err != nil {
			return err
		}
		feedback = append(feedback, p.Items...)
		if after = p.Next; after == "" {
			break
		}
	}
	rk := rowKey(r)
	before := t.b(bReportRows).Get(rk)
	var old *report.Row
	if before != nil {
		old = &report.Row{}
		if err := old.UnmarshalBinary(before); err != nil {
			return fmt.Errorf("decode the report row of %s: %w", r.Name, err)
		}
	}
	row := report.RowFor(r, c, feedback, old)
	var after []byte
	if row != nil {
		var err error
		if after, err = row.MarshalBinary(); err != nil {
			return err
		}
	}
	if bytes.Equal(before, after) {
		return nil
	}
	if old != nil {
		if err := t.addSums(old, -1); err != nil {
			return err
		}
	}
	if row == nil {
		return t.b(bReportRows).Delete(rk)
	}
	if err := t.addSums(row, 1); err != nil {
		return err
	}
	return t.b(bReportRows).Put(rk, after)
}

// addSums adds row to the sums of its day and its month (sign 1) or takes
// it out (-1); sums that count nothing are deleted.
func (t *tx) addSums(row *report.Row, sign int64) error {
	at := row.CreateTime()
	for _, k := range [][]byte{sumsKey(sumsDay, dayNumber(at), row.Key), sumsKey(sumsMonth, monthNumber(at), row.Key)} {
		var s report.Sums
		if v := t.b(bReportSums).Get(k); v != nil {
			if err := s.UnmarshalBinary(v); err != nil {
				return fmt.Errorf("decode report sums: %w", err)
			}
		}
		s.AddRow(row, sign)
		if s.Empty() {
			if err := t.b(bReportSums).Delete(k); err != nil {
				return err
			}
			continue
		}
		v, err := s.MarshalBinary()
		if err != nil {
			return err
		}
		if err := t.b(bReportSums).Put(k, v); err != nil {
			return err
		}
	}
	return nil
}

// retallyConsent retallies every referral relying on consent c.
func (t *tx) retallyConsent(consent string) error {
	pfx := prefix(consent)
	var names []string
	c := t.b(bConsentRefs).Cursor()
	for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
		names = append(names, string(k[len(pfx):]))
	}
	for _, name := range names {
		r, err := t.GetReferral(name)
		if err != nil {
			return err
		}
		if err := t.retally(r); err != nil {
			return err
		}
	}
	return nil
}

// ReportSums gives into, encoded, what reports count of the referrals made
// in [from, to) (a zero time: no bound) to service ("": any): the sums of
// the whole months in it and of the whole days (UK time) beside them, each
// with the time its period starts, and the rows of the part of a day at
// either end. So a report reads sums, not referrals, whatever its period.
func (t *tx) ReportSums(from, to time.Time, service string, into report.Sink) error {
	r := sumsReader{t: t, into: into}
	if service != "" {
		r.service = prefix(service)
	}
	lo, hi := from, to
	bounded := func(x time.Time) bool { return !x.IsZero() }
	before := func(a, b time.Time) bool { return !bounded(b) || a.Before(b) } // a < b, b zero: +inf
	// The part of a day at each end: rows.
	if bounded(lo) && !report.DayStart(lo).Equal(lo) {
		end := report.NextDay(lo)
		if !before(end, hi) {
			return r.rows(lo, hi)
		}
		if err := r.rows(lo, end); err != nil {
			return err
		}
		lo = end
	}
	if bounded(hi) && !report.DayStart(hi).Equal(hi) {
		start := report.DayStart(hi)
		if bounded(lo) && start.Before(lo) {
			start = lo
		}
		if err := r.rows(start, hi); err != nil {
			return err
		}
		hi = report.DayStart(hi)
	}
	if bounded(lo) && !before(lo, hi) {
		return nil
	}
	// The days of a month at each end: day sums.
	if bounded(lo) && !report.MonthStart(lo).Equal(lo) {
		end := report.NextMonth(lo)
		if !before(end, hi) {
			return r.sums(sumsDay, dayNumber(lo), dayNumber(hi), bounded(hi))
		}
		if err := r.sums(sumsDay, dayNumber(lo), dayNumber(end), true); err != nil {
			return err
		}
		lo = end
	}
	if bounded(hi) && !report.MonthStart(hi).Equal(hi) {
		start := report.MonthStart(hi)
		if bounded(lo) && start.Before(lo) {
			start = lo
		}
		if err := r.sums(sumsDay, dayNumber(start), dayNumber(hi), true); err != nil {
			return err
		}
		hi = report.MonthStart(hi)
	}
	if bounded(lo) && !before(lo, hi) {
		return nil
	}
	first := uint32(0)
	if bounded(lo) {
		first = monthNumber(lo)
	}
	last := uint32(0)
	if bounded(hi) {
		last = monthNumber(hi)
	}
	return r.sums(sumsMonth, first, last, bounded(hi))
}

// sumsReader gives what it reads of a report's period to a sink.
type sumsReader struct {
	t       *tx
	into    report.Sink
	service []byte // service 0: only its rows and sums, sought in each period
}

// sums visits the sums of kind from period first up to, not including,
// last (when bounded).
func (r *sumsReader) sums(kind byte, first, last uint32, bounded bool) error {
	c := r.t.b(bReportSums).Cursor()
	start := func(period uint32) []byte {
		return append(binary.BigEndian.AppendUint32([]byte{kind}, period), r.service...)
	}
	for k, v := c.Seek(start(first)); k != nil && k[0] == kind; {
		period := binary.BigEndian.Uint32(k[1:5])
		if bounded && period >= last {
			return nil
		}
		if r.service != nil && !bytes.HasPrefix(k[5:], r.service) {
			// Another service's: on to this period's sums of the service,
			// or past them to the next period's.
			next := start(period)
			if bytes.Compare(k, next) > 0 {
				next = start(period + 1)
			}
			k, v = c.Seek(next)
			continue
		}
		var at time.Time
		if kind == sumsDay {
			at = time.Date(int(period/10000), time.Month(period/100%100), int(period%100), 0, 0, 0, 0, report.London)
		} else {
			at = time.Date(int(period/100), time.Month(period%100), 1, 0, 0, 0, 0, report.London)
		}
		if err := r.into.AddSums(at, v); err != nil {
			return fmt.Errorf("report sums: %w", err)
		}
		k, v = c.Next()
	}
	return nil
}

// rows visits the rows of the referrals made in [from, to), each as sums
// of one.
func (r *sumsReader) rows(from, to time.Time) error {
	c := r.t.b(bReportRows).Cursor()
	end := ts(to)
	for k, v := c.Seek(ts(from)); k != nil && bytes.Compare(k[:8], end) < 0; k, v = c.Next() {
		if r.service != nil {
			rk, err := report.DecodeKey(v)
			if err != nil {
				return fmt.Errorf("a report row: %w", err)
			}
			if rk.Service+"\x00" != string(r.service) {
				continue
			}
		}
		if err := r.into.AddRow(v); err != nil {
			return fmt.Errorf("a report row: %w", err)
		}
	}
	return nil
}

// CapacityEvents returns the CAPACITY_CHANGED events of capacity (a
// service's, {service}/capacity), in sequence order.
func (t *tx) CapacityEvents(capacity string) ([]*pb.Event, error) {
	pfx := prefix(capacity)
	var out []*pb.Event
	c := t.b(bEventCapacity).Cursor()
	for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
		seq := k[len(pfx):]
		e := &pb.Event{}
		if err := proto.Unmarshal(t.b(bEvents).Get(seq), e); err != nil {
			return nil, fmt.Errorf("decode event: %w", err)
		}
		e.Sequence = int64(binary.BigEndian.Uint64(seq))
		out = append(out, e)
	}
	return out, nil
}

// OverdueReportRows visits the report rows of the referrals overdue at now
// (lifecycle.Overdue) that reports count, found by their deadline: few,
// since the exchange rejects what stays unanswered.
func (t *tx) OverdueReportRows(now time.Time, visit func(*report.Row) error) error {
	var names []string
	c := t.b(bUnanswered).Cursor()
	end := ts(now)
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], end) <= 0; k, _ = c.Next() {
		names = append(names, string(k[8:]))
	}
	for _, name := range names {
		r, err := t.GetReferral(name)
		if err != nil {
			return err
		}
		if !lifecycle.Overdue(r, now) {
			continue
		}
		v := t.b(bReportRows).Get(rowKey(r))
		if v == nil {
			continue // not counted
		}
		var row report.Row
		if err := row.UnmarshalBinary(v); err != nil {
			return fmt.Errorf("decode the report row of %s: %w", name, err)
		}
		if err := visit(&row); err != nil {
			return err
		}
	}
	return nil
}
