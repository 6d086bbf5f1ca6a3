package report

import (
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // report periods are in UK time wherever the server runs

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/lifecycle"
	"github.com/social-prescribing/exchange/server/rules/validate"
)

// Referral is one referral a report may count: the caller may count it and
// its consent allows evaluation (server/api decides both).
type Referral struct {
	R *pb.Referral // as stored, with the person
	// Outcomes are its outcome measures, each with measure_time set (the
	// time the feedback was posted when the measure gave none).
	Outcomes []*pb.OutcomeMeasure
}

// Context is what a report needs besides the referrals.
type Context struct {
	Threshold int // counts from 1 to Threshold-1 are suppressed
	Now       time.Time
	Filter    *pb.ReportFilter
	// Labels are display names of services and organisations by name.
	Labels map[string]string
	// ServiceCreated is when each service was created.
	ServiceCreated map[string]time.Time
	// CapacityEvents are the CAPACITY_CHANGED events of the services
	// counted, each service's in sequence order.
	CapacityEvents []*pb.Event
}

// Matches reports whether r passes filter f.
func Matches(r *pb.Referral, f *pb.ReportFilter) bool {
	if f == nil {
		return true
	}
	created := r.CreateTime.AsTime()
	switch {
	case f.StartTime != nil && created.Before(f.StartTime.AsTime()),
		f.EndTime != nil && !created.Before(f.EndTime.AsTime()),
		f.Service != "" && r.RecipientService != f.Service,
		f.Category != 0 && !slices.Contains(r.Needs, f.Category),
		f.Route != 0 && r.Route != f.Route,
		f.Organization != "" && r.Referrer != f.Organization && r.Recipient != f.Organization:
		return false
	}
	return true
}

// tally counts keys and returns rows in the order of keys' first appearance
// in order (sorted by the caller).
type tally struct {
	n     map[string]int
	label map[string]string
}

func newTally() *tally { return &tally{n: map[string]int{}, label: map[string]string{}} }

func (t *tally) add(key, label string, n int64) {
	t.n[key] += int(n)
	t.label[key] = label
}

// rows returns the rows sorted by less (or by key), their counts made by l.
func (t *tally) rows(l *Ledger, less func(a, b string) bool) []*pb.CountRow {
	keys := make([]string, 0, len(t.n))
	for key := range t.n {
		keys = append(keys, key)
	}
	if less == nil {
		sort.Strings(keys)
	} else {
		sort.Slice(keys, func(i, j int) bool { return less(keys[i], keys[j]) })
	}
	rows := make([]*pb.CountRow, len(keys))
	for i, key := range keys {
		rows[i] = &pb.CountRow{Key: key, Label: t.label[key], Count: l.Count(t.n[key])}
	}
	return rows
}

// counts are the counts of rows.
func counts(rows []*pb.CountRow) []*pb.Count {
	out := make([]*pb.Count, len(rows))
	for i, r := range rows {
		out[i] = r.Count
	}
	return out
}

// enumTally counts enum values, in number order.
type enumTally struct {
	*tally
	num map[string]int32
}

func newEnumTally() *enumTally { return &enumTally{newTally(), map[string]int32{}} }

func (t *enumTally) addEnum(e protoreflect.Enum, code, label string, n int64) {
	t.add(code, label, n)
	t.num[code] = int32(e.Number())
}

func (t *enumTally) sorted(l *Ledger) []*pb.CountRow {
	return t.rows(l, func(a, b string) bool { return t.num[a] < t.num[b] })
}

func (c *Context) label(name string) string {
	if l := c.Labels[name]; l != "" {
		return l
	}
	return name
}

// Build builds the activity and outcome reports of refs (those passing the
// filter), each counted as its row (RowOf), protected together
// (disclosure.go): both reports of one filter are suppressed as one, so
// that neither gives away what the other hides.
func Build(refs []Referral, c Context) (*pb.ActivityReport, *pb.OutcomeReport) {
	t := NewTally()
	for _, ref := range refs {
		if Matches(ref.R, c.Filter) && lifecycle.Counts(ref.R.State) {
			t.addRow(RowOf(ref.R, ref.Outcomes, nil))
			if lifecycle.Overdue(ref.R, c.Now) {
				t.Overdue++
			}
		}
	}
	return BuildTally(t, c)
}

