package web

import (
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/social-prescribing/exchange/client/reports"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// The report page: the activity and outcome reports of the signed-in
// organisation (all referrals for a commissioner), as server-drawn SVG
// charts with a table beside each (their text equivalent, and a CSV
// download). The exchange has already suppressed small numbers: the page
// can only draw what it was sent, and a suppressed count is drawn as no
// bar, labelled "fewer than k".

// reportFilter reads the filter form (GET query).
func reportFilter(q url.Values) (*pb.ReportFilter, map[string]string) {
	f := &pb.ReportFilter{Service: q.Get("service"), Organization: q.Get("organization"),
		Category:      pb.Category(parseCode(pb.Category(0).Descriptor(), q.Get("category"))),
		Route:         pb.ReferralRoute(parseCode(pb.ReferralRoute(0).Descriptor(), q.Get("route"))),
		TrendInterval: pb.TrendInterval(parseCode(pb.TrendInterval(0).Descriptor(), q.Get("trend")))}
	bad := map[string]string{}
	for _, d := range []struct {
		field string
		dst   **timestamppb.Timestamp
	}{{"from", &f.StartTime}, {"to", &f.EndTime}} {
		if v := q.Get(d.field); v != "" {
			t, err := time.ParseInLocation(time.DateOnly, v, london)
			if err != nil {
				bad[d.field] = "Enter a date such as 2026-04-01."
				continue
			}
			*d.dst = timestamppb.New(t)
		}
	}
	return f, bad
}

// chart geometry, in SVG user units.
const (
	chartWidth = 640.0
	labelWidth = 190.0
	barHeight  = 26.0
)

type bar struct {
	Label, Value, Title string
	X, Y, W, H          float64
	Class               string
}

type tick struct {
	X     float64
	Label string
}

type forestRow struct {
	Label, Text  string
	Y, X, X1, X2 float64
	Shown        bool
	Why          string
}

type chart struct {
	ID, Title, Desc string
	Height          float64
	Bars            []bar
	Ticks           []tick
	Zero            float64
	Rows            []forestRow
	Legend          []bar
}

func (k reportPage) shown(c *pb.Count) (float64, string, bool) {
	if c.GetSuppressed() {
		if c.GetSuppression() == pb.Suppression_SUPPRESSION_SMALL {
			return 0, fmt.Sprintf("fewer than %d", k.Threshold), false
		}
		return 0, "suppressed", false
	}
	return float64(c.GetValue()), strconv.FormatInt(c.GetValue(), 10), true
}

// funnelChart draws referred, accepted, started and completed.
func (k reportPage) funnelChart(a *pb.ActivityReport) chart {
	f := a.GetFunnel()
	stages := []struct {
		label string
		c     *pb.Count
	}{{"Referred", f.GetReferred()}, {"Accepted", f.GetAccepted()}, {"Started", f.GetStarted()}, {"Completed", f.GetCompleted()}}
	top, _, _ := k.shown(f.GetReferred())
	ch := chart{ID: "funnel", Title: "How far referrals got"}
	desc := ""
	for i, s := range stages {
		v, text, ok := k.shown(s.c)
		w := 0.0
		if ok && top > 0 {
			w = (chartWidth - labelWidth - 80) * v / top
		}
		ch.Bars = append(ch.Bars, bar{Label: s.label, Value: text, X: labelWidth, Y: float64(i) * (barHeight + 8), W: w, H: barHeight, Class: "bar"})
		desc += fmt.Sprintf("%s: %s. ", s.label, text)
	}
	ch.Height = float64(len(stages)) * (barHeight + 8)
	ch.Desc = desc
	return ch
}

// forestItem is one row of a forest chart: a label and the mean change,
// with its 95% confidence interval where there is one.
type forestItem struct {
	label        string
	n            *pb.Count
	mean, lo, hi *float64
}

// forestChart draws, per measure and group, the mean change and its 95%
// confidence interval against zero.
func (k reportPage) forestChart(o *pb.OutcomeReport) chart {
	var items []forestItem
	for _, m := range o.Measures {
		if m.All.GetN().GetValue() == 0 && !m.All.GetN().GetSuppressed() {
			continue
		}
		items = append(items, paired(m.Measure+": All", m.All))
		for _, c := range m.Comparisons {
			items = append(items, paired(m.Measure+": "+reports.GroupLabel(c.GroupA), c.A), paired(m.Measure+": "+reports.GroupLabel(c.GroupB), c.B))
		}
	}
	return k.forest("change", "Mean change from baseline to follow-up, with 95% confidence interval", items)
}

// serviceChart draws each measure's mean change per service, side by side.
func (k reportPage) serviceChart(o *pb.OutcomeReport) chart {
	var items []forestItem
	for _, m := range o.Measures {
		for _, s := range m.ByService {
			items = append(items, paired(m.Measure+": "+s.Label, s.Stats))
		}
	}
	return k.forest("by-service", "Mean change by service, with 95% confidence interval", items)
}

// changeTrendChart draws each measure's mean change per period of referral.
func (k reportPage) changeTrendChart(o *pb.OutcomeReport) chart {
	var items []forestItem
	for _, m := range o.Measures {
		for _, p := range m.Trend {
			items = append(items, forestItem{label: m.Measure + ": " + reports.PeriodLabel(p.StartTime, p.EndTime), n: p.N, mean: p.ChangeMean})
		}
	}
	return k.forest("change-trend", "Mean change by "+reports.IntervalWord(o.Filter)+" of referral", items)
}

func paired(label string, s *pb.PairedStats) forestItem {
	return forestItem{label: label, n: s.N, mean: s.ChangeMean, lo: s.ChangeCiLow, hi: s.ChangeCiHigh}
}

// forest draws rows of mean change, each with its interval, against zero.
func (k reportPage) forest(id, title string, items []forestItem) chart {
	ch := chart{ID: id, Title: title}
	lo, hi := 0.0, 0.0
	for _, it := range items {
		if it.lo != nil && it.hi != nil {
			lo, hi = math.Min(lo, *it.lo), math.Max(hi, *it.hi)
		} else if it.mean != nil {
			lo, hi = math.Min(lo, *it.mean), math.Max(hi, *it.mean)
		}
	}
	step := niceStep(hi - lo)
	lo, hi = math.Floor(lo/step)*step, math.Ceil(hi/step)*step
	if hi == lo {
		hi = lo + step
	}
	plot := chartWidth - labelWidth - 150
	x := func(v float64) float64 { return labelWidth + plot*(v-lo)/(hi-lo) }
	for v := lo; v <= hi+step/2; v += step {
		ch.Ticks = append(ch.Ticks, tick{X: x(v), Label: strconv.FormatFloat(v, 'g', 4, 64)})
	}
	ch.Zero = x(0)
	desc := ""
	for i, it := range items {
		row := forestRow{Label: it.label, Y: float64(i)*22 + 10}
		if it.mean != nil {
			row.Shown, row.X = true, x(*it.mean)
			row.X1, row.X2 = row.X, row.X
			row.Text = fmt.Sprintf("%.2f", *it.mean)
			if it.lo != nil && it.hi != nil {
				row.X1, row.X2 = x(*it.lo), x(*it.hi)
				row.Text += fmt.Sprintf(" (%.2f to %.2f)", *it.lo, *it.hi)
			}
		} else {
			row.Why = k.withheld(it.n)
			row.Text = row.Why
		}
		desc += row.Label + ": " + row.Text + ". "
		ch.Rows = append(ch.Rows, row)
	}
	ch.Height = float64(len(items))*22 + 40
	ch.Desc = desc
	return ch
}

// withheld says why a group's mean change is not drawn: a hidden count is
// "fewer than k" only when it truly is.
func (k reportPage) withheld(n *pb.Count) string {
	switch {
	case n.GetSuppressed() && n.GetSuppression() != pb.Suppression_SUPPRESSION_SMALL:
		return "not shown: suppressed to protect a small count"
	case !n.GetSuppressed() && n.GetValue() == 0:
		return "no pairs"
	}
	return fmt.Sprintf("not shown: fewer than %d pairs", k.Threshold)
}

// trendChart draws the referrals of each period, the started part of each
// bar darker.
func (k reportPage) trendChart(a *pb.ActivityReport) chart {
	ch := chart{ID: "trend", Title: "Referrals and uptake by " + reports.IntervalWord(a.Filter)}
	most := 0.0
	for _, p := range a.Trend {
		if v, _, ok := k.shown(p.Referrals); ok {
			most = math.Max(most, v)
		}
	}
	plot := chartWidth - labelWidth - 190
	desc := ""
	for i, p := range a.Trend {
		y := float64(i) * (barHeight + 8)
		label := reports.PeriodLabel(p.StartTime, p.EndTime)
		vr, tr, okr := k.shown(p.Referrals)
		vs, ts, oks := k.shown(p.Started)
		text := fmt.Sprintf("%s referred, %s started", brief(tr), brief(ts))
		desc += fmt.Sprintf("%s: %s referred, %s started. ", label, tr, ts)
		if !okr || most == 0 || vr == 0 {
			ch.Bars = append(ch.Bars, bar{Label: label, Value: text, X: labelWidth, Y: y, H: barHeight})
			continue
		}
		ch.Bars = append(ch.Bars, splitBar(label, text, labelWidth, y, plot*vr/most, vs/vr, oks,
			ts+" started", "not started", "bar-light", "started not shown: small numbers")...)
	}
	ch.Height = float64(len(a.Trend)) * (barHeight + 8)
	ch.Desc = desc
	ch.Legend = []bar{{Label: "Started", Class: "bar"}, {Label: "Not started", Class: "bar-light"}, {Label: "Started not shown (small numbers)", Class: "bar-unknown"}}
	return ch
}

// niceStep is a round tick step for a range.
func niceStep(span float64) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

// histograms draws the distribution of change of each measure.
func (k reportPage) histograms(o *pb.OutcomeReport) []chart {
	var out []chart
	for _, m := range o.Measures {
		if len(m.ChangeDistribution) == 0 {
			continue
		}
		ch := chart{ID: "dist-" + m.Measure, Title: "Distribution of change: " + m.Label, Height: 170}
		most := 0.0
		for _, b := range m.ChangeDistribution {
			if v, _, ok := k.shown(b.Count); ok {
				most = math.Max(most, v)
			}
		}
		w := (chartWidth - 60) / float64(len(m.ChangeDistribution))
		desc := ""
		for i, b := range m.ChangeDistribution {
			v, text, ok := k.shown(b.Count)
			h := 0.0
			if ok && most > 0 {
				h = 105 * v / most
			}
			if !ok {
				text = fmt.Sprintf("<%d", k.Threshold)
			}
			label := b.Label()
			short := label // the axis label: the bin's start, "<0" or "10+" at an open end
			switch {
			case b.Low != nil && b.High == nil:
				short = strconv.FormatFloat(*b.Low, 'g', -1, 64) + "+"
			case b.Low != nil:
				short = strconv.FormatFloat(*b.Low, 'g', -1, 64)
			case b.High != nil:
				short = "<" + strconv.FormatFloat(*b.High, 'g', -1, 64)
			}
			ch.Bars = append(ch.Bars, bar{Label: short, Value: text, Title: label + ": " + text,
				X: 40 + float64(i)*w, Y: 130 - h, W: w - 2, H: h, Class: "bar"})
			desc += label + ": " + strings.Replace(text, "<", "fewer than ", 1) + ". "
		}
		ch.Desc = desc
		out = append(out, ch)
	}
	return out
}

// attritionChart draws, per service and instrument, the baselines with and
// without a follow-up.
func (k reportPage) attritionChart(o *pb.OutcomeReport) chart {
	ch := chart{ID: "attrition", Title: "Baselines with and without a follow-up"}
	most := 0.0
	for _, c := range o.Completeness {
		if v, _, ok := k.shown(c.Baseline); ok {
			most = math.Max(most, v)
		}
	}
	const left = 280.0
	plot := chartWidth - left - 170
	desc := ""
	for i, c := range o.Completeness {
		y := float64(i) * (barHeight + 8)
		label := c.Label + ": " + pb.Code(c.Instrument)
		vb, tb, okb := k.shown(c.Baseline)
		vw, tw, okw := k.shown(c.WithFollowUp)
		_, to, oko := k.shown(c.WithoutFollowUp)
		text := fmt.Sprintf("%s of %s followed up", brief(tw), brief(tb))
		desc += fmt.Sprintf("%s: %s baselines, %s followed up, %s not. ", label, tb, tw, to)
		if !okb || most == 0 {
			ch.Bars = append(ch.Bars, bar{Label: label, Value: text, X: left, Y: y, H: barHeight})
			continue
		}
		ch.Bars = append(ch.Bars, splitBar(label, text, left, y, plot*vb/most, vw/vb, okw && oko,
			tw+" followed up", to+" not followed up", "bar-missing", "split not shown: small numbers")...)
	}
	ch.Height = float64(len(o.Completeness)) * (barHeight + 8)
	ch.Desc = desc
	ch.Legend = []bar{{Label: "Followed up", Class: "bar"}, {Label: "Not followed up", Class: "bar-missing"}, {Label: "Split not shown (small numbers)", Class: "bar-unknown"}}
	return ch
}

// splitBar is a bar of width total whose first share is drawn solid and
// the rest in restClass, or, when the split is not shown, one grey bar.
func splitBar(label, value string, x, y, total, share float64, shown bool, partTitle, restTitle, restClass, unknownTitle string) []bar {
	if !shown {
		return []bar{{Label: label, Value: value, X: x, Y: y, W: total, H: barHeight, Class: "bar-unknown", Title: unknownTitle}}
	}
	part := total * share
	return []bar{{Label: label, X: x, Y: y, W: part, H: barHeight, Class: "bar", Title: partTitle},
		{Value: value, X: x + part, Y: y, W: total - part, H: barHeight, Class: restClass, Title: restTitle}}
}

// brief writes "fewer than 5" as "<5" where space is short.
func brief(s string) string { return strings.Replace(s, "fewer than ", "<", 1) }

// capacityChart draws each service's capacity status over the period.
func capacityChart(a *pb.ActivityReport) chart {
	ch := chart{ID: "capacity", Title: "Capacity status over time"}
	var from, to time.Time
	for _, h := range a.Capacity {
		for _, p := range h.Periods {
			if from.IsZero() || p.StartTime.AsTime().Before(from) {
				from = p.StartTime.AsTime()
			}
			if p.EndTime.AsTime().After(to) {
				to = p.EndTime.AsTime()
			}
		}
	}
	span := to.Sub(from).Seconds()
	plot := chartWidth - labelWidth - 10
	desc := ""
	seen := map[pb.CapacityStatus]bool{}
	for i, h := range a.Capacity {
		y := float64(i) * (barHeight + 8)
		ch.Bars = append(ch.Bars, bar{Label: h.Label, X: labelWidth, Y: y, H: barHeight})
		for _, p := range h.Periods {
			if span <= 0 {
				break
			}
			x := labelWidth + plot*p.StartTime.AsTime().Sub(from).Seconds()/span
			w := plot * p.EndTime.AsTime().Sub(p.StartTime.AsTime()).Seconds() / span
			title := fmt.Sprintf("%s from %s to %s", label(p.Status), p.StartTime.AsTime().In(london).Format("2 Jan 2006"), p.EndTime.AsTime().In(london).Format("2 Jan 2006"))
			ch.Bars = append(ch.Bars, bar{X: x, Y: y, W: math.Max(w, 0.5), H: barHeight, Class: "cap-" + code(p.Status), Title: title})
			seen[p.Status] = true
		}
		desc += fmt.Sprintf("%s: %d periods. ", h.Label, len(h.Periods))
	}
	for _, s := range []pb.CapacityStatus{1, 2, 3, 4, 5} {
		if seen[s] {
			ch.Legend = append(ch.Legend, bar{Label: label(s), Class: "cap-" + code(s)})
		}
	}
	ch.Height = float64(len(a.Capacity)) * (barHeight + 8)
	ch.Desc = desc + "From " + from.In(london).Format("2 Jan 2006") + " to " + to.In(london).Format("2 Jan 2006") + "."
	return ch
}

// reportPage is the Content of reports.html.
type reportPage struct {
	Threshold   int32
	Query       template.URL // "?" and the filter as a query string, for the CSV links
	Form        url.Values
	Fields      map[string]string
	Services    []*pb.Service
	Orgs        []*pb.Organization
	Categories  []pb.Category
	Routes      []pb.ReferralRoute
	Activity    []reports.Table
	Outcomes    []reports.Table
	Funnel      chart
	Change      chart
	ByService   chart
	ChangeTrend chart
	Trend       chart
	Histograms  []chart
	Attrition   chart
	Capacity    chart
	HasOutcomes bool
}

func (w *Web) reports(rw http.ResponseWriter, r *http.Request, s *session) {
	filter, bad := reportFilter(r.URL.Query())
	pg := newPage(r, s, "Reports")
	// Re-encoded from the parsed form, so that it is a well-formed query
	// (the template would otherwise escape it as one value, and the links
	// would drop the filter).
	rp := reportPage{Form: r.URL.Query(), Fields: bad}
	if q := r.URL.Query().Encode(); q != "" {
		// Whole, "?" included, so that the template takes it as part of
		// the URL and does not escape its "=" and "&".
		rp.Query = template.URL("?" + q)
	}
	for c := range pb.Category_name {
		if c != 0 {
			rp.Categories = append(rp.Categories, pb.Category(c))
		}
	}
	sortEnums(rp.Categories)
	for c := range pb.ReferralRoute_name {
		if c != 0 {
			rp.Routes = append(rp.Routes, pb.ReferralRoute(c))
		}
	}
	sortEnums(rp.Routes)
	if l, err := w.dir.ListServices(s.call(r), &pb.ListServicesRequest{Parent: "organizations/-", PageSize: 1000}); err == nil {
		rp.Services = l.Services
	}
	if l, err := w.dir.ListOrganizations(s.call(r), &pb.ListOrganizationsRequest{PageSize: 1000}); err == nil {
		rp.Orgs = slices.DeleteFunc(l.Organizations, func(o *pb.Organization) bool {
			return o.Kind == pb.OrganizationKind_ORGANIZATION_KIND_OPERATOR
		})
	}
	if len(bad) > 0 {
		pg.Error = "Check the dates in the filter."
		pg.Content = rp
		w.render(rw, http.StatusBadRequest, "reports.html", pg)
		return
	}
	act, err := w.rep.GetActivityReport(s.call(r), &pb.GetActivityReportRequest{Filter: filter})
	if err == nil {
		var out *pb.OutcomeReport
		if out, err = w.rep.GetOutcomeReport(s.call(r), &pb.GetOutcomeReportRequest{Filter: filter}); err == nil {
			rp.Threshold = act.SuppressionThreshold
			rp.Activity, rp.Outcomes = reports.Activity(act, reports.Rounded), reports.Outcomes(out, reports.Rounded)
			rp.Funnel, rp.Change, rp.Histograms = rp.funnelChart(act), rp.forestChart(out), rp.histograms(out)
			rp.Attrition, rp.Capacity = rp.attritionChart(out), capacityChart(act)
			rp.Trend, rp.ByService, rp.ChangeTrend = rp.trendChart(act), rp.serviceChart(out), rp.changeTrendChart(out)
			rp.HasOutcomes = len(rp.Change.Rows) > 0
		}
	}
	if err != nil {
		p := explain(err)
		pg.Error = p.msg
		pg.Content = rp
		w.render(rw, p.code, "reports.html", pg)
		return
	}
	pg.Content = rp
	w.render(rw, http.StatusOK, "reports.html", pg)
}

// reportCSV downloads one table of a report as CSV, full precision.
func (w *Web) reportCSV(rw http.ResponseWriter, r *http.Request, s *session) {
	filter, bad := reportFilter(r.URL.Query())
	if len(bad) > 0 {
		http.Error(rw, "Check the dates in the filter.", http.StatusBadRequest)
		return
	}
	var tables []reports.Table
	var err error
	switch r.PathValue("report") {
	case "activity":
		var a *pb.ActivityReport
		if a, err = w.rep.GetActivityReport(s.call(r), &pb.GetActivityReportRequest{Filter: filter}); err == nil {
			tables = reports.Activity(a, reports.Full)
		}
	case "outcomes":
		var o *pb.OutcomeReport
		if o, err = w.rep.GetOutcomeReport(s.call(r), &pb.GetOutcomeReportRequest{Filter: filter}); err == nil {
			tables = reports.Outcomes(o, reports.Full)
		}
	default:
		http.NotFound(rw, r)
		return
	}
	if err != nil {
		p := explain(err)
		http.Error(rw, p.msg, p.code)
		return
	}
	t, ok := reports.Find(tables, strings.TrimSuffix(r.PathValue("file"), ".csv"))
	if !ok {
		http.NotFound(rw, r)
		return
	}
	rw.Header().Set("Content-Type", "text/csv; charset=utf-8")
	rw.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", r.PathValue("report")+"-"+t.Name+".csv"))
	reports.WriteCSV(rw, t)
}
