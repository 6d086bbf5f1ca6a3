package storagetest

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/report"
	"github.com/social-prescribing/exchange/server/storage"
)

// testReportSums: what reports count follows every change in the same
// transaction, and ReportSums gives, for any period, exactly the referrals
// made in it, from month sums, day sums and single rows.
func testReportSums(t *testing.T, open Opener) {
	s := newStore(t, open)
	uk := report.London
	evaluation := &pb.Consent{Name: "consents/c1", NhsNumber: "9434765919", CreateTime: timestamppb.Now(),
		Purposes: []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION}}
	careOnly := &pb.Consent{Name: "consents/c2", NhsNumber: "9434765919", CreateTime: timestamppb.Now(),
		Purposes: []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE}}
	// Either side of midnight, of the end of a month and of the change to
	// summer time (29 March 2026).
	made := []time.Time{
		time.Date(2026, 1, 31, 23, 30, 0, 0, uk), time.Date(2026, 2, 1, 0, 0, 0, 0, uk),
		time.Date(2026, 2, 1, 12, 0, 0, 0, uk), time.Date(2026, 2, 15, 9, 0, 0, 0, uk),
		time.Date(2026, 3, 3, 10, 0, 0, 0, uk), time.Date(2026, 3, 29, 0, 30, 0, 0, uk),
		time.Date(2026, 3, 31, 23, 59, 0, 0, uk), time.Date(2026, 4, 1, 0, 0, 0, 0, uk),
	}
	// A report of one service seeks its sums past those of services
	// before and after it.
	services := []string{"organizations/g/services/a", "organizations/g/services/svc", "organizations/g/services/z"}
	update(t, s, func(tx storage.WriteTx) error {
		if err := tx.CreateConsent(evaluation); err != nil {
			return err
		}
		if err := tx.CreateConsent(careOnly); err != nil {
			return err
		}
		for i, at := range made {
			r := referral(fmt.Sprint("r", i), "organizations/lw", "organizations/g", at)
			r.RecipientService = services[i%len(services)]
			if err := tx.CreateReferral(r, nil); err != nil {
				return err
			}
		}
		// Not counted: its consent does not allow evaluation.
		other := referral("other", "organizations/lw", "organizations/g", made[2])
		other.Consent = careOnly.Name
		return tx.CreateReferral(other, nil)
	})
	countOf := func(from, to time.Time, service string) (n, pairs int64) {
		view(t, s, func(tx storage.ReadTx) error {
			return tx.ReportSums(from, to, service, report.SumsFunc(func(at time.Time, sums *report.Sums) error {
				if !from.IsZero() && at.Before(from) {
					t.Errorf("sums of %v for [%v, %v)", at, from, to)
				}
				if service != "" && sums.Service != service {
					t.Errorf("sums of %s for a report of %s", sums.Service, service)
				}
				n += sums.N
				for _, m := range sums.All.Groups {
					pairs += m.N
				}
				return nil
			}))
		})
		return n, pairs
	}
	count := func(from, to time.Time) (n, pairs int64) { return countOf(from, to, "") }
	bounds := []time.Time{{}, made[0].Add(-time.Hour), made[0], made[1], made[1].Add(time.Minute), made[2],
		time.Date(2026, 2, 2, 0, 0, 0, 0, uk), time.Date(2026, 2, 28, 0, 0, 0, 0, uk), time.Date(2026, 3, 1, 0, 0, 0, 0, uk),
		made[4].Add(time.Hour), time.Date(2026, 3, 29, 0, 0, 0, 0, uk), made[6], made[7], made[7].Add(time.Second),
		time.Date(2026, 5, 1, 0, 0, 0, 0, uk)}
	check := func(what string) {
		t.Helper()
		for _, from := range bounds {
			for _, to := range bounds {
				if !to.IsZero() && !from.Before(to) {
					continue
				}
				want := int64(0)
				for _, at := range made {
					if !at.Before(from) && (to.IsZero() || at.Before(to)) {
						want++
					}
				}
				if what == "withdrawn" {
					want = 0
				}
				if n, _ := count(from, to); n != want {
					t.Errorf("%s: [%v, %v) counts %d referrals, want %d", what, from, to, n, want)
				}
				for j, svc := range services {
					want := int64(0)
					for i, at := range made {
						if i%len(services) == j && !at.Before(from) && (to.IsZero() || at.Before(to)) && what != "withdrawn" {
							want++
						}
					}
					if n, _ := countOf(from, to, svc); n != want {
						t.Errorf("%s: [%v, %v) counts %d referrals of %s, want %d", what, from, to, n, svc, want)
					}
				}
			}
		}
	}
	check("made")
	overdue := func() (n int) {
		view(t, s, func(tx storage.ReadTx) error {
			return tx.OverdueReportRows(made[len(made)-1].Add(2*time.Hour), func(*report.Row) error { n++; return nil })
		})
		return n
	}
	// Every referral is REQUESTED an hour before it is due; the one not
	// counted is not among the overdue either.
	if n := overdue(); n != len(made) {
		t.Errorf("%d overdue counted, want %d", n, len(made))
	}

	// An outcome pair counts once both are in, and the state is followed.
	update(t, s, func(tx storage.WriteTx) error {
		for i, tp := range []pb.Timepoint{pb.Timepoint_TIMEPOINT_BASELINE, pb.Timepoint_TIMEPOINT_EXIT} {
			f := &pb.Feedback{Name: fmt.Sprintf("referrals/r3/feedback/f%d", i), Author: "organizations/g",
				CreateTime: timestamppb.New(made[3].Add(time.Duration(i+1) * time.Hour)),
				Content:    &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS, Timepoint: tp, Total: int32(40 + 5*i)}}}
			if err := tx.CreateFeedback(f); err != nil {
				return err
			}
		}
		r, err := tx.GetReferral("referrals/r3")
		if err != nil {
			return err
		}
		r.State = pb.ReferralState_REFERRAL_STATE_COMPLETED
		return tx.UpdateReferral(r)
	})
	if _, pairs := count(time.Time{}, time.Time{}); pairs != 1 {
		t.Errorf("%d pairs counted, want 1", pairs)
	}
	completed := int64(0)
	view(t, s, func(tx storage.ReadTx) error {
		return tx.ReportSums(time.Time{}, time.Time{}, "", report.SumsFunc(func(_ time.Time, sums *report.Sums) error {
			completed += sums.Completed
			return nil
		}))
	})
	if completed != 1 {
		t.Errorf("%d completed counted, want 1", completed)
	}
	if n := overdue(); n != len(made)-1 {
		t.Errorf("%d overdue counted once one completed, want %d", n, len(made)-1)
	}
	check("after the outcome")

	// Withdrawing the consent takes every referral relying on it out at
	// once; a failed write changes nothing.
	withdrawn := proto.Clone(evaluation).(*pb.Consent)
	withdrawn.WithdrawTime = timestamppb.Now()
	if err := s.Update(ctx, func(tx storage.WriteTx) error {
		if err := tx.UpdateConsent(withdrawn); err != nil {
			return err
		}
		return fmt.Errorf("refused")
	}); err == nil {
		t.Fatal("the failed write succeeded")
	}
	check("after a failed write")
	update(t, s, func(tx storage.WriteTx) error { return tx.UpdateConsent(withdrawn) })
	check("withdrawn")
	if n := overdue(); n != 0 {
		t.Errorf("%d overdue counted after the withdrawal", n)
	}

	// The capacity history of one service.
	update(t, s, func(tx storage.WriteTx) error {
		for i, res := range []string{"organizations/g/services/svc/capacity", "organizations/h/services/x/capacity", "organizations/g/services/svc/capacity"} {
			e := &pb.Event{Type: pb.EventType_EVENT_TYPE_CAPACITY_CHANGED, Resource: res, CapacityStatus: pb.CapacityStatus(1 + i)}
			if err := tx.AppendEvent(&storage.Event{Event: e, Public: true}); err != nil {
				return err
			}
		}
		return tx.AppendEvent(&storage.Event{Event: &pb.Event{Type: pb.EventType_EVENT_TYPE_REFERRAL_CREATED, Resource: "organizations/g/services/svc/capacity"}, Public: true})
	})
	view(t, s, func(tx storage.ReadTx) error {
		events, err := tx.CapacityEvents("organizations/g/services/svc/capacity")
		if err != nil {
			return err
		}
		if len(events) != 2 || events[0].CapacityStatus != 1 || events[1].CapacityStatus != 3 || events[0].Sequence >= events[1].Sequence || events[0].Sequence == 0 {
			t.Errorf("capacity events: %v", events)
		}
		return nil
	})
}
