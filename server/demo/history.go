package demo

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/rules/validate"
)

// demoNHSNumber is an NHS number of the 999 range reserved for testing,
// with a valid check digit, distinct for each n below 500,000: the number
// of stem 2n, or of 2n+1 where no check digit makes 2n valid (two stems in a
// row never both lack one, since the last digit's weight is 2).
func demoNHSNumber(n int) string {
	for n *= 2; ; n++ {
		for d := 0; d < 10; d++ {
			s := fmt.Sprintf("999%06d%d", n%1000000, d)
			if _, ok := validate.NHSNumber(s); ok {
				return s
			}
		}
	}
}

// step is one thing that happens in a person's synthetic journey, at a
// time.
type step struct {
	at time.Time
	do func(at time.Time) error
}

// demoHistory writes synthetic people's journeys through the exchange,
// spread over the year before the demo's start and all ended by it, so a
// newcomer's reports have something to show: consent (most with
// evaluation), a referral from the practice to the link workers (or straight
// from the link workers to a group), answers, onward referrals to the
// groups, waiting, starting, completing or failing, and wellbeing and
// loneliness scores at the start and, for some, at the end, until n
// referrals are made. Each step is a call at its own time (api.WithTime), so
// the exchange stores the history as if it had happened (runHistory).
func demoHistory(ctx context.Context, svcs api.Services, n int, start time.Time) error {
	rng := rand.New(rand.NewPCG(2026, 11))
	gp := api.WithCaller(ctx, api.Caller{Org: "organizations/riverside-practice", Kind: pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE})
	lw := api.WithCaller(ctx, api.Caller{Org: "organizations/riverside-pcn", Kind: pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE})
	groups := map[string]context.Context{
		"organizations/hillside-walkers/services/health-walks":      api.WithCaller(ctx, api.Caller{Org: "organizations/hillside-walkers"}),
		"organizations/community-money-advice/services/debt-advice": api.WithCaller(ctx, api.Caller{Org: "organizations/community-money-advice"}),
	}
	const linkWorkers = "organizations/riverside-pcn/services/link-workers"
	var journeys [][]step
	add := func(at time.Time, do func(at time.Time) error) {
		j := &journeys[len(journeys)-1]
		*j = append(*j, step{at, do})
	}
	hours := func(lo, hi float64) time.Duration {
		return time.Duration((lo + rng.Float64()*(hi-lo)) * float64(time.Hour))
	}
	normal := func(mean, sd, lo, hi float64) int32 {
		return int32(math.Max(lo, math.Min(hi, math.Round(mean+sd*rng.NormFloat64()))))
	}
	for i, made := 0, 0; made < n; i++ {
		journeys = append(journeys, nil)
		t0 := start.Add(hours(0, 270*24))
		sex := []pb.Sex{pb.Sex_SEX_FEMALE, pb.Sex_SEX_MALE}[rng.IntN(2)]
		person := &pb.Person{NhsNumber: demoNHSNumber(100 + i), GivenName: "Demo", FamilyName: fmt.Sprintf("Person %d", i+1),
			DateOfBirth: fmt.Sprintf("%d-%02d-%02d", 1935+rng.IntN(70), 1+rng.IntN(12), 1+rng.IntN(28)), Sex: sex, Postcode: "M14 5AB"}
		purposes := []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER}
		if rng.Float64() < 0.85 {
			purposes = append(purposes, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION)
		}
		service, needs := "organizations/hillside-walkers/services/health-walks", []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY, pb.Category_CATEGORY_SOCIAL_ISOLATION}
		if rng.Float64() < 0.4 {
			service, needs = "organizations/community-money-advice/services/debt-advice", []pb.Category{pb.Category_CATEGORY_DEBT_AND_MONEY}
		}
		viaGP := rng.Float64() < 0.7
		recorder := lw
		if viaGP {
			recorder = gp
		}
		var consent, first, onward string
		group := groups[service]
		// The link worker closes its own referral once the onward one ends.
		closeFirst := func(t time.Time) {
			if viaGP {
				add(t.Add(hours(24, 72)), move(lw, svcs, &first, "complete", 0))
			}
		}
		add(t0, func(at time.Time) error {
			c, err := svcs.Consents.CreateConsent(api.WithTime(recorder, at), &pb.CreateConsentRequest{RequestId: fmt.Sprint("demo-history-consent-", i), Consent: &pb.Consent{
				NhsNumber: person.NhsNumber, Method: pb.ConsentMethod_CONSENT_METHOD_VERBAL, Purposes: purposes,
				RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}})
			if err == nil {
				consent = c.Name
			}
			return err
		})
		t := t0
		if viaGP {
			made++
			add(t, func(at time.Time) error {
				r, err := svcs.Referrals.CreateReferral(api.WithTime(gp, at), &pb.CreateReferralRequest{RequestId: fmt.Sprint("demo-history-gp-", i), Referral: &pb.Referral{
					RecipientService: linkWorkers, Person: person, Consent: consent, Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
					Needs: []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION, pb.Category_CATEGORY_MENTAL_WELLBEING}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_INTENSIVE}})
				if err == nil {
					first = r.Name
				}
				return err
			})
			t = t.Add(hours(2, 120))
			if rng.Float64() < 0.1 {
				add(t, move(lw, svcs, &first, "reject", pb.StateReasonCode_STATE_REASON_CODE_PERSON_DECLINED))
				continue
			}
			add(t, move(lw, svcs, &first, "accept", 0))
			t = t.Add(hours(24, 72))
			add(t, move(lw, svcs, &first, "start", 0))
			t = t.Add(hours(48, 240))
		}
		route := pb.ReferralRoute_REFERRAL_ROUTE_LINK_WORKER
		if !viaGP {
			route = []pb.ReferralRoute{pb.ReferralRoute_REFERRAL_ROUTE_SELF, pb.ReferralRoute_REFERRAL_ROUTE_SOCIAL_CARE,
				pb.ReferralRoute_REFERRAL_ROUTE_COMMUNITY_HEALTH, pb.ReferralRoute_REFERRAL_ROUTE_DROP_IN}[rng.IntN(4)]
		}
		made++
		add(t, func(at time.Time) error {
			r, err := svcs.Referrals.CreateReferral(api.WithTime(lw, at), &pb.CreateReferralRequest{RequestId: fmt.Sprint("demo-history-onward-", i), Referral: &pb.Referral{
				RecipientService: service, Person: person, Consent: consent, Route: route, ParentReferral: first,
				Needs: needs, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_INTENSIVE}})
			if err == nil {
				onward = r.Name
			}
			return err
		})
		t = t.Add(hours(1, 96))
		switch x := rng.Float64(); {
		case x < 0.08:
			add(t, move(group, svcs, &onward, "reject", pb.StateReasonCode_STATE_REASON_CODE_NOT_ELIGIBLE))
			closeFirst(t)
			continue
		case x < 0.12:
			add(t, move(lw, svcs, &onward, "cancel", pb.StateReasonCode_STATE_REASON_CODE_NEEDS_CHANGED))
			closeFirst(t)
			continue
		}
		add(t, move(group, svcs, &onward, "accept", 0))
		t = t.Add(hours(24, 240))
		add(t, move(group, svcs, &onward, "start", 0))
		instrument := pb.Instrument_INSTRUMENT_WEMWBS
		if service != "organizations/hillside-walkers/services/health-walks" {
			instrument = pb.Instrument_INSTRUMENT_SWEMWBS
		}
		// A wellbeing score and the loneliness score, in a fixed order so
		// the people and their scores are the same on every run.
		type score struct {
			in    pb.Instrument
			total int32
		}
		initial := normal(20, 4, 7, 35)
		if instrument == pb.Instrument_INSTRUMENT_WEMWBS {
			initial = normal(40, 8, 14, 70)
		}
		base := []score{{instrument, initial}, {pb.Instrument_INSTRUMENT_UCLA3, normal(6.5, 1.5, 3, 9)}}
		if rng.Float64() < 0.9 {
			for _, s := range base {
				add(t, outcome(group, svcs, &onward, s.in, pb.Timepoint_TIMEPOINT_BASELINE, s.total, fmt.Sprint("demo-history-base-", s.in, "-", i)))
			}
		}
		t = t.Add(hours(3*7*24, 6*7*24))
		if rng.Float64() < 0.2 {
			add(t, move(group, svcs, &onward, "fail", []pb.StateReasonCode{pb.StateReasonCode_STATE_REASON_CODE_DID_NOT_ATTEND,
				pb.StateReasonCode_STATE_REASON_CODE_UNABLE_TO_CONTACT}[rng.IntN(2)]))
			closeFirst(t)
			continue
		}
		// About half are measured again at the end: the attrition the
		// reports show.
		if rng.Float64() < 0.55 {
			for _, s := range base {
				var after int32
				switch s.in {
				case pb.Instrument_INSTRUMENT_WEMWBS:
					after = normal(float64(s.total)+4+0.5*float64(sex), 6, 14, 70)
				case pb.Instrument_INSTRUMENT_SWEMWBS:
					after = normal(float64(s.total)+2, 3, 7, 35)
				default:
					after = normal(float64(s.total)-0.8, 1.2, 3, 9)
				}
				add(t, outcome(group, svcs, &onward, s.in, pb.Timepoint_TIMEPOINT_FOLLOW_UP, after, fmt.Sprint("demo-history-follow-", s.in, "-", i)))
			}
		}
		add(t, move(group, svcs, &onward, "complete", 0))
		closeFirst(t)
	}
	return runHistory(ctx, journeys)
}

