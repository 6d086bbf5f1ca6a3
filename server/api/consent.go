package api

import (
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/lifecycle"
	"github.com/social-prescribing/exchange/server/rules/names"
	"github.com/social-prescribing/exchange/server/rules/policy"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/server/storage"
)

type consents struct {
	*core
	pb.UnimplementedConsentServiceServer
}

// consentAudience returns who may see a consent (policy.ConsentAudience)
// and the open referrals relying on it.
func consentAudience(tx storage.ReadTx, c *pb.Consent) ([]string, []*loaded, error) {
	open, err := tx.OpenReferralsByConsent(c.Name)
	if err != nil {
		return nil, nil, err
	}
	var refs []*loaded
	var parties [][]string
	for _, name := range open {
		r, err := tx.GetReferral(name)
		if err != nil {
			return nil, nil, err
		}
		anc, err := ancestors(tx, r)
		if err != nil {
			return nil, nil, err
		}
		p := policy.Parties(r, anc)
		parties = append(parties, p)
		refs = append(refs, &loaded{r: r, parties: p, consent: c})
	}
	return policy.ConsentAudience(c, parties...), refs, nil
}

func readConsent(ctx context.Context, tx storage.ReadTx, name string, now time.Time) (*pb.Consent, []*loaded, error) {
	if _, ok := names.Consent(name); !ok {
		return nil, nil, invalidField("name", "must be consents/{consent}")
	}
	c, err := tx.GetConsent(name)
	if err != nil {
		return nil, nil, notFoundOr(err, name)
	}
	aud, refs, err := consentAudience(tx, c)
	if err != nil {
		return nil, nil, err
	}
	if !slices.Contains(aud, CallerFrom(ctx).Org) {
		return nil, nil, notFound(name)
	}
	c.State = policy.ConsentState(c, now)
	return c, refs, nil
}

func (s *consents) CreateConsent(ctx context.Context, req *pb.CreateConsentRequest) (*pb.Consent, error) {
	caller := CallerFrom(ctx)
	if ok, why := policy.MayStart("CreateConsent", caller.Kind, caller.Operator); !ok {
		return nil, notAllowed("consents", why)
	}
	now := s.clock(ctx)
	var v validate.Violations
	validate.NewConsent(&v, "consent", req.Consent, now)
	validate.RequestID(&v, "request_id", req.RequestId, false)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.Consent{}
	err := s.mutate(ctx, "CreateConsent", req.RequestId, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		c := proto.Clone(req.Consent).(*pb.Consent)
		c.Name = "consents/" + newID()
		c.RecordedBy = caller.Org
		c.WithdrawTime, c.WithdrawnBy = nil, ""
		c.CreateTime = timestamppb.New(now)
		if c.ValidFrom == nil {
			c.ValidFrom = c.CreateTime
		}
		c.State = 0
		stampConsent(c)
		if err := tx.CreateConsent(c); err != nil {
			return nil, err
		}
		if err := event(ctx, tx, now, pb.EventType_EVENT_TYPE_CONSENT_CREATED, c.Name, []string{caller.Org}, false, 0); err != nil {
			return nil, err
		}
		c.State = policy.ConsentState(c, now)
		return c, nil
	})
	return resp, err
}

func (s *consents) GetConsent(ctx context.Context, req *pb.GetConsentRequest) (*pb.Consent, error) {
	var out *pb.Consent
	err := s.view(ctx, func(tx storage.ReadTx, now time.Time) error {
		var err error
		out, _, err = readConsent(ctx, tx, req.Name, now)
		return err
	})
	return out, err
}

func (s *consents) ListConsents(ctx context.Context, req *pb.ListConsentsRequest) (*pb.ListConsentsResponse, error) {
	var v validate.Violations
	validate.NHS(&v, "nhs_number", &req.NhsNumber)
	size := validate.PageSize(&v, "page_size", req.PageSize, 50)
	after := parsePageToken(&v, "page_token", req.PageToken, req.NhsNumber)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.ListConsentsResponse{}
	err := s.view(ctx, func(tx storage.ReadTx, now time.Time) error {
		// Only consents the caller may read count towards the page, so that
		// neither its length nor its token tells of the others.
		var failed error
		p, err := tx.ListConsents(req.NhsNumber, after, size, func(c *pb.Consent) bool {
			aud, _, err := consentAudience(tx, c)
			if err != nil {
				failed = err
			}
			return err == nil && slices.Contains(aud, CallerFrom(ctx).Org)
		})
		if err == nil {
			err = failed
		}
		if err != nil {
			return err
		}
		for _, c := range p.Items {
			c.State = policy.ConsentState(c, now)
			resp.Consents = append(resp.Consents, c)
		}
		resp.NextPageToken = pageToken(p.Next, req.NhsNumber)
		return nil
	})
	return resp, err
}

func (s *consents) WithdrawConsent(ctx context.Context, req *pb.WithdrawConsentRequest) (*pb.Consent, error) {
	var v validate.Violations
	validate.RequestID(&v, "request_id", req.RequestId, false)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.Consent{}
	err := s.mutate(ctx, "WithdrawConsent", req.RequestId, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		c, refs, err := readConsent(ctx, tx, req.Name, now)
		if err != nil {
			return nil, err
		}
		if c.State == pb.ConsentState_CONSENT_STATE_WITHDRAWN || c.State == pb.ConsentState_CONSENT_STATE_EXPIRED {
			return nil, apiError(codes.FailedPrecondition, pb.ErrorReason_ERROR_REASON_CONSENT_NOT_ACTIVE,
				"the consent is already "+strings.TrimPrefix(c.State.String(), "CONSENT_STATE_"),
				map[string]string{"consent_state": strings.TrimPrefix(c.State.String(), "CONSENT_STATE_")})
		}
		aud, _, err := consentAudience(tx, c)
		if err != nil {
			return nil, err
		}
		c.WithdrawTime, c.WithdrawnBy, c.State = timestamppb.New(now), CallerFrom(ctx).Org, 0
		stampConsent(c)
		if err := tx.UpdateConsent(c); err != nil {
			return nil, err
		}
		// The exchange's own move: open referrals relying on it are cancelled.
		for _, l := range refs {
			if err := exchangeMove(ctx, tx, now, l.r, l.parties, lifecycle.ConsentWithdrawn); err != nil {
				return nil, err
			}
		}
		if err := event(ctx, tx, now, pb.EventType_EVENT_TYPE_CONSENT_WITHDRAWN, c.Name, aud, false, 0); err != nil {
			return nil, err
		}
		c.State = policy.ConsentState(c, now)
		return c, nil
	})
	return resp, err
}
