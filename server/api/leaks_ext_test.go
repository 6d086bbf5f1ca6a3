package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
)

// TestListFilterNeverWidens: a filter that names another organisation's
// inbox or referrals, or a referral the caller may not see, lists nothing
// (issue 25, defect 1).
func TestListFilterNeverWidens(t *testing.T) {
	x := chainWorld(t, map[string]pb.OrganizationKind{"stranger": vcse, "ramblers": vcse, "icb": pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER})
	c := x.chain(t, pb.ReferralState_REFERRAL_STATE_REQUESTED)
	refs := pb.NewReferralServiceClient(x.Conn)
	filters := []string{
		`recipient = "organizations/pcn"`, `recipient = "organizations/group"`,
		`recipient = "organizations/group/services/walks"`, `referrer = "organizations/practice"`,
		`referrer = "organizations/pcn"`, `parent = "` + c.r1 + `"`,
		`recipient = "organizations/group" AND state = REQUESTED`,
		`referrer = "organizations/pcn" AND recipient = "organizations/group"`,
	}
	for _, caller := range []string{"stranger", "icb", "ramblers", "operator"} {
		for _, f := range filters {
			l, err := refs.ListReferrals(x.As(caller), &pb.ListReferralsRequest{Filter: f})
			if n := len(l.GetReferrals()); n > 0 || l.GetNextPageToken() != "" {
				t.Errorf("%s with filter %s: %d referrals, next %q; want none", caller, f, n, l.GetNextPageToken())
			}
			if f[:6] == "parent" {
				wantErr(t, err, nf, "RESOURCE_NOT_FOUND")
			} else if err != nil {
				t.Errorf("%s with filter %s: %v", caller, f, err)
			}
		}
	}
	// The parties still find them through the same filters.
	for caller, f := range map[string]string{
		"practice": `recipient = "organizations/group"`, "group": `referrer = "organizations/pcn"`,
		"pcn": `recipient = "organizations/group/services/walks"`,
	} {
		l, err := refs.ListReferrals(x.As(caller), &pb.ListReferralsRequest{Filter: f})
		if err != nil || len(l.Referrals) != 1 || l.Referrals[0].Name != c.r2 {
			t.Errorf("%s with filter %s = %v, %v; want %s", caller, f, l, err, c.r2)
		}
	}
}

