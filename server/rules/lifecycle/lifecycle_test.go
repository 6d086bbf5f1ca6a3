package lifecycle_test

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/lifecycle"
)

// TestEveryTriple walks every (state, action, side) triple and checks the
// outcome the API promises.
func TestEveryTriple(t *testing.T) {
	type key struct {
		from   pb.ReferralState
		action lifecycle.Action
		side   lifecycle.Side
	}
	R, F := lifecycle.Receiver, lifecycle.Referrer
	S := func(s string) pb.ReferralState { return pb.ReferralState(pb.ReferralState_value["REFERRAL_STATE_"+s]) }
	allowed := map[key]pb.ReferralState{
		{S("REQUESTED"), lifecycle.Accept, R}:     S("ACCEPTED"),
		{S("REQUESTED"), lifecycle.Reject, R}:     S("REJECTED"),
		{S("REQUESTED"), lifecycle.Hold, R}:       S("ON_HOLD"),
		{S("REQUESTED"), lifecycle.Cancel, F}:     S("CANCELLED"),
		{S("ACCEPTED"), lifecycle.Start, R}:       S("IN_PROGRESS"),
		{S("ACCEPTED"), lifecycle.Hold, R}:        S("ON_HOLD"),
		{S("ACCEPTED"), lifecycle.Fail, R}:        S("FAILED"),
		{S("ACCEPTED"), lifecycle.Cancel, F}:      S("CANCELLED"),
		{S("IN_PROGRESS"), lifecycle.Hold, R}:     S("ON_HOLD"),
		{S("IN_PROGRESS"), lifecycle.Complete, R}: S("COMPLETED"),
		{S("IN_PROGRESS"), lifecycle.Fail, R}:     S("FAILED"),
		{S("IN_PROGRESS"), lifecycle.Cancel, F}:   S("CANCELLED"),
		{S("ON_HOLD"), lifecycle.Accept, R}:       S("ACCEPTED"),
		{S("ON_HOLD"), lifecycle.Resume, R}:       S("ACCEPTED"), // held from REQUESTED in this test
		{S("ON_HOLD"), lifecycle.Reject, R}:       S("REJECTED"),
		{S("ON_HOLD"), lifecycle.Fail, R}:         S("FAILED"),
		{S("ON_HOLD"), lifecycle.Cancel, F}:       S("CANCELLED"),
	}
	for _, s := range []string{"REQUESTED", "ACCEPTED", "REJECTED", "IN_PROGRESS", "ON_HOLD", "COMPLETED", "FAILED", "CANCELLED"} {
		allowed[key{S(s), lifecycle.MarkEnteredInError, F}] = S("ENTERED_IN_ERROR")
	}
	states := []pb.ReferralState{}
	for v := range pb.ReferralState_name {
		if v != 0 {
			states = append(states, pb.ReferralState(v))
		}
	}
	n := 0
	for _, from := range states {
		for _, a := range lifecycle.Actions {
			for _, side := range []lifecycle.Side{R, F} {
				n++
				move, err := lifecycle.Apply(from, S("REQUESTED"), a, side)
				want, ok := allowed[key{from, a, side}]
				_, otherSideOK := allowed[key{from, a, 3 - side}]
				switch {
				case ok:
					if err != nil || move.To != want {
						t.Errorf("%v %v by %v = %v, %v; want %v", from, a, side, move.To, err, want)
					}
				case otherSideOK:
					if !errors.Is(err, lifecycle.ErrWrongSide) {
						t.Errorf("%v %v by %v: err %v, want ErrWrongSide", from, a, side, err)
					}
				default:
					if !errors.Is(err, lifecycle.ErrInvalidTransition) {
						t.Errorf("%v %v by %v: err %v, want ErrInvalidTransition", from, a, side, err)
					}
				}
			}
		}
	}
	if n != 9*9*2 {
		t.Fatalf("walked %d triples", n)
	}
}

