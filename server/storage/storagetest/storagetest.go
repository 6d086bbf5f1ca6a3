// Package storagetest is the conformance suite of storage.Store, the typed
// layer, run over an engine: every engine's test calls Run (and
// kvtest.Run, the engine's own suite).
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/kv/kvtest"
)

// Opener opens the store kept in dir (the same dir again reopens it).
type Opener func(t *testing.T, dir string) storage.Store

// Run runs every conformance test over the engines open opens.
func Run(t *testing.T, engine kvtest.Opener) {
	open := func(t *testing.T, dir string) storage.Store {
		s, err := storage.Open(ctx, engine(t, dir))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"Organizations", testOrganizations},
		{"ServicesByCategory", testServices},
		{"ReferralIndexes", testReferralIndexes},
		{"ReferralPagination", testReferralPagination},
		{"MonitoringFigures", testMonitoringFigures},
		{"ConsentsByPerson", testConsents},
		{"FeedbackOrder", testFeedback},
		{"APIKeysAndIdempotency", testKeysIdempotency},
		{"ExpiredAnswersInPieces", testExpiredAnswers},
		{"AuthVersion", testAuthVersion},
		{"EventsOrderAndAudience", testEvents},
		{"WaitEvents", testWaitEvents},
		{"FailedUpdateWritesNothing", testRollback},
		{"ConcurrentUpdatesAllCommit", testConcurrent},
		{"SurvivesReopen", testReopen},
		{"AuditLog", testAudit},
		{"PersonAndRetentionIndexes", testPersonAndRetention},
		{"GetsAndUpdates", testUpdates},
		{"DeleteIdempotency", testDeleteIdempotency},
		{"Backup", testBackup},
		{"ReportSums", testReportSums},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

var ctx = context.Background()

func update(t *testing.T, s storage.Store, fn func(storage.WriteTx) error) {
	t.Helper()
	if err := s.Update(ctx, fn); err != nil {
		t.Fatal(err)
	}
}

func view(t *testing.T, s storage.Store, fn func(storage.ReadTx) error) {
	t.Helper()
	if err := s.View(ctx, fn); err != nil {
		t.Fatal(err)
	}
}

func newStore(t *testing.T, open Opener) storage.Store {
	s := open(t, t.TempDir())
	t.Cleanup(func() { s.Close() })
	return s
}

func testOrganizations(t *testing.T, open Opener) {
	s := newStore(t, open)
	o := &pb.Organization{Name: "organizations/abc", DisplayName: "A"}
	update(t, s, func(tx storage.WriteTx) error { return tx.CreateOrganization(o) })
	err := s.Update(ctx, func(tx storage.WriteTx) error { return tx.CreateOrganization(o) })
	if !errors.Is(err, storage.ErrAlreadyExists) {
		t.Fatalf("second create: %v, want ErrAlreadyExists", err)
	}
	err = s.Update(ctx, func(tx storage.WriteTx) error {
		return tx.UpdateOrganization(&pb.Organization{Name: "organizations/none"})
	})
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("update missing: %v, want ErrNotFound", err)
	}
	view(t, s, func(tx storage.ReadTx) error {
		got, err := tx.GetOrganization("organizations/abc")
		if err != nil || !proto.Equal(got, o) {
			t.Errorf("get = %v, %v", got, err)
		}
		if _, err := tx.GetOrganization("organizations/zzz"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("get missing: %v", err)
		}
		return nil
	})
}

func testServices(t *testing.T, open Opener) {
	s := newStore(t, open)
	walk := pb.Category_CATEGORY_PHYSICAL_ACTIVITY
	art := pb.Category_CATEGORY_ARTS_AND_CREATIVITY
	update(t, s, func(tx storage.WriteTx) error {
		for i := 0; i < 5; i++ {
			svc := &pb.Service{Name: fmt.Sprintf("organizations/org%d/services/svc", i), Categories: []pb.Category{walk}}
			if err := tx.CreateService(svc); err != nil {
				return err
			}
		}
		// Moving a service out of a category updates the index.
		return tx.UpdateService(&pb.Service{Name: "organizations/org0/services/svc", Categories: []pb.Category{art}})
	})
	view(t, s, func(tx storage.ReadTx) error {
		p, err := tx.ServicesInCategory(walk, "", 3)
		if err != nil || len(p.Items) != 3 || p.Next == "" || p.Items[0].Name != "organizations/org1/services/svc" {
			t.Fatalf("page 1 = %v next %q, %v", p.Items, p.Next, err)
		}
		p, _ = tx.ServicesInCategory(walk, p.Next, 3)
		if len(p.Items) != 1 || p.Next != "" {
			t.Fatalf("page 2 = %v next %q", p.Items, p.Next)
		}
		p, _ = tx.ServicesInCategory(art, "", 10)
		if len(p.Items) != 1 {
			t.Fatalf("arts = %v", p.Items)
		}
		p, _ = tx.ListServices("organizations/org3", "", 10)
		if len(p.Items) != 1 {
			t.Fatalf("org3 services = %v", p.Items)
		}
		return nil
	})
}

