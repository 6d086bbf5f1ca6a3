package api

import (
	"context"
	"time"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/names"
	"github.com/social-prescribing/exchange/server/rules/policy"
	"github.com/social-prescribing/exchange/server/rules/report"
	"github.com/social-prescribing/exchange/server/rules/validate"
	"github.com/social-prescribing/exchange/server/storage"
)

// DefaultReportMinCount is the default suppression threshold of reports.
const DefaultReportMinCount = 5

type reports struct {
	pb.UnimplementedReportServiceServer
	*core
}

func (s *reports) GetActivityReport(ctx context.Context, req *pb.GetActivityReportRequest) (*pb.ActivityReport, error) {
	var rep *pb.ActivityReport
	err := s.collect(ctx, req.Filter, func(t *report.Tally, rc report.Context) {
		rep, _ = report.BuildTally(t, rc)
	})
	return rep, err
}

func (s *reports) GetOutcomeReport(ctx context.Context, req *pb.GetOutcomeReportRequest) (*pb.OutcomeReport, error) {
	var rep *pb.OutcomeReport
	err := s.collect(ctx, req.Filter, func(t *report.Tally, rc report.Context) {
		_, rep = report.BuildTally(t, rc)
	})
	return rep, err
}

// validFilter checks a report filter.
func validFilter(f *pb.ReportFilter) error {
	var v validate.Violations
	if f == nil {
		return nil
	}
	if f.Service != "" {
		if _, _, ok := names.Service(f.Service); !ok {
			v.Add("filter.service", "must be organizations/{organization}/services/{service}")
		}
	}
	if f.Organization != "" {
		if _, ok := names.Organization(f.Organization); !ok {
			v.Add("filter.organization", "must be organizations/{organization}")
		}
	}
	validate.Enum(&v, "filter.category", f.Category, false)
	validate.Enum(&v, "filter.route", f.Route, false)
	validate.Enum(&v, "filter.trend_interval", f.TrendInterval, false)
	if f.StartTime != nil && f.StartTime.CheckValid() != nil {
		v.Add("filter.start_time", "must be a valid time")
	}
	if f.EndTime != nil && f.EndTime.CheckValid() != nil {
		v.Add("filter.end_time", "must be a valid time")
	}
	if f.StartTime != nil && f.EndTime != nil && !f.EndTime.AsTime().After(f.StartTime.AsTime()) {
		v.Add("filter.end_time", "must be after start_time")
	}
	return invalid(v)
}

// collect reads, in one read transaction, what reports count of the
// referrals the caller may count (policy.ReportsOnEveryone,
// policy.InOwnReports) that pass the filter: the sums the store keeps of
// the filter's period (storage.ReadTx.ReportSums), which count only
// referrals whose consent allows evaluation (policy.CountsInReports,
// report.RowFor), and what the reports need besides, and calls build with
// them. Both reports of a filter are built from the same sums, since they
// are protected together (report.BuildTally).
func (s *reports) collect(ctx context.Context, filter *pb.ReportFilter, build func(*report.Tally, report.Context)) error {
	if err := validFilter(filter); err != nil {
		return err
	}
	caller := CallerFrom(ctx)
	everyone := policy.ReportsOnEveryone(caller.Kind, caller.Operator)
	return s.view(ctx, func(tx storage.ReadTx, now time.Time) error {
		rc := report.Context{Threshold: s.reportMinCount, Now: now, Filter: filter,
			Labels: map[string]string{}, ServiceCreated: map[string]time.Time{}}
		t := report.NewTally()
		var from, to time.Time
		if filter.GetStartTime() != nil {
			from = filter.StartTime.AsTime()
		}
		if filter.GetEndTime() != nil {
			to = filter.EndTime.AsTime()
		}
		keep := func(k report.Key) bool {
			return k.Pass(filter) && (everyone || policy.InOwnReports(caller.Org, &pb.Referral{Referrer: k.Referrer, Recipient: k.Recipient}))
		}
		// An organisation's own report counts the referrals it made or
		// received, and of those it made but did not receive only the
		// outcomes shared with it (policy.SharedInReports). Commissioners
		// count them all.
		t.Keep, t.Shared = keep, func(k report.Key) bool { return !everyone && k.Recipient != caller.Org }
		if err := tx.ReportSums(from, to, filter.GetService(), t); err != nil {
			return err
		}
		// Overdue now: from the referrals past their deadline, which move
		// with the clock rather than with a write.
		err := tx.OverdueReportRows(now, func(row *report.Row) error {
			at := row.CreateTime()
			if keep(row.Key) && (from.IsZero() || !at.Before(from)) && (to.IsZero() || at.Before(to)) {
				t.Overdue++
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, name := range t.Names() {
			if _, ok := rc.Labels[name]; ok {
				continue
			}
			if svc, err := tx.GetService(name); err == nil {
				rc.Labels[name], rc.ServiceCreated[name] = svc.DisplayName, svc.CreateTime.AsTime()
				events, err := tx.CapacityEvents(name + "/capacity")
				if err != nil {
					return err
				}
				rc.CapacityEvents = append(rc.CapacityEvents, events...)
			} else if org, err := tx.GetOrganization(name); err == nil {
				rc.Labels[name] = org.DisplayName
			}
		}
		build(t, rc)
		return nil
	})
}