// TestListConsentsTellsNothingOfOthers: a page of consents for an NHS number
// counts only those the caller may read, so neither its items nor its
// token tell a stranger that others exist.
func TestListConsentsTellsNothingOfOthers(t *testing.T) {
	x := start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("stranger", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	// The stranger's consent comes first: a token after it would tell of
	// those recorded since.
	mine := x.ConsentFor("stranger", adaNHS, nil)
	for range 3 {
		x.ConsentFor("practice", adaNHS, nil)
	}
	cons := pb.NewConsentServiceClient(x.Conn)
	l, err := cons.ListConsents(x.As("stranger"), &pb.ListConsentsRequest{NhsNumber: adaNHS, PageSize: 1})
	if err != nil || len(l.Consents) != 1 || l.Consents[0].Name != mine.Name || l.NextPageToken != "" {
		t.Fatalf("stranger's consents = %v, %v; want only its own and no next page", l, err)
	}
	l, err = cons.ListConsents(x.As("practice"), &pb.ListConsentsRequest{NhsNumber: adaNHS, PageSize: 2})
	if err != nil || len(l.Consents) != 2 || l.NextPageToken == "" {
		t.Fatalf("practice's first page = %v, %v; want two and a next page", l, err)
	}
}

// rawCodec sends a request's bytes as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }
func (rawCodec) Name() string                       { return "proto" }

// TestMalformedMessages: bytes that are not the request's message, or a
// string that is not UTF-8, are INVALID_ARGUMENT MALFORMED_REQUEST with an
// ErrorInfo, as over REST (defect 6), not grpc-go's INTERNAL.
func TestMalformedMessages(t *testing.T) {
	x := start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	for name, b := range map[string][]byte{
		"bad UTF-8": {0x0a, 0x01, 0xff},
		"truncated": {0x0a, 0x05, 'a'},
		"bad tag":   {0x00},
	} {
		for _, who := range []string{"practice", ""} {
			err := x.Conn.Invoke(x.As(who), "/exchange.v1.ReferralService/GetReferral", b, new(pb.Referral), grpc.ForceCodec(rawCodec{}))
			wantErr(t, err, codes.InvalidArgument, "MALFORMED_REQUEST")
			if t.Failed() {
				t.Fatalf("%s as %q", name, who)
			}
		}
	}
	// A stream's request too; and refused without a key, before its
	// handler reads it, the codec's note of it goes.
	for _, who := range []string{"practice", ""} {
		s, err := pb.NewEventServiceClient(x.Conn).WatchEvents(x.As(who), &pb.WatchEventsRequest{}, grpc.ForceCodec(rawCodecFor{[]byte{0x08}}))
		if err == nil {
			_, err = s.Recv()
		}
		if who != "" {
			wantErr(t, err, codes.InvalidArgument, "MALFORMED_REQUEST")
		} else if status.Code(err) != codes.Unauthenticated {
			t.Errorf("a malformed stream without a key: %v", err)
		}
	}
	if n := api.Undecodable(); n != 0 {
		t.Errorf("%d notes of undecodable requests left behind", n)
	}
}

// rawCodecFor sends fixed bytes whatever the message.
type rawCodecFor struct{ b []byte }

func (c rawCodecFor) Marshal(any) ([]byte, error) { return c.b, nil }
func (rawCodecFor) Unmarshal(data []byte, v any) error {
	return proto.Unmarshal(data, v.(proto.Message))
}
func (rawCodecFor) Name() string { return "proto" }

// TestTwoCredentialsAreRefused: more than one authorization value is
// UNAUTHENTICATED AMBIGUOUS_CREDENTIALS, whichever comes first (defect 8):
// the exchange never picks one.
func TestTwoCredentialsAreRefused(t *testing.T) {
	x := start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	dir := pb.NewDirectoryServiceClient(x.Conn)
	for _, pair := range [][2]string{{"practice", "group"}, {"practice", "practice"}, {"practice", "nonsense"}} {
		ctx := metadata.AppendToOutgoingContext(x.As(pair[0]), "authorization", "Bearer "+x.Keys[pair[1]])
		_, err := dir.ListOrganizations(ctx, &pb.ListOrganizationsRequest{})
		wantErr(t, err, codes.Unauthenticated, "AMBIGUOUS_CREDENTIALS")
		s, err := pb.NewEventServiceClient(x.Conn).WatchEvents(ctx, &pb.WatchEventsRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		wantErr(t, err, codes.Unauthenticated, "AMBIGUOUS_CREDENTIALS")
	}
	if _, err := dir.ListOrganizations(x.As("practice"), &pb.ListOrganizationsRequest{}); err != nil {
		t.Fatalf("one key: %v", err)
	}
}

// TestCallerDeadline: a call whose absolute deadline (pb.DeadlineMetadata)
// has passed when the exchange reads it is dropped, not written, even if
// gRPC's time remaining has not run out; a value that is not a time is
// MALFORMED_REQUEST.
func TestCallerDeadline(t *testing.T) {
	x := start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	cons := pb.NewConsentServiceClient(x.Conn)
	create := func(ctx context.Context) error {
		_, err := cons.CreateConsent(ctx, &pb.CreateConsentRequest{RequestId: "late", Consent: &pb.Consent{NhsNumber: adaNHS,
			Method: pb.ConsentMethod_CONSENT_METHOD_VERBAL, Purposes: []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE},
			RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}})
		return err
	}
	past := metadata.AppendToOutgoingContext(x.As("practice"), pb.DeadlineMetadata, time.Now().Add(-time.Second).Format(time.RFC3339Nano))
	ctx, cancel := context.WithTimeout(past, 10*time.Second)
	defer cancel()
	wantErr(t, create(ctx), codes.DeadlineExceeded, "DEADLINE_PASSED")
	// Of two values (a proxy added its own), the earliest holds.
	two := metadata.AppendToOutgoingContext(x.As("practice"), pb.DeadlineMetadata, time.Now().Add(time.Minute).Format(time.RFC3339Nano),
		pb.DeadlineMetadata, time.Now().Add(-time.Second).Format(time.RFC3339Nano))
	if err := create(two); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a call with two deadlines, one past: %v; want DEADLINE_EXCEEDED", err)
	}
	bad := metadata.AppendToOutgoingContext(x.As("practice"), pb.DeadlineMetadata, "soon")
	wantErr(t, create(bad), codes.InvalidArgument, "MALFORMED_REQUEST")
	if l, err := cons.ListConsents(x.As("practice"), &pb.ListConsentsRequest{NhsNumber: adaNHS}); err != nil || len(l.Consents) != 0 {
		t.Fatalf("consents after the dropped calls = %v, %v; want none", l, err)
	}
	future := metadata.AppendToOutgoingContext(x.As("practice"), pb.DeadlineMetadata, time.Now().Add(time.Minute).Format(time.RFC3339Nano))
	if err := create(future); err != nil {
		t.Fatalf("a call within its deadline: %v", err)
	}
}