// TestExchangeMoves: the exchange's own moves are its alone, from the states
// the contract names, each with the reason it sets.
func TestExchangeMoves(t *testing.T) {
	open := []pb.ReferralState{pb.ReferralState_REFERRAL_STATE_REQUESTED, pb.ReferralState_REFERRAL_STATE_ACCEPTED,
		pb.ReferralState_REFERRAL_STATE_IN_PROGRESS, pb.ReferralState_REFERRAL_STATE_ON_HOLD}
	for _, a := range lifecycle.ExchangeActions {
		if lifecycle.Reasons[a].GetCode() == 0 {
			t.Errorf("%v sets no reason", a)
		}
		for v := range pb.ReferralState_name {
			from := pb.ReferralState(v)
			if from == 0 {
				continue
			}
			want := lifecycle.Open(from) && (a != lifecycle.NoResponse || from == open[0])
			move, err := lifecycle.Apply(from, 0, a, lifecycle.Exchange)
			if (err == nil) != want {
				t.Errorf("%v from %v by the exchange: %v, want allowed %v", a, from, err, want)
			}
			if want && (!lifecycle.Counts(move.To) || lifecycle.Open(move.To) || move.Reason != lifecycle.ReasonSet) {
				t.Errorf("%v from %v: %+v, want a closed state with the reason set", a, from, move)
			}
			for _, side := range []lifecycle.Side{lifecycle.Referrer, lifecycle.Receiver} {
				if _, err := lifecycle.Apply(from, 0, a, side); err == nil {
					t.Errorf("%v from %v allowed to the %v", a, from, side)
				}
			}
		}
	}
}

// TestNothingReturnsToRequested: no move leads to REQUESTED, so an answered
// referral is never again overdue or unanswered (the store's deadline
// indexes drop it for good).
func TestNothingReturnsToRequested(t *testing.T) {
	for _, r := range lifecycle.Table {
		if r.To == pb.ReferralState_REFERRAL_STATE_REQUESTED {
			t.Errorf("%v from %v returns to REQUESTED", r.Action, r.From)
		}
	}
	for _, held := range []pb.ReferralState{pb.ReferralState_REFERRAL_STATE_REQUESTED, pb.ReferralState_REFERRAL_STATE_ACCEPTED, pb.ReferralState_REFERRAL_STATE_IN_PROGRESS} {
		if m, _ := lifecycle.Apply(pb.ReferralState_REFERRAL_STATE_ON_HOLD, held, lifecycle.Resume, lifecycle.Receiver); m.To == pb.ReferralState_REFERRAL_STATE_REQUESTED {
			t.Errorf("resume held from %v returns to REQUESTED", held)
		}
	}
}

