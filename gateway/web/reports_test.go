package web_test

import (
	"fmt"
	"html"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/social-prescribing/exchange/gateway/web"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// startReports is an exchange with nine people referred by the link
// workers to the walks, all with consent for evaluation: six women, two
// months ago, and three men, now; all with a WEMWBS baseline and six with a
// follow-up. So the men (3), their month and the missing follow-ups (3) are
// below the threshold of 5.
func startReports(t *testing.T) *inbox {
	t.Helper()
	var clock atomic.Int64
	now := time.Now()
	clock.Store(time.Date(now.Year(), now.Month()-2, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	x := exchangetest.StartWith(t, api.Options{Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	x.Org("pcn", pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE)
	x.Org("walkers", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	x.Org("icb", pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER)
	walks := x.Service("walkers", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	refs, fb := pb.NewReferralServiceClient(x.Conn), pb.NewFeedbackServiceClient(x.Conn)
	for i := range 9 {
		nhs := exchangetest.NHSNumber(300 + 10*i)
		c := x.ConsentFor("pcn", nhs, func(c *pb.Consent) {
			c.Purposes = append(c.Purposes, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION)
		})
		p := exchangetest.Ada()
		p.NhsNumber, p.Sex = nhs, pb.Sex_SEX_FEMALE
		if i >= 6 {
			p.Sex = pb.Sex_SEX_MALE
			clock.Store(time.Now().UnixNano())
		}
		r, err := refs.CreateReferral(x.As("pcn"), &pb.CreateReferralRequest{RequestId: fmt.Sprint("rep-", i), Referral: &pb.Referral{
			RecipientService: walks, Person: p, Consent: c.Name, Route: pb.ReferralRoute_REFERRAL_ROUTE_LINK_WORKER,
			Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_INTENSIVE}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := refs.AcceptReferral(x.As("walkers"), &pb.AcceptReferralRequest{Name: r.Name}); err != nil {
			t.Fatal(err)
		}
		scores := map[pb.Timepoint]int32{pb.Timepoint_TIMEPOINT_BASELINE: 40}
		if i%3 != 2 {
			// Up by 5 to 10, each by its own amount: one bin of the
			// distribution (5 to 15, its end merged) and statistics shown.
			scores[pb.Timepoint_TIMEPOINT_FOLLOW_UP] = int32(45 + i - i/3)
		}
		for tp, total := range scores {
			if _, err := fb.CreateFeedback(x.As("walkers"), &pb.CreateFeedbackRequest{Parent: r.Name, Feedback: &pb.Feedback{
				Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Timepoint: tp, Total: total}}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv := httptest.NewServer(web.New(x.Conn, web.Options{}).Handler())
	t.Cleanup(srv.Close)
	return &inbox{Exchange: x, url: srv.URL}
}

var cellRE = regexp.MustCompile(`<td>([^<]*)</td>`)

// TestReportPage: the commissioner's report page has its charts, each with
// a title and a text equivalent, tables with CSV downloads, and shows
// suppressed numbers only as "<5".
func TestReportPage(t *testing.T) {
	x := startReports(t)
	c := browser(t)
	if resp, _ := signIn(t, c, x.url, x.Keys["icb"]); resp.StatusCode != 303 || resp.Header.Get("Location") != "/reports" {
		t.Fatalf("a commissioner's sign-in: %d to %q, want the reports", resp.StatusCode, resp.Header.Get("Location"))
	}
	code, page := get(t, c, x.url+"/reports")
	if code != 200 {
		t.Fatalf("GET /reports: %d\n%s", code, page)
	}
	for _, id := range []string{"chart-funnel", "chart-trend", "chart-change", "chart-by-service", "chart-change-trend", "chart-dist-WEMWBS", "chart-attrition", "chart-capacity"} {
		i := strings.Index(page, `id="`+id+`"`)
		if i < 0 {
			t.Errorf("no %s", id)
			continue
		}
		fig := page[i:]
		fig = fig[:strings.Index(fig, "</figure>")]
		if !strings.Contains(fig, `role="img"`) || !strings.Contains(fig, "<title id=") || !strings.Contains(fig, "<desc id=") {
			t.Errorf("%s lacks its title or text equivalent", id)
		}
		if !strings.Contains(fig, `<div class="scroll" tabindex="0" role="region" aria-label="`) {
			t.Errorf("%s is not in a focusable, labelled scrolling region", id)
		}
	}
	// The men's row: 3 pairs, shown as <5 with no statistics.
	if !strings.Contains(page, "<td>WEMWBS</td><td>Male</td><td>&lt;5</td><td></td>") {
		t.Errorf("the men's row is not suppressed:\n%s", page)
	}
	for _, m := range cellRE.FindAllStringSubmatch(page, -1) {
		if n, err := strconv.Atoi(m[1]); err == nil && n > 0 && n < 5 {
			t.Errorf("a count of %d is on the page", n)
		}
	}

	// CSV downloads, with the filter: the 3 without a follow-up are
	// protected by hiding the 9 baselines, since the 6 with one are the
	// pairs shown elsewhere.
	code, csv := get(t, c, x.url+"/reports/outcomes/completeness.csv?from=2020-01-01")
	if code != 200 || !strings.HasPrefix(csv, "Report,Outcomes\nFilter,none\nPeriod,2020-01-01T00:00:00Z to now\n") ||
		!strings.Contains(csv, "\nService,Instrument,Baseline,With follow-up,Without follow-up,Attrition rate %\n") ||
		!strings.Contains(csv, "walks,WEMWBS,suppressed,6,<5,") {
		t.Errorf("completeness CSV: %d\n%s", code, csv)
	}
	// The trend by month: six women two months ago, three men now, and
	// the month between them hidden, since 9 - 6 - 0 would give the 3 away.
	code, csv = get(t, c, x.url+"/reports/activity/trend.csv")
	if rows := strings.Split(csv, "\n"); code != 200 || !strings.Contains(csv, "\nPeriod,From,To,Referrals,Started,Uptake %\n") ||
		len(rows) < 4 || !strings.Contains(csv, ",6,0,0.0\n") || !strings.Contains(csv, ",suppressed,0,\n") || !strings.Contains(csv, ",<5,0,\n") {
		t.Errorf("trend CSV: %d\n%s", code, csv)
	}
	// The trend's interval is part of the filter, kept by the form and the
	// CSV links.
	if code, page := get(t, c, x.url+"/reports?trend=QUARTER"); code != 200 || !strings.Contains(page, `<option value="QUARTER" selected>`) ||
		!strings.Contains(page, `/reports/activity/trend.csv?trend=QUARTER"`) {
		t.Errorf("the quarterly page: %d", code)
	}
	if code, _ := get(t, c, x.url+"/reports/outcomes/nope.csv"); code != 404 {
		t.Errorf("an unknown table: %d", code)
	}
	if code, body := get(t, c, x.url+"/reports?from=yesterday"); code != 400 || !strings.Contains(body, "Enter a date") {
		t.Errorf("a bad date: %d", code)
	}
	// A group sees its own referrals; a stranger's session is refused.
	if code, _ := get(t, browser(t), x.url+"/reports"); code != 303 {
		t.Errorf("reports without signing in: %d", code)
	}
}

// TestBrowserReports opens the report page in headless Chromium as the
// commissioner: the charts are drawn, and no number from 1 to 4 is visible
// in a chart's labels or a table's count columns. It saves a screenshot in
// .artifacts/reports.png.
func TestBrowserReports(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	ctx := headless(t)
	x := startReports(t)
	var shot []byte
	var charts int
	var visible []string
	// Text of every chart label and of every count column of every table.
	const collect = `(() => {
	  const out = [];
	  document.querySelectorAll('figure.chart:not(.forest) svg text').forEach(t => out.push(t.textContent));
	  const counts = ['Referrals', 'Pairs', 'Improved', 'Unchanged', 'Worse', 'Baseline', 'With follow-up', 'Without follow-up'];
	  document.querySelectorAll('details.table').forEach(d => d.open = true);
	  document.querySelectorAll('table').forEach(tb => {
	    const heads = [...tb.querySelectorAll('thead th')].map(th => th.textContent);
	    tb.querySelectorAll('tbody tr').forEach(tr => [...tr.children].forEach((td, i) => {
	      if (counts.includes(heads[i])) out.push(td.textContent);
	    }));
	  });
	  return out;
	})()`
	err := chromedp.Run(ctx,
		chromedp.Navigate(x.url+"/"),
		chromedp.WaitVisible("#api_key", chromedp.ByQuery),
		chromedp.SendKeys("#api_key", x.Keys["icb"], chromedp.ByQuery),
		// A commissioner lands on the reports after signing in. Waiting for
		// that page, rather than navigating while the sign-in's redirect is
		// still loading, avoids an aborted navigation (net::ERR_ABORTED).
		chromedp.Click(`form[action="/signin"] button`, chromedp.ByQuery),
		chromedp.WaitVisible("#chart-funnel svg", chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll('figure.chart svg[role="img"]').length`, &charts),
		chromedp.Evaluate(collect, &visible),
		chromedp.FullScreenshot(&shot, 100),
	)
	if err != nil {
		t.Fatal(err)
	}
	if charts < 5 {
		t.Errorf("%d charts drawn, want the funnel, change, distribution, attrition and capacity", charts)
	}
	small := regexp.MustCompile(`(^|[^<\d.])([1-4])($|[^\d.])`)
	for _, s := range visible {
		if small.MatchString(s) {
			t.Errorf("a suppressed number is visible: %q", s)
		}
	}
	if len(visible) < 20 {
		t.Errorf("only %d labels and cells were checked: %q", len(visible), visible)
	}
	save := func(name string, shot []byte) { saveShot(t, name, shot) }
	save("reports.png", shot)

	// On a phone, 390 px wide: the page never scrolls sideways; a wide
	// table or chart (its labels kept legible) scrolls in its own region,
	// which the keyboard can reach and a screen reader names.
	var pageWidth int
	var smallest float64 // the shortest chart label's height, in CSS pixels
	var regions []map[string]string
	var text string
	err = chromedp.Run(ctx,
		chromedp.EmulateViewport(390, 844),
		chromedp.Reload(),
		chromedp.WaitVisible("#chart-funnel svg", chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll('details.table').forEach(d => d.open = true)`, nil),
		chromedp.Evaluate(`document.documentElement.scrollWidth`, &pageWidth),
		chromedp.Evaluate(`[...document.querySelectorAll('table, figure.chart svg')].filter(tb => tb.getBoundingClientRect().width > 390).map(tb => {
		  const r = tb.closest('.scroll');
		  return r ? {tabindex: r.getAttribute('tabindex') || '', role: r.getAttribute('role') || '', label: r.getAttribute('aria-label') || '', overflow: getComputedStyle(r).overflowX} : {};
		})`, &regions),
		chromedp.Evaluate(`document.body.innerText`, &text),
		chromedp.Evaluate(`Math.min(...[...document.querySelectorAll('figure.chart svg text')].filter(t => t.textContent.trim()).map(t => t.getBoundingClientRect().height))`, &smallest),
		chromedp.FullScreenshot(&shot, 100),
	)
	if err != nil {
		t.Fatal(err)
	}
	save("reports-390.png", shot)
	if pageWidth > 390 {
		t.Errorf("at 390 px the page is %d px wide: it scrolls sideways", pageWidth)
	}
	// An 11 px label drawn at 600 px of a 640-wide chart is about 12 px
	// tall; squeezed into the phone's width it would be about 7.
	if smallest < 10 {
		t.Errorf("at 390 px the smallest chart label is %.1f px tall: not legible", smallest)
	}
	if len(regions) == 0 {
		t.Error("no table is wider than the phone: the check of scrolling regions checked nothing")
	}
	for _, r := range regions {
		if r["tabindex"] != "0" || r["role"] != "region" || r["label"] == "" || r["overflow"] != "auto" {
			t.Errorf("a wide table scrolls outside a focusable, labelled region: %v", r)
		}
	}
	// What a commissioner reads: the rule, why a count is hidden, the size
	// of an effect in words.
	for _, w := range []string{"suppressed", "fewer than 5", "Effect size", "d 95% CI low", "Improved %", "Attrition rate %",
		"Reached it %", "Referrals and uptake by month", "Uptake %", "Change by service, side by side", "Mean change by month of referral"} {
		if !strings.Contains(text, w) {
			t.Errorf("the report page lacks %q", w)
		}
	}
}

// TestCSVCellsCannotRunFormulas: a service named like a spreadsheet formula
// is written to the commissioner's CSV as text (issue 25, defect 7).
func TestCSVCellsCannotRunFormulas(t *testing.T) {
	x := startReports(t)
	evil := `=cmd|' /C calc'!A0`
	if _, err := pb.NewDirectoryServiceClient(x.Conn).UpdateService(x.As("walkers"), &pb.UpdateServiceRequest{
		Service:    &pb.Service{Name: "organizations/walkers/services/walks", DisplayName: evil},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}}}); err != nil {
		t.Fatal(err)
	}
	c := browser(t)
	signIn(t, c, x.url, x.Keys["icb"])
	code, body := get(t, c, x.url+"/reports/activity/by_service.csv?from=2020-01-01")
	if code != 200 || !strings.Contains(body, "\n'"+evil+",") || strings.Contains(body, "\n"+evil) {
		t.Fatalf("by_service.csv: %d, want the formula as text ('=...)\n%s", code, body)
	}
}

// TestCSVLinksKeepTheFilter: a table's "Download as CSV" link carries the
// page's filter, so the download is the table shown.
func TestCSVLinksKeepTheFilter(t *testing.T) {
	x := startReports(t)
	c := browser(t)
	signIn(t, c, x.url, x.Keys["icb"])
	q := "from=2020-01-01&service=" + url.QueryEscape("organizations/walkers/services/walks")
	_, page := get(t, c, x.url+"/reports?"+q)
	m := regexp.MustCompile(`href="(/reports/activity/by_service\.csv[^"]*)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSV link on the page:\n%s", page)
	}
	// The header blocks may differ only in when they were generated.
	generated := regexp.MustCompile(`(?m)^Generated,.*$`)
	_, viaLink := get(t, c, x.url+html.UnescapeString(m[1]))
	_, direct := get(t, c, x.url+"/reports/activity/by_service.csv?"+q)
	viaLink, direct = generated.ReplaceAllString(viaLink, ""), generated.ReplaceAllString(direct, "")
	if viaLink != direct || !strings.Contains(viaLink, "Filter,service organizations/walkers/services/walks") || !strings.Contains(m[1], "service=organizations") {
		t.Errorf("the link %s downloads\n%s\nnot the table shown\n%s", m[1], viaLink, direct)
	}
}
