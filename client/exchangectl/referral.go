package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/social-prescribing/exchange/client"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

func (a *app) referralCmd() *cobra.Command {
	cmds := append([]*cobra.Command{a.referralCreateCmd(), a.referralGetCmd(), a.referralListCmd()}, a.referralStateCmds()...)
	return group("referral", "Referrals: make them, find them, move them through their states", cmds...)
}

func (a *app) referralCreateCmd() *cobra.Command {
	var r struct {
		file, service, consent, parent, reason, replyBy       string
		nhs, given, family, dob, postcode, phone, email, lang string
		access                                                string
		lines                                                 []string
		interpreter                                           bool
	}
	cmd := a.requestIDFlag(&cobra.Command{
		Use:   "create",
		Short: "Refer a person to a service",
		Long: `Refer a person to a service. The caller is the referrer. The person's consent
must be recorded first (exchangectl consent record) and named with --consent.

The referral can also be read from a JSON file (--from-file, the Referral
message in the proto3 JSON mapping); flags given as well override the file.
Use --request-id in scripts: running the same command again with the same id
never makes a second referral.`,
		Example: `  exchangectl referral create --service riverside-pcn/link-workers --consent 01JD2X... \
    --nhs-number 9434765919 --given-name Ada --family-name Lovelace --date-of-birth 1952-12-10 \
    --postcode "M14 5AB" --route primary_care --need social_isolation --need mental_wellbeing \
    --support-level intensive --reason "Lives alone since her husband died" --request-id ref-2026-0001`,
		Args: args(),
	})
	f := cmd.Flags()
	f.StringVar(&r.file, "from-file", "", "JSON file of the referral (proto3 JSON of exchange.v1.Referral)")
	f.StringVar(&r.service, "service", "", "the service referred to, ORG/SERVICE")
	f.StringVar(&r.consent, "consent", "", "the person's consent, consents/ID or ID")
	f.StringVar(&r.parent, "parent", "", "for an onward referral: the referral it comes from")
	f.StringVar(&r.reason, "reason", "", "why the person is referred, in words")
	f.StringVar(&r.replyBy, "reply-by", "", "when the service should answer: a time (RFC 3339) or how long from now (e.g. 72h)")
	f.StringVar(&r.nhs, "nhs-number", "", "the person's NHS number")
	f.StringVar(&r.given, "given-name", "", "the person's given name(s)")
	f.StringVar(&r.family, "family-name", "", "the person's family name")
	f.StringVar(&r.dob, "date-of-birth", "", "the person's date of birth, YYYY-MM-DD")
	f.StringVar(&r.postcode, "postcode", "", "the person's postcode")
	f.StringVar(&r.phone, "phone", "", "the person's telephone number")
	f.StringVar(&r.email, "email", "", "the person's email address")
	f.StringArrayVar(&r.lines, "address-line", nil, "a line of the person's address (repeat)")
	f.StringVar(&r.lang, "language", "", "the person's preferred language, e.g. ur (default English)")
	f.BoolVar(&r.interpreter, "interpreter", false, "the person needs an interpreter")
	f.StringVar(&r.access, "accessibility-needs", "", "accessibility or communication needs, in words")
	sex := addEnum(f, "sex", pb.Sex(0).Descriptor(), "the person's sex")
	contact := addEnum(f, "contact-method", pb.ContactMethod(0).Descriptor(), "how the person prefers to be contacted")
	route := addEnum(f, "route", pb.ReferralRoute(0).Descriptor(), "where the referral came from")
	support := addEnum(f, "support-level", pb.SupportLevel(0).Descriptor(), "how much support the person needs")
	needs := addEnumList(f, "need", pb.Category(0).Descriptor(), "what the person needs help with")

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ref := &pb.Referral{}
		if r.file != "" {
			b, err := os.ReadFile(r.file)
			if err != nil {
				return err
			}
			if err := protojson.Unmarshal(b, ref); err != nil {
				return fmt.Errorf("%s: %w", r.file, err)
			}
		}
		if ref.Person == nil {
			ref.Person = &pb.Person{}
		}
		p, fl := ref.Person, cmd.Flags()
		set := func(name string, apply func()) {
			if fl.Changed(name) {
				apply()
			}
		}
		var err error
		set("service", func() { ref.RecipientService, err = serviceName(r.service) })
		if err != nil {
			return err
		}
		set("consent", func() { ref.Consent = qualify("consents", r.consent) })
		set("parent", func() { ref.ParentReferral = qualify("referrals", r.parent) })
		set("reason", func() { ref.Reason = r.reason })
		set("route", func() { ref.Route = pb.ReferralRoute(route.n) })
		set("support-level", func() { ref.SupportLevel = pb.SupportLevel(support.n) })
		set("need", func() { ref.Needs = enumList[pb.Category](needs) })
		set("nhs-number", func() { p.NhsNumber = r.nhs })
		set("given-name", func() { p.GivenName = r.given })
		set("family-name", func() { p.FamilyName = r.family })
		set("date-of-birth", func() { p.DateOfBirth = r.dob })
		set("postcode", func() { p.Postcode = r.postcode })
		set("phone", func() { p.Phone = r.phone })
		set("email", func() { p.Email = r.email })
		set("address-line", func() { p.AddressLines = r.lines })
		set("language", func() { p.Language = r.lang })
		set("interpreter", func() { p.InterpreterNeeded = r.interpreter })
		set("accessibility-needs", func() { p.AccessibilityNeeds = r.access })
		set("sex", func() { p.Sex = pb.Sex(sex.n) })
		set("contact-method", func() { p.PreferredContactMethod = pb.ContactMethod(contact.n) })
		if fl.Changed("reply-by") {
			t, err := timeOrAhead(r.replyBy)
			if err != nil {
				return usagef("--reply-by: %v", err)
			}
			ref.ReplyBy = timestamppb.New(t)
		}
		if ref.RecipientService == "" || ref.Consent == "" {
			return usagef("referral create needs --service and --consent (or both in --from-file)")
		}
		req := &pb.CreateReferralRequest{Referral: ref}
		a.withRequestID(req)
		return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.Referral, error) {
			return c.Referrals.CreateReferral(ctx, req)
		})
	}
	return cmd
}

