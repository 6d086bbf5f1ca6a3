package report

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// TestNothingSuppressedIsDetermined generates random referrals, builds
// both reports of them, and, from the published reports alone, writes down
// every linear relation between their figures (totals and their splits, the
// funnel's steps, a group against the whole, the pairs of a measure against
// their counts, across the two reports) and proves with linear programming
// that no suppressed count, and no group of 1 to 4 a report leaves unshown,
// is determined by the figures shown. The true values come from the same
// reports built without suppression.
func TestNothingSuppressedIsDetermined(t *testing.T) {
	seeds := 100
	if testing.Short() || race {
		seeds = 10
	}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(uint64(seed), 26))
		// Mostly the default threshold; a third of the time 3 or 10, and
		// from a single referral up, where a search that gives up first
		// went wrong.
		k := []int{5, 5, 5, 5, 3, 10}[rng.IntN(6)]
		refs := randomReferrals(rng, 1+rng.IntN(65))
		c := Context{Threshold: k, Now: day0.AddDate(1, 0, 0)}
		a, o := Build(refs, c)
		c.Threshold = 1
		ta, to := Build(refs, c)
		w := newWitness(k)
		w.reports(a, o, ta, to)
		if msg := w.check(); msg != "" {
			t.Errorf("seed %d (%d referrals, threshold %d): %s", seed, len(refs), k, msg)
		}
		if w.hidden == 0 && seed < 3 {
			t.Logf("seed %d hid nothing", seed)
		}
	}
}

func randomReferrals(rng *rand.Rand, n int) []Referral {
	services := []string{"organizations/g/services/walks", "organizations/g/services/choir", "organizations/h/services/advice"}
	routes := []pb.ReferralRoute{pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE, pb.ReferralRoute_REFERRAL_ROUTE_SELF, pb.ReferralRoute_REFERRAL_ROUTE_THIRD_SECTOR}
	states := []pb.ReferralState{pb.ReferralState_REFERRAL_STATE_REQUESTED, pb.ReferralState_REFERRAL_STATE_ACCEPTED, pb.ReferralState_REFERRAL_STATE_IN_PROGRESS,
		pb.ReferralState_REFERRAL_STATE_COMPLETED, pb.ReferralState_REFERRAL_STATE_COMPLETED, pb.ReferralState_REFERRAL_STATE_REJECTED,
		pb.ReferralState_REFERRAL_STATE_ON_HOLD, pb.ReferralState_REFERRAL_STATE_CANCELLED}
	needs := []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION, pb.Category_CATEGORY_PHYSICAL_ACTIVITY, pb.Category_CATEGORY_DEBT_AND_MONEY}
	sexes := []pb.Sex{pb.Sex_SEX_FEMALE, pb.Sex_SEX_FEMALE, pb.Sex_SEX_MALE, pb.Sex_SEX_MALE, pb.Sex_SEX_INDETERMINATE}
	var out []Referral
	for i := range n {
		svc := services[rng.IntN(len(services))]
		created := day0.Add(time.Duration(rng.IntN(100*24)) * time.Hour)
		r := &pb.Referral{Name: fmt.Sprintf("referrals/r%d", i), RecipientService: svc, Recipient: svc[:len("organizations/g")],
			Referrer: "organizations/gp", Route: routes[rng.IntN(len(routes))], State: states[rng.IntN(len(states))],
			CreateTime: timestamppb.New(created), ReplyBy: timestamppb.New(created.AddDate(0, 0, 14)),
			Needs:  []pb.Category{needs[rng.IntN(len(needs))]},
			Person: &pb.Person{Sex: sexes[rng.IntN(len(sexes))], DateOfBirth: fmt.Sprintf("%d-03-04", 1940+rng.IntN(60))}}
		if rng.IntN(3) == 0 {
			r.Needs = append(r.Needs, pb.Category_CATEGORY_MENTAL_WELLBEING)
		}
		switch r.State {
		case pb.ReferralState_REFERRAL_STATE_CANCELLED, pb.ReferralState_REFERRAL_STATE_REJECTED:
			r.StateReason = &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_NO_CAPACITY}
			if rng.IntN(2) == 0 {
				r.StateReason.Code = pb.StateReasonCode_STATE_REASON_CODE_PERSON_DECLINED
			}
		}
		if r.State != pb.ReferralState_REFERRAL_STATE_REQUESTED {
			r.ResponseTime = timestamppb.New(created.Add(time.Duration(1+rng.IntN(100)) * time.Hour))
		}
		if r.State == pb.ReferralState_REFERRAL_STATE_CANCELLED && rng.IntN(2) == 0 {
			r.AcceptTime = r.ResponseTime
		}
		ref := Referral{R: r}
		at := func(d int) *timestamppb.Timestamp { return timestamppb.New(created.AddDate(0, 0, d)) }
		for _, in := range []pb.Instrument{pb.Instrument_INSTRUMENT_WEMWBS, pb.Instrument_INSTRUMENT_UCLA3} {
			if rng.IntN(4) == 0 {
				continue
			}
			lo, hi := 14, 70
			if in == pb.Instrument_INSTRUMENT_UCLA3 {
				lo, hi = 3, 9
			}
			base := lo + rng.IntN(hi-lo+1)
			ref.Outcomes = append(ref.Outcomes, &pb.OutcomeMeasure{Instrument: in, Timepoint: pb.Timepoint_TIMEPOINT_BASELINE, Total: int32(base), MeasureTime: at(1)})
			if rng.IntN(4) != 0 {
				f := min(hi, max(lo, base+rng.IntN(9)-3))
				ref.Outcomes = append(ref.Outcomes, &pb.OutcomeMeasure{Instrument: in, Timepoint: pb.Timepoint_TIMEPOINT_EXIT, Total: int32(f), MeasureTime: at(60)})
			}
		}
		out = append(out, ref)
	}
	return out
}

