package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/filter"
	"github.com/social-prescribing/exchange/server/rules/lifecycle"
	"github.com/social-prescribing/exchange/server/rules/names"
	"github.com/social-prescribing/exchange/server/rules/policy"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/server/storage"
)

// SnomedReferralToSocialPrescribing is the SNOMED CT concept of every referral.
const SnomedReferralToSocialPrescribing = "871731000000106"

type referrals struct {
	*core
	pb.UnimplementedReferralServiceServer
}

// ancestors returns r's parent, grandparent, ... (at most 16 deep).
func ancestors(tx storage.ReadTx, r *pb.Referral) ([]*pb.Referral, error) {
	var out []*pb.Referral
	for p := r.ParentReferral; p != "" && len(out) < 16; {
		a, err := tx.GetReferral(p)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
		p = a.ParentReferral
	}
	return out, nil
}

// load reads a referral with what the rules need: how the caller relates to
// it, its parties and its consent. A referral the caller may not see is
// NOT_FOUND, exactly like one that does not exist.
type loaded struct {
	r       *pb.Referral
	rel     policy.Relation
	parties []string
	consent *pb.Consent
}

func load(ctx context.Context, tx storage.ReadTx, name string) (*loaded, error) {
	var v validate.Violations
	referralName(&v, "name", name)
	if err := invalid(v); err != nil {
		return nil, err
	}
	r, err := tx.GetReferral(name)
	if err != nil {
		return nil, notFoundOr(err, name)
	}
	anc, err := ancestors(tx, r)
	if err != nil {
		return nil, err
	}
	rel := policy.Relate(CallerFrom(ctx).Org, r, anc)
	if rel == policy.None {
		return nil, notFound(name)
	}
	c, err := tx.GetConsent(r.Consent)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	return &loaded{r: r, rel: rel, parties: policy.Parties(r, anc), consent: c}, nil
}

// referralName checks that field holds a referral's name.
func referralName(v *validate.Violations, field, name string) {
	if _, ok := names.Referral(name); !ok {
		v.Add(field, "must be referrals/{referral}")
	}
}

func consentRequired(msg, consent string, state pb.ConsentState) error {
	return apiError(codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_CONSENT_REQUIRED, msg,
		map[string]string{"consent": consent, "consent_state": strings.TrimPrefix(state.String(), "CONSENT_STATE_")})
}

