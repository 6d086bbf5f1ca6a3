package validate_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/tools/loadtest/workload"
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

// BenchmarkNewReferral checks the realistic referral the load command
// sends (tools/loadtest/workload), as every CreateReferral does.
func BenchmarkNewReferral(b *testing.B) {
	now := time.Now()
	r := workload.Referral(1, "organizations/lw-demo/services/link-workers", "consents/0123456789abcdef")
	b.ReportAllocs()
	for range b.N {
		var v validate.Violations
		validate.NewReferral(&v, "referral", r, now)
		if len(v) > 0 {
			b.Fatal(v)
		}
	}
}

// TestElementsAndLengths pins the field path and the description of a
// violation in a repeated field, and how text length is counted: in
// characters, not bytes.
func TestElementsAndLengths(t *testing.T) {
	long := func(s string, n int) string {
		out := ""
		for range n {
			out += s
		}
		return out
	}
	for _, c := range []struct {
		name        string
		check       func(v *validate.Violations)
		field, desc string // "" for no violation
	}{
		{"lines fine", func(v *validate.Violations) { validate.Lines(v, "p.lines", []string{"1 High St", "Leeds"}, 6, 10) }, "", ""},
		{"second line long", func(v *validate.Violations) { validate.Lines(v, "p.lines", []string{"ok", "12345678901"}, 6, 10) }, "p.lines[1]", "must be at most 10 characters"},
		{"line not UTF-8", func(v *validate.Violations) { validate.Lines(v, "p.lines", []string{"\xff"}, 6, 10) }, "p.lines[0]", "must be valid UTF-8"},
		{"too many lines", func(v *validate.Violations) { validate.Lines(v, "p.lines", []string{"a", "b", "c"}, 2, 10) }, "p.lines", "must have at most 2 lines"},
		{"ten two-byte characters fit ten", func(v *validate.Violations) { validate.Text(v, "t", long("é", 10), 10, false) }, "", ""},
		{"eleven two-byte characters", func(v *validate.Violations) { validate.Text(v, "t", long("é", 11), 10, false) }, "t", "must be at most 10 characters"},
		{"blank required", func(v *validate.Violations) { validate.Text(v, "t", "  ", 10, true) }, "t", "is required"},
		{"needs fine", func(v *validate.Violations) {
			validate.EnumList(v, "r.needs", []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION, pb.Category_CATEGORY_DEBT_AND_MONEY}, 1, 15)
		}, "", ""},
		{"need unset", func(v *validate.Violations) {
			validate.EnumList(v, "r.needs", []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION, 0}, 1, 15)
		}, "r.needs[1]", "is required: one of "},
		{"need undefined", func(v *validate.Violations) { validate.EnumList(v, "r.needs", []pb.Category{999}, 1, 15) }, "r.needs[0]", "999 is not one of "},
		{"need repeated", func(v *validate.Violations) {
			validate.EnumList(v, "r.needs", []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION, pb.Category_CATEGORY_SOCIAL_ISOLATION}, 1, 15)
		}, "r.needs[1]", "repeats CATEGORY_SOCIAL_ISOLATION"},
		{"district", func(v *validate.Violations) { validate.Districts(v, "e.districts", []string{"M14", "nope!"}) }, "e.districts[1]", "must be a postcode district such as M14"},
	} {
		var v validate.Violations
		c.check(&v)
		switch {
		case c.field == "" && len(v) > 0:
			t.Errorf("%s: unexpected %v", c.name, v)
		case c.field != "" && (len(v) != 1 || v[0].Field != c.field || !strings.HasPrefix(v[0].Description, c.desc)):
			t.Errorf("%s: got %v, want one violation of %s: %q...", c.name, v, c.field, c.desc)
		}
	}
}

func TestBadUTF8(t *testing.T) {
	for _, c := range []struct {
		m    proto.Message
		want string
	}{
		{&pb.GetReferralRequest{Name: "referrals/ok"}, ""},
		{&pb.GetReferralRequest{Name: "referrals/\xff"}, "name"},
		{&pb.CreateReferralRequest{Referral: &pb.Referral{Person: &pb.Person{GivenName: "A\xc3"}}}, "referral.person.given_name"},
		{&pb.CreateReferralRequest{Referral: &pb.Referral{Person: &pb.Person{GivenName: "Zoë"}}}, ""},
		{&pb.CreateConsentRequest{Consent: &pb.Consent{Recipients: []string{"organizations/a", "organizations/\xfe"}}}, "consent.recipients[1]"},
	} {
		got, bad := validate.BadUTF8(c.m.ProtoReflect())
		if got != c.want || bad != (c.want != "") {
			t.Errorf("BadUTF8(%v) = %q, %v; want %q", c.m, got, bad, c.want)
		}
	}
}

// BenchmarkBadUTF8 is the check every request pays (UnaryWellFormed), on
// the realistic referral.
func BenchmarkBadUTF8(b *testing.B) {
	req := (&pb.CreateReferralRequest{RequestId: "r", Referral: workload.Referral(1, "organizations/a/services/b", "consents/c")}).ProtoReflect()
	for b.Loop() {
		if _, bad := validate.BadUTF8(req); bad {
			b.Fatal("bad")
		}
	}
}
