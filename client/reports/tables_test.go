package reports_test

import (
	"bytes"
	"encoding/csv"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/social-prescribing/exchange/client/reports"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// TestSafeCell: OWASP's rule for CSV injection, with plain numbers left
// alone (issue 25, defect 7).
func TestSafeCell(t *testing.T) {
	for in, want := range map[string]string{
		"Health walks": "Health walks", "": "",
		"=cmd|' /C calc'!A0": "'=cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0": "'@SUM(1+1)*cmd|' /C calc'!A0",
		"+1+cmd": "'+1+cmd", "-2+3": "'-2+3", "\tx": "'\tx", "\r=x": "'\r=x",
		"-0.42": "-0.42", "+3": "+3", "-1e-3": "-1e-3", "-Inf": "'-Inf", "-0x1p-2": "'-0x1p-2", "<5": "<5",
	} {
		if got := reports.SafeCell(in); got != want {
			t.Errorf("SafeCell(%q) = %q, want %q", in, got, want)
		}
	}
	var b bytes.Buffer
	if err := reports.WriteCSV(&b, reports.Table{Header: []string{"Service", "n"}, Rows: [][]string{{"=HYPERLINK(\"x\")", "-1"}}}); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil || rows[1][0] != `'=HYPERLINK("x")` || rows[1][1] != "-1" {
		t.Fatalf("WriteCSV wrote %q, %v", rows, err)
	}
}

// TestOneCSVWriter: WriteCSV is the only place the exchange writes CSV, so
// every cell goes through SafeCell.
func TestOneCSVWriter(t *testing.T) {
	grep := exec.Command("git", "grep", "-l", "csv.NewWriter", "--", ":/*.go", ":/!*_test.go")
	out, err := grep.Output()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("git grep: %v", err)
		}
		t.Skipf("git grep: %v (not a git checkout?)", err)
	}
	if files := strings.Fields(string(out)); len(files) != 1 || !strings.HasSuffix(files[0], "tables.go") {
		t.Fatalf("CSV is written in %q; write it only through reports.WriteCSV", files)
	}
}

// TestTrendTables: a period is named in UK time, its uptake is a share of
// its referrals, and a service's suppressed pairs show as suppressed.
func TestTrendTables(t *testing.T) {
	ts := func(s string) *timestamppb.Timestamp {
		when, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return timestamppb.New(when)
	}
	for _, c := range []struct{ from, to, want string }{
		{"2026-03-31T23:00:00Z", "2026-04-30T23:00:00Z", "April 2026"},
		{"2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "January 2026"},
		{"2026-03-31T23:00:00Z", "2026-06-30T23:00:00Z", "April to June 2026"},
		{"2026-10-01T00:00:00Z", "2027-01-01T00:00:00Z", "October to December 2026"},
	} {
		if got := reports.PeriodLabel(ts(c.from), ts(c.to)); got != c.want {
			t.Errorf("PeriodLabel(%s, %s) = %q, want %q", c.from, c.to, got, c.want)
		}
	}
	a := &pb.ActivityReport{Filter: &pb.ReportFilter{TrendInterval: pb.TrendInterval_TREND_INTERVAL_QUARTER}, SuppressionThreshold: 5,
		Trend: []*pb.TrendPeriod{{StartTime: ts("2026-03-31T23:00:00Z"), EndTime: ts("2026-06-30T23:00:00Z"),
			Referrals: &pb.Count{Value: 40}, Started: &pb.Count{Value: 10}}}}
	trend, ok := reports.Find(reports.Activity(a, reports.Rounded), "trend")
	if !ok || trend.Title != "Referrals and uptake by quarter" || len(trend.Rows) != 1 ||
		strings.Join(trend.Rows[0], "|") != "April to June 2026|2026-04-01|2026-06-30|40|10|25.0" {
		t.Errorf("activity trend: %+v", trend)
	}
	mean := 2.5
	o := &pb.OutcomeReport{Filter: &pb.ReportFilter{}, SuppressionThreshold: 5, Measures: []*pb.MeasureOutcome{{Measure: "WEMWBS",
		All: &pb.PairedStats{N: &pb.Count{Value: 12}},
		ByService: []*pb.ServiceOutcome{
			{Label: "Walks", Stats: &pb.PairedStats{N: &pb.Count{Value: 9}, ChangeMean: &mean}},
			{Label: "Choir", Stats: &pb.PairedStats{N: &pb.Count{Suppressed: true, Suppression: pb.Suppression_SUPPRESSION_SMALL}}}}}}}
	by, ok := reports.Find(reports.Outcomes(o, reports.Rounded), "by_service")
	if !ok || len(by.Rows) != 2 || by.Rows[0][1] != "Walks" || by.Rows[0][2] != "9" || by.Rows[1][2] != "<5" || by.Rows[1][3] != "" {
		t.Errorf("outcomes by service: %+v", by)
	}
}

// TestDuration: a time to first answer in a unit that fits, never "0".
func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		5 * time.Second: "under a minute", time.Minute: "1 minute", 14 * time.Minute: "14 minutes",
		3 * time.Hour: "3.0 hours", 47 * time.Hour: "47.0 hours", 72 * time.Hour: "3.0 days",
	} {
		if got := reports.Duration(durationpb.New(d)); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
	if got := reports.Duration((*durationpb.Duration)(nil)); got != "" {
		t.Errorf("no duration: %q", got)
	}
}
