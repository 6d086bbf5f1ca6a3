package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/social-prescribing/exchange/client"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// contactFlags are the flags of a Contact.
type contactFlags struct {
	cmd                             *cobra.Command
	email, phone, website, postcode string
	lines                           []string
}

func addContactFlags(cmd *cobra.Command) *contactFlags {
	c := &contactFlags{cmd: cmd}
	f := cmd.Flags()
	f.StringVar(&c.email, "email", "", "contact email address")
	f.StringVar(&c.phone, "phone", "", "contact telephone number")
	f.StringVar(&c.website, "website", "", "website, https://...")
	f.StringVar(&c.postcode, "postcode", "", "postcode of the contact address")
	f.StringArrayVar(&c.lines, "address-line", nil, "a line of the contact address (repeat for each line)")
	return c
}

// changed reports whether any contact flag was given.
func (c *contactFlags) changed() bool {
	for _, n := range []string{"email", "phone", "website", "postcode", "address-line"} {
		if c.cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

// apply sets the given flags on contact, keeping the rest.
func (c *contactFlags) apply(contact *pb.Contact) *pb.Contact {
	if contact == nil {
		contact = &pb.Contact{}
	}
	f := c.cmd.Flags()
	if f.Changed("email") {
		contact.Email = c.email
	}
	if f.Changed("phone") {
		contact.Phone = c.phone
	}
	if f.Changed("website") {
		contact.Website = c.website
	}
	if f.Changed("postcode") {
		contact.Postcode = c.postcode
	}
	if f.Changed("address-line") {
		contact.AddressLines = c.lines
	}
	return contact
}

// mask lists, for the flags given, the fields they change.
func mask(cmd *cobra.Command, fields map[string]string) *fieldmaskpb.FieldMask {
	m := &fieldmaskpb.FieldMask{}
	seen := map[string]bool{}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if field, ok := fields[f.Name]; ok && !seen[field] {
			seen[field] = true
			m.Paths = append(m.Paths, field)
		}
	})
	return m
}

