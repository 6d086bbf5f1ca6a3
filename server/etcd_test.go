package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage/etcd"
	"github.com/social-prescribing/exchange/server/storage/etcd/etcdtest"
	"github.com/social-prescribing/exchange/server/storage/kv"
)

// TestSweepsInPiecesOnEtcd: the overdue sweep (with automatic rejection)
// and the retention sweep over more referrals than one etcd transaction
// takes (128 operations) work through them all, in pieces, and each
// referral is notified, rejected and cleared once.
func TestSweepsInPiecesOnEtcd(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	var mu sync.Mutex
	now := time.Now().UTC().Truncate(time.Second)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	x := exchangetest.StartOn(t, func() (kv.Engine, error) {
		return etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/sweeps/"})
	}, api.Options{Now: clock, AutoRejectAfter: 48 * time.Hour})
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	const n = 150
	for i := range n {
		nhs := exchangetest.NHSNumber(5000 + i)
		if _, err := x.Refer("practice", fmt.Sprint("late-", i), walks, nhs, x.ConsentFor("practice", nhs, nil).Name); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	now = now.Add(30 * 24 * time.Hour) // past reply-by and the automatic rejection
	mu.Unlock()
	notified, rejected, err := x.Srv.SweepOverdue(context.Background())
	if err != nil || rejected != n {
		t.Fatalf("overdue sweep = %d notified, %d rejected, %v; want all %d rejected", notified, rejected, err, n)
	}
	if again, rej, err := x.Srv.SweepOverdue(context.Background()); again != 0 || rej != 0 || err != nil {
		t.Errorf("a second sweep = %d, %d, %v; want nothing left", again, rej, err)
	}
	mu.Lock()
	now = now.Add(400 * 24 * time.Hour)
	mu.Unlock()
	cleared, err := x.Srv.SweepRetention(context.Background(), 365*24*time.Hour)
	if err != nil || cleared != n {
		t.Fatalf("retention sweep cleared %d, %v; want %d", cleared, err, n)
	}
	l, err := pb.NewReferralServiceClient(x.Conn).ListReferrals(x.As("practice"), &pb.ListReferralsRequest{PageSize: 1000})
	if err != nil || len(l.Referrals) != n {
		t.Fatalf("list = %d, %v", len(l.GetReferrals()), err)
	}
	for _, r := range l.Referrals {
		if r.State != pb.ReferralState_REFERRAL_STATE_REJECTED || r.Person.GetGivenName() != "" {
			t.Fatalf("%s is %v with %q after the sweeps", r.Name, r.State, r.Person.GetGivenName())
		}
	}
}