// witness is what a reader of the reports knows, written from the
// published reports: each figure (shown, or hidden with its true value
// kept for the check), the groups the relations imply, and the relations.
type witness struct {
	k      int
	value  []int
	shown  []bool
	small  []bool // a group not shown that must not be given away when small
	label  []pb.Suppression
	rels   [][]int // each: first = sum of the rest
	hidden int
	bad    []string
	// limit, when set, leaves unjudged a group of linked unknowns larger
	// than it (the linear programmes take seconds each beyond a few
	// hundred), counting them in skipped.
	limit, skipped int
}

func newWitness(k int) *witness { return &witness{k: k} }

// fig adds a published count with its true value.
func (w *witness) fig(c, truth *pb.Count) int {
	w.value = append(w.value, int(truth.GetValue()))
	w.shown = append(w.shown, !c.GetSuppressed())
	w.small = append(w.small, false)
	w.label = append(w.label, c.GetSuppression())
	if c.GetSuppressed() {
		w.hidden++
		v := truth.GetValue()
		if c.Value != 0 {
			w.bad = append(w.bad, fmt.Sprintf("a suppressed count has a value %d", c.Value))
		}
		// "Fewer than k" only for a count that is; a small count may
		// show as suppressed where its label would give it away.
		if c.Suppression == pb.Suppression_SUPPRESSION_SMALL && !(v > 0 && v < int64(w.k)) {
			w.bad = append(w.bad, fmt.Sprintf("a count of %d labelled %v", v, c.Suppression))
		}
	} else if c.GetValue() != truth.GetValue() {
		w.bad = append(w.bad, fmt.Sprintf("shown %d, true %d", c.GetValue(), truth.GetValue()))
	}
	return len(w.value) - 1
}

// sum records total = parts.
func (w *witness) sum(total int, parts ...int) {
	w.rels = append(w.rels, append([]int{total}, parts...))
}