// BuildTally builds both reports of what t counts: the cells and rows of
// the period of c's filter that pass it (Key.Pass).
func BuildTally(t *Tally, c Context) (*pb.ActivityReport, *pb.OutcomeReport) {
	in := t.sorted()
	l := NewLedger(c.Threshold)
	per := trendPeriods(in, c.Filter)
	act := activity(in, t.Overdue, c, l, per)
	out, splits := outcomes(in, c, l, per)
	// Baselines of a service are among its referrals, and its pairs of a
	// measure among its follow-ups of the instrument.
	services := map[string]*pb.Count{}
	for _, row := range act.ByService {
		services[row.Key] = row.Count
	}
	for _, comp := range out.Completeness {
		l.Rest(l.Of(services[comp.Service]), true, l.Of(comp.Baseline))
		for _, m := range out.Measures {
			for _, s := range m.ByService {
				if m.Instrument == comp.Instrument && s.Service == comp.Service {
					l.Among(l.Of(comp.WithFollowUp), l.Of(s.Stats.N))
				}
			}
		}
	}
	// The pairs of a period are among its referrals.
	for _, m := range out.Measures {
		for i, p := range m.Trend {
			l.Rest(l.Of(act.Trend[i].Referrals), true, l.Of(p.N))
		}
	}
	// The items of one instrument (ONS4's four) score the same pairs, so
	// their groups are the same size.
	prev := map[pb.Instrument][]*pb.Count{}
	for _, m := range out.Measures {
		groups := []*pb.Count{m.All.N}
		for _, g := range m.Comparisons {
			groups = append(groups, g.A.N, g.B.N)
		}
		for _, p := range m.Trend {
			groups = append(groups, p.N)
		}
		if before, ok := prev[m.Instrument]; ok && len(before) == len(groups) {
			for i := range groups {
				if before[i].Value == groups[i].Value {
					l.Sum(before[i], groups[i])
				}
			}
		}
		prev[m.Instrument] = groups
	}
	l.Protect()
	if rt := act.ResponseTime; rt.Answered.Suppressed {
		rt.Median, rt.P90 = nil, nil
	}
	for _, m := range out.Measures {
		m.All = withheld(m.All)
		for _, b := range m.ChangeDistribution {
			if b.Count.Suppressed {
				m.ChangeDistribution = nil // shown whole or not at all (the contract)
				break
			}
		}
		for _, g := range m.Comparisons {
			g.A, g.B = withheld(g.A), withheld(g.B)
			if g.A.ChangeMean == nil || g.B.ChangeMean == nil {
				g.Difference, g.T, g.Df, g.P = nil, nil, nil, nil
			}
		}
		for _, s := range m.ByService {
			s.Stats = withheld(s.Stats)
		}
		for _, p := range m.Trend {
			if p.N.Suppressed {
				p.ChangeMean = nil
			}
		}
	}
	protectMoments(splits)
	for _, m := range out.Measures {
		for _, g := range m.Comparisons {
			if g.A.ChangeMean == nil || g.B.ChangeMean == nil {
				g.Difference, g.T, g.Df, g.P = nil, nil, nil, nil
			}
		}
	}
	return act, out
}

// A group's mean and SD, with its n, are its sum of changes and of their
// squares: magnitudes, not counts, but tied by the same sums as its
// counts (the women's and the men's and the rest's add up to everyone's).
// One group whose statistics are withheld, in a relation whose every other
// member shows them, would have them worked out by difference; so, as
// complementary suppression does for counts, protectMoments withholds the
// statistics of a second member of each such relation: the smallest part,
// or the whole when no part is left. A rest that no table shows (another
// sex, no age) is a withheld member when its own statistics would be.

// momentPart is one member of a relation of sums: a group, its true size,
// and whether its statistics are shown.
type momentPart struct {
	n        int
	withheld func() bool
	withhold func()
}

// momentSplit: the whole's sums are its parts' and the rest's, which no
// table shows; restHidden when the rest's statistics could not be shown
// were it a group (showable), so that its sums are a secret.
type momentSplit struct {
	whole      momentPart
	parts      []momentPart
	restHidden bool
}

func statsPart(s *pb.PairedStats, n int) momentPart {
	return momentPart{n: n, withheld: func() bool { return s.ChangeMean == nil }, withhold: func() {
		*s = pb.PairedStats{N: s.N, Improved: s.Improved, Unchanged: s.Unchanged, Worse: s.Worse, Meaningful: s.Meaningful}
	}}
}

func periodPart(p *pb.ChangePeriod, n int) momentPart {
	return momentPart{n: n, withheld: func() bool { return p.ChangeMean == nil }, withhold: func() { p.ChangeMean = nil }}
}

func protectMoments(splits []momentSplit) {
	for changed := true; changed; {
		changed = false
		for _, sp := range splits {
			unknown := 0
			if sp.restHidden {
				unknown++
			}
			if sp.whole.n > 0 && sp.whole.withheld() {
				unknown++
			}
			next := -1
			for i, p := range sp.parts {
				switch {
				case p.n == 0:
				case p.withheld():
					unknown++
				case next < 0 || p.n < sp.parts[next].n:
					next = i
				}
			}
			if unknown != 1 {
				continue
			}
			switch {
			case next >= 0:
				sp.parts[next].withhold()
			case sp.whole.n > 0 && !sp.whole.withheld():
				sp.whole.withhold()
			default:
				continue
			}
			changed = true
		}
	}
}

// london is UK time, in which a trend's months and quarters begin.
var london = func() *time.Location {
	l, err := time.LoadLocation("Europe/London")
	if err != nil {
		panic(err) // embedded by time/tzdata
	}
	return l
}()

// periods are a trend's periods: starts[i] to starts[i+1] is period i.
type periods struct{ starts []time.Time }

