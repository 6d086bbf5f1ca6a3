// Package policy holds the exchange's access rules as data: how an
// organisation relates to a referral, what each relationship may see of the
// person and of each kind of feedback given the consent at that moment, and
// how capacity admits and counts referrals. The api package calls these and
// nothing else decides them.
package policy

import (
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/lifecycle"
	"github.com/social-prescribing/exchange/server/rules/validate"
)

// Relation is how an organisation relates to a referral.
type Relation int

const (
	// None: no relation; the referral does not exist for it (NOT_FOUND).
	None Relation = iota
	// Referrer made the referral.
	Referrer
	// Receiver owns the recipient service.
	Receiver
	// Upstream is a party of an ancestor referral (e.g. the GP whose link
	// worker referred on).
	Upstream
)

func (r Relation) String() string {
	return [...]string{"none", "referrer", "receiver", "upstream"}[r]
}

// Side returns the lifecycle side of a direct party.
func (r Relation) Side() (lifecycle.Side, bool) {
	switch r {
	case Referrer:
		return lifecycle.Referrer, true
	case Receiver:
		return lifecycle.Receiver, true
	}
	return 0, false
}

// Starts says, for each act a caller starts on its own account, who may
// not: the operator, who is never a party to a person's care, and the
// kinds of organisation listed, with why. An act missing here is not
// refused by it.
var Starts = map[string]Start{
	"CreateReferral": {Why: "the operator is never a party to a referral"},
	"CreateConsent": {NotKinds: []pb.OrganizationKind{pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER},
		Why: "consent is recorded by the organisations that support the person"},
}

// Start is who may not start an act: the operator always, and NotKinds.
type Start struct {
	NotKinds []pb.OrganizationKind
	Why      string
}

// MayStart reports whether a caller of kind (the operator or not) may start
// method, and if not, why.
func MayStart(method string, kind pb.OrganizationKind, operator bool) (bool, string) {
	st, ok := Starts[method]
	if !ok {
		return true, ""
	}
	if operator || slices.Contains(st.NotKinds, kind) {
		return false, st.Why
	}
	return true, ""
}

// MayReferOn reports whether an organisation of relation rel to a referral
// may refer the person on from it: its receiver alone, who now supports
// them.
func MayReferOn(rel Relation) bool { return rel == Receiver }

// MayRelyOn reports whether org may make a referral relying on consent c:
// it recorded c, or it refers on from parent, a referral relying on c.
// Whether c allows the referral (its person, purpose, recipients, state)
// is Allows and CoversRecipient.
func MayRelyOn(c *pb.Consent, org string, parent *pb.Referral) bool {
	return c != nil && (c.RecordedBy == org || parent != nil && parent.Consent == c.Name)
}

// ConsentAudience is who may see consent c: the organisation that recorded
// it and the parties of the open referrals relying on it (parties, each
// from Parties), sorted, once each.
func ConsentAudience(c *pb.Consent, parties ...[]string) []string {
	aud := []string{c.RecordedBy}
	for _, p := range parties {
		aud = append(aud, p...)
	}
	slices.Sort(aud)
	return slices.Compact(aud)
}

// Relate returns how org relates to r; ancestors are r's parent, its
// parent, and so on.
func Relate(org string, r *pb.Referral, ancestors []*pb.Referral) Relation {
	switch org {
	case r.Referrer:
		return Referrer
	case r.Recipient:
		return Receiver
	}
	for _, a := range ancestors {
		if org == a.Referrer || org == a.Recipient {
			return Upstream
		}
	}
	return None
}

// RelateParty returns how org relates to r when org is already known to be
// one of r's parties (from Parties or the party index): anyone but the two
// direct sides is upstream.
func RelateParty(org string, r *pb.Referral) Relation {
	if rel := Relate(org, r, nil); rel != None {
		return rel
	}
	return Upstream
}