func referral(id, referrer, recipient string, created time.Time) *pb.Referral {
	return &pb.Referral{
		Name: "referrals/" + id, Referrer: referrer, Recipient: recipient,
		RecipientService: recipient + "/services/svc", Consent: "consents/c1",
		Person: &pb.Person{NhsNumber: "9434765919"}, State: pb.ReferralState_REFERRAL_STATE_REQUESTED,
		CreateTime: timestamppb.New(created), ReplyBy: timestamppb.New(created.Add(time.Hour)),
	}
}

func names(rs []*pb.Referral) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

func testReferralIndexes(t *testing.T, open Opener) {
	s := newStore(t, open)
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	gp, lw := "organizations/gp", "organizations/lw"
	r1 := referral("r1", gp, lw, t0)
	r2 := referral("r2", gp, lw, t0.Add(time.Minute))
	r2.Person.NhsNumber = "4010232137"
	update(t, s, func(tx storage.WriteTx) error {
		if err := tx.CreateReferral(r1, []string{gp, lw}); err != nil {
			return err
		}
		return tx.CreateReferral(r2, []string{gp, lw})
	})
	q := func(q storage.ReferralQuery) string {
		var got []string
		view(t, s, func(tx storage.ReadTx) error {
			p, err := tx.ListReferrals(q, "", 100, nil)
			got = names(p.Items)
			return err
		})
		return fmt.Sprint(got)
	}
	requested := pb.ReferralState_REFERRAL_STATE_REQUESTED
	accepted := pb.ReferralState_REFERRAL_STATE_ACCEPTED
	check := func(what string, got string, want ...string) {
		t.Helper()
		if got != fmt.Sprint(want) {
			t.Errorf("%s = %s, want %v", what, got, want)
		}
	}
	check("inbox requested", q(storage.ReferralQuery{Recipient: lw, State: requested}), "referrals/r1", "referrals/r2")
	check("referrer", q(storage.ReferralQuery{Referrer: gp}), "referrals/r1", "referrals/r2")
	check("party gp", q(storage.ReferralQuery{Party: gp}), "referrals/r1", "referrals/r2")
	check("party other", q(storage.ReferralQuery{Party: "organizations/x"}))
	check("due", q(storage.ReferralQuery{Recipient: lw, DueBefore: t0.Add(time.Hour + 30*time.Second)}), "referrals/r1")

	// Accepting r1 moves it between inbox states and out of the due lists.
	r1.State = accepted
	update(t, s, func(tx storage.WriteTx) error { return tx.UpdateReferral(r1) })
	check("inbox requested after accept", q(storage.ReferralQuery{Recipient: lw, State: requested}), "referrals/r2")
	check("inbox accepted", q(storage.ReferralQuery{Recipient: lw, State: accepted}), "referrals/r1")
	check("due after accept", q(storage.ReferralQuery{Recipient: lw, DueBefore: t0.Add(2 * time.Hour)}), "referrals/r2")
	view(t, s, func(tx storage.ReadTx) error {
		due, _ := tx.DueReferrals(t0.Add(2*time.Hour), 10)
		check("due queue", fmt.Sprint(names(due)), "referrals/r2")
		unanswered, _ := tx.UnansweredReferrals(t0.Add(2*time.Hour), 10)
		check("unanswered", fmt.Sprint(names(unanswered)), "referrals/r2")
		if n, err := tx.OpenReferralsFor("9434765919", r1.RecipientService); err != nil || fmt.Sprint(n) != "[referrals/r1]" {
			t.Errorf("open referrals for person = %q, %v", n, err)
		}
		open, _ := tx.OpenReferralsByConsent("consents/c1")
		check("open by consent", fmt.Sprint(open), "referrals/r1", "referrals/r2")
		return nil
	})
	update(t, s, func(tx storage.WriteTx) error { return tx.MarkOverdueNotified("referrals/r2") })
	// Closing r1 clears the open indexes.
	r1.State = pb.ReferralState_REFERRAL_STATE_CANCELLED
	update(t, s, func(tx storage.WriteTx) error { return tx.UpdateReferral(r1) })
	view(t, s, func(tx storage.ReadTx) error {
		if n, err := tx.OpenReferralsFor("9434765919", r1.RecipientService); err != nil || len(n) != 0 {
			t.Errorf("closed referral still open: %v, %v", n, err)
		}
		open, _ := tx.OpenReferralsByConsent("consents/c1")
		check("open by consent after cancel", fmt.Sprint(open), "referrals/r2")
		due, _ := tx.DueReferrals(t0.Add(2*time.Hour), 10)
		check("due queue after notify", fmt.Sprint(names(due)))
		unanswered, _ := tx.UnansweredReferrals(t0.Add(2*time.Hour), 10)
		check("unanswered after notify", fmt.Sprint(names(unanswered)), "referrals/r2")
		unanswered, _ = tx.UnansweredReferrals(t0, 10)
		check("unanswered before the deadline", fmt.Sprint(names(unanswered)))
		return nil
	})
	// Onward referral: listed under its parent.
	r3 := referral("r3", lw, "organizations/vcse", t0.Add(2*time.Minute))
	r3.ParentReferral = "referrals/r2"
	update(t, s, func(tx storage.WriteTx) error { return tx.CreateReferral(r3, []string{lw, "organizations/vcse", gp}) })
	check("children", q(storage.ReferralQuery{Parent: "referrals/r2"}), "referrals/r3")
	check("party gp sees onward", q(storage.ReferralQuery{Party: gp}), "referrals/r1", "referrals/r2", "referrals/r3")
	// Party bounds the query whatever the other fields name.
	x := "organizations/x"
	check("party x, recipient lw", q(storage.ReferralQuery{Party: x, Recipient: lw}))
	check("party x, referrer gp", q(storage.ReferralQuery{Party: x, Referrer: gp}))
	check("party x, parent r2", q(storage.ReferralQuery{Party: x, Parent: "referrals/r2"}))
	check("party vcse, recipient vcse", q(storage.ReferralQuery{Party: "organizations/vcse", Recipient: "organizations/vcse"}), "referrals/r3")
	check("party gp, referrer lw", q(storage.ReferralQuery{Party: gp, Referrer: lw}), "referrals/r3")
}

