package policy

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }

func TestRelate(t *testing.T) {
	gp, lw, group := "organizations/gp", "organizations/lw", "organizations/group"
	r1 := &pb.Referral{Name: "referrals/r1", Referrer: gp, Recipient: lw}
	r2 := &pb.Referral{Name: "referrals/r2", Referrer: lw, Recipient: group, ParentReferral: r1.Name}
	for _, c := range []struct {
		org  string
		r    *pb.Referral
		anc  []*pb.Referral
		want Relation
	}{
		{gp, r1, nil, Referrer},
		{lw, r1, nil, Receiver},
		{group, r1, nil, None},
		{lw, r2, []*pb.Referral{r1}, Referrer},
		{group, r2, []*pb.Referral{r1}, Receiver},
		{gp, r2, []*pb.Referral{r1}, Upstream},
		{"organizations/stranger", r2, []*pb.Referral{r1}, None},
		{gp, r2, nil, None},
	} {
		if got := Relate(c.org, c.r, c.anc); got != c.want {
			t.Errorf("Relate(%s, %s) = %v, want %v", c.org, c.r.Name, got, c.want)
		}
	}
	if got := RelateParty(gp, r2); got != Upstream {
		t.Errorf("RelateParty = %v", got)
	}
	if got := Parties(r2, []*pb.Referral{r1}); len(got) != 3 {
		t.Errorf("Parties = %v", got)
	}
}

func TestConsentState(t *testing.T) {
	for _, c := range []struct {
		c    *pb.Consent
		want pb.ConsentState
	}{
		{&pb.Consent{}, pb.ConsentState_CONSENT_STATE_ACTIVE},
		{&pb.Consent{ValidFrom: ts(-time.Hour), ValidUntil: ts(time.Hour)}, pb.ConsentState_CONSENT_STATE_ACTIVE},
		{&pb.Consent{ValidUntil: ts(0)}, pb.ConsentState_CONSENT_STATE_EXPIRED},
		{&pb.Consent{ValidUntil: ts(-time.Second)}, pb.ConsentState_CONSENT_STATE_EXPIRED},
		{&pb.Consent{ValidFrom: ts(time.Hour)}, pb.ConsentState_CONSENT_STATE_PENDING},
		{&pb.Consent{WithdrawTime: ts(-time.Hour), ValidUntil: ts(-time.Minute)}, pb.ConsentState_CONSENT_STATE_WITHDRAWN},
	} {
		if got := ConsentState(c.c, now); got != c.want {
			t.Errorf("ConsentState(%v) = %v, want %v", c.c, got, c.want)
		}
	}
}