func (s *referrals) CreateReferral(ctx context.Context, req *pb.CreateReferralRequest) (*pb.Referral, error) {
	caller := CallerFrom(ctx)
	if ok, why := policy.MayStart("CreateReferral", caller.Kind, caller.Operator); !ok {
		return nil, notAllowed("referrals", why)
	}
	now := s.clock(ctx)
	var v validate.Violations
	validate.NewReferral(&v, "referral", req.Referral, now)
	validate.RequestID(&v, "request_id", req.RequestId, true)
	if req.Referral != nil && names.OrgOfService(req.Referral.RecipientService) == caller.Org {
		v.Add("referral.recipient_service", "is a service of the caller's own organisation")
	}
	if err := invalid(v); err != nil {
		return nil, err
	}
	in := req.Referral
	resp := &pb.Referral{}
	err := s.mutate(ctx, "CreateReferral", req.RequestId, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		svc, err := tx.GetService(in.RecipientService)
		if err != nil {
			return nil, notFoundOr(err, in.RecipientService)
		}
		recipient := names.OrgOfService(svc.Name)
		var parent *pb.Referral
		if in.ParentReferral != "" {
			p, err := load(ctx, tx, in.ParentReferral)
			if err != nil {
				return nil, err
			}
			if !policy.MayReferOn(p.rel) {
				return nil, notAllowed(in.ParentReferral, "only the receiver of a referral may refer on from it")
			}
			if !lifecycle.Open(p.r.State) {
				return nil, apiError(codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_REFERRAL_CLOSED,
					"the parent referral is closed", map[string]string{"resource": in.ParentReferral})
			}
			if nhs := p.r.Person.GetNhsNumber(); nhs != "" && nhs != in.Person.NhsNumber {
				return nil, invalidField("referral.person.nhs_number", "must be the person of the parent referral")
			}
			parent = p.r
		}
		// Consent: one the caller may rely on (policy.MayRelyOn), covering
		// this person and recipient.
		c, err := tx.GetConsent(in.Consent)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		if !policy.MayRelyOn(c, caller.Org, parent) {
			return nil, consentRequired("no consent "+in.Consent+" that the caller may rely on", in.Consent, 0)
		}
		state := policy.ConsentState(c, now)
		switch {
		case c.NhsNumber != in.Person.NhsNumber:
			return nil, consentRequired("the consent is for another person", c.Name, state)
		case !policy.Allows(c, now, pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE):
			return nil, consentRequired("the consent is not ACTIVE for DIRECT_CARE", c.Name, state)
		case !policy.CoversRecipient(c, recipient):
			return nil, consentRequired("the consent does not cover sharing with "+recipient, c.Name, state)
		}
		// An open referral of the person to the service is named only to a
		// caller that may see it; any other is flagged to the receiver.
		open, err := tx.OpenReferralsFor(in.Person.NhsNumber, svc.Name)
		if err != nil {
			return nil, err
		}
		var unseen string
		for _, name := range open {
			ex, err := tx.GetReferral(name)
			if err != nil {
				return nil, err
			}
			rel, err := relate(tx, caller.Org, ex)
			if err != nil {
				return nil, err
			}
			if rel != policy.None {
				return nil, apiError(codes.AlreadyExists, pb.ErrorReason_ERROR_REASON_DUPLICATE_REFERRAL,
					"the person already has an open referral to this service", map[string]string{"existing_referral": name})
			}
			if unseen == "" {
				unseen = name
			}
		}
		capa, err := tx.GetCapacity(svc.Name)
		if err != nil {
			return nil, err
		}
		admit := policy.Admit(capa.Status)
		if admit.Refused {
			alt := alternatives(tx, svc, validate.District(in.Person.Postcode))
			return nil, apiError(codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_SERVICE_AT_CAPACITY,
				"the service cannot take referrals now", map[string]string{
					"capacity_status":      strings.TrimPrefix(capa.Status.String(), "CAPACITY_STATUS_"),
					"alternative_services": strings.Join(alt, ","),
				})
		}
		r := proto.Clone(in).(*pb.Referral)
		r.Name = "referrals/" + newID()
		r.Referrer, r.Recipient = caller.Org, recipient
		r.State, r.StateReason, r.HeldFrom = admit.State, nil, 0
		if admit.State == pb.ReferralState_REFERRAL_STATE_ON_HOLD {
			r.StateReason = &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_NO_CAPACITY, Text: "waiting list"}
			r.HeldFrom = pb.ReferralState_REFERRAL_STATE_REQUESTED
		}
		if r.ReplyBy == nil {
			r.ReplyBy = timestamppb.New(now.Add(svc.DefaultReplyWithin.AsDuration()))
		}
		r.PossibleDuplicateOf = unseen
		r.SnomedCode = SnomedReferralToSocialPrescribing
		// Every other output-only field is the exchange's to set: one a
		// caller sent (an erase time, say, which would keep the person from
		// erasure) is dropped.
		r.View, r.Overdue, r.Actions, r.Etag = 0, false, nil, ""
		r.ResponseTime, r.AcceptTime, r.StartTime, r.EraseTime = nil, nil, nil, nil
		r.CreateTime, r.UpdateTime, r.StateTime = timestamppb.New(now), timestamppb.New(now), timestamppb.New(now)
		stampReferral(r)
		anc, err := ancestors(tx, r)
		if err != nil {
			return nil, err
		}
		parties := policy.Parties(r, anc)
		if err := tx.CreateReferral(r, parties); err != nil {
			return nil, err
		}
		if err := countReferral(ctx, tx, now, svc.Name, 0, r.State); err != nil {
			return nil, err
		}
		if err := event(ctx, tx, now, pb.EventType_EVENT_TYPE_REFERRAL_CREATED, r.Name, parties, false, r.State); err != nil {
			return nil, err
		}
		return policy.Redact(r, policy.Referrer, c, now), nil
	})
	return resp, err
}

func (s *referrals) GetReferral(ctx context.Context, req *pb.GetReferralRequest) (*pb.Referral, error) {
	var out *pb.Referral
	err := s.view(ctx, func(tx storage.ReadTx, now time.Time) error {
		l, err := load(ctx, tx, req.Name)
		if err != nil {
			return err
		}
		out = policy.Redact(l.r, l.rel, l.consent, now)
		return nil
	})
	return out, err
}

