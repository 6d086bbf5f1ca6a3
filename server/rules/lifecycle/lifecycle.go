// Package lifecycle is the referral state machine: the one table that says
// which side may move a referral from which state to which, and whether the
// move needs a reason, the exchange's own moves among them; and what the
// states mean (open, active, overdue, counted). The comment on
// ReferralState in referral.proto shows the same table to API users;
// TestTableMatchesContract keeps them together.
package lifecycle

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// Action is a state method of ReferralService.
type Action int

// The state methods, named as in the API.
const (
	Accept Action = iota + 1
	Reject
	Start
	Hold
	Resume
	Complete
	Fail
	Cancel
	MarkEnteredInError
	// The exchange's own moves, side Exchange; no RPC.

	// NoResponse rejects a referral left unanswered past its reply-by
	// and the operator's grace (--auto-reject-after).
	NoResponse
	// ConsentWithdrawn cancels an open referral whose consent was
	// withdrawn.
	ConsentWithdrawn
	// Erased cancels an open referral whose person was erased.
	Erased
)

// Actions lists every state method, for table-driven tests.
var Actions = []Action{Accept, Reject, Start, Hold, Resume, Complete, Fail, Cancel, MarkEnteredInError}

// ActionOf is a state method as the contract's ReferralAction names it
// (Referral.actions); UNSPECIFIED for the exchange's own moves.
func ActionOf(a Action) pb.ReferralAction {
	if a < Accept || a > MarkEnteredInError {
		return pb.ReferralAction_REFERRAL_ACTION_UNSPECIFIED
	}
	return pb.ReferralAction(a) // numbered alike (TestActionOf)
}

// ExchangeActions lists the exchange's own moves.
var ExchangeActions = []Action{NoResponse, ConsentWithdrawn, Erased}

