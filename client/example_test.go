package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/social-prescribing/exchange/client"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// A GP system records the person's consent and pushes a referral to the
// link workers. No request_id is set: the client adds one, and a retry
// after a dropped connection returns the same referral.
func Example_gpPushesReferral() {
	c, err := client.Dial("127.0.0.1:50051", client.WithInsecure(), client.WithAPIKey(os.Getenv("EXCHANGE_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	consent, err := c.Consents.CreateConsent(ctx, &pb.CreateConsentRequest{Consent: &pb.Consent{
		NhsNumber: "9434765919", Method: pb.ConsentMethod_CONSENT_METHOD_VERBAL,
		Purposes:       []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER},
		RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}})
	if err != nil {
		log.Fatal(err)
	}
	r, err := c.Referrals.CreateReferral(ctx, &pb.CreateReferralRequest{Referral: &pb.Referral{
		RecipientService: "organizations/riverside-pcn/services/link-workers",
		Person:           &pb.Person{NhsNumber: "9434765919", GivenName: "Ada", FamilyName: "Jones", DateOfBirth: "1948-03-14", Postcode: "M14 5AB"},
		Route:            pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE, Needs: []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION},
		SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_INTENSIVE, Consent: consent.Name}})
	if err != nil {
		log.Fatal(err) // the status carries an ErrorInfo reason such as CONSENT_REQUIRED
	}
	fmt.Println(r.Name, r.State)
}

// A link worker service follows its event feed and reads the feedback on
// its referrals as it arrives. Store the last sequence number handled to
// resume from it after a restart.
func ExampleClient_Watch() {
	c, err := client.Dial("127.0.0.1:50051", client.WithInsecure(), client.WithAPIKey(os.Getenv("EXCHANGE_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	var last int64 // load from your own store
	err = c.Watch(ctx, last, func(e *pb.Event) error {
		if e.Type == pb.EventType_EVENT_TYPE_FEEDBACK_POSTED {
			f, err := c.Feedback.ListFeedback(ctx, &pb.ListFeedbackRequest{Parent: parentOf(e.Resource)})
			if err != nil {
				return err
			}
			fmt.Println(len(f.Feedback), "entries of feedback on", parentOf(e.Resource))
		}
		last = e.Sequence // save it with what you did
		return nil
	})
	log.Fatal(err)
}

// parentOf returns referrals/{id} from referrals/{id}/feedback/{id}.
func parentOf(feedback string) string {
	p, _, _ := strings.Cut(feedback, "/feedback/")
	return p
}
