package api

import (
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/filter"
	"github.com/social-prescribing/exchange/server/rules/names"
	"github.com/social-prescribing/exchange/server/rules/policy"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/server/storage"
)

// DefaultReplyWithin is the reply deadline of a service that sets none:
// five days, weekends included (the contract, Service.default_reply_within).
const DefaultReplyWithin = 120 * time.Hour

type directory struct {
	*core
	pb.UnimplementedDirectoryServiceServer
}

// mayManage applies policy.Stewards: who may call method on the resources
// of organisation owner.
func mayManage(ctx context.Context, method, owner string) error {
	c := CallerFrom(ctx)
	if policy.MayManage(method, c.Org, c.Operator, owner) {
		return nil
	}
	resource := owner
	if resource == "" {
		resource = "organizations"
	}
	return notAllowed(resource, policy.Stewards[method].String())
}

func (d *directory) CreateOrganization(ctx context.Context, req *pb.CreateOrganizationRequest) (*pb.Organization, error) {
	if err := mayManage(ctx, "CreateOrganization", ""); err != nil {
		return nil, err
	}
	var v validate.Violations
	validate.ResourceID(&v, "organization_id", req.OrganizationId)
	validate.Organization(&v, "organization", req.Organization, true)
	validate.RequestID(&v, "request_id", req.RequestId, false)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.Organization{}
	err := d.mutate(ctx, "CreateOrganization", req.RequestId, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		o := proto.Clone(req.Organization).(*pb.Organization)
		o.Name = "organizations/" + req.OrganizationId
		o.CreateTime, o.UpdateTime = timestamppb.New(now), timestamppb.New(now)
		stampOrg(o)
		if err := tx.CreateOrganization(o); err != nil {
			return nil, existsOr(err, o.Name)
		}
		return o, event(ctx, tx, now, pb.EventType_EVENT_TYPE_ORGANIZATION_CHANGED, o.Name, nil, true, 0)
	})
	return resp, err
}

// CreateOperator creates the operator organisation and its first key, once.
func CreateOperator(ctx context.Context, store storage.Store, now time.Time) (secret string, err error) {
	err = store.Update(ctx, func(tx storage.WriteTx) error {
		o := &pb.Organization{Name: "organizations/operator", Kind: pb.OrganizationKind_ORGANIZATION_KIND_OPERATOR,
			DisplayName: "Exchange operator", CreateTime: timestamppb.New(now), UpdateTime: timestamppb.New(now)}
		stampOrg(o)
		if err := tx.CreateOrganization(o); err != nil {
			return err
		}
		k, s := NewAPIKey(o.Name, "first operator key", now)
		secret = s
		return tx.CreateAPIKey(k)
	})
	return secret, err
}

func existsOr(err error, resource string) error {
	if errorsIs(err, storage.ErrAlreadyExists) {
		return apiError(codes.AlreadyExists, pb.ErrorReason_ERROR_REASON_RESOURCE_EXISTS, resource+" already exists",
			map[string]string{"resource": resource})
	}
	return err
}

func notFoundOr(err error, resource string) error {
	if errorsIs(err, storage.ErrNotFound) {
		return notFound(resource)
	}
	return err
}

func (d *directory) GetOrganization(ctx context.Context, req *pb.GetOrganizationRequest) (*pb.Organization, error) {
	var o *pb.Organization
	err := d.view(ctx, func(tx storage.ReadTx, _ time.Time) error {
		var err error
		o, err = tx.GetOrganization(req.Name)
		return notFoundOr(err, req.Name)
	})
	return o, err
}

func (d *directory) ListOrganizations(ctx context.Context, req *pb.ListOrganizationsRequest) (*pb.ListOrganizationsResponse, error) {
	var v validate.Violations
	size := validate.PageSize(&v, "page_size", req.PageSize, 50)
	after := parsePageToken(&v, "page_token", req.PageToken, req.Filter)
	kind := pb.OrganizationKind_ORGANIZATION_KIND_UNSPECIFIED
	terms, err := filter.Parse(req.Filter, filter.Field{Name: "kind", Check: filter.Enum(kind.Descriptor())})
	if err != nil {
		v.Add("filter", "%v", err)
	} else if k, ok := terms["kind"]; ok {
		kind = pb.OrganizationKind(pb.OrganizationKind_value["ORGANIZATION_KIND_"+k])
	}
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.ListOrganizationsResponse{}
	err = d.view(ctx, func(tx storage.ReadTx, _ time.Time) error {
		p, err := tx.ListOrganizations(after, size)
		for _, o := range p.Items {
			if kind == 0 || o.Kind == kind {
				resp.Organizations = append(resp.Organizations, o)
			}
		}
		resp.NextPageToken = pageToken(p.Next, req.Filter)
		return err
	})
	return resp, err
}

