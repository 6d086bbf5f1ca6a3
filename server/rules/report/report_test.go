package report

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

var day0 = time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)

// ref is a referral to the walks with WEMWBS at baseline and, unless 0,
// follow-up.
func ref(n int, base, follow int32) Referral {
	r := Referral{R: &pb.Referral{Name: "referrals/r" + string(rune('a'+n)), RecipientService: "organizations/g/services/walks",
		Recipient: "organizations/g", Referrer: "organizations/gp", Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
		State: pb.ReferralState_REFERRAL_STATE_COMPLETED, CreateTime: timestamppb.New(day0),
		Person: &pb.Person{Sex: pb.Sex_SEX_FEMALE, DateOfBirth: "1960-06-01"}}}
	at := func(d int) *timestamppb.Timestamp { return timestamppb.New(day0.AddDate(0, 0, d)) }
	r.Outcomes = append(r.Outcomes, &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Timepoint: pb.Timepoint_TIMEPOINT_BASELINE, Total: base, MeasureTime: at(1)})
	if follow != 0 {
		// An earlier follow-up and the exit: the last one counts.
		r.Outcomes = append(r.Outcomes,
			&pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Timepoint: pb.Timepoint_TIMEPOINT_FOLLOW_UP, Total: 14, MeasureTime: at(20)},
			&pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Timepoint: pb.Timepoint_TIMEPOINT_EXIT, Total: follow, MeasureTime: at(40)})
	}
	return r
}

func TestOutcomeEdgeCases(t *testing.T) {
	c := Context{Threshold: 1, Now: day0.AddDate(0, 3, 0)}
	// Zero variance of change (shown only without suppression: all alike):
	// the SD is 0 and t, p, d and the interval are left out, as scipy
	// leaves them undefined.
	m := Outcomes([]Referral{ref(0, 30, 33), ref(1, 40, 43), ref(2, 50, 0)}, c).Measures[0]
	a := m.All
	if a.N.GetValue() != 2 || a.GetChangeMean() != 3 || a.ChangeSd == nil || a.GetChangeSd() != 0 || a.T != nil || a.P != nil ||
		a.CohensD != nil || a.ChangeCiLow != nil || a.GetDf() != 1 || a.Improved.GetValue() != 2 {
		t.Errorf("zero variance: %v", a)
	}
	// The missing follow-up is attrition: 1, below a threshold of 3, so
	// hidden, and the 2 with a follow-up with it (3 - 2 would give it away).
	c.Threshold = 3
	comp := Outcomes([]Referral{ref(0, 30, 33), ref(1, 40, 43), ref(2, 50, 0)}, c).Completeness[0]
	if comp.Baseline.GetValue() != 3 || comp.WithFollowUp.Suppression != pb.Suppression_SUPPRESSION_SMALL || comp.WithoutFollowUp.Suppression != pb.Suppression_SUPPRESSION_SMALL {
		t.Errorf("completeness: %v", comp)
	}
	// Below the threshold: nothing but a suppressed n.
	c.Threshold = 5
	a = Outcomes([]Referral{ref(0, 30, 33), ref(1, 40, 45)}, c).Measures[0].All
	if !a.N.Suppressed || a.N.Value != 0 || a.ChangeMean != nil || a.BaselineMean != nil || a.Df != nil {
		t.Errorf("below the threshold: %v", a)
	}
	if d := Outcomes([]Referral{ref(0, 30, 33), ref(1, 40, 45)}, c).Measures[0].ChangeDistribution; d != nil {
		t.Errorf("a distribution of 2 pairs: %v", d)
	}
}

