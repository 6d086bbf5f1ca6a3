package api_test

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// Tests an adversarial reading of the access rules wrote, each of
// something a caller tries to learn or break: a replayed answer, an etag,
// forged page tokens, odd and long filters and names, hidden against
// missing in every refusal, two reports a nanosecond apart.

func forgeToken(filter, key string) string {
	h := sha256.Sum256([]byte(filter))
	return base64.RawURLEncoding.EncodeToString(append(h[:4], key...))
}

// A replay of a state change with its request_id after the consent was
// withdrawn: the person must not come back to the receiver.
func TestReplayAfterWithdrawalHidesThePerson(t *testing.T) {
	x := chainWorld(t, nil)
	refs := pb.NewReferralServiceClient(x.Conn)
	nhs := adaNHS
	c := x.ConsentFor("practice", nhs, nil)
	r1, err := x.Refer("practice", "adv-r1", "organizations/pcn/services/link-workers", nhs, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := refs.AcceptReferral(x.As("pcn"), &pb.AcceptReferralRequest{Name: r1.Name, RequestId: "adv-acc"})
	if err != nil || acc.Person == nil {
		t.Fatalf("accept: %v %v", acc, err)
	}
	if _, err := pb.NewConsentServiceClient(x.Conn).WithdrawConsent(x.As("practice"), &pb.WithdrawConsentRequest{Name: c.Name}); err != nil {
		t.Fatal(err)
	}
	got, err := refs.GetReferral(x.As("pcn"), &pb.GetReferralRequest{Name: r1.Name})
	if err != nil || got.Person != nil {
		t.Fatalf("GetReferral after withdrawal: %v %v", got, err)
	}
	again, err := refs.AcceptReferral(x.As("pcn"), &pb.AcceptReferralRequest{Name: r1.Name, RequestId: "adv-acc"})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if again.Person != nil {
		t.Errorf("replayed AcceptReferral after withdrawal returns the person to the receiver: view %v person %v", again.View, again.Person)
	}
}

// Forged page tokens: the right filter hash with store keys of other
// organisations' indexes.
func TestForgedPageTokensListNothing(t *testing.T) {
	x := chainWorld(t, map[string]pb.OrganizationKind{"stranger": vcse})
	c := x.chain(t, pb.ReferralState_REFERRAL_STATE_REQUESTED)
	refs := pb.NewReferralServiceClient(x.Conn)
	keys := []string{"\x00", "organizations/", "organizations/group", "organizations/group\x00", "organizations/pcn\x00",
		"organizations/practice\x00", c.r1, c.r2, "organizations/stranger", "organizations/strangeq", "\xff\xff\xff", "a"}
	filters := []string{"", `recipient = "organizations/stranger"`, `referrer = "organizations/stranger"`,
		`recipient = "organizations/group"`, `referrer = "organizations/pcn"`, `state = REQUESTED`,
		`recipient = "organizations/stranger" AND overdue = true`}
	for _, f := range filters {
		for _, k := range keys {
			l, err := refs.ListReferrals(x.As("stranger"), &pb.ListReferralsRequest{Filter: f, PageToken: forgeToken(f, k)})
			if err != nil {
				if status.Code(err) != codes.InvalidArgument {
					t.Errorf("filter %q key %q: %v", f, k, err)
				}
				continue
			}
			if len(l.Referrals) > 0 || l.NextPageToken != "" {
				t.Errorf("filter %q key %q: %v", f, k, l)
			}
		}
	}
	// A party's token reused by the stranger.
	l, err := refs.ListReferrals(x.As("pcn"), &pb.ListReferralsRequest{PageSize: 1})
	if err != nil || l.NextPageToken == "" {
		t.Fatalf("pcn page 1: %v %v", l, err)
	}
	l2, err := refs.ListReferrals(x.As("stranger"), &pb.ListReferralsRequest{PageSize: 1, PageToken: l.NextPageToken})
	if err != nil || len(l2.Referrals) > 0 {
		t.Errorf("stranger with pcn's token: %v %v", l2, err)
	}
	// Feedback and consents.
	fb := pb.NewFeedbackServiceClient(x.Conn)
	for _, k := range keys {
		_, err := fb.ListFeedback(x.As("stranger"), &pb.ListFeedbackRequest{Parent: c.r2, PageToken: forgeToken(c.r2, k)})
		if status.Code(err) != codes.NotFound {
			t.Errorf("stranger feedback with key %q: %v", k, err)
		}
		lc, err := pb.NewConsentServiceClient(x.Conn).ListConsents(x.As("stranger"), &pb.ListConsentsRequest{NhsNumber: c.nhs, PageToken: forgeToken(c.nhs, k)})
		if err != nil || len(lc.Consents) > 0 || lc.NextPageToken != "" {
			t.Errorf("stranger consents with key %q: %v %v", k, lc, err)
		}
	}
}

// Odd filters are INVALID_ARGUMENT or list nothing; never INTERNAL, never
// another's referrals.
func TestOddFiltersAreRefusedOrNarrow(t *testing.T) {
	x := chainWorld(t, map[string]pb.OrganizationKind{"stranger": vcse})
	x.chain(t, pb.ReferralState_REFERRAL_STATE_REQUESTED)
	refs := pb.NewReferralServiceClient(x.Conn)
	filters := []string{
		`recipient = "organizations/group" AND recipient = "organizations/stranger"`,
		`recipient = "organizations/stranger" AND recipient = "organizations/group"`,
		`recipient = "organizations/stranger" AND referrer = "organizations/pcn"`,
		`referrer = "organizations/stranger" AND recipient = "organizations/group"`,
		`recipient = "organizations/stranger" AND parent = "referrals/aaaaaaaaaaaaaaaa"`,
		`recipient="organizations/group"`, `recipient = ""organizations/group""`, `recipient = organizations/group`,
		`  recipient   =   "organizations/group"  `, `recipient = "organizations/group"AND state = REQUESTED`,
		`recipient = "organizations/group" and state = REQUESTED`, `recipient = "organizations/group\x00"`,
		`state = REQUESTED AND AND state = ACCEPTED`, ` AND `, `=`, `= x`, `x =`,
		`state = UNSPECIFIED`, `state = 1`, `state = REFERRAL_STATE_REQUESTED`, `overdue = TRUE`, `overdue = true`,
		`recipient = "organizations/group/services/walks"`, `recipient = "organizations/group/services/walks" AND overdue = true`,
		`recipient = "organizations/stranger/services/walks"`, `recipient = "organizations/stranger/services/x" AND overdue = true`,
		`recipient = "organizations/stranger" AND overdue = false`,
		strings.Repeat(`state = REQUESTED AND `, 5000) + `state = REQUESTED`,
		`recipient = "` + strings.Repeat("a", 100000) + `"`,
		`parent = "referrals/` + strings.Repeat("a", 16) + `"`,
	}
	for _, f := range filters {
		l, err := refs.ListReferrals(x.As("stranger"), &pb.ListReferralsRequest{Filter: f})
		short := f
		if len(short) > 80 {
			short = short[:80]
		}
		switch status.Code(err) {
		case codes.OK:
			if len(l.Referrals) > 0 {
				t.Errorf("%q lists %v", short, l.Referrals)
			}
		case codes.InvalidArgument, codes.NotFound:
			if len(status.Convert(err).Message()) > 2000 {
				t.Logf("%q: message %d bytes", short, len(status.Convert(err).Message()))
			}
		default:
			t.Errorf("%q: %v", short, err)
		}
	}
}

// GetReferral and GetConsent: hidden and missing are the same, whatever
// the name looks like.
func TestHiddenIsAsMissing(t *testing.T) {
	x := chainWorld(t, map[string]pb.OrganizationKind{"stranger": vcse})
	c := x.chain(t, pb.ReferralState_REFERRAL_STATE_REQUESTED)
	refs := pb.NewReferralServiceClient(x.Conn)
	cons := pb.NewConsentServiceClient(x.Conn)
	missingR := "referrals/aaaaaaaaaaaaaaaa"
	missingC := "consents/aaaaaaaaaaaaaaaa"
	_, e1 := refs.GetReferral(x.As("stranger"), &pb.GetReferralRequest{Name: c.r2})
	_, e2 := refs.GetReferral(x.As("stranger"), &pb.GetReferralRequest{Name: missingR})
	if shape(e1, c.r2) != shape(e2, missingR) {
		t.Errorf("referral: %v vs %v", e1, e2)
	}
	_, e1 = cons.GetConsent(x.As("stranger"), &pb.GetConsentRequest{Name: c.consent})
	_, e2 = cons.GetConsent(x.As("stranger"), &pb.GetConsentRequest{Name: missingC})
	if shape(e1, c.consent) != shape(e2, missingC) {
		t.Errorf("consent: %v vs %v", e1, e2)
	}
	// Transitions, feedback, withdrawal, onward referral.
	type call func(name string) error
	for what, f := range map[string]call{
		"accept": func(n string) error {
			_, err := refs.AcceptReferral(x.As("stranger"), &pb.AcceptReferralRequest{Name: n})
			return err
		},
		"cancel": func(n string) error {
			_, err := refs.CancelReferral(x.As("stranger"), &pb.CancelReferralRequest{Name: n, Reason: &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_NEEDS_CHANGED}})
			return err
		},
		"cancel-noreason": func(n string) error {
			_, err := refs.CancelReferral(x.As("stranger"), &pb.CancelReferralRequest{Name: n})
			return err
		},
		"accept-etag": func(n string) error {
			_, err := refs.AcceptReferral(x.As("stranger"), &pb.AcceptReferralRequest{Name: n, Etag: "zzz"})
			return err
		},
		"feedback": func(n string) error {
			_, err := pb.NewFeedbackServiceClient(x.Conn).CreateFeedback(x.As("stranger"), &pb.CreateFeedbackRequest{Parent: n,
				Feedback: &pb.Feedback{Content: &pb.Feedback_Note{Note: &pb.Note{Text: "hi"}}}})
			return err
		},
		"listfeedback": func(n string) error {
			_, err := pb.NewFeedbackServiceClient(x.Conn).ListFeedback(x.As("stranger"), &pb.ListFeedbackRequest{Parent: n})
			return err
		},
		"listparent": func(n string) error {
			_, err := refs.ListReferrals(x.As("stranger"), &pb.ListReferralsRequest{Filter: `parent = "` + n + `"`})
			return err
		},
		"onward": func(n string) error {
			mine := x.ConsentFor("stranger", c.nhs, nil)
			p := &pb.Person{NhsNumber: c.nhs, GivenName: "Ada", FamilyName: "Jones", DateOfBirth: "1948-03-14", Postcode: "M14 5AB"}
			_, err := refs.CreateReferral(x.As("stranger"), &pb.CreateReferralRequest{RequestId: "onw-" + n[10:], Referral: &pb.Referral{
				RecipientService: "organizations/pcn/services/link-workers", ParentReferral: n, Person: p, Consent: mine.Name,
				Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE, Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY},
				SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING}})
			return err
		},
	} {
		e1, e2 := f(c.r2), f(missingR)
		if s1, s2 := shape(e1, c.r2), shape(e2, missingR); s1 != s2 {
			t.Errorf("%s: hidden %v vs missing %v", what, e1, e2)
		}
	}
	for what, f := range map[string]func(n string) error{
		"withdraw": func(n string) error {
			_, err := cons.WithdrawConsent(x.As("stranger"), &pb.WithdrawConsentRequest{Name: n})
			return err
		},
		"refer-with": func(n string) error {
			_, err := x.Refer("stranger", "rw-"+n[9:], "organizations/group/services/walks", c.nhs, n)
			return err
		},
	} {
		e1, e2 := f(c.consent), f(missingC)
		if s1, s2 := shape(e1, c.consent), shape(e2, missingC); s1 != s2 {
			t.Errorf("%s: hidden %v vs missing %v", what, e1, e2)
		}
	}
}

