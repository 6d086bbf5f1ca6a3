package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/storage"
)

// demoCredential is one entry of demo-credentials.json.
type demoCredential struct {
	Organization string `json:"organization"`
	DisplayName  string `json:"display_name"`
	Kind         string `json:"kind"`
	APIKey       string `json:"api_key"`
}

type demoOrg struct {
	id       string
	org      *pb.Organization
	services map[string]*pb.Service
	capacity map[string]*pb.Capacity
}

var demoOrgs = []demoOrg{
	{id: "riverside-practice", org: &pb.Organization{Kind: pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE,
		DisplayName: "Riverside Medical Practice", OdsCode: "Y01234", Contact: &pb.Contact{Phone: "0161 496 0100"}}},
	{id: "riverside-pcn", org: &pb.Organization{Kind: pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE,
		DisplayName: "Riverside PCN Social Prescribing", Contact: &pb.Contact{Email: "socialprescribing@example.org"}},
		services: map[string]*pb.Service{"link-workers": {DisplayName: "Link worker support",
			Description: "Up to six sessions with a link worker to plan what matters to you.",
			Categories:  []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION, pb.Category_CATEGORY_MENTAL_WELLBEING, pb.Category_CATEGORY_DEBT_AND_MONEY},
			Eligibility: &pb.Eligibility{MinAge: 18}, DeliveryModes: []pb.DeliveryMode{pb.DeliveryMode_DELIVERY_MODE_IN_PERSON, pb.DeliveryMode_DELIVERY_MODE_TELEPHONE}}}},
	{id: "hillside-walkers", org: &pb.Organization{Kind: pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION,
		DisplayName: "Hillside Walking Group", CharityNumber: "1100001"},
		services: map[string]*pb.Service{"health-walks": {DisplayName: "Wednesday health walks",
			Description:   "Gentle one-hour walks from the library every Wednesday at 10am, with tea after.",
			Categories:    []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY, pb.Category_CATEGORY_SOCIAL_ISOLATION, pb.Category_CATEGORY_NATURE_AND_OUTDOORS},
			Eligibility:   &pb.Eligibility{MinAge: 16, PostcodeDistricts: []string{"M14", "M15", "M16"}},
			DeliveryModes: []pb.DeliveryMode{pb.DeliveryMode_DELIVERY_MODE_IN_PERSON}, DefaultReplyWithin: durationpb.New(72 * time.Hour)}},
		capacity: map[string]*pb.Capacity{"health-walks": {Status: pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, MaxActiveReferrals: 20}}},
	{id: "community-money-advice", org: &pb.Organization{Kind: pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION,
		DisplayName: "Community Money Advice", CharityNumber: "1100002"},
		services: map[string]*pb.Service{"debt-advice": {DisplayName: "Debt and benefits advice",
			Description:   "One-to-one advice on debt, budgeting and benefit claims.",
			Categories:    []pb.Category{pb.Category_CATEGORY_DEBT_AND_MONEY, pb.Category_CATEGORY_WELFARE_BENEFITS},
			DeliveryModes: []pb.DeliveryMode{pb.DeliveryMode_DELIVERY_MODE_IN_PERSON, pb.DeliveryMode_DELIVERY_MODE_TELEPHONE}}},
		capacity: map[string]*pb.Capacity{"debt-advice": {Status: pb.CapacityStatus_CAPACITY_STATUS_WAITLIST, Notes: "Waiting list about three weeks."}}},
}

// ensureDemo creates the demo organisations, services and keys once, and
// prints the keys (from demo-credentials.json on later starts).
func ensureDemo(ctx context.Context, store storage.Store, dataDir string) error {
	path := filepath.Join(dataDir, "demo-credentials.json")
	if b, err := os.ReadFile(path); err == nil {
		fmt.Printf("Demo organisations exist; their API keys are in %s:\n%s", path, b)
		return nil
	}
	srv := api.New(store, api.Options{})
	dir, capa, keys := srv.Services()
	op := api.WithCaller(ctx, api.Caller{Org: "organizations/operator", Operator: true})
	var creds []demoCredential
	for _, d := range demoOrgs {
		o, err := dir.CreateOrganization(op, &pb.CreateOrganizationRequest{OrganizationId: d.id, Organization: d.org, RequestId: "demo-org-" + d.id})
		if err != nil {
			return err
		}
		k, err := keys.CreateApiKey(op, &pb.CreateApiKeyRequest{Parent: o.Name, ApiKey: &pb.ApiKey{DisplayName: "demo"}})
		if err != nil {
			return err
		}
		as := api.WithCaller(ctx, api.Caller{Org: o.Name, Kind: o.Kind})
		for id, s := range d.services {
			if _, err := dir.CreateService(as, &pb.CreateServiceRequest{Parent: o.Name, ServiceId: id, Service: s, RequestId: "demo-svc-" + id}); err != nil {
				return err
			}
			if c := d.capacity[id]; c != nil {
				c.Name = o.Name + "/services/" + id + "/capacity"
				if _, err := capa.UpdateCapacity(as, &pb.UpdateCapacityRequest{Capacity: c, RequestId: "demo-cap-" + id}); err != nil {
					return err
				}
			}
		}
		creds = append(creds, demoCredential{Organization: o.Name, DisplayName: o.DisplayName,
			Kind: o.Kind.String()[len("ORGANIZATION_KIND_"):], APIKey: k.Secret})
	}
	b, err := json.MarshalIndent(creds, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return errors.Join(fmt.Errorf("write %s", path), err)
	}
	fmt.Printf("Created demo organisations; API keys (also in %s):\n%s\n", path, b)
	return nil
}
