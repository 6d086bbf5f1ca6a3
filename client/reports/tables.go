// Package reports lays the exchange's reports out as tables, the same way
// for every reader: the web report pages (and their CSV downloads) and
// `exchangectl report` (table, CSV).
//
// A count suppressed as small is shown as "<k" (k the report's threshold),
// one hidden to protect another as "suppressed", never as a number; a
// statistic the exchange left out is an empty cell. Every table carries the
// report, its filter, the period, when it was made and the suppression rule
// (About), which the CSV writes first.
package reports

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // periods in UK time on a host without a zone database

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// Table is one table of a report.
type Table struct {
	Name   string // for file names and ?table=: "funnel", "outcomes", ...
	Title  string
	About  [][]string // label, value: the report, filter, period, made, rule
	Header []string
	Rows   [][]string
}

// Precision chooses how numbers are written.
type Precision int

const (
	// Rounded is for people: 2 decimals, p values to 3 significant figures.
	Rounded Precision = iota
	// Full is for analysts (CSV): every digit.
	Full
)

type format struct {
	threshold int32
	precision Precision
}

func (f format) count(c *pb.Count) string {
	if c.GetSuppressed() {
		if c.GetSuppression() == pb.Suppression_SUPPRESSION_SMALL {
			return fmt.Sprintf("<%d", f.threshold)
		}
		return "suppressed"
	}
	return strconv.FormatInt(c.GetValue(), 10)
}

// share is part as a percentage of whole, "" when either is hidden.
func (f format) share(part, whole *pb.Count) string {
	if part == nil || part.GetSuppressed() || whole.GetSuppressed() || whole.GetValue() == 0 {
		return ""
	}
	return strconv.FormatFloat(100*float64(part.GetValue())/float64(whole.GetValue()), 'f', 1, 64)
}

// countIf is count of c, "" when c is unset.
func (f format) countIf(c *pb.Count) string {
	if c == nil {
		return ""
	}
	return f.count(c)
}

// EffectSize is Cohen's name for the size of d: below 0.2 negligible, then
// small, medium from 0.5, large from 0.8 (Cohen 1988).
func EffectSize(d float64) string {
	switch a := math.Abs(d); {
	case a < 0.2:
		return "negligible"
	case a < 0.5:
		return "small"
	case a < 0.8:
		return "medium"
	}
	return "large"
}

func (f format) num(x *float64) string {
	if x == nil {
		return ""
	}
	if f.precision == Full {
		return strconv.FormatFloat(*x, 'g', -1, 64)
	}
	return strconv.FormatFloat(*x, 'f', 2, 64)
}

func (f format) p(x *float64) string {
	if x == nil {
		return ""
	}
	if f.precision == Full {
		return strconv.FormatFloat(*x, 'g', -1, 64)
	}
	if *x < 0.001 {
		return "<0.001"
	}
	return strconv.FormatFloat(*x, 'g', 3, 64)
}

func (f format) int(x *int32) string {
	if x == nil {
		return ""
	}
	return strconv.Itoa(int(*x))
}

