package api

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/bolt"
)

// BenchmarkReports times both reports, as a commissioner asks for them,
// at 10,000, 100,000 and 1,000,000 stored referrals made over the same two
// years, each with a WEMWBS baseline and exit, loaded through the store's
// own API in transactions of 1,000 (REPORT_BENCH_MAX=1000000 go test -run
// '^$' -bench Reports -benchtime 5x -benchmem -timeout 60m ./server/api/):
// of everything, and of one service from the middle of a day to the middle
// of a month (day sums and single rows besides month sums). Without
// REPORT_BENCH_MAX only the 10,000, so that CI's run of every benchmark
// stays short.
func BenchmarkReports(b *testing.B) {
	largest, _ := strconv.Atoi(os.Getenv("REPORT_BENCH_MAX"))
	filters := []struct {
		name   string
		filter *pb.ReportFilter
	}{
		{"everything", nil},
		{"service-and-period", &pb.ReportFilter{Service: "organizations/walkers/services/walks",
			StartTime: timestamppb.New(benchStart.AddDate(0, 2, 3).Add(13 * time.Hour)), EndTime: timestamppb.New(benchStart.AddDate(1, 4, 17).Add(9 * time.Hour))}},
	}
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		if n > max(largest, 10_000) {
			break
		}
		store := loadReferrals(b, n)
		s := &reports{core: &core{store: store, now: time.Now, reportMinCount: DefaultReportMinCount}}
		ctx := withCaller(context.Background(), Caller{Org: "organizations/icb", Kind: pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER})
		if a, err := s.GetActivityReport(ctx, &pb.GetActivityReportRequest{}); err != nil || a.Referrals.GetValue() != int64(n) {
			b.Fatalf("the report counts %v of %d: %v", a.GetReferrals(), n, err)
		}
		for _, f := range filters {
			b.Run(fmt.Sprintf("%s/%d", f.name, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := s.GetActivityReport(ctx, &pb.GetActivityReportRequest{Filter: f.filter}); err != nil {
						b.Fatal(err)
					}
					if _, err := s.GetOutcomeReport(ctx, &pb.GetOutcomeReportRequest{Filter: f.filter}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		store.Close()
	}
}

// benchStart is when the benchmark's referrals begin; they span two years.
var benchStart = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func loadReferrals(b *testing.B, n int) storage.Store {
	b.Helper()
	eng, err := bolt.Open(filepath.Join(b.TempDir(), "exchange.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	store, err := storage.Open(context.Background(), eng)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	ctx := context.Background()
	t0 := benchStart
	step := 2 * 365 * 24 * time.Hour / time.Duration(n)
	services := []string{"organizations/walkers/services/walks", "organizations/walkers/services/choir", "organizations/advice/services/money"}
	err = store.Update(ctx, func(tx storage.WriteTx) error {
		for _, o := range []struct {
			name string
			kind pb.OrganizationKind
		}{{"icb", pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER}, {"pcn", pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE},
			{"walkers", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION}, {"advice", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION}} {
			if err := tx.CreateOrganization(&pb.Organization{Name: "organizations/" + o.name, DisplayName: o.name, Kind: o.kind, CreateTime: timestamppb.New(t0)}); err != nil {
				return err
			}
		}
		for _, s := range services {
			if err := tx.CreateService(&pb.Service{Name: s, DisplayName: filepath.Base(s), CreateTime: timestamppb.New(t0)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	for start := 0; start < n; start += 1000 {
		err := store.Update(ctx, func(tx storage.WriteTx) error {
			for i := start; i < min(n, start+1000); i++ {
				at := t0.Add(time.Duration(i) * step)
				svc := services[i%len(services)]
				consent := &pb.Consent{Name: fmt.Sprintf("consents/c%07d", i), NhsNumber: fmt.Sprintf("9%09d", i),
					Purposes: []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION}, CreateTime: timestamppb.New(at)}
				if err := tx.CreateConsent(consent); err != nil {
					return err
				}
				r := &pb.Referral{Name: fmt.Sprintf("referrals/r%07d", i), Referrer: "organizations/pcn", Recipient: svc[:len("organizations/")+len(filepath.Base(filepath.Dir(filepath.Dir(svc))))],
					RecipientService: svc, Route: pb.ReferralRoute(1 + i%5), Needs: []pb.Category{pb.Category(1 + i%7)},
					State: pb.ReferralState_REFERRAL_STATE_COMPLETED, Consent: consent.Name, CreateTime: timestamppb.New(at),
					ResponseTime: timestamppb.New(at.Add(time.Duration(1+i%90) * time.Hour)),
					Person:       &pb.Person{NhsNumber: consent.NhsNumber, Sex: pb.Sex(1 + i%2), DateOfBirth: fmt.Sprintf("%d-01-01", 1940+i%60)}}
				if err := tx.CreateReferral(r, []string{r.Referrer, r.Recipient}); err != nil {
					return err
				}
				for j, tp := range []pb.Timepoint{pb.Timepoint_TIMEPOINT_BASELINE, pb.Timepoint_TIMEPOINT_EXIT} {
					f := &pb.Feedback{Name: fmt.Sprintf("%s/feedback/f%d", r.Name, j), Author: r.Recipient, CreateTime: timestamppb.New(at.AddDate(0, 0, 30*j)),
						Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Timepoint: tp, Total: int32(30 + (i*7+j*(i%5))%30)}}}
					if err := tx.CreateFeedback(f); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return store
}
