package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

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

// etcdPair starts two exchanges over one cluster and prefix, as two
// processes of a region would run.
func etcdPair(t *testing.T, prefix string) (a, b *exchangetest.Exchange) {
	t.Helper()
	cluster := etcdtest.Start(t, 3)
	a = exchangetest.StartOn(t, func() (kv.Engine, error) {
		return etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: prefix})
	}, api.Options{})
	return a, a.Beside(t)
}

// TestSecondProcessSeesWritesAtOnce: a referral created through one
// exchange is read, accepted and listed through another at once, and an
// event stream open on the second wakes for it.
func TestSecondProcessSeesWritesAtOnce(t *testing.T) {
	a, b := etcdPair(t, "/pair/")
	a.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	a.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := a.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	nhs := exchangetest.NHSNumber(4242)
	consent := a.ConsentFor("practice", nhs, nil)

	ctx, cancel := context.WithTimeout(b.As("group"), 10*time.Second)
	defer cancel()
	stream, err := pb.NewEventServiceClient(b.Conn).WatchEvents(ctx, &pb.WatchEventsRequest{After: -1})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan *pb.Event, 8)
	go func() {
		for {
			e, err := stream.Recv()
			if err != nil {
				close(events)
				return
			}
			events <- e.Event
		}
	}()
	time.Sleep(200 * time.Millisecond) // the stream is open and waiting
	r, err := a.Refer("practice", "once", walks, nhs, consent.Name)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e.Resource != r.Name || e.Type != pb.EventType_EVENT_TYPE_REFERRAL_CREATED {
			t.Errorf("the second exchange's stream woke for %v, want %s created", e, r.Name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second exchange's event stream did not wake for a write through the first")
	}
	refs := pb.NewReferralServiceClient(b.Conn)
	if got, err := refs.GetReferral(b.As("group"), &pb.GetReferralRequest{Name: r.Name}); err != nil || got.State != pb.ReferralState_REFERRAL_STATE_REQUESTED {
		t.Fatalf("the referral through the second exchange: %v, %v", got, err)
	}
	if _, err := refs.AcceptReferral(b.As("group"), &pb.AcceptReferralRequest{Name: r.Name, RequestId: "accept"}); err != nil {
		t.Fatal(err)
	}
	l, err := pb.NewReferralServiceClient(a.Conn).ListReferrals(a.As("practice"), &pb.ListReferralsRequest{})
	if err != nil || len(l.Referrals) != 1 || l.Referrals[0].State != pb.ReferralState_REFERRAL_STATE_ACCEPTED {
		t.Fatalf("the first exchange lists %v, %v after the second accepted", l, err)
	}
}

// TestKeyRevokedEverywhere: an API key revoked through one exchange fails
// on the other from the next call after the revocation is answered, even
// though the other had just authenticated it (and would cache whom it
// belongs to).
func TestKeyRevokedEverywhere(t *testing.T) {
	a, b := etcdPair(t, "/revoke/")
	a.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	dir := pb.NewDirectoryServiceClient(b.Conn)
	for range 3 { // authenticated, and remembered
		if _, err := dir.GetOrganization(b.As("practice"), &pb.GetOrganizationRequest{Name: "organizations/practice"}); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := pb.NewApiKeyServiceClient(a.Conn).ListApiKeys(a.As("operator"), &pb.ListApiKeysRequest{Parent: "organizations/practice"})
	if err != nil || len(keys.ApiKeys) != 1 {
		t.Fatalf("keys = %v, %v", keys, err)
	}
	if _, err := pb.NewApiKeyServiceClient(a.Conn).RevokeApiKey(a.As("operator"), &pb.RevokeApiKeyRequest{Name: keys.ApiKeys[0].Name}); err != nil {
		t.Fatal(err)
	}
	_, err = dir.GetOrganization(b.As("practice"), &pb.GetOrganizationRequest{Name: "organizations/practice"})
	exchangetest.WantErr(t, err, codes.Unauthenticated, "API_KEY_INVALID")
}

// TestBackupAndRestoreOnEtcd: a backup taken through AdminService on etcd
// (a logical export) is restored with exchange-server restore into an
// empty prefix, and an exchange started there serves what was backed up;
// a restore into a prefix that holds keys is refused.
func TestBackupAndRestoreOnEtcd(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	onPrefix := func(p string) func() (kv.Engine, error) {
		return func() (kv.Engine, error) {
			return etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: p})
		}
	}
	x := exchangetest.StartOn(t, onPrefix("/live/"), api.Options{})
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	nhs := exchangetest.NHSNumber(777)
	r, err := x.Refer("practice", "kept", walks, nhs, x.ConsentFor("practice", nhs, nil).Name)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := pb.NewAdminServiceClient(x.Conn).Backup(x.As("operator"), &pb.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	last := false
	for {
		c, err := stream.Recv()
		if err != nil {
			break
		}
		data, last = append(data, c.Data...), c.Last
	}
	if !last || len(data) == 0 {
		t.Fatalf("a backup of %d bytes, last chunk marked %v", len(data), last)
	}
	file := filepath.Join(t.TempDir(), "backup")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f := etcdFlags{endpoints: strings.Join(cluster.Endpoints(), ","), prefix: "/restored/"}
	if err := restoreFrom(context.Background(), f, file); err != nil {
		t.Fatal(err)
	}
	if err := restoreFrom(context.Background(), f, file); err == nil || !strings.Contains(err.Error(), "already under") {
		t.Errorf("a second restore into the same prefix = %v, want it refused", err)
	}
	y := x.BesideOn(t, onPrefix("/restored/")) // the keys were restored with everything else
	got, err := pb.NewReferralServiceClient(y.Conn).GetReferral(y.As("group"), &pb.GetReferralRequest{Name: r.Name})
	if err != nil || got.Person.GetNhsNumber() != nhs {
		t.Fatalf("the restored referral: %v, %v", got, err)
	}
	// The restored feed goes on from where the backup ended.
	l, err := pb.NewEventServiceClient(y.Conn).ListEvents(y.As("group"), &pb.ListEventsRequest{})
	if err != nil || len(l.Events) == 0 {
		t.Fatalf("the restored feed: %v, %v", l, err)
	}
	if _, err := y.Refer("practice", "after", walks, exchangetest.NHSNumber(778), y.ConsentFor("practice", exchangetest.NHSNumber(778), nil).Name); err != nil {
		t.Fatal(err)
	}
	l2, err := pb.NewEventServiceClient(y.Conn).ListEvents(y.As("group"), &pb.ListEventsRequest{After: l.LastSequence})
	if err != nil || len(l2.Events) != 1 || l2.Events[0].Sequence <= l.LastSequence {
		t.Errorf("after the restore the feed gave %v, %v", l2, err)
	}
}