// timeOrAhead reads an RFC 3339 time, or a duration from now.
func timeOrAhead(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(d), nil
	}
	return time.Parse(time.RFC3339, s)
}

func (a *app) referralGetCmd() *cobra.Command {
	return &cobra.Command{Use: "get REFERRAL", Short: "Show a referral", Args: args("REFERRAL"),
		Long:    "Show a referral, as much of it as the caller may see (the person only where the consent allows).",
		Example: "  exchangectl referral get 01JD2X4TFQ3M5\n  exchangectl referral get referrals/01JD2X4TFQ3M5 -o json",
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.Referral, error) {
				return c.Referrals.GetReferral(ctx, &pb.GetReferralRequest{Name: qualify("referrals", args[0])})
			})
		}}
}

func (a *app) referralListCmd() *cobra.Command {
	var l struct {
		recipient, referrer, parent, filter string
		overdue                             bool
	}
	cmd := &cobra.Command{Use: "list", Short: "List referrals, filtered", Args: args(),
		Long: `List the referrals the caller may see, oldest first. The filters are joined
with AND; --filter takes the exchange's filter syntax for anything else.`,
		Example: `  exchangectl referral list --state requested --recipient hillside-walkers
  exchangectl referral list --overdue --all -o json`}
	state := addEnum(cmd.Flags(), "state", pb.ReferralState(0).Descriptor(), "only referrals in this state")
	cmd.Flags().StringVar(&l.recipient, "recipient", "", "only referrals received by this organisation (ORG) or service (ORG/SERVICE)")
	cmd.Flags().StringVar(&l.referrer, "referrer", "", "only referrals made by this organisation")
	cmd.Flags().StringVar(&l.parent, "parent", "", "only onward referrals of this referral")
	cmd.Flags().BoolVar(&l.overdue, "overdue", false, "only REQUESTED referrals past their reply-by time")
	cmd.Flags().StringVar(&l.filter, "filter", "", `a filter in the exchange's syntax, e.g. 'state = ACCEPTED'`)
	p := pageFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var terms []string
		if state.n != 0 {
			terms = append(terms, "state = "+state.String())
		}
		if l.recipient != "" {
			name := qualify("organizations", l.recipient)
			if strings.Contains(l.recipient, "/") && !strings.HasPrefix(l.recipient, "organizations/") {
				var err error
				if name, err = serviceName(l.recipient); err != nil {
					return err
				}
			}
			terms = append(terms, "recipient = "+strconv.Quote(name))
		}
		if l.referrer != "" {
			terms = append(terms, "referrer = "+strconv.Quote(qualify("organizations", l.referrer)))
		}
		if l.parent != "" {
			terms = append(terms, "parent = "+strconv.Quote(qualify("referrals", l.parent)))
		}
		if l.overdue {
			terms = append(terms, "overdue = true")
		}
		if l.filter != "" {
			terms = append(terms, l.filter)
		}
		filter := strings.Join(terms, " AND ")
		return list(a, cmd, p, func(ctx context.Context, c *client.Client, size int32, token string) (*pb.ListReferralsResponse, error) {
			return c.Referrals.ListReferrals(ctx, &pb.ListReferralsRequest{Filter: filter, PageSize: size, PageToken: token})
		})
	}
	return cmd
}

