package report

import (
	"math"
	"math/bits"
	"slices"
	"sort"
	"time"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/lifecycle"
	"github.com/social-prescribing/exchange/server/rules/policy"
)

// A report never walks the referrals it counts. What each referral adds to
// the reports is its Row, kept by the store beside it and recomputed (RowFor)
// in the same transaction as every change to the referral, its outcome
// feedback or its consent; the store adds each row to a Sums per day and per
// month (UK time) of the referral's Key, and takes the old row out. A report
// reads the month cells of the whole months of its filter, the day cells of
// the whole days at its edges and the rows of any part of a day, so its cost
// grows with the months and with the combinations of service, referrer,
// route and needs that have referrals, not with the referrals.

// Key is where a referral is counted: the dimensions report filters and
// breakdowns read.
type Key struct {
	Service   string
	Recipient string
	Referrer  string
	Route     pb.ReferralRoute
	// Needs has bit n set for pb.Category n.
	Needs uint64
}

// Pass reports whether a referral of key k passes filter f, but for its
// period (the store picks the cells and rows of the period).
func (k Key) Pass(f *pb.ReportFilter) bool {
	switch {
	case f == nil:
		return true
	case f.Service != "" && k.Service != f.Service,
		f.Category != 0 && k.Needs&(1<<uint(f.Category)) == 0,
		f.Route != 0 && k.Route != f.Route,
		f.Organization != "" && k.Referrer != f.Organization && k.Recipient != f.Organization:
		return false
	}
	return true
}

// Pair is a referral's baseline and follow-up score of one measure.
type Pair struct {
	Measure int8 // index in measures
	Base    int32
	Follow  int32
	Age     int8 // ageUnder50, age50Up, ageNone
	// BaseTime is the baseline's measure_time (Unix seconds): an age
	// group once known is kept for the same baseline after the date of
	// birth is cleared (erasure and retention change no report).
	BaseTime int64
}

const (
	ageUnder50 = iota
	age50Up
	ageNone
)

const (
	sexFemale = iota
	sexMale
	sexOther
)

// Measured is, for one instrument, whether a referral has a baseline and a
// follow-up (completeness).
type Measured struct {
	Instrument pb.Instrument
	Follow     bool
}

// Side is the outcomes a referral adds for one kind of reader.
type Side struct {
	Pairs    []Pair
	Measured []Measured
}

// Row is what one referral adds to the reports.
type Row struct {
	Key
	Created  int64 // create_time, Unix nanoseconds
	State    pb.ReferralState
	Reason   pb.StateReasonCode
	Accepted bool
	Started  bool
	Answered bool
	Answer   int64 // seconds to the first answer
	Sex      int8
	All      Side
	// Shared are the outcomes the referrer's own report counts
	// (policy.SharedInReports); nil when they are All.
	Shared *Side
}

// CreateTime is the referral's create_time.
func (r *Row) CreateTime() time.Time { return time.Unix(0, r.Created) }

// shared is the side the referrer's own report counts.
func (r *Row) shared() *Side {
	if r.Shared != nil {
		return r.Shared
	}
	return &r.All
}

// RowFor is what referral r, relying on consent c (nil when not found),
// with its feedback, adds to the reports: nil when it is not counted (its
// consent does not allow evaluation, policy.CountsInReports, or it was
// entered in error). prev is the row stored before, or nil.
func RowFor(r *pb.Referral, c *pb.Consent, feedback []*pb.Feedback, prev *Row) *Row {
	if !policy.CountsInReports(c) || !lifecycle.Counts(r.State) {
		return nil
	}
	var all, shared []*pb.OutcomeMeasure
	for _, f := range feedback {
		o := f.GetOutcome()
		if o == nil {
			continue
		}
		if o.MeasureTime == nil {
			o = &pb.OutcomeMeasure{Instrument: o.Instrument, Timepoint: o.Timepoint, Total: o.Total,
				ItemScores: o.ItemScores, Vas: o.Vas, MeasureTime: f.CreateTime}
		}
		all = append(all, o)
		if policy.SharedInReports(f, c) {
			shared = append(shared, o)
		}
	}
	row := RowOf(r, all, prev)
	if len(shared) != len(all) {
		s := sideOf(r, shared, prev, func(p *Row) *Side { return p.shared() })
		row.Shared = &s
	}
	return row
}

