package api_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage"
)

// clock is a settable time source for the exchange under test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().UTC().Truncate(time.Second)} }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestConsentRules(t *testing.T) {
	clk := newClock()
	x := startWith(t, api.Options{Now: clk.now})
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("other-practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	refs := pb.NewReferralServiceClient(x.Conn)
	cons := pb.NewConsentServiceClient(x.Conn)
	other := exchangetest.NHSNumber(424242)

	for _, c := range []struct {
		name    string
		consent func() string
	}{
		{"missing", func() string { return "consents/aaaaaaaaaaaaaaaa" }},
		{"not a consent name", func() string { return "" }},
		{"another person", func() string { return x.ConsentFor("practice", other, nil).Name }},
		{"recorded by another organisation", func() string { return x.ConsentFor("other-practice", adaNHS, nil).Name }},
		{"wrong recipient", func() string {
			return x.ConsentFor("practice", adaNHS, func(c *pb.Consent) {
				c.RecipientScope = pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_NAMED_ORGANIZATIONS
				c.Recipients = []string{"organizations/other-practice"}
			}).Name
		}},
		{"not yet valid", func() string {
			return x.ConsentFor("practice", adaNHS, func(c *pb.Consent) { c.ValidFrom = timestamppb.New(clk.now().Add(time.Hour)) }).Name
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := x.Refer("practice", "r-"+strings.ReplaceAll(c.name, " ", "-"), walks, adaNHS, c.consent())
			if c.name == "not a consent name" {
				wantErr(t, err, codes.InvalidArgument, "FIELD_INVALID")
				return
			}
			wantErr(t, err, codes.FailedPrecondition, "CONSENT_REQUIRED")
		})
	}
	// Nothing was written by the refusals.
	l, err := refs.ListReferrals(x.As("practice"), &pb.ListReferralsRequest{})
	if err != nil || len(l.Referrals) != 0 {
		t.Fatalf("refused referrals were stored: %v, %v", l, err)
	}

	// Expiry is honoured at the moment of each read.
	c := x.ConsentFor("practice", adaNHS, func(c *pb.Consent) { c.ValidUntil = timestamppb.New(clk.now().Add(48 * time.Hour)) })
	r, err := x.Refer("practice", "expiring", walks, adaNHS, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	group := x.As("group")
	fb := pb.NewFeedbackServiceClient(x.Conn)
	if _, err := refs.AcceptReferral(group, &pb.AcceptReferralRequest{Name: r.Name}); err != nil {
		t.Fatal(err)
	}
	if _, err := fb.CreateFeedback(group, &pb.CreateFeedbackRequest{Parent: r.Name, Feedback: &pb.Feedback{
		Content: &pb.Feedback_Uptake{Uptake: &pb.Uptake{Status: pb.UptakeStatus_UPTAKE_STATUS_CONTACTED}}}}); err != nil {
		t.Fatal(err)
	}
	seen := func(ctx context.Context) (bool, int) {
		t.Helper()
		got, err := refs.GetReferral(ctx, &pb.GetReferralRequest{Name: r.Name})
		if err != nil {
			t.Fatal(err)
		}
		l, err := fb.ListFeedback(ctx, &pb.ListFeedbackRequest{Parent: r.Name})
		if err != nil {
			t.Fatal(err)
		}
		return got.Person != nil, len(l.Feedback)
	}
	if person, n := seen(group); !person || n != 1 {
		t.Fatalf("before expiry the group sees person %v, %d feedback", person, n)
	}
	if person, n := seen(x.As("practice")); !person || n != 1 {
		t.Fatalf("before expiry the practice sees person %v, %d feedback", person, n)
	}
	clk.advance(48 * time.Hour)
	if person, n := seen(group); person || n != 1 {
		t.Errorf("after expiry the group sees person %v, %d feedback (its own)", person, n)
	}
	if person, n := seen(x.As("practice")); !person || n != 0 {
		t.Errorf("after expiry the practice sees person %v (it referred), %d feedback (want none)", person, n)
	}
	got, err := cons.GetConsent(x.As("practice"), &pb.GetConsentRequest{Name: c.Name})
	if err != nil || got.State != pb.ConsentState_CONSENT_STATE_EXPIRED {
		t.Errorf("consent after expiry = %v, %v", got.GetState(), err)
	}
	_, err = x.Refer("practice", "after-expiry", x.Service("group", "choir", pb.Category_CATEGORY_ARTS_AND_CREATIVITY), adaNHS, c.Name)
	wantErr(t, err, codes.FailedPrecondition, "CONSENT_REQUIRED")
	_, err = cons.WithdrawConsent(x.As("practice"), &pb.WithdrawConsentRequest{Name: c.Name})
	wantErr(t, err, codes.FailedPrecondition, "CONSENT_NOT_ACTIVE")
}

// checkCounts compares a service's capacity counts with its referrals.
func (x *exchange) checkCounts(t *testing.T, step, service, org string) *pb.Capacity {
	t.Helper()
	c, err := pb.NewCapacityServiceClient(x.Conn).GetCapacity(x.As(org), &pb.GetCapacityRequest{Name: service + "/capacity"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := pb.NewReferralServiceClient(x.Conn).ListReferrals(x.As(org), &pb.ListReferralsRequest{
		Filter: `recipient = "` + service + `"`, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var active, waiting int32
	for _, r := range l.Referrals {
		switch r.State {
		case pb.ReferralState_REFERRAL_STATE_REQUESTED, pb.ReferralState_REFERRAL_STATE_ACCEPTED, pb.ReferralState_REFERRAL_STATE_IN_PROGRESS:
			active++
		case pb.ReferralState_REFERRAL_STATE_ON_HOLD:
			waiting++
		}
	}
	if c.ActiveReferrals != active || c.WaitlistedReferrals != waiting {
		t.Errorf("%s: capacity counts %d active, %d waitlisted; referrals %d active, %d waitlisted",
			step, c.ActiveReferrals, c.WaitlistedReferrals, active, waiting)
	}
	return c
}

func TestCapacityLifecycle(t *testing.T) {
	x := start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	x.Capacity(walks, "group", pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, 2)
	refs := pb.NewReferralServiceClient(x.Conn)
	group, gp := x.As("group"), x.As("practice")
	people := make([]string, 6)
	consents := make([]string, 6)
	for i := range people {
		people[i] = exchangetest.NHSNumber(1000 + 31*i)
		consents[i] = x.ConsentFor("practice", people[i], nil).Name
	}
	mustRefer := func(i int) *pb.Referral {
		t.Helper()
		r, err := x.Refer("practice", fmt.Sprint("p", i), walks, people[i], consents[i])
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	wantStatus := func(step string, st pb.CapacityStatus, auto bool) {
		t.Helper()
		c := x.checkCounts(t, step, walks, "group")
		if c.Status != st || c.StatusSetAutomatically != auto {
			t.Errorf("%s: status %v (automatic %v), want %v (%v)", step, c.Status, c.StatusSetAutomatically, st, auto)
		}
	}
	why := &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_OTHER, Text: "test"}

	a := mustRefer(0)
	wantStatus("one requested", pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, false)
	b := mustRefer(1)
	wantStatus("maximum reached", pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY, true)
	_, err := x.Refer("practice", "p2", walks, people[2], consents[2])
	wantErr(t, err, codes.FailedPrecondition, "SERVICE_AT_CAPACITY")
	for _, step := range []struct {
		name string
		do   func() error
		st   pb.CapacityStatus
		auto bool
	}{
		{"accept a", func() error {
			_, err := refs.AcceptReferral(group, &pb.AcceptReferralRequest{Name: a.Name})
			return err
		}, pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY, true},
		{"start a", func() error { _, err := refs.StartReferral(group, &pb.StartReferralRequest{Name: a.Name}); return err }, pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY, true},
		{"hold a: a place frees", func() error {
			_, err := refs.HoldReferral(group, &pb.HoldReferralRequest{Name: a.Name, Reason: why})
			return err
		}, pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, false},
		{"resume a: full again", func() error {
			_, err := refs.ResumeReferral(group, &pb.ResumeReferralRequest{Name: a.Name})
			return err
		}, pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY, true},
		{"reject b", func() error {
			_, err := refs.RejectReferral(group, &pb.RejectReferralRequest{Name: b.Name, Reason: why})
			return err
		}, pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, false},
		{"refer c", func() error { _, err := x.Refer("practice", "p2", walks, people[2], consents[2]); return err }, pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY, true},
		{"complete a", func() error {
			_, err := refs.CompleteReferral(group, &pb.CompleteReferralRequest{Name: a.Name})
			return err
		}, pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, false},
		{"pause", func() error {
			x.Capacity(walks, "group", pb.CapacityStatus_CAPACITY_STATUS_PAUSED, 2)
			return nil
		}, pb.CapacityStatus_CAPACITY_STATUS_PAUSED, false},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		wantStatus(step.name, step.st, step.auto)
	}
	_, err = x.Refer("practice", "p3", walks, people[3], consents[3])
	wantErr(t, err, codes.FailedPrecondition, "SERVICE_AT_CAPACITY")

	// A waiting list takes referrals ON_HOLD; accepting one makes it active.
	x.Capacity(walks, "group", pb.CapacityStatus_CAPACITY_STATUS_WAITLIST, 0)
	d := mustRefer(3)
	if d.State != pb.ReferralState_REFERRAL_STATE_ON_HOLD || d.StateReason.GetCode() != pb.StateReasonCode_STATE_REASON_CODE_NO_CAPACITY {
		t.Fatalf("waitlisted referral = %v", d)
	}
	wantStatus("waitlisted", pb.CapacityStatus_CAPACITY_STATUS_WAITLIST, false)
	if _, err := refs.CancelReferral(gp, &pb.CancelReferralRequest{Name: d.Name, Reason: why}); err != nil {
		t.Fatal(err)
	}
	wantStatus("waitlisted one cancelled", pb.CapacityStatus_CAPACITY_STATUS_WAITLIST, false)
	e := mustRefer(4)
	if _, err := refs.AcceptReferral(group, &pb.AcceptReferralRequest{Name: e.Name}); err != nil {
		t.Fatal(err)
	}
	wantStatus("accepted from the waiting list", pb.CapacityStatus_CAPACITY_STATUS_WAITLIST, false)
	got, _ := refs.GetReferral(gp, &pb.GetReferralRequest{Name: e.Name})
	if got.State != pb.ReferralState_REFERRAL_STATE_ACCEPTED {
		t.Errorf("accepted from the waiting list: %v", got.State)
	}
}

func TestAlternativesOffered(t *testing.T) {
	x := start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	orgs := []string{"full-group", "alt-one", "alt-two", "alt-three", "alt-four", "paused-group", "far-group", "choir"}
	for _, o := range orgs {
		x.Org(o, pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	}
	svc := map[string]string{}
	for _, o := range orgs {
		cat := pb.Category_CATEGORY_PHYSICAL_ACTIVITY
		if o == "choir" {
			cat = pb.Category_CATEGORY_ARTS_AND_CREATIVITY
		}
		svc[o] = x.Service(o, "walks", cat)
	}
	// Ada lives in M14; far-group serves only LS1. Only the masked field changes.
	far, err := pb.NewDirectoryServiceClient(x.Conn).UpdateService(x.As("far-group"), &pb.UpdateServiceRequest{
		Service:    &pb.Service{Name: svc["far-group"], Eligibility: &pb.Eligibility{PostcodeDistricts: []string{"LS1"}}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"eligibility"}}})
	if err != nil {
		t.Fatal(err)
	}
	if far.DisplayName != "walks" || len(far.Categories) != 1 || far.DefaultReplyWithin.AsDuration() != 72*time.Hour || far.Eligibility.GetPostcodeDistricts()[0] != "LS1" {
		t.Errorf("after updating eligibility only: %v", far)
	}
	x.Capacity(svc["full-group"], "full-group", pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY, 0)
	x.Capacity(svc["paused-group"], "paused-group", pb.CapacityStatus_CAPACITY_STATUS_PAUSED, 0)
	c := x.ConsentFor("practice", adaNHS, nil)
	_, err = x.Refer("practice", "full", svc["full-group"], adaNHS, c.Name)
	wantErr(t, err, codes.FailedPrecondition, "SERVICE_AT_CAPACITY")
	st, _ := status.FromError(err)
	info := st.Details()[0].(*errdetails.ErrorInfo)
	alts := strings.Split(info.Metadata["alternative_services"], ",")
	if len(alts) != 3 || info.Metadata["capacity_status"] != "NO_CAPACITY" {
		t.Fatalf("alternatives = %v (%v)", alts, info.Metadata)
	}
	for _, a := range alts {
		if !strings.Contains(a, "/alt-") {
			t.Errorf("offered %s: not an accepting walking group near M14", a)
		}
	}
}

func TestOverdueAndAutoReject(t *testing.T) {
	clk := newClock()
	x := startWith(t, api.Options{Now: clk.now, AutoRejectAfter: 24 * time.Hour})
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY) // replies within 72h
	refs := pb.NewReferralServiceClient(x.Conn)
	c := x.ConsentFor("practice", adaNHS, nil)
	r, err := x.Refer("practice", "late", walks, adaNHS, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	if want := clk.now().Add(72 * time.Hour); !r.ReplyBy.AsTime().Equal(want) {
		t.Errorf("reply_by = %v, want the service default %v", r.ReplyBy.AsTime(), want)
	}
	other := exchangetest.NHSNumber(777)
	oc := x.ConsentFor("practice", other, nil)
	p := ada()
	p.NhsNumber = other
	given, err := refs.CreateReferral(x.As("practice"), &pb.CreateReferralRequest{RequestId: "given", Referral: &pb.Referral{
		RecipientService: walks, Person: p, Consent: oc.Name, Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
		Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING,
		ReplyBy: timestamppb.New(clk.now().Add(200 * time.Hour))}})
	if err != nil {
		t.Fatal(err)
	}
	overdue := func() []string {
		t.Helper()
		l, err := refs.ListReferrals(x.As("group"), &pb.ListReferralsRequest{Filter: `recipient = "organizations/group" AND overdue = true`})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range l.Referrals {
			if !r.Overdue {
				t.Errorf("%s listed as overdue but overdue = false", r.Name)
			}
			out = append(out, r.Name)
		}
		return out
	}
	sweep := func(wantNotified, wantRejected int) {
		t.Helper()
		n, rej, err := x.Srv.SweepOverdue(context.Background())
		if err != nil || n != wantNotified || rej != wantRejected {
			t.Fatalf("sweep = %d notified, %d rejected, %v; want %d, %d", n, rej, err, wantNotified, wantRejected)
		}
	}
	overdueEvents := func() int {
		l, err := pb.NewEventServiceClient(x.Conn).ListEvents(x.As("practice"), &pb.ListEventsRequest{PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range l.Events {
			if e.Type == pb.EventType_EVENT_TYPE_REFERRAL_OVERDUE && e.Resource == r.Name {
				n++
			}
		}
		return n
	}
	sweep(0, 0)
	if got := overdue(); len(got) != 0 {
		t.Fatalf("overdue before the deadline: %v", got)
	}
	clk.advance(73 * time.Hour)
	if got := overdue(); len(got) != 1 || got[0] != r.Name {
		t.Fatalf("overdue = %v, want %s", got, r.Name)
	}
	sweep(1, 0)
	sweep(0, 0)
	if n := overdueEvents(); n != 1 {
		t.Errorf("%d overdue events, want exactly 1", n)
	}
	clk.advance(24 * time.Hour) // 97h: past the deadline plus the grace period
	sweep(0, 1)
	got, err := refs.GetReferral(x.As("practice"), &pb.GetReferralRequest{Name: r.Name})
	if err != nil || got.State != pb.ReferralState_REFERRAL_STATE_REJECTED || got.StateReason.GetCode() != pb.StateReasonCode_STATE_REASON_CODE_NO_RESPONSE {
		t.Fatalf("after the grace period = %v, %v", got, err)
	}
	if g, _ := refs.GetReferral(x.As("practice"), &pb.GetReferralRequest{Name: given.Name}); g.State != pb.ReferralState_REFERRAL_STATE_REQUESTED {
		t.Errorf("a referral with a later deadline moved: %v", g.State)
	}
	x.checkCounts(t, "after auto-reject", walks, "group")
	// The referrer can now redirect, or send again to the same service.
	if _, err := x.Refer("practice", "again", walks, adaNHS, c.Name); err != nil {
		t.Errorf("referring again after NO_RESPONSE: %v", err)
	}

	// Off by default: an exchange without the option never rejects.
	clk2 := newClock()
	y := startWith(t, api.Options{Now: clk2.now})
	y.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	y.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks2 := y.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	if _, err := y.Refer("practice", "late", walks2, adaNHS, y.ConsentFor("practice", adaNHS, nil).Name); err != nil {
		t.Fatal(err)
	}
	clk2.advance(365 * 24 * time.Hour)
	if n, rej, err := y.Srv.SweepOverdue(context.Background()); n != 1 || rej != 0 || err != nil {
		t.Errorf("default sweep = %d, %d, %v; want 1 notified, none rejected", n, rej, err)
	}
}

func TestIdempotencyAcrossRestart(t *testing.T) {
	x := start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	c := x.ConsentFor("practice", adaNHS, nil)
	first, err := x.Refer("practice", "once", walks, adaNHS, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	accepted, err := pb.NewReferralServiceClient(x.Conn).AcceptReferral(x.As("group"), &pb.AcceptReferralRequest{Name: first.Name, RequestId: "accept-1"})
	if err != nil {
		t.Fatal(err)
	}
	x.Restart()
	again, err := x.Refer("practice", "once", walks, adaNHS, c.Name)
	if err != nil || !proto.Equal(again, first) {
		t.Fatalf("retry after restart = %v, %v; want the first response %v", again, err, first)
	}
	// The stored answer keeps what the exchange added to the referral it
	// was sent, not the person the practice sent (answer.go).
	err = x.Store.View(context.Background(), func(tx storage.ReadTx) error {
		rec, err := tx.GetIdempotency("organizations/practice", "once")
		if err != nil {
			return err
		}
		if !rec.Elided || bytes.Contains(rec.Response, []byte(adaNHS)) || bytes.Contains(rec.Response, []byte(first.Person.FamilyName)) || !bytes.Contains(rec.Response, []byte(first.Name)) {
			t.Errorf("stored answer: elided %v, %d bytes %q; want the name without the person", rec.Elided, len(rec.Response), rec.Response)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The retried accept returns its first response, not INVALID_TRANSITION.
	acc, err := pb.NewReferralServiceClient(x.Conn).AcceptReferral(x.As("group"), &pb.AcceptReferralRequest{Name: first.Name, RequestId: "accept-1"})
	if err != nil || acc.Etag != accepted.Etag {
		t.Fatalf("retried accept after restart = %v, %v", acc, err)
	}
	// Another organisation's request_id space is its own.
	_, err = x.Refer("group", "once", x.Service("practice", "clinic", pb.Category_CATEGORY_PHYSICAL_ACTIVITY), adaNHS, c.Name)
	wantErr(t, err, codes.FailedPrecondition, "CONSENT_REQUIRED")
	_, err = x.Refer("practice", "once", walks, exchangetest.NHSNumber(5), c.Name)
	wantErr(t, err, codes.InvalidArgument, "REQUEST_ID_REUSED")
	l, err := pb.NewReferralServiceClient(x.Conn).ListReferrals(x.As("practice"), &pb.ListReferralsRequest{})
	if err != nil || len(l.Referrals) != 1 {
		t.Fatalf("referrals after retries = %v, %v", l, err)
	}
}

func TestEventFeed(t *testing.T) {
	x := start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	x.Org("stranger", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	evs := pb.NewEventServiceClient(x.Conn)
	list := func(org string, after int64, wait time.Duration) *pb.ListEventsResponse {
		t.Helper()
		req := &pb.ListEventsRequest{After: after, PageSize: 1000}
		if wait > 0 {
			req.Wait = durationpb.New(wait)
		}
		l, err := evs.ListEvents(x.As(org), req)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	start := list("practice", 0, 0).LastSequence
	c := x.ConsentFor("practice", adaNHS, nil)
	r, err := x.Refer("practice", "one", walks, adaNHS, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewReferralServiceClient(x.Conn).AcceptReferral(x.As("group"), &pb.AcceptReferralRequest{Name: r.Name}); err != nil {
		t.Fatal(err)
	}

	// Order and visibility: each sees its own events, in sequence order.
	types := func(l *pb.ListEventsResponse) string {
		var out []string
		prev := int64(0)
		for _, e := range l.Events {
			if e.Sequence <= prev {
				t.Errorf("sequence %d after %d", e.Sequence, prev)
			}
			prev = e.Sequence
			out = append(out, strings.TrimPrefix(e.Type.String(), "EVENT_TYPE_"))
		}
		return strings.Join(out, ",")
	}
	if got := types(list("practice", start, 0)); got != "CONSENT_CREATED,REFERRAL_CREATED,REFERRAL_STATE_CHANGED" {
		t.Errorf("practice sees %s", got)
	}
	if got := types(list("group", start, 0)); got != "REFERRAL_CREATED,REFERRAL_STATE_CHANGED" {
		t.Errorf("group sees %s", got)
	}
	if got := types(list("stranger", start, 0)); got != "" {
		t.Errorf("stranger sees %s", got)
	}
	// Public events (the directory) reach everyone.
	if got := list("stranger", 0, 0); !strings.Contains(types(got), "SERVICE_CHANGED") {
		t.Errorf("stranger misses public directory events: %s", types(got))
	}

	// Resume from a sequence number: only later events.
	all := list("group", start, 0)
	resumed := list("group", all.Events[0].Sequence, 0)
	if len(resumed.Events) != 1 || resumed.Events[0].Sequence != all.Events[1].Sequence || resumed.LastSequence != all.LastSequence {
		t.Errorf("resumed = %v, want the last of %v", resumed, all)
	}

	// Long-poll: an empty wait returns after the wait with nothing new ...
	began := time.Now()
	empty := list("group", all.LastSequence, 300*time.Millisecond)
	if len(empty.Events) != 0 || time.Since(began) < 300*time.Millisecond || empty.LastSequence < all.LastSequence {
		t.Errorf("empty long-poll = %v after %v", empty, time.Since(began))
	}
	// ... and returns as soon as an event the caller may see arrives, not on
	// an event for someone else.
	got := make(chan *pb.ListEventsResponse, 1)
	go func() {
		l, err := evs.ListEvents(x.As("group"), &pb.ListEventsRequest{After: all.LastSequence, Wait: durationpb.New(30 * time.Second)})
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	time.Sleep(100 * time.Millisecond)
	x.ConsentFor("practice", exchangetest.NHSNumber(99), nil) // the group does not hear of this
	select {
	case l := <-got:
		t.Fatalf("woke for another organisation's event: %v", l)
	case <-time.After(200 * time.Millisecond):
	}
	began = time.Now()
	if _, err := pb.NewFeedbackServiceClient(x.Conn).CreateFeedback(x.As("practice"), &pb.CreateFeedbackRequest{Parent: r.Name,
		Feedback: &pb.Feedback{Content: &pb.Feedback_Note{Note: &pb.Note{Text: "Ada prefers mornings"}}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-got:
		if len(l.Events) != 1 || l.Events[0].Type != pb.EventType_EVENT_TYPE_FEEDBACK_POSTED {
			t.Errorf("long-poll returned %v", l)
		}
		if d := time.Since(began); d > 2*time.Second {
			t.Errorf("long-poll took %v to return", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll did not return when an event arrived")
	}

	// WatchEvents: the history from a sequence number, then live.
	ctx, cancel := context.WithTimeout(x.As("group"), 10*time.Second)
	defer cancel()
	w, err := evs.WatchEvents(ctx, &pb.WatchEventsRequest{After: start})
	if err != nil {
		t.Fatal(err)
	}
	var watched []string
	for len(watched) < 3 {
		e, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		watched = append(watched, strings.TrimPrefix(e.Event.Type.String(), "EVENT_TYPE_"))
	}
	if _, err := pb.NewReferralServiceClient(x.Conn).StartReferral(x.As("group"), &pb.StartReferralRequest{Name: r.Name}); err != nil {
		t.Fatal(err)
	}
	e, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	watched = append(watched, strings.TrimPrefix(e.Event.Type.String(), "EVENT_TYPE_"))
	if got := strings.Join(watched, ","); got != "REFERRAL_CREATED,REFERRAL_STATE_CHANGED,FEEDBACK_POSTED,REFERRAL_STATE_CHANGED" {
		t.Errorf("watched %s", got)
	}
	if e.Event.State != pb.ReferralState_REFERRAL_STATE_IN_PROGRESS {
		t.Errorf("live event state = %v", e.Event.State)
	}

	// Bad input is refused.
	_, err = evs.ListEvents(x.As("group"), &pb.ListEventsRequest{Wait: durationpb.New(time.Hour)})
	wantErr(t, err, codes.InvalidArgument, "FIELD_INVALID")
	// -1 is "from now" (TestEventsFromNow); below it nothing.
	_, err = evs.ListEvents(x.As("group"), &pb.ListEventsRequest{After: -2})
	wantErr(t, err, codes.InvalidArgument, "FIELD_INVALID")
}
