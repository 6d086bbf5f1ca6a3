// Package demo creates the demo organisations, their services, keys and a
// year of synthetic referrals (exchange-server --demo), through the same
// services and rules as remote calls.
package demo

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
)

// demoCredential is one entry of demo-credentials.json.
type demoCredential struct {
	Organization string `json:"organization"`
	DisplayName  string `json:"display_name"`
	Kind         string `json:"kind"`
	APIKey       string `json:"api_key"`
	// WaitingReferral is the referral the demo leaves in a group's inbox,
	// for the walk-throughs to find on any run.
	WaitingReferral string `json:"waiting_referral,omitempty"`
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
	{id: "riverside-icb", org: &pb.Organization{Kind: pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER,
		DisplayName: "Riverside Integrated Care Board", OdsCode: "QRV"}},
}

// Ensure creates the demo organisations, services and keys once, and
// prints the keys (from demo-credentials.json on later starts). The
// organisations are created a year back, then history synthetic referrals
// are written over that year (demoHistory), then two referrals wait in the
// groups' inboxes today.
func Ensure(ctx context.Context, srv *api.Server, dataDir string, history int) error {
	path := filepath.Join(dataDir, "demo-credentials.json")
	if b, err := os.ReadFile(path); err == nil {
		fmt.Printf("Demo organisations exist; their API keys are in %s:\n%s", path, b)
		return nil
	}
	svcs := srv.Services()
	dir, capa, keys := svcs.Directory, svcs.Capacity, svcs.APIKeys
	start := time.Now().AddDate(-1, 0, 0)
	// The organisations exist from a day before the history starts.
	before := api.WithTime(ctx, start.Add(-24*time.Hour))
	op := api.WithCaller(before, api.Caller{Org: "organizations/operator", Operator: true})
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
		as := api.WithCaller(before, api.Caller{Org: o.Name, Kind: o.Kind})
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
	if history > 0 {
		fmt.Printf("Writing %d synthetic referrals over the past year for the reports...\n", history)
		if err := demoHistory(ctx, svcs, history, start); err != nil {
			return err
		}
	}
	waiting, err := demoReferrals(ctx, svcs)
	if err != nil {
		return err
	}
	for i := range creds {
		creds[i].WaitingReferral = waiting[creds[i].Organization]
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

// demoReferrals puts referrals from the link workers in the community
// groups' inboxes, for fictional people with NHS numbers from the 999
// range reserved for testing: one new referral to the walking group, one on
// the money advice waiting list.
func demoReferrals(ctx context.Context, svcs api.Services) (waiting map[string]string, err error) {
	waiting = map[string]string{}
	const pcn = "organizations/riverside-pcn"
	as := api.WithCaller(ctx, api.Caller{Org: pcn, Kind: pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE})
	for i, d := range []struct {
		person  *pb.Person
		service string
		needs   []pb.Category
		reason  string
	}{
		{&pb.Person{NhsNumber: "9990000018", GivenName: "Bob", FamilyName: "Evans", DateOfBirth: "1951-07-02", Postcode: "M15 4PS", Phone: "07700 900123"},
			"organizations/hillside-walkers/services/health-walks", []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY, pb.Category_CATEGORY_SOCIAL_ISOLATION},
			"Recently retired, lives alone, would like to be more active and meet people."},
		{&pb.Person{NhsNumber: "9990000026", GivenName: "Carys", FamilyName: "Hughes", DateOfBirth: "1987-11-20", Postcode: "M14 6QR"},
			"organizations/community-money-advice/services/debt-advice", []pb.Category{pb.Category_CATEGORY_DEBT_AND_MONEY},
			"Rent arrears after a change in hours at work."},
	} {
		c, err := svcs.Consents.CreateConsent(as, &pb.CreateConsentRequest{RequestId: fmt.Sprint("demo-consent-", i), Consent: &pb.Consent{
			NhsNumber: d.person.NhsNumber, Method: pb.ConsentMethod_CONSENT_METHOD_VERBAL,
			Purposes:       []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER},
			RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}})
		if err != nil {
			return nil, err
		}
		r, err := svcs.Referrals.CreateReferral(as, &pb.CreateReferralRequest{RequestId: fmt.Sprint("demo-referral-", i), Referral: &pb.Referral{
			RecipientService: d.service, Person: d.person, Consent: c.Name, Route: pb.ReferralRoute_REFERRAL_ROUTE_LINK_WORKER,
			Needs: d.needs, Reason: d.reason, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_INTENSIVE}})
		if err != nil {
			return nil, err
		}
		waiting[r.Recipient] = r.Name
	}
	return waiting, nil
}
