package report

import (
	"math"
	"sort"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/optimize/convex/lp"
)

// The disclosure test's judge: linear programming over real values, an
// attacker's best (server/report's Protect proves each cell with whole-step
// moves instead, which this confirms).

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
	cost := make([]float64, len(s.Lower))
	cost[i] = sign
	x, err := s.Minimise(cost)
	switch err {
	case nil:
		return x[i], true
	case lp.ErrUnbounded:
		return math.Inf(int(-sign)), true
	}
	return 0, false
}

// Minimise returns a solution of least cost·x, lp.ErrUnbounded when there
// is no least, or another error when there is no solution.
func (s System) Minimise(cost []float64) ([]float64, error) {
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
	x := append([]float64(nil), s.Lower...)
	// A column in no row is free within its bounds.
	used := make([]bool, cols)
	for _, row := range rows {
		for j, a := range row {
			if a != 0 {
				used[j] = true
			}
		}
	}
	for j := range n {
		if !used[j] && cost[j] < 0 {
			if math.IsInf(s.Upper[j], 1) {
				return nil, lp.ErrUnbounded
			}
			x[j] = s.Upper[j]
		}
	}
	var keep []int
	for j := range cols {
		if used[j] {
			keep = append(keep, j)
		}
	}
	if len(keep) == 0 {
		return x, nil
	}
	A := mat.NewDense(len(rows), len(keep), nil)
	c := make([]float64, len(keep))
	for r, row := range rows {
		for k, j := range keep {
			A.Set(r, k, row[j])
		}
	}
	for k, j := range keep {
		if j < n {
			c[k] = cost[j]
		}
	}
	var y []float64
	if len(keep) == len(rows) {
		// As many independent rows as columns: one solution.
		var ok bool
		if y, ok = solve(A, rhs); !ok {
			return nil, lp.ErrInfeasible
		}
	} else {
		var err error
		if _, y, err = lp.Simplex(c, A, rhs, 1e-9, nil); err != nil {
			return nil, err
		}
	}
	for k, j := range keep {
		if j < n {
			x[j] = y[k] + s.Lower[j]
		}
	}
	return x, nil
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
