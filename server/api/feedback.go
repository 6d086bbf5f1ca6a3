package api

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/lifecycle"
	"github.com/social-prescribing/exchange/server/rules/policy"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/server/storage"
)

type feedback struct {
	*core
	pb.UnimplementedFeedbackServiceServer
}

func (s *feedback) CreateFeedback(ctx context.Context, req *pb.CreateFeedbackRequest) (*pb.Feedback, error) {
	now := s.clock(ctx)
	var v validate.Violations
	validate.Feedback(&v, "feedback", req.Feedback, now)
	validate.RequestID(&v, "request_id", req.RequestId, false)
	referralName(&v, "parent", req.Parent)
	if err := invalid(v); err != nil {
		return nil, err
	}
	org := CallerFrom(ctx).Org
	resp := &pb.Feedback{}
	err := s.mutate(ctx, "CreateFeedback", req.RequestId, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		l, err := load(ctx, tx, req.Parent)
		if err != nil {
			return nil, err
		}
		if !policy.CanPostFeedback(l.rel, req.Feedback) {
			return nil, notAllowed(req.Parent, "notes come from either side of the referral; uptake and outcomes from the receiver")
		}
		if !policy.TakesFeedback(l.r) {
			why := "the referral's personal details were cleared: it takes no more feedback"
			if !lifecycle.Counts(l.r.State) {
				why = "the referral was entered in error"
			}
			return nil, apiError(codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_REFERRAL_CLOSED, why, map[string]string{"resource": req.Parent})
		}
		f := proto.Clone(req.Feedback).(*pb.Feedback)
		f.Name = req.Parent + "/feedback/" + newID()
		f.Author = org
		if f.Audience == 0 {
			f.Audience = pb.FeedbackAudience_FEEDBACK_AUDIENCE_BOTH_SIDES
		}
		f.CreateTime = timestamppb.New(now)
		if err := tx.CreateFeedback(f); err != nil {
			return nil, err
		}
		// The event goes to those who may read the entry now.
		var aud []string
		for _, p := range l.parties {
			if policy.FeedbackVisible(p, policy.RelateParty(p, l.r), f, l.consent, now) {
				aud = append(aud, p)
			}
		}
		return f, event(ctx, tx, now, pb.EventType_EVENT_TYPE_FEEDBACK_POSTED, f.Name, aud, false, 0)
	})
	return resp, err
}

func (s *feedback) ListFeedback(ctx context.Context, req *pb.ListFeedbackRequest) (*pb.ListFeedbackResponse, error) {
	var v validate.Violations
	size := validate.PageSize(&v, "page_size", req.PageSize, 50)
	after := parsePageToken(&v, "page_token", req.PageToken, req.Parent)
	referralName(&v, "parent", req.Parent)
	if err := invalid(v); err != nil {
		return nil, err
	}
	org := CallerFrom(ctx).Org
	resp := &pb.ListFeedbackResponse{}
	err := s.view(ctx, func(tx storage.ReadTx, now time.Time) error {
		l, err := load(ctx, tx, req.Parent)
		if err != nil {
			return err
		}
		p, err := tx.ListFeedback(req.Parent, after, size, func(f *pb.Feedback) bool {
			return policy.FeedbackVisible(org, l.rel, f, l.consent, now)
		})
		resp.Feedback, resp.NextPageToken = p.Items, pageToken(p.Next, req.Parent)
		return err
	})
	return resp, err
}