// reasonNeed says whether a state method takes a reason.
type reasonNeed int

const (
	noReason reasonNeed = iota
	reasonRequired
	reasonOptional
)

// stateMethods are the state commands, one per state method of the
// ReferralService; the exchange decides which moves are allowed.
var stateMethods = []struct {
	use, short, example string
	reason              reasonNeed
	call                func(ctx context.Context, c *client.Client, name, etag, rid string, r *pb.StateReason) (*pb.Referral, error)
}{
	{"accept", "Accept a referral (receiving side): REQUESTED or ON_HOLD -> ACCEPTED", "exchangectl referral accept 01JD2X4TFQ3M5", noReason,
		func(ctx context.Context, c *client.Client, name, etag, rid string, _ *pb.StateReason) (*pb.Referral, error) {
			return c.Referrals.AcceptReferral(ctx, &pb.AcceptReferralRequest{Name: name, Etag: etag, RequestId: rid})
		}},
	{"reject", "Decline a referral (receiving side): -> REJECTED", "exchangectl referral reject 01JD2X4TFQ3M5 --reason not_eligible --text \"Over 25s only\"", reasonRequired,
		func(ctx context.Context, c *client.Client, name, etag, rid string, r *pb.StateReason) (*pb.Referral, error) {
			return c.Referrals.RejectReferral(ctx, &pb.RejectReferralRequest{Name: name, Etag: etag, RequestId: rid, Reason: r})
		}},
	{"start", "Support has begun (receiving side): ACCEPTED -> IN_PROGRESS", "exchangectl referral start 01JD2X4TFQ3M5", noReason,
		func(ctx context.Context, c *client.Client, name, etag, rid string, _ *pb.StateReason) (*pb.Referral, error) {
			return c.Referrals.StartReferral(ctx, &pb.StartReferralRequest{Name: name, Etag: etag, RequestId: rid})
		}},
	{"hold", "Waitlist or pause a referral (receiving side): -> ON_HOLD", "exchangectl referral hold 01JD2X4TFQ3M5 --reason no_capacity", reasonRequired,
		func(ctx context.Context, c *client.Client, name, etag, rid string, r *pb.StateReason) (*pb.Referral, error) {
			return c.Referrals.HoldReferral(ctx, &pb.HoldReferralRequest{Name: name, Etag: etag, RequestId: rid, Reason: r})
		}},
	{"resume", "Take a referral off hold (receiving side): ON_HOLD -> ACCEPTED or IN_PROGRESS", "exchangectl referral resume 01JD2X4TFQ3M5", noReason,
		func(ctx context.Context, c *client.Client, name, etag, rid string, _ *pb.StateReason) (*pb.Referral, error) {
			return c.Referrals.ResumeReferral(ctx, &pb.ResumeReferralRequest{Name: name, Etag: etag, RequestId: rid})
		}},
	{"complete", "The support was delivered (receiving side): IN_PROGRESS -> COMPLETED", "exchangectl referral complete 01JD2X4TFQ3M5", noReason,
		func(ctx context.Context, c *client.Client, name, etag, rid string, _ *pb.StateReason) (*pb.Referral, error) {
			return c.Referrals.CompleteReferral(ctx, &pb.CompleteReferralRequest{Name: name, Etag: etag, RequestId: rid})
		}},
	{"fail", "The support could not be delivered (receiving side): -> FAILED", "exchangectl referral fail 01JD2X4TFQ3M5 --reason unable_to_contact", reasonRequired,
		func(ctx context.Context, c *client.Client, name, etag, rid string, r *pb.StateReason) (*pb.Referral, error) {
			return c.Referrals.FailReferral(ctx, &pb.FailReferralRequest{Name: name, Etag: etag, RequestId: rid, Reason: r})
		}},
	{"cancel", "Call a referral off (referring side): -> CANCELLED", "exchangectl referral cancel 01JD2X4TFQ3M5 --reason needs_changed", reasonRequired,
		func(ctx context.Context, c *client.Client, name, etag, rid string, r *pb.StateReason) (*pb.Referral, error) {
			return c.Referrals.CancelReferral(ctx, &pb.CancelReferralRequest{Name: name, Etag: etag, RequestId: rid, Reason: r})
		}},
	{"entered-in-error", "Mark a referral that should never have existed (referring side): -> ENTERED_IN_ERROR", "exchangectl referral entered-in-error 01JD2X4TFQ3M5 --reason duplicate", reasonOptional,
		func(ctx context.Context, c *client.Client, name, etag, rid string, r *pb.StateReason) (*pb.Referral, error) {
			return c.Referrals.MarkReferralEnteredInError(ctx, &pb.MarkReferralEnteredInErrorRequest{Name: name, Etag: etag, RequestId: rid, Reason: r})
		}},
}

