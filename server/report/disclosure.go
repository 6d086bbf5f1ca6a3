package report

import (
	"math"
	"sort"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/optimize/convex/lp"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// Disclosure control is complementary cell suppression (the Eurostat and
// ONS handbooks of statistical disclosure control): counts from 1 to the
// threshold minus one are hidden (primary), and further counts are hidden
// (complementary) until no hidden count, and no small group a report does
// not show but whose size follows from what it shows, is determined by the
// figures shown. What "determined" means is an attacker's best: the linear
// relations between the figures (a Ledger holds them), every count a whole
// number of at least 0, a SMALL count from 1 to the threshold minus one;
// the range of each unknown is found by linear programming, and a range
// narrower than one is a disclosure.

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
	// headline counts are hidden to protect another only when nothing else
	// will do: the referrals counted, the pairs of a measure.
	headline map[Cell]bool
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
	case l.value[c] > 0 && l.value[c] < l.k:
		l.hidden[c] = pb.Suppression_SUPPRESSION_SMALL
	case withGroup || l.hidden[c] == 0:
		l.hidden[c] = pb.Suppression_SUPPRESSION_PROTECTS
	}
}

// Protect hides the small counts and then, one at a time, the smallest
// shown count that shares a relation with a given-away cell, until none is
// given away; it writes the result into the counts.
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
	clean := make([]bool, len(l.value)) // in a component found protected
	for {
		c, ok := l.givenAway(clean)
		if !ok {
			break
		}
		next, ok := l.complement(c)
		if !ok {
			break
		}
		l.hide(next, false)
		for _, u := range l.component(next) {
			clean[u] = false
		}
	}
	for c, cnt := range l.count {
		if cnt != nil && l.hidden[c] != 0 {
			cnt.Value, cnt.Suppressed, cnt.Suppression = 0, true, l.hidden[c]
		}
	}
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

