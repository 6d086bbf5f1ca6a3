package main

import (
	"context"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/social-prescribing/exchange/client"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

func (a *app) consentCmd() *cobra.Command {
	var c struct {
		nhs, from, until string
		recipients       []string
	}
	record := a.requestIDFlag(&cobra.Command{
		Use:   "record",
		Short: "Record a person's consent to share their information",
		Long: `Record the consent a person gave your organisation. Referrals name it; it
must include DIRECT_CARE. FEEDBACK_TO_REFERRER lets the referrer see uptake and
outcomes; EVALUATION lets the data count in reports.`,
		Example: `  exchangectl consent record --nhs-number 9434765919 --method verbal \
    --purpose direct_care,feedback_to_referrer --scope referral_chain --valid-until 2027-11-21T00:00:00Z`,
		Args: args(),
	})
	f := record.Flags()
	f.StringVar(&c.nhs, "nhs-number", "", "the person's NHS number")
	method := addEnum(f, "method", pb.ConsentMethod(0).Descriptor(), "how the person gave consent")
	purposes := addEnumList(f, "purpose", pb.ConsentPurpose(0).Descriptor(), "what the information may be used for")
	scope := addEnum(f, "scope", pb.ConsentRecipientScope(0).Descriptor(), "who may receive it")
	f.StringArrayVar(&c.recipients, "recipient", nil, "with --scope named_organizations: an organisation that may receive it (repeat)")
	f.StringVar(&c.from, "valid-from", "", "from when it applies: a time (RFC 3339) or how long from now (default now)")
	f.StringVar(&c.until, "valid-until", "", "until when it applies: a time (RFC 3339) or how long from now, e.g. 8760h")
	for _, n := range []string{"nhs-number", "method", "purpose", "scope"} {
		record.MarkFlagRequired(n)
	}
	record.RunE = func(cmd *cobra.Command, _ []string) error {
		consent := &pb.Consent{NhsNumber: c.nhs, Method: pb.ConsentMethod(method.n),
			Purposes: enumList[pb.ConsentPurpose](purposes), RecipientScope: pb.ConsentRecipientScope(scope.n)}
		for _, r := range c.recipients {
			consent.Recipients = append(consent.Recipients, qualify("organizations", r))
		}
		for _, t := range []struct {
			flag, value string
			dst         **timestamppb.Timestamp
		}{{"valid-from", c.from, &consent.ValidFrom}, {"valid-until", c.until, &consent.ValidUntil}} {
			if t.value != "" {
				when, err := timeOrAhead(t.value)
				if err != nil {
					return usagef("--%s: %v", t.flag, err)
				}
				*t.dst = timestamppb.New(when)
			}
		}
		req := &pb.CreateConsentRequest{Consent: consent}
		a.withRequestID(req)
		return do(a, cmd, func(ctx context.Context, cl *client.Client) (*pb.Consent, error) {
			return cl.Consents.CreateConsent(ctx, req)
		})
	}

	get := &cobra.Command{Use: "get CONSENT", Short: "Show a consent", Args: args("CONSENT"),
		Example: "  exchangectl consent get 01JD2X4TFQ3M5",
		RunE: func(cmd *cobra.Command, args []string) error {
			return do(a, cmd, func(ctx context.Context, cl *client.Client) (*pb.Consent, error) {
				return cl.Consents.GetConsent(ctx, &pb.GetConsentRequest{Name: qualify("consents", args[0])})
			})
		}}

	var nhs string
	listCmd := &cobra.Command{Use: "list", Short: "List a person's consents you may see", Args: args(),
		Example: "  exchangectl consent list --nhs-number 9434765919"}
	listCmd.Flags().StringVar(&nhs, "nhs-number", "", "the person's NHS number")
	listCmd.MarkFlagRequired("nhs-number")
	p := pageFlags(listCmd)
	listCmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return list(a, cmd, p, func(ctx context.Context, cl *client.Client, size int32, token string) (*pb.ListConsentsResponse, error) {
			return cl.Consents.ListConsents(ctx, &pb.ListConsentsRequest{NhsNumber: nhs, PageSize: size, PageToken: token})
		})
	}

	withdraw := a.requestIDFlag(&cobra.Command{Use: "withdraw CONSENT", Short: "Withdraw a consent: its open referrals are cancelled", Args: args("CONSENT"),
		Long: `Record that the person withdrew their consent. Every open referral relying on
it is cancelled with reason CONSENT_WITHDRAWN, and the person's details are
hidden from the services.`,
		Example: "  exchangectl consent withdraw 01JD2X4TFQ3M5",
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &pb.WithdrawConsentRequest{Name: qualify("consents", args[0])}
			a.withRequestID(req)
			return do(a, cmd, func(ctx context.Context, cl *client.Client) (*pb.Consent, error) {
				return cl.Consents.WithdrawConsent(ctx, req)
			})
		}})
	return group("consent", "Consent to share a person's information", record, get, listCmd, withdraw)
}

