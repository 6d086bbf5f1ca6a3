package exchangev1_test

import (
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// The REST gateway speaks protojson with lowerCamelCase names and enum names
// as strings. These tests pin the JSON that scripts and low-code tools will
// send and read, so a rename in a .proto file cannot slip through.

func roundTrip(t *testing.T, msg proto.Message) map[string]any {
	t.Helper()
	b, err := protojson.Marshal(msg)
	if err != nil {
		t.Fatalf("marshal %T: %v", msg, err)
	}
	back := msg.ProtoReflect().New().Interface()
	if err := protojson.Unmarshal(b, back); err != nil {
		t.Fatalf("unmarshal %T: %v\n%s", msg, err, b)
	}
	if !proto.Equal(msg, back) {
		t.Fatalf("%T changed in a JSON round trip:\n got %v\nwant %v", msg, back, msg)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// path walks nested JSON objects by key and fails if a key is missing.
func path(t *testing.T, m map[string]any, keys ...string) any {
	t.Helper()
	var cur any = m
	for i, k := range keys {
		obj, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("%v is not an object", keys[:i])
		}
		cur, ok = obj[k]
		if !ok {
			t.Fatalf("JSON has no %q at %v; keys are %v", k, keys[:i], keysOf(obj))
		}
	}
	return cur
}

func keysOf(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestReferralJSON(t *testing.T) {
	now := timestamppb.New(time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC))
	r := &pb.Referral{
		Name:             "referrals/r1",
		Referrer:         "organizations/riverside-practice",
		RecipientService: "organizations/riverside-pcn/services/link-workers",
		Recipient:        "organizations/riverside-pcn",
		ParentReferral:   "referrals/r0",
		Person: &pb.Person{
			NhsNumber: "9434765919", GivenName: "Ada", FamilyName: "Jones",
			DateOfBirth: "1948-03-14", Sex: pb.Sex_SEX_FEMALE, Phone: "0161 496 0000",
			Email: "ada@example.org", AddressLines: []string{"1 Mill Lane"}, Postcode: "M14 5AB",
			PreferredContactMethod: pb.ContactMethod_CONTACT_METHOD_PHONE, Language: "en",
			InterpreterNeeded: true, AccessibilityNeeds: "hard of hearing",
		},
		Route:        pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
		Needs:        []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION, pb.Category_CATEGORY_PHYSICAL_ACTIVITY},
		Reason:       "Lives alone since bereavement",
		SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_INTENSIVE,
		Consent:      "consents/c1",
		State:        pb.ReferralState_REFERRAL_STATE_ON_HOLD,
		StateReason:  &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_NO_CAPACITY, Text: "waiting list"},
		HeldFrom:     pb.ReferralState_REFERRAL_STATE_ACCEPTED,
		ReplyBy:      now, Overdue: true, SnomedCode: "871731000000106",
		View:       pb.ReferralView_REFERRAL_VIEW_FULL,
		CreateTime: now, UpdateTime: now, StateTime: now, Etag: "abc",
	}
	m := roundTrip(t, r)
	for _, want := range []struct {
		keys  []string
		value any
	}{
		{[]string{"recipientService"}, "organizations/riverside-pcn/services/link-workers"},
		{[]string{"parentReferral"}, "referrals/r0"},
		{[]string{"person", "nhsNumber"}, "9434765919"},
		{[]string{"person", "givenName"}, "Ada"},
		{[]string{"person", "familyName"}, "Jones"},
		{[]string{"person", "dateOfBirth"}, "1948-03-14"},
		{[]string{"person", "sex"}, "SEX_FEMALE"},
		{[]string{"person", "preferredContactMethod"}, "CONTACT_METHOD_PHONE"},
		{[]string{"person", "interpreterNeeded"}, true},
		{[]string{"person", "accessibilityNeeds"}, "hard of hearing"},
		{[]string{"route"}, "REFERRAL_ROUTE_PRIMARY_CARE"},
		{[]string{"supportLevel"}, "SUPPORT_LEVEL_INTENSIVE"},
		{[]string{"state"}, "REFERRAL_STATE_ON_HOLD"},
		{[]string{"stateReason", "code"}, "STATE_REASON_CODE_NO_CAPACITY"},
		{[]string{"heldFrom"}, "REFERRAL_STATE_ACCEPTED"},
		{[]string{"replyBy"}, "2026-11-02T09:30:00Z"},
		{[]string{"snomedCode"}, "871731000000106"},
		{[]string{"view"}, "REFERRAL_VIEW_FULL"},
		{[]string{"createTime"}, "2026-11-02T09:30:00Z"},
		{[]string{"etag"}, "abc"},
	} {
		if got := path(t, m, want.keys...); got != want.value {
			t.Errorf("%v = %#v, want %#v", want.keys, got, want.value)
		}
	}
	needs := path(t, m, "needs").([]any)
	if len(needs) != 2 || needs[0] != "CATEGORY_SOCIAL_ISOLATION" {
		t.Errorf("needs = %v", needs)
	}
}