// rest is the group total minus parts, not shown.
func (w *witness) rest(total int, parts ...int) int {
	v := w.value[total]
	for _, p := range parts {
		v -= w.value[p]
	}
	w.value = append(w.value, v)
	w.shown = append(w.shown, false)
	w.small = append(w.small, true)
	w.label = append(w.label, 0)
	r := len(w.value) - 1
	w.sum(total, append(parts, r)...)
	return r
}

func (w *witness) rows(rows, truth []*pb.CountRow) []int {
	out := make([]int, len(rows))
	for i := range rows {
		out[i] = w.fig(rows[i].Count, truth[i].Count)
	}
	return out
}

// reports writes down the figures of both reports and their relations.
func (w *witness) reports(a *pb.ActivityReport, o *pb.OutcomeReport, ta *pb.ActivityReport, to *pb.OutcomeReport) {
	n := w.fig(a.Referrals, ta.Referrals)
	w.sum(n, w.fig(a.Funnel.Referred, ta.Funnel.Referred))
	services := map[string]int{}
	for _, pair := range [][2][]*pb.CountRow{{a.ByRoute, ta.ByRoute}, {a.ByService, ta.ByService}, {a.ByOrganization, ta.ByOrganization}} {
		cells := w.rows(pair[0], pair[1])
		w.sum(n, cells...)
		if &pair[0][0] == &a.ByService[0] {
			for i, r := range a.ByService {
				services[r.Key] = cells[i]
			}
		}
	}
	// An organisation's referrals are its services'.
	for i, org := range a.ByOrganization {
		var of []int
		for _, svc := range a.ByService {
			if strings.HasPrefix(svc.Key, org.Key+"/services/") {
				of = append(of, services[svc.Key])
			}
		}
		w.sum(w.fig(org.Count, ta.ByOrganization[i].Count), of...)
	}
	needs := w.rows(a.ByNeed, ta.ByNeed)
	for _, c := range needs {
		w.rest(n, c)
	}
	f, tf := a.Funnel, ta.Funnel
	open, completed := w.fig(f.Open, tf.Open), w.fig(f.Completed, tf.Completed)
	final := []int{open, completed}
	final = append(final, w.rows(f.Rejected, tf.Rejected)...)
	final = append(final, w.rows(f.Failed, tf.Failed)...)
	final = append(final, w.rows(f.Cancelled, tf.Cancelled)...)
	w.sum(n, final...)
	accepted, started := w.fig(f.Accepted, tf.Accepted), w.fig(f.Started, tf.Started)
	w.rest(n, accepted)
	w.rest(accepted, started)
	w.rest(started, completed)
	w.rest(n, w.fig(a.ResponseTime.Answered, ta.ResponseTime.Answered))
	w.rest(open, w.fig(a.Overdue, ta.Overdue), w.fig(a.Waitlisted, ta.Waitlisted))
	// The trend splits the referrals and the started by period.
	var made, began []int
	for i, p := range a.Trend {
		m, b := w.fig(p.Referrals, ta.Trend[i].Referrals), w.fig(p.Started, ta.Trend[i].Started)
		w.rest(m, b)
		made, began = append(made, m), append(began, b)
	}
	if len(made) > 0 {
		w.sum(n, made...)
		w.sum(started, began...)
	}

	with := map[pb.Instrument][]int{}
	followed := map[string]int{} // service and instrument: with a follow-up
	for i, c := range o.Completeness {
		tc := to.Completeness[i]
		base := w.fig(c.Baseline, tc.Baseline)
		fw := w.fig(c.WithFollowUp, tc.WithFollowUp)
		followed[c.Service+" "+c.Instrument.String()] = fw
		w.sum(base, fw, w.fig(c.WithoutFollowUp, tc.WithoutFollowUp))
		w.rest(services[c.Service], base)
		with[c.Instrument] = append(with[c.Instrument], fw)
	}
	sameInstrument := map[pb.Instrument][]int{}
	for i, m := range o.Measures {
		tm := to.Measures[i]
		all := w.paired(m.All, tm.All)
		// Each bin shown holds whole bins of the unprotected report's
		// (its ends are merged), and is shown only if all are.
		var bins []int
		for _, b := range m.ChangeDistribution {
			truth := &pb.Count{}
			bl, bh := b.Bounds()
			for _, tb := range tm.ChangeDistribution {
				tl, th := tb.Bounds()
				if tl >= bl && th <= bh {
					truth.Value += tb.Count.Value
				} else if tl < bh && th > bl {
					w.bad = append(w.bad, "a bin cut another")
				}
			}
			if b.Count.Suppressed {
				w.bad = append(w.bad, "a distribution shown with a bin hidden")
			}
			bins = append(bins, w.fig(b.Count, truth))
		}
		if len(bins) > 0 {
			w.sum(all[0], bins...)
			// Below 0 the pairs that fell; from 0 the unchanged and, with
			// a width over 1, those that rose by less.
			fell, rose := all[3], all[1]
			if !m.HigherIsBetter {
				fell, rose = all[1], all[3]
			}
			var below, above []int
			zero := -1
			for j, b := range m.ChangeDistribution {
				low, high := b.Bounds()
				switch {
				case high <= 0:
					below = append(below, bins[j])
				case low == 0:
					zero = bins[j]
				default:
					above = append(above, bins[j])
				}
			}
			w.sum(fell, below...)
			switch width := tm.ChangeDistribution[0].GetHigh() - tm.ChangeDistribution[0].GetLow(); {
			case zero < 0:
				w.sum(all[2])
				w.sum(rose, above...)
			case width <= 1:
				w.sum(zero, all[2])
				w.sum(rose, above...)
			default:
				little := w.rest(zero, all[2])
				w.small[little] = false // not a group the reports name
				w.sum(rose, append(above, little)...)
			}
		}
		if m.All.Meaningful != nil {
			w.rest(all[1], w.fig(m.All.Meaningful, tm.All.Meaningful))
		}
		groups := []int{all[0]}
		for j, g := range m.Comparisons {
			ga, gb := w.paired(g.A, tm.Comparisons[j].A), w.paired(g.B, tm.Comparisons[j].B)
			groups = append(groups, ga[0], gb[0])
			var rests []int
			for d := range ga {
				rests = append(rests, w.rest(all[d], ga[d], gb[d]))
			}
			w.sum(rests[0], rests[1:]...)
		}
		// Services split every count of the pairs; a service's pairs are
		// among its follow-ups.
		parts := make([][]int, 5)
		for j, sv := range m.ByService {
			cells := w.paired(sv.Stats, tm.ByService[j].Stats)
			if sv.Stats.Meaningful != nil {
				mc := w.fig(sv.Stats.Meaningful, tm.ByService[j].Stats.Meaningful)
				w.rest(cells[1], mc)
				cells = append(cells, mc)
			}
			for d, c := range cells {
				parts[d] = append(parts[d], c)
			}
			if fw, ok := followed[sv.Service+" "+m.Instrument.String()]; ok {
				w.among(fw, cells[0])
			} else {
				w.bad = append(w.bad, "a service with pairs has no completeness row")
			}
		}
		if len(m.ByService) > 0 {
			for d := range 4 {
				w.sum(all[d], parts[d]...)
			}
			if m.All.Meaningful != nil {
				w.sum(w.fig(m.All.Meaningful, tm.All.Meaningful), parts[4]...)
			}
		}
		// The trend splits the pairs by period, each among the period's
		// referrals.
		var ns []int
		for j, p := range m.Trend {
			c := w.fig(p.N, tm.Trend[j].N)
			if j < len(made) {
				w.rest(made[j], c)
			}
			if p.N.Suppressed && p.ChangeMean != nil {
				w.bad = append(w.bad, "a hidden period shows its mean change")
			}
			ns = append(ns, c)
		}
		if len(ns) > 0 {
			w.sum(all[0], ns...)
		}
		// The items of one instrument (ONS4's four) score the same pairs.
		groups = append(groups, ns...)
		if prev, ok := sameInstrument[m.Instrument]; ok && len(prev) == len(groups) {
			for j := range groups {
				if w.value[prev[j]] == w.value[groups[j]] {
					w.sum(prev[j], groups[j])
				}
			}
		}
		sameInstrument[m.Instrument] = groups
		if cells := with[m.Instrument]; len(cells) > 0 {
			v := 0
			for _, c := range cells {
				v += w.value[c]
			}
			w.value, w.shown, w.small, w.label = append(w.value, v), append(w.shown, false), append(w.small, false), append(w.label, 0)
			total := len(w.value) - 1
			w.sum(total, cells...)
			w.rest(total, all[0])
		}
	}
}

