package validate_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/validate"
)

func TestNHSNumber(t *testing.T) {
	for in, ok := range map[string]bool{
		"9434765919": true, "943 476 5919": true, "4010232137": true,
		"9434765918": false, "943476591": false, "94347659199": false, "abcdefghij": false, "": false,
	} {
		if _, got := validate.NHSNumber(in); got != ok {
			t.Errorf("NHSNumber(%q) = %v, want %v", in, got, ok)
		}
	}
}

func TestOutcomeRanges(t *testing.T) {
	now := time.Now()
	vas := func(n int32) *int32 { return &n }
	items := func(n int, v int32) []int32 {
		s := make([]int32, n)
		for i := range s {
			s[i] = v
		}
		return s
	}
	for _, c := range []struct {
		name  string
		o     *pb.OutcomeMeasure
		field string // "" for valid
	}{
		{"wemwbs total", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Total: 70}, ""},
		{"wemwbs over", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Total: 71}, "o.total"},
		{"wemwbs under", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Total: 13}, "o.total"},
		{"wemwbs items", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, ItemScores: items(14, 5)}, ""},
		{"wemwbs item 6", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, ItemScores: append(items(13, 5), 6)}, "o.item_scores[13]"},
		{"swemwbs 7-35", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_SWEMWBS, Total: 36}, "o.total"},
		{"ons4 items", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_ONS4, ItemScores: []int32{0, 10, 5, 3}}, ""},
		{"ons4 11", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_ONS4, ItemScores: []int32{0, 11, 5, 3}}, "o.item_scores[1]"},
		{"ons4 total", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_ONS4, Total: 20}, "o.item_scores"},
		{"eq5d", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_EQ5D5L, ItemScores: items(5, 1), Vas: vas(100)}, ""},
		{"eq5d vas 101", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_EQ5D5L, ItemScores: items(5, 1), Vas: vas(101)}, "o.vas"},
		{"eq5d no vas", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_EQ5D5L, ItemScores: items(5, 1)}, "o.vas"},
		{"ucla 3-9", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_UCLA3, ItemScores: []int32{3, 3, 4}}, "o.item_scores[2]"},
		{"ucla total", &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_UCLA3, Total: 9}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.o.Timepoint = pb.Timepoint_TIMEPOINT_BASELINE
			var v validate.Violations
			validate.Outcome(&v, "o", c.o, now)
			switch {
			case c.field == "" && len(v) > 0:
				t.Errorf("valid measure rejected: %v", v)
			case c.field != "" && (len(v) == 0 || v[0].Field != c.field):
				t.Errorf("violations = %v, want one on %s", v, c.field)
			}
		})
	}
}

// FuzzNewReferral: any bytes decoded as a CreateReferralRequest are either
// accepted or rejected with field violations; validation never panics.
func FuzzNewReferral(f *testing.F) {
	good, _ := proto.Marshal(&pb.CreateReferralRequest{RequestId: "x", Referral: &pb.Referral{
		RecipientService: "organizations/abc/services/def", Consent: "consents/abc",
		Person: &pb.Person{NhsNumber: "9434765919", GivenName: "A", FamilyName: "B", DateOfBirth: "1950-01-01", Postcode: "M1 1AE"},
		Route:  pb.ReferralRoute_REFERRAL_ROUTE_SELF, Needs: []pb.Category{1}, SupportLevel: 1}})
	f.Add(good)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &pb.CreateReferralRequest{}
		if proto.Unmarshal(b, req) != nil {
			return
		}
		var v validate.Violations
		validate.NewReferral(&v, "referral", req.Referral, time.Now())
		for _, fv := range v {
			if fv.Field == "" || fv.Description == "" {
				t.Fatalf("violation without field or description: %v", fv)
			}
		}
	})
}