func TestConsentJSON(t *testing.T) {
	c := &pb.Consent{
		Name: "consents/c1", NhsNumber: "9434765919", RecordedBy: "organizations/riverside-practice",
		Method:         pb.ConsentMethod_CONSENT_METHOD_VERBAL,
		Purposes:       []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER},
		RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_NAMED_ORGANIZATIONS,
		Recipients:     []string{"organizations/riverside-pcn"},
		ValidFrom:      timestamppb.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		ValidUntil:     timestamppb.New(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)),
		State:          pb.ConsentState_CONSENT_STATE_WITHDRAWN,
		WithdrawTime:   timestamppb.New(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)),
		WithdrawnBy:    "organizations/riverside-pcn",
	}
	m := roundTrip(t, c)
	for k, v := range map[string]any{
		"nhsNumber": "9434765919", "recordedBy": "organizations/riverside-practice",
		"method": "CONSENT_METHOD_VERBAL", "recipientScope": "CONSENT_RECIPIENT_SCOPE_NAMED_ORGANIZATIONS",
		"validFrom": "2026-01-01T00:00:00Z", "validUntil": "2027-01-01T00:00:00Z",
		"state": "CONSENT_STATE_WITHDRAWN", "withdrawTime": "2026-06-01T00:00:00Z",
		"withdrawnBy": "organizations/riverside-pcn",
	} {
		if got := path(t, m, k); got != v {
			t.Errorf("%s = %#v, want %#v", k, got, v)
		}
	}
	if p := path(t, m, "purposes").([]any); p[1] != "CONSENT_PURPOSE_FEEDBACK_TO_REFERRER" {
		t.Errorf("purposes = %v", p)
	}
}