func (a *app) referralStateCmds() []*cobra.Command {
	var cmds []*cobra.Command
	for _, m := range stateMethods {
		var etag, text string
		cmd := a.requestIDFlag(&cobra.Command{Use: m.use + " REFERRAL", Short: m.short, Args: args("REFERRAL"), Example: "  " + m.example})
		cmd.Flags().StringVar(&etag, "etag", "", "the referral's etag as last read: refuse the change if someone changed it since")
		var code *enumFlag
		if m.reason != noReason {
			code = addEnum(cmd.Flags(), "reason", pb.StateReasonCode(0).Descriptor(), "why")
			cmd.Flags().StringVar(&text, "text", "", "why, in words (required with --reason other); no clinical detail: both sides see it")
			if m.reason == reasonRequired {
				cmd.MarkFlagRequired("reason")
			}
		}
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			var r *pb.StateReason
			if code != nil && (code.n != 0 || text != "") {
				r = &pb.StateReason{Code: pb.StateReasonCode(code.n), Text: text}
			}
			return do(a, cmd, func(ctx context.Context, c *client.Client) (*pb.Referral, error) {
				return m.call(ctx, c, qualify("referrals", args[0]), etag, a.requestID, r)
			})
		}
		cmds = append(cmds, cmd)
	}
	return cmds
}
