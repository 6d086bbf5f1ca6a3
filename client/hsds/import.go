package hsds

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/social-prescribing/exchange/client"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// Result counts what Import did.
type Result struct {
	OrganizationsCreated, OrganizationsUpdated, OrganizationsUnchanged int
	ServicesCreated, ServicesUpdated, ServicesUnchanged                int
	// Problems are the rows Read left out and the rows the exchange refused.
	Problems []Problem
}

// Created is how many organisations and services were created.
func (r *Result) Created() int { return r.OrganizationsCreated + r.ServicesCreated }

// Options tune Import.
type Options struct {
	// Kind of the organisations created; VCSE_ORGANIZATION when unset.
	Kind pb.OrganizationKind
	// DryRun reports what would change without changing anything.
	DryRun bool
	// Progress, when set, is called after each organisation and service with
	// how many of total are done.
	Progress func(done, total int)
	// Problem, when set, is called with each problem as it is found.
	Problem func(Problem)
}

// Fields of the exchange's records that an import manages; everything else
// (capacity, reply times, delivery modes, postcode districts) is the
// organisation's own and is never changed by an import.
var (
	orgFields     = []string{"display_name", "contact", "hsds_id"}
	serviceFields = []string{"display_name", "description", "categories", "eligibility", "contact", "hsds_id"}
)

// Import makes the exchange's directory hold d's organisations and
// services. It must be called with the operator's key. Records are matched
// to what is already there by HSDS id; new ones get an id made from their
// name ("Hillside Walking Group" -> hillside-walking-group, with a number
// added when that is taken).
func Import(ctx context.Context, c *client.Client, d *Directory, opt Options) (*Result, error) {
	if opt.Kind == 0 {
		opt.Kind = pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION
	}
	res := &Result{}
	report := func(p Problem) {
		res.Problems = append(res.Problems, p)
		if opt.Problem != nil {
			opt.Problem(p)
		}
	}
	for _, p := range d.Problems {
		report(p)
	}
	orgs, takenOrgs, err := existingOrganizations(ctx, c)
	if err != nil {
		return nil, err
	}
	services, takenServices, err := existingServices(ctx, c)
	if err != nil {
		return nil, err
	}
	total, done := len(d.Organizations)+len(d.Services), 0
	step := func() {
		done++
		if opt.Progress != nil {
			opt.Progress(done, total)
		}
	}
	refused := func(row Row, what string, err error) {
		report(Problem{File: row.File, Line: row.Line, Msg: what + ": " + client.Describe(err)})
	}

	orgName := map[string]string{} // HSDS id -> exchange name
	for _, o := range d.Organizations {
		want := proto.Clone(o.Org).(*pb.Organization)
		if have, ok := orgs[want.HsdsId]; ok {
			orgName[want.HsdsId] = have.Name
			if sameFields(have, want, orgFields) {
				res.OrganizationsUnchanged++
			} else if opt.DryRun {
				res.OrganizationsUpdated++
			} else {
				want.Name, want.Etag = have.Name, have.Etag
				if _, err := c.Directory.UpdateOrganization(ctx, &pb.UpdateOrganizationRequest{Organization: want,
					UpdateMask: &fieldmaskpb.FieldMask{Paths: orgFields}}); err != nil {
					refused(o.Row, "organization "+want.HsdsId, err)
				} else {
					res.OrganizationsUpdated++
				}
			}
			step()
			continue
		}
		id := freeID(slug(want.DisplayName, "org"), takenOrgs)
		want.Kind = opt.Kind
		if opt.DryRun {
			takenOrgs[id] = true
			orgName[want.HsdsId] = "organizations/" + id
			res.OrganizationsCreated++
		} else if got, err := c.Directory.CreateOrganization(ctx, &pb.CreateOrganizationRequest{OrganizationId: id, Organization: want}); err != nil {
			refused(o.Row, "organization "+want.HsdsId, err)
		} else {
			takenOrgs[id] = true
			orgName[want.HsdsId] = got.Name
			res.OrganizationsCreated++
		}
		step()
	}

	for _, s := range d.Services {
		want := proto.Clone(s.Service).(*pb.Service)
		parent, ok := orgName[s.OrgHsdsID]
		if !ok {
			report(Problem{File: s.File, Line: s.Line, Msg: "service " + want.HsdsId + ": its organization " + s.OrgHsdsID + " was not imported"})
			step()
			continue
		}
		if have, ok := services[want.HsdsId]; ok {
			switch {
			case !strings.HasPrefix(have.Name, parent+"/services/"):
				report(Problem{File: s.File, Line: s.Line, Msg: fmt.Sprintf("service %s is %s in the exchange, under another organization; left alone", want.HsdsId, have.Name)})
			case sameFields(have, want, serviceFields):
				res.ServicesUnchanged++
			case opt.DryRun:
				res.ServicesUpdated++
			default:
				want.Name, want.Etag = have.Name, have.Etag
				if _, err := c.Directory.UpdateService(ctx, &pb.UpdateServiceRequest{Service: want,
					UpdateMask: &fieldmaskpb.FieldMask{Paths: serviceFields}}); err != nil {
					refused(s.Row, "service "+want.HsdsId, err)
				} else {
					res.ServicesUpdated++
				}
			}
			step()
			continue
		}
		if takenServices[parent] == nil {
			takenServices[parent] = map[string]bool{}
		}
		id := freeID(slug(want.DisplayName, "svc"), takenServices[parent])
		if opt.DryRun {
			takenServices[parent][id] = true
			res.ServicesCreated++
		} else if _, err := c.Directory.CreateService(ctx, &pb.CreateServiceRequest{Parent: parent, ServiceId: id, Service: want}); err != nil {
			refused(s.Row, "service "+want.HsdsId, err)
		} else {
			takenServices[parent][id] = true
			res.ServicesCreated++
		}
		step()
	}
	return res, nil
}