func TestViewAndFeedback(t *testing.T) {
	direct := pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE
	fb := pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER
	full := &pb.Consent{Purposes: []pb.ConsentPurpose{direct, fb}}
	careOnly := &pb.Consent{Purposes: []pb.ConsentPurpose{direct}}
	withdrawn := &pb.Consent{Purposes: []pb.ConsentPurpose{direct, fb}, WithdrawTime: ts(-time.Hour)}
	expired := &pb.Consent{Purposes: []pb.ConsentPurpose{direct, fb}, ValidUntil: ts(-time.Hour)}
	note := &pb.Feedback{Author: "organizations/group", Content: &pb.Feedback_Note{Note: &pb.Note{Text: "x"}}}
	uptake := &pb.Feedback{Author: "organizations/group", Content: &pb.Feedback_Uptake{Uptake: &pb.Uptake{}}}
	private := &pb.Feedback{Author: "organizations/group", Audience: pb.FeedbackAudience_FEEDBACK_AUDIENCE_AUTHOR_SIDE, Content: &pb.Feedback_Note{Note: &pb.Note{Text: "x"}}}
	for _, c := range []struct {
		rel                      Relation
		consent                  *pb.Consent
		fullView                 bool
		seesNote, seesUptake     bool
		seesPrivate              bool
		postsNote, postsOutcomes bool
	}{
		{Referrer, full, true, true, true, false, true, false},
		{Referrer, withdrawn, true, true, false, false, true, false},
		{Receiver, full, true, true, true, false, true, true},
		{Receiver, careOnly, true, true, false, false, true, true},
		{Receiver, withdrawn, false, true, false, false, true, true},
		{Receiver, expired, false, true, false, false, true, true},
		{Upstream, full, false, false, true, false, false, false},
		{Upstream, careOnly, false, false, false, false, false, false},
		{Upstream, expired, false, false, false, false, false, false},
		{None, full, false, false, false, false, false, false},
	} {
		name := c.rel.String()
		r := &pb.Referral{Referrer: "organizations/gp"}
		c.consent.RecordedBy = r.Referrer
		if got := View(c.rel, r, c.consent, now) == pb.ReferralView_REFERRAL_VIEW_FULL; got != c.fullView {
			t.Errorf("%s %v: full view = %v", name, c.consent, got)
		}
		org := "organizations/reader"
		if got := FeedbackVisible(org, c.rel, note, c.consent, now); got != c.seesNote {
			t.Errorf("%s %v: sees note = %v", name, c.consent, got)
		}
		if got := FeedbackVisible(org, c.rel, uptake, c.consent, now); got != c.seesUptake {
			t.Errorf("%s %v: sees uptake = %v", name, c.consent, got)
		}
		if got := FeedbackVisible(org, c.rel, private, c.consent, now); got != c.seesPrivate {
			t.Errorf("%s %v: sees author-side note = %v", name, c.consent, got)
		}
		if got := CanPostFeedback(c.rel, note); got != c.postsNote {
			t.Errorf("%s: posts note = %v", name, got)
		}
		if got := CanPostFeedback(c.rel, uptake); got != c.postsOutcomes {
			t.Errorf("%s: posts uptake = %v", name, got)
		}
	}
	// The author always sees its own entries.
	if !FeedbackVisible("organizations/group", Receiver, private, withdrawn, now) {
		t.Error("author cannot see its own note")
	}
	r := &pb.Referral{Person: &pb.Person{GivenName: "Ada"}, Reason: "lonely", State: pb.ReferralState_REFERRAL_STATE_REQUESTED, ReplyBy: ts(-time.Minute),
		PossibleDuplicateOf: "referrals/other"}
	got := Redact(r, Upstream, full, now)
	if got.Person != nil || got.Reason != "" || !got.Overdue || r.Person == nil || got.PossibleDuplicateOf != "" {
		t.Errorf("Redact = %v (original %v)", got, r)
	}
	for rel, want := range map[Relation]string{Referrer: "", Receiver: "referrals/other", Upstream: ""} {
		if got := Redact(r, rel, full, now).PossibleDuplicateOf; got != want {
			t.Errorf("Redact as %s: possible_duplicate_of = %q, want %q", rel, got, want)
		}
	}
}

// TestView: the person's details, for each relation, whether the referrer
// recorded the consent itself (the source) or refers on under a consent
// recorded upstream, and the consent's state.
func TestView(t *testing.T) {
	direct := pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE
	gp, lw := "organizations/gp", "organizations/lw"
	active := func(by string) *pb.Consent { return &pb.Consent{RecordedBy: by, Purposes: []pb.ConsentPurpose{direct}} }
	withdrawn := func(by string) *pb.Consent {
		return &pb.Consent{RecordedBy: by, Purposes: []pb.ConsentPurpose{direct}, WithdrawTime: ts(-time.Hour)}
	}
	original := &pb.Referral{Referrer: gp}
	onward := &pb.Referral{Referrer: lw, ParentReferral: "referrals/r1"}
	for _, c := range []struct {
		name    string
		rel     Relation
		r       *pb.Referral
		consent *pb.Consent
		full    bool
	}{
		{"the GP on its referral", Referrer, original, active(gp), true},
		{"the GP on its referral, withdrawn", Referrer, original, withdrawn(gp), true},
		{"the GP on its referral, consent gone", Referrer, original, nil, true},
		{"the link worker on its onward referral", Referrer, onward, active(gp), true},
		{"the link worker on its onward referral, withdrawn", Referrer, onward, withdrawn(gp), false},
		{"the link worker on its onward referral, consent gone", Referrer, onward, nil, false},
		{"the link worker on an onward referral under its own consent, withdrawn", Referrer, onward, withdrawn(lw), true},
		{"the receiver", Receiver, original, active(gp), true},
		{"the receiver, withdrawn", Receiver, original, withdrawn(gp), false},
		{"upstream", Upstream, onward, active(gp), false},
		{"nobody", None, original, active(gp), false},
	} {
		if got := View(c.rel, c.r, c.consent, now) == pb.ReferralView_REFERRAL_VIEW_FULL; got != c.full {
			t.Errorf("%s: full view = %v, want %v", c.name, got, c.full)
		}
	}
}

func TestCoversRecipient(t *testing.T) {
	named := &pb.Consent{RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_NAMED_ORGANIZATIONS, Recipients: []string{"organizations/a"}}
	chain := &pb.Consent{RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}
	for _, c := range []struct {
		c    *pb.Consent
		org  string
		want bool
	}{
		{named, "organizations/a", true}, {named, "organizations/b", false},
		{chain, "organizations/b", true}, {&pb.Consent{}, "organizations/a", false},
	} {
		if got := CoversRecipient(c.c, c.org); got != c.want {
			t.Errorf("CoversRecipient(%v, %s) = %v", c.c, c.org, got)
		}
	}
}