// Activity lays out an activity report.
func Activity(r *pb.ActivityReport, p Precision) []Table {
	f := format{r.SuppressionThreshold, p}
	rt := r.GetResponseTime()
	summary := Table{Name: "summary", Title: "Summary", Header: []string{"Measure", "Value"}, Rows: [][]string{
		{"Referrals", f.count(r.Referrals)},
		{"Overdue now", f.count(r.Overdue)},
		{"Waitlisted or paused now", f.count(r.Waitlisted)},
		{"Answered by the receiver", f.count(rt.GetAnswered())},
		{"Median time to first answer", Duration(rt.GetMedian())},
		{"90th percentile time to first answer", Duration(rt.GetP90())},
	}}
	fn := r.GetFunnel()
	funnel := Table{Name: "funnel", Title: "How far referrals got", Header: []string{"Stage", "Reason", "Referrals"}, Rows: [][]string{
		{"Referred", "", f.count(fn.GetReferred())}, {"Accepted", "", f.count(fn.GetAccepted())},
		{"Started", "", f.count(fn.GetStarted())}, {"Completed", "", f.count(fn.GetCompleted())},
		{"Still open", "", f.count(fn.GetOpen())},
	}}
	for _, g := range []struct {
		stage string
		rows  []*pb.CountRow
	}{{"Rejected", fn.GetRejected()}, {"Failed", fn.GetFailed()}, {"Cancelled", fn.GetCancelled()}} {
		for _, row := range g.rows {
			funnel.Rows = append(funnel.Rows, []string{g.stage, row.Label, f.count(row.Count)})
		}
	}
	breakdown := func(name, title, what string, rows []*pb.CountRow) Table {
		t := Table{Name: name, Title: title, Header: []string{what, "Key", "Referrals"}}
		for _, row := range rows {
			t.Rows = append(t.Rows, []string{row.Label, row.Key, f.count(row.Count)})
		}
		return t
	}
	capacity := Table{Name: "capacity", Title: "Capacity status over time", Header: []string{"Service", "Status", "From", "To"}}
	for _, h := range r.Capacity {
		for _, per := range h.Periods {
			capacity.Rows = append(capacity.Rows, []string{h.Label, pb.Code(per.Status),
				per.StartTime.AsTime().Format(time.RFC3339), per.EndTime.AsTime().Format(time.RFC3339)})
		}
	}
	trend := Table{Name: "trend", Title: "Referrals and uptake by " + IntervalWord(r.Filter), Header: []string{"Period", "From", "To", "Referrals", "Started", "Uptake %"}}
	for _, p := range r.Trend {
		trend.Rows = append(trend.Rows, []string{PeriodLabel(p.StartTime, p.EndTime), day(p.StartTime), lastDay(p.EndTime),
			f.count(p.Referrals), f.count(p.Started), f.share(p.Started, p.Referrals)})
	}
	return about("Activity", r.Filter, r.GenerateTime, r.SuppressionThreshold, []Table{summary, funnel, trend,
		breakdown("by_route", "Referrals by route", "Route", r.ByRoute),
		breakdown("by_need", "Referrals by need", "Need", r.ByNeed),
		breakdown("by_service", "Referrals by service", "Service", r.ByService),
		breakdown("by_organization", "Referrals by receiving organisation", "Organisation", r.ByOrganization),
		capacity})
}

// IntervalWord names a filter's trend interval.
func IntervalWord(f *pb.ReportFilter) string {
	if f.GetTrendInterval() == pb.TrendInterval_TREND_INTERVAL_QUARTER {
		return "quarter"
	}
	return "month"
}

// day is a period's first day, in UK time.
func day(t interface{ AsTime() time.Time }) string {
	return t.AsTime().In(London).Format(time.DateOnly)
}

// lastDay is the last day of a period that ends (excluded) at t.
func lastDay(t interface{ AsTime() time.Time }) string {
	return t.AsTime().Add(-time.Nanosecond).In(London).Format(time.DateOnly)
}

// London is UK time, in which the exchange's pages and tables give dates
// and a trend's periods begin.
var London = func() *time.Location {
	l, err := time.LoadLocation("Europe/London")
	if err != nil {
		panic(err) // embedded by time/tzdata
	}
	return l
}()

// PeriodLabel names a trend period: "April 2026", or "April to June 2026"
// for a quarter.
func PeriodLabel(from, to interface{ AsTime() time.Time }) string {
	a, b := from.AsTime().In(London), to.AsTime().Add(-time.Nanosecond).In(London)
	if a.Month() == b.Month() && a.Year() == b.Year() {
		return a.Format("January 2006")
	}
	return a.Format("January") + " to " + b.Format("January 2006")
}

// SuppressionRule is the rule every report follows, in words.
func SuppressionRule(threshold int32) string {
	return fmt.Sprintf("Counts from 1 to %d are shown as <%d, and the statistics of fewer than %d pairs, of a group whose counts are hidden or in which fewer than %d changed by other than its most common change, and of a second group where one group's alone would follow from the others, are left out; "+
		"a count shown as suppressed, of any size, is hidden so that a small one cannot be worked out from the others "+
		"(complementary suppression, across every table of both reports of the filter).", threshold-1, threshold, threshold, threshold)
}