// String returns the RPC name of the action.
func (a Action) String() string {
	switch a {
	case Accept:
		return "AcceptReferral"
	case Reject:
		return "RejectReferral"
	case Start:
		return "StartReferral"
	case Hold:
		return "HoldReferral"
	case Resume:
		return "ResumeReferral"
	case Complete:
		return "CompleteReferral"
	case Fail:
		return "FailReferral"
	case Cancel:
		return "CancelReferral"
	case MarkEnteredInError:
		return "MarkReferralEnteredInError"
	case NoResponse:
		return "(no response)"
	case ConsentWithdrawn:
		return "(consent withdrawn)"
	case Erased:
		return "(person erased)"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Side is which end of a referral a caller is on.
type Side int

const (
	// Referrer made the referral.
	Referrer Side = iota + 1
	// Receiver owns the recipient service.
	Receiver
	// Exchange is the exchange itself, moving a referral for a reason of
	// its own: a deadline, a withdrawn consent, an erasure.
	Exchange
)

// String returns "referrer", "receiver" or "exchange".
func (s Side) String() string {
	switch s {
	case Referrer:
		return "referrer"
	case Exchange:
		return "exchange"
	}
	return "receiver"
}

// Reason says whether a move needs a StateReason.
type Reason int

const (
	// NoReason: a reason, if given, is ignored.
	NoReason Reason = iota
	// ReasonRequired: a coded reason must be given.
	ReasonRequired
	// ReasonOptional: a reason may be given and is kept.
	ReasonOptional
	// ReasonSet: the exchange sets the reason of its own move (Reasons).
	ReasonSet
)

// Reasons are the reasons of the exchange's own moves.
var Reasons = map[Action]*pb.StateReason{
	NoResponse:       {Code: pb.StateReasonCode_STATE_REASON_CODE_NO_RESPONSE, Text: "no reply by the deadline; the referrer may refer elsewhere"},
	ConsentWithdrawn: {Code: pb.StateReasonCode_STATE_REASON_CODE_CONSENT_WITHDRAWN, Text: "the person withdrew consent"},
	Erased:           {Code: pb.StateReasonCode_STATE_REASON_CODE_ERASED},
}

type (
	state = pb.ReferralState
)

const (
	requested      = pb.ReferralState_REFERRAL_STATE_REQUESTED
	accepted       = pb.ReferralState_REFERRAL_STATE_ACCEPTED
	rejected       = pb.ReferralState_REFERRAL_STATE_REJECTED
	inProgress     = pb.ReferralState_REFERRAL_STATE_IN_PROGRESS
	onHold         = pb.ReferralState_REFERRAL_STATE_ON_HOLD
	completed      = pb.ReferralState_REFERRAL_STATE_COMPLETED
	failed         = pb.ReferralState_REFERRAL_STATE_FAILED
	cancelled      = pb.ReferralState_REFERRAL_STATE_CANCELLED
	enteredInError = pb.ReferralState_REFERRAL_STATE_ENTERED_IN_ERROR
)

// Rule is one row of the transition table. To is UNSPECIFIED for Resume,
// whose target depends on the state the referral was held from.
type Rule struct {
	From   state
	Action Action
	Side   Side
	To     state
	Reason Reason
}

// Table is the transition table. Keep it in step with the comment on
// ReferralState in proto/exchange/v1/referral.proto.
var Table = []Rule{
	{requested, Accept, Receiver, accepted, NoReason},
	{requested, Reject, Receiver, rejected, ReasonRequired},
	{requested, Hold, Receiver, onHold, ReasonRequired},
	{requested, Cancel, Referrer, cancelled, ReasonRequired},
	{accepted, Start, Receiver, inProgress, NoReason},
	{accepted, Hold, Receiver, onHold, ReasonRequired},
	{accepted, Fail, Receiver, failed, ReasonRequired},
	{accepted, Cancel, Referrer, cancelled, ReasonRequired},
	{inProgress, Hold, Receiver, onHold, ReasonRequired},
	{inProgress, Complete, Receiver, completed, NoReason},
	{inProgress, Fail, Receiver, failed, ReasonRequired},
	{inProgress, Cancel, Referrer, cancelled, ReasonRequired},
	{onHold, Accept, Receiver, accepted, NoReason},
	{onHold, Resume, Receiver, pb.ReferralState_REFERRAL_STATE_UNSPECIFIED, NoReason},
	{onHold, Reject, Receiver, rejected, ReasonRequired},
	{onHold, Fail, Receiver, failed, ReasonRequired},
	{onHold, Cancel, Referrer, cancelled, ReasonRequired},
	{requested, MarkEnteredInError, Referrer, enteredInError, ReasonOptional},
	{accepted, MarkEnteredInError, Referrer, enteredInError, ReasonOptional},
	{rejected, MarkEnteredInError, Referrer, enteredInError, ReasonOptional},
	{inProgress, MarkEnteredInError, Referrer, enteredInError, ReasonOptional},
	{onHold, MarkEnteredInError, Referrer, enteredInError, ReasonOptional},
	{completed, MarkEnteredInError, Referrer, enteredInError, ReasonOptional},
	{failed, MarkEnteredInError, Referrer, enteredInError, ReasonOptional},
	{cancelled, MarkEnteredInError, Referrer, enteredInError, ReasonOptional},
	{requested, NoResponse, Exchange, rejected, ReasonSet},
	{requested, ConsentWithdrawn, Exchange, cancelled, ReasonSet},
	{accepted, ConsentWithdrawn, Exchange, cancelled, ReasonSet},
	{inProgress, ConsentWithdrawn, Exchange, cancelled, ReasonSet},
	{onHold, ConsentWithdrawn, Exchange, cancelled, ReasonSet},
	{requested, Erased, Exchange, cancelled, ReasonSet},
	{accepted, Erased, Exchange, cancelled, ReasonSet},
	{inProgress, Erased, Exchange, cancelled, ReasonSet},
	{onHold, Erased, Exchange, cancelled, ReasonSet},
}

// ErrInvalidTransition: the action is not allowed from this state by anyone.
var ErrInvalidTransition = errors.New("invalid transition")

// ErrWrongSide: the action is allowed from this state, but only to the other side.
var ErrWrongSide = errors.New("action belongs to the other side")

// Move is the outcome of a successful lookup.
type Move struct {
	To     state
	Reason Reason
}

// Apply looks up the move of action by side from state from. heldFrom is the
// referral's held_from, used by Resume.
func Apply(from, heldFrom state, action Action, side Side) (Move, error) {
	wrongSide := false
	for _, r := range Table {
		if r.From != from || r.Action != action {
			continue
		}
		if r.Side != side {
			wrongSide = true
			continue
		}
		to := r.To
		if action == Resume {
			to = accepted
			if heldFrom == inProgress {
				to = inProgress
			}
		}
		return Move{To: to, Reason: r.Reason}, nil
	}
	if wrongSide {
		return Move{}, ErrWrongSide
	}
	return Move{}, ErrInvalidTransition
}

// Open reports whether a referral in state s is still open (not closed).
func Open(s state) bool {
	switch s {
	case requested, accepted, inProgress, onHold:
		return true
	}
	return false
}

// Active reports whether a referral in state s counts against its service's
// maximum of active referrals.
func Active(s state) bool { return s == requested || s == accepted || s == inProgress }

// Waitlisted reports whether a referral in state s counts as waitlisted.
func Waitlisted(s state) bool { return s == onHold }

// Counts reports whether a referral in state s happened: it is counted in
// reports and takes feedback. One ENTERED_IN_ERROR never should have existed.
func Counts(s state) bool { return s != enteredInError }

// Overdue reports whether r is overdue at now: still REQUESTED past its
// reply-by deadline. Nothing moves back to REQUESTED
// (TestNothingReturnsToRequested), so once answered a referral is never
// overdue again, which the store's deadline indexes rely on.
func Overdue(r *pb.Referral, now time.Time) bool {
	return r.GetState() == requested && r.GetReplyBy() != nil && now.After(r.GetReplyBy().AsTime())
}

// Mark records, the first time only, the milestones r reached with a move
// by side at time at: the receiver's first answer (response_time), the
// first ACCEPTED (accept_time), the first IN_PROGRESS (start_time). Call it
// after setting r's new state.
func Mark(r *pb.Referral, side Side, at *timestamppb.Timestamp) {
	if side == Receiver && r.ResponseTime == nil {
		r.ResponseTime = at
	}
	if r.State == pb.ReferralState_REFERRAL_STATE_ACCEPTED && r.AcceptTime == nil {
		r.AcceptTime = at
	}
	if r.State == pb.ReferralState_REFERRAL_STATE_IN_PROGRESS && r.StartTime == nil {
		r.StartTime = at
	}
}