func (a *app) orgCmd() *cobra.Command {
	type orgOpts struct {
		display, ods, charity, hsds string
		kind                        *enumFlag
		contact                     *contactFlags
	}
	orgFlags := func(cmd *cobra.Command) *orgOpts {
		o := &orgOpts{}
		cmd.Flags().StringVar(&o.display, "display-name", "", "the name people know it by")
		cmd.Flags().StringVar(&o.ods, "ods-code", "", "NHS ODS code, e.g. Y01234")
		cmd.Flags().StringVar(&o.charity, "charity-number", "", "charity registration number")
		cmd.Flags().StringVar(&o.hsds, "hsds-id", "", "Open Referral HSDS id, for a directory entry")
		o.contact = addContactFlags(cmd)
		return o
	}
	orgFields := map[string]string{"display-name": "display_name", "ods-code": "ods_code", "charity-number": "charity_number",
		"hsds-id": "hsds_id", "email": "contact", "phone": "contact", "website": "contact", "postcode": "contact", "address-line": "contact"}

	var o *orgOpts
	create := a.requestIDFlag(&cobra.Command{
		Use:   "create ID",
		Short: "Register an organisation (operator)",
		Long:  "Register an organisation with the id ID (3-63 lower-case letters, digits and hyphens). Operator only. It then needs an API key: exchangectl key create ID.",
		Example: `  exchangectl org create hillside-walkers --kind vcse_organization \
    --display-name "Hillside Walking Group" --charity-number 1234567 --email hello@hillside.example`,
		Args: args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.CreateOrganizationRequest{OrganizationId: args[0], Organization: &pb.Organization{
				Kind: pb.OrganizationKind(o.kind.n), DisplayName: o.display, OdsCode: o.ods, CharityNumber: o.charity, HsdsId: o.hsds}}
			if o.contact.changed() {
				req.Organization.Contact = o.contact.apply(nil)
			}
			a.withRequestID(req)
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.Organization, error) {
				return c.Directory.CreateOrganization(ctx, req)
			})
		},
	})
	o = orgFlags(create)
	o.kind = addEnum(create.Flags(), "kind", pb.OrganizationKind(0).Descriptor(), "kind of organisation")
	create.MarkFlagRequired("kind")
	create.MarkFlagRequired("display-name")

	get := &cobra.Command{
		Use: "get ID", Short: "Show an organisation", Args: args("ID"),
		Example: "  exchangectl org get hillside-walkers",
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.Organization, error) {
				return c.Directory.GetOrganization(ctx, &pb.GetOrganizationRequest{Name: qualify("organizations", args[0])})
			})
		},
	}

	listCmd := &cobra.Command{
		Use: "list", Short: "List organisations", Args: args(),
		Example: "  exchangectl org list --kind vcse_organization --all",
	}
	listKind := addEnum(listCmd.Flags(), "kind", pb.OrganizationKind(0).Descriptor(), "only this kind")
	p := pageFlags(listCmd)
	listCmd.RunE = func(cmd *cobra.Command, _ []string) error {
		filter := ""
		if listKind.n != 0 {
			filter = "kind = " + listKind.String()
		}
		return list(a, cmd, p, func(ctx context.Context, c *client.Client, size int32, token string) (*pb.ListOrganizationsResponse, error) {
			return c.Directory.ListOrganizations(ctx, &pb.ListOrganizationsRequest{PageSize: size, PageToken: token, Filter: filter})
		})
	}

	var u *orgOpts
	update := a.requestIDFlag(&cobra.Command{
		Use:     "update ID",
		Short:   "Change an organisation's details (the organisation or the operator)",
		Long:    "Change the details given as flags; the others stay as they are.",
		Example: `  exchangectl org update hillside-walkers --phone "0161 496 0000"`,
		Args:    args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.Organization, error) {
				org, err := c.Directory.GetOrganization(ctx, &pb.GetOrganizationRequest{Name: qualify("organizations", args[0])})
				if err != nil {
					return nil, err
				}
				f := cmd.Flags()
				if f.Changed("display-name") {
					org.DisplayName = u.display
				}
				if f.Changed("ods-code") {
					org.OdsCode = u.ods
				}
				if f.Changed("charity-number") {
					org.CharityNumber = u.charity
				}
				if f.Changed("hsds-id") {
					org.HsdsId = u.hsds
				}
				if u.contact.changed() {
					org.Contact = u.contact.apply(org.Contact)
				}
				m := mask(cmd, orgFields)
				if len(m.Paths) == 0 {
					return nil, usagef("nothing to change: give at least one of the flags")
				}
				req := &pb.UpdateOrganizationRequest{Organization: org, UpdateMask: m}
				a.withRequestID(req)
				return c.Directory.UpdateOrganization(ctx, req)
			})
		},
	})
	u = orgFlags(update)

	return group("org", "Organisations in the directory", create, get, listCmd, update)
}