// about gives each table the report's header block.
func about(report string, f *pb.ReportFilter, made interface{ AsTime() time.Time }, threshold int32, tables []Table) []Table {
	when := func(t interface{ AsTime() time.Time }, set bool, none string) string {
		if !set {
			return none
		}
		return t.AsTime().UTC().Format(time.RFC3339)
	}
	var parts []string
	for _, p := range [][2]string{{"service", f.GetService()}, {"organisation", f.GetOrganization()}} {
		if p[1] != "" {
			parts = append(parts, p[0]+" "+p[1])
		}
	}
	if f.GetCategory() != 0 {
		parts = append(parts, "need "+pb.Code(f.GetCategory()))
	}
	if f.GetRoute() != 0 {
		parts = append(parts, "route "+pb.Code(f.GetRoute()))
	}
	filter := strings.Join(parts, "; ")
	if filter == "" {
		filter = "none"
	}
	block := [][]string{{"Report", report}, {"Filter", filter},
		{"Period", when(f.GetStartTime(), f.GetStartTime() != nil, "the start") + " to " + when(f.GetEndTime(), f.GetEndTime() != nil, "now")},
		{"Generated", when(made, true, "")}, {"Suppression", SuppressionRule(threshold)}}
	for i := range tables {
		tables[i].About = block
	}
	return tables
}

// Duration puts a time to answer in a unit that fits: minutes under an
// hour, hours under two days, days beyond; "" when unset.
func Duration(d interface{ AsDuration() time.Duration }) string {
	if p, ok := d.(*durationpb.Duration); d == nil || ok && p == nil {
		return ""
	}
	t := d.AsDuration()
	switch {
	case t < 30*time.Second:
		return "under a minute"
	case t < 90*time.Second:
		return "1 minute"
	case t < time.Hour:
		return fmt.Sprintf("%d minutes", int(math.Round(t.Minutes())))
	case t < 48*time.Hour:
		return strconv.FormatFloat(t.Hours(), 'f', 1, 64) + " hours"
	}
	return strconv.FormatFloat(t.Hours()/24, 'f', 1, 64) + " days"
}

// GroupLabel puts a comparison group in words.
func GroupLabel(g string) string {
	return map[string]string{"FEMALE": "Female", "MALE": "Male", "UNDER_50": "Under 50", "50_AND_OVER": "50 and over"}[g]
}

// Outcomes lays out an outcome report.
func Outcomes(r *pb.OutcomeReport, p Precision) []Table {
	f := format{r.SuppressionThreshold, p}
	stats := Table{Name: "outcomes", Title: "Change from baseline to follow-up",
		Header: []string{"Measure", "Group", "Pairs", "Baseline mean", "Baseline SD", "Follow-up mean", "Follow-up SD",
			"Mean change", "SD of change", "95% CI low", "95% CI high", "t", "df", "p", "Cohen's d", "d 95% CI low", "d 95% CI high", "Effect size",
			"Improved", "Improved %", "Unchanged", "Unchanged %", "Worse", "Worse %", "Meaningful change", "Reached it", "Reached it %"}}
	row := func(measure, group string, s *pb.PairedStats, meaningful *float64) []string {
		size := ""
		if s.CohensD != nil {
			size = EffectSize(*s.CohensD)
		}
		mc := ""
		if meaningful != nil && s.Meaningful != nil {
			mc = strconv.FormatFloat(*meaningful, 'g', -1, 64) + " points"
		}
		return []string{measure, group, f.count(s.GetN()), f.num(s.BaselineMean), f.num(s.BaselineSd), f.num(s.FollowUpMean),
			f.num(s.FollowUpSd), f.num(s.ChangeMean), f.num(s.ChangeSd), f.num(s.ChangeCiLow), f.num(s.ChangeCiHigh),
			f.num(s.T), f.int(s.Df), f.p(s.P), f.num(s.CohensD), f.num(s.CohensDCiLow), f.num(s.CohensDCiHigh), size,
			f.count(s.GetImproved()), f.share(s.GetImproved(), s.GetN()), f.count(s.GetUnchanged()), f.share(s.GetUnchanged(), s.GetN()),
			f.count(s.GetWorse()), f.share(s.GetWorse(), s.GetN()), mc, f.countIf(s.Meaningful), f.share(s.Meaningful, s.GetN())}
	}
	compare := Table{Name: "comparisons", Title: "Difference in change between groups (pooled two-sample t test)",
		Header: []string{"Measure", "Groups", "Difference in mean change", "t", "df", "p"}}
	dist := Table{Name: "distribution", Title: "Distribution of change", Header: []string{"Measure", "Change", "Change from", "Change below", "Pairs"}}
	for _, m := range r.Measures {
		if m.All.GetN().GetValue() == 0 && !m.All.GetN().GetSuppressed() {
			continue // no pairs at all
		}
		stats.Rows = append(stats.Rows, row(m.Measure, "All", m.All, m.MeaningfulChange))
		for _, c := range m.Comparisons {
			stats.Rows = append(stats.Rows, row(m.Measure, GroupLabel(c.GroupA), c.A, nil), row(m.Measure, GroupLabel(c.GroupB), c.B, nil))
			compare.Rows = append(compare.Rows, []string{m.Measure, GroupLabel(c.GroupA) + " vs " + GroupLabel(c.GroupB),
				f.num(c.Difference), f.num(c.T), f.int(c.Df), f.p(c.P)})
		}
		for _, b := range m.ChangeDistribution {
			dist.Rows = append(dist.Rows, []string{m.Measure, b.Label(), bound(b.Low), bound(b.High), f.count(b.Count)})
		}
	}
	bySvc := Table{Name: "by_service", Title: "Change by service, side by side",
		Header: []string{"Measure", "Service", "Pairs", "Mean change", "95% CI low", "95% CI high", "Cohen's d", "Effect size",
			"Improved", "Improved %", "Reached meaningful change", "Reached it %"}}
	trend := Table{Name: "trend", Title: "Mean change by " + IntervalWord(r.Filter) + " of referral", Header: []string{"Measure", "Period", "From", "To", "Pairs", "Mean change"}}
	for _, m := range r.Measures {
		for _, s := range m.ByService {
			st := s.Stats
			size := ""
			if st.CohensD != nil {
				size = EffectSize(*st.CohensD)
			}
			bySvc.Rows = append(bySvc.Rows, []string{m.Measure, s.Label, f.count(st.GetN()), f.num(st.ChangeMean), f.num(st.ChangeCiLow), f.num(st.ChangeCiHigh),
				f.num(st.CohensD), size, f.count(st.GetImproved()), f.share(st.GetImproved(), st.GetN()), f.countIf(st.Meaningful), f.share(st.Meaningful, st.GetN())})
		}
		for _, p := range m.Trend {
			trend.Rows = append(trend.Rows, []string{m.Measure, PeriodLabel(p.StartTime, p.EndTime), day(p.StartTime), lastDay(p.EndTime), f.count(p.N), f.num(p.ChangeMean)})
		}
	}
	comp := Table{Name: "completeness", Title: "Baselines with and without a follow-up",
		Header: []string{"Service", "Instrument", "Baseline", "With follow-up", "Without follow-up", "Attrition rate %"}}
	for _, c := range r.Completeness {
		comp.Rows = append(comp.Rows, []string{c.Label, pb.Code(c.Instrument), f.count(c.Baseline), f.count(c.WithFollowUp), f.count(c.WithoutFollowUp),
			f.share(c.WithoutFollowUp, c.Baseline)})
	}
	return about("Outcomes", r.Filter, r.GenerateTime, r.SuppressionThreshold, []Table{stats, compare, bySvc, trend, dist, comp})
}

