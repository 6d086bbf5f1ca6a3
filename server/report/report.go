package report

import (
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/lifecycle"
	"github.com/social-prescribing/exchange/server/validate"
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
	// CapacityEvents are the CAPACITY_CHANGED events, in sequence order.
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

// counter makes Counts, suppressing small ones.
type counter int

func (k counter) count(n int) *pb.Count {
	if n > 0 && n < int(k) {
		return &pb.Count{Suppressed: true}
	}
	return &pb.Count{Value: int64(n)}
}

// partition makes the counts of cells that add up to a total that is
// shown. Were exactly one of them suppressed, it could be worked out from
// the others, so the smallest other non-zero cell is suppressed with it.
func (k counter) partition(cells []int) []*pb.Count {
	out := make([]*pb.Count, len(cells))
	hidden, smallest := 0, -1
	for i, n := range cells {
		out[i] = k.count(n)
		if out[i].Suppressed {
			hidden++
		} else if n > 0 && (smallest < 0 || n < cells[smallest]) {
			smallest = i
		}
	}
	if hidden == 1 && smallest >= 0 {
		out[smallest] = &pb.Count{Suppressed: true}
	}
	return out
}

// shown reports whether n is at or above the threshold.
func (k counter) shown(n int) bool { return n >= int(k) }

// tally counts keys and returns rows in the order of keys' first appearance
// in order (sorted by the caller).
type tally struct {
	n     map[string]int
	label map[string]string
}

func newTally() *tally { return &tally{n: map[string]int{}, label: map[string]string{}} }

func (t *tally) add(key, label string) {
	t.n[key]++
	t.label[key] = label
}

// rows returns the rows sorted by less (or by key). When the rows
// partition a total that is shown, they are suppressed as a partition.
func (t *tally) rows(k counter, partitioned bool, less func(a, b string) bool) []*pb.CountRow {
	keys := make([]string, 0, len(t.n))
	for key := range t.n {
		keys = append(keys, key)
	}
	if less == nil {
		sort.Strings(keys)
	} else {
		sort.Slice(keys, func(i, j int) bool { return less(keys[i], keys[j]) })
	}
	cells := make([]int, len(keys))
	for i, key := range keys {
		cells[i] = t.n[key]
	}
	counts := make([]*pb.Count, len(keys))
	if partitioned {
		counts = k.partition(cells)
	} else {
		for i, n := range cells {
			counts[i] = k.count(n)
		}
	}
	rows := make([]*pb.CountRow, len(keys))
	for i, key := range keys {
		rows[i] = &pb.CountRow{Key: key, Label: t.label[key], Count: counts[i]}
	}
	return rows
}

// enumTally counts enum values, in number order.
type enumTally struct {
	*tally
	num map[string]int32
}

func newEnumTally() *enumTally { return &enumTally{newTally(), map[string]int32{}} }

func (t *enumTally) addEnum(e protoreflect.Enum, code, label string) {
	t.add(code, label)
	t.num[code] = int32(e.Number())
}

func (t *enumTally) sorted(k counter, partitioned bool) []*pb.CountRow {
	return t.rows(k, partitioned, func(a, b string) bool { return t.num[a] < t.num[b] })
}

func (c *Context) label(name string) string {
	if l := c.Labels[name]; l != "" {
		return l
	}
	return name
}

// Activity builds the activity report of refs (those passing the filter).
func Activity(refs []Referral, c Context) *pb.ActivityReport {
	k := counter(c.Threshold)
	routes, needs, services, orgs := newEnumTally(), newEnumTally(), newTally(), newTally()
	rejected, failed, cancelled := newEnumTally(), newEnumTally(), newEnumTally()
	var n, accepted, started, completed, open, overdue, waitlisted int
	var answer []float64
	for _, ref := range refs {
		r := ref.R
		if !Matches(r, c.Filter) || r.State == pb.ReferralState_REFERRAL_STATE_ENTERED_IN_ERROR {
			continue
		}
		n++
		routes.addEnum(r.Route, pb.Code(r.Route), pb.Label(r.Route))
		for _, need := range r.Needs {
			needs.addEnum(need, pb.Code(need), pb.Label(need))
		}
		services.add(r.RecipientService, c.label(r.RecipientService))
		orgs.add(r.Recipient, c.label(r.Recipient))
		if reachedAccepted(r) {
			accepted++
		}
		if reachedStarted(r) {
			started++
		}
		reason := r.StateReason.GetCode()
		switch r.State {
		case pb.ReferralState_REFERRAL_STATE_COMPLETED:
			completed++
		case pb.ReferralState_REFERRAL_STATE_REJECTED:
			rejected.addEnum(reason, reasonCode(reason), reasonLabel(reason))
		case pb.ReferralState_REFERRAL_STATE_FAILED:
			failed.addEnum(reason, reasonCode(reason), reasonLabel(reason))
		case pb.ReferralState_REFERRAL_STATE_CANCELLED:
			cancelled.addEnum(reason, reasonCode(reason), reasonLabel(reason))
		}
		if lifecycle.Open(r.State) {
			open++
		}
		if r.State == pb.ReferralState_REFERRAL_STATE_REQUESTED && r.ReplyBy != nil && r.ReplyBy.AsTime().Before(c.Now) {
			overdue++
		}
		if r.State == pb.ReferralState_REFERRAL_STATE_ON_HOLD {
			waitlisted++
		}
		if r.ResponseTime != nil {
			answer = append(answer, r.ResponseTime.AsTime().Sub(r.CreateTime.AsTime()).Seconds())
		}
	}
	rep := &pb.ActivityReport{
		Filter: c.Filter, SuppressionThreshold: int32(c.Threshold), GenerateTime: timestamppb.New(c.Now),
		Referrals: k.count(n), ByRoute: routes.sorted(k, true), ByNeed: needs.sorted(k, false),
		ByService: services.rows(k, true, nil), ByOrganization: orgs.rows(k, true, nil),
		Funnel:       k.funnel(n, accepted, started, completed, open, rejected, failed, cancelled),
		ResponseTime: &pb.ResponseTimes{Answered: k.count(len(answer))},
		Overdue:      k.count(overdue), Waitlisted: k.count(waitlisted),
	}
	if k.shown(len(answer)) {
		rep.ResponseTime.Median = seconds(Percentile(answer, 50))
		rep.ResponseTime.P90 = seconds(Percentile(answer, 90))
	}
	for _, row := range rep.ByService {
		rep.Capacity = append(rep.Capacity, c.capacityHistory(row.Key))
	}
	return rep
}

// funnel builds the funnel. Its final states (open, completed, and each
// reason of rejected, failed and cancelled) partition the referrals, so they
// are suppressed as a partition.
func (k counter) funnel(n, accepted, started, completed, open int, rejected, failed, cancelled *enumTally) *pb.Funnel {
	closed := []*enumTally{rejected, failed, cancelled}
	rows := make([][]*pb.CountRow, len(closed))
	cells := []int{open, completed}
	for i, t := range closed {
		rows[i] = t.sorted(k, false)
		for _, r := range rows[i] {
			cells = append(cells, t.n[r.Key])
		}
	}
	counts := k.partition(cells)
	next := 2
	for _, rs := range rows {
		for _, r := range rs {
			r.Count = counts[next]
			next++
		}
	}
	return &pb.Funnel{Referred: k.count(n), Accepted: k.count(accepted), Started: k.count(started),
		Completed: counts[1], Open: counts[0], Rejected: rows[0], Failed: rows[1], Cancelled: rows[2]}
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
// A service starts ACCEPTING; each CAPACITY_CHANGED event sets the status.
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
		if !at.Before(to) {
			break
		}
		if e.CapacityStatus != status {
			h.Periods = append(h.Periods, period(status, since, at))
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
	{"WEMWBS", "Warwick-Edinburgh Mental Wellbeing Scale (14-70)", pb.Instrument_INSTRUMENT_WEMWBS, true, 5, total},
	{"SWEMWBS", "Short WEMWBS (7-35)", pb.Instrument_INSTRUMENT_SWEMWBS, true, 2, total},
	{"ONS4_LIFE_SATISFACTION", "ONS4: life satisfaction (0-10)", pb.Instrument_INSTRUMENT_ONS4, true, 1, item(0)},
	{"ONS4_WORTHWHILE", "ONS4: things done are worthwhile (0-10)", pb.Instrument_INSTRUMENT_ONS4, true, 1, item(1)},
	{"ONS4_HAPPINESS", "ONS4: happiness yesterday (0-10)", pb.Instrument_INSTRUMENT_ONS4, true, 1, item(2)},
	{"ONS4_ANXIETY", "ONS4: anxiety yesterday (0-10, lower is better)", pb.Instrument_INSTRUMENT_ONS4, false, 1, item(3)},
	{"EQ5D5L_VAS", "EQ-5D-5L visual analogue scale (0-100)", pb.Instrument_INSTRUMENT_EQ5D5L, true, 10, vas},
	{"UCLA3", "UCLA 3-item loneliness scale (3-9, lower is better)", pb.Instrument_INSTRUMENT_UCLA3, false, 1, total},
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

// sample is the pairs of one group.
type sample struct{ base, follow []float64 }

func (s *sample) add(b, f float64) {
	s.base = append(s.base, b)
	s.follow = append(s.follow, f)
}

func (s *sample) change() []float64 {
	d := make([]float64, len(s.base))
	for i := range d {
		d[i] = s.follow[i] - s.base[i]
	}
	return d
}

// Outcomes builds the outcome report of refs (those passing the filter).
func Outcomes(refs []Referral, c Context) *pb.OutcomeReport {
	k := counter(c.Threshold)
	rep := &pb.OutcomeReport{Filter: c.Filter, SuppressionThreshold: int32(c.Threshold), GenerateTime: timestamppb.New(c.Now)}
	var in []Referral
	for _, ref := range refs {
		if Matches(ref.R, c.Filter) && ref.R.State != pb.ReferralState_REFERRAL_STATE_ENTERED_IN_ERROR {
			in = append(in, ref)
		}
	}
	for _, m := range measures {
		var all, female, male, under50, over50 sample
		for _, ref := range in {
			base, follow := pairOf(ref.Outcomes, m.instrument)
			if base == nil || follow == nil {
				continue
			}
			b, ok1 := m.score(base)
			f, ok2 := m.score(follow)
			if !ok1 || !ok2 {
				continue
			}
			all.add(b, f)
			switch ref.R.Person.GetSex() {
			case pb.Sex_SEX_FEMALE:
				female.add(b, f)
			case pb.Sex_SEX_MALE:
				male.add(b, f)
			}
			if age, ok := ageAt(ref.R.Person, base.MeasureTime.AsTime()); ok {
				if age < 50 {
					under50.add(b, f)
				} else {
					over50.add(b, f)
				}
			}
		}
		mo := &pb.MeasureOutcome{Measure: m.code, Label: m.label, Instrument: m.instrument, HigherIsBetter: m.higherIsBetter,
			All: k.paired(all, m.higherIsBetter),
			Comparisons: []*pb.GroupComparison{
				k.compare("sex", "FEMALE", "MALE", female, male, m.higherIsBetter),
				k.compare("age", "UNDER_50", "50_AND_OVER", under50, over50, m.higherIsBetter),
			}}
		if k.shown(len(all.base)) {
			mo.ChangeDistribution = k.histogram(all.change(), m.binWidth)
		}
		rep.Measures = append(rep.Measures, mo)
	}
	rep.Completeness = k.completeness(in, &c)
	return rep
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

// paired is the statistics of s, or only its suppressed n when small.
func (k counter) paired(s sample, higherIsBetter bool) *pb.PairedStats {
	n := len(s.base)
	if !k.shown(n) || n == 0 {
		return &pb.PairedStats{N: k.count(n), Improved: k.count(0), Unchanged: k.count(0), Worse: k.count(0)}
	}
	p := PairedTest(s.base, s.follow, higherIsBetter)
	st := &pb.PairedStats{
		N:            k.count(n),
		BaselineMean: opt(p.BaselineMean), BaselineSd: opt(p.BaselineSD),
		FollowUpMean: opt(p.FollowUpMean), FollowUpSd: opt(p.FollowUpSD),
		ChangeMean: opt(p.ChangeMean), ChangeSd: opt(p.ChangeSD),
		ChangeCiLow: opt(p.CILow), ChangeCiHigh: opt(p.CIHigh),
		T: opt(p.T), Df: proto.Int32(int32(p.DF)), P: opt(p.P), CohensD: opt(p.D),
	}
	split := k.partition([]int{p.Improved, p.Unchanged, p.Worse})
	st.Improved, st.Unchanged, st.Worse = split[0], split[1], split[2]
	return st
}

func (k counter) compare(by, a, b string, sa, sb sample, higherIsBetter bool) *pb.GroupComparison {
	g := &pb.GroupComparison{By: by, GroupA: a, GroupB: b, A: k.paired(sa, higherIsBetter), B: k.paired(sb, higherIsBetter)}
	if k.shown(len(sa.base)) && k.shown(len(sb.base)) && len(sa.base) > 0 && len(sb.base) > 0 {
		r := PooledTest(sa.change(), sb.change())
		g.Difference, g.T, g.P = opt(r.Difference), opt(r.T), opt(r.P)
		g.Df = proto.Int32(int32(r.DF))
	}
	return g
}

// histogram bins changes by width, from the bin of the smallest to that of
// the largest.
func (k counter) histogram(change []float64, width float64) []*pb.Bin {
	lo, hi := slices.Min(change), slices.Max(change)
	first, last := math.Floor(lo/width), math.Floor(hi/width)
	counts := make([]int, int(last-first)+1)
	for _, d := range change {
		counts[int(math.Floor(d/width)-first)]++
	}
	shown := k.partition(counts)
	bins := make([]*pb.Bin, len(counts))
	for i := range counts {
		low := (first + float64(i)) * width
		bins[i] = &pb.Bin{Low: low, High: low + width, Count: shown[i]}
	}
	return bins
}

// completeness counts, per service and instrument, baselines with and
// without a follow-up.
func (k counter) completeness(in []Referral, c *Context) []*pb.Completeness {
	type key struct {
		service    string
		instrument pb.Instrument
	}
	type tallyRow struct{ base, follow int }
	rows := map[key]*tallyRow{}
	for _, ref := range in {
		seen := map[pb.Instrument]bool{}
		for _, o := range ref.Outcomes {
			if seen[o.Instrument] {
				continue
			}
			seen[o.Instrument] = true
			base, follow := pairOf(ref.Outcomes, o.Instrument)
			if base == nil {
				continue
			}
			kk := key{ref.R.RecipientService, o.Instrument}
			if rows[kk] == nil {
				rows[kk] = &tallyRow{}
			}
			rows[kk].base++
			if follow != nil {
				rows[kk].follow++
			}
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
		split := k.partition([]int{r.follow, r.base - r.follow})
		if !k.shown(r.base) {
			split = []*pb.Count{k.count(r.follow), k.count(r.base - r.follow)}
		}
		out = append(out, &pb.Completeness{Service: kk.service, Label: c.label(kk.service), Instrument: kk.instrument,
			Baseline: k.count(r.base), WithFollowUp: split[0], WithoutFollowUp: split[1]})
	}
	return out
}