func TestOverdueAndCounts(t *testing.T) {
	due := timestamppb.New(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	at := due.AsTime()
	for _, tc := range []struct {
		r    *pb.Referral
		now  time.Time
		want bool
	}{
		{&pb.Referral{State: pb.ReferralState_REFERRAL_STATE_REQUESTED, ReplyBy: due}, at.Add(time.Second), true},
		{&pb.Referral{State: pb.ReferralState_REFERRAL_STATE_REQUESTED, ReplyBy: due}, at, false},
		{&pb.Referral{State: pb.ReferralState_REFERRAL_STATE_REQUESTED}, at.Add(time.Hour), false},
		{&pb.Referral{State: pb.ReferralState_REFERRAL_STATE_ACCEPTED, ReplyBy: due}, at.Add(time.Hour), false},
		{nil, at, false},
	} {
		if got := lifecycle.Overdue(tc.r, tc.now); got != tc.want {
			t.Errorf("Overdue(%v, %v) = %v", tc.r, tc.now, got)
		}
	}
	for v := range pb.ReferralState_name {
		if s := pb.ReferralState(v); lifecycle.Counts(s) == (s == pb.ReferralState_REFERRAL_STATE_ENTERED_IN_ERROR) {
			t.Errorf("Counts(%v) = %v", s, lifecycle.Counts(s))
		}
	}
}

func TestResumeReturnsToWhereItWasHeld(t *testing.T) {
	for held, want := range map[pb.ReferralState]pb.ReferralState{
		pb.ReferralState_REFERRAL_STATE_REQUESTED:   pb.ReferralState_REFERRAL_STATE_ACCEPTED,
		pb.ReferralState_REFERRAL_STATE_ACCEPTED:    pb.ReferralState_REFERRAL_STATE_ACCEPTED,
		pb.ReferralState_REFERRAL_STATE_IN_PROGRESS: pb.ReferralState_REFERRAL_STATE_IN_PROGRESS,
	} {
		m, err := lifecycle.Apply(pb.ReferralState_REFERRAL_STATE_ON_HOLD, held, lifecycle.Resume, lifecycle.Receiver)
		if err != nil || m.To != want {
			t.Errorf("resume held from %v = %v, %v; want %v", held, m.To, err, want)
		}
	}
}

func TestReasonsRequiredWhereGravitySaysSo(t *testing.T) {
	for _, r := range lifecycle.Table {
		switch r.To {
		case pb.ReferralState_REFERRAL_STATE_REJECTED, pb.ReferralState_REFERRAL_STATE_CANCELLED,
			pb.ReferralState_REFERRAL_STATE_ON_HOLD, pb.ReferralState_REFERRAL_STATE_FAILED:
			if r.Reason != lifecycle.ReasonRequired && (r.Side != lifecycle.Exchange || r.Reason != lifecycle.ReasonSet) {
				t.Errorf("%v -> %v by %v needs a required reason", r.From, r.To, r.Action)
			}
		}
	}
}

// TestTableMatchesContract checks that every row of Table appears in the
// transition table documented on ReferralState, so the contract and the
// code cannot drift apart silently.
func TestTableMatchesContract(t *testing.T) {
	src, err := os.ReadFile("../../../proto/exchange/v1/referral.proto")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(src)
	for _, r := range lifecycle.Table {
		from := strings.TrimPrefix(r.From.String(), "REFERRAL_STATE_")
		if r.Action == lifecycle.MarkEnteredInError {
			if !strings.Contains(doc, "| any but ENTERED_IN_ERROR | MarkReferralEnteredInError | referrer | ENTERED_IN_ERROR |") {
				t.Error("contract lacks the MarkReferralEnteredInError row")
			}
			continue
		}
		if r.Side == lifecycle.Exchange && r.Action != lifecycle.NoResponse {
			reason := strings.TrimPrefix(lifecycle.Reasons[r.Action].Code.String(), "STATE_REASON_CODE_")
			row := "| any open    | " + pad(r.Action.String(), 23) + " | exchange | " + pad(strings.TrimPrefix(r.To.String(), "REFERRAL_STATE_"), 16) + " | set: " + reason + " |"
			if !strings.Contains(doc, row) {
				t.Errorf("contract lacks the row %q", row)
			}
			continue
		}
		row := "| " + pad(from, 11) + " | " + pad(r.Action.String(), 23) + " | " + pad(r.Side.String(), 8) + " | "
		if !strings.Contains(doc, row) {
			t.Errorf("contract lacks a row starting %q", row)
		}
	}
}

func pad(s string, n int) string {
	for len(s) < n {
		s += " "
	}
	return s
}

// TestMark: each milestone is recorded once, at the first move that
// reaches it, and only the receiver's moves answer a referral.
func TestMark(t *testing.T) {
	at := func(h int64) *timestamppb.Timestamp { return &timestamppb.Timestamp{Seconds: h * 3600} }
	r := &pb.Referral{State: pb.ReferralState_REFERRAL_STATE_ON_HOLD}
	lifecycle.Mark(r, 0, at(1)) // created on a waiting list by the exchange
	if r.ResponseTime != nil || r.AcceptTime != nil {
		t.Fatalf("a move by no side marked %v", r)
	}
	for i, step := range []struct {
		to   pb.ReferralState
		side lifecycle.Side
	}{
		{pb.ReferralState_REFERRAL_STATE_ACCEPTED, lifecycle.Receiver},
		{pb.ReferralState_REFERRAL_STATE_IN_PROGRESS, lifecycle.Receiver},
		{pb.ReferralState_REFERRAL_STATE_ON_HOLD, lifecycle.Receiver},
		{pb.ReferralState_REFERRAL_STATE_IN_PROGRESS, lifecycle.Receiver},
		{pb.ReferralState_REFERRAL_STATE_CANCELLED, lifecycle.Referrer},
	} {
		r.State = step.to
		lifecycle.Mark(r, step.side, at(int64(i+2)))
	}
	if r.ResponseTime.GetSeconds() != 2*3600 || r.AcceptTime.GetSeconds() != 2*3600 || r.StartTime.GetSeconds() != 3*3600 {
		t.Errorf("milestones: answered %v, accepted %v, started %v", r.ResponseTime, r.AcceptTime, r.StartTime)
	}
}

// TestActionOf: each state method is the contract's ReferralAction of its
// name (AcceptReferral is ACCEPT), and the exchange's own moves none.
func TestActionOf(t *testing.T) {
	for _, a := range lifecycle.Actions {
		code := strings.TrimPrefix(lifecycle.ActionOf(a).String(), "REFERRAL_ACTION_")
		name := strings.TrimSuffix(a.String(), "Referral")
		if a == lifecycle.MarkEnteredInError {
			name = "MarkEnteredInError"
		}
		if strings.ReplaceAll(code, "_", "") != strings.ToUpper(name) {
			t.Errorf("%v is %v", a, lifecycle.ActionOf(a))
		}
	}
	for _, a := range lifecycle.ExchangeActions {
		if lifecycle.ActionOf(a) != pb.ReferralAction_REFERRAL_ACTION_UNSPECIFIED {
			t.Errorf("%v is %v", a, lifecycle.ActionOf(a))
		}
	}
}