// Long names, parents and filters are the caller's fault: INVALID_ARGUMENT
// (or NOT_FOUND), never INTERNAL.
func TestLongNamesAreTheCallersFault(t *testing.T) {
	x := chainWorld(t, nil)
	refs := pb.NewReferralServiceClient(x.Conn)
	long := "referrals/" + strings.Repeat("a", 40000)
	for what, f := range map[string]func() error{
		"GetReferral": func() error {
			_, err := refs.GetReferral(x.As("practice"), &pb.GetReferralRequest{Name: long})
			return err
		},
		"AcceptReferral": func() error {
			_, err := refs.AcceptReferral(x.As("practice"), &pb.AcceptReferralRequest{Name: long})
			return err
		},
		"ListReferrals": func() error {
			_, err := refs.ListReferrals(x.As("practice"), &pb.ListReferralsRequest{Filter: `parent = "` + long + `"`})
			return err
		},
		"ListFeedback": func() error {
			_, err := pb.NewFeedbackServiceClient(x.Conn).ListFeedback(x.As("practice"), &pb.ListFeedbackRequest{Parent: long})
			return err
		},
		"CreateFeedback": func() error {
			_, err := pb.NewFeedbackServiceClient(x.Conn).CreateFeedback(x.As("practice"), &pb.CreateFeedbackRequest{Parent: long,
				Feedback: &pb.Feedback{Content: &pb.Feedback_Note{Note: &pb.Note{Text: "hi"}}}})
			return err
		},
		"GetConsent": func() error {
			_, err := pb.NewConsentServiceClient(x.Conn).GetConsent(x.As("practice"), &pb.GetConsentRequest{Name: "consents/" + strings.Repeat("a", 40000)})
			return err
		},
		"WithdrawConsent": func() error {
			_, err := pb.NewConsentServiceClient(x.Conn).WithdrawConsent(x.As("practice"), &pb.WithdrawConsentRequest{Name: "consents/" + strings.Repeat("a", 40000)})
			return err
		},
		"ListApiKeys": func() error {
			_, err := pb.NewApiKeyServiceClient(x.Conn).ListApiKeys(x.As("practice"), &pb.ListApiKeysRequest{Parent: "organizations/" + strings.Repeat("a", 40000)})
			return err
		},
		"GetOrganization": func() error {
			_, err := pb.NewDirectoryServiceClient(x.Conn).GetOrganization(x.As("practice"), &pb.GetOrganizationRequest{Name: "organizations/" + strings.Repeat("a", 40000)})
			return err
		},
		"ActivityReport": func() error {
			_, err := pb.NewReportServiceClient(x.Conn).GetActivityReport(x.As("practice"), &pb.GetActivityReportRequest{Filter: &pb.ReportFilter{Service: strings.Repeat("a", 40000)}})
			return err
		},
	} {
		err := f()
		if c := status.Code(err); c != codes.InvalidArgument && c != codes.NotFound && c != codes.PermissionDenied {
			t.Errorf("%s with a 40 kB name: %v", what, err)
		}
	}
}

