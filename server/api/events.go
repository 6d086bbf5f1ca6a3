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

// FromNow, as a request's after, starts a read of the feed at its newest
// event: only what happens from then on.
const FromNow = -1

// start is where a read of the feed begins: after, or for FromNow the
// newest event's sequence number.
func (s *events) start(ctx context.Context, after int64) (int64, error) {
	if after != FromNow {
		return after, nil
	}
	err := s.view(ctx, func(tx storage.ReadTx, _ time.Time) error {
		var err error
		after, err = tx.LastSequence()
		return err
	})
	return after, err
}

func (s *events) ListEvents(ctx context.Context, req *pb.ListEventsRequest) (*pb.ListEventsResponse, error) {
	var v validate.Violations
	size := validate.PageSize(&v, "page_size", req.PageSize, 100)
	if req.After < FromNow {
		v.Add("after", "must be a sequence number, or -1 to start from now")
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
	after, err := s.start(ctx, req.After)
	if err != nil {
		return nil, err
	}
	from := after
	for {
		resp := &pb.ListEventsResponse{}
		err := s.view(ctx, func(tx storage.ReadTx, _ time.Time) error {
			var err error
			resp.Events, resp.LastSequence, err = tx.ListEvents(org, after, size)
			return err
		})
		if err == nil {
			resp.LastSequence = max(resp.LastSequence, from)
		}
		if err != nil || len(resp.Events) > 0 || time.Now().After(deadline) {
			return resp, err
		}
		after = max(after, resp.LastSequence)
		wctx, cancel := context.WithDeadline(ctx, deadline)
		err = s.store.WaitEvents(wctx, after)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return resp, nil
		}
		if err != nil {
			return nil, storeError(ctx, err)
		}
	}
}

func (s *events) WatchEvents(req *pb.WatchEventsRequest, stream pb.EventService_WatchEventsServer) error {
	ctx := stream.Context()
	if req.After < FromNow {
		return invalidField("after", "must be a sequence number, or -1 to start from now")
	}
	s.watchers.Add(1)
	defer s.watchers.Add(-1)
	org := audienceOf(ctx)
	after, err := s.start(ctx, req.After)
	if err != nil {
		return err
	}
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
