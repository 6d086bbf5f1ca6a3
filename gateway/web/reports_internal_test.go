package web

import (
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// TestForestSaysWhy: a group drawn without its mean change says why, and
// "fewer than 5" only of a count the exchange labelled small: a count
// hidden to protect another may be of any size, and one relabelled from
// small would be given away again by the words.
func TestForestSaysWhy(t *testing.T) {
	small := &pb.Count{Suppressed: true, Suppression: pb.Suppression_SUPPRESSION_SMALL}
	protects := &pb.Count{Suppressed: true, Suppression: pb.Suppression_SUPPRESSION_PROTECTS}
	mean := 1.5
	o := &pb.OutcomeReport{Filter: &pb.ReportFilter{}, Measures: []*pb.MeasureOutcome{{Measure: "WEMWBS",
		All:       &pb.PairedStats{N: &pb.Count{Value: 30}, ChangeMean: &mean},
		ByService: []*pb.ServiceOutcome{{Label: "Walks", Stats: &pb.PairedStats{N: protects}}, {Label: "Choir", Stats: &pb.PairedStats{N: small}}},
		Trend: []*pb.ChangePeriod{{N: protects, StartTime: timestamppb.Now(), EndTime: timestamppb.Now()},
			{N: &pb.Count{}, StartTime: timestamppb.Now(), EndTime: timestamppb.Now()}}}}}
	k := reportPage{Threshold: 5}
	for ch, want := range map[string][]string{
		"by-service":   {"not shown: suppressed to protect a small count", "not shown: fewer than 5 pairs"},
		"change-trend": {"not shown: suppressed to protect a small count", "no pairs"},
	} {
		c := k.serviceChart(o)
		if ch == "change-trend" {
			c = k.changeTrendChart(o)
		}
		for i, r := range c.Rows {
			if r.Why != want[i] {
				t.Errorf("%s row %q says %q, want %q", ch, r.Label, r.Why, want[i])
			}
		}
	}
}