// among writes down that part is among total: equal to it where it is
// (a service's pairs are its follow-ups, but for a follow-up without its
// score), so the equality is known.
func (w *witness) among(total, part int) {
	if w.value[total] == w.value[part] {
		w.sum(total, part)
	} else {
		w.rest(total, part)
	}
}

// paired writes down a group's n and its split, and checks that a group
// whose n is hidden shows no statistic (t / d gives n away).
func (w *witness) paired(s, truth *pb.PairedStats) []int {
	cells := []int{w.fig(s.N, truth.N), w.fig(s.Improved, truth.Improved), w.fig(s.Unchanged, truth.Unchanged), w.fig(s.Worse, truth.Worse)}
	w.sum(cells[0], cells[1:]...)
	if s.N.Suppressed && (s.T != nil || s.CohensD != nil || s.Df != nil || s.ChangeMean != nil) {
		w.bad = append(w.bad, "a hidden group shows its statistics")
	}
	return cells
}

// moves looks for a second solution in whole numbers, every relation and
// bound kept, that differs from the true values in c by one: a proof that c
// is not determined, much quicker than the linear programmes that decide
// where it finds none.
func (w *witness) moves(c int) bool {
	of := map[int][]int{}
	for r, rel := range w.rels {
		for _, u := range rel {
			of[u] = append(of[u], r)
		}
	}
	coef := func(r, u int) (k int) {
		for j, v := range w.rels[r] {
			if v == u {
				if j == 0 {
					k--
				} else {
					k++
				}
			}
		}
		return k
	}
	ok := func(u, v int) bool {
		if w.shown[u] {
			return false
		}
		if w.label[u] == pb.Suppression_SUPPRESSION_SMALL {
			return v >= 1 && v < w.k
		}
		return v >= 0
	}
	for _, first := range []int{1, -1} {
		d, bal, budget := map[int]int{}, map[int]int{}, 2000
		set := func(u, step int) {
			d[u] = step
			for _, r := range of[u] {
				if bal[r] += coef(r, u) * step; bal[r] == 0 {
					delete(bal, r)
				}
			}
		}
		unset := func(u int) {
			for _, r := range of[u] {
				if bal[r] -= coef(r, u) * d[u]; bal[r] == 0 {
					delete(bal, r)
				}
			}
			delete(d, u)
		}
		var search func(depth int) bool
		search = func(depth int) bool {
			if len(bal) == 0 {
				return true
			}
			if budget--; depth > 64 || budget < 0 {
				return false
			}
			var best [][2]int
			first := true
			for r, b := range bal {
				var opts [][2]int
				for _, u := range w.rels[r] {
					k := coef(r, u)
					if k != 1 && k != -1 || d[u] != 0 {
						continue
					}
					if step := -b * k; (step == 1 || step == -1) && ok(u, w.value[u]+step) {
						opts = append(opts, [2]int{u, step})
					}
				}
				if first || len(opts) < len(best) {
					best, first = opts, false
				}
			}
			for _, o := range best {
				set(o[0], o[1])
				if search(depth + 1) {
					return true
				}
				unset(o[0])
			}
			return false
		}
		if ok(c, w.value[c]+first) {
			set(c, first)
			if search(0) {
				return true
			}
		}
	}
	return false
}