// referralFilter is what ListReferrals may be filtered on (the contract's
// ListReferralsRequest.filter).
var referralFilter = []filter.Field{
	{Name: "state", Check: filter.Enum(pb.ReferralState(0).Descriptor())},
	{Name: "recipient", Check: func(v string) error {
		if _, ok := names.Organization(v); !ok && names.OrgOfService(v) == "" {
			return errors.New("must be an organisation or service name")
		}
		return nil
	}},
	{Name: "referrer", Check: func(v string) error {
		if _, ok := names.Organization(v); !ok {
			return errors.New("must be an organisation name")
		}
		return nil
	}},
	{Name: "parent", Check: func(v string) error {
		if _, ok := names.Referral(v); !ok {
			return errors.New("must be a referral name")
		}
		return nil
	}},
	{Name: "overdue", Check: filter.Bool},
}

func (s *referrals) ListReferrals(ctx context.Context, req *pb.ListReferralsRequest) (*pb.ListReferralsResponse, error) {
	org := CallerFrom(ctx).Org
	var v validate.Violations
	size := validate.PageSize(&v, "page_size", req.PageSize, 50)
	after := parsePageToken(&v, "page_token", req.PageToken, req.Filter)
	// The filter only narrows what the caller may see: the query starts from
	// the caller's party index and each term adds a condition.
	q := storage.ReferralQuery{Party: org}
	var recipientService string
	overdue := false
	terms, err := filter.Parse(req.Filter, referralFilter...)
	if err != nil {
		v.Add("filter", "%v", err)
	}
	if st, ok := terms["state"]; ok {
		q.State = pb.ReferralState(pb.ReferralState_value["REFERRAL_STATE_"+st])
	}
	if rc, ok := terms["recipient"]; ok {
		if o := names.OrgOfService(rc); o != "" {
			recipientService, rc = rc, o
		}
		q.Recipient = rc
	}
	q.Referrer, q.Parent = terms["referrer"], terms["parent"]
	overdue = terms["overdue"] == "true"
	if overdue && q.Recipient != org {
		v.Add("filter", "overdue = true lists the caller's own inbox: add recipient = %q", org)
	}
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.ListReferralsResponse{}
	err = s.view(ctx, func(tx storage.ReadTx, now time.Time) error {
		if q.Parent != "" {
			// A parent the caller may not see is as one that does not
			// exist, whatever else the filter says.
			if _, err := load(ctx, tx, q.Parent); err != nil {
				return err
			}
		}
		// A narrower index than the party index, where the store would
		// scan one that holds only referrals the caller may see: its own
		// inbox, its own referrals, or the onward referrals of a referral
		// it may see. Without Party the store scans the first of
		// Recipient, Referrer and Parent that is set, so the others must
		// not name another organisation's index (nor its keys reach a
		// page token).
		switch {
		case q.Recipient == org,
			q.Recipient == "" && q.Referrer == org,
			q.Recipient == "" && q.Referrer == "" && q.Parent != "":
			q.Party = ""
		}
		if overdue {
			q.DueBefore = now
		}
		var failed error
		rels := map[string]policy.Relation{}
		p, err := tx.ListReferrals(q, after, size, func(r *pb.Referral) bool {
			if recipientService != "" && r.RecipientService != recipientService {
				return false
			}
			// Whatever index served the list, each item is one the caller
			// may see (policy.Relate), or it is left out.
			rel, err := relate(tx, org, r)
			if err != nil {
				failed = err
				return false
			}
			rels[r.Name] = rel
			return rel != policy.None
		})
		if err == nil {
			err = failed
		}
		if err != nil {
			return err
		}
		consents := map[string]*pb.Consent{}
		for _, r := range p.Items {
			c, ok := consents[r.Consent]
			if !ok {
				c, _ = tx.GetConsent(r.Consent)
				consents[r.Consent] = c
			}
			resp.Referrals = append(resp.Referrals, policy.Redact(r, rels[r.Name], c, now))
		}
		resp.NextPageToken = pageToken(p.Next, req.Filter)
		return nil
	})
	return resp, err
}