func (a *app) keyCmd() *cobra.Command {
	var display string
	create := a.requestIDFlag(&cobra.Command{
		Use:   "create ORG",
		Short: "Make an API key for an organisation (the organisation or the operator)",
		Long: `Make an API key for the organisation ORG. The secret is printed once and
never stored by the exchange: keep it somewhere safe, e.g. the organisation's
password manager.`,
		Example: `  exchangectl key create hillside-walkers --display-name "Inbox laptop"
  exchangectl key create hillside-walkers -o json | jq -r .secret`,
		Args: args("ORG"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.CreateApiKeyRequest{Parent: qualify("organizations", args[0]), ApiKey: &pb.ApiKey{DisplayName: display}}
			a.withRequestID(req)
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.CreateApiKeyResponse, error) {
				return c.APIKeys.CreateApiKey(ctx, req)
			})
		},
	})
	create.Flags().StringVar(&display, "display-name", "", "what the key is for, e.g. \"Inbox laptop\"")
	create.MarkFlagRequired("display-name")

	listCmd := &cobra.Command{Use: "list ORG", Short: "List an organisation's API keys (the organisation or the operator)", Args: args("ORG"),
		Example: "  exchangectl key list hillside-walkers"}
	p := pageFlags(listCmd)
	listCmd.RunE = func(cmd *cobra.Command, args []string) error {
		return list(a, cmd, p, func(ctx context.Context, c *client.Client, size int32, token string) (*pb.ListApiKeysResponse, error) {
			return c.APIKeys.ListApiKeys(ctx, &pb.ListApiKeysRequest{Parent: qualify("organizations", args[0]), PageSize: size, PageToken: token})
		})
	}

	revoke := a.requestIDFlag(&cobra.Command{
		Use: "revoke KEY", Short: "Revoke an API key at once (the organisation or the operator)", Args: args("KEY"),
		Long:    "Revoke the key named KEY (organizations/{org}/apiKeys/{id}, as key list shows it). Calls with it fail from then on.",
		Example: "  exchangectl key revoke organizations/hillside-walkers/apiKeys/k7d2m4q9",
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.RevokeApiKeyRequest{Name: args[0]}
			a.withRequestID(req)
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.ApiKey, error) {
				return c.APIKeys.RevokeApiKey(ctx, req)
			})
		},
	})
	return group("key", "API keys of organisations", create, listCmd, revoke)
}

