package api

import (
	"context"
	"errors"
	"time"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/server/storage"
)

// MaxWait is the longest ListEvents waits for an event.
const MaxWait = 60 * time.Second

type events struct {
	*core
	pb.UnimplementedEventServiceServer
}

// audienceOf is whose events the caller sees: its own and the public ones,
// or all of them for the operator.
func audienceOf(ctx context.Context) string {
	c := CallerFrom(ctx)
	if c.Operator {
		return ""
	}
	return c.Org
}

func (s *events) ListEvents(ctx context.Context, req *pb.ListEventsRequest) (*pb.ListEventsResponse, error) {
	var v validate.Violations
	size := validate.PageSize(&v, "page_size", req.PageSize, 100)
	if req.After < 0 {
		v.Add("after", "must not be negative")
	}
	var wait time.Duration
	if req.Wait != nil {
		if err := req.Wait.CheckValid(); err != nil || req.Wait.AsDuration() < 0 || req.Wait.AsDuration() > MaxWait {
			v.Add("wait", "must be between 0 and 60s")
		} else {
			wait = req.Wait.AsDuration()
		}
	}
	if err := invalid(v); err != nil {
		return nil, err
	}
	org := audienceOf(ctx)
	deadline := time.Now().Add(wait)
	after := req.After
	for {
		resp := &pb.ListEventsResponse{}
		err := s.view(ctx, func(tx storage.ReadTx, _ time.Time) error {
			var err error
			resp.Events, resp.LastSequence, err = tx.ListEvents(org, after, size)
			return err
		})
		if err != nil || len(resp.Events) > 0 || time.Now().After(deadline) {
			return resp, err
		}
		after = max(after, resp.LastSequence)
		wctx, cancel := context.WithDeadline(ctx, deadline)
		err = s.store.WaitEvents(wctx, after)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			resp.LastSequence = max(resp.LastSequence, req.After)
			return resp, nil
		}
		if err != nil {
			return nil, storeError(ctx, err)
		}
	}
}

func (s *events) WatchEvents(req *pb.WatchEventsRequest, stream pb.EventService_WatchEventsServer) error {
	ctx := stream.Context()
	if req.After < 0 {
		return invalidField("after", "must not be negative")
	}
	s.watchers.Add(1)
	defer s.watchers.Add(-1)
	org := audienceOf(ctx)
	after := req.After
	for {
		var page []*pb.Event
		var last int64
		err := s.view(ctx, func(tx storage.ReadTx, _ time.Time) error {
			var err error
			page, last, err = tx.ListEvents(org, after, 100)
			return err
		})
		if err != nil {
			return err
		}
		for _, e := range page {
			if err := stream.Send(&pb.WatchEventsResponse{Event: e}); err != nil {
				return err
			}
		}
		after = max(after, last)
		if len(page) == 0 {
			if err := s.store.WaitEvents(ctx, after); err != nil {
				return storeError(ctx, err)
			}
		}
	}
}