// testMonitoringFigures checks the counts that /metrics reads: referrals by
// state follow every change, overdue counts REQUESTED past reply_by, and
// capacity lists every service's.
func testMonitoringFigures(t *testing.T, open Opener) {
	s := newStore(t, open)
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	gp, lw := "organizations/gp", "organizations/lw"
	r1, r2, r3 := referral("r1", gp, lw, t0), referral("r2", gp, lw, t0.Add(time.Minute)), referral("r3", gp, lw, t0.Add(3*time.Hour))
	r2.Person.NhsNumber, r3.Person.NhsNumber = "4010232137", "9999999999"
	update(t, s, func(tx storage.WriteTx) error {
		for _, r := range []*pb.Referral{r1, r2, r3} {
			if err := tx.CreateReferral(r, []string{gp, lw}); err != nil {
				return err
			}
		}
		for _, svc := range []string{"organizations/b/services/y", "organizations/a/services/x"} {
			if err := tx.PutCapacity(&pb.Capacity{Name: svc + "/capacity", Status: pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING}); err != nil {
				return err
			}
		}
		return nil
	})
	r1.State = pb.ReferralState_REFERRAL_STATE_ACCEPTED
	update(t, s, func(tx storage.WriteTx) error { return tx.UpdateReferral(r1) })
	r1.State = pb.ReferralState_REFERRAL_STATE_IN_PROGRESS
	r1.StateReason = &pb.StateReason{Text: "moved on"} // a change that is not a state change counts once
	update(t, s, func(tx storage.WriteTx) error { return tx.UpdateReferral(r1) })
	update(t, s, func(tx storage.WriteTx) error { return tx.UpdateReferral(r1) })
	view(t, s, func(tx storage.ReadTx) error {
		states, err := tx.ReferralStates()
		if err != nil {
			return err
		}
		want := map[pb.ReferralState]int64{pb.ReferralState_REFERRAL_STATE_REQUESTED: 2, pb.ReferralState_REFERRAL_STATE_IN_PROGRESS: 1, pb.ReferralState_REFERRAL_STATE_ACCEPTED: 0}
		if fmt.Sprint(states) != fmt.Sprint(want) {
			t.Errorf("ReferralStates = %v, want %v", states, want)
		}
		// r1 was answered; r2 is past its deadline at t0+2h; r3 is not yet.
		for at, want := range map[time.Duration]int{0: 0, 2 * time.Hour: 1, 5 * time.Hour: 2} {
			if n, err := tx.CountUnanswered(t0.Add(at)); err != nil || n != want {
				t.Errorf("CountUnanswered(t0+%v) = %d, %v; want %d", at, n, err, want)
			}
		}
		p, err := tx.ListCapacity("", 1)
		if err != nil || len(p.Items) != 1 || p.Items[0].Name != "organizations/a/services/x/capacity" || p.Next == "" {
			t.Fatalf("ListCapacity first page = %v, %v", p, err)
		}
		p, err = tx.ListCapacity(p.Next, 10)
		if err != nil || len(p.Items) != 1 || p.Items[0].Name != "organizations/b/services/y/capacity" || p.Next != "" {
			t.Errorf("ListCapacity second page = %v, %v", p, err)
		}
		return nil
	})
}