// WriteCSV writes t as CSV with its header, every cell through SafeCell.
// It is the exchange's only CSV writer (TestOneCSVWriter).
func WriteCSV(w io.Writer, t Table) error {
	cw := csv.NewWriter(w)
	var rows [][]string
	if len(t.About) > 0 {
		rows = append(append(rows, t.About...), []string{"Table", t.Title}, nil)
	}
	for _, row := range append(append(rows, t.Header), t.Rows...) {
		safe := make([]string, len(row))
		for i, c := range row {
			safe[i] = SafeCell(c)
		}
		cw.Write(safe)
	}
	cw.Flush()
	return cw.Error()
}

// SafeCell neutralises a cell a spreadsheet would run as a formula (OWASP's
// CSV injection rule): one beginning with =, +, -, @, a tab or a carriage
// return gets a leading apostrophe, so it is read as text. A plain number
// ("-0.42", "+3") is left as it is: it cannot run, and commissioners' sheets
// must read it as a number.
func SafeCell(c string) string {
	if c == "" || !strings.ContainsRune("=+-@\t\r", rune(c[0])) {
		return c
	}
	if _, err := strconv.ParseFloat(c, 64); err == nil && !strings.ContainsAny(c, "xXnN") {
		return c // decimal numbers only: not hex, Inf or NaN
	}
	return "'" + c
}

// Find returns the table named name.
func Find(tables []Table, name string) (Table, bool) {
	for _, t := range tables {
		if t.Name == name {
			return t, true
		}
	}
	return Table{}, false
}

// bound is a bin's bound in a table: empty at the open end of an open end
// bin (pb.Bin).
func bound(x *float64) string {
	if x == nil {
		return ""
	}
	return strconv.FormatFloat(*x, 'g', -1, 64)
}