// relate is how org relates to r (policy.Relate), reading r's ancestors
// only when org is neither of its two direct sides.
func relate(tx storage.ReadTx, org string, r *pb.Referral) (policy.Relation, error) {
	if rel := policy.Relate(org, r, nil); rel != policy.None || r.ParentReferral == "" {
		return rel, nil
	}
	anc, err := ancestors(tx, r)
	if err != nil {
		return policy.None, err
	}
	return policy.Relate(org, r, anc), nil
}

// transition applies a state method.
func (s *referrals) transition(ctx context.Context, action lifecycle.Action, name, etag, requestID string, reason *pb.StateReason, req proto.Message) (*pb.Referral, error) {
	var v validate.Violations
	validate.StateReason(&v, "reason", reason, false)
	validate.RequestID(&v, "request_id", requestID, false)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.Referral{}
	err := s.mutate(ctx, action.String(), requestID, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		l, err := load(ctx, tx, name)
		if err != nil {
			return nil, err
		}
		r := l.r
		side, ok := l.rel.Side()
		if !ok {
			return nil, notAllowed(name, "only the referrer or the receiver may change a referral's state")
		}
		move, err := lifecycle.Apply(r.State, r.HeldFrom, action, side)
		switch {
		case errors.Is(err, lifecycle.ErrWrongSide):
			return nil, apiError(codes.PermissionDenied, pb.ErrorReason_ERROR_REASON_WRONG_SIDE,
				action.String()+" is for the other side of the referral", map[string]string{"method": action.String(), "side": side.String()})
		case err != nil:
			return nil, apiError(codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_INVALID_TRANSITION,
				action.String()+" is not allowed from "+strings.TrimPrefix(r.State.String(), "REFERRAL_STATE_"),
				map[string]string{"method": action.String(), "state": strings.TrimPrefix(r.State.String(), "REFERRAL_STATE_")})
		}
		if err := checkEtag(etag, r.Etag); err != nil {
			return nil, err
		}
		if move.Reason == lifecycle.ReasonRequired && reason.GetCode() == 0 {
			var v validate.Violations
			validate.StateReason(&v, "reason", reason, true)
			return nil, invalid(v)
		}
		from := r.State
		if move.To == pb.ReferralState_REFERRAL_STATE_ON_HOLD {
			r.HeldFrom = from
		}
		r.State = move.To
		r.StateReason = nil
		if move.Reason != lifecycle.NoReason && reason.GetCode() != 0 {
			r.StateReason = reason
		}
		lifecycle.Mark(r, side, timestamppb.New(now))
		if err := saveMove(ctx, tx, now, r, l.parties, from); err != nil {
			return nil, err
		}
		return policy.Redact(r, l.rel, l.consent, now), nil
	})
	return resp, err
}

// exchangeMove makes one of the exchange's own moves (lifecycle's Exchange
// side: a deadline, a withdrawn consent, an erasure) and stores it. Its
// callers pick only referrals the move applies to, so a refusal is the
// exchange's fault.
func exchangeMove(ctx context.Context, tx storage.WriteTx, now time.Time, r *pb.Referral, parties []string, a lifecycle.Action) error {
	move, err := lifecycle.Apply(r.State, r.HeldFrom, a, lifecycle.Exchange)
	if err != nil {
		return fmt.Errorf("%v of %s from %v: %w", a, r.Name, r.State, err)
	}
	from := r.State
	r.State, r.StateReason = move.To, proto.CloneOf(lifecycle.Reasons[a])
	return saveMove(ctx, tx, now, r, parties, from)
}

// saveMove stores a referral that moved from state from, with its capacity
// counts and its event.
func saveMove(ctx context.Context, tx storage.WriteTx, now time.Time, r *pb.Referral, parties []string, from pb.ReferralState) error {
	r.UpdateTime, r.StateTime = timestamppb.New(now), timestamppb.New(now)
	stampReferral(r)
	if err := tx.UpdateReferral(r); err != nil {
		return err
	}
	if err := countReferral(ctx, tx, now, r.RecipientService, from, r.State); err != nil {
		return err
	}
	return event(ctx, tx, now, pb.EventType_EVENT_TYPE_REFERRAL_STATE_CHANGED, r.Name, parties, false, r.State)
}