// TestDuplicateCheckTellsStrangersNothing: an organisation that records its
// own consent for a person and refers them to a service learns nothing of
// an open referral there it may not see (issue 25, defect 2): its referral
// is made, and only the receiver sees it flagged as a possible duplicate. A
// caller that may see the open referral is still told of it.
func TestDuplicateCheckTellsStrangersNothing(t *testing.T) {
	x := chainWorld(t, map[string]pb.OrganizationKind{"stranger": pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE})
	walks := "organizations/group/services/walks"
	c := x.chain(t, pb.ReferralState_REFERRAL_STATE_REQUESTED) // r2: pcn -> group's walks
	refs := pb.NewReferralServiceClient(x.Conn)

	mine := x.ConsentFor("stranger", c.nhs, nil)
	r, err := x.Refer("stranger", "dup-1", walks, c.nhs, mine.Name)
	if err != nil {
		t.Fatalf("the stranger's referral: %v; want it made, telling nothing", err)
	}
	if r.PossibleDuplicateOf != "" {
		t.Fatalf("the stranger is told of %s", r.PossibleDuplicateOf)
	}
	for _, who := range []string{"stranger", "practice", "pcn"} {
		got, err := refs.GetReferral(x.As(who), &pb.GetReferralRequest{Name: r.Name})
		if who != "stranger" {
			wantErr(t, err, nf, "RESOURCE_NOT_FOUND")
			continue
		}
		if err != nil || got.PossibleDuplicateOf != "" {
			t.Errorf("%s reads %v, %v; want no flag", who, got, err)
		}
	}
	got, err := refs.GetReferral(x.As("group"), &pb.GetReferralRequest{Name: r.Name})
	if err != nil || got.PossibleDuplicateOf != c.r2 {
		t.Fatalf("the receiver reads %v, %v; want it flagged as a possible duplicate of %s", got, err, c.r2)
	}
	l, err := refs.ListReferrals(x.As("group"), &pb.ListReferralsRequest{Filter: `recipient = "organizations/group"`})
	if err != nil || len(l.Referrals) != 2 || l.Referrals[1].PossibleDuplicateOf != c.r2 || l.Referrals[0].PossibleDuplicateOf != "" {
		t.Fatalf("the receiver's inbox = %v, %v", l, err)
	}
	if _, err := refs.RejectReferral(x.As("group"), &pb.RejectReferralRequest{Name: r.Name,
		Reason: &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_DUPLICATE}}); err != nil {
		t.Fatal(err)
	}
	// Those who may see r2 are told of it: its referrer, and the GP upstream.
	_, err = x.Refer("pcn", "dup-2", walks, c.nhs, x.ConsentFor("pcn", c.nhs, nil).Name)
	wantErr(t, err, codes.AlreadyExists, "DUPLICATE_REFERRAL")
	if st, _ := status.FromError(err); !strings.Contains(fmt.Sprint(st.Details()), c.r2) {
		t.Errorf("the duplicate error does not name %s: %v", c.r2, st.Details())
	}
	_, err = x.Refer("practice", "dup-3", walks, c.nhs, c.consent)
	wantErr(t, err, codes.AlreadyExists, "DUPLICATE_REFERRAL")
	// Once r2 closes, the stranger's next referral is not flagged.
	if _, err := refs.CancelReferral(x.As("pcn"), &pb.CancelReferralRequest{Name: c.r2,
		Reason: &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_NEEDS_CHANGED}}); err != nil {
		t.Fatal(err)
	}
	r, err = x.Refer("stranger", "dup-4", walks, c.nhs, mine.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := refs.GetReferral(x.As("group"), &pb.GetReferralRequest{Name: r.Name}); got.GetPossibleDuplicateOf() != "" {
		t.Errorf("flagged after the other closed: %v", got)
	}
}