// trendPeriods are the months (or quarters) from that of the first referral
// of in to that of the last, the first starting no earlier and the last
// ending no later than the filter; none when that is one period, since the
// report's totals are then its only figures, and repeating them would
// only tie more counts together.
func trendPeriods(in []*tallied, f *pb.ReportFilter) periods {
	if len(in) == 0 {
		return periods{}
	}
	months := 1
	if f.GetTrendInterval() == pb.TrendInterval_TREND_INTERVAL_QUARTER {
		months = 3
	}
	// in is in month order; a month's start stands for its referrals.
	last := monthStart(in[len(in)-1].month)
	uk := monthStart(in[0].month)
	start := time.Date(uk.Year(), (uk.Month()-1)/time.Month(months)*time.Month(months)+1, 1, 0, 0, 0, 0, london)
	var p periods
	for t := start; !t.After(last); t = t.AddDate(0, months, 0) {
		p.starts = append(p.starts, t)
	}
	if len(p.starts) < 2 {
		return periods{}
	}
	p.starts = append(p.starts, p.starts[len(p.starts)-1].AddDate(0, months, 0))
	if from := f.GetStartTime(); from != nil && from.AsTime().After(p.starts[0]) {
		p.starts[0] = from.AsTime()
	}
	if to := f.GetEndTime(); to != nil && to.AsTime().Before(p.starts[len(p.starts)-1]) {
		p.starts[len(p.starts)-1] = to.AsTime()
	}
	return p
}

// len is the number of periods.
func (p periods) len() int { return max(len(p.starts)-1, 0) }

// index is the period holding t.
func (p periods) index(t time.Time) int {
	return sort.Search(p.len(), func(i int) bool { return p.starts[i+1].After(t) })
}

func (p periods) bounds(i int) (*timestamppb.Timestamp, *timestamppb.Timestamp) {
	return timestamppb.New(p.starts[i]), timestamppb.New(p.starts[i+1])
}

// withheld leaves out the statistics of a group whose n is suppressed
// (they give n away: t / d is the square root of n), or any of whose
// improved, unchanged, worse or meaningful is: with n, a mean and an SD of
// whole-number changes can pin a split (ten pairs, five unchanged, of mean
// 0.3 and SD 0.675 are four up a point and one down).
func withheld(s *pb.PairedStats) *pb.PairedStats {
	hidden := s.N.Suppressed
	for _, c := range []*pb.Count{s.Improved, s.Unchanged, s.Worse, s.Meaningful} {
		hidden = hidden || c.GetSuppressed()
	}
	if !hidden {
		return s
	}
	*s = pb.PairedStats{N: s.N, Improved: s.Improved, Unchanged: s.Unchanged, Worse: s.Worse, Meaningful: s.Meaningful}
	return s
}

// Activity builds the activity report of refs (Build).
func Activity(refs []Referral, c Context) *pb.ActivityReport {
	a, _ := Build(refs, c)
	return a
}

// Outcomes builds the outcome report of refs (Build).
func Outcomes(refs []Referral, c Context) *pb.OutcomeReport {
	_, o := Build(refs, c)
	return o
}

