package api_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// reportWorld is an exchange with a practice, a walking group, a money
// advice group, a commissioner and an unrelated practice.
func reportWorld(t *testing.T, opt api.Options) (*exchangetest.Exchange, string, string) {
	x := exchangetest.StartWith(t, opt)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("other-practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	x.Org("money", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	x.Org("icb", pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	advice := x.Service("money", "advice", pb.Category_CATEGORY_DEBT_AND_MONEY)
	return x, walks, advice
}

// person describes one synthetic person's journey.
type person struct {
	n          int
	sex        pb.Sex
	dob        string
	evaluation bool // consent includes EVALUATION
	baseline   int32
	followUp   int32 // 0: no follow-up
}

// journey runs a person through the exchange: consent by the practice,
// a referral to service, accepted and started by its group, and WEMWBS at
// baseline and (when given) follow-up. It returns the referral's name.
func journey(t *testing.T, x *exchangetest.Exchange, service, group string, p person) string {
	t.Helper()
	nhs := exchangetest.NHSNumber(5000 + 10*p.n)
	consent := x.ConsentFor("practice", nhs, func(c *pb.Consent) {
		if p.evaluation {
			c.Purposes = append(c.Purposes, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION)
		}
	})
	person := exchangetest.Ada()
	person.NhsNumber, person.Sex, person.DateOfBirth = nhs, p.sex, p.dob
	refs := pb.NewReferralServiceClient(x.Conn)
	r, err := refs.CreateReferral(x.As("practice"), &pb.CreateReferralRequest{RequestId: fmt.Sprint("journey-", p.n), Referral: &pb.Referral{
		RecipientService: service, Person: person, Consent: consent.Name, Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
		Needs: []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_INTENSIVE}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := refs.AcceptReferral(x.As(group), &pb.AcceptReferralRequest{Name: r.Name}); err != nil {
		t.Fatal(err)
	}
	if _, err := refs.StartReferral(x.As(group), &pb.StartReferralRequest{Name: r.Name}); err != nil {
		t.Fatal(err)
	}
	fb := pb.NewFeedbackServiceClient(x.Conn)
	for tp, score := range map[pb.Timepoint]int32{pb.Timepoint_TIMEPOINT_BASELINE: p.baseline, pb.Timepoint_TIMEPOINT_FOLLOW_UP: p.followUp} {
		if score == 0 {
			continue
		}
		if _, err := fb.CreateFeedback(x.As(group), &pb.CreateFeedbackRequest{Parent: r.Name, Feedback: &pb.Feedback{
			Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Timepoint: tp, Total: score}}}}); err != nil {
			t.Fatal(err)
		}
	}
	return r.Name
}

func activity(t *testing.T, x *exchangetest.Exchange, org string, f *pb.ReportFilter) *pb.ActivityReport {
	t.Helper()
	r, err := pb.NewReportServiceClient(x.Conn).GetActivityReport(x.As(org), &pb.GetActivityReportRequest{Filter: f})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func outcomes(t *testing.T, x *exchangetest.Exchange, org string, f *pb.ReportFilter) *pb.OutcomeReport {
	t.Helper()
	r, err := pb.NewReportServiceClient(x.Conn).GetOutcomeReport(x.As(org), &pb.GetOutcomeReportRequest{Filter: f})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func wemwbs(r *pb.OutcomeReport) *pb.MeasureOutcome {
	for _, m := range r.Measures {
		if m.Measure == "WEMWBS" {
			return m
		}
	}
	return nil
}

// TestOutcomeReportAgreesWithScipy runs the 12 WEMWBS pairs of
// rules/report/testdata/expected.json through the exchange (consent, referral,
// baseline and follow-up over gRPC) and checks the commissioner's outcome
// report against scipy's values for them, to 6 significant figures.
func TestOutcomeReportAgreesWithScipy(t *testing.T) {
	b, err := os.ReadFile("../rules/report/testdata/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Paired map[string]struct {
			Baseline []int32             `json:"baseline"`
			FollowUp []int32             `json:"follow_up"`
			Want     map[string]*float64 `json:"want"`
		}
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	data := e.Paired["wemwbs"]
	report := func(opt api.Options) *pb.PairedStats {
		x, walks, _ := reportWorld(t, opt)
		for i := range data.Baseline {
			journey(t, x, walks, "group", person{n: i, sex: pb.Sex_SEX_FEMALE, dob: "1950-01-01", evaluation: true,
				baseline: data.Baseline[i], followUp: data.FollowUp[i]})
		}
		return wemwbs(outcomes(t, x, "icb", nil)).All
	}
	// The statistics, with no suppression (a threshold of 1): one pair
	// got worse, and with that 1 hidden they would be withheld.
	all := report(api.Options{ReportMinCount: 1})
	for field, got := range map[string]*float64{
		"baseline_mean": all.BaselineMean, "baseline_sd": all.BaselineSd, "follow_up_mean": all.FollowUpMean, "follow_up_sd": all.FollowUpSd,
		"change_mean": all.ChangeMean, "change_sd": all.ChangeSd, "ci_low": all.ChangeCiLow, "ci_high": all.ChangeCiHigh,
		"t": all.T, "p": all.P, "d": all.CohensD,
	} {
		want := data.Want[field]
		if got == nil || want == nil || math.Abs(*got-*want) > 5e-7*math.Abs(*want) {
			t.Errorf("%s = %v, scipy %v", field, got, want)
		}
	}
	if all.N.GetValue() != 12 || all.GetDf() != 11 || all.Worse.GetValue() != 1 {
		t.Errorf("n %v, df %v, worse %v", all.N, all.GetDf(), all.Worse)
	}
	// At the default threshold the one pair that got worse is suppressed
	// as small, and with it the improved count, which would give it away
	// (12 - 0 unchanged - improved); the statistics go with them.
	all = report(api.Options{})
	if *data.Want["worse"] != 1 || all.N.GetValue() != 12 || all.Worse.Suppression != pb.Suppression_SUPPRESSION_SMALL ||
		all.Improved.Suppression != pb.Suppression_SUPPRESSION_PROTECTS || all.ChangeMean != nil || all.Df != nil {
		t.Errorf("n %v, df %v, improved %v, unchanged %v, worse %v, mean %v", all.N, all.GetDf(), all.Improved, all.Unchanged, all.Worse, all.ChangeMean)
	}
}

// TestReportScopeAndConsent: a commissioner counts everything with
// evaluation consent; an organisation only what it made or received; data
// without evaluation consent, or whose consent was withdrawn, never changes
// a report.
func TestReportScopeAndConsent(t *testing.T) {
	x, walks, advice := reportWorld(t, api.Options{})
	for i := range 6 {
		journey(t, x, walks, "group", person{n: i, sex: pb.Sex_SEX_FEMALE, dob: "1950-01-01", evaluation: true, baseline: 40, followUp: int32(42 + i)})
	}
	for i := range 5 {
		journey(t, x, advice, "money", person{n: 10 + i, sex: pb.Sex_SEX_MALE, dob: "1990-01-01", evaluation: true, baseline: 30, followUp: 35})
	}
	before := map[string]proto.Message{}
	for _, org := range []string{"icb", "practice", "group", "other-practice"} {
		before[org+"/activity"] = activity(t, x, org, nil)
		before[org+"/outcomes"] = outcomes(t, x, org, nil)
	}
	if n := before["icb/activity"].(*pb.ActivityReport).Referrals.GetValue(); n != 11 {
		t.Errorf("the commissioner counts %d referrals, want 11", n)
	}
	if n := before["practice/activity"].(*pb.ActivityReport).Referrals.GetValue(); n != 11 {
		t.Errorf("the practice counts %d referrals it made, want 11", n)
	}
	if n := before["group/activity"].(*pb.ActivityReport).Referrals.GetValue(); n != 6 {
		t.Errorf("the walking group counts %d, want its own 6", n)
	}
	if n := before["other-practice/activity"].(*pb.ActivityReport).Referrals.GetValue(); n != 0 {
		t.Errorf("an unrelated practice counts %d, want 0", n)
	}

	// More people without evaluation consent, and one whose consent is
	// withdrawn after the fact: no report changes.
	for i := range 7 {
		journey(t, x, walks, "group", person{n: 20 + i, sex: pb.Sex_SEX_MALE, dob: "1980-01-01", evaluation: false, baseline: 20, followUp: 60})
	}
	extra := journey(t, x, walks, "group", person{n: 30, sex: pb.Sex_SEX_MALE, dob: "1980-01-01", evaluation: true, baseline: 20, followUp: 60})
	r, _ := pb.NewReferralServiceClient(x.Conn).GetReferral(x.As("practice"), &pb.GetReferralRequest{Name: extra})
	if _, err := pb.NewConsentServiceClient(x.Conn).WithdrawConsent(x.As("practice"), &pb.WithdrawConsentRequest{Name: r.Consent}); err != nil {
		t.Fatal(err)
	}
	// Only the time changes: when the report was made, and the end of the
	// capacity history (now).
	ignore := cmp.Options{protocmp.IgnoreFields(&pb.ActivityReport{}, "generate_time"), protocmp.IgnoreFields(&pb.CapacityPeriod{}, "end_time")}
	ignoreO := protocmp.IgnoreFields(&pb.OutcomeReport{}, "generate_time")
	for _, org := range []string{"icb", "practice", "group", "other-practice"} {
		if d := cmp.Diff(before[org+"/activity"], activity(t, x, org, nil), protocmp.Transform(), ignore); d != "" {
			t.Errorf("%s's activity report changed without evaluation consent:\n%s", org, d)
		}
		if d := cmp.Diff(before[org+"/outcomes"], outcomes(t, x, org, nil), protocmp.Transform(), ignoreO); d != "" {
			t.Errorf("%s's outcome report changed without evaluation consent:\n%s", org, d)
		}
	}

	// Filters: by service, by organisation, by a period that excludes all.
	if n := activity(t, x, "icb", &pb.ReportFilter{Service: advice}).Referrals.GetValue(); n != 5 {
		t.Errorf("filter by service: %d", n)
	}
	if n := activity(t, x, "icb", &pb.ReportFilter{Organization: "organizations/group"}).Referrals.GetValue(); n != 6 {
		t.Errorf("filter by organisation: %d", n)
	}
	if n := activity(t, x, "icb", &pb.ReportFilter{Category: pb.Category_CATEGORY_DEBT_AND_MONEY}).Referrals.GetValue(); n != 0 {
		t.Errorf("filter by a need no referral has: %d", n)
	}
	_, err := pb.NewReportServiceClient(x.Conn).GetActivityReport(x.As("icb"), &pb.GetActivityReportRequest{Filter: &pb.ReportFilter{Service: "walks"}})
	exchangetest.WantErr(t, err, codes.InvalidArgument, "FIELD_INVALID")
}

// TestReportSuppression: counts from 1 to the threshold minus one are never
// sent, nor statistics of fewer pairs; complementary cells are suppressed
// with them.
func TestReportSuppression(t *testing.T) {
	x, walks, advice := reportWorld(t, api.Options{})
	// Seven women under 50 at the walks, all with follow-up; three men over
	// 50 at the advice service, one with follow-up.
	for i := range 7 {
		journey(t, x, walks, "group", person{n: i, sex: pb.Sex_SEX_FEMALE, dob: "1990-05-05", evaluation: true, baseline: 40, followUp: int32(40 + i)})
	}
	for i := range 3 {
		f := int32(0)
		if i == 0 {
			f = 50
		}
		journey(t, x, advice, "money", person{n: 10 + i, sex: pb.Sex_SEX_MALE, dob: "1950-05-05", evaluation: true, baseline: 40, followUp: f})
	}
	a := activity(t, x, "icb", nil)
	rows := map[string]*pb.Count{}
	for _, r := range a.ByService {
		rows[r.Key] = r.Count
	}
	// The 3 at the advice service are hidden, and so are the walks' 7,
	// which with the total of 10 would give them away.
	if !rows[walks].GetSuppressed() || !rows[advice].GetSuppressed() || rows[advice].GetValue() != 0 || rows[walks].GetValue() != 0 {
		t.Errorf("by service: %v", rows)
	}
	if a.Referrals.GetValue() != 10 {
		t.Errorf("referrals: %v", a.Referrals)
	}
	// The referrals by organisation partition the 10: with the 3 hidden, the
	// 7 would give them away, so both are hidden.
	for _, r := range a.ByOrganization {
		if !r.Count.Suppressed {
			t.Errorf("by organisation %s shown as %v: it would reveal the other", r.Key, r.Count)
		}
	}
	m := wemwbs(outcomes(t, x, "icb", nil))
	// The man of the 8 pairs is the only one of his sex and age: the 8
	// would give him away with the 7 women under 50, so one of them is
	// hidden too.
	if m.All.N.Suppressed == (m.Comparisons[0].A.N.Suppressed && m.Comparisons[1].A.N.Suppressed) && !m.All.N.Suppressed || !m.All.N.Suppressed && m.All.N.Value != 8 {
		t.Errorf("all pairs: %v, women %v, under 50 %v", m.All.N, m.Comparisons[0].A.N, m.Comparisons[1].A.N)
	}
	for _, c := range m.Comparisons {
		small := c.B
		if small.N.GetValue() != 0 || !small.N.Suppressed || small.ChangeMean != nil || small.BaselineMean != nil {
			t.Errorf("%s: the group of 1 is shown: %v", c.By, small)
		}
		if c.T != nil || c.P != nil || c.Difference != nil {
			t.Errorf("%s: a test against a suppressed group: %v", c.By, c)
		}
	}
	for _, comp := range outcomes(t, x, "icb", nil).Completeness {
		if comp.Service == advice && (!comp.Baseline.Suppressed || !comp.WithFollowUp.Suppressed || !comp.WithoutFollowUp.Suppressed) {
			t.Errorf("advice completeness shown: %v", comp)
		}
	}
	// A lower threshold shows them.
	x2, walks2, _ := reportWorld(t, api.Options{ReportMinCount: 2})
	for i := range 3 {
		journey(t, x2, walks2, "group", person{n: i, sex: pb.Sex_SEX_FEMALE, dob: "1990-05-05", evaluation: true, baseline: 40, followUp: int32(41 + i)})
	}
	if r := activity(t, x2, "icb", nil); r.SuppressionThreshold != 2 || r.Referrals.GetValue() != 3 || r.Funnel.Started.GetValue() != 3 {
		t.Errorf("threshold 2: %v", r)
	}
}