func (d *directory) UpdateOrganization(ctx context.Context, req *pb.UpdateOrganizationRequest) (*pb.Organization, error) {
	name := req.GetOrganization().GetName()
	if err := mayManage(ctx, "UpdateOrganization", name); err != nil {
		return nil, err
	}
	var v validate.Violations
	validate.Organization(&v, "organization", req.Organization, false)
	validate.RequestID(&v, "request_id", req.RequestId, false)
	paths := maskPaths(&v, req.UpdateMask, "display_name", "ods_code", "charity_number", "contact", "hsds_id")
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.Organization{}
	err := d.mutate(ctx, "UpdateOrganization", req.RequestId, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		o, err := tx.GetOrganization(name)
		if err != nil {
			return nil, notFoundOr(err, name)
		}
		if err := checkEtag(req.Organization.Etag, o.Etag); err != nil {
			return nil, err
		}
		applyMask(o, req.Organization, paths)
		o.UpdateTime = timestamppb.New(now)
		stampOrg(o)
		if err := tx.UpdateOrganization(o); err != nil {
			return nil, err
		}
		return o, event(ctx, tx, now, pb.EventType_EVENT_TYPE_ORGANIZATION_CHANGED, o.Name, nil, true, 0)
	})
	return resp, err
}

// applyMask copies the top-level fields named in paths (checked by
// maskPaths) from src to dst; a field unset in src is cleared in dst.
func applyMask(dst, src proto.Message, paths []string) {
	d, from := dst.ProtoReflect(), src.ProtoReflect()
	fields := d.Descriptor().Fields()
	for _, p := range paths {
		fd := fields.ByName(protoreflect.Name(p))
		if from.Has(fd) {
			d.Set(fd, from.Get(fd))
		} else {
			d.Clear(fd)
		}
	}
}

// maskPaths returns the fields to update: the mask's paths, or all when empty.
func maskPaths(v *validate.Violations, m *fieldmaskpb.FieldMask, allowed ...string) []string {
	if len(m.GetPaths()) == 0 {
		return allowed
	}
	for _, p := range m.Paths {
		if !slices.Contains(allowed, p) {
			v.Add("update_mask", "%q cannot be updated; allowed: %s", p, strings.Join(allowed, ", "))
		}
	}
	return m.Paths
}

func (d *directory) CreateService(ctx context.Context, req *pb.CreateServiceRequest) (*pb.Service, error) {
	if err := mayManage(ctx, "CreateService", req.Parent); err != nil {
		return nil, err
	}
	var v validate.Violations
	validate.ResourceID(&v, "service_id", req.ServiceId)
	validate.Service(&v, "service", req.Service)
	validate.RequestID(&v, "request_id", req.RequestId, false)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.Service{}
	err := d.mutate(ctx, "CreateService", req.RequestId, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		s := proto.Clone(req.Service).(*pb.Service)
		s.Name = req.Parent + "/services/" + req.ServiceId
		if s.DefaultReplyWithin == nil {
			s.DefaultReplyWithin = durationpb.New(DefaultReplyWithin)
		}
		s.CreateTime, s.UpdateTime = timestamppb.New(now), timestamppb.New(now)
		stampService(s)
		if err := tx.CreateService(s); err != nil {
			return nil, existsOr(err, s.Name)
		}
		c := &pb.Capacity{Name: s.Name + "/capacity", Status: pb.CapacityStatus_CAPACITY_STATUS_ACCEPTING, UpdateTime: timestamppb.New(now)}
		stampCapacity(c)
		if err := tx.PutCapacity(c); err != nil {
			return nil, err
		}
		return s, event(ctx, tx, now, pb.EventType_EVENT_TYPE_SERVICE_CHANGED, s.Name, nil, true, 0)
	})
	return resp, err
}

func (d *directory) GetService(ctx context.Context, req *pb.GetServiceRequest) (*pb.Service, error) {
	var s *pb.Service
	err := d.view(ctx, func(tx storage.ReadTx, _ time.Time) error {
		var err error
		s, err = tx.GetService(req.Name)
		return notFoundOr(err, req.Name)
	})
	return s, err
}

func (d *directory) ListServices(ctx context.Context, req *pb.ListServicesRequest) (*pb.ListServicesResponse, error) {
	var v validate.Violations
	org := req.Parent
	if org == "organizations/-" {
		org = ""
	} else if _, ok := names.Organization(org); !ok {
		v.Add("parent", "must be organizations/{organization} or organizations/-")
	}
	size := validate.PageSize(&v, "page_size", req.PageSize, 50)
	after := parsePageToken(&v, "page_token", req.PageToken, req.Parent)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.ListServicesResponse{}
	err := d.view(ctx, func(tx storage.ReadTx, _ time.Time) error {
		p, err := tx.ListServices(org, after, size)
		resp.Services, resp.NextPageToken = p.Items, pageToken(p.Next, req.Parent)
		return err
	})
	return resp, err
}