// existingOrganizations returns the organisations by HSDS id, and every
// organisation id in use.
func existingOrganizations(ctx context.Context, c *client.Client) (map[string]*pb.Organization, map[string]bool, error) {
	byHSDS, taken := map[string]*pb.Organization{}, map[string]bool{}
	token := ""
	for {
		resp, err := c.Directory.ListOrganizations(ctx, &pb.ListOrganizationsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, nil, fmt.Errorf("listing organizations: %w", err)
		}
		for _, o := range resp.Organizations {
			taken[strings.TrimPrefix(o.Name, "organizations/")] = true
			if o.HsdsId != "" {
				byHSDS[o.HsdsId] = o
			}
		}
		if token = resp.NextPageToken; token == "" {
			return byHSDS, taken, nil
		}
	}
}

// existingServices returns the services by HSDS id, and the service ids in
// use under each organisation.
func existingServices(ctx context.Context, c *client.Client) (map[string]*pb.Service, map[string]map[string]bool, error) {
	byHSDS, taken := map[string]*pb.Service{}, map[string]map[string]bool{}
	token := ""
	for {
		resp, err := c.Directory.ListServices(ctx, &pb.ListServicesRequest{Parent: "organizations/-", PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, nil, fmt.Errorf("listing services: %w", err)
		}
		for _, s := range resp.Services {
			org, id, _ := strings.Cut(s.Name, "/services/")
			if taken[org] == nil {
				taken[org] = map[string]bool{}
			}
			taken[org][id] = true
			if s.HsdsId != "" {
				byHSDS[s.HsdsId] = s
			}
		}
		if token = resp.NextPageToken; token == "" {
			return byHSDS, taken, nil
		}
	}
}

// sameFields reports whether a and b agree on the named fields.
func sameFields(a, b proto.Message, fields []string) bool {
	ra, rb := a.ProtoReflect(), b.ProtoReflect()
	for _, name := range fields {
		f := ra.Descriptor().Fields().ByTextName(name)
		if !ra.Has(f) && !rb.Has(f) {
			continue
		}
		if ra.Has(f) != rb.Has(f) {
			return false
		}
		x, y := a.ProtoReflect().New(), b.ProtoReflect().New()
		x.Set(f, ra.Get(f))
		y.Set(f, rb.Get(f))
		if !proto.Equal(x.Interface(), y.Interface()) {
			return false
		}
	}
	return true
}

var notID = regexp.MustCompile(`[^a-z0-9]+`)

// slug makes an exchange id (3-63 lower-case letters, digits and hyphens,
// starting with a letter) from a name.
func slug(name, prefix string) string {
	s := strings.Trim(notID.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if len(s) < 3 || s[0] < 'a' || s[0] > 'z' {
		s = prefix + "-" + s
	}
	if len(s) > 56 { // room for "-" and a number
		s = strings.TrimRight(s[:56], "-")
	}
	return strings.TrimRight(s, "-")
}

// freeID returns base, or base-2, base-3, ... whichever is not taken.
func freeID(base string, taken map[string]bool) string {
	id := base
	for n := 2; taken[id]; n++ {
		id = fmt.Sprintf("%s-%d", base, n)
	}
	return id
}