// RowOf is what referral r adds with its outcome measures (each with a
// measure_time), whoever reads them.
func RowOf(r *pb.Referral, outcomes []*pb.OutcomeMeasure, prev *Row) *Row {
	needs := uint64(0)
	for _, n := range r.Needs {
		if n > 0 && n < 64 {
			needs |= 1 << uint(n)
		}
	}
	row := &Row{Key: Key{Service: r.RecipientService, Recipient: r.Recipient, Referrer: r.Referrer, Route: r.Route, Needs: needs},
		Created: r.CreateTime.AsTime().UnixNano(), State: r.State, Accepted: reachedAccepted(r), Started: reachedStarted(r)}
	switch r.State {
	case pb.ReferralState_REFERRAL_STATE_REJECTED, pb.ReferralState_REFERRAL_STATE_FAILED, pb.ReferralState_REFERRAL_STATE_CANCELLED:
		row.Reason = r.StateReason.GetCode()
	}
	if r.ResponseTime != nil {
		row.Answered = true
		row.Answer = int64(r.ResponseTime.AsTime().Sub(r.CreateTime.AsTime()) / time.Second)
	}
	switch r.Person.GetSex() {
	case pb.Sex_SEX_FEMALE:
		row.Sex = sexFemale
	case pb.Sex_SEX_MALE:
		row.Sex = sexMale
	default:
		row.Sex = sexOther
	}
	row.All = sideOf(r, outcomes, prev, func(p *Row) *Side { return &p.All })
	return row
}

func sideOf(r *pb.Referral, outcomes []*pb.OutcomeMeasure, prev *Row, side func(*Row) *Side) Side {
	var s Side
	for i, m := range measures {
		base, follow := pairOf(outcomes, m.instrument)
		if base == nil || follow == nil {
			continue
		}
		b, ok1 := m.score(base)
		f, ok2 := m.score(follow)
		if !ok1 || !ok2 {
			continue
		}
		at := base.MeasureTime.AsTime()
		p := Pair{Measure: int8(i), Base: int32(b), Follow: int32(f), BaseTime: at.Unix(), Age: ageNone}
		if age, ok := ageAt(r.Person, at); ok {
			p.Age = age50Up
			if age < 50 {
				p.Age = ageUnder50
			}
		}
		if r.Person.GetDateOfBirth() == "" && prev != nil {
			for _, q := range side(prev).Pairs {
				if q.Measure == p.Measure && q.BaseTime == p.BaseTime {
					p.Age = q.Age
				}
			}
		}
		s.Pairs = append(s.Pairs, p)
	}
	seen := map[pb.Instrument]bool{}
	for _, o := range outcomes {
		if seen[o.Instrument] {
			continue
		}
		seen[o.Instrument] = true
		base, follow := pairOf(outcomes, o.Instrument)
		if base != nil {
			s.Measured = append(s.Measured, Measured{Instrument: o.Instrument, Follow: follow != nil})
		}
	}
	slices.SortFunc(s.Measured, func(a, b Measured) int { return int(a.Instrument - b.Instrument) })
	return s
}

// Moments are a group's pairs as sums: exact, since scores are whole
// numbers, and enough for every statistic a report shows of them.
type Moments struct {
	N   int64
	SB  int64 // sum of baselines
	SB2 int64 // of their squares
	SF  int64
	SF2 int64
	// Change counts each change (follow-up minus baseline).
	Change map[int32]int64
}

