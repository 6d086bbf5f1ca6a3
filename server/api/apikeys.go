package api

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/names"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/server/storage"
)

type apiKeys struct {
	*core
	pb.UnimplementedApiKeyServiceServer
}

func keyProto(k *storage.APIKey) *pb.ApiKey {
	return &pb.ApiKey{Name: k.Name, DisplayName: k.DisplayName, CreateTime: timestamppb.New(k.CreateTime), RevokeTime: tsOrNil(k.RevokeTime)}
}

func (a *apiKeys) CreateApiKey(ctx context.Context, req *pb.CreateApiKeyRequest) (*pb.CreateApiKeyResponse, error) {
	if err := mayManage(ctx, "CreateApiKey", req.Parent); err != nil {
		return nil, err
	}
	var v validate.Violations
	validate.Text(&v, "api_key.display_name", req.GetApiKey().GetDisplayName(), 200, false)
	validate.RequestID(&v, "request_id", req.RequestId, false)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.CreateApiKeyResponse{}
	var secret string
	// The stored first response has no secret: a retry gets the key without it.
	err := a.mutate(ctx, "CreateApiKey", req.RequestId, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		if _, err := tx.GetOrganization(req.Parent); err != nil {
			return nil, notFoundOr(err, req.Parent)
		}
		k, s := NewAPIKey(req.Parent, req.GetApiKey().GetDisplayName(), now)
		secret = s
		return &pb.CreateApiKeyResponse{ApiKey: keyProto(k)}, tx.CreateAPIKey(k)
	})
	resp.Secret = secret
	return resp, err
}

func (a *apiKeys) ListApiKeys(ctx context.Context, req *pb.ListApiKeysRequest) (*pb.ListApiKeysResponse, error) {
	if err := mayManage(ctx, "ListApiKeys", req.Parent); err != nil {
		return nil, err
	}
	var v validate.Violations
	size := validate.PageSize(&v, "page_size", req.PageSize, 50)
	after := parsePageToken(&v, "page_token", req.PageToken, req.Parent)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.ListApiKeysResponse{}
	err := a.view(ctx, func(tx storage.ReadTx, _ time.Time) error {
		p, err := tx.ListAPIKeys(req.Parent, after, size)
		for _, k := range p.Items {
			resp.ApiKeys = append(resp.ApiKeys, keyProto(k))
		}
		resp.NextPageToken = pageToken(p.Next, req.Parent)
		return err
	})
	return resp, err
}

func (a *apiKeys) RevokeApiKey(ctx context.Context, req *pb.RevokeApiKeyRequest) (*pb.ApiKey, error) {
	org, _, ok := names.APIKey(req.Name)
	if !ok {
		return nil, invalidField("name", "must be organizations/{organization}/apiKeys/{api_key}")
	}
	if err := mayManage(ctx, "RevokeApiKey", "organizations/"+org); err != nil {
		return nil, err
	}
	resp := &pb.ApiKey{}
	err := a.mutate(ctx, "RevokeApiKey", req.RequestId, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		k, err := tx.GetAPIKey(req.Name)
		if err != nil {
			return nil, notFoundOr(err, req.Name)
		}
		if k.RevokeTime.IsZero() {
			k.RevokeTime = now
			if err := tx.UpdateAPIKey(k); err != nil {
				return nil, err
			}
		}
		return keyProto(k), nil
	})
	return resp, err
}