// complement picks the count to hide next for a given-away cell c: of the
// shown counts in a relation with c (or, when there are none, with another
// unknown of its component), the smallest whose hiding protects c, or the
// smallest when none does alone.
func (l *Ledger) complement(c Cell) (Cell, bool) {
	for _, scope := range [][]Cell{{c}, l.component(c)} {
		var cands []Cell
		seen := map[Cell]bool{}
		for _, u := range scope {
			for _, r := range l.of[u] {
				for _, t := range l.rels[r] {
					if l.count[t.c] != nil && l.hidden[t.c] == 0 && !seen[t.c] {
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
			_, still := l.determinedCell(c)
			l.hidden[cand] = 0
			if !still {
				return cand, true
			}
		}
		return cands[0], true
	}
	return 0, false
}

// determinedCell reports whether c's component gives c away.
func (l *Ledger) determinedCell(c Cell) (Cell, bool) {
	comp := l.component(c)
	sys, idx := l.system(comp)
	lo, hi := sys.Range(idx[c])
	return c, hi-lo < 0.5
}

// component is the unknowns linked to c through relations.
func (l *Ledger) component(c Cell) []Cell {
	seen := map[Cell]bool{c: true}
	out := []Cell{c}
	for i := 0; i < len(out); i++ {
		for _, r := range l.of[out[i]] {
			for _, t := range l.rels[r] {
				if l.unknown(t.c) && !seen[t.c] {
					seen[t.c] = true
					out = append(out, t.c)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// givenAway returns the first sensitive cell whose range, given what is
// shown, is narrower than one.
func (l *Ledger) givenAway(clean []bool) (Cell, bool) {
	for c := range l.value {
		if clean[c] || !l.unknown(Cell(c)) {
			continue
		}
		comp := l.component(Cell(c))
		if bad, ok := l.determined(comp); ok {
			return bad, true
		}
		for _, u := range comp {
			clean[u] = true
		}
	}
	return 0, false
}

// determined returns the first sensitive cell of a component whose range
// is narrower than one.
func (l *Ledger) determined(comp []Cell) (Cell, bool) {
	var sens []Cell
	for _, c := range comp {
		if l.sensitive(c) {
			sens = append(sens, c)
		}
	}
	if len(sens) == 0 {
		return 0, false
	}
	sys, idx := l.system(comp)
	for _, c := range sens {
		lo, hi := sys.Range(idx[c])
		if hi-lo < 0.5 {
			return c, true
		}
	}
	return 0, false
}

// system is what a reader knows of the unknowns of a component: the
// relations they are in, with the shown counts as constants, and their
// bounds.
func (l *Ledger) system(comp []Cell) (System, map[Cell]int) {
	sys := System{}
	idx := map[Cell]int{}
	for i, c := range comp {
		idx[c] = i
		lo, hi := 0.0, math.Inf(1)
		if l.hidden[c] == pb.Suppression_SUPPRESSION_SMALL {
			lo, hi = 1, float64(l.k-1)
		}
		sys.Lower, sys.Upper = append(sys.Lower, lo), append(sys.Upper, hi)
	}
	done := map[int]bool{}
	for _, c := range comp {
		for _, ri := range l.of[c] {
			if done[ri] {
				continue
			}
			done[ri] = true
			row, rhs := make([]float64, len(comp)), 0.0
			for _, t := range l.rels[ri] {
				if i, ok := idx[t.c]; ok {
					row[i] += t.coef
				} else {
					rhs -= t.coef * float64(l.value[t.c])
				}
			}
			sys.Rows, sys.RHS = append(sys.Rows, row), append(sys.RHS, rhs)
		}
	}
	return sys, idx
}

// System is linear equalities Rows·x = RHS on unknowns x with bounds
// Lower <= x <= Upper (Upper may be +Inf).
type System struct {
	Rows         [][]float64
	RHS          []float64
	Lower, Upper []float64
}

// Range returns the least and greatest value of unknown i over the
// system's solutions (real-valued: the relations are sums, so the ends are
// whole numbers), +Inf for a greatest without bound. An infeasible system
// (which consistent figures never are) is reported as a range of zero.
func (s System) Range(i int) (lo, hi float64) {
	lo, okLo := s.optimum(i, 1)
	hi, okHi := s.optimum(i, -1)
	if !okLo || !okHi {
		return 0, 0
	}
	return lo, hi
}

// optimum minimises sign·x_i; for -1 it returns the maximum.
func (s System) optimum(i int, sign float64) (float64, bool) {
	n := len(s.Lower)
	// Standard form: y = x - Lower >= 0; a slack per finite upper bound.
	var slack []int
	for j := range n {
		if !math.IsInf(s.Upper[j], 1) {
			slack = append(slack, j)
		}
	}
	cols := n + len(slack)
	var rows [][]float64
	var rhs []float64
	for r, row := range s.Rows {
		full := make([]float64, cols)
		b := s.RHS[r]
		for j, a := range row {
			full[j] = a
			b -= a * s.Lower[j]
		}
		rows, rhs = append(rows, full), append(rhs, b)
	}
	for k, j := range slack {
		full := make([]float64, cols)
		full[j], full[n+k] = 1, 1
		rows, rhs = append(rows, full), append(rhs, s.Upper[j]-s.Lower[j])
	}
	rows, rhs = independent(rows, rhs)
	// A column in no row is free within its bounds.
	used := make([]bool, cols)
	for _, row := range rows {
		for j, a := range row {
			if a != 0 {
				used[j] = true
			}
		}
	}
	if !used[i] {
		if sign > 0 {
			return s.Lower[i], true
		}
		return s.Upper[i], true
	}
	var keep []int
	for j := range cols {
		if used[j] {
			keep = append(keep, j)
		}
	}
	A := mat.NewDense(len(rows), len(keep), nil)
	c := make([]float64, len(keep))
	for r, row := range rows {
		for k, j := range keep {
			A.Set(r, k, row[j])
		}
	}
	for k, j := range keep {
		if j == i {
			c[k] = sign
		}
	}
	if len(keep) == len(rows) {
		// As many independent rows as columns: one solution.
		x, ok := solve(A, rhs)
		if !ok {
			return 0, false
		}
		for k, j := range keep {
			if j == i {
				return x[k] + s.Lower[i], true
			}
		}
	}
	f, _, err := lp.Simplex(c, A, rhs, 1e-9, nil)
	switch err {
	case nil:
		return sign*f + s.Lower[i], true
	case lp.ErrUnbounded:
		return math.Inf(int(-sign)), true
	}
	return 0, false
}

// solve solves a square or tall system of full column rank.
func solve(A *mat.Dense, b []float64) ([]float64, bool) {
	var x mat.VecDense
	if err := x.SolveVec(A, mat.NewVecDense(len(b), b)); err != nil {
		return nil, false
	}
	return x.RawVector().Data, true
}

// independent keeps a largest set of linearly independent rows (Gaussian
// elimination with partial pivoting), dropping the rest, which the kept
// ones imply when the system is consistent.
func independent(rows [][]float64, rhs []float64) ([][]float64, []float64) {
	if len(rows) == 0 {
		return rows, rhs
	}
	cols := len(rows[0])
	work := make([][]float64, len(rows))
	for r := range rows {
		work[r] = append([]float64(nil), rows[r]...)
	}
	var keep []int
	taken := make([]bool, len(rows))
	for col := 0; col < cols; col++ {
		piv, best := -1, 1e-9
		for r := range work {
			if !taken[r] && math.Abs(work[r][col]) > best {
				piv, best = r, math.Abs(work[r][col])
			}
		}
		if piv < 0 {
			continue
		}
		taken[piv] = true
		keep = append(keep, piv)
		for r := range work {
			if r != piv && !taken[r] && work[r][col] != 0 {
				f := work[r][col] / work[piv][col]
				for j := col; j < cols; j++ {
					work[r][j] -= f * work[piv][j]
				}
			}
		}
	}
	sort.Ints(keep)
	outR, outB := make([][]float64, len(keep)), make([]float64, len(keep))
	for i, r := range keep {
		outR[i], outB[i] = rows[r], rhs[r]
	}
	return outR, outB
}
