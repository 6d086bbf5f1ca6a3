package report

import (
	"math"
	"slices"
	"sort"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// Disclosure control is complementary cell suppression (the Eurostat and
// ONS handbooks of statistical disclosure control): counts from 1 to the
// threshold minus one are hidden (primary), and further counts are hidden
// (complementary) until no hidden count, and no small group a report does
// not show but whose size follows from what it shows, is determined by the
// figures shown. What "determined" means is an attacker's best: the linear
// relations between the figures (a Ledger holds them), every count a whole
// number of at least 0, a SMALL count from 1 to the threshold minus one.
// A cell is safe once a second solution of those relations and bounds is
// found that differs from the true one in it by a whole step (movable): a
// proof a short search finds. A cell without such a move is treated as given away, which may hide more than an exact
// solver would, never less; the disclosure test judges the result with
// linear programming over real values (lp_test.go).

// Cell is one quantity a report counts: a Count it publishes, or a group it
// does not show but whose size the relations tie to those it does.
type Cell int

// Ledger records the counts of a report and the linear relations between
// them, then suppresses (Protect).
type Ledger struct {
	k      int
	value  []int
	count  []*pb.Count // nil for a group not shown
	small  []bool      // an unshown group that must not be given away when small
	hidden []pb.Suppression
	cells  map[*pb.Count]Cell
	rels   [][]term // each sums to zero
	of     [][]int  // of[c]: the relations c is in (Protect fills it)
	// zero marks the counts every reader can tell are 0: those the
	// relations alone make 0 (the pairs that fell, where no bin lies below
	// 0), and those Protect finds pinned there. Hiding one protects
	// nothing.
	zero []bool
	// headline counts are hidden to protect another only when nothing else
	// will do: the referrals counted, the pairs of a measure.
	headline map[Cell]bool
	// work bounds the steps of every search of one Protect together: past
	// it no move is found, so each cell left is protected by hiding the
	// counts around it until its component is hidden whole, which is
	// slower to read but quick to reach.
	work int
}

type term struct {
	c    Cell
	coef float64
}

// NewLedger starts a ledger for threshold k.
func NewLedger(k int) *Ledger {
	return &Ledger{k: k, cells: map[*pb.Count]Cell{}, headline: map[Cell]bool{}}
}

// Headline marks a count to keep shown where another will do.
func (l *Ledger) Headline(c *pb.Count) { l.headline[l.cell(c)] = true }

// Count makes a published count of n.
func (l *Ledger) Count(n int) *pb.Count {
	c := &pb.Count{Value: int64(n)}
	l.cells[c] = l.add(n, c, false)
	return c
}

// Hidden makes a count of n hidden whatever its size, with the group it
// belongs to (a split of a group too small to show).
func (l *Ledger) Hidden(n int) *pb.Count {
	c := l.Count(n)
	l.hide(l.cells[c], true)
	return c
}

func (l *Ledger) add(n int, c *pb.Count, small bool) Cell {
	l.value = append(l.value, n)
	l.count = append(l.count, c)
	l.small = append(l.small, small)
	l.hidden = append(l.hidden, 0)
	return Cell(len(l.value) - 1)
}

func (l *Ledger) cell(c *pb.Count) Cell { return l.cells[c] }

// Sum records total = the sum of parts.
func (l *Ledger) Sum(total *pb.Count, parts ...*pb.Count) {
	cs := make([]Cell, len(parts))
	for i, p := range parts {
		cs[i] = l.cell(p)
	}
	l.SumCells(l.cell(total), cs...)
}

// SumCells is Sum of cells.
func (l *Ledger) SumCells(total Cell, parts ...Cell) {
	r := []term{{total, -1}}
	for _, p := range parts {
		r = append(r, term{p, 1})
	}
	l.rels = append(l.rels, r)
}

// Rest records that parts are among total and returns the group of the
// rest (total minus the parts), which is not shown and must not be given
// away when small when sensitive is set: accepted but never started, say,
// or pairs of another sex.
func (l *Ledger) Rest(total Cell, sensitive bool, parts ...Cell) Cell {
	n := l.value[total]
	for _, p := range parts {
		n -= l.value[p]
	}
	rest := l.add(n, nil, sensitive)
	l.SumCells(total, append(parts, rest)...)
	return rest
}

// Among records that part is among total and, where the two are equal,
// that they are: a service's pairs of a measure are its follow-ups of the
// instrument but where a follow-up lacks the measure's score, so a reader
// may take them as equal.
func (l *Ledger) Among(total, part Cell) {
	if l.value[total] == l.value[part] {
		l.SumCells(total, part)
		return
	}
	l.Rest(total, true, part)
}

// Total is a group not shown that is the sum of parts (a sum across rows).
func (l *Ledger) Total(parts ...Cell) Cell {
	n := 0
	for _, p := range parts {
		n += l.value[p]
	}
	t := l.add(n, nil, false)
	l.SumCells(t, parts...)
	return t
}

// Of is the cell of a count made by the ledger.
func (l *Ledger) Of(c *pb.Count) Cell { return l.cell(c) }

func (l *Ledger) hide(c Cell, withGroup bool) {
	switch {
	case l.zero != nil && l.zero[c]:
	case l.value[c] > 0 && l.value[c] < l.k:
		l.hidden[c] = pb.Suppression_SUPPRESSION_SMALL
	case withGroup || l.hidden[c] == 0:
		l.hidden[c] = pb.Suppression_SUPPRESSION_PROTECTS
	}
}

// Protect hides the small counts and then, for each given-away cell in
// turn, the shown counts its complement names, until none is given away;
// it writes the result into the counts.
func (l *Ledger) Protect() {
	for c := range l.value {
		if l.count[c] != nil && l.value[c] > 0 && l.value[c] < l.k {
			l.hide(Cell(c), false)
		}
	}
	l.of = make([][]int, len(l.value))
	for i, r := range l.rels {
		for _, t := range r {
			l.of[t.c] = append(l.of[t.c], i)
		}
	}
	l.zero = l.structuralZeros()
	l.work = protectWork
	for c := range l.value {
		if l.zero[c] {
			l.hidden[c] = 0 // what every reader knows is no secret
		}
	}
	// Hiding a count only widens what the others may be, so a cell once
	// found not determined stays so: each is proven once.
	safe := make([]bool, len(l.value))
	for {
		c, ok := l.givenAway(safe)
		if !ok {
			break
		}
		next, ok := l.complement(c)
		if !ok {
			// Everything beside c is hidden and the labels give it away
			// (three counts of 1 to 4 that make 3 are each 1): the "fewer
			// than k" label goes, from c or the counts beside it, or else
			// from every count linked to it. Once none is left to take,
			// every relation of c's component holds only unknowns bounded
			// by 0 alone: doubling every value is another solution, so a
			// c above 0 is not determined, and the search goes on to the
			// other cells rather than stop. A c of 0 may be pinned there,
			// and hiding more cannot help: it is shown, as zeros are, and
			// what that changes is judged again.
			if !l.relabel(c) && !l.relabelAll(l.component(c)) {
				if l.value[c] > 0 {
					safe[c] = true
				} else {
					l.zero[c], l.hidden[c] = true, 0
					clear(safe)
				}
			}
			continue
		}
		for _, n := range next {
			l.hide(n, false)
		}
	}
	for c, cnt := range l.count {
		if cnt != nil && l.hidden[c] != 0 {
			cnt.Value, cnt.Suppressed, cnt.Suppression = 0, true, l.hidden[c]
		}
	}
}

// protectWork is the steps all of one Protect's searches may take: about
// a third of a second's work, so that a report answers within a second
// however hard its figures are to protect (docs/benchmarks.md).
const protectWork = 100_000

// relabel shows c, or else the small counts in its relations, as
// suppressed to protect, not as small, and reports whether any changed.
func (l *Ledger) relabel(c Cell) bool {
	if l.hidden[c] == pb.Suppression_SUPPRESSION_SMALL {
		l.hidden[c] = pb.Suppression_SUPPRESSION_PROTECTS
		return true
	}
	changed := false
	for _, r := range l.of[c] {
		for _, t := range l.rels[r] {
			if l.hidden[t.c] == pb.Suppression_SUPPRESSION_SMALL {
				l.hidden[t.c] = pb.Suppression_SUPPRESSION_PROTECTS
				changed = true
			}
		}
	}
	return changed
}

// structuralZeros finds the cells every reader knows are 0 from the
// relations alone: the total of a sum of nothing, the parts of such a
// total (counts are never negative), a total whose parts all are.
func (l *Ledger) structuralZeros() []bool {
	zero := make([]bool, len(l.value))
	for changed := true; changed; {
		changed = false
		for _, r := range l.rels {
			total, all := Cell(-1), true
			for _, t := range r {
				if t.coef < 0 {
					total = t.c
				} else if !zero[t.c] {
					all = false
				}
			}
			switch {
			case total < 0:
			case zero[total]:
				for _, t := range r {
					if t.coef > 0 && !zero[t.c] {
						zero[t.c], changed = true, true
					}
				}
			case all:
				zero[total], changed = true, true
			}
		}
	}
	return zero
}

// relabelAll shows every small count of cs as suppressed to protect, and
// reports whether any changed.
func (l *Ledger) relabelAll(cs []Cell) bool {
	changed := false
	for _, u := range cs {
		if l.hidden[u] == pb.Suppression_SUPPRESSION_SMALL {
			l.hidden[u] = pb.Suppression_SUPPRESSION_PROTECTS
			changed = true
		}
	}
	return changed
}

// unknown: what a reader of the report does not see.
func (l *Ledger) unknown(c Cell) bool { return l.count[c] == nil || l.hidden[c] != 0 }

// sensitive: an unknown that must not be determined. With a threshold of
// 2 or less a SMALL count is 1 by its label alone, so none is.
func (l *Ledger) sensitive(c Cell) bool {
	if l.k <= 2 && (l.hidden[c] == pb.Suppression_SUPPRESSION_SMALL || l.count[c] == nil) {
		return false
	}
	if l.count[c] != nil {
		return l.hidden[c] != 0
	}
	return l.small[c] && l.value[c] > 0 && l.value[c] < l.k
}

// complement picks the counts to hide next for a given-away cell c: the
// shown counts a move of c must pass through (the fewest and smallest,
// headlines last), or else, of the shown counts in a relation with c (or
// with another unknown of its component), the smallest whose hiding alone
// protects c, or the smallest. It reports false when no shown count is
// linked to c at all.
func (l *Ledger) complement(c Cell) ([]Cell, bool) {
	// Once the searches' work is spent, every count shown beside c's
	// component goes at once, rather than one a round, each round's
	// searches failing at their first step: hiding more errs on the
	// person's side, and a report is not held up by it.
	if l.work <= 0 {
		var all []Cell
		seen := map[Cell]bool{}
		for _, u := range l.component(c) {
			for _, r := range l.of[u] {
				for _, t := range l.rels[r] {
					if l.count[t.c] != nil && l.hidden[t.c] == 0 && !l.zero[t.c] && !seen[t.c] {
						seen[t.c] = true
						all = append(all, t.c)
					}
				}
			}
		}
		if len(all) > 0 {
			slices.Sort(all)
			return all, true
		}
	}
	// A move of whole steps that changes c, through shown counts where it
	// must: hiding them leaves c undetermined.
	// Headlines only when no way round them exists.
	for _, reach := range []int{1, 2} {
		if ok, through := l.move(c, reach); ok && len(through) > 0 {
			return through, true
		}
	}
	for i := range 2 {
		scope := []Cell{c}
		if i == 1 {
			scope = l.component(c) // only when c's own relations offer none
		}
		var cands []Cell
		seen := map[Cell]bool{}
		for _, u := range scope {
			for _, r := range l.of[u] {
				for _, t := range l.rels[r] {
					if l.count[t.c] != nil && l.hidden[t.c] == 0 && !l.zero[t.c] && !seen[t.c] {
						seen[t.c] = true
						cands = append(cands, t.c)
					}
				}
			}
		}
		if len(cands) == 0 {
			continue
		}
		sort.Slice(cands, func(i, j int) bool {
			a, b := cands[i], cands[j]
			if l.headline[a] != l.headline[b] {
				return l.headline[b]
			}
			return l.value[a] < l.value[b] || l.value[a] == l.value[b] && a < b
		})
		for i, cand := range cands {
			if i == 8 {
				break
			}
			l.hidden[cand] = pb.Suppression_SUPPRESSION_PROTECTS
			moves := l.movable(c)
			l.hidden[cand] = 0
			if moves {
				return []Cell{cand}, true
			}
		}
		return []Cell{cands[0]}, true
	}
	return nil, false
}

// component is the unknowns linked to c through relations.
func (l *Ledger) component(c Cell) []Cell {
	seen := make([]bool, len(l.value))
	done := make([]bool, len(l.rels))
	seen[c] = true
	out := []Cell{c}
	for i := 0; i < len(out); i++ {
		for _, r := range l.of[out[i]] {
			if done[r] {
				continue
			}
			done[r] = true
			for _, t := range l.rels[r] {
				if !seen[t.c] && l.unknown(t.c) {
					seen[t.c] = true
					out = append(out, t.c)
				}
			}
		}
	}
	return out // in the order found: deterministic, and every caller orders what it picks
}

// givenAway returns the first sensitive cell for which no move of whole
// steps shows it undetermined (movable), and marks safe those it proves.
// A cell with no such move may still be undetermined by fractional ones;
// hiding more for it errs on the side of the person.
func (l *Ledger) givenAway(safe []bool) (Cell, bool) {
	for c := range l.value {
		if safe[c] || !l.unknown(Cell(c)) || !l.sensitive(Cell(c)) {
			continue
		}
		if !l.movable(Cell(c)) {
			return Cell(c), true
		}
		safe[c] = true
	}
	return 0, false
}

// movable looks for a move of the unknowns by whole steps that keeps every
// relation and bound and changes c by one: two solutions that differ in c,
// so c is not determined. When it finds none within its budget, c is
// treated as given away (Protect).
func (l *Ledger) movable(c Cell) bool {
	ok, _ := l.move(c, 0)
	return ok
}

// move searches for such a move, and returns the shown counts it moved:
// with reach 0 it moves only unknowns; with 1 shown counts too, but for
// headlines; with 2 any; each the fewest and smallest it can.
func (l *Ledger) move(c Cell, reach int) (bool, []Cell) {
	if l.work <= 0 {
		return false, nil
	}
	bound := func(u Cell) (lo, hi int) {
		if l.hidden[u] == pb.Suppression_SUPPRESSION_SMALL {
			return 1, l.k - 1
		}
		return 0, math.MaxInt
	}
	// d is the move so far, moved the cells it names; bal is each
	// relation's imbalance, open the relations not balanced (slices, not
	// maps: this is where a Protect spends its time).
	d := make([]int, len(l.value))
	var moved []Cell
	bal := make([]float64, len(l.rels))
	openAt := make([]int, len(l.rels))
	for r := range openAt {
		openAt[r] = -1
	}
	var open []int
	budget := 20000
	can := func(u Cell, step int) bool {
		lo, hi := bound(u)
		v := l.value[u] + step
		return !l.zero[u] && (l.unknown(u) || reach == 1 && !l.headline[u] || reach == 2) && d[u] == 0 && v >= lo && v <= hi
	}
	// Unknowns first, then shown counts, smallest first, headlines last.
	rank := func(u Cell) int {
		switch {
		case l.unknown(u):
			return 0
		case l.headline[u]:
			return 2
		}
		return 1
	}
	shift := func(u Cell, step int) {
		for _, r := range l.of[u] {
			for _, t := range l.rels[r] {
				if t.c == u {
					bal[r] += t.coef * float64(step)
				}
			}
			switch balanced := math.Abs(bal[r]) < 1e-9; {
			case balanced && openAt[r] >= 0:
				bal[r] = 0
				i, last := openAt[r], open[len(open)-1]
				open[i], openAt[last] = last, i
				open, openAt[r] = open[:len(open)-1], -1
			case !balanced && openAt[r] < 0:
				openAt[r] = len(open)
				open = append(open, r)
			}
		}
	}
	set := func(u Cell, step int) {
		d[u] = step
		moved = append(moved, u)
		shift(u, step)
	}
	unset := func(u Cell) {
		shift(u, -d[u])
		d[u] = 0
		moved = moved[:len(moved)-1]
	}
	reset := func() {
		for _, u := range moved {
			d[u] = 0
		}
		for _, r := range open {
			bal[r], openAt[r] = 0, -1
		}
		moved, open, budget = moved[:0], open[:0], 20000
	}
	type option struct {
		u    Cell
		step int
	}
	var search func(depth int) bool
	search = func(depth int) bool {
		if len(open) == 0 {
			return true
		}
		if depth == 64 || budget <= 0 || l.work <= 0 {
			return false
		}
		budget--
		l.work--
		// The unbalanced relation with the fewest ways to balance it.
		// (Ties go to the first relation, so that a report is suppressed
		// the same way every time: two differently suppressed copies of
		// one report would give away together what neither does.)
		var best []option
		first, bestR := true, 0
		for _, r := range open {
			b := bal[r]
			var opts []option
			for _, t := range l.rels[r] {
				step := -b / t.coef
				if (step == 1 || step == -1) && can(t.c, int(step)) {
					opts = append(opts, option{t.c, int(step)})
				}
			}
			if first || len(opts) < len(best) || len(opts) == len(best) && r < bestR {
				best, first, bestR = opts, false, r
			}
			if len(best) == 0 {
				return false
			}
		}
		sort.Slice(best, func(i, j int) bool {
			a, b := best[i].u, best[j].u
			if rank(a) != rank(b) {
				return rank(a) < rank(b)
			}
			// Unknowns in fewer relations end a move sooner; of shown
			// counts, hiding the smaller costs the reader less.
			if rank(a) > 0 && l.value[a] != l.value[b] {
				return l.value[a] < l.value[b]
			}
			if len(l.of[a]) != len(l.of[b]) {
				return len(l.of[a]) < len(l.of[b])
			}
			return l.value[a] < l.value[b] || l.value[a] == l.value[b] && a < b
		})
		for _, o := range best {
			set(o.u, o.step)
			if search(depth + 1) {
				return true
			}
			unset(o.u)
		}
		return false
	}
	// Either way; with shown counts, the way through fewer and smaller.
	found, best := false, []Cell(nil)
	weight := func(cs []Cell) (w int) {
		for _, u := range cs {
			w += l.value[u]
		}
		return w
	}
	for _, step := range []int{1, -1} {
		reset()
		if !can(c, step) {
			continue
		}
		set(c, step)
		if !search(0) {
			continue
		}
		var through []Cell
		for _, u := range moved {
			if !l.unknown(u) {
				through = append(through, u)
			}
		}
		slices.Sort(through)
		if !found || len(through) < len(best) || len(through) == len(best) && weight(through) < weight(best) {
			found, best = true, through
		}
		if len(best) == 0 {
			break
		}
	}
	return found, best
}