func (a *app) serviceCmd() *cobra.Command {
	// Each of create and update has its own flags.
	type serviceOpts struct {
		display, description, notes, hsds string
		minAge, maxAge                    int32
		districts                         []string
		replyWithin                       time.Duration
		categories, modes                 *enumListFlag
		contact                           *contactFlags
	}
	opts := map[*cobra.Command]*serviceOpts{}
	serviceFlags := func(cmd *cobra.Command) {
		s := &serviceOpts{}
		opts[cmd] = s
		f := cmd.Flags()
		f.StringVar(&s.display, "display-name", "", "the service's name, e.g. \"Health walks\"")
		f.StringVar(&s.description, "description", "", "what the service offers, in words")
		s.categories = addEnumList(f, "category", pb.Category(0).Descriptor(), "needs the service helps with")
		s.modes = addEnumList(f, "delivery-mode", pb.DeliveryMode(0).Descriptor(), "how it is delivered")
		f.Int32Var(&s.minAge, "min-age", 0, "youngest age served (0: no limit)")
		f.Int32Var(&s.maxAge, "max-age", 0, "oldest age served (0: no limit)")
		f.StringArrayVar(&s.districts, "postcode-district", nil, "postcode district served, e.g. M14 (repeat; none: anywhere)")
		f.StringVar(&s.notes, "eligibility-notes", "", "other eligibility criteria, in words")
		f.DurationVar(&s.replyWithin, "reply-within", 0, "how long the service has to answer a referral, e.g. 72h (default 120h)")
		f.StringVar(&s.hsds, "hsds-id", "", "Open Referral HSDS id")
		s.contact = addContactFlags(cmd)
	}
	eligibilityFlags := []string{"min-age", "max-age", "postcode-district", "eligibility-notes"}
	// apply sets the given flags on svc.
	apply := func(cmd *cobra.Command, svc *pb.Service) {
		s := opts[cmd]
		f := cmd.Flags()
		if f.Changed("display-name") {
			svc.DisplayName = s.display
		}
		if f.Changed("description") {
			svc.Description = s.description
		}
		if f.Changed("category") {
			svc.Categories = enumList[pb.Category](s.categories)
		}
		if f.Changed("delivery-mode") {
			svc.DeliveryModes = enumList[pb.DeliveryMode](s.modes)
		}
		for _, n := range eligibilityFlags {
			if f.Changed(n) && svc.Eligibility == nil {
				svc.Eligibility = &pb.Eligibility{}
			}
		}
		if f.Changed("min-age") {
			svc.Eligibility.MinAge = s.minAge
		}
		if f.Changed("max-age") {
			svc.Eligibility.MaxAge = s.maxAge
		}
		if f.Changed("postcode-district") {
			svc.Eligibility.PostcodeDistricts = s.districts
		}
		if f.Changed("eligibility-notes") {
			svc.Eligibility.Notes = s.notes
		}
		if f.Changed("reply-within") {
			svc.DefaultReplyWithin = durationpb.New(s.replyWithin)
		}
		if f.Changed("hsds-id") {
			svc.HsdsId = s.hsds
		}
		if s.contact.changed() {
			svc.Contact = s.contact.apply(svc.Contact)
		}
	}
	serviceFields := map[string]string{"display-name": "display_name", "description": "description", "category": "categories",
		"delivery-mode": "delivery_modes", "min-age": "eligibility", "max-age": "eligibility", "postcode-district": "eligibility",
		"eligibility-notes": "eligibility", "reply-within": "default_reply_within", "hsds-id": "hsds_id",
		"email": "contact", "phone": "contact", "website": "contact", "postcode": "contact", "address-line": "contact"}

	create := a.requestIDFlag(&cobra.Command{
		Use:   "create ORG/SERVICE",
		Short: "Publish a service (its organisation or the operator)",
		Long:  "Publish the service SERVICE (3-63 lower-case letters, digits and hyphens) of organisation ORG. It starts ACCEPTING referrals with no maximum; see exchangectl capacity set.",
		Example: `  exchangectl service create hillside-walkers/health-walks --display-name "Health walks" \
    --category physical_activity,social_isolation --delivery-mode in_person \
    --min-age 18 --postcode-district M14 --postcode-district M15 --reply-within 72h`,
		Args: args("ORG/SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := serviceName(args[0])
			if err != nil {
				return err
			}
			parent, id := splitService(name)
			svc := &pb.Service{}
			apply(cmd, svc)
			req := &pb.CreateServiceRequest{Parent: parent, ServiceId: id, Service: svc}
			a.withRequestID(req)
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.Service, error) {
				return c.Directory.CreateService(ctx, req)
			})
		},
	})
	serviceFlags(create)
	create.MarkFlagRequired("display-name")
	create.MarkFlagRequired("category")

	get := &cobra.Command{Use: "get ORG/SERVICE", Short: "Show a service", Args: args("ORG/SERVICE"),
		Example: "  exchangectl service get hillside-walkers/health-walks",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := serviceName(args[0])
			if err != nil {
				return err
			}
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.Service, error) {
				return c.Directory.GetService(ctx, &pb.GetServiceRequest{Name: name})
			})
		}}

	listCmd := &cobra.Command{Use: "list [ORG]", Short: "List the services of an organisation, or of all", Args: cobra.MaximumNArgs(1),
		Example: "  exchangectl service list hillside-walkers\n  exchangectl service list --all"}
	p := pageFlags(listCmd)
	listCmd.RunE = func(cmd *cobra.Command, args []string) error {
		parent := "organizations/-"
		if len(args) == 1 {
			parent = qualify("organizations", args[0])
		}
		return list(a, cmd, p, func(ctx context.Context, c *client.Client, size int32, token string) (*pb.ListServicesResponse, error) {
			return c.Directory.ListServices(ctx, &pb.ListServicesRequest{Parent: parent, PageSize: size, PageToken: token})
		})
	}

	update := a.requestIDFlag(&cobra.Command{
		Use: "update ORG/SERVICE", Short: "Change a service's description (its organisation or the operator)", Args: args("ORG/SERVICE"),
		Long:    "Change the details given as flags; the others stay as they are. Capacity is changed with exchangectl capacity set.",
		Example: `  exchangectl service update hillside-walkers/health-walks --description "Weekly guided walks, 1-3 miles"`,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := serviceName(args[0])
			if err != nil {
				return err
			}
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.Service, error) {
				svc, err := c.Directory.GetService(ctx, &pb.GetServiceRequest{Name: name})
				if err != nil {
					return nil, err
				}
				apply(cmd, svc)
				m := mask(cmd, serviceFields)
				if len(m.Paths) == 0 {
					return nil, usagef("nothing to change: give at least one of the flags")
				}
				req := &pb.UpdateServiceRequest{Service: svc, UpdateMask: m}
				a.withRequestID(req)
				return c.Directory.UpdateService(ctx, req)
			})
		}})
	serviceFlags(update)

	search := &cobra.Command{Use: "search", Short: "Find services for a person's needs", Args: args(),
		Example: "  exchangectl service search --category physical_activity --postcode \"M14 5AB\" --age 67 --has-capacity"}
	var q struct {
		postcode string
		age      int32
		free     bool
	}
	cats := addEnumList(search.Flags(), "category", pb.Category(0).Descriptor(), "needs to match (any of them)")
	search.Flags().StringVar(&q.postcode, "postcode", "", "the person's postcode: only services covering its district")
	search.Flags().Int32Var(&q.age, "age", 0, "the person's age: only services for that age")
	search.Flags().BoolVar(&q.free, "has-capacity", false, "only services that can take a referral now")
	sp := pageFlags(search)
	search.RunE = func(cmd *cobra.Command, _ []string) error {
		return list(a, cmd, sp, func(ctx context.Context, c *client.Client, size int32, token string) (*pb.SearchServicesResponse, error) {
			return c.Directory.SearchServices(ctx, &pb.SearchServicesRequest{Categories: enumList[pb.Category](cats),
				Postcode: q.postcode, Age: q.age, HasCapacity: q.free, PageSize: size, PageToken: token})
		})
	}
	return group("service", "Services offered by organisations", create, get, listCmd, update, search)
}