// activity builds the activity report of in, its counts made by l and
// their relations recorded in it.
func activity(in []*tallied, overdue int, c Context, l *Ledger, per periods) *pb.ActivityReport {
	routes, needs, services, orgs := newEnumTally(), newEnumTally(), newTally(), newTally()
	rejected, failed, cancelled := newEnumTally(), newEnumTally(), newEnumTally()
	var n, accepted, started, completed, open, waitlisted, answered int
	answers := map[int64]int64{}
	needed := 0
	made, began := make([]int, per.len()), make([]int, per.len())
	for _, x := range in {
		n += int(x.N)
		if i := per.index(monthStart(x.month)); i < len(made) {
			made[i] += int(x.N)
			began[i] += int(x.Started)
		}
		needed += x.needCount() * int(x.N)
		routes.addEnum(x.Route, pb.Code(x.Route), pb.Label(x.Route), x.N)
		for need := pb.Category(1); need < 64; need++ {
			if x.Needs&(1<<uint(need)) != 0 {
				needs.addEnum(need, pb.Code(need), pb.Label(need), x.N)
			}
		}
		services.add(x.Service, c.label(x.Service), x.N)
		orgs.add(x.Recipient, c.label(x.Recipient), x.N)
		accepted += int(x.Accepted)
		started += int(x.Started)
		completed += int(x.Completed)
		open += int(x.Open)
		waitlisted += int(x.Waitlisted)
		for k, cnt := range x.Final {
			reason := pb.StateReasonCode(k & (1<<32 - 1))
			switch pb.ReferralState(k >> 32) {
			case pb.ReferralState_REFERRAL_STATE_REJECTED:
				rejected.addEnum(reason, reasonCode(reason), reasonLabel(reason), cnt)
			case pb.ReferralState_REFERRAL_STATE_FAILED:
				failed.addEnum(reason, reasonCode(reason), reasonLabel(reason), cnt)
			case pb.ReferralState_REFERRAL_STATE_CANCELLED:
				cancelled.addEnum(reason, reasonCode(reason), reasonLabel(reason), cnt)
			}
		}
		for step, cnt := range x.Answers {
			answers[step] += cnt
			answered += int(cnt)
		}
	}
	total := l.Count(n)
	l.Headline(total)
	rep := &pb.ActivityReport{
		Filter: c.Filter, SuppressionThreshold: int32(c.Threshold), GenerateTime: timestamppb.New(c.Now),
		Referrals: total, ByRoute: routes.sorted(l), ByNeed: needs.sorted(l),
		ByService: services.rows(l, nil), ByOrganization: orgs.rows(l, nil),
		ResponseTime: &pb.ResponseTimes{Answered: l.Count(answered)},
		Overdue:      l.Count(overdue), Waitlisted: l.Count(waitlisted),
	}
	N := l.Of(total)
	// Every referral has one route, one service and one recipient.
	for _, rows := range [][]*pb.CountRow{rep.ByRoute, rep.ByService, rep.ByOrganization} {
		l.Sum(total, counts(rows)...)
	}
	// A service's name starts with its organisation's: an organisation's
	// referrals are those of its services.
	for _, org := range rep.ByOrganization {
		var of []*pb.Count
		for _, svc := range rep.ByService {
			if strings.HasPrefix(svc.Key, org.Key+"/services/") {
				of = append(of, svc.Count)
			}
		}
		l.Sum(org.Count, of...)
	}
	// A referral has one need or more: each need is among the referrals,
	// and the needs together at least as many.
	var needCells []Cell
	for _, row := range rep.ByNeed {
		l.Rest(N, true, l.Of(row.Count))
		needCells = append(needCells, l.Of(row.Count))
	}
	if needed >= n && len(needCells) > 0 {
		l.Rest(l.Total(needCells...), false, N)
	}
	l.Rest(N, true, l.Of(rep.ResponseTime.Answered))
	rep.Funnel = funnel(l, total, accepted, started, completed, open, rejected, failed, cancelled)
	// Each referral is made in one period.
	var periodsMade, periodsBegan []*pb.Count
	for i := range made {
		p := &pb.TrendPeriod{Referrals: l.Count(made[i]), Started: l.Count(began[i])}
		p.StartTime, p.EndTime = per.bounds(i)
		l.Rest(l.Of(p.Referrals), true, l.Of(p.Started))
		periodsMade, periodsBegan = append(periodsMade, p.Referrals), append(periodsBegan, p.Started)
		rep.Trend = append(rep.Trend, p)
	}
	if len(rep.Trend) > 0 {
		l.Sum(total, periodsMade...)
		l.Sum(rep.Funnel.Started, periodsBegan...)
	}
	l.Rest(l.Of(rep.Funnel.Open), true, l.Of(rep.Overdue), l.Of(rep.Waitlisted))
	if answered >= c.Threshold {
		rep.ResponseTime.Median = seconds(stepPercentile(answers, 50))
		rep.ResponseTime.P90 = seconds(stepPercentile(answers, 90))
	}
	for _, row := range rep.ByService {
		rep.Capacity = append(rep.Capacity, c.capacityHistory(row.Key))
	}
	return rep
}

// funnel builds the funnel. Its final states (open, completed, and each
// reason of rejected, failed and cancelled) partition the referrals, and
// its steps are nested: the referrals that stopped between two steps
// (accepted but never started, say) are groups it must not give away.
func funnel(l *Ledger, total *pb.Count, accepted, started, completed, open int, rejected, failed, cancelled *enumTally) *pb.Funnel {
	f := &pb.Funnel{Referred: total, Accepted: l.Count(accepted), Started: l.Count(started),
		Completed: l.Count(completed), Open: l.Count(open),
		Rejected: rejected.sorted(l), Failed: failed.sorted(l), Cancelled: cancelled.sorted(l)}
	final := []*pb.Count{f.Open, f.Completed}
	for _, rows := range [][]*pb.CountRow{f.Rejected, f.Failed, f.Cancelled} {
		final = append(final, counts(rows)...)
	}
	l.Sum(total, final...)
	l.Rest(l.Of(total), true, l.Of(f.Accepted))
	l.Rest(l.Of(f.Accepted), true, l.Of(f.Started))
	l.Rest(l.Of(f.Started), true, l.Of(f.Completed))
	return f
}

func seconds(s float64) *durationpb.Duration {
	return durationpb.New(time.Duration(math.Round(s)) * time.Second)
}

func reasonCode(r pb.StateReasonCode) string {
	if r == 0 {
		return "NONE"
	}
	return pb.Code(r)
}

func reasonLabel(r pb.StateReasonCode) string {
	if r == 0 {
		return "No reason given"
	}
	return pb.Label(r)
}

// reachedAccepted: accepted at some point. Referrals stored before
// accept_time existed are judged by their state.
func reachedAccepted(r *pb.Referral) bool {
	switch r.State {
	case pb.ReferralState_REFERRAL_STATE_ACCEPTED, pb.ReferralState_REFERRAL_STATE_IN_PROGRESS, pb.ReferralState_REFERRAL_STATE_COMPLETED:
		return true
	}
	return r.AcceptTime != nil
}

// reachedStarted: support started at some point.
func reachedStarted(r *pb.Referral) bool {
	switch r.State {
	case pb.ReferralState_REFERRAL_STATE_IN_PROGRESS, pb.ReferralState_REFERRAL_STATE_COMPLETED:
		return true
	}
	return r.StartTime != nil
}