func TestAdmit(t *testing.T) {
	for st := range pb.CapacityStatus_name {
		s := pb.CapacityStatus(st)
		a := Admit(s)
		switch s {
		case pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, pb.CapacityStatus_CAPACITY_STATUS_ADDITIONAL_ASSESSMENT_REQUIRED:
			if a.Refused || a.State != pb.ReferralState_REFERRAL_STATE_REQUESTED {
				t.Errorf("%v: %+v", s, a)
			}
		case pb.CapacityStatus_CAPACITY_STATUS_WAITLIST:
			if a.Refused || a.State != pb.ReferralState_REFERRAL_STATE_ON_HOLD {
				t.Errorf("%v: %+v", s, a)
			}
		default:
			if !a.Refused {
				t.Errorf("%v admits", s)
			}
		}
		if HasCapacity(s) == a.Refused {
			t.Errorf("HasCapacity(%v) disagrees with Admit", s)
		}
	}
}

func TestCountAndAutoSwitch(t *testing.T) {
	requested, inProgress := pb.ReferralState_REFERRAL_STATE_REQUESTED, pb.ReferralState_REFERRAL_STATE_IN_PROGRESS
	onHold, completed := pb.ReferralState_REFERRAL_STATE_ON_HOLD, pb.ReferralState_REFERRAL_STATE_COMPLETED
	accepting, full := pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY
	c := &pb.Capacity{Status: accepting, MaxActiveReferrals: 2}
	steps := []struct {
		from, to       pb.ReferralState
		active, waited int32
		status         pb.CapacityStatus
		switched       bool
	}{
		{0, requested, 1, 0, accepting, false},
		{0, onHold, 1, 1, accepting, false},
		{onHold, requested, 2, 0, full, true},
		{requested, inProgress, 2, 0, full, false},
		{inProgress, completed, 1, 0, accepting, true},
		{requested, onHold, 0, 1, accepting, false},
	}
	for i, s := range steps {
		switched := Count(c, s.from, s.to)
		if c.ActiveReferrals != s.active || c.WaitlistedReferrals != s.waited || c.Status != s.status || switched != s.switched {
			t.Fatalf("step %d %v->%v: %v (switched %v)", i, s.from, s.to, c, switched)
		}
	}
	// A status the organisation set itself is never undone.
	c = &pb.Capacity{Status: full, MaxActiveReferrals: 2}
	if Count(c, 0, requested) || c.Status != full {
		t.Errorf("manual NO_CAPACITY changed: %v", c)
	}
	c = &pb.Capacity{Status: pb.CapacityStatus_CAPACITY_STATUS_PAUSED, MaxActiveReferrals: 1}
	if Count(c, 0, requested) || c.Status != pb.CapacityStatus_CAPACITY_STATUS_PAUSED {
		t.Errorf("PAUSED changed: %v", c)
	}
}

func TestMayManage(t *testing.T) {
	const owner, other = "organizations/group", "organizations/other"
	for method, s := range Stewards {
		for _, c := range []struct {
			caller   string
			operator bool
			want     bool
		}{
			{owner, false, s != OperatorOnly},
			{other, false, false},
			{"organizations/operator", true, s != OwnerOnly},
		} {
			if got := MayManage(method, c.caller, c.operator, owner); got != c.want {
				t.Errorf("%s by %s (operator %v) = %v, want %v", method, c.caller, c.operator, got, c.want)
			}
		}
	}
	if MayManage("DeleteEverything", owner, true, owner) {
		t.Error("a method missing from Stewards is allowed")
	}
	if MayManage("CreateService", "", false, "") {
		t.Error("an empty owner matched an empty caller")
	}
}

func TestReportRules(t *testing.T) {
	evaluation := []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION}
	care := []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER}
	for _, c := range []struct {
		consent *pb.Consent
		want    bool
	}{
		{nil, false},
		{&pb.Consent{State: pb.ConsentState_CONSENT_STATE_ACTIVE, Purposes: evaluation}, true},
		{&pb.Consent{State: pb.ConsentState_CONSENT_STATE_EXPIRED, Purposes: evaluation}, true},
		{&pb.Consent{WithdrawTime: timestamppb.Now(), Purposes: evaluation}, false},
		{&pb.Consent{State: pb.ConsentState_CONSENT_STATE_ACTIVE, Purposes: care}, false},
	} {
		if got := CountsInReports(c.consent); got != c.want {
			t.Errorf("CountsInReports(%v) = %v", c.consent, got)
		}
	}
	for _, c := range []struct {
		kind     pb.OrganizationKind
		operator bool
		want     bool
	}{
		{pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER, false, true},
		{pb.OrganizationKind_ORGANIZATION_KIND_OPERATOR, true, true},
		{pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE, false, false},
		{pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION, false, false},
	} {
		if got := ReportsOnEveryone(c.kind, c.operator); got != c.want {
			t.Errorf("ReportsOnEveryone(%v, %v) = %v", c.kind, c.operator, got)
		}
	}
	r := &pb.Referral{Referrer: "organizations/gp", Recipient: "organizations/group"}
	for org, want := range map[string]bool{"organizations/gp": true, "organizations/group": true, "organizations/lw": false, "": false} {
		if InOwnReports(org, r) != want {
			t.Errorf("InOwnReports(%q) != %v", org, want)
		}
	}
}

