package api_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// exchange adds this package's helpers to the shared test exchange.
type exchange struct{ *exchangetest.Exchange }

func start(t *testing.T) *exchange { return &exchange{exchangetest.Start(t)} }

func startWith(t *testing.T, opt api.Options) *exchange {
	return &exchange{exchangetest.StartWith(t, opt)}
}

var (
	wantErr = exchangetest.WantErr
	ada     = exchangetest.Ada
)

const adaNHS = exchangetest.AdaNHS

// TestWorkedExample plays the worked example in proto/README.md.
func TestWorkedExample(t *testing.T) {
	x := start(t)
	x.Org("riverside-practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("riverside-pcn", pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE)
	x.Org("hillside-walkers", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	x.Org("stranger", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	lwService := x.Service("riverside-pcn", "link-workers", pb.Category_CATEGORY_SOCIAL_ISOLATION)
	walks := x.Service("hillside-walkers", "health-walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	gp, lw, group := x.As("riverside-practice"), x.As("riverside-pcn"), x.As("hillside-walkers")
	consents := pb.NewConsentServiceClient(x.Conn)
	refs := pb.NewReferralServiceClient(x.Conn)
	fb := pb.NewFeedbackServiceClient(x.Conn)

	// 1. Consent.
	c, err := consents.CreateConsent(gp, &pb.CreateConsentRequest{Consent: &pb.Consent{
		NhsNumber: "943 476 5919", Method: pb.ConsentMethod_CONSENT_METHOD_VERBAL,
		Purposes:       []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION},
		RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}})
	if err != nil || c.State != pb.ConsentState_CONSENT_STATE_ACTIVE || c.NhsNumber != adaNHS {
		t.Fatalf("consent = %v, %v", c, err)
	}
	// 2. GP -> link worker.
	req := &pb.CreateReferralRequest{RequestId: "gp-1", Referral: &pb.Referral{
		RecipientService: lwService, Person: ada(), Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
		Needs: []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION}, Reason: "lonely since bereavement",
		SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_INTENSIVE, Consent: c.Name}}
	r1, err := refs.CreateReferral(gp, req)
	if err != nil {
		t.Fatal(err)
	}
	if r1.State != pb.ReferralState_REFERRAL_STATE_REQUESTED || r1.SnomedCode != "871731000000106" || r1.Referrer != "organizations/riverside-practice" || r1.ReplyBy == nil {
		t.Fatalf("r1 = %v", r1)
	}
	// A retry returns the first response; a different request with the same id is refused.
	again, err := refs.CreateReferral(gp, req)
	if err != nil || again.Name != r1.Name {
		t.Fatalf("retry = %v, %v; want %s", again.GetName(), err, r1.Name)
	}
	req.Referral.Reason = "something else"
	_, err = refs.CreateReferral(gp, req)
	wantErr(t, err, codes.InvalidArgument, "REQUEST_ID_REUSED")
	// The same person to the same service again: a duplicate.
	req.RequestId = "gp-2"
	_, err = refs.CreateReferral(gp, req)
	wantErr(t, err, codes.AlreadyExists, "DUPLICATE_REFERRAL")

	// 3. Link worker accepts and starts; the wrong side and wrong moves are refused.
	_, err = refs.AcceptReferral(gp, &pb.AcceptReferralRequest{Name: r1.Name})
	wantErr(t, err, codes.PermissionDenied, "WRONG_SIDE")
	_, err = refs.CompleteReferral(lw, &pb.CompleteReferralRequest{Name: r1.Name})
	wantErr(t, err, codes.FailedPrecondition, "INVALID_TRANSITION")
	_, err = refs.GetReferral(x.As("stranger"), &pb.GetReferralRequest{Name: r1.Name})
	wantErr(t, err, codes.NotFound, "RESOURCE_NOT_FOUND")
	got, err := refs.AcceptReferral(lw, &pb.AcceptReferralRequest{Name: r1.Name, Etag: r1.Etag})
	if err != nil || got.State != pb.ReferralState_REFERRAL_STATE_ACCEPTED || got.Person.GetGivenName() != "Ada" {
		t.Fatalf("accept = %v, %v", got, err)
	}
	_, err = refs.StartReferral(lw, &pb.StartReferralRequest{Name: r1.Name, Etag: r1.Etag})
	wantErr(t, err, codes.Aborted, "ETAG_MISMATCH")
	if _, err := refs.StartReferral(lw, &pb.StartReferralRequest{Name: r1.Name, Etag: got.Etag}); err != nil {
		t.Fatal(err)
	}

	// 4. Link worker -> walking group, relying on the same consent.
	r2, err := refs.CreateReferral(lw, &pb.CreateReferralRequest{RequestId: "lw-1", Referral: &pb.Referral{
		RecipientService: walks, ParentReferral: r1.Name, Person: ada(), Route: pb.ReferralRoute_REFERRAL_ROUTE_LINK_WORKER,
		Needs:        []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY, pb.Category_CATEGORY_SOCIAL_ISOLATION},
		SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_INTENSIVE, Consent: c.Name}})
	if err != nil {
		t.Fatal(err)
	}
	capa, err := pb.NewCapacityServiceClient(x.Conn).GetCapacity(group, &pb.GetCapacityRequest{Name: walks + "/capacity"})
	if err != nil || capa.ActiveReferrals != 1 {
		t.Fatalf("capacity = %v, %v", capa, err)
	}

	// 5. The group accepts, reports the first session and a WEMWBS follow-up.
	if _, err := refs.AcceptReferral(group, &pb.AcceptReferralRequest{Name: r2.Name}); err != nil {
		t.Fatal(err)
	}
	if _, err := fb.CreateFeedback(group, &pb.CreateFeedbackRequest{Parent: r2.Name, Feedback: &pb.Feedback{
		Content: &pb.Feedback_Uptake{Uptake: &pb.Uptake{Status: pb.UptakeStatus_UPTAKE_STATUS_FIRST_SESSION_ATTENDED}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := refs.StartReferral(group, &pb.StartReferralRequest{Name: r2.Name}); err != nil {
		t.Fatal(err)
	}
	_, err = fb.CreateFeedback(group, &pb.CreateFeedbackRequest{Parent: r2.Name, Feedback: &pb.Feedback{
		Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Timepoint: pb.Timepoint_TIMEPOINT_FOLLOW_UP, Total: 71}}}})
	wantErr(t, err, codes.InvalidArgument, "FIELD_INVALID")
	if _, err := fb.CreateFeedback(group, &pb.CreateFeedbackRequest{Parent: r2.Name, Feedback: &pb.Feedback{
		Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Timepoint: pb.Timepoint_TIMEPOINT_FOLLOW_UP, Total: 52}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := fb.CreateFeedback(group, &pb.CreateFeedbackRequest{Parent: r2.Name, Feedback: &pb.Feedback{
		Content: &pb.Feedback_Note{Note: &pb.Note{Text: "Ada enjoyed the walk"}}}}); err != nil {
		t.Fatal(err)
	}

	// 6. Both hear back: the link worker sees everything; the GP sees the
	// onward referral without the person, and uptake and outcome but no note.
	kinds := func(ctx context.Context) string {
		l, err := fb.ListFeedback(ctx, &pb.ListFeedbackRequest{Parent: r2.Name})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range l.Feedback {
			switch f.Content.(type) {
			case *pb.Feedback_Note:
				out = append(out, "note")
			case *pb.Feedback_Uptake:
				out = append(out, "uptake")
			case *pb.Feedback_Outcome:
				out = append(out, "outcome")
			}
		}
		return strings.Join(out, ",")
	}
	if got := kinds(lw); got != "uptake,outcome,note" {
		t.Errorf("link worker sees %s", got)
	}
	if got := kinds(gp); got != "uptake,outcome" {
		t.Errorf("GP sees %s", got)
	}
	gpView, err := refs.GetReferral(gp, &pb.GetReferralRequest{Name: r2.Name})
	if err != nil || gpView.Person != nil || gpView.View != pb.ReferralView_REFERRAL_VIEW_WITHOUT_PERSON || gpView.State != pb.ReferralState_REFERRAL_STATE_IN_PROGRESS {
		t.Fatalf("GP view of onward referral = %v, %v", gpView, err)
	}
	onward, err := refs.ListReferrals(gp, &pb.ListReferralsRequest{Filter: `parent = "` + r1.Name + `"`})
	if err != nil || len(onward.Referrals) != 1 || onward.Referrals[0].Name != r2.Name {
		t.Fatalf("GP lists onward referrals = %v, %v", onward, err)
	}
	// Events: the GP heard of the onward referral without reading it.
	ev, err := pb.NewEventServiceClient(x.Conn).ListEvents(gp, &pb.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sawOnward := false
	for _, e := range ev.Events {
		sawOnward = sawOnward || (e.Resource == r2.Name && e.Type == pb.EventType_EVENT_TYPE_REFERRAL_CREATED)
	}
	if !sawOnward {
		t.Errorf("GP events lack the onward referral: %v", ev.Events)
	}

	// 7. Ada withdraws consent: open referrals are cancelled and redacted.
	if _, err := consents.WithdrawConsent(gp, &pb.WithdrawConsentRequest{Name: c.Name}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{r1.Name, r2.Name} {
		r, err := refs.GetReferral(group, &pb.GetReferralRequest{Name: r2.Name})
		if err != nil || r.State != pb.ReferralState_REFERRAL_STATE_CANCELLED || r.StateReason.GetCode() != pb.StateReasonCode_STATE_REASON_CODE_CONSENT_WITHDRAWN || r.Person != nil {
			t.Fatalf("%s after withdrawal, seen by the group = %v, %v", name, r, err)
		}
	}
	if r, _ := refs.GetReferral(gp, &pb.GetReferralRequest{Name: r1.Name}); r.GetPerson().GetGivenName() != "Ada" {
		t.Errorf("the original referrer lost the person: %v", r)
	}
	if got := kinds(gp); got != "" {
		t.Errorf("after withdrawal the GP still sees %s", got)
	}
	capa, _ = pb.NewCapacityServiceClient(x.Conn).GetCapacity(group, &pb.GetCapacityRequest{Name: walks + "/capacity"})
	if capa.ActiveReferrals != 0 {
		t.Errorf("active count after cancellation = %d", capa.ActiveReferrals)
	}
	// A new referral on a withdrawn consent is refused.
	_, err = refs.CreateReferral(gp, &pb.CreateReferralRequest{RequestId: "gp-3", Referral: &pb.Referral{
		RecipientService: lwService, Person: ada(), Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
		Needs: []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING, Consent: c.Name}})
	wantErr(t, err, codes.FailedPrecondition, "CONSENT_REQUIRED")
}

// TestAuthentication: a key that is not one fails; a key authenticates as
// its organisation; a revoked key fails on the very next call, though the
// exchange remembered whom it authenticated (api.keyCache).
func TestAuthentication(t *testing.T) {
	x := start(t)
	d := pb.NewDirectoryServiceClient(x.Conn)
	_, err := d.ListOrganizations(context.Background(), &pb.ListOrganizationsRequest{})
	wantErr(t, err, codes.Unauthenticated, "API_KEY_MISSING")
	bad := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer sprx_operator_aaaaaaaaaaaaaaaa_bbbb")
	_, err = d.ListOrganizations(bad, &pb.ListOrganizationsRequest{})
	wantErr(t, err, codes.Unauthenticated, "API_KEY_INVALID")
	x.Org("hillside-walkers", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	_, err = d.CreateOrganization(x.As("hillside-walkers"), &pb.CreateOrganizationRequest{OrganizationId: "sneaky",
		Organization: &pb.Organization{Kind: pb.OrganizationKind_ORGANIZATION_KIND_OTHER, DisplayName: "x"}})
	wantErr(t, err, codes.PermissionDenied, "NOT_ALLOWED")
	keys := pb.NewApiKeyServiceClient(x.Conn)
	l, err := keys.ListApiKeys(x.As("operator"), &pb.ListApiKeysRequest{Parent: "organizations/hillside-walkers"})
	if err != nil || len(l.ApiKeys) != 1 {
		t.Fatalf("keys = %v, %v", l, err)
	}
	if _, err := keys.RevokeApiKey(x.As("operator"), &pb.RevokeApiKeyRequest{Name: l.ApiKeys[0].Name}); err != nil {
		t.Fatal(err)
	}
	_, err = d.ListOrganizations(x.As("hillside-walkers"), &pb.ListOrganizationsRequest{})
	wantErr(t, err, codes.Unauthenticated, "API_KEY_INVALID")
}

func TestCapacityRules(t *testing.T) {
	x := start(t)
	x.Org("gp-practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("walkers", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	x.Org("ramblers", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("walkers", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	alt := x.Service("ramblers", "rambles", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	gp := x.As("gp-practice")
	capc := pb.NewCapacityServiceClient(x.Conn)
	if _, err := capc.UpdateCapacity(x.As("walkers"), &pb.UpdateCapacityRequest{Capacity: &pb.Capacity{Name: walks + "/capacity",
		Status: pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, MaxActiveReferrals: 1}}); err != nil {
		t.Fatal(err)
	}
	_, err := capc.UpdateCapacity(gp, &pb.UpdateCapacityRequest{Capacity: &pb.Capacity{Name: walks + "/capacity", Status: pb.CapacityStatus_CAPACITY_STATUS_PAUSED}})
	wantErr(t, err, codes.PermissionDenied, "NOT_ALLOWED")
	c, err := pb.NewConsentServiceClient(x.Conn).CreateConsent(gp, &pb.CreateConsentRequest{Consent: &pb.Consent{
		NhsNumber: "4010232137", Method: pb.ConsentMethod_CONSENT_METHOD_WRITTEN,
		Purposes: []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE}, RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}})
	if err != nil {
		t.Fatal(err)
	}
	other := c.Name
	c, err = pb.NewConsentServiceClient(x.Conn).CreateConsent(gp, &pb.CreateConsentRequest{Consent: &pb.Consent{
		NhsNumber: adaNHS, Method: pb.ConsentMethod_CONSENT_METHOD_WRITTEN,
		Purposes: []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE}, RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}})
	if err != nil {
		t.Fatal(err)
	}
	refer := func(id, svc, nhs string) (*pb.Referral, error) {
		p := ada()
		p.NhsNumber = nhs
		return pb.NewReferralServiceClient(x.Conn).CreateReferral(gp, &pb.CreateReferralRequest{RequestId: id, Referral: &pb.Referral{
			RecipientService: svc, Person: p, Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
			Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING, Consent: c.Name}})
	}
	if _, err := refer("a", walks, adaNHS); err != nil {
		t.Fatal(err)
	}
	got, _ := capc.GetCapacity(gp, &pb.GetCapacityRequest{Name: walks + "/capacity"})
	if got.Status != pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY || !got.StatusSetAutomatically || got.ActiveReferrals != 1 {
		t.Fatalf("capacity at the maximum = %v", got)
	}
	// Full: refused with an alternative named. (Consent is for Ada only, so
	// the refusal must come before consent is even considered for others.)
	_, err = refer("b", walks, adaNHS)
	wantErr(t, err, codes.AlreadyExists, "DUPLICATE_REFERRAL")
	if _, err := refer("c", alt, adaNHS); err != nil {
		t.Fatal(err)
	}
	_, err = refer("d", walks, "4010232137")
	wantErr(t, err, codes.FailedPrecondition, "CONSENT_REQUIRED")
	c.Name = other
	_, err = refer("e", walks, "4010232137")
	wantErr(t, err, codes.FailedPrecondition, "SERVICE_AT_CAPACITY")
	st, _ := status.FromError(err)
	if info := st.Details()[0].(*errdetails.ErrorInfo); info.Metadata["alternative_services"] != alt {
		t.Errorf("alternatives = %q, want %q", info.Metadata["alternative_services"], alt)
	}
}
