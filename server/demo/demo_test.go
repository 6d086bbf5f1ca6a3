package demo

import (
	"context"
	"path/filepath"
	"testing"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage/bolt"
)

// TestDemoNHSNumbersDistinct: each synthetic person has an NHS number of
// their own, so no journey is refused as a second open referral of someone
// else's.
func TestDemoNHSNumbersDistinct(t *testing.T) {
	seen := map[string]int{}
	for i := range 200_000 {
		s := demoNHSNumber(100 + i)
		if j, ok := seen[s]; ok {
			t.Fatalf("demoNHSNumber(%d) = demoNHSNumber(%d) = %s", 100+i, j, s)
		}
		seen[s] = 100 + i
	}
}

// TestDemoHistory: the synthetic history, its journeys run side by side,
// is stored as if it had happened over the past year: referrals in each of
// its months, started ones among the accepted, pairs of scores, every
// journey ended by today, and capacity periods that run forwards.
func TestDemoHistory(t *testing.T) {
	dir := t.TempDir()
	store, err := exchangetest.OpenBolt(filepath.Join(dir, "exchange.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv := api.New(store, api.Options{})
	const n = 600
	if err := Ensure(context.Background(), srv, dir, n); err != nil {
		t.Fatal(err)
	}
	icb := api.WithCaller(context.Background(), api.Caller{Org: "organizations/riverside-icb", Kind: pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER})
	a, err := srv.Services().Reports.GetActivityReport(icb, &pb.GetActivityReportRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// About 85% consent to evaluation; some referrals are refused by a
	// group at capacity.
	if got := a.Referrals.GetValue(); got < n/3 || got > n {
		t.Errorf("the report counts %d referrals of %d made", got, n)
	}
	if len(a.Trend) < 9 {
		t.Errorf("referrals in %d months, want the 9 of the history", len(a.Trend))
	}
	f := a.Funnel
	if f.Started.GetValue() == 0 || f.Completed.GetValue() == 0 || f.Started.GetValue() > f.Accepted.GetValue() || f.Open.GetValue() != 0 || f.Open.GetSuppressed() {
		t.Errorf("funnel: %v", f)
	}
	for _, h := range a.Capacity {
		for _, p := range h.Periods {
			if p.EndTime.AsTime().Before(p.StartTime.AsTime()) {
				t.Errorf("%s: a capacity period runs backwards: %v", h.Service, p)
			}
		}
	}
	o, err := srv.Services().Reports.GetOutcomeReport(icb, &pb.GetOutcomeReportRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Measures) == 0 || o.Measures[0].All.GetN().GetValue() < 20 {
		t.Errorf("outcomes: %v", o.Measures)
	}
}