// Parties returns every organisation that may see r.
func Parties(r *pb.Referral, ancestors []*pb.Referral) []string {
	out := []string{r.Referrer, r.Recipient}
	for _, a := range ancestors {
		out = append(out, a.Referrer, a.Recipient)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ConsentState is the state of c at time now.
func ConsentState(c *pb.Consent, now time.Time) pb.ConsentState {
	switch {
	case c.WithdrawTime != nil:
		return pb.ConsentState_CONSENT_STATE_WITHDRAWN
	case c.ValidUntil != nil && !now.Before(c.ValidUntil.AsTime()):
		return pb.ConsentState_CONSENT_STATE_EXPIRED
	case c.ValidFrom != nil && now.Before(c.ValidFrom.AsTime()):
		return pb.ConsentState_CONSENT_STATE_PENDING
	}
	return pb.ConsentState_CONSENT_STATE_ACTIVE
}

// Allows reports whether c is active at now and includes purpose.
func Allows(c *pb.Consent, now time.Time, purpose pb.ConsentPurpose) bool {
	return c != nil && ConsentState(c, now) == pb.ConsentState_CONSENT_STATE_ACTIVE && slices.Contains(c.Purposes, purpose)
}

// CoversRecipient reports whether c lets a referral go to organisation org.
func CoversRecipient(c *pb.Consent, org string) bool {
	switch c.RecipientScope {
	case pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN:
		return true
	case pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_NAMED_ORGANIZATIONS:
		return slices.Contains(c.Recipients, org)
	}
	return false
}

// View is what a relation sees of referral r's person, given its consent c
// now (the table is on ReferralView in referral.proto):
//
//	referrer that is the source  FULL always (it collected the details)
//	other referrer, receiver     FULL while c allows DIRECT_CARE, else WITHOUT_PERSON
//	upstream                     WITHOUT_PERSON (it holds the details through its own referral)
//
// So once the person withdraws consent, nobody downstream of the
// organisation that recorded it keeps the details.
func View(rel Relation, r *pb.Referral, c *pb.Consent, now time.Time) pb.ReferralView {
	switch {
	case rel == Referrer && Source(r, c),
		(rel == Referrer || rel == Receiver) && Allows(c, now, pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE):
		return pb.ReferralView_REFERRAL_VIEW_FULL
	}
	return pb.ReferralView_REFERRAL_VIEW_WITHOUT_PERSON
}

// Source reports whether r's referrer collected the person's details
// itself: it recorded the consent r relies on (c), or, where that consent
// is gone, r is not an onward referral. A link worker referring on under
// the GP's consent is not the source; one that recorded its own consent is.
func Source(r *pb.Referral, c *pb.Consent) bool {
	if c == nil {
		return r.ParentReferral == ""
	}
	return c.RecordedBy == r.Referrer
}

// Redact returns the referral as the relation may see it now, with its
// output-only read-time fields (view, overdue) set.
func Redact(r *pb.Referral, rel Relation, c *pb.Consent, now time.Time) *pb.Referral {
	out := proto.Clone(r).(*pb.Referral)
	Withhold(out, View(rel, r, c, now))
	if rel != Receiver {
		out.PossibleDuplicateOf = "" // it names a referral only the receiver may see
	}
	out.Overdue = lifecycle.Overdue(r, now)
	out.Actions = Actions(r, rel)
	return out
}

// Actions is what an organisation of relation rel may do with r now: the
// state methods its side may call from r's state (lifecycle's table) and
// the feedback it may post (CanPostFeedback, on a referral that
// TakesFeedback).
func Actions(r *pb.Referral, rel Relation) []pb.ReferralAction {
	side, ok := rel.Side()
	if !ok {
		return nil
	}
	var out []pb.ReferralAction
	for _, a := range lifecycle.Actions {
		if _, err := lifecycle.Apply(r.State, r.HeldFrom, a, side); err == nil {
			out = append(out, lifecycle.ActionOf(a))
		}
	}
	if TakesFeedback(r) {
		if CanPostFeedback(rel, &pb.Feedback{Content: &pb.Feedback_Note{}}) {
			out = append(out, pb.ReferralAction_REFERRAL_ACTION_POST_NOTE)
		}
		if CanPostFeedback(rel, &pb.Feedback{Content: &pb.Feedback_Uptake{}}) {
			out = append(out, pb.ReferralAction_REFERRAL_ACTION_POST_UPTAKE_OR_OUTCOME)
		}
	}
	return out
}

// TakesFeedback reports whether r may be given feedback at all: it
// happened (lifecycle.Counts), and its personal details were not cleared,
// since a note would bring back what was cleared (a retry's stored answer
// went with it). CreateFeedback and Actions both ask it.
func TakesFeedback(r *pb.Referral) bool { return lifecycle.Counts(r.State) && r.EraseTime == nil }

// Withhold sets r's view and clears what the view does not show: below
// FULL, the person and the reason.
func Withhold(r *pb.Referral, view pb.ReferralView) {
	r.View = view
	if view != pb.ReferralView_REFERRAL_VIEW_FULL {
		r.Person = nil
		r.Reason = ""
	}
}

// FeedbackVisible reports whether org, related to the referral by rel, may
// read f given the referral's consent now. The table is on FeedbackService
// in feedback.proto.
func FeedbackVisible(org string, rel Relation, f *pb.Feedback, c *pb.Consent, now time.Time) bool {
	if f.Author == org {
		return true
	}
	if f.Audience == pb.FeedbackAudience_FEEDBACK_AUDIENCE_AUTHOR_SIDE || rel == None {
		return false
	}
	switch f.Content.(type) {
	case *pb.Feedback_Note:
		return rel == Referrer || rel == Receiver
	default: // uptake and outcomes
		return Allows(c, now, pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER)
	}
}

// CanPostFeedback reports whether a relation may post this kind of feedback.
func CanPostFeedback(rel Relation, f *pb.Feedback) bool {
	switch f.Content.(type) {
	case *pb.Feedback_Note:
		return rel == Referrer || rel == Receiver
	default:
		return rel == Receiver
	}
}

// Admission is what CreateReferral does for a capacity status: the state a
// new referral starts in, or refused.
type Admission struct {
	Refused bool
	State   pb.ReferralState
}

// Admit is the capacity table on CapacityStatus in capacity.proto.
func Admit(status pb.CapacityStatus) Admission {
	switch status {
	case pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, pb.CapacityStatus_CAPACITY_STATUS_ADDITIONAL_ASSESSMENT_REQUIRED:
		return Admission{State: pb.ReferralState_REFERRAL_STATE_REQUESTED}
	case pb.CapacityStatus_CAPACITY_STATUS_WAITLIST:
		return Admission{State: pb.ReferralState_REFERRAL_STATE_ON_HOLD}
	}
	return Admission{Refused: true}
}

// HasCapacity reports whether a service with this status can take a referral.
func HasCapacity(status pb.CapacityStatus) bool { return !Admit(status).Refused }

// Count moves one referral of the service from state from to state to in
// the capacity counts (UNSPECIFIED from: a new referral), then applies the
// automatic switch. It reports whether the status changed.
func Count(c *pb.Capacity, from, to pb.ReferralState) bool {
	if lifecycle.Active(from) {
		c.ActiveReferrals--
	}
	if lifecycle.Waitlisted(from) {
		c.WaitlistedReferrals--
	}
	if lifecycle.Active(to) {
		c.ActiveReferrals++
	}
	if lifecycle.Waitlisted(to) {
		c.WaitlistedReferrals++
	}
	return AutoSwitch(c)
}

// AutoSwitch sets ACCEPTING to NO_CAPACITY when the maximum of active
// referrals is reached, and back when a place frees up, but only undoes a
// switch it made itself. It reports whether the status changed.
func AutoSwitch(c *pb.Capacity) bool {
	full := c.MaxActiveReferrals > 0 && c.ActiveReferrals >= c.MaxActiveReferrals
	switch {
	case full && c.Status == pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING:
		c.Status, c.StatusSetAutomatically = pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY, true
		return true
	case !full && c.StatusSetAutomatically && c.Status == pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY:
		c.Status, c.StatusSetAutomatically = pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, false
		return true
	}
	return false
}

// Steward is who may change an organisation's directory entries and keys.
type Steward int

// The stewards, as the contract's Steward enum numbers them.
const (
	// OperatorOnly: the operator of the exchange.
	OperatorOnly = Steward(pb.Steward_STEWARD_OPERATOR_ONLY)
	// OwnerOnly: the organisation itself; the operator may not speak for it.
	OwnerOnly = Steward(pb.Steward_STEWARD_OWNER_ONLY)
	// OwnerOrOperator: the organisation itself or the operator.
	OwnerOrOperator = Steward(pb.Steward_STEWARD_OWNER_OR_OPERATOR)
)

func (s Steward) String() string {
	return [...]string{"", "only the operator of the exchange may do this",
		"only the organisation itself may do this",
		"only the organisation itself or the operator may do this"}[s]
}

// Stewards says, for each method that changes the directory or the keys,
// and the operator's, who may call it on an organisation's resources, by
// the method's short name: the steward of its MethodPolicy in the contract
// (options.proto). A method missing here is refused.
var Stewards = map[string]Steward{}

// MayManage reports whether caller (the operator or not) may call method on
// resources of the organisation owner.
func MayManage(method, caller string, operator bool, owner string) bool {
	switch Stewards[method] {
	case OperatorOnly:
		return operator
	case OwnerOnly:
		return caller == owner && owner != ""
	case OwnerOrOperator:
		return operator || (caller == owner && owner != "")
	}
	return false
}

// ReportsOnEveryone reports whether a caller's reports count every referral
// (commissioners and the operator) rather than only the referrals it made
// or received.
func ReportsOnEveryone(kind pb.OrganizationKind, operator bool) bool {
	return operator || kind == pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER
}

// InOwnReports reports whether org made or received r.
func InOwnReports(org string, r *pb.Referral) bool {
	return org != "" && (r.Referrer == org || r.Recipient == org)
}

// CountsInReports reports whether a referral relying on consent c may be
// counted in reports: c includes EVALUATION and has not been withdrawn. An
// expired consent still covers what was recorded while it was in force.
func CountsInReports(c *pb.Consent) bool {
	return c != nil && c.WithdrawTime == nil &&
		slices.Contains(c.Purposes, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION)
}

// SharedInReports reports whether outcome feedback f, on a referral relying
// on consent c, counts in the referrer's own reports: the receiver did not
// keep it to its own side, and c allowed FEEDBACK_TO_REFERRER when it was
// posted (as FeedbackVisible has it then). As for evaluation, a consent
// that expired since still covers what was shared while it was in force;
// a withdrawn one counts nothing (CountsInReports).
func SharedInReports(f *pb.Feedback, c *pb.Consent) bool {
	return f.Audience != pb.FeedbackAudience_FEEDBACK_AUDIENCE_AUTHOR_SIDE &&
		Allows(c, f.CreateTime.AsTime(), pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER)
}

// Audited says, for every RPC of the contract by its full name, whether its
// calls go in the audit log: the audited of its MethodPolicy in the contract
// (options.proto), which every RPC carries (TestEveryRPCHasItsPolicy).
var Audited = map[string]bool{}

func init() {
	protoregistry.GlobalFiles.RangeFilesByPackage("exchange.v1", func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			for j := range svc.Methods().Len() {
				m := svc.Methods().Get(j)
				p, ok := MethodPolicy(m)
				if !ok {
					continue
				}
				Audited["/"+string(svc.FullName())+"/"+string(m.Name())] = p.GetAudited()
				if p.GetSteward() != pb.Steward_STEWARD_UNSPECIFIED {
					Stewards[string(m.Name())] = Steward(p.GetSteward())
				}
			}
		}
		return true
	})
}