// TestWithdrawalHidesThePersonDownstream: once the person withdraws the
// consent the GP recorded, only the GP sees them, on its own referral; the
// link worker no longer does, neither on the referral it received nor on
// the onward referral it made under that consent (issue 25, defect 3).
func TestWithdrawalHidesThePersonDownstream(t *testing.T) {
	x := chainWorld(t, nil)
	c := x.chain(t, pb.ReferralState_REFERRAL_STATE_ACCEPTED)
	refs := pb.NewReferralServiceClient(x.Conn)
	views := func() map[string]pb.ReferralView {
		out := map[string]pb.ReferralView{}
		for _, who := range []string{"practice", "pcn", "group"} {
			for i, r := range []string{c.r1, c.r2} {
				got, err := refs.GetReferral(x.As(who), &pb.GetReferralRequest{Name: r})
				if err != nil {
					if who == "group" && r == c.r1 {
						continue
					}
					t.Fatal(err)
				}
				if (got.View == pb.ReferralView_REFERRAL_VIEW_FULL) != (got.Person != nil) {
					t.Fatalf("%s on r%d: view %v with person %v", who, i+1, got.View, got.Person)
				}
				out[fmt.Sprintf("%s r%d", who, i+1)] = got.View
			}
		}
		return out
	}
	full, without := pb.ReferralView_REFERRAL_VIEW_FULL, pb.ReferralView_REFERRAL_VIEW_WITHOUT_PERSON
	before := map[string]pb.ReferralView{"practice r1": full, "practice r2": without, "pcn r1": full, "pcn r2": full, "group r2": full}
	if got := views(); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("before withdrawal: %v, want %v", got, before)
	}
	if _, err := pb.NewConsentServiceClient(x.Conn).WithdrawConsent(x.As("practice"), &pb.WithdrawConsentRequest{Name: c.consent}); err != nil {
		t.Fatal(err)
	}
	after := map[string]pb.ReferralView{"practice r1": full, "practice r2": without, "pcn r1": without, "pcn r2": without, "group r2": without}
	if got := views(); fmt.Sprint(got) != fmt.Sprint(after) {
		t.Fatalf("after withdrawal: %v, want %v", got, after)
	}
	// The same in the lists.
	l, err := refs.ListReferrals(x.As("pcn"), &pb.ListReferralsRequest{})
	if err != nil || len(l.Referrals) != 2 || l.Referrals[0].Person != nil || l.Referrals[1].Person != nil {
		t.Fatalf("the link worker's list after withdrawal = %v, %v", l, err)
	}
}

// TestFeedbackNamesItsParent: a malformed parent of feedback is named as
// parent, the field the caller sent.
func TestFeedbackNamesItsParent(t *testing.T) {
	x := chainWorld(t, nil)
	fbs := pb.NewFeedbackServiceClient(x.Conn)
	_, err := fbs.ListFeedback(x.As("practice"), &pb.ListFeedbackRequest{Parent: "nonsense"})
	_, err2 := fbs.CreateFeedback(x.As("practice"), &pb.CreateFeedbackRequest{Parent: "nonsense",
		Feedback: &pb.Feedback{Content: &pb.Feedback_Note{Note: &pb.Note{Text: "hi"}}}})
	for _, e := range []error{err, err2} {
		wantErr(t, e, codes.InvalidArgument, "FIELD_INVALID")
		if st, _ := status.FromError(e); !strings.Contains(st.Message(), "parent must be referrals/") {
			t.Errorf("%v; want the field parent", e)
		}
	}
}