// check proves that no unknown that must be protected is determined.
func (w *witness) check() string {
	if len(w.bad) > 0 {
		return w.bad[0]
	}
	// Components of unknowns linked by relations.
	parent := make([]int, len(w.value))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	for _, r := range w.rels {
		first := -1
		for _, c := range r {
			if !w.shown[c] {
				if first < 0 {
					first = c
				} else {
					parent[find(c)] = find(first)
				}
			}
		}
	}
	comps := map[int][]int{}
	for c := range w.value {
		if !w.shown[c] {
			comps[find(c)] = append(comps[find(c)], c)
		}
	}
	for _, comp := range comps {
		if w.limit > 0 && len(comp) > w.limit {
			w.skipped += len(comp)
			continue
		}
		idx := map[int]int{}
		sys := System{}
		for i, c := range comp {
			idx[c] = i
			lo, hi := 0.0, math.Inf(1)
			if w.label[c] == pb.Suppression_SUPPRESSION_SMALL {
				lo, hi = 1, float64(w.k-1)
			}
			sys.Lower, sys.Upper = append(sys.Lower, lo), append(sys.Upper, hi)
		}
		for _, r := range w.rels {
			row, rhs, in := make([]float64, len(comp)), 0.0, false
			for j, c := range r {
				coef := 1.0
				if j == 0 {
					coef = -1
				}
				if i, ok := idx[c]; ok {
					row[i] += coef
					in = true
				} else {
					rhs -= coef * float64(w.value[c])
				}
			}
			if in {
				sys.Rows, sys.RHS = append(sys.Rows, row), append(sys.RHS, rhs)
			}
		}
		var need []int
		for _, c := range comp {
			if w.label[c] == 0 && (!w.small[c] || w.value[c] < 1 || w.value[c] >= w.k) {
				continue // a sum across rows, or a group not small
			}
			if !w.moves(c) { // no two whole solutions found that differ in c
				need = append(need, c)
			}
		}
		for _, c := range w.vertices(sys, comp, idx, need) {
			lo, hi := sys.Range(idx[c])
			if hi-lo < 0.5 {
				return fmt.Sprintf("unknown %d (true %d, label %v, a group not shown: %v) is determined: [%g, %g]", c, w.value[c], w.label[c], w.small[c], lo, hi)
			}
		}
	}
	return ""
}