func (d *directory) UpdateService(ctx context.Context, req *pb.UpdateServiceRequest) (*pb.Service, error) {
	name := req.GetService().GetName()
	if err := mayManage(ctx, "UpdateService", names.OrgOfService(name)); err != nil {
		return nil, err
	}
	var v validate.Violations
	paths := maskPaths(&v, req.UpdateMask, "display_name", "description", "categories", "eligibility", "delivery_modes", "contact", "default_reply_within", "hsds_id")
	validate.RequestID(&v, "request_id", req.RequestId, false)
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.Service{}
	err := d.mutate(ctx, "UpdateService", req.RequestId, req, resp, func(tx storage.WriteTx, now time.Time) (proto.Message, error) {
		s, err := tx.GetService(name)
		if err != nil {
			return nil, notFoundOr(err, name)
		}
		if err := checkEtag(req.Service.Etag, s.Etag); err != nil {
			return nil, err
		}
		applyMask(s, req.Service, paths)
		var v validate.Violations
		validate.Service(&v, "service", s)
		if err := invalid(v); err != nil {
			return nil, err
		}
		s.UpdateTime = timestamppb.New(now)
		stampService(s)
		if err := tx.UpdateService(s); err != nil {
			return nil, err
		}
		return s, event(ctx, tx, now, pb.EventType_EVENT_TYPE_SERVICE_CHANGED, s.Name, nil, true, 0)
	})
	return resp, err
}

// matches reports whether service s fits a search.
func matches(s *pb.Service, cats []pb.Category, district string, age int32) bool {
	if len(cats) > 0 && !slices.ContainsFunc(s.Categories, func(c pb.Category) bool { return slices.Contains(cats, c) }) {
		return false
	}
	e := s.Eligibility
	if district != "" && len(e.GetPostcodeDistricts()) > 0 && !slices.Contains(e.PostcodeDistricts, district) {
		return false
	}
	if age > 0 && (age < e.GetMinAge() || (e.GetMaxAge() > 0 && age > e.GetMaxAge())) {
		return false
	}
	return true
}

func (d *directory) SearchServices(ctx context.Context, req *pb.SearchServicesRequest) (*pb.SearchServicesResponse, error) {
	var v validate.Violations
	validate.EnumList(&v, "categories", req.Categories, 0, 15)
	district := ""
	if req.Postcode != "" {
		if district = validate.District(req.Postcode); district == "" {
			v.Add("postcode", "must be a UK postcode or district such as M14 5AB or M14")
		}
	}
	if req.Age < 0 || req.Age > 130 {
		v.Add("age", "must be between 0 and 130")
	}
	size := validate.PageSize(&v, "page_size", req.PageSize, 50)
	filterKey, _ := proto.Marshal(&pb.SearchServicesRequest{Categories: req.Categories, Postcode: req.Postcode, Age: req.Age, HasCapacity: req.HasCapacity})
	after := parsePageToken(&v, "page_token", req.PageToken, string(filterKey))
	if err := invalid(v); err != nil {
		return nil, err
	}
	resp := &pb.SearchServicesResponse{}
	err := d.view(ctx, func(tx storage.ReadTx, _ time.Time) error {
		var p storage.Page[*pb.Service]
		var err error
		if len(req.Categories) == 1 {
			p, err = tx.ServicesInCategory(req.Categories[0], after, size)
		} else {
			p, err = tx.ListServices("", after, size)
		}
		if err != nil {
			return err
		}
		for _, s := range p.Items {
			if !matches(s, req.Categories, district, req.Age) {
				continue
			}
			c, err := tx.GetCapacity(s.Name)
			if err != nil {
				return err
			}
			if req.HasCapacity && !policy.HasCapacity(c.Status) {
				continue
			}
			resp.Matches = append(resp.Matches, &pb.ServiceMatch{Service: s, Capacity: c})
		}
		resp.NextPageToken = pageToken(p.Next, string(filterKey))
		return nil
	})
	return resp, err
}

// alternatives finds up to 3 other services of the same categories serving
// the district that can take a referral now.
func alternatives(tx storage.ReadTx, svc *pb.Service, district string) []string {
	var out []string
	for _, cat := range svc.Categories {
		after := ""
		for len(out) < 3 {
			p, err := tx.ServicesInCategory(cat, after, 100)
			if err != nil {
				return out
			}
			for _, s := range p.Items {
				if len(out) == 3 || s.Name == svc.Name || slices.Contains(out, s.Name) || !matches(s, nil, district, 0) {
					continue
				}
				if c, err := tx.GetCapacity(s.Name); err == nil && policy.HasCapacity(c.Status) {
					out = append(out, s.Name)
				}
			}
			if p.Next == "" {
				break
			}
			after = p.Next
		}
	}
	return out
}
