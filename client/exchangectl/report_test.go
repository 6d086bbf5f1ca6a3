package main

import (
	"encoding/csv"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// TestReports: six people referred by the practice to the walks, with
// consent for evaluation, WEMWBS at the start and the end recorded with the
// CLI; the commissioner reads the reports as tables, JSON and CSV.
func TestReports(t *testing.T) {
	x := exchangetest.Start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	x.Org("icb", pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	for i := range 6 {
		nhs := exchangetest.NHSNumber(700 + 10*i)
		c := x.ConsentFor("practice", nhs, func(c *pb.Consent) {
			c.Purposes = append(c.Purposes, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION)
		})
		r, err := x.Refer("practice", fmt.Sprint("r", i), walks, nhs, c.Name)
		if err != nil {
			t.Fatal(err)
		}
		ok(t, x, "group", "referral", "accept", r.Name)
		ok(t, x, "group", "referral", "start", r.Name)
		ok(t, x, "group", "feedback", "outcome", r.Name, "--instrument", "wemwbs", "--timepoint", "baseline", "--total", "40")
		ok(t, x, "group", "feedback", "outcome", r.Name, "--instrument", "wemwbs", "--timepoint", "follow_up", "--total", fmt.Sprint(43+i))
	}

	tables := ok(t, x, "icb", "report", "activity")
	for _, w := range []string{"SUMMARY", "HOW FAR REFERRALS GOT", "Referred", "Primary care", "walks", "CAPACITY STATUS OVER TIME", "ACCEPTING"} {
		if !strings.Contains(tables, w) {
			t.Errorf("report activity lacks %q:\n%s", w, tables)
		}
	}
	var act pb.ActivityReport
	if err := protojson.Unmarshal([]byte(ok(t, x, "icb", "report", "activity", "-o", "json")), &act); err != nil || act.Funnel.Started.GetValue() != 6 {
		t.Fatalf("report activity -o json: %v %v", act.Funnel, err)
	}

	// The outcome table as CSV, full precision: 6 pairs, mean change 5.5.
	// It starts with the report's header block, then a blank line.
	rd := csv.NewReader(strings.NewReader(ok(t, x, "icb", "report", "outcomes", "-o", "csv", "--table", "outcomes")))
	rd.FieldsPerRecord = -1
	rows, err := rd.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if rows[0][0] != "Report" || rows[0][1] != "Outcomes" || rows[1][0] != "Filter" || rows[4][0] != "Suppression" || !strings.Contains(rows[4][1], "complementary") {
		t.Fatalf("outcomes CSV header block:\n%v", rows[:6])
	}
	rows = rows[6:]
	if rows[0][0] != "Measure" || rows[1][0] != "WEMWBS" || rows[1][1] != "All" || rows[1][2] != "6" || rows[1][7] != "5.5" {
		t.Fatalf("outcomes CSV:\n%v", rows)
	}
	// Nobody's sex was given: the groups are empty, the ages all 50 and
	// over (Ada was born in 1948).
	if rows[4][1] != "Under 50" || rows[4][2] != "0" || rows[5][1] != "50 and over" || rows[5][2] != "6" {
		t.Errorf("age groups: %v / %v", rows[4], rows[5])
	}

	// A period with no referrals: no pairs, so no rows.
	r := ok(t, x, "icb", "report", "outcomes", "-o", "csv", "--table", "outcomes", "--to", "2000-01-01")
	if strings.Contains(r, "WEMWBS") {
		t.Errorf("a report of no referrals lists WEMWBS:\n%s", r)
	}
	fails(t, x, "icb", exitUsage, []string{"no table \"nope\""}, "report", "outcomes", "-o", "csv", "--table", "nope")
	fails(t, x, "icb", exitUsage, []string{"or csv, for reports"}, "referral", "list", "-o", "csv")
	fails(t, x, "icb", exitUsage, []string{"--from"}, "report", "activity", "--from", "last week")
}