func TestCapacityHistory(t *testing.T) {
	ev := func(d int, s pb.CapacityStatus) *pb.Event {
		return &pb.Event{Type: pb.EventType_EVENT_TYPE_CAPACITY_CHANGED, Resource: "organizations/g/services/walks/capacity",
			EventTime: timestamppb.New(day0.AddDate(0, 0, d)), CapacityStatus: s}
	}
	c := Context{Threshold: 1, Now: day0.AddDate(0, 0, 30),
		Filter:         &pb.ReportFilter{StartTime: timestamppb.New(day0.AddDate(0, 0, 5))},
		ServiceCreated: map[string]time.Time{"organizations/g/services/walks": day0},
		CapacityEvents: []*pb.Event{ev(2, pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY), ev(10, pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING),
			ev(12, pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING), ev(20, pb.CapacityStatus_CAPACITY_STATUS_PAUSED)}}
	r := ref(0, 30, 33)
	r.R.CreateTime = timestamppb.New(day0.AddDate(0, 0, 6))
	h := Activity([]Referral{r}, c).Capacity[0]
	want := []struct {
		s        pb.CapacityStatus
		from, to int
	}{{pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY, 5, 10}, {pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, 10, 20}, {pb.CapacityStatus_CAPACITY_STATUS_PAUSED, 20, 30}}
	if len(h.Periods) != len(want) {
		t.Fatalf("periods: %v", h.Periods)
	}
	for i, w := range want {
		p := h.Periods[i]
		if p.Status != w.s || !p.StartTime.AsTime().Equal(day0.AddDate(0, 0, w.from)) || !p.EndTime.AsTime().Equal(day0.AddDate(0, 0, w.to)) {
			t.Errorf("period %d: %v, want %v", i, p, w)
		}
	}
	// An event timed before the one it follows counts from that one's
	// time: no period runs backwards.
	c.CapacityEvents = []*pb.Event{ev(10, pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY), ev(8, pb.CapacityStatus_CAPACITY_STATUS_PAUSED),
		ev(15, pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING)}
	h = Activity([]Referral{r}, c).Capacity[0]
	var got []string
	for _, p := range h.Periods {
		if p.EndTime.AsTime().Before(p.StartTime.AsTime()) {
			t.Errorf("a period runs backwards: %v", p)
		}
		got = append(got, fmt.Sprintf("%s %s-%s", pb.Code(p.Status), p.StartTime.AsTime().Format("02"), p.EndTime.AsTime().Format("02")))
	}
	if strings.Join(got, ", ") != "ACCEPTING 10-15, PAUSED 15-20, ACCEPTING 20-04" {
		t.Errorf("out-of-order events: %s", strings.Join(got, ", "))
	}
}

func TestLedgerProtects(t *testing.T) {
	S, P := pb.Suppression_SUPPRESSION_SMALL, pb.Suppression_SUPPRESSION_PROTECTS
	for _, c := range []struct {
		total int
		parts []int
		want  []pb.Suppression // the total's, then the parts'
	}{
		{13, []int{10, 3}, []pb.Suppression{0, P, S}},       // 3 = 13 - 10
		{15, []int{10, 3, 2}, []pb.Suppression{0, 0, S, S}}, // 3 + 2 = 5: each 1 to 4
		{17, []int{10, 0, 7}, []pb.Suppression{0, 0, 0, 0}}, // nothing small
		{8, []int{4, 4}, []pb.Suppression{P, S, S}},         // 4 + 4 = 8 gives both away
		{6, []int{5, 1}, []pb.Suppression{0, P, S}},         // 1 = 6 - 5
		{2, []int{1, 1}, []pb.Suppression{S, S, S}},         // all small
		{12, []int{0, 10, 2}, []pb.Suppression{0, P, 0, S}}, // the zero protects: 2 is 1 or 2
	} {
		l := NewLedger(5)
		total := l.Count(c.total)
		parts := make([]*pb.Count, len(c.parts))
		for i, n := range c.parts {
			parts[i] = l.Count(n)
		}
		l.Sum(total, parts...)
		l.Protect()
		for i, got := range append([]*pb.Count{total}, parts...) {
			if got.Suppression != c.want[i] || got.Suppressed != (c.want[i] != 0) || got.Suppressed && got.Value != 0 {
				t.Errorf("%d = %v: count %d is %v, want %v", c.total, c.parts, i, got, c.want[i])
			}
		}
	}
	// A group not shown: 18 of 20 accepted gives away the 2 never
	// accepted, so the accepted are hidden.
	l := NewLedger(5)
	n, accepted := l.Count(20), l.Count(18)
	l.Rest(l.Of(n), true, l.Of(accepted))
	l.Protect()
	if n.Suppressed || accepted.Suppression != pb.Suppression_SUPPRESSION_PROTECTS {
		t.Errorf("funnel step: %v %v", n, accepted)
	}
}