// capacityHistory is the service's capacity status over the report period.
// A service starts ACCEPTING; each CAPACITY_CHANGED event, in sequence
// order, sets the status.
func (c *Context) capacityHistory(service string) *pb.CapacityHistory {
	capName := service + "/capacity"
	from, to := c.ServiceCreated[service], c.Now
	if f := c.Filter.GetStartTime(); f != nil && f.AsTime().After(from) {
		from = f.AsTime()
	}
	if e := c.Filter.GetEndTime(); e != nil && e.AsTime().Before(to) {
		to = e.AsTime()
	}
	h := &pb.CapacityHistory{Service: service, Label: c.label(service)}
	if !from.Before(to) {
		return h
	}
	status, since := pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, from
	for _, e := range c.CapacityEvents {
		if e.Resource != capName || e.CapacityStatus == 0 {
			continue
		}
		at := e.EventTime.AsTime()
		if !at.After(from) {
			status = e.CapacityStatus
			continue
		}
		// Events count in sequence order; one timed before the one it
		// follows (another server's clock, the demo's history) takes
		// effect at that one's time, so no period runs backwards.
		if at.Before(since) {
			at = since
		}
		if !at.Before(to) {
			break
		}
		if e.CapacityStatus != status {
			if at.After(since) {
				h.Periods = append(h.Periods, period(status, since, at))
			}
			status, since = e.CapacityStatus, at
		}
	}
	h.Periods = append(h.Periods, period(status, since, to))
	return h
}

func period(s pb.CapacityStatus, from, to time.Time) *pb.CapacityPeriod {
	return &pb.CapacityPeriod{Status: s, StartTime: timestamppb.New(from), EndTime: timestamppb.New(to)}
}

// measure is one score a report follows.
type measure struct {
	code, label    string
	instrument     pb.Instrument
	higherIsBetter bool
	binWidth       float64
	score          func(*pb.OutcomeMeasure) (float64, bool)
	// meaningful is the change in points usually cited as meaningful, 0
	// where none is published.
	meaningful float64
}

func total(o *pb.OutcomeMeasure) (float64, bool) {
	if o.Total != 0 {
		return float64(o.Total), true
	}
	if len(o.ItemScores) == 0 {
		return 0, false
	}
	sum := 0
	for _, s := range o.ItemScores {
		sum += int(s)
	}
	return float64(sum), true
}

func item(i int) func(*pb.OutcomeMeasure) (float64, bool) {
	return func(o *pb.OutcomeMeasure) (float64, bool) {
		if i < len(o.ItemScores) {
			return float64(o.ItemScores[i]), true
		}
		return 0, false
	}
}

func vas(o *pb.OutcomeMeasure) (float64, bool) {
	if o.Vas == nil {
		return 0, false
	}
	return float64(*o.Vas), true
}

// measures are the scores reports follow, in report order.
var measures = []measure{
	// WEMWBS: a change of 3 points is meaningful (Maheswaran H, Weich S,
	// Powell J, Stewart-Brown S. Evaluating the responsiveness of the
	// Warwick Edinburgh Mental Well-Being Scale (WEMWBS): group and
	// individual level analysis. Health Qual Life Outcomes 2012;10:156,
	// whose minimally important difference is 3 to 8; Warwick Medical
	// School's WEMWBS user guide cites 3). The others have no single
	// published figure and are left without one.
	{"WEMWBS", "Warwick-Edinburgh Mental Wellbeing Scale (14-70)", pb.Instrument_INSTRUMENT_WEMWBS, true, 5, total, 3},
	{"SWEMWBS", "Short WEMWBS (7-35)", pb.Instrument_INSTRUMENT_SWEMWBS, true, 2, total, 0},
	{"ONS4_LIFE_SATISFACTION", "ONS4: life satisfaction (0-10)", pb.Instrument_INSTRUMENT_ONS4, true, 1, item(0), 0},
	{"ONS4_WORTHWHILE", "ONS4: things done are worthwhile (0-10)", pb.Instrument_INSTRUMENT_ONS4, true, 1, item(1), 0},
	{"ONS4_HAPPINESS", "ONS4: happiness yesterday (0-10)", pb.Instrument_INSTRUMENT_ONS4, true, 1, item(2), 0},
	{"ONS4_ANXIETY", "ONS4: anxiety yesterday (0-10, lower is better)", pb.Instrument_INSTRUMENT_ONS4, false, 1, item(3), 0},
	{"EQ5D5L_VAS", "EQ-5D-5L visual analogue scale (0-100)", pb.Instrument_INSTRUMENT_EQ5D5L, true, 10, vas, 0},
	{"UCLA3", "UCLA 3-item loneliness scale (3-9, lower is better)", pb.Instrument_INSTRUMENT_UCLA3, false, 1, total, 0},
}

