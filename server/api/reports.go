package api

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

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
	err := s.collect(ctx, req.Filter, func(refs []report.Referral, rc report.Context) {
		rep, _ = report.Build(refs, rc)
	})
	return rep, err
}

func (s *reports) GetOutcomeReport(ctx context.Context, req *pb.GetOutcomeReportRequest) (*pb.OutcomeReport, error) {
	var rep *pb.OutcomeReport
	err := s.collect(ctx, req.Filter, func(refs []report.Referral, rc report.Context) {
		_, rep = report.Build(refs, rc)
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

// collect reads, in one read transaction, the referrals the caller may
// count in a report (policy.ReportsOnEveryone, policy.InOwnReports) whose
// consent allows evaluation (policy.CountsInReports), with their outcome
// measures, and what the reports need besides, and calls build with them.
// Both reports of a filter are built from the same referrals, since they
// are protected together (report.Build).
func (s *reports) collect(ctx context.Context, filter *pb.ReportFilter, build func([]report.Referral, report.Context)) error {
	if err := validFilter(filter); err != nil {
		return err
	}
	caller := CallerFrom(ctx)
	everyone := policy.ReportsOnEveryone(caller.Kind, caller.Operator)
	return s.view(ctx, func(tx storage.ReadTx, now time.Time) error {
		rc := report.Context{Threshold: s.reportMinCount, Now: now, Filter: filter,
			Labels: map[string]string{}, ServiceCreated: map[string]time.Time{}}
		consents := map[string]*pb.Consent{}
		var refs []report.Referral
		keep := func(r *pb.Referral) bool {
			if !everyone && !policy.InOwnReports(caller.Org, r) {
				return false
			}
			c, ok := consents[r.Consent]
			if !ok {
				c, _ = tx.GetConsent(r.Consent)
				consents[r.Consent] = c
			}
			return policy.CountsInReports(c) && report.Matches(r, filter)
		}
		add := func(q storage.ReferralQuery) error {
			for after := ""; ; {
				p, err := tx.ListReferrals(q, after, 1000, keep)
				if err != nil {
					return err
				}
				for _, r := range p.Items {
					ref := report.Referral{R: r}
					// An organisation's own report counts only the
					// outcomes it may read (policy.FeedbackVisible): a
					// referrer without FEEDBACK_TO_REFERRER none of the
					// receiver's. Commissioners count them all.
					visible := func(f *pb.Feedback) bool {
						return everyone || policy.FeedbackVisible(caller.Org, policy.RelateParty(caller.Org, r), f, consents[r.Consent], now)
					}
					if ref.Outcomes, err = outcomeMeasures(tx, r.Name, visible); err != nil {
						return err
					}
					refs = append(refs, ref)
				}
				if after = p.Next; after == "" {
					return nil
				}
			}
		}
		// Every referral has exactly one recipient, so listing each
		// organisation's received referrals lists every referral once.
		if everyone {
			for after := ""; ; {
				p, err := tx.ListOrganizations(after, 1000)
				if err != nil {
					return err
				}
				for _, o := range p.Items {
					if err := add(storage.ReferralQuery{Recipient: o.Name}); err != nil {
						return err
					}
				}
				if after = p.Next; after == "" {
					break
				}
			}
		} else if err := add(storage.ReferralQuery{Party: caller.Org}); err != nil {
			return err
		}
		for _, ref := range refs {
			for _, name := range []string{ref.R.RecipientService, ref.R.Recipient} {
				if _, ok := rc.Labels[name]; ok {
					continue
				}
				if svc, err := tx.GetService(name); err == nil {
					rc.Labels[name], rc.ServiceCreated[name] = svc.DisplayName, svc.CreateTime.AsTime()
				} else if org, err := tx.GetOrganization(name); err == nil {
					rc.Labels[name] = org.DisplayName
				}
			}
		}
		var err error
		if rc.CapacityEvents, err = capacityEvents(tx); err != nil {
			return err
		}
		build(refs, rc)
		return nil
	})
}

// outcomeMeasures returns the outcome measures of a referral that visible
// accepts, each with a measure_time (the time of posting when it gave none).
func outcomeMeasures(tx storage.ReadTx, referral string, visible func(*pb.Feedback) bool) ([]*pb.OutcomeMeasure, error) {
	var out []*pb.OutcomeMeasure
	for after := ""; ; {
		p, err := tx.ListFeedback(referral, after, 1000, func(f *pb.Feedback) bool { return f.GetOutcome() != nil && visible(f) })
		if err != nil {
			return nil, err
		}
		for _, f := range p.Items {
			o := proto.Clone(f.GetOutcome()).(*pb.OutcomeMeasure)
			if o.MeasureTime == nil {
				o.MeasureTime = f.CreateTime
			}
			out = append(out, o)
		}
		if after = p.Next; after == "" {
			return out, nil
		}
	}
}

// capacityEvents returns every CAPACITY_CHANGED event, in order.
func capacityEvents(tx storage.ReadTx) ([]*pb.Event, error) {
	var out []*pb.Event
	last, err := tx.LastSequence()
	if err != nil {
		return nil, err
	}
	for after := int64(0); after < last; {
		page, next, err := tx.ListEvents("", after, 1000)
		if err != nil {
			return nil, err
		}
		for _, e := range page {
			if e.Type == pb.EventType_EVENT_TYPE_CAPACITY_CHANGED {
				out = append(out, e)
			}
		}
		if next <= after {
			break
		}
		after = next
	}
	return out, nil
}
