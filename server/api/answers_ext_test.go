package api_test

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// TestReplayedActionsAreCurrent: a retried AcceptReferral (same
// request_id), answered after the referral has moved on, offers what the
// caller may do now, not START again.
func TestReplayedActionsAreCurrent(t *testing.T) {
	x := exchangetest.Start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("walkers", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("walkers", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	nhs := exchangetest.NHSNumber(41)
	c := x.ConsentFor("practice", nhs, nil)
	refs := pb.NewReferralServiceClient(x.Conn)
	r, err := x.Refer("practice", "r-1", walks, nhs, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	accept := &pb.AcceptReferralRequest{Name: r.Name, RequestId: "acc-1"}
	if _, err := refs.AcceptReferral(x.As("walkers"), accept); err != nil {
		t.Fatal(err)
	}
	if _, err := refs.StartReferral(x.As("walkers"), &pb.StartReferralRequest{Name: r.Name}); err != nil {
		t.Fatal(err)
	}
	again, err := refs.AcceptReferral(x.As("walkers"), accept)
	if err != nil {
		t.Fatal(err)
	}
	now, _ := refs.GetReferral(x.As("walkers"), &pb.GetReferralRequest{Name: r.Name})
	if slices.Contains(again.Actions, pb.ReferralAction_REFERRAL_ACTION_START) {
		_, err := refs.StartReferral(x.As("walkers"), &pb.StartReferralRequest{Name: r.Name})
		t.Errorf("the retried answer offers %v (state %v); the referral is %v with %v; START now: %v",
			again.Actions, again.State, now.State, now.Actions, err)
	}
}

// TestCreateDropsOutputOnlyFields: output-only fields a caller sends are
// dropped: an erase time kept would spare the person from erasure (and
// from retention), and answer times would skew the reports.
func TestCreateDropsOutputOnlyFields(t *testing.T) {
	x := exchangetest.Start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("walkers", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("walkers", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	nhs := exchangetest.NHSNumber(42)
	c := x.ConsentFor("practice", nhs, nil)
	p := exchangetest.Ada()
	p.NhsNumber = nhs
	r, err := pb.NewReferralServiceClient(x.Conn).CreateReferral(x.As("practice"), &pb.CreateReferralRequest{RequestId: "e-1", Referral: &pb.Referral{
		RecipientService: walks, Person: p, Consent: c.Name, Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
		Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING,
		EraseTime: timestamppb.Now(), ResponseTime: timestamppb.Now(), AcceptTime: timestamppb.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	if r.EraseTime != nil || r.ResponseTime != nil || r.AcceptTime != nil {
		t.Errorf("output-only fields kept from the request: erase %v response %v accept %v; actions %v", r.EraseTime, r.ResponseTime, r.AcceptTime, r.Actions)
	}
	out, err := pb.NewAdminServiceClient(x.Conn).ErasePerson(x.As("operator"), &pb.ErasePersonRequest{NhsNumber: nhs})
	if err != nil {
		t.Fatal(err)
	}
	got, err := pb.NewReferralServiceClient(x.Conn).GetReferral(x.As("practice"), &pb.GetReferralRequest{Name: r.Name})
	if err != nil {
		t.Fatal(err)
	}
	if got.Person.GetNhsNumber() != "" || got.Person.GetGivenName() != "" || got.State != pb.ReferralState_REFERRAL_STATE_CANCELLED {
		t.Errorf("after ErasePerson (cleared %d, cancelled %d): person %v, state %v", out.ClearedReferrals, out.CancelledReferrals, got.Person, got.State)
	}
}