func (s *referrals) AcceptReferral(ctx context.Context, req *pb.AcceptReferralRequest) (*pb.Referral, error) {
	return s.transition(ctx, lifecycle.Accept, req.Name, req.Etag, req.RequestId, nil, req)
}

func (s *referrals) RejectReferral(ctx context.Context, req *pb.RejectReferralRequest) (*pb.Referral, error) {
	return s.transition(ctx, lifecycle.Reject, req.Name, req.Etag, req.RequestId, req.Reason, req)
}

func (s *referrals) StartReferral(ctx context.Context, req *pb.StartReferralRequest) (*pb.Referral, error) {
	return s.transition(ctx, lifecycle.Start, req.Name, req.Etag, req.RequestId, nil, req)
}

func (s *referrals) HoldReferral(ctx context.Context, req *pb.HoldReferralRequest) (*pb.Referral, error) {
	return s.transition(ctx, lifecycle.Hold, req.Name, req.Etag, req.RequestId, req.Reason, req)
}

func (s *referrals) ResumeReferral(ctx context.Context, req *pb.ResumeReferralRequest) (*pb.Referral, error) {
	return s.transition(ctx, lifecycle.Resume, req.Name, req.Etag, req.RequestId, nil, req)
}

func (s *referrals) CompleteReferral(ctx context.Context, req *pb.CompleteReferralRequest) (*pb.Referral, error) {
	return s.transition(ctx, lifecycle.Complete, req.Name, req.Etag, req.RequestId, nil, req)
}

func (s *referrals) FailReferral(ctx context.Context, req *pb.FailReferralRequest) (*pb.Referral, error) {
	return s.transition(ctx, lifecycle.Fail, req.Name, req.Etag, req.RequestId, req.Reason, req)
}

func (s *referrals) CancelReferral(ctx context.Context, req *pb.CancelReferralRequest) (*pb.Referral, error) {
	return s.transition(ctx, lifecycle.Cancel, req.Name, req.Etag, req.RequestId, req.Reason, req)
}

func (s *referrals) MarkReferralEnteredInError(ctx context.Context, req *pb.MarkReferralEnteredInErrorRequest) (*pb.Referral, error) {
	return s.transition(ctx, lifecycle.MarkEnteredInError, req.Name, req.Etag, req.RequestId, req.Reason, req)
}

// sweepBatch is the most referrals one sweep transaction takes of each
// kind (fewer where the store takes less in one, core.pieces).
const sweepBatch = 500

// SweepOverdue records one REFERRAL_OVERDUE event for each REQUESTED
// referral past its reply-by and, when Options.AutoRejectAfter is set,
// rejects with NO_RESPONSE those still REQUESTED that long after it. It
// returns how many it notified and rejected. The server runs it
// periodically; each call works through every referral due, in
// transactions of at most sweepBatch of each kind.
func (s *Server) SweepOverdue(ctx context.Context) (notified, rejected int, err error) {
	_, err = s.core.pieces(ctx, sweepBatch, func(piece int) (int, error) {
		n, r := 0, 0
		err := s.core.store.Update(ctx, func(tx storage.WriteTx) error {
			n, r = 0, 0
			now := s.core.clock(ctx)
			if s.core.autoReject > 0 {
				late, err := tx.UnansweredReferrals(now.Add(-s.core.autoReject), piece)
				if err != nil {
					return err
				}
				for _, ref := range late {
					anc, err := ancestors(tx, ref)
					if err != nil {
						return err
					}
					if err := exchangeMove(ctx, tx, now, ref, policy.Parties(ref, anc), lifecycle.NoResponse); err != nil {
						return err
					}
					r++
				}
			}
			due, err := tx.DueReferrals(now, piece)
			if err != nil {
				return err
			}
			for _, ref := range due {
				anc, err := ancestors(tx, ref)
				if err != nil {
					return err
				}
				if err := tx.AppendEvent(&storage.Event{Event: &pb.Event{EventTime: timestamppb.New(now),
					Type: pb.EventType_EVENT_TYPE_REFERRAL_OVERDUE, Resource: ref.Name, State: ref.State},
					Audience: policy.Parties(ref, anc)}); err != nil {
					return err
				}
				if err := tx.MarkOverdueNotified(ref.Name); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		notified, rejected = notified+n, rejected+r
		return max(n, r), nil
	})
	return notified, rejected, err
}