// etagAsIfUnflagged is the etag of the referral as its contract says it is
// made: a SHA-256 of the deterministic encoding without the etag, the
// read-time fields (view, overdue) and the fields a view may withhold
// (person, reason, possible_duplicate_of), so that what a caller sees
// gives it.
func etagAsIfUnflagged(r *pb.Referral) string {
	c := proto.Clone(r).(*pb.Referral)
	c.Etag, c.View, c.Overdue, c.Actions, c.PossibleDuplicateOf, c.Person, c.Reason = "", 0, false, nil, "", nil, ""
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	h := sha256.Sum256(b)
	return fmt.Sprintf("%x", h[:8])
}

// The duplicate check must tell the stranger nothing, but the etag it is
// given is computed over possible_duplicate_of, which is hidden from it.
func TestEtagTellsNothingHidden(t *testing.T) {
	x := chainWorld(t, map[string]pb.OrganizationKind{"stranger": pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE})
	walks := "organizations/group/services/walks"
	c := x.chain(t, pb.ReferralState_REFERRAL_STATE_REQUESTED) // r2: pcn -> group's walks, open

	// Control: a person with no open referral to walks.
	other := x.ConsentFor("stranger", adaNHS, nil)
	plain, err := x.Refer("stranger", "adv-plain", walks, adaNHS, other.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got := etagAsIfUnflagged(plain); got != plain.Etag {
		t.Fatalf("control: recomputed etag %s, exchange's %s (recomputation wrong)", got, plain.Etag)
	}
	// The person of the chain, who has an open referral the stranger may not see.
	mine := x.ConsentFor("stranger", c.nhs, nil)
	r, err := x.Refer("stranger", "adv-dup", walks, c.nhs, mine.Name)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pb.NewReferralServiceClient(x.Conn).GetReferral(x.As("stranger"), &pb.GetReferralRequest{Name: r.Name})
	if err != nil || got.PossibleDuplicateOf != "" {
		t.Fatalf("%v %v", got, err)
	}
	if etagAsIfUnflagged(got) != got.Etag {
		t.Errorf("the stranger's etag %s differs from the one its view implies (%s): it tells the stranger its referral was flagged as a duplicate of a referral it may not see",
			got.Etag, etagAsIfUnflagged(got))
	}
}

// The referrer may not read outcome scores when the person did not agree
// to FEEDBACK_TO_REFERRER, but its own outcome report counts them (the
// consent has EVALUATION); two reports whose periods differ by one referral
// give that one person's scores exactly.
func TestOwnReportCountsOnlyReadableOutcomes(t *testing.T) {
	x := start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", vcse)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	refs := pb.NewReferralServiceClient(x.Conn)
	fb := pb.NewFeedbackServiceClient(x.Conn)
	var made []*pb.Referral
	follow := []int32{50, 51, 49, 52, 48, 63} // the sixth person's follow-up is the secret
	for i, score := range follow {
		nhs := fmt.Sprint(exchangetestNHS(900 + i))
		c := x.ConsentFor("practice", nhs, func(c *pb.Consent) {
			c.Purposes = []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION}
		})
		r, err := x.Refer("practice", fmt.Sprint("od-", i), walks, nhs, c.Name)
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, r)
		if _, err := refs.AcceptReferral(x.As("group"), &pb.AcceptReferralRequest{Name: r.Name}); err != nil {
			t.Fatal(err)
		}
		for tp, s := range map[pb.Timepoint]int32{pb.Timepoint_TIMEPOINT_BASELINE: 40, pb.Timepoint_TIMEPOINT_FOLLOW_UP: score} {
			if _, err := fb.CreateFeedback(x.As("group"), &pb.CreateFeedbackRequest{Parent: r.Name, Feedback: &pb.Feedback{
				Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Timepoint: tp, Total: s}}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	last := made[len(made)-1]
	l, err := fb.ListFeedback(x.As("practice"), &pb.ListFeedbackRequest{Parent: last.Name})
	if err != nil || len(l.Feedback) != 0 {
		t.Fatalf("the practice reads the outcomes directly: %v %v", l, err)
	}
	rep := func(end *timestamppb.Timestamp) *pb.PairedStats {
		r, err := pb.NewReportServiceClient(x.Conn).GetOutcomeReport(x.As("practice"), &pb.GetOutcomeReportRequest{Filter: &pb.ReportFilter{EndTime: end}})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range r.Measures {
			if m.Measure == "WEMWBS" {
				return m.All
			}
		}
		t.Fatal("no WEMWBS")
		return nil
	}
	end := last.CreateTime.AsTime()
	five, six := rep(timestamppb.New(end)), rep(timestamppb.New(end.Add(time.Nanosecond)))
	t.Logf("five: n=%v follow_up_mean=%v; six: n=%v follow_up_mean=%v", five.N, five.GetFollowUpMean(), six.N, six.GetFollowUpMean())
	if five.FollowUpMean != nil && six.FollowUpMean != nil {
		secret := 6*six.GetFollowUpMean() - 5*five.GetFollowUpMean()
		t.Errorf("the practice works out the sixth person's WEMWBS follow-up, which it may not read: %.2f (true %d)", secret, follow[5])
	}
}

func exchangetestNHS(n int) string { return exchangetest.NHSNumber(n) }

// Same request_id by different callers; events of a stranger.
func TestRequestIDsAndEventsAcrossCallers(t *testing.T) {
	x := chainWorld(t, map[string]pb.OrganizationKind{"stranger": pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE})
	c := x.chain(t, pb.ReferralState_REFERRAL_STATE_ACCEPTED)
	walks := "organizations/group/services/walks"
	mine := x.ConsentFor("stranger", adaNHS, nil)
	// "r1-N" is the practice's request id in chain.
	r, err := x.Refer("stranger", fmt.Sprint("r1-", chains), walks, adaNHS, mine.Name)
	if err != nil || r.Referrer != "organizations/stranger" {
		t.Fatalf("the stranger's referral with the practice's request_id: %v %v", r, err)
	}
	// The stranger replays with the same id and a different body: REQUEST_ID_REUSED only for its own.
	_, err = x.Refer("stranger", fmt.Sprint("r1-", chains), walks, c.nhs, mine.Name)
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("reuse: %v", err)
	}
	if _, err := pb.NewConsentServiceClient(x.Conn).WithdrawConsent(x.As("group"), &pb.WithdrawConsentRequest{Name: c.consent}); err != nil {
		t.Fatal(err)
	}
	ev, err := pb.NewEventServiceClient(x.Conn).ListEvents(x.As("stranger"), &pb.ListEventsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ev.Events {
		if strings.Contains(e.Resource, c.r1[10:]) || strings.Contains(e.Resource, c.r2[10:]) || e.Resource == c.consent {
			t.Errorf("stranger sees %v", e)
		}
	}
	t.Logf("stranger sees %d events, last_sequence %d", len(ev.Events), ev.LastSequence)
	// The consent the group withdrew: what does the practice see now, and the group?
	got, err := pb.NewConsentServiceClient(x.Conn).GetConsent(x.As("group"), &pb.GetConsentRequest{Name: c.consent})
	t.Logf("group reads the consent after withdrawal: %v %v", got.GetState(), status.Code(err))
}

// TestReplayedWithdrawalTellsNoMore: the receiver may withdraw a consent
// while its referral is open; the withdrawal closes the referral, and with
// it the receiver's sight of the consent. Its retry must not give the NHS
// number back, though the first answer, which had it, is stored.
func TestReplayedWithdrawalTellsNoMore(t *testing.T) {
	x := chainWorld(t, nil)
	c := x.chain(t, pb.ReferralState_REFERRAL_STATE_ACCEPTED)
	cons := pb.NewConsentServiceClient(x.Conn)
	first, err := cons.WithdrawConsent(x.As("group"), &pb.WithdrawConsentRequest{Name: c.consent, RequestId: "w"})
	if err != nil || first.NhsNumber == "" {
		t.Fatalf("the withdrawal: %v, %v", first, err)
	}
	_, err = cons.GetConsent(x.As("group"), &pb.GetConsentRequest{Name: c.consent})
	wantErr(t, err, codes.NotFound, "RESOURCE_NOT_FOUND")
	again, err := cons.WithdrawConsent(x.As("group"), &pb.WithdrawConsentRequest{Name: c.consent, RequestId: "w"})
	if err != nil || again.NhsNumber != "" || again.State != pb.ConsentState_CONSENT_STATE_WITHDRAWN {
		t.Fatalf("the retried withdrawal = %v, %v; want it withdrawn, without the NHS number", again, err)
	}
	// The recorder still reads it whole.
	if got, err := cons.WithdrawConsent(x.As("practice"), &pb.WithdrawConsentRequest{Name: c.consent, RequestId: "w"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("the recorder's withdrawal of a withdrawn consent: %v, %v", got, err)
	}
}

// TestNoFeedbackAfterErasure: once erasure has cleared a referral, it takes
// no more feedback, so a note retried after erasure (whose stored answer
// went with it) cannot bring back the text erasure cleared.
func TestNoFeedbackAfterErasure(t *testing.T) {
	x := chainWorld(t, nil)
	c := x.chain(t, pb.ReferralState_REFERRAL_STATE_ACCEPTED)
	fbs := pb.NewFeedbackServiceClient(x.Conn)
	note := &pb.CreateFeedbackRequest{Parent: c.r2, RequestId: "note", Feedback: &pb.Feedback{
		Content: &pb.Feedback_Note{Note: &pb.Note{Text: "Ada Jones, of 1 High St, is doing well"}}}}
	if _, err := fbs.CreateFeedback(x.As("group"), note); err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewAdminServiceClient(x.Conn).ErasePerson(x.As("operator"), &pb.ErasePersonRequest{NhsNumber: c.nhs, RequestId: "erase"}); err != nil {
		t.Fatal(err)
	}
	_, err := fbs.CreateFeedback(x.As("group"), note)
	wantErr(t, err, codes.FailedPrecondition, "REFERRAL_CLOSED")
	l, err := fbs.ListFeedback(x.As("group"), &pb.ListFeedbackRequest{Parent: c.r2})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range l.Feedback {
		if f.GetNote().GetText() != "" {
			t.Errorf("a note with text on the erased referral: %v", f)
		}
	}
}