// TestMethodPolicies: the contract's method options say, for each RPC,
// what the interceptors and the directory's checks do with its calls.
func TestMethodPolicies(t *testing.T) {
	unaudited := []string{
		"DirectoryService/CreateOrganization", "DirectoryService/GetOrganization", "DirectoryService/ListOrganizations",
		"DirectoryService/UpdateOrganization", "DirectoryService/CreateService", "DirectoryService/GetService",
		"DirectoryService/ListServices", "DirectoryService/UpdateService", "DirectoryService/SearchServices",
		"CapacityService/GetCapacity", "CapacityService/UpdateCapacity", "EventService/WatchEvents", "EventService/ListEvents",
	}
	n := 0
	for method, audited := range Audited {
		n++
		short := strings.TrimPrefix(method, "/exchange.v1.")
		if want := !slices.Contains(unaudited, short); audited != want {
			t.Errorf("%s audited %v, want %v", method, audited, want)
		}
	}
	if n != 39 {
		t.Errorf("%d RPCs have a policy; the contract has 39", n)
	}
	want := map[string]Steward{
		"CreateOrganization": OperatorOnly, "UpdateOrganization": OwnerOrOperator, "CreateService": OwnerOrOperator,
		"UpdateService": OwnerOrOperator, "UpdateCapacity": OwnerOnly, "CreateApiKey": OwnerOrOperator,
		"ListApiKeys": OwnerOrOperator, "RevokeApiKey": OwnerOrOperator, "ListAuditEvents": OperatorOnly,
		"ErasePerson": OperatorOnly, "Backup": OperatorOnly,
	}
	if !maps.Equal(Stewards, want) {
		t.Errorf("stewards %v, want %v", Stewards, want)
	}
}

// TestWhoMayStart: every kind of organisation may refer and record consent
// on its own account, but for commissioners, who record no consent; the
// operator neither.
func TestWhoMayStart(t *testing.T) {
	for v := range pb.OrganizationKind_name {
		kind := pb.OrganizationKind(v)
		for _, operator := range []bool{false, true} {
			for method, want := range map[string]bool{
				"CreateReferral": !operator,
				"CreateConsent":  !operator && kind != pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER,
				"GetReferral":    true,
			} {
				ok, why := MayStart(method, kind, operator)
				if ok != want || ok != (why == "") {
					t.Errorf("MayStart(%s, %v, operator %v) = %v %q, want %v", method, kind, operator, ok, why, want)
				}
			}
		}
	}
}

func TestReferOnAndRelyOn(t *testing.T) {
	for rel, want := range map[Relation]bool{None: false, Referrer: false, Receiver: true, Upstream: false} {
		if MayReferOn(rel) != want {
			t.Errorf("MayReferOn(%v) = %v", rel, !want)
		}
	}
	c := &pb.Consent{Name: "consents/c", RecordedBy: "organizations/gp"}
	for _, tc := range []struct {
		c      *pb.Consent
		org    string
		parent *pb.Referral
		want   bool
	}{
		{c, "organizations/gp", nil, true},
		{c, "organizations/lw", nil, false},
		{c, "organizations/lw", &pb.Referral{Consent: "consents/c"}, true},
		{c, "organizations/lw", &pb.Referral{Consent: "consents/other"}, false},
		{nil, "organizations/gp", nil, false},
	} {
		if got := MayRelyOn(tc.c, tc.org, tc.parent); got != tc.want {
			t.Errorf("MayRelyOn(%v, %s, %v) = %v", tc.c, tc.org, tc.parent, got)
		}
	}
	if got := ConsentAudience(c, []string{"organizations/lw", "organizations/gp"}, []string{"organizations/walks"}); !slices.Equal(got,
		[]string{"organizations/gp", "organizations/lw", "organizations/walks"}) {
		t.Errorf("ConsentAudience = %v", got)
	}
}
