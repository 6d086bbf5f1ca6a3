// Package workload is the realistic referral the benchmarks and the load
// command send: a GP's referral to a link worker service with a full
// person (contact details, address, needs) and a free-text reason, about
// 1.5 KB as protobuf, the size of a referral from a clinical system.
package workload

import (
	"fmt"
	"strings"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// NHSNumber returns a valid NHS number starting with 9 (the test range),
// distinct for each n from 0 to 9,000,000: the first valid one of the
// eleven numbers 900000000 + 11n ... + 10 with its check digit.
func NHSNumber(n int) string {
	for b := 900000000 + 11*n; ; b++ {
		base := fmt.Sprint(b)
		sum := 0
		for i, c := range base {
			sum += int(c-'0') * (10 - i)
		}
		if check := (11 - sum%11) % 11; check != 10 {
			return base + fmt.Sprint(check)
		}
	}
}

// reason is what a GP writes: a paragraph or two.
var reason = strings.TrimSpace(`
Lives alone since her husband died last spring and has told the practice
nurse she can go a week without speaking to anyone. Mild low mood (PHQ-9 of
9 at review), no risk concerns. Type 2 diabetes, well controlled; osteoarthritis
of both knees limits walking to about ten minutes, but she would like to be
more active and says she used to enjoy gardening and singing in a church
choir. Has been to the surgery six times in the past three months, mostly for
reassurance. Money is tight since the bereavement: she is not sure she is
claiming everything she is entitled to, and has a letter about council tax
arrears she has not opened. Would welcome a phone call first rather than a
letter; her daughter visits on Sundays and can help with forms. Please
consider befriending, a gentle walking or chair-based exercise group, a
community choir, and benefits advice. Prefers mornings. Hearing aid in the left
ear: please speak clearly and face her. Happy for the link worker to share
progress with the practice.`)

// Referral is the n-th referral of the workload, to recipientService under
// consent, before the exchange fills in its name, state and times.
func Referral(n int, recipientService, consent string) *pb.Referral {
	return &pb.Referral{
		RecipientService: recipientService,
		Consent:          consent,
		Person: &pb.Person{
			NhsNumber:              NHSNumber(n),
			GivenName:              "Margaret",
			FamilyName:             fmt.Sprintf("Holloway-%d", n),
			DateOfBirth:            "1951-07-23",
			Sex:                    pb.Sex_SEX_FEMALE,
			Phone:                  "0161 496 0734",
			Email:                  "m.holloway@example.org",
			AddressLines:           []string{"Flat 4, Rowan Court", "27 Wilmslow Road", "Rusholme", "Manchester"},
			Postcode:               "M14 5TQ",
			PreferredContactMethod: pb.ContactMethod_CONTACT_METHOD_PHONE,
			Language:               "en",
			AccessibilityNeeds:     "Hearing aid (left ear); uses a walking stick; ground-floor rooms or a lift please.",
		},
		Route:        pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
		Needs:        []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION, pb.Category_CATEGORY_PHYSICAL_ACTIVITY, pb.Category_CATEGORY_WELFARE_BENEFITS, pb.Category_CATEGORY_ARTS_AND_CREATIVITY},
		Reason:       reason,
		SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_INTENSIVE,
		SnomedCode:   "871731000000106",
	}
}