// MethodPolicy is the policy the contract gives method m, and whether it
// gives one.
func MethodPolicy(m protoreflect.MethodDescriptor) (*pb.MethodPolicy, bool) {
	opts, ok := m.Options().(*descriptorpb.MethodOptions)
	if !ok || opts == nil || !proto.HasExtension(opts, pb.E_Method) {
		return nil, false
	}
	return proto.GetExtension(opts, pb.E_Method).(*pb.MethodPolicy), true
}

// ClearPerson clears a referral's personal fields, as erasure and the
// retention period require: the person keeps only sex and the ten-year age
// band at referral (what reports split by), and the free-text reason goes.
// Everything else (states, times, needs, route, service) stays, so counts and
// reports do not change. It reports whether anything was cleared.
func ClearPerson(r *pb.Referral, now time.Time) bool {
	if r.EraseTime != nil {
		return false
	}
	kept := &pb.Person{Sex: r.Person.GetSex(), AgeBand: AgeBand(r.Person.GetDateOfBirth(), r.CreateTime.AsTime())}
	r.Person, r.Reason, r.EraseTime = kept, "", timestamppb.New(now)
	return true
}

// ClearNote clears the free text of a note, which may name the person;
// uptake and outcome scores stay for reports. It reports whether anything
// was cleared.
func ClearNote(f *pb.Feedback) bool {
	if n := f.GetNote(); n != nil && n.Text != "" {
		n.Text = ""
		return true
	}
	return false
}

// AgeBand is the ten-year band ("50-59", "90+") of someone born on dob
// (YYYY-MM-DD) at time at, or "" when dob is not a date.
func AgeBand(dob string, at time.Time) string {
	age := validate.Age(dob, at)
	switch {
	case age < 0:
		return ""
	case age >= 90:
		return "90+"
	}
	lo := age / 10 * 10
	return fmt.Sprintf("%d-%d", lo, lo+9)
}