func TestFeedbackJSON(t *testing.T) {
	vas := int32(72)
	for _, tc := range []struct {
		name string
		fb   *pb.Feedback
		want map[string]any // dotted path -> value
	}{
		{"note", &pb.Feedback{
			Name: "referrals/r1/feedback/f1", Author: "organizations/hillside",
			Audience: pb.FeedbackAudience_FEEDBACK_AUDIENCE_BOTH_SIDES,
			Content:  &pb.Feedback_Note{Note: &pb.Note{Text: "See you Wednesday"}},
		}, map[string]any{"note.text": "See you Wednesday", "audience": "FEEDBACK_AUDIENCE_BOTH_SIDES", "author": "organizations/hillside"}},
		{"uptake", &pb.Feedback{
			Content: &pb.Feedback_Uptake{Uptake: &pb.Uptake{
				Status: pb.UptakeStatus_UPTAKE_STATUS_SESSIONS_ATTENDED, SessionsAttended: 3,
				OccurTime: timestamppb.New(time.Date(2026, 11, 5, 10, 0, 0, 0, time.UTC)),
			}},
		}, map[string]any{"uptake.status": "UPTAKE_STATUS_SESSIONS_ATTENDED", "uptake.sessionsAttended": 3.0, "uptake.occurTime": "2026-11-05T10:00:00Z"}},
		{"wemwbs", &pb.Feedback{Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{
			Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Timepoint: pb.Timepoint_TIMEPOINT_FOLLOW_UP,
			ItemScores: []int32{3, 3, 4, 3, 3, 4, 3, 3, 4, 3, 3, 4, 3, 3}, Total: 46,
		}}}, map[string]any{"outcome.instrument": "INSTRUMENT_WEMWBS", "outcome.timepoint": "TIMEPOINT_FOLLOW_UP", "outcome.total": 46.0}},
		{"eq5d", &pb.Feedback{Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{
			Instrument: pb.Instrument_INSTRUMENT_EQ5D5L, Timepoint: pb.Timepoint_TIMEPOINT_BASELINE,
			ItemScores: []int32{1, 2, 2, 3, 2}, Vas: &vas,
		}}}, map[string]any{"outcome.instrument": "INSTRUMENT_EQ5D5L", "outcome.vas": 72.0}},
		{"ons4", &pb.Feedback{Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{
			Instrument: pb.Instrument_INSTRUMENT_ONS4, Timepoint: pb.Timepoint_TIMEPOINT_EXIT, ItemScores: []int32{6, 7, 5, 3},
		}}}, map[string]any{"outcome.instrument": "INSTRUMENT_ONS4", "outcome.timepoint": "TIMEPOINT_EXIT"}},
		{"swemwbs", &pb.Feedback{Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{
			Instrument: pb.Instrument_INSTRUMENT_SWEMWBS, Timepoint: pb.Timepoint_TIMEPOINT_BASELINE, Total: 21,
		}}}, map[string]any{"outcome.instrument": "INSTRUMENT_SWEMWBS", "outcome.total": 21.0}},
		{"ucla3", &pb.Feedback{Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{
			Instrument: pb.Instrument_INSTRUMENT_UCLA3, Timepoint: pb.Timepoint_TIMEPOINT_BASELINE, ItemScores: []int32{2, 3, 2},
		}}}, map[string]any{"outcome.instrument": "INSTRUMENT_UCLA3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := roundTrip(t, tc.fb)
			for dotted, v := range tc.want {
				var keys []string
				start := 0
				for i := 0; i <= len(dotted); i++ {
					if i == len(dotted) || dotted[i] == '.' {
						keys = append(keys, dotted[start:i])
						start = i + 1
					}
				}
				if got := path(t, m, keys...); got != v {
					t.Errorf("%s = %#v, want %#v", dotted, got, v)
				}
			}
		})
	}
}

func TestEventAndCapacityJSON(t *testing.T) {
	m := roundTrip(t, &pb.Event{Sequence: 9007199254740993, Type: pb.EventType_EVENT_TYPE_REFERRAL_STATE_CHANGED,
		Resource: "referrals/r1", Actor: "organizations/hillside", State: pb.ReferralState_REFERRAL_STATE_ACCEPTED})
	// int64 travels as a string so JavaScript clients do not lose precision.
	if got := path(t, m, "sequence"); got != "9007199254740993" {
		t.Errorf("sequence = %#v", got)
	}
	if got := path(t, m, "type"); got != "EVENT_TYPE_REFERRAL_STATE_CHANGED" {
		t.Errorf("type = %#v", got)
	}
	m = roundTrip(t, &pb.Capacity{Name: "organizations/hillside/services/walks/capacity",
		Status: pb.CapacityStatus_CAPACITY_STATUS_WAITLIST, MaxActiveReferrals: 12, ActiveReferrals: 12,
		WaitlistedReferrals: 4, StatusSetAutomatically: true})
	for k, v := range map[string]any{"status": "CAPACITY_STATUS_WAITLIST", "maxActiveReferrals": 12.0,
		"activeReferrals": 12.0, "waitlistedReferrals": 4.0, "statusSetAutomatically": true} {
		if got := path(t, m, k); got != v {
			t.Errorf("%s = %#v, want %#v", k, got, v)
		}
	}
	m = roundTrip(t, &pb.Service{Name: "organizations/hillside/services/walks", DefaultReplyWithin: durationpb.New(72 * time.Hour),
		Eligibility: &pb.Eligibility{MinAge: 18, PostcodeDistricts: []string{"M14"}}, DeliveryModes: []pb.DeliveryMode{pb.DeliveryMode_DELIVERY_MODE_IN_PERSON}})
	if got := path(t, m, "defaultReplyWithin"); got != "259200s" {
		t.Errorf("defaultReplyWithin = %#v", got)
	}
	if got := path(t, m, "eligibility", "postcodeDistricts").([]any); got[0] != "M14" {
		t.Errorf("postcodeDistricts = %#v", got)
	}
}