func (a *app) feedbackCmd() *cobra.Command {
	var authorSide bool
	var at string
	// post sends one entry of feedback on the referral in args[0].
	post := func(cmd *cobra.Command, referral string, fb *pb.Feedback) error {
		if authorSide {
			fb.Audience = pb.FeedbackAudience_FEEDBACK_AUDIENCE_AUTHOR_SIDE
		}
		req := &pb.CreateFeedbackRequest{Parent: qualify("referrals", referral), Feedback: fb}
		a.withRequestID(req)
		return do(a, cmd, func(ctx context.Context, cl *client.Client) (*pb.Feedback, error) {
			return cl.Feedback.CreateFeedback(ctx, req)
		})
	}
	common := func(cmd *cobra.Command, withTime bool) *cobra.Command {
		a.requestIDFlag(cmd)
		cmd.Flags().BoolVar(&authorSide, "author-side", false, "only your side of the referral may read it (default: both sides)")
		if withTime {
			cmd.Flags().StringVar(&at, "at", "", "when it happened: a time (RFC 3339); default now")
		}
		return cmd
	}
	occurred := func() (*timestamppb.Timestamp, error) {
		if at == "" {
			return nil, nil
		}
		t, err := timeOrAhead(at)
		if err != nil {
			return nil, usagef("--at: %v", err)
		}
		return timestamppb.New(t), nil
	}

	var text string
	note := common(&cobra.Command{Use: "note REFERRAL", Short: "Add a note to a referral", Args: args("REFERRAL"),
		Example: `  exchangectl feedback note 01JD2X4TFQ3M5 --text "Called, will come on Tuesday"`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return post(cmd, args[0], &pb.Feedback{Content: &pb.Feedback_Note{Note: &pb.Note{Text: text}}})
		}}, false)
	note.Flags().StringVar(&text, "text", "", "the note")
	note.MarkFlagRequired("text")

	var sessions int32
	uptake := common(&cobra.Command{Use: "uptake REFERRAL", Short: "Report whether the person took the support up", Args: args("REFERRAL")}, true)
	upStatus := addEnum(uptake.Flags(), "status", pb.UptakeStatus(0).Descriptor(), "what happened")
	uptake.Flags().Int32Var(&sessions, "sessions", 0, "sessions attended so far (with --status sessions_attended)")
	uptake.MarkFlagRequired("status")
	uptake.Example = "  exchangectl feedback uptake 01JD2X4TFQ3M5 --status sessions_attended --sessions 3"
	uptake.RunE = func(cmd *cobra.Command, args []string) error {
		t, err := occurred()
		if err != nil {
			return err
		}
		return post(cmd, args[0], &pb.Feedback{Content: &pb.Feedback_Uptake{Uptake: &pb.Uptake{
			Status: pb.UptakeStatus(upStatus.n), SessionsAttended: sessions, OccurTime: t}}})
	}

	var items string
	var total, vas int32
	outcome := common(&cobra.Command{Use: "outcome REFERRAL", Short: "Record an outcome measure (a wellbeing score)", Args: args("REFERRAL"),
		Long: `Record a score on a validated instrument at a timepoint. Give every item score
(--items, in the instrument's order) or, for WEMWBS, SWEMWBS and UCLA3, just
--total. EQ5D5L needs --vas. The exchange checks the ranges.`}, true)
	instrument := addEnum(outcome.Flags(), "instrument", pb.Instrument(0).Descriptor(), "the instrument")
	timepoint := addEnum(outcome.Flags(), "timepoint", pb.Timepoint(0).Descriptor(), "when, relative to the support")
	outcome.Flags().StringVar(&items, "items", "", "item scores in order, separated by commas")
	outcome.Flags().Int32Var(&total, "total", 0, "total score")
	outcome.Flags().Int32Var(&vas, "vas", 0, "EQ-5D-5L visual analogue scale, 0-100")
	outcome.MarkFlagRequired("instrument")
	outcome.MarkFlagRequired("timepoint")
	outcome.Example = `  exchangectl feedback outcome 01JD2X4TFQ3M5 --instrument wemwbs --timepoint baseline --total 41
  exchangectl feedback outcome 01JD2X4TFQ3M5 --instrument ons4 --timepoint exit --items 7,6,8,3`
	outcome.RunE = func(cmd *cobra.Command, args []string) error {
		t, err := occurred()
		if err != nil {
			return err
		}
		m := &pb.OutcomeMeasure{Instrument: pb.Instrument(instrument.n), Timepoint: pb.Timepoint(timepoint.n), Total: total, MeasureTime: t}
		if items != "" {
			for _, s := range strings.Split(items, ",") {
				n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
				if err != nil {
					return usagef("--items: %q is not a whole number", s)
				}
				m.ItemScores = append(m.ItemScores, int32(n))
			}
		}
		if cmd.Flags().Changed("vas") {
			m.Vas = proto.Int32(vas)
		}
		return post(cmd, args[0], &pb.Feedback{Content: &pb.Feedback_Outcome{Outcome: m}})
	}

	listCmd := &cobra.Command{Use: "list REFERRAL", Short: "List the feedback on a referral you may read", Args: args("REFERRAL"),
		Example: "  exchangectl feedback list 01JD2X4TFQ3M5 --all"}
	p := pageFlags(listCmd)
	listCmd.RunE = func(cmd *cobra.Command, args []string) error {
		return list(a, cmd, p, func(ctx context.Context, cl *client.Client, size int32, token string) (*pb.ListFeedbackResponse, error) {
			return cl.Feedback.ListFeedback(ctx, &pb.ListFeedbackRequest{Parent: qualify("referrals", args[0]), PageSize: size, PageToken: token})
		})
	}
	return group("feedback", "Feedback on referrals: notes, uptake and outcomes", note, uptake, outcome, listCmd)
}
