package api_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// chain is a fresh referral chain for one person: the GP "practice" refers
// to the link workers "pcn" (r1), who refer on to "group" (r2), both relying
// on one consent recorded by the GP. Relative to r2, pcn is the referrer,
// group the recipient, practice upstream and "stranger" unrelated.
type chain struct {
	nhs, consent, r1, r2 string
}

var chains int

func (x *exchange) chain(t *testing.T, state pb.ReferralState) chain {
	t.Helper()
	chains++
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	nhs := exchangetest.NHSNumber(chains * 7919)
	refs := pb.NewReferralServiceClient(x.Conn)
	c, err := pb.NewConsentServiceClient(x.Conn).CreateConsent(x.As("practice"), &pb.CreateConsentRequest{Consent: &pb.Consent{
		NhsNumber: nhs, Method: pb.ConsentMethod_CONSENT_METHOD_VERBAL,
		Purposes:       []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER},
		RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}})
	must(err)
	person := ada()
	person.NhsNumber = nhs
	referral := func(svc, parent string) *pb.Referral {
		return &pb.Referral{RecipientService: svc, ParentReferral: parent, Person: person, Consent: c.Name,
			Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE, Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY},
			SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING}
	}
	r1, err := refs.CreateReferral(x.As("practice"), &pb.CreateReferralRequest{RequestId: fmt.Sprint("r1-", chains), Referral: referral("organizations/pcn/services/link-workers", "")})
	must(err)
	_, err = refs.AcceptReferral(x.As("pcn"), &pb.AcceptReferralRequest{Name: r1.Name})
	must(err)
	r2, err := refs.CreateReferral(x.As("pcn"), &pb.CreateReferralRequest{RequestId: fmt.Sprint("r2-", chains), Referral: referral("organizations/group/services/walks", r1.Name)})
	must(err)
	group := x.As("group")
	hold := &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_NO_CAPACITY}
	steps := map[pb.ReferralState][]func() error{
		pb.ReferralState_REFERRAL_STATE_REQUESTED: nil,
		pb.ReferralState_REFERRAL_STATE_ACCEPTED: {
			func() error {
				_, err := refs.AcceptReferral(group, &pb.AcceptReferralRequest{Name: r2.Name})
				return err
			}},
		pb.ReferralState_REFERRAL_STATE_IN_PROGRESS: {
			func() error {
				_, err := refs.AcceptReferral(group, &pb.AcceptReferralRequest{Name: r2.Name})
				return err
			},
			func() error { _, err := refs.StartReferral(group, &pb.StartReferralRequest{Name: r2.Name}); return err }},
		pb.ReferralState_REFERRAL_STATE_ON_HOLD: {
			func() error {
				_, err := refs.AcceptReferral(group, &pb.AcceptReferralRequest{Name: r2.Name})
				return err
			},
			func() error {
				_, err := refs.HoldReferral(group, &pb.HoldReferralRequest{Name: r2.Name, Reason: hold})
				return err
			}},
	}
	s, ok := steps[state]
	if !ok {
		t.Fatalf("no steps to %v", state)
	}
	for _, step := range s {
		must(step())
	}
	return chain{nhs: nhs, consent: c.Name, r1: r1.Name, r2: r2.Name}
}

const vcse = pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION

// chainWorld starts an exchange with the organisations of a chain (the GP
// "practice", the link workers "pcn" with their service link-workers, the
// group "group" with its walks) and the extra organisations given; the
// key "" calls without one.
func chainWorld(t *testing.T, extra map[string]pb.OrganizationKind) *exchange {
	t.Helper()
	x := start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("pcn", pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE)
	x.Org("group", vcse)
	for id, kind := range extra {
		x.Org(id, kind)
	}
	x.Service("pcn", "link-workers", pb.Category_CATEGORY_SOCIAL_ISOLATION)
	x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	x.Keys[""] = ""
	return x
}

// found turns "the list lacks it" into NOT_FOUND, so list rows of the
// matrix read like the others.
func found(ok bool, err error) error {
	if err == nil && !ok {
		return status.Error(codes.NotFound, "not in the list")
	}
	return err
}

// The relationships of the matrix, in column order.
var relations = []string{"referrer", "recipient", "upstream", "unrelated", "admin", "no key"}