// TestTrendPeriods: periods are months or calendar quarters in UK time, from
// the first referral's to the last's, with empty ones kept; one period is no
// trend.
func TestTrendPeriods(t *testing.T) {
	at := func(s string, n int) []Referral {
		when, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		var out []Referral
		for i := range n {
			r := ref(i, 30, 35)
			r.R.CreateTime = timestamppb.New(when)
			out = append(out, r)
		}
		return out
	}
	// 23:30 UTC on 31 March 2026 is 00:30 on 1 April in British Summer Time.
	refs := append(at("2026-01-15T10:00:00Z", 6), at("2026-03-31T23:30:00Z", 7)...)
	c := Context{Threshold: 1, Now: day0.AddDate(1, 0, 0), Filter: &pb.ReportFilter{}}
	type period struct {
		start, end string
		n          int64
	}
	for _, tc := range []struct {
		interval pb.TrendInterval
		want     []period
	}{
		{pb.TrendInterval_TREND_INTERVAL_UNSPECIFIED, []period{
			{"2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", 6}, {"2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", 0},
			{"2026-03-01T00:00:00Z", "2026-03-31T23:00:00Z", 0}, {"2026-03-31T23:00:00Z", "2026-04-30T23:00:00Z", 7}}},
		{pb.TrendInterval_TREND_INTERVAL_QUARTER, []period{
			{"2026-01-01T00:00:00Z", "2026-03-31T23:00:00Z", 6}, {"2026-03-31T23:00:00Z", "2026-06-30T23:00:00Z", 7}}},
	} {
		c.Filter.TrendInterval = tc.interval
		a, o := Build(refs, c)
		if len(a.Trend) != len(tc.want) || len(o.Measures[0].Trend) != len(tc.want) {
			t.Fatalf("%v: %d periods, %d in outcomes, want %d", tc.interval, len(a.Trend), len(o.Measures[0].Trend), len(tc.want))
		}
		for i, w := range tc.want {
			p, m := a.Trend[i], o.Measures[0].Trend[i]
			got := period{p.StartTime.AsTime().Format(time.RFC3339), p.EndTime.AsTime().Format(time.RFC3339), p.Referrals.GetValue()}
			if got != w || m.N.GetValue() != w.n || !m.StartTime.AsTime().Equal(p.StartTime.AsTime()) || (w.n > 0) != (m.ChangeMean != nil) {
				t.Errorf("%v period %d: %v, outcomes %v; want %v", tc.interval, i, got, m, w)
			}
		}
	}
	// A filter that cuts a period bounds it: from 10 January to 15 April.
	c.Filter = &pb.ReportFilter{TrendInterval: pb.TrendInterval_TREND_INTERVAL_QUARTER,
		StartTime: timestamppb.New(time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)), EndTime: timestamppb.New(time.Date(2026, 4, 15, 0, 0, 0, 0, time.UTC))}
	if a, _ := Build(refs, c); len(a.Trend) != 2 || !a.Trend[0].StartTime.AsTime().Equal(c.Filter.StartTime.AsTime()) ||
		!a.Trend[1].EndTime.AsTime().Equal(c.Filter.EndTime.AsTime()) || !a.Trend[0].EndTime.AsTime().Equal(a.Trend[1].StartTime.AsTime()) {
		t.Errorf("periods cut by the filter: %v", a.Trend)
	}
	if a, o := Build(at("2026-01-15T10:00:00Z", 6), c); a.Trend != nil || o.Measures[0].Trend != nil {
		t.Errorf("one period: %v %v", a.Trend, o.Measures[0].Trend)
	}
}