// runHistory takes every step of every journey in time order, each after
// the step before it in its journey, with up to demoInFlight steps running
// at once so that the store commits them together (a commit waits for the
// disk). The steps running at once span at most demoWindow of the history,
// so a group's capacity fills and empties about as it would have; which of
// two steps that close commits first is left to the store, so the history's
// people and scores are the same on every run, the steps a group at
// capacity refuses not quite. A refused
// step (a group at capacity, a move a refused step made impossible) leaves
// the rest of its journey to go on without it: the steps on a referral
// never made do nothing, as in life.
func runHistory(ctx context.Context, journeys [][]step) error {
	type place struct{ journey, step int }
	var order []place
	for j, steps := range journeys {
		for i := range steps {
			order = append(order, place{j, i})
		}
	}
	sort.SliceStable(order, func(a, b int) bool {
		return journeys[order[a].journey][order[a].step].at.Before(journeys[order[b].journey][order[b].step].at)
	})
	// done[j] is closed when journey j's latest step taken is done; taken
	// holds the steps taken and not yet seen done, oldest first.
	type running struct {
		at       time.Time
		finished chan struct{}
	}
	done := make([]chan struct{}, len(journeys))
	var taken []running
	slots := make(chan struct{}, demoInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, o := range order {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s := journeys[o.journey][o.step]
		// A step waits for every step more than demoWindow older.
		for len(taken) > 0 && taken[0].at.Before(s.at.Add(-demoWindow)) {
			select {
			case <-taken[0].finished:
				taken = taken[1:]
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		prev, finished := done[o.journey], make(chan struct{})
		done[o.journey] = finished
		taken = append(taken, running{s.at, finished})
		wg.Add(1)
		go func(s step) {
			defer func() { <-slots; close(finished); wg.Done() }()
			if prev != nil {
				<-prev
			}
			_ = s.do(s.at)
		}(s)
	}
	return ctx.Err()
}

// At most demoInFlight steps of the history run at once, all within
// demoWindow of history time of each other.
const (
	demoInFlight = 512
	demoWindow   = 24 * time.Hour
)

// move returns a step applying a state method to *name (when it exists).
func move(as context.Context, svcs api.Services, name *string, method string, reason pb.StateReasonCode) func(time.Time) error {
	return func(at time.Time) error {
		if *name == "" {
			return nil
		}
		as := api.WithTime(as, at)
		why := &pb.StateReason{Code: reason}
		var err error
		switch method {
		case "accept":
			_, err = svcs.Referrals.AcceptReferral(as, &pb.AcceptReferralRequest{Name: *name})
		case "start":
			_, err = svcs.Referrals.StartReferral(as, &pb.StartReferralRequest{Name: *name})
		case "complete":
			_, err = svcs.Referrals.CompleteReferral(as, &pb.CompleteReferralRequest{Name: *name})
		case "reject":
			_, err = svcs.Referrals.RejectReferral(as, &pb.RejectReferralRequest{Name: *name, Reason: why})
		case "fail":
			_, err = svcs.Referrals.FailReferral(as, &pb.FailReferralRequest{Name: *name, Reason: why})
		case "cancel":
			_, err = svcs.Referrals.CancelReferral(as, &pb.CancelReferralRequest{Name: *name, Reason: why})
		}
		return err
	}
}

// outcome returns a step recording a score on *name.
func outcome(as context.Context, svcs api.Services, name *string, in pb.Instrument, tp pb.Timepoint, total int32, requestID string) func(time.Time) error {
	return func(at time.Time) error {
		if *name == "" {
			return nil
		}
		as := api.WithTime(as, at)
		_, err := svcs.Feedback.CreateFeedback(as, &pb.CreateFeedbackRequest{Parent: *name, RequestId: requestID, Feedback: &pb.Feedback{
			Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{Instrument: in, Timepoint: tp, Total: total}}}})
		return err
	}
}