// callerFor maps a relationship to r2 (and to the group's directory
// entries) to the organisation making the call.
var callerFor = map[string]string{"referrer": "pcn", "recipient": "group", "upstream": "practice", "unrelated": "stranger", "admin": "operator", "no key": ""}

const (
	ok   = codes.OK
	deny = codes.PermissionDenied
	nf   = codes.NotFound
	anon = codes.Unauthenticated
)

// TestAuthorizationMatrix calls every RPC as every relationship to a
// referral and to a community group's directory entries.
func TestAuthorizationMatrix(t *testing.T) {
	x := chainWorld(t, map[string]pb.OrganizationKind{"stranger": vcse, "ramblers": vcse})
	walks := "organizations/group/services/walks"
	rambles := x.Service("ramblers", "rambles", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)

	refs := pb.NewReferralServiceClient(x.Conn)
	fbs := pb.NewFeedbackServiceClient(x.Conn)
	cons := pb.NewConsentServiceClient(x.Conn)
	dir := pb.NewDirectoryServiceClient(x.Conn)
	capc := pb.NewCapacityServiceClient(x.Conn)
	evs := pb.NewEventServiceClient(x.Conn)
	keys := pb.NewApiKeyServiceClient(x.Conn)
	reps := pb.NewReportServiceClient(x.Conn)
	adm := pb.NewAdminServiceClient(x.Conn)

	requested, accepted := pb.ReferralState_REFERRAL_STATE_REQUESTED, pb.ReferralState_REFERRAL_STATE_ACCEPTED
	inProgress, onHold := pb.ReferralState_REFERRAL_STATE_IN_PROGRESS, pb.ReferralState_REFERRAL_STATE_ON_HOLD
	why := &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_OTHER, Text: "matrix"}
	seq := 0
	id := func(p string) string { seq++; return fmt.Sprintf("%s-%d", p, seq) }
	rows := []struct {
		rpc   string
		state pb.ReferralState // the state r2 is put in first
		call  func(ctx context.Context, c chain) error
		want  [6]codes.Code // in the order of relations
	}{
		// Referrals: visible to referrer, recipient and upstream; state
		// moves by one side only; the operator is never a party.
		{"CreateReferral", inProgress, func(ctx context.Context, c chain) error {
			p := ada()
			p.NhsNumber = c.nhs
			_, err := refs.CreateReferral(ctx, &pb.CreateReferralRequest{RequestId: id("on"), Referral: &pb.Referral{
				RecipientService: rambles, ParentReferral: c.r2, Person: p, Consent: c.consent,
				Route: pb.ReferralRoute_REFERRAL_ROUTE_LINK_WORKER, Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING}})
			return err
		}, [6]codes.Code{deny, ok, deny, nf, deny, anon}},
		{"GetReferral", requested, func(ctx context.Context, c chain) error {
			_, err := refs.GetReferral(ctx, &pb.GetReferralRequest{Name: c.r2})
			return err
		}, [6]codes.Code{ok, ok, ok, nf, nf, anon}},
		{"ListReferrals", requested, func(ctx context.Context, c chain) error {
			l, err := refs.ListReferrals(ctx, &pb.ListReferralsRequest{})
			return found(slices.ContainsFunc(l.GetReferrals(), func(r *pb.Referral) bool { return r.Name == c.r2 }), err)
		}, [6]codes.Code{ok, ok, ok, nf, nf, anon}},
		{"AcceptReferral", requested, func(ctx context.Context, c chain) error {
			_, err := refs.AcceptReferral(ctx, &pb.AcceptReferralRequest{Name: c.r2})
			return err
		}, [6]codes.Code{deny, ok, deny, nf, nf, anon}},
		{"RejectReferral", requested, func(ctx context.Context, c chain) error {
			_, err := refs.RejectReferral(ctx, &pb.RejectReferralRequest{Name: c.r2, Reason: why})
			return err
		}, [6]codes.Code{deny, ok, deny, nf, nf, anon}},
		{"StartReferral", accepted, func(ctx context.Context, c chain) error {
			_, err := refs.StartReferral(ctx, &pb.StartReferralRequest{Name: c.r2})
			return err
		}, [6]codes.Code{deny, ok, deny, nf, nf, anon}},
		{"HoldReferral", accepted, func(ctx context.Context, c chain) error {
			_, err := refs.HoldReferral(ctx, &pb.HoldReferralRequest{Name: c.r2, Reason: why})
			return err
		}, [6]codes.Code{deny, ok, deny, nf, nf, anon}},
		{"ResumeReferral", onHold, func(ctx context.Context, c chain) error {
			_, err := refs.ResumeReferral(ctx, &pb.ResumeReferralRequest{Name: c.r2})
			return err
		}, [6]codes.Code{deny, ok, deny, nf, nf, anon}},
		{"CompleteReferral", inProgress, func(ctx context.Context, c chain) error {
			_, err := refs.CompleteReferral(ctx, &pb.CompleteReferralRequest{Name: c.r2})
			return err
		}, [6]codes.Code{deny, ok, deny, nf, nf, anon}},
		{"FailReferral", inProgress, func(ctx context.Context, c chain) error {
			_, err := refs.FailReferral(ctx, &pb.FailReferralRequest{Name: c.r2, Reason: why})
			return err
		}, [6]codes.Code{deny, ok, deny, nf, nf, anon}},
		{"CancelReferral", requested, func(ctx context.Context, c chain) error {
			_, err := refs.CancelReferral(ctx, &pb.CancelReferralRequest{Name: c.r2, Reason: why})
			return err
		}, [6]codes.Code{ok, deny, deny, nf, nf, anon}},
		{"MarkReferralEnteredInError", accepted, func(ctx context.Context, c chain) error {
			_, err := refs.MarkReferralEnteredInError(ctx, &pb.MarkReferralEnteredInErrorRequest{Name: c.r2})
			return err
		}, [6]codes.Code{ok, deny, deny, nf, nf, anon}},

		// Feedback: notes from either side, uptake and outcomes from the
		// receiver; upstream reads what consent lets it.
		{"CreateFeedback", accepted, func(ctx context.Context, c chain) error {
			_, err := fbs.CreateFeedback(ctx, &pb.CreateFeedbackRequest{Parent: c.r2, Feedback: &pb.Feedback{Content: &pb.Feedback_Note{Note: &pb.Note{Text: "hello"}}}})
			return err
		}, [6]codes.Code{ok, ok, deny, nf, nf, anon}},
		{"CreateFeedback", accepted, func(ctx context.Context, c chain) error {
			_, err := fbs.CreateFeedback(ctx, &pb.CreateFeedbackRequest{Parent: c.r2, Feedback: &pb.Feedback{Content: &pb.Feedback_Uptake{
				Uptake: &pb.Uptake{Status: pb.UptakeStatus_UPTAKE_STATUS_FIRST_SESSION_ATTENDED}}}})
			return err
		}, [6]codes.Code{deny, ok, deny, nf, nf, anon}},
		{"ListFeedback", accepted, func(ctx context.Context, c chain) error {
			_, err := fbs.ListFeedback(ctx, &pb.ListFeedbackRequest{Parent: c.r2})
			return err
		}, [6]codes.Code{ok, ok, ok, nf, nf, anon}},

		// Consent: recorded by anyone supporting the person; visible to the
		// recorder and the parties of open referrals relying on it.
		{"CreateConsent", requested, func(ctx context.Context, c chain) error {
			_, err := cons.CreateConsent(ctx, &pb.CreateConsentRequest{Consent: &pb.Consent{NhsNumber: c.nhs,
				Method: pb.ConsentMethod_CONSENT_METHOD_VERBAL, Purposes: []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE},
				RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}})
			return err
		}, [6]codes.Code{ok, ok, ok, ok, deny, anon}},
		{"GetConsent", requested, func(ctx context.Context, c chain) error {
			_, err := cons.GetConsent(ctx, &pb.GetConsentRequest{Name: c.consent})
			return err
		}, [6]codes.Code{ok, ok, ok, nf, nf, anon}},
		{"ListConsents", requested, func(ctx context.Context, c chain) error {
			l, err := cons.ListConsents(ctx, &pb.ListConsentsRequest{NhsNumber: c.nhs})
			return found(slices.ContainsFunc(l.GetConsents(), func(k *pb.Consent) bool { return k.Name == c.consent }), err)
		}, [6]codes.Code{ok, ok, ok, nf, nf, anon}},
		{"WithdrawConsent", requested, func(ctx context.Context, c chain) error {
			_, err := cons.WithdrawConsent(ctx, &pb.WithdrawConsentRequest{Name: c.consent})
			return err
		}, [6]codes.Code{ok, ok, ok, nf, nf, anon}},

		// Directory: the operator manages organisations; an organisation
		// alone publishes its services and capacity; everyone reads.
		{"CreateOrganization", requested, func(ctx context.Context, c chain) error {
			_, err := dir.CreateOrganization(ctx, &pb.CreateOrganizationRequest{OrganizationId: id("org"),
				Organization: &pb.Organization{Kind: pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION, DisplayName: "New group"}})
			return err
		}, [6]codes.Code{deny, deny, deny, deny, ok, anon}},
		{"GetOrganization", requested, func(ctx context.Context, c chain) error {
			_, err := dir.GetOrganization(ctx, &pb.GetOrganizationRequest{Name: "organizations/group"})
			return err
		}, [6]codes.Code{ok, ok, ok, ok, ok, anon}},
		{"ListOrganizations", requested, func(ctx context.Context, c chain) error {
			_, err := dir.ListOrganizations(ctx, &pb.ListOrganizationsRequest{})
			return err
		}, [6]codes.Code{ok, ok, ok, ok, ok, anon}},
		{"UpdateOrganization", requested, func(ctx context.Context, c chain) error {
			_, err := dir.UpdateOrganization(ctx, &pb.UpdateOrganizationRequest{Organization: &pb.Organization{Name: "organizations/group",
				DisplayName: id("Group")}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}}})
			return err
		}, [6]codes.Code{deny, ok, deny, deny, ok, anon}},
		{"CreateService", requested, func(ctx context.Context, c chain) error {
			_, err := dir.CreateService(ctx, &pb.CreateServiceRequest{Parent: "organizations/group", ServiceId: id("svc"),
				Service: &pb.Service{DisplayName: "Choir", Categories: []pb.Category{pb.Category_CATEGORY_ARTS_AND_CREATIVITY}}})
			return err
		}, [6]codes.Code{deny, ok, deny, deny, ok, anon}},
		{"GetService", requested, func(ctx context.Context, c chain) error {
			_, err := dir.GetService(ctx, &pb.GetServiceRequest{Name: walks})
			return err
		}, [6]codes.Code{ok, ok, ok, ok, ok, anon}},
		{"ListServices", requested, func(ctx context.Context, c chain) error {
			_, err := dir.ListServices(ctx, &pb.ListServicesRequest{Parent: "organizations/group"})
			return err
		}, [6]codes.Code{ok, ok, ok, ok, ok, anon}},
		{"UpdateService", requested, func(ctx context.Context, c chain) error {
			_, err := dir.UpdateService(ctx, &pb.UpdateServiceRequest{Service: &pb.Service{Name: walks, Description: id("walks")},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"description"}}})
			return err
		}, [6]codes.Code{deny, ok, deny, deny, ok, anon}},
		{"SearchServices", requested, func(ctx context.Context, c chain) error {
			_, err := dir.SearchServices(ctx, &pb.SearchServicesRequest{Categories: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}})
			return err
		}, [6]codes.Code{ok, ok, ok, ok, ok, anon}},
		{"GetCapacity", requested, func(ctx context.Context, c chain) error {
			_, err := capc.GetCapacity(ctx, &pb.GetCapacityRequest{Name: walks + "/capacity"})
			return err
		}, [6]codes.Code{ok, ok, ok, ok, ok, anon}},
		{"UpdateCapacity", requested, func(ctx context.Context, c chain) error {
			_, err := capc.UpdateCapacity(ctx, &pb.UpdateCapacityRequest{Capacity: &pb.Capacity{Name: walks + "/capacity",
				Status: pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, Notes: id("notes")}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"notes"}}})
			return err
		}, [6]codes.Code{deny, ok, deny, deny, deny, anon}},

		// Events: each organisation hears of what it may see; the operator
		// hears everything.
		{"ListEvents", requested, func(ctx context.Context, c chain) error {
			l, err := evs.ListEvents(ctx, &pb.ListEventsRequest{PageSize: 1000})
			return found(slices.ContainsFunc(l.GetEvents(), func(e *pb.Event) bool { return e.Resource == c.r2 }), err)
		}, [6]codes.Code{ok, ok, ok, nf, ok, anon}},
		{"WatchEvents", requested, func(ctx context.Context, c chain) error {
			// A public marker after the chain's events ends the watch.
			marker, err := dir.CreateOrganization(x.As("operator"), &pb.CreateOrganizationRequest{OrganizationId: id("marker"),
				Organization: &pb.Organization{Kind: pb.OrganizationKind_ORGANIZATION_KIND_OTHER, DisplayName: "marker"}})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			w, err := evs.WatchEvents(ctx, &pb.WatchEventsRequest{})
			if err != nil {
				return err
			}
			saw := false
			for {
				e, err := w.Recv()
				if err != nil {
					return err
				}
				saw = saw || e.Event.Resource == c.r2
				if e.Event.Resource == marker.Name {
					return found(saw, nil)
				}
			}
		}, [6]codes.Code{ok, ok, ok, nf, ok, anon}},

		// API keys: the organisation itself or the operator.
		{"CreateApiKey", requested, func(ctx context.Context, c chain) error {
			_, err := keys.CreateApiKey(ctx, &pb.CreateApiKeyRequest{Parent: "organizations/group"})
			return err
		}, [6]codes.Code{deny, ok, deny, deny, ok, anon}},
		{"ListApiKeys", requested, func(ctx context.Context, c chain) error {
			_, err := keys.ListApiKeys(ctx, &pb.ListApiKeysRequest{Parent: "organizations/group"})
			return err
		}, [6]codes.Code{deny, ok, deny, deny, ok, anon}},
		{"RevokeApiKey", requested, func(ctx context.Context, c chain) error {
			k, err := keys.CreateApiKey(x.As("operator"), &pb.CreateApiKeyRequest{Parent: "organizations/group"})
			if err != nil {
				return err
			}
			_, err = keys.RevokeApiKey(ctx, &pb.RevokeApiKeyRequest{Name: k.ApiKey.Name})
			return err
		}, [6]codes.Code{deny, ok, deny, deny, ok, anon}},
		// Every organisation may read reports; what they count depends on
		// who asks (TestReportScope).
		{"GetActivityReport", requested, func(ctx context.Context, c chain) error {
			_, err := reps.GetActivityReport(ctx, &pb.GetActivityReportRequest{})
			return err
		}, [6]codes.Code{ok, ok, ok, ok, ok, anon}},
		{"GetOutcomeReport", requested, func(ctx context.Context, c chain) error {
			_, err := reps.GetOutcomeReport(ctx, &pb.GetOutcomeReportRequest{})
			return err
		}, [6]codes.Code{ok, ok, ok, ok, ok, anon}},
		// Administration: the operator alone.
		{"ListAuditEvents", requested, func(ctx context.Context, c chain) error {
			_, err := adm.ListAuditEvents(ctx, &pb.ListAuditEventsRequest{Resource: c.r2})
			return err
		}, [6]codes.Code{deny, deny, deny, deny, ok, anon}},
		{"ErasePerson", requested, func(ctx context.Context, c chain) error {
			_, err := adm.ErasePerson(ctx, &pb.ErasePersonRequest{NhsNumber: c.nhs})
			return err
		}, [6]codes.Code{deny, deny, deny, deny, ok, anon}},
		{"Backup", requested, func(ctx context.Context, c chain) error {
			s, err := adm.Backup(ctx, &pb.BackupRequest{})
			if err != nil {
				return err
			}
			for {
				if _, err := s.Recv(); err == io.EOF {
					return nil
				} else if err != nil {
					return err
				}
			}
		}, [6]codes.Code{deny, deny, deny, deny, ok, anon}},
	}

	// Every RPC of the contract has a row.
	covered := map[string]bool{}
	for _, r := range rows {
		covered[r.rpc] = true
	}
	protoregistry.GlobalFiles.RangeFilesByPackage("exchange.v1", func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			ms := f.Services().Get(i).Methods()
			for j := range ms.Len() {
				if !covered[string(ms.Get(j).Name())] {
					t.Errorf("%s.%s has no row in the authorisation matrix", f.Services().Get(i).Name(), ms.Get(j).Name())
				}
			}
		}
		return true
	})

	for _, r := range rows {
		for i, rel := range relations {
			t.Run(r.rpc+"/"+strings.ReplaceAll(rel, " ", "_"), func(t *testing.T) {
				c := x.chain(t, r.state)
				ctx := context.Background()
				if org := callerFor[rel]; org != "" {
					ctx = x.As(org)
				}
				err := r.call(ctx, c)
				if got := status.Code(err); got != r.want[i] {
					t.Errorf("%s as %s: %v, want %v", r.rpc, rel, err, r.want[i])
				}
				if err == io.EOF {
					t.Errorf("stream ended early")
				}
			})
		}
	}
}