// TestNobodyUnchanged: when no bin of the distribution starts at 0, every
// reader knows nobody stayed the same; hiding those zeros protected
// nothing and once hid the whole report.
func TestNobodyUnchanged(t *testing.T) {
	var refs []Referral
	for i := range 12 {
		r := ref(i, 30, 36)
		if i >= 2 {
			r.R.Person.Sex = pb.Sex_SEX_MALE
		}
		refs = append(refs, r)
	}
	a, o := Build(refs, Context{Threshold: 5, Now: day0.AddDate(1, 0, 0), Filter: &pb.ReportFilter{}})
	m := o.Measures[0]
	if a.Referrals.Suppressed || m.All.N.Suppressed || m.All.Unchanged.Suppressed || len(m.ChangeDistribution) == 0 {
		t.Errorf("referrals %v, pairs %v, unchanged %v, %d bins", a.Referrals, m.All.N, m.All.Unchanged, len(m.ChangeDistribution))
	}
	if women := m.Comparisons[0].A; !women.N.Suppressed || women.N.Suppression != pb.Suppression_SUPPRESSION_SMALL {
		t.Errorf("the 2 women: %v", women.N)
	}
}

// The means and SDs of a group almost all alike give its few others away,
// so they are shown only where at least the threshold of pairs differ from
// the most common change.
func TestAlikeGroupsShowNoStatistics(t *testing.T) {
	c := Context{Threshold: 5, Now: day0.AddDate(0, 3, 0)}
	group := func(changes ...int32) *pb.MeasureOutcome {
		var refs []Referral
		for i, d := range changes {
			refs = append(refs, ref(i, 30, 30+d))
		}
		return Outcomes(refs, c).Measures[0]
	}
	for _, tc := range []struct {
		name    string
		changes []int32
		shown   bool
	}{
		// Mean 0.2 and SD 0.447 of five: only four unchanged and one up
		// by a point have them.
		{"four alike and one", []int32{0, 0, 0, 0, 1}, false},
		{"49 alike and one", append(make([]int32, 49), 1), false},
		{"six alike and four", []int32{3, 3, 3, 3, 3, 3, 1, 2, 4, 5}, false},
		{"five differ from the most common", []int32{3, 3, 3, 3, 3, 4, 5, 6, 7, 8}, true},
	} {
		m := group(tc.changes...)
		if got := m.All.ChangeMean != nil; got != tc.shown || (m.All.BaselineMean != nil) != tc.shown || (m.All.ChangeSd != nil) != tc.shown {
			t.Errorf("%s: mean shown %v, want %v: %v", tc.name, got, tc.shown, m.All)
		}
		if m.All.N.Suppressed || m.All.N.Value != int64(len(tc.changes)) {
			t.Errorf("%s: n %v", tc.name, m.All.N)
		}
		for _, p := range m.Trend {
			if p.ChangeMean != nil && !tc.shown {
				t.Errorf("%s: a period's mean %v", tc.name, *p.ChangeMean)
			}
		}
	}
}

// The ends of a distribution of change are merged until each holds at
// least the threshold, on its side of 0; a distribution with a bin still
// hidden is left out whole.
func TestDistributionEnds(t *testing.T) {
	c := Context{Threshold: 5, Now: day0.AddDate(0, 3, 0)}
	build := func(changes ...int32) []*pb.Bin {
		var refs []Referral
		for i, d := range changes {
			refs = append(refs, ref(i, 35, 35+d))
		}
		return Outcomes(refs, c).Measures[0].ChangeDistribution
	}
	// WEMWBS bins are 5 wide: -12 and -7 join -3 below 0, 0 to 4 stays,
	// 5 to 9 has six, 23 joins 17 and 12 (nobody unchanged: one would
	// be hidden, and the bin from 0 with it).
	var changes []int32
	changes = append(changes, -12, -7, -3, -2, -1, 1, 2, 3, 4, 4)
	changes = append(changes, 5, 6, 7, 8, 9, 9, 12, 17, 23, 14, 13)
	got := ""
	for _, b := range build(changes...) {
		low, high := b.Bounds()
		got += fmt.Sprintf("[%g,%g):%d ", low, high, b.Count.GetValue())
	}
	// The merged ends are open: where the extremes lie is not shown.
	if want := "[-Inf,0):5 [0,5):5 [5,10):6 [10,+Inf):5 "; got != want {
		t.Errorf("bins %s, want %s", got, want)
	}
	// Three below 0 cannot be merged into 0 to 4: hidden, so no chart.
	if d := build(-3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 8); d != nil {
		t.Errorf("a distribution with a hidden bin: %v", d)
	}
}
