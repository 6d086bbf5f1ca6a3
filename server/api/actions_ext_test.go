package api_test

import (
	"slices"
	"testing"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// TestReferralActions: every referral a caller reads says what that
// caller may do with it now, from its side and the referral's state, and
// doing one of them works.
func TestReferralActions(t *testing.T) {
	x := exchangetest.Start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("linkers", pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE)
	x.Org("walkers", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	lw := x.Service("linkers", "link-work", pb.Category_CATEGORY_SOCIAL_ISOLATION)
	walks := x.Service("walkers", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	nhs := exchangetest.NHSNumber(40)
	c := x.ConsentFor("practice", nhs, nil)
	refs := pb.NewReferralServiceClient(x.Conn)
	r1, err := x.Refer("practice", "a-1", lw, nhs, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	A := func(names ...string) []pb.ReferralAction {
		var out []pb.ReferralAction
		for _, n := range names {
			out = append(out, pb.ReferralAction(pb.ReferralAction_value["REFERRAL_ACTION_"+n]))
		}
		return out
	}
	check := func(what, org, name string, want []pb.ReferralAction) {
		t.Helper()
		got, err := refs.GetReferral(x.As(org), &pb.GetReferralRequest{Name: name})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !slices.Equal(got.Actions, want) {
			t.Errorf("%s: %v may %v, want %v", what, org, got.Actions, want)
		}
		list, err := refs.ListReferrals(x.As(org), &pb.ListReferralsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range list.Referrals {
			if l.Name == name && !slices.Equal(l.Actions, want) {
				t.Errorf("%s, listed: %v may %v, want %v", what, org, l.Actions, want)
			}
		}
	}
	if !slices.Equal(r1.Actions, A("CANCEL", "MARK_ENTERED_IN_ERROR", "POST_NOTE")) {
		t.Errorf("the referrer's answer to CreateReferral: %v", r1.Actions)
	}
	check("requested", "linkers", r1.Name, A("ACCEPT", "REJECT", "HOLD", "POST_NOTE", "POST_UPTAKE_OR_OUTCOME"))
	check("requested", "practice", r1.Name, A("CANCEL", "MARK_ENTERED_IN_ERROR", "POST_NOTE"))
	acc, err := refs.AcceptReferral(x.As("linkers"), &pb.AcceptReferralRequest{Name: r1.Name})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(acc.Actions, A("START", "HOLD", "FAIL", "POST_NOTE", "POST_UPTAKE_OR_OUTCOME")) {
		t.Errorf("the receiver's answer to AcceptReferral: %v", acc.Actions)
	}
	if _, err := refs.StartReferral(x.As("linkers"), &pb.StartReferralRequest{Name: r1.Name}); err != nil {
		t.Fatal(err)
	}
	// Referred on: the practice is upstream of the onward referral, with
	// nothing it may do there.
	r2, err := refs.CreateReferral(x.As("linkers"), &pb.CreateReferralRequest{RequestId: "a-2", Referral: &pb.Referral{
		RecipientService: walks, ParentReferral: r1.Name, Person: r1.Person, Consent: c.Name,
		Route: pb.ReferralRoute_REFERRAL_ROUTE_LINK_WORKER, Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY},
		SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_INTENSIVE}})
	if err != nil {
		t.Fatal(err)
	}
	check("upstream", "practice", r2.Name, nil)
	if _, err := refs.CancelReferral(x.As("linkers"), &pb.CancelReferralRequest{Name: r2.Name,
		Reason: &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_PERSON_DECLINED}}); err != nil {
		t.Fatal(err)
	}
	check("cancelled", "walkers", r2.Name, A("POST_NOTE", "POST_UPTAKE_OR_OUTCOME"))
	if _, err := refs.MarkReferralEnteredInError(x.As("linkers"), &pb.MarkReferralEnteredInErrorRequest{Name: r2.Name}); err != nil {
		t.Fatal(err)
	}
	check("entered in error", "walkers", r2.Name, nil)
}