// vertices returns those of need that solutions at a few vertices of the
// system (least cost in random directions, bounded below) leave at their
// true values: a vertex where an unknown differs from the truth, itself a
// solution, shows it undetermined at the cost of one program for many.
func (w *witness) vertices(sys System, comp []int, idx map[int]int, need []int) []int {
	rng := rand.New(rand.NewPCG(uint64(len(comp)), 7))
	for round := 0; round < 8 && len(need) > 2; round++ {
		cost := make([]float64, len(comp))
		for i := range cost {
			if math.IsInf(sys.Upper[i], 1) {
				cost[i] = rng.Float64() + 1e-3
			} else {
				cost[i] = 2*rng.Float64() - 1
			}
		}
		x, err := sys.Minimise(cost)
		if err != nil {
			break
		}
		var left []int
		for _, c := range need {
			if math.Abs(x[idx[c]]-float64(w.value[c])) < 0.5 {
				left = append(left, c)
			}
		}
		need = left
	}
	return need
}

// TestSuppressionIsRepeatable: the same referrals are suppressed the same
// way every time, since two copies suppressed differently would give away
// together what neither does alone.
func TestSuppressionIsRepeatable(t *testing.T) {
	for seed := range 20 {
		refs := randomReferrals(rand.New(rand.NewPCG(uint64(seed), 26)), 5+seed*3)
		c := Context{Threshold: 5, Now: day0.AddDate(1, 0, 0)}
		a, o := Build(refs, c)
		for range 5 {
			a2, o2 := Build(refs, c)
			if !proto.Equal(a, a2) || !proto.Equal(o, o2) {
				t.Fatalf("seed %d: two builds of the same referrals differ", seed)
			}
		}
	}
}