// pairOf returns a referral's baseline (its first BASELINE) and follow-up
// (its last FOLLOW_UP or EXIT) measures of an instrument; either may be nil.
func pairOf(outcomes []*pb.OutcomeMeasure, in pb.Instrument) (base, follow *pb.OutcomeMeasure) {
	for _, o := range outcomes {
		if o.Instrument != in {
			continue
		}
		at := o.MeasureTime.AsTime()
		switch o.Timepoint {
		case pb.Timepoint_TIMEPOINT_BASELINE:
			if base == nil || at.Before(base.MeasureTime.AsTime()) {
				base = o
			}
		case pb.Timepoint_TIMEPOINT_FOLLOW_UP, pb.Timepoint_TIMEPOINT_EXIT:
			if follow == nil || !at.Before(follow.MeasureTime.AsTime()) {
				follow = o
			}
		}
	}
	return base, follow
}

// outcomes builds the outcome report of in, its counts made by l and their
// relations recorded in it.
func outcomes(in []*tallied, c Context, l *Ledger, per periods) (*pb.OutcomeReport, []momentSplit) {
	rep := &pb.OutcomeReport{Filter: c.Filter, SuppressionThreshold: int32(c.Threshold), GenerateTime: timestamppb.New(c.Now)}
	var pairs []*pb.Count
	var splits []momentSplit
	for mi, m := range measures {
		var all Moments
		var bySex, byAge [3]Moments // by sexFemale..., ageUnder50...
		female, male, otherSex := &bySex[sexFemale], &bySex[sexMale], &bySex[sexOther]
		under50, over50, noAge := &byAge[ageUnder50], &byAge[age50Up], &byAge[ageNone]
		byService := map[string]*Moments{}
		byPeriod := make([]Moments, per.len())
		for _, x := range in {
			i := per.index(monthStart(x.month))
			for sex := range 3 {
				for age := range 3 {
					g := x.All.Groups[groupOf(mi, sex, age)]
					if g == nil {
						continue
					}
					all.add(g, 1)
					svc := byService[x.Service]
					if svc == nil {
						svc = &Moments{}
						byService[x.Service] = svc
					}
					svc.add(g, 1)
					if i < len(byPeriod) {
						byPeriod[i].add(g, 1)
					}
					bySex[sex].add(g, 1)
					byAge[age].add(g, 1)
				}
			}
		}
		mo := &pb.MeasureOutcome{Measure: m.code, Label: m.label, Instrument: m.instrument, HigherIsBetter: m.higherIsBetter,
			All: paired(l, &all, m, true),
			Comparisons: []*pb.GroupComparison{
				compare(l, "sex", "FEMALE", "MALE", female, male, m),
				compare(l, "age", "UNDER_50", "50_AND_OVER", under50, over50, m),
			}}
		l.Headline(mo.All.N)
		if m.meaningful > 0 {
			mo.MeaningfulChange = proto.Float64(m.meaningful)
		}
		// Each split leaves a rest (another sex, no age), a group of its own.
		for _, g := range mo.Comparisons {
			rest := l.Rest(l.Of(mo.All.N), true, l.Of(g.A.N), l.Of(g.B.N))
			var parts []Cell
			for _, f := range []func(*pb.PairedStats) *pb.Count{(*pb.PairedStats).GetImproved, (*pb.PairedStats).GetUnchanged, (*pb.PairedStats).GetWorse} {
				parts = append(parts, l.Rest(l.Of(f(mo.All)), true, l.Of(f(g.A)), l.Of(f(g.B))))
			}
			l.SumCells(rest, parts...)
		}
		mo.ByService = serviceOutcomes(l, mo.All, byService, m, &c)
		if all.N > 0 && per.len() > 0 {
			mo.Trend = changeTrend(l, mo.All.N, byPeriod, per)
		}
		// Each group's changes sum to the whole's: the relations the
		// means and SDs are in (protectMoments).
		whole := statsPart(mo.All, int(all.N))
		// The comparisons' groups and the rest of each, in their order.
		groups := [][3]*Moments{{female, male, otherSex}, {under50, over50, noAge}}
		for i, g := range mo.Comparisons {
			a, b, rest := groups[i][0], groups[i][1], groups[i][2]
			splits = append(splits, momentSplit{whole: whole, parts: []momentPart{statsPart(g.A, int(a.N)), statsPart(g.B, int(b.N))},
				restHidden: rest.N > 0 && !showable(rest, m, l.k)})
		}
		var svc []momentPart
		for _, so := range mo.ByService {
			svc = append(svc, statsPart(so.Stats, int(byService[so.Service].N)))
		}
		splits = append(splits, momentSplit{whole: whole, parts: svc})
		var prd []momentPart
		for i, p := range mo.Trend {
			prd = append(prd, periodPart(p, int(byPeriod[i].N)))
		}
		if len(prd) > 0 {
			splits = append(splits, momentSplit{whole: whole, parts: prd})
		}
		if all.N >= int64(c.Threshold) {
			mo.ChangeDistribution = histogram(l, &all, m.binWidth, c.Threshold)
			bins := make([]*pb.Count, len(mo.ChangeDistribution))
			for i, b := range mo.ChangeDistribution {
				bins[i] = b.Count
			}
			l.Sum(mo.All.N, bins...)
			binRelations(l, mo.All, mo.ChangeDistribution, m.higherIsBetter, m.binWidth)
		}
		rep.Measures = append(rep.Measures, mo)
		pairs = append(pairs, mo.All.N)
	}
	rep.Completeness = completeness(l, in, &c)
	// The pairs of a measure are among the follow-ups of its instrument.
	for i, m := range measures {
		var with []Cell
		for _, comp := range rep.Completeness {
			if comp.Instrument == m.instrument {
				with = append(with, l.Of(comp.WithFollowUp))
			}
		}
		if len(with) > 0 {
			l.Rest(l.Total(with...), true, l.Of(pairs[i]))
		}
	}
	return rep, splits
}