func (m *Moments) add(o *Moments, sign int64) {
	m.N += sign * o.N
	m.SB, m.SB2 = m.SB+sign*o.SB, m.SB2+sign*o.SB2
	m.SF, m.SF2 = m.SF+sign*o.SF, m.SF2+sign*o.SF2
	for d, n := range o.Change {
		bump(&m.Change, d, sign*n)
	}
}

func (m *Moments) addPair(b, f int32, sign int64) {
	m.N += sign
	m.SB, m.SB2 = m.SB+sign*int64(b), m.SB2+sign*int64(b)*int64(b)
	m.SF, m.SF2 = m.SF+sign*int64(f), m.SF2+sign*int64(f)*int64(f)
	bump(&m.Change, f-b, sign)
}

// changes are the distinct changes in order.
func (m *Moments) changes() []int32 {
	out := make([]int32, 0, len(m.Change))
	for d := range m.Change {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// meanSD is the mean and sample SD of a sum and a sum of squares of n
// values, as MeanSD has them (NaN where undefined).
func meanSD(n, s, s2 int64) (float64, float64) {
	if n == 0 {
		return math.NaN(), math.NaN()
	}
	mean := float64(s) / float64(n)
	if n < 2 {
		return mean, math.NaN()
	}
	ss := float64(n*s2-s*s) / float64(n) // exact in integers, then once rounded
	return mean, math.Sqrt(max(ss, 0) / float64(n-1))
}

func (m *Moments) changeSums() (s, s2 int64) {
	for d, n := range m.Change {
		s += int64(d) * n
		s2 += int64(d) * int64(d) * n
	}
	return s, s2
}

// Paired is the paired statistics of the group (PairedTest).
func (m *Moments) Paired(higherIsBetter bool) Paired {
	var improved, unchanged, worse int
	for d, n := range m.Change {
		better := d > 0
		if !higherIsBetter {
			better = d < 0
		}
		switch {
		case d == 0:
			unchanged += int(n)
		case better:
			improved += int(n)
		default:
			worse += int(n)
		}
	}
	bm, bsd := meanSD(m.N, m.SB, m.SB2)
	fm, fsd := meanSD(m.N, m.SF, m.SF2)
	s, s2 := m.changeSums()
	cm, csd := meanSD(m.N, s, s2)
	return pairedOf(int(m.N), bm, bsd, fm, fsd, cm, csd, improved, unchanged, worse)
}

// meaningful counts the pairs that improved by at least by points.
func (m *Moments) meaningful(higherIsBetter bool, by float64) int {
	n := 0
	for d, c := range m.Change {
		x := float64(d)
		if !higherIsBetter {
			x = -x
		}
		if x >= by {
			n += int(c)
		}
	}
	return n
}

// spread reports whether the group's statistics may be shown: at least k
// of its changes differ from its most common change (with no suppression,
// k of 1 or less, any). Means and SDs of whole-number changes almost all
// alike give the few others away: their number (the counts that rose,
// stayed and fell, even hidden) and their size.
func (m *Moments) spread(k int) bool {
	if k <= 1 || m.N < int64(k) {
		return m.N > 0 && m.N >= int64(k)
	}
	top := int64(0)
	for _, n := range m.Change {
		top = max(top, n)
	}
	return m.N-top >= int64(k)
}

// pooled is the two-sample test of the changes of a and b (PooledTest).
func pooled(a, b *Moments) Pooled {
	sa, sa2 := a.changeSums()
	sb, sb2 := b.changeSums()
	ma, da := meanSD(a.N, sa, sa2)
	mb, db := meanSD(b.N, sb, sb2)
	return pooledOf(ma, da, int(a.N), mb, db, int(b.N))
}

// OutcomeSums are a cell's pairs and completeness for one kind of reader.
type OutcomeSums struct {
	// Groups are the pairs of each measure, sex and age group, by
	// groupOf.
	Groups map[int]*Moments
	// Measured counts, by instrument, baselines and those with a
	// follow-up.
	Measured map[pb.Instrument]*[2]int64
}

func groupOf(measure, sex, age int) int { return measure*9 + sex*3 + age }

func (o *OutcomeSums) addSide(s *Side, sex int8, sign int64) {
	for _, p := range s.Pairs {
		if o.Groups == nil {
			o.Groups = map[int]*Moments{}
		}
		g := groupOf(int(p.Measure), int(sex), int(p.Age))
		m := o.Groups[g]
		if m == nil {
			m = &Moments{}
			o.Groups[g] = m
		}
		if m.addPair(p.Base, p.Follow, sign); m.N == 0 {
			delete(o.Groups, g)
		}
	}
	for _, ms := range s.Measured {
		if o.Measured == nil {
			o.Measured = map[pb.Instrument]*[2]int64{}
		}
		c := o.Measured[ms.Instrument]
		if c == nil {
			c = &[2]int64{}
			o.Measured[ms.Instrument] = c
		}
		c[0] += sign
		if ms.Follow {
			c[1] += sign
		}
		if c[0] == 0 && c[1] == 0 {
			delete(o.Measured, ms.Instrument)
		}
	}
}

func (o *OutcomeSums) add(x *OutcomeSums) {
	for g, m := range x.Groups {
		if o.Groups == nil {
			o.Groups = map[int]*Moments{}
		}
		if o.Groups[g] == nil {
			o.Groups[g] = &Moments{}
		}
		o.Groups[g].add(m, 1)
	}
	for in, c := range x.Measured {
		if o.Measured == nil {
			o.Measured = map[pb.Instrument]*[2]int64{}
		}
		if o.Measured[in] == nil {
			o.Measured[in] = &[2]int64{}
		}
		o.Measured[in][0] += c[0]
		o.Measured[in][1] += c[1]
	}
}

// Sums is the sum of the rows of one Key in one period.
type Sums struct {
	Key
	N          int64
	Accepted   int64
	Started    int64
	Completed  int64
	Open       int64
	Waitlisted int64
	// Final counts the rejected, failed and cancelled by finalKey.
	Final map[int64]int64
	// Answers counts the times to a first answer by answerStep.
	Answers map[int64]int64
	All     OutcomeSums
	Shared  OutcomeSums
}

func finalKey(s pb.ReferralState, r pb.StateReasonCode) int64 { return int64(s)<<32 | int64(r) }

// answerStep is the step a time to a first answer of s seconds is counted
// in, by its start: the minute under an hour, five minutes under a day,
// the hour under thirty days, the day beyond. A percentile of the times is
// read at the middle of its step (Percentile of the steps' middles).
func answerStep(s int64) int64 {
	switch {
	case s < 0:
		return 0
	case s < 3600:
		return s / 60 * 60
	case s < 86400:
		return s / 300 * 300
	case s < 30*86400:
		return s / 3600 * 3600
	}
	return s / 86400 * 86400
}

func answerMiddle(step int64) float64 {
	w := int64(60)
	switch {
	case step >= 30*86400:
		w = 86400
	case step >= 86400:
		w = 3600
	case step >= 3600:
		w = 300
	}
	return float64(step) + float64(w)/2
}

// bump adds by to count k of *m, dropping a count that comes to 0.
func bump[K comparable](m *map[K]int64, k K, by int64) {
	if *m == nil {
		*m = map[K]int64{}
	}
	if (*m)[k] += by; (*m)[k] == 0 {
		delete(*m, k)
	}
}

// AddRow adds row r to c (sign 1) or takes it out (-1).
func (c *Sums) AddRow(r *Row, sign int64) {
	c.addCounts(r, sign)
	c.All.addSide(&r.All, r.Sex, sign)
	c.Shared.addSide(r.shared(), r.Sex, sign)
}

// addCounts adds what r counts besides its outcomes.
func (c *Sums) addCounts(r *Row, sign int64) {
	c.Key = r.Key
	c.N += sign
	b := func(ok bool) int64 {
		if ok {
			return sign
		}
		return 0
	}
	c.Accepted += b(r.Accepted)
	c.Started += b(r.Started)
	c.Completed += b(r.State == pb.ReferralState_REFERRAL_STATE_COMPLETED)
	c.Open += b(lifecycle.Open(r.State))
	c.Waitlisted += b(r.State == pb.ReferralState_REFERRAL_STATE_ON_HOLD)
	switch r.State {
	case pb.ReferralState_REFERRAL_STATE_REJECTED, pb.ReferralState_REFERRAL_STATE_FAILED, pb.ReferralState_REFERRAL_STATE_CANCELLED:
		bump(&c.Final, finalKey(r.State, r.Reason), sign)
	}
	if r.Answered {
		bump(&c.Answers, answerStep(r.Answer), sign)
	}
}

// Empty reports whether nothing is counted in c.
func (c *Sums) Empty() bool { return c.N == 0 }

// A Sink takes what the store keeps for a report as it reads it
// (storage.ReadTx.ReportSums), encoded: the sums of a period starting at
// (Sums.MarshalBinary), or the row of one referral (Row.MarshalBinary).
type Sink interface {
	AddSums(at time.Time, enc []byte) error
	AddRow(enc []byte) error
}

// SumsFunc is a Sink that decodes each sums, and each row as sums of one.
type SumsFunc func(at time.Time, s *Sums) error

func (f SumsFunc) AddSums(at time.Time, enc []byte) error {
	var s Sums
	if err := s.UnmarshalBinary(enc); err != nil {
		return err
	}
	return f(at, &s)
}

func (f SumsFunc) AddRow(enc []byte) error {
	var row Row
	if err := row.UnmarshalBinary(enc); err != nil {
		return err
	}
	var s Sums
	s.AddRow(&row, 1)
	return f(row.CreateTime(), &s)
}

// Tally is what a report counts: cells by UK month, merged across the
// periods and parts of a period the store read. It is a Sink, merging
// what it takes as it decodes it.
type Tally struct {
	cells map[monthKey]*tallied
	// Overdue is how many of the referrals counted are overdue at the
	// time of the report (lifecycle.Overdue): few, and time moves them, so
	// the store finds them by deadline rather than keep them in sums.
	Overdue int
	// Keep, when set, says which keys are counted; Shared of which only
	// the outcomes shared with the reader (Sums.Shared) rather than all.
	Keep, Shared func(Key) bool
}

type monthKey struct {
	month int // year*12 + month-1, UK time
	Key
}

// tallied is a month's cell of a tally; its All is the side counted.
type tallied struct {
	Sums
	month int
}

// NewTally returns an empty tally.
func NewTally() *Tally { return &Tally{cells: map[monthKey]*tallied{}} }

// MonthOf is the UK month of t, as the tally numbers months.
func MonthOf(t time.Time) int {
	uk := t.In(london)
	return uk.Year()*12 + int(uk.Month()) - 1
}

// London is UK time, in which report days and months begin.
var London = london

// DayStart is the start of t's UK day; NextDay the start of the next.
func DayStart(t time.Time) time.Time {
	uk := t.In(london)
	return time.Date(uk.Year(), uk.Month(), uk.Day(), 0, 0, 0, 0, london)
}

func NextDay(t time.Time) time.Time {
	uk := t.In(london)
	return time.Date(uk.Year(), uk.Month(), uk.Day()+1, 0, 0, 0, 0, london)
}

// MonthStart is the start of t's UK month; NextMonth the start of the next.
func MonthStart(t time.Time) time.Time {
	uk := t.In(london)
	return time.Date(uk.Year(), uk.Month(), 1, 0, 0, 0, 0, london)
}

func NextMonth(t time.Time) time.Time {
	uk := t.In(london)
	return time.Date(uk.Year(), uk.Month()+1, 1, 0, 0, 0, 0, london)
}

func monthStart(m int) time.Time { return time.Date(m/12, time.Month(m%12+1), 1, 0, 0, 0, 0, london) }

// cell is the tally's cell of key k in the month holding at.
func (t *Tally) cell(at time.Time, k Key) *tallied {
	mk := monthKey{MonthOf(at), k}
	x := t.cells[mk]
	if x == nil {
		x = &tallied{Sums: Sums{Key: k}, month: mk.month}
		t.cells[mk] = x
	}
	return x
}

func (t *Tally) shared(k Key) bool { return t.Shared != nil && t.Shared(k) }

// AddSums adds the encoded sums of a period starting at, of a key kept,
// decoding the rest only then.
func (t *Tally) AddSums(at time.Time, enc []byte) error {
	d := decoder{b: enc}
	k := d.key()
	if d.err != nil || t.Keep != nil && !t.Keep(k) {
		return d.err
	}
	x := t.cell(at, k)
	if t.shared(k) {
		d.sumsInto(&x.Sums, nil, &x.All)
	} else {
		d.sumsInto(&x.Sums, &x.All, nil)
	}
	return d.err
}

// AddRow adds the encoded row of one referral, of a key kept.
func (t *Tally) AddRow(enc []byte) error {
	if k, err := DecodeKey(enc); err != nil || t.Keep != nil && !t.Keep(k) {
		return err
	}
	var r Row
	if err := r.UnmarshalBinary(enc); err != nil {
		return err
	}
	t.addRow(&r)
	return nil
}

func (t *Tally) addRow(r *Row) {
	x := t.cell(r.CreateTime(), r.Key)
	x.addCounts(r, 1)
	side := &r.All
	if t.shared(r.Key) {
		side = r.shared()
	}
	x.All.addSide(side, r.Sex, 1)
}

// sorted are the tally's cells in month and key order, so that a report
// is the same whichever order the store read them in.
func (t *Tally) sorted() []*tallied {
	keys := make([]monthKey, 0, len(t.cells))
	for k := range t.cells {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		switch {
		case a.month != b.month:
			return a.month < b.month
		case a.Service != b.Service:
			return a.Service < b.Service
		case a.Referrer != b.Referrer:
			return a.Referrer < b.Referrer
		case a.Route != b.Route:
			return a.Route < b.Route
		}
		return a.Needs < b.Needs
	})
	out := make([]*tallied, len(keys))
	for i, k := range keys {
		out[i] = t.cells[k]
	}
	return out
}

// needCount is how many needs a key has.
func (k Key) needCount() int { return bits.OnesCount64(k.Needs) }

// stepPercentile is Percentile of the times counted by answerStep, each
// at the middle of its step.
func stepPercentile(steps map[int64]int64, q float64) float64 {
	keys := make([]int64, 0, len(steps))
	total := int64(0)
	for k, n := range steps {
		keys = append(keys, k)
		total += n
	}
	if total == 0 {
		return math.NaN()
	}
	slices.Sort(keys)
	// at is the value of rank r (0-based) of the sorted times.
	at := func(r int64) float64 {
		for _, k := range keys {
			if r < steps[k] {
				return answerMiddle(k)
			}
			r -= steps[k]
		}
		return answerMiddle(keys[len(keys)-1])
	}
	pos := q / 100 * float64(total-1)
	lo := int64(math.Floor(pos))
	if lo >= total-1 {
		return at(total - 1)
	}
	return at(lo) + (pos-float64(lo))*(at(lo+1)-at(lo))
}

// Names are the services and organisations the tally counts referrals
// to, in order: the names a report labels.
func (t *Tally) Names() []string {
	seen := map[string]bool{}
	var out []string
	for k := range t.cells {
		for _, name := range []string{k.Service, k.Recipient} {
			if !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}