// splitService splits organizations/o/services/s into its parent and id.
func splitService(name string) (parent, id string) {
	i := strings.LastIndex(name, "/services/")
	return name[:i], name[i+len("/services/"):]
}

func (a *app) capacityCmd() *cobra.Command {
	get := &cobra.Command{Use: "get ORG/SERVICE", Short: "Show a service's capacity and counts", Args: args("ORG/SERVICE"),
		Example: "  exchangectl capacity get hillside-walkers/health-walks",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := serviceName(args[0])
			if err != nil {
				return err
			}
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.Capacity, error) {
				return c.Capacity.GetCapacity(ctx, &pb.GetCapacityRequest{Name: name + "/capacity"})
			})
		}}
	var max int32
	var notes string
	set := a.requestIDFlag(&cobra.Command{
		Use: "set ORG/SERVICE", Short: "Publish a service's capacity (its organisation)", Args: args("ORG/SERVICE"),
		Long: `Set the status, the maximum number of active referrals and notes for
referrers. With a maximum, the exchange switches between ACCEPTING and
WAITLIST by itself as referrals start and end.`,
		Example: `  exchangectl capacity set hillside-walkers/health-walks --status accepting --max 20
  exchangectl capacity set hillside-walkers/health-walks --status paused --notes "Back in March"`,
	})
	status := addEnum(set.Flags(), "status", pb.CapacityStatus(0).Descriptor(), "capacity status")
	set.Flags().Int32Var(&max, "max", 0, "most active referrals at once (0: no maximum)")
	set.Flags().StringVar(&notes, "notes", "", "notes for referrers, e.g. when a waiting list will open")
	set.RunE = func(cmd *cobra.Command, args []string) error {
		name, err := serviceName(args[0])
		if err != nil {
			return err
		}
		m := mask(cmd, map[string]string{"status": "status", "max": "max_active_referrals", "notes": "notes"})
		if len(m.Paths) == 0 {
			return usagef("nothing to change: give --status, --max or --notes")
		}
		req := &pb.UpdateCapacityRequest{Capacity: &pb.Capacity{Name: name + "/capacity", Status: pb.CapacityStatus(status.n),
			MaxActiveReferrals: max, Notes: notes}, UpdateMask: m}
		a.withRequestID(req)
		return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.Capacity, error) {
			return c.Capacity.UpdateCapacity(ctx, req)
		})
	}
	return group("capacity", "Capacity of services: whether they can take referrals", get, set)
}