// serviceOutcomes are the pairs of each service, side by side. Every pair
// has one service.
func serviceOutcomes(l *Ledger, all *pb.PairedStats, by map[string]*Moments, m measure, c *Context) []*pb.ServiceOutcome {
	names := make([]string, 0, len(by))
	for name := range by {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []*pb.ServiceOutcome
	parts := make([][]*pb.Count, 5)
	for _, name := range names {
		s := paired(l, by[name], m, true)
		out = append(out, &pb.ServiceOutcome{Service: name, Label: c.label(name), Stats: s})
		for i, n := range []*pb.Count{s.N, s.Improved, s.Unchanged, s.Worse, s.Meaningful} {
			parts[i] = append(parts[i], n)
		}
	}
	for i, whole := range []*pb.Count{all.N, all.Improved, all.Unchanged, all.Worse, all.Meaningful} {
		if whole != nil && len(out) > 0 {
			l.Sum(whole, parts[i]...)
		}
	}
	return out
}

// changeTrend is the pairs and mean change of each period. Every pair is
// of a referral made in one period.
func changeTrend(l *Ledger, all *pb.Count, by []Moments, per periods) []*pb.ChangePeriod {
	var out []*pb.ChangePeriod
	var ns []*pb.Count
	for i := range by {
		s := &by[i]
		p := &pb.ChangePeriod{N: l.Count(int(s.N))}
		p.StartTime, p.EndTime = per.bounds(i)
		if s.spread(l.k) {
			sum, _ := s.changeSums()
			p.ChangeMean = opt(float64(sum) / float64(s.N))
		}
		out = append(out, p)
		ns = append(ns, p.N)
	}
	if len(out) > 0 {
		l.Sum(all, ns...)
	}
	return out
}

// ageAt is the person's age in whole years at time at: from the date of
// birth, or, once the personal fields are cleared, the lower bound of the
// age band kept in its place ("50-59" counts as 50, on the same side of
// the report's split at 50).
func ageAt(p *pb.Person, at time.Time) (int, bool) {
	if age := validate.Age(p.GetDateOfBirth(), at); age >= 0 {
		return age, true
	}
	lo, _, _ := strings.Cut(strings.TrimSuffix(p.GetAgeBand(), "+"), "-")
	age, err := strconv.Atoi(lo)
	return age, err == nil
}

func opt(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return proto.Float64(x)
}

// paired is the statistics of s, or only its counts when it is smaller
// than the threshold (the counts of its split are then hidden with it).
// With meaningful set, it counts the pairs that improved by the measure's
// meaningful change.
func paired(l *Ledger, s *Moments, m measure, meaningful bool) *pb.PairedStats {
	n := int(s.N)
	p := s.Paired(m.higherIsBetter)
	count := l.Count
	if n > 0 && n < l.k {
		count = l.Hidden
	}
	st := &pb.PairedStats{N: l.Count(n), Improved: count(p.Improved), Unchanged: count(p.Unchanged), Worse: count(p.Worse)}
	l.Sum(st.N, st.Improved, st.Unchanged, st.Worse)
	if meaningful && m.meaningful > 0 {
		st.Meaningful = count(s.meaningful(m.higherIsBetter, m.meaningful))
		l.Rest(l.Of(st.Improved), true, l.Of(st.Meaningful))
	}
	if !s.spread(l.k) {
		return st
	}
	st.BaselineMean, st.BaselineSd = opt(p.BaselineMean), opt(p.BaselineSD)
	st.FollowUpMean, st.FollowUpSd = opt(p.FollowUpMean), opt(p.FollowUpSD)
	st.ChangeMean, st.ChangeSd = opt(p.ChangeMean), opt(p.ChangeSD)
	st.ChangeCiLow, st.ChangeCiHigh = opt(p.CILow), opt(p.CIHigh)
	st.T, st.Df, st.P, st.CohensD = opt(p.T), proto.Int32(int32(p.DF)), opt(p.P), opt(p.D)
	st.CohensDCiLow, st.CohensDCiHigh = opt(p.DLow), opt(p.DHigh)
	return st
}

// showable reports whether a group no table shows could have its
// statistics shown, were it a group like the others: alike enough not
// (spread), and no count of its split from 1 to k-1.
func showable(s *Moments, m measure, k int) bool {
	if !s.spread(k) {
		return false
	}
	p := s.Paired(m.higherIsBetter)
	for _, n := range []int{p.Improved, p.Unchanged, p.Worse} {
		if n > 0 && n < k {
			return false
		}
	}
	return true
}

func compare(l *Ledger, by, a, b string, sa, sb *Moments, m measure) *pb.GroupComparison {
	g := &pb.GroupComparison{By: by, GroupA: a, GroupB: b, A: paired(l, sa, m, false), B: paired(l, sb, m, false)}
	if g.A.ChangeMean != nil && g.B.ChangeMean != nil {
		r := pooled(sa, sb)
		g.Difference, g.T, g.P = opt(r.Difference), opt(r.T), opt(r.P)
		g.Df = proto.Int32(int32(r.DF))
	}
	return g
}

// binRelations ties the bins of a distribution to the pairs that rose,
// fell and stayed. Bin edges are multiples of the width, 0 among them, so
// the bins below 0 hold exactly the pairs whose score fell, and the bin
// from 0 the unchanged with those that rose by less than a width: none when
// the width is 1 or less, since scores are whole numbers.
func binRelations(l *Ledger, s *pb.PairedStats, bins []*pb.Bin, higherIsBetter bool, width float64) {
	fell, rose := s.Worse, s.Improved
	if !higherIsBetter {
		fell, rose = s.Improved, s.Worse
	}
	var below, above []Cell
	var zero *pb.Count
	for _, b := range bins {
		low, high := b.Bounds()
		switch {
		case high <= 0:
			below = append(below, l.Of(b.Count))
		case low == 0:
			zero = b.Count
		default:
			above = append(above, l.Of(b.Count))
		}
	}
	l.SumCells(l.Of(fell), below...)
	switch {
	case zero == nil:
		// No bin from 0: no pair stayed the same.
		l.SumCells(l.Of(s.Unchanged))
		l.SumCells(l.Of(rose), above...)
	case width <= 1:
		l.Sum(zero, s.Unchanged)
		l.SumCells(l.Of(rose), above...)
	default:
		little := l.Rest(l.Of(zero), false, l.Of(s.Unchanged))
		l.SumCells(l.Of(rose), append(above, little)...)
	}
}

// histogram bins changes by width, from the bin of the smallest to that of
// the largest, merging an end bin of fewer than k pairs into the next on
// its side of 0 (the bins below 0, or those from width up), so that the
// tails, where the few are, need not be hidden; an end bin that took
// others is open on its outer side, so that it does not tell where the
// most extreme changes lie.
func histogram(l *Ledger, s *Moments, width float64, k int) []*pb.Bin {
	change := s.changes()
	lo, hi := float64(change[0]), float64(change[len(change)-1])
	first, last := math.Floor(lo/width), math.Floor(hi/width)
	counts := make([]int, int(last-first)+1)
	for _, d := range change {
		counts[int(math.Floor(float64(d)/width)-first)] += int(s.Change[d])
	}
	type bin struct{ low, high float64 }
	edges := make([]bin, len(counts))
	for i := range counts {
		low := (first + float64(i)) * width
		edges[i] = bin{low, low + width}
	}
	mergedBelow, mergedAbove := false, false
	for len(counts) > 1 && counts[0] < k && edges[1].high <= 0 {
		mergedBelow = true
		counts[1] += counts[0]
		edges[1].low = edges[0].low
		counts, edges = counts[1:], edges[1:]
	}
	for n := len(counts); n > 1 && counts[n-1] < k && edges[n-2].low >= width; n = len(counts) {
		mergedAbove = true
		counts[n-2] += counts[n-1]
		edges[n-2].high = edges[n-1].high
		counts, edges = counts[:n-1], edges[:n-1]
	}
	bins := make([]*pb.Bin, len(counts))
	for i := range counts {
		bins[i] = &pb.Bin{Low: proto.Float64(edges[i].low), High: proto.Float64(edges[i].high), Count: l.Count(counts[i])}
	}
	// An end bin that took the bins beyond it is open on that side.
	if mergedBelow {
		bins[0].Low = nil
	}
	if mergedAbove {
		bins[len(bins)-1].High = nil
	}
	return bins
}

// completeness counts, per service and instrument, baselines with and
// without a follow-up.
func completeness(l *Ledger, in []*tallied, c *Context) []*pb.Completeness {
	type key struct {
		service    string
		instrument pb.Instrument
	}
	type tallyRow struct{ base, follow int }
	rows := map[key]*tallyRow{}
	for _, x := range in {
		for instrument, n := range x.All.Measured {
			kk := key{x.Service, instrument}
			if rows[kk] == nil {
				rows[kk] = &tallyRow{}
			}
			rows[kk].base += int(n[0])
			rows[kk].follow += int(n[1])
		}
	}
	keys := make([]key, 0, len(rows))
	for kk := range rows {
		keys = append(keys, kk)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].service != keys[j].service {
			return keys[i].service < keys[j].service
		}
		return keys[i].instrument < keys[j].instrument
	})
	var out []*pb.Completeness
	for _, kk := range keys {
		r := rows[kk]
		count := l.Count
		if r.base > 0 && r.base < l.k {
			count = l.Hidden
		}
		row := &pb.Completeness{Service: kk.service, Label: c.label(kk.service), Instrument: kk.instrument,
			Baseline: l.Count(r.base), WithFollowUp: count(r.follow), WithoutFollowUp: count(r.base - r.follow)}
		l.Sum(row.Baseline, row.WithFollowUp, row.WithoutFollowUp)
		out = append(out, row)
	}
	return out
}