func testReferralPagination(t *testing.T, open Opener) {
	s := newStore(t, open)
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	// Five to a transaction: an engine bounds how much one writes (etcd:
	// 128 keys).
	for from := 0; from < 25; from += 5 {
		update(t, s, func(tx storage.WriteTx) error {
			for i := from; i < from+5; i++ {
				r := referral(fmt.Sprintf("r%03d", i), "organizations/gp", "organizations/lw", t0.Add(time.Duration(i)*time.Second))
				if err := tx.CreateReferral(r, []string{"organizations/gp", "organizations/lw"}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	update(t, s, func(tx storage.WriteTx) error {
		return nil
	})
	var all []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		var p storage.Page[*pb.Referral]
		view(t, s, func(tx storage.ReadTx) error {
			var err error
			p, err = tx.ListReferrals(storage.ReferralQuery{Party: "organizations/lw"}, after, 10, nil)
			return err
		})
		all = append(all, names(p.Items)...)
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	if len(all) != 25 || all[0] != "referrals/r000" || all[24] != "referrals/r024" {
		t.Fatalf("paged through %d: %v", len(all), all)
	}
}

func testConsents(t *testing.T, open Opener) {
	s := newStore(t, open)
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	update(t, s, func(tx storage.WriteTx) error {
		for i, nhs := range []string{"9434765919", "4010232137", "9434765919"} {
			c := &pb.Consent{Name: fmt.Sprintf("consents/c%d", i), NhsNumber: nhs, CreateTime: timestamppb.New(t0.Add(time.Duration(i) * time.Minute))}
			if err := tx.CreateConsent(c); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx storage.ReadTx) error {
		p, err := tx.ListConsents("9434765919", "", 10, nil)
		if err != nil || len(p.Items) != 2 || p.Items[0].Name != "consents/c0" || p.Items[1].Name != "consents/c2" {
			t.Errorf("consents of person = %v, %v", p.Items, err)
		}
		// A consent keep refuses is not counted against the page.
		p, err = tx.ListConsents("9434765919", "", 1, func(c *pb.Consent) bool { return c.Name != "consents/c0" })
		if err != nil || len(p.Items) != 1 || p.Items[0].Name != "consents/c2" || p.Next != "" {
			t.Errorf("consents of person kept = %v, next %q, %v", p.Items, p.Next, err)
		}
		return nil
	})
}

func testFeedback(t *testing.T, open Opener) {
	s := newStore(t, open)
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	update(t, s, func(tx storage.WriteTx) error {
		for i := 0; i < 3; i++ {
			f := &pb.Feedback{Name: fmt.Sprintf("referrals/r1/feedback/f%d", 2-i), CreateTime: timestamppb.New(t0.Add(time.Duration(i) * time.Second))}
			if err := tx.CreateFeedback(f); err != nil {
				return err
			}
		}
		return tx.CreateFeedback(&pb.Feedback{Name: "referrals/r2/feedback/x", CreateTime: timestamppb.New(t0)})
	})
	view(t, s, func(tx storage.ReadTx) error {
		p, _ := tx.ListFeedback("referrals/r1", "", 10, nil)
		if len(p.Items) != 3 || p.Items[0].Name != "referrals/r1/feedback/f2" {
			t.Errorf("feedback not in time order: %v", p.Items)
		}
		p, _ = tx.ListFeedback("referrals/r1", "", 10, func(f *pb.Feedback) bool { return f.Name != "referrals/r1/feedback/f1" })
		if len(p.Items) != 2 {
			t.Errorf("keep did not filter: %v", p.Items)
		}
		return nil
	})
}

func testKeysIdempotency(t *testing.T, open Opener) {
	s := newStore(t, open)
	k := &storage.APIKey{Name: "organizations/gp/apiKeys/k1", Organization: "organizations/gp", Hash: []byte{1, 2}, CreateTime: time.Unix(100, 0).UTC()}
	update(t, s, func(tx storage.WriteTx) error {
		if err := tx.CreateAPIKey(k); err != nil {
			return err
		}
		return tx.PutIdempotency("organizations/gp", "req-1", &storage.Idempotency{Method: "M", RequestHash: []byte{9}, Response: []byte{7}})
	})
	view(t, s, func(tx storage.ReadTx) error {
		got, err := tx.GetAPIKey(k.Name)
		if err != nil || string(got.Hash) != string(k.Hash) || !got.CreateTime.Equal(k.CreateTime) {
			t.Errorf("api key = %+v, %v", got, err)
		}
		p, _ := tx.ListAPIKeys("organizations/gp", "", 10)
		if len(p.Items) != 1 {
			t.Errorf("keys = %v", p.Items)
		}
		rec, err := tx.GetIdempotency("organizations/gp", "req-1")
		if err != nil || rec.Method != "M" || string(rec.Response) != "\x07" {
			t.Errorf("idempotency = %+v, %v", rec, err)
		}
		// Request ids are per organisation.
		if _, err := tx.GetIdempotency("organizations/lw", "req-1"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("another organisation's request id found: %v", err)
		}
		return nil
	})
}

// testExpiredAnswers: the retention sweep's walk of the stored answers
// reads no more than it is told to at a time, finds those made before the
// cutoff (a record without a time among them), and deletes only those
// still expired when the write runs.
func testExpiredAnswers(t *testing.T, open Opener) {
	s := newStore(t, open)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	put := func(id string, at time.Time) func(storage.WriteTx) error {
		return func(tx storage.WriteTx) error {
			return tx.PutIdempotency("organizations/gp", id, &storage.Idempotency{Method: "M", RequestHash: []byte{1}, Response: []byte{2}, CreateTime: at})
		}
	}
	for i := range 10 {
		update(t, s, put(fmt.Sprint("req-", i), t0.Add(time.Duration(i)*time.Hour)))
	}
	update(t, s, put("req-untimed", time.Time{}))
	cutoff := t0.Add(5 * time.Hour) // req-0 to req-4 and req-untimed
	var expired []string
	reads := 0
	for from := ""; ; {
		reads++
		view(t, s, func(tx storage.ReadTx) error {
			found, next, err := tx.ExpiredIdempotency(cutoff, from, 3)
			expired, from = append(expired, found...), next
			return err
		})
		if from == "" {
			break
		}
	}
	if reads != 4 || len(expired) != 6 { // 11 answers, 3 a read
		t.Fatalf("%d expired in %d reads, want 6 in 4", len(expired), reads)
	}
	update(t, s, put("req-0", t0.Add(100*time.Hour))) // stored again since
	update(t, s, func(tx storage.WriteTx) error {
		n, err := tx.DeleteExpiredIdempotency(expired, cutoff)
		if n != 5 {
			t.Errorf("DeleteExpiredIdempotency deleted %d, want 5 (req-0 is no longer expired)", n)
		}
		return err
	})
	has := func(ids map[string]bool) {
		t.Helper()
		view(t, s, func(tx storage.ReadTx) error {
			for id, want := range ids {
				if _, err := tx.GetIdempotency("organizations/gp", id); (err == nil) != want {
					t.Errorf("%s kept = %v, want %v", id, err == nil, want)
				}
			}
			return nil
		})
	}
	has(map[string]bool{"req-0": true, "req-1": false, "req-4": false, "req-untimed": false, "req-5": true, "req-9": true})
	n, err := storage.DeleteExpiredAnswers(ctx, s, t0.Add(8*time.Hour), 2)
	if err != nil || n != 3 {
		t.Errorf("DeleteExpiredAnswers = %d, %v; want 3 (req-5 to req-7)", n, err)
	}
	has(map[string]bool{"req-0": true, "req-5": false, "req-7": false, "req-8": true, "req-9": true})
}

// testAuthVersion: AuthVersion moves with every acknowledged change of an
// API key or an organisation, and with nothing else, so that what callers
// keep from authentication is dropped exactly when it may be wrong.
func testAuthVersion(t *testing.T, open Opener) {
	s := newStore(t, open)
	key := func(revoked bool) *storage.APIKey {
		k := &storage.APIKey{Name: "organizations/gp/apiKeys/k1", Organization: "organizations/gp", Hash: []byte{1}, CreateTime: time.Unix(100, 0).UTC()}
		if revoked {
			k.RevokeTime = time.Unix(200, 0).UTC()
		}
		return k
	}
	failed := errors.New("taken back")
	for _, tc := range []struct {
		name  string
		fn    func(storage.WriteTx) error
		moves bool
	}{
		{"create an organisation", func(tx storage.WriteTx) error {
			return tx.CreateOrganization(&pb.Organization{Name: "organizations/gp", DisplayName: "GP"})
		}, true},
		{"create a key", func(tx storage.WriteTx) error { return tx.CreateAPIKey(key(false)) }, true},
		{"revoke a key", func(tx storage.WriteTx) error { return tx.UpdateAPIKey(key(true)) }, true},
		{"update an organisation", func(tx storage.WriteTx) error {
			return tx.UpdateOrganization(&pb.Organization{Name: "organizations/gp", DisplayName: "GP surgery"})
		}, true},
		{"a write elsewhere", func(tx storage.WriteTx) error {
			return tx.PutIdempotency("organizations/gp", "req-1", &storage.Idempotency{Method: "M", RequestHash: []byte{9}})
		}, false},
		{"a read only", func(tx storage.WriteTx) error { _, err := tx.GetAPIKey(key(false).Name); return err }, false},
		{"a key change taken back", func(tx storage.WriteTx) error {
			if err := tx.UpdateAPIKey(key(false)); err != nil {
				return err
			}
			return failed
		}, false},
	} {
		before := s.AuthVersion()
		if err := s.Update(ctx, tc.fn); err != nil && !errors.Is(err, failed) {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if moved := s.AuthVersion() != before; moved != tc.moves {
			t.Errorf("%s: AuthVersion moved %v, want %v", tc.name, moved, tc.moves)
		}
	}
}

func testEvents(t *testing.T, open Opener) {
	s := newStore(t, open)
	update(t, s, func(tx storage.WriteTx) error {
		for i, aud := range [][]string{{"organizations/a"}, {"organizations/b"}, nil, {"organizations/a", "organizations/b"}} {
			e := &storage.Event{Event: &pb.Event{Resource: fmt.Sprint(i)}, Audience: aud, Public: aud == nil}
			if err := tx.AppendEvent(e); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx storage.ReadTx) error {
		seqs := func(org string, after int64, limit int) string {
			es, last, err := tx.ListEvents(org, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			var out []int64
			for _, e := range es {
				out = append(out, e.Sequence)
			}
			return fmt.Sprint(out, last)
		}
		for _, c := range []struct {
			org          string
			after, limit int
			want         string
		}{
			{"", 0, 10, "[1 2 3 4] 4"},
			{"organizations/a", 0, 10, "[1 3 4] 4"},
			{"organizations/b", 0, 10, "[2 3 4] 4"},
			{"organizations/b", 2, 10, "[3 4] 4"},
			{"organizations/a", 0, 2, "[1 3] 3"},
			{"organizations/c", 0, 10, "[3] 4"},
			{"organizations/c", 4, 10, "[] 4"},
		} {
			if got := seqs(c.org, int64(c.after), c.limit); got != c.want {
				t.Errorf("events for %q after %d limit %d = %s, want %s", c.org, c.after, c.limit, got, c.want)
			}
		}
		return nil
	})
}

func testWaitEvents(t *testing.T, open Opener) {
	s := newStore(t, open)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := s.WaitEvents(short, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait on empty feed = %v, want deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.WaitEvents(ctx, 0) }()
	time.Sleep(20 * time.Millisecond)
	update(t, s, func(tx storage.WriteTx) error {
		err := tx.AppendEvent(&storage.Event{Event: &pb.Event{}, Public: true})
		return err
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitEvents did not wake on a new event")
	}
}

func testRollback(t *testing.T, open Opener) {
	s := newStore(t, open)
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx storage.WriteTx) error {
		if err := tx.CreateOrganization(&pb.Organization{Name: "organizations/half"}); err != nil {
			return err
		}
		if err := tx.AppendEvent(&storage.Event{Event: &pb.Event{}, Public: true}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update = %v, want the function's error", err)
	}
	view(t, s, func(tx storage.ReadTx) error {
		if _, err := tx.GetOrganization("organizations/half"); !errors.Is(err, storage.ErrNotFound) {
			t.Error("a failed update left its write behind")
		}
		if seq, _ := tx.LastSequence(); seq != 0 {
			t.Errorf("a failed update used sequence %d", seq)
		}
		return nil
	})
}

func testConcurrent(t *testing.T, open Opener) {
	s := newStore(t, open)
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- s.Update(ctx, func(tx storage.WriteTx) error {
				if i%8 == 7 { // some fail; their batch-mates must still commit
					return errors.New("planned failure")
				}
				if err := tx.CreateOrganization(&pb.Organization{Name: fmt.Sprintf("organizations/o%03d", i)}); err != nil {
					return err
				}
				err := tx.AppendEvent(&storage.Event{Event: &pb.Event{}, Public: true})
				return err
			})
		}(i)
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed != n/8 {
		t.Errorf("%d updates failed, want %d", failed, n/8)
	}
	view(t, s, func(tx storage.ReadTx) error {
		p, _ := tx.ListOrganizations("", 1000)
		seq, _ := tx.LastSequence()
		if len(p.Items) != n-n/8 || seq != int64(n-n/8) {
			t.Errorf("%d organisations and last sequence %d, want %d", len(p.Items), seq, n-n/8)
		}
		return nil
	})
}

func testReopen(t *testing.T, open Opener) {
	dir := t.TempDir()
	s := open(t, dir)
	update(t, s, func(tx storage.WriteTx) error {
		if err := tx.CreateOrganization(&pb.Organization{Name: "organizations/kept"}); err != nil {
			return err
		}
		err := tx.AppendEvent(&storage.Event{Event: &pb.Event{}, Public: true})
		return err
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(storage.WriteTx) error { return nil }); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("update after close = %v, want ErrClosed", err)
	}
	s = open(t, dir)
	defer s.Close()
	view(t, s, func(tx storage.ReadTx) error {
		if _, err := tx.GetOrganization("organizations/kept"); err != nil {
			t.Error(err)
		}
		return nil
	})
	// The sequence continues where it stopped, and waiters see it.
	update(t, s, func(tx storage.WriteTx) error {
		return tx.AppendEvent(&storage.Event{Event: &pb.Event{}, Public: true})
	})
	view(t, s, func(tx storage.ReadTx) error {
		if seq, _ := tx.LastSequence(); seq != 2 {
			t.Errorf("sequence after reopen = %d, want 2", seq)
		}
		return nil
	})
	if err := s.WaitEvents(ctx, 1); err != nil {
		t.Error(err)
	}
}

func testAudit(t *testing.T, open Opener) {
	s := newStore(t, open)
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	entries := []*pb.AuditEvent{
		{Organization: "organizations/gp", Method: "CreateReferral", Resource: "referrals/r1"},
		{Organization: "organizations/lw", Method: "GetReferral", Resource: "referrals/r1"},
		{Organization: "organizations/gp", Method: "ListReferrals", Resource: "organizations/gp", Shown: []string{"referrals/r1", "referrals/r2"}},
		{Organization: "organizations/lw", Method: "AcceptReferral", Resource: "referrals/r2"},
		{Organization: "organizations/gp", Method: "GetReferral", Resource: "referrals/r2"},
	}
	// In two transactions: a log's numbers go on across commits.
	for _, part := range [][]*pb.AuditEvent{entries[:3], entries[3:]} {
		update(t, s, func(tx storage.WriteTx) error {
			for _, e := range part {
				i := slices.Index(entries, e)
				e.EventTime = timestamppb.New(t0.Add(time.Duration(i) * time.Minute))
				e.Sequence = 99 // the store numbers it
				if err := tx.AppendAudit(proto.Clone(e).(*pb.AuditEvent)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	view(t, s, func(tx storage.ReadTx) error {
		if n, err := tx.LastAuditSequence(); n != 5 || err != nil {
			t.Errorf("LastAuditSequence = %d, %v; want 5", n, err)
		}
		list := func(q storage.AuditQuery, limit int) (out []string) {
			for after := ""; ; {
				p, err := tx.ListAudit(q, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range p.Items {
					out = append(out, fmt.Sprintf("%d:%s", e.Sequence, e.Method))
				}
				if after = p.Next; after == "" {
					return out
				}
			}
		}
		for _, c := range []struct {
			q    storage.AuditQuery
			want string
		}{
			{storage.AuditQuery{}, "[1:CreateReferral 2:GetReferral 3:ListReferrals 4:AcceptReferral 5:GetReferral]"},
			{storage.AuditQuery{Organization: "organizations/gp"}, "[1:CreateReferral 3:ListReferrals 5:GetReferral]"},
			// A resource's entries include those that showed it.
			{storage.AuditQuery{Resource: "referrals/r2"}, "[3:ListReferrals 4:AcceptReferral 5:GetReferral]"},
			{storage.AuditQuery{Start: t0.Add(time.Minute), End: t0.Add(3 * time.Minute)}, "[2:GetReferral 3:ListReferrals]"},
			{storage.AuditQuery{Organization: "organizations/lw", Start: t0.Add(2 * time.Minute)}, "[4:AcceptReferral]"},
		} {
			for _, limit := range []int{1, 2, 10} {
				if got := fmt.Sprint(list(c.q, limit)); got != c.want {
					t.Errorf("ListAudit(%+v) by %d = %s, want %s", c.q, limit, got, c.want)
				}
			}
		}
		return nil
	})
}

func testPersonAndRetention(t *testing.T, open Opener) {
	s := newStore(t, open)
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	closedAt := func(r *pb.Referral, st pb.ReferralState, at time.Time) *pb.Referral {
		r.State, r.StateTime = st, timestamppb.New(at)
		return r
	}
	update(t, s, func(tx storage.WriteTx) error {
		for _, r := range []*pb.Referral{
			referral("a", "organizations/gp", "organizations/lw", t0),
			closedAt(referral("b", "organizations/gp", "organizations/lw", t0.Add(time.Minute)), pb.ReferralState_REFERRAL_STATE_COMPLETED, t0.Add(2*time.Hour)),
			closedAt(referral("c", "organizations/gp", "organizations/lw", t0.Add(2*time.Minute)), pb.ReferralState_REFERRAL_STATE_REJECTED, t0.Add(time.Hour)),
		} {
			if err := tx.CreateReferral(r, []string{r.Referrer, r.Recipient}); err != nil {
				return err
			}
		}
		other := referral("d", "organizations/gp", "organizations/lw", t0)
		other.Person.NhsNumber = "4010232137"
		return tx.CreateReferral(other, []string{other.Referrer})
	})
	view(t, s, func(tx storage.ReadTx) error {
		if got, err := tx.ReferralsOfPerson("9434765919"); fmt.Sprint(got) != "[referrals/a referrals/b referrals/c]" || err != nil {
			t.Errorf("ReferralsOfPerson = %v, %v", got, err)
		}
		closed, err := tx.ClosedReferralsBefore(t0.Add(3*time.Hour), 10)
		if fmt.Sprint(names(closed)) != "[referrals/c referrals/b]" || err != nil {
			t.Errorf("ClosedReferralsBefore = %v, %v; want oldest state change first", names(closed), err)
		}
		if closed, _ := tx.ClosedReferralsBefore(t0.Add(90*time.Minute), 10); fmt.Sprint(names(closed)) != "[referrals/c]" {
			t.Errorf("ClosedReferralsBefore an earlier time = %v", names(closed))
		}
		return nil
	})
	// Clearing the person (as erasure does) takes the referral out of both.
	update(t, s, func(tx storage.WriteTx) error {
		r, err := tx.GetReferral("referrals/b")
		if err != nil {
			return err
		}
		r.Person, r.EraseTime = &pb.Person{}, timestamppb.New(t0.Add(3*time.Hour))
		return tx.UpdateReferral(r)
	})
	view(t, s, func(tx storage.ReadTx) error {
		if got, _ := tx.ReferralsOfPerson("9434765919"); fmt.Sprint(got) != "[referrals/a referrals/c]" {
			t.Errorf("ReferralsOfPerson after clearing b = %v", got)
		}
		if closed, _ := tx.ClosedReferralsBefore(t0.Add(3*time.Hour), 10); fmt.Sprint(names(closed)) != "[referrals/c]" {
			t.Errorf("ClosedReferralsBefore after clearing b = %v", names(closed))
		}
		return nil
	})
}

func testUpdates(t *testing.T, open Opener) {
	s := newStore(t, open)
	t0 := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	update(t, s, func(tx storage.WriteTx) error {
		return errors.Join(
			tx.CreateService(&pb.Service{Name: "organizations/a/services/x", DisplayName: "X"}),
			tx.PutCapacity(&pb.Capacity{Name: "organizations/a/services/x/capacity", MaxActiveReferrals: 4}),
			tx.CreateConsent(&pb.Consent{Name: "consents/c", NhsNumber: "9434765919", CreateTime: timestamppb.New(t0)}),
			tx.CreateFeedback(&pb.Feedback{Name: "referrals/r/feedback/f", CreateTime: timestamppb.New(t0),
				Content: &pb.Feedback_Note{Note: &pb.Note{Text: "Ada came along"}}}))
	})
	update(t, s, func(tx storage.WriteTx) error {
		c, err := tx.GetConsent("consents/c")
		if err != nil {
			return err
		}
		c.NhsNumber = "" // as erasure leaves it
		if err := tx.UpdateConsent(c); err != nil {
			return err
		}
		if err := tx.UpdateConsent(&pb.Consent{Name: "consents/none"}); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("UpdateConsent of a consent never made = %v", err)
		}
		err = tx.UpdateFeedback(&pb.Feedback{Name: "referrals/r/feedback/f", CreateTime: timestamppb.New(t0),
			Content: &pb.Feedback_Note{Note: &pb.Note{}}})
		if err != nil {
			return err
		}
		if err := tx.UpdateFeedback(&pb.Feedback{Name: "referrals/r/feedback/none", CreateTime: timestamppb.New(t0)}); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("UpdateFeedback of feedback never made = %v", err)
		}
		return nil
	})
	view(t, s, func(tx storage.ReadTx) error {
		if svc, err := tx.GetService("organizations/a/services/x"); err != nil || svc.DisplayName != "X" {
			t.Errorf("GetService = %v, %v", svc, err)
		}
		if _, err := tx.GetService("organizations/a/services/none"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("GetService of none = %v", err)
		}
		if c, err := tx.GetCapacity("organizations/a/services/x"); err != nil || c.MaxActiveReferrals != 4 {
			t.Errorf("GetCapacity = %v, %v", c, err)
		}
		if c, err := tx.GetConsent("consents/c"); err != nil || c.NhsNumber != "" {
			t.Errorf("GetConsent after clearing = %v, %v", c, err)
		}
		if p, _ := tx.ListConsents("9434765919", "", 10, nil); len(p.Items) != 0 {
			t.Errorf("a cleared consent is still listed under the person: %v", p.Items)
		}
		if p, _ := tx.ListFeedback("referrals/r", "", 10, nil); len(p.Items) != 1 || p.Items[0].GetNote().GetText() != "" {
			t.Errorf("feedback after UpdateFeedback = %v", p.Items)
		}
		if _, err := tx.GetReferral("referrals/none"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("GetReferral of none = %v", err)
		}
		return nil
	})
}

func testDeleteIdempotency(t *testing.T, open Opener) {
	s := newStore(t, open)
	update(t, s, func(tx storage.WriteTx) error {
		for i, body := range []string{"holds 9434765919", "holds nobody", "holds referrals/r1"} {
			if err := tx.PutIdempotency("organizations/gp", fmt.Sprint("req", i), &storage.Idempotency{Method: "M", Response: []byte(body)}); err != nil {
				return err
			}
		}
		return nil
	})
	update(t, s, func(tx storage.WriteTx) error {
		n, err := tx.DeleteIdempotency(func(rec *storage.Idempotency) bool {
			return strings.Contains(string(rec.Response), "9434765919") || strings.Contains(string(rec.Response), "referrals/r1")
		})
		if n != 2 || err != nil {
			t.Errorf("DeleteIdempotency = %d, %v; want 2", n, err)
		}
		return err
	})
	view(t, s, func(tx storage.ReadTx) error {
		for i, want := range []bool{false, true, false} {
			_, err := tx.GetIdempotency("organizations/gp", fmt.Sprint("req", i))
			if (err == nil) != want {
				t.Errorf("stored answer %d after DeleteIdempotency: %v", i, err)
			}
		}
		return nil
	})
}

func testBackup(t *testing.T, open Opener) {
	s := newStore(t, open)
	update(t, s, func(tx storage.WriteTx) error {
		return tx.CreateOrganization(&pb.Organization{Name: "organizations/kept", DisplayName: "Kept"})
	})
	var buf bytes.Buffer
	if err := s.Backup(ctx, func(int64) (io.Writer, error) { return &buf, nil }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes(), []byte("organizations/kept")) {
		t.Errorf("a backup of %d bytes lacks the organisation", buf.Len())
	}
}
