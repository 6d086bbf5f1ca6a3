package api

import (
	"context"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/names"
	"github.com/social-prescribing/exchange/server/rules/policy"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/server/storage"
)

type capacity struct {
	*core
	pb.UnimplementedCapacityServiceServer
}

func (c *capacity) GetCapacity(ctx context.Context, req *pb.GetCapacityRequest) (*pb.Capacity, error) {
	svc, ok := names.ServiceOfCapacity(req.Name)
	if !ok {
		return nil, invalidField("name", "must be organizations/{organization}/services/{service}/capacity")
	}
	var out *pb.Capacity
	err := c.view(ctx, func(tx storage.ReadTx, _ time.Time) error {
		var err error
		out, err = tx.GetCapacity(svc)
		return notFoundOr(err, req.Name)
	})
	return out, err
}

func (c *capacity) UpdateCapacity(ctx context.Context, req *pb.UpdateCapacityRequest) (*pb.Capacity, error) {
	name := req.GetCapacity().GetName()
	svc, ok := names.ServiceOfCapacity(name)
	if !ok {
		return nil, invalidField("capacity.name", "must be organizations/{organization}/services/{service}/capacity")
	}
	if err := mayManage(ctx, "UpdateCapacity", names.OrgOfService(svc)); err != nil {
		return nil, err
	}
	var v validate.Violations
	paths := maskPaths(&v, req.UpdateMask, "status", "max_active_referrals", "notes")
	validate.RequestID(&v, "request_id", req.RequestId, false)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.Capacity{}
	err := c.mutate(ctx, "UpdateCapacity", req.RequestId, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		cur, err := tx.GetCapacity(svc)
		if err != nil {
			return nil, notFoundOr(err, name)
		}
		if err := checkEtag(req.Capacity.Etag, cur.Etag); err != nil {
			return nil, err
		}
		applyMask(cur, req.Capacity, paths)
		if slices.Contains(paths, "status") {
			cur.StatusSetAutomatically = false // the organisation's own choice now
		}
		var v validate.Violations
		validate.Capacity(&v, "capacity", cur)
		if err := invalid(v); err != nil {
			return nil, err
		}
		policy.AutoSwitch(cur)
		cur.UpdateTime = timestamppb.New(now)
		stampCapacity(cur)
		if err := tx.PutCapacity(cur); err != nil {
			return nil, err
		}
		return cur, capacityEvent(ctx, tx, now, cur)
	})
	return resp, err
}

// countReferral moves one referral in its service's capacity counts and
// records a capacity event when the status switched by itself.
func countReferral(ctx context.Context, tx storage.WriteTx, now time.Time, service string, from, to pb.ReferralState) error {
	c, err := tx.GetCapacity(service)
	if err != nil {
		return err
	}
	switched := policy.Count(c, from, to)
	if switched {
		c.UpdateTime = timestamppb.New(now)
	}
	stampCapacity(c)
	if err := tx.PutCapacity(c); err != nil {
		return err
	}
	if switched {
		return capacityEvent(ctx, tx, now, c)
	}
	return nil
}

// capacityEvent announces a service's capacity, with its new status, to
// everyone.
func capacityEvent(ctx context.Context, tx storage.WriteTx, now time.Time, c *pb.Capacity) error {
	err := tx.AppendEvent(&storage.Event{Public: true, Event: &pb.Event{EventTime: timestamppb.New(now),
		Type: pb.EventType_EVENT_TYPE_CAPACITY_CHANGED, Resource: c.Name, Actor: CallerFrom(ctx).Org, CapacityStatus: c.Status}})
	return err
}
