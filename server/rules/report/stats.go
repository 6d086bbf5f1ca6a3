// Package report computes the exchange's activity and outcome reports from
// referrals and their outcome measures: the statistics (paired and pooled
// two-sample t tests, confidence intervals, effect sizes, percentiles), the
// breakdowns, and the suppression of small numbers. It reads nothing itself:
// server/api collects the referrals a caller may count and calls it.
package report

import (
	"math"
	"slices"

	"gonum.org/v1/gonum/stat/distuv"
)

// Paired is the statistics of n pairs (baseline, follow-up). Values that are
// undefined are NaN, as scipy has them: the SDs with n < 2; the confidence
// interval, t, p and d with n < 2 or a zero SD of change.
type Paired struct {
	N                          int
	BaselineMean, BaselineSD   float64
	FollowUpMean, FollowUpSD   float64
	ChangeMean, ChangeSD       float64
	CILow, CIHigh              float64 // 95% confidence interval of the mean change
	T                          float64 // paired t, as scipy.stats.ttest_rel
	DF                         int     // n - 1
	P                          float64 // two-sided
	D                          float64 // Cohen's d: mean change / SD of change
	DLow, DHigh                float64 // its 95% confidence interval (normal approximation)
	Improved, Unchanged, Worse int
}

// PairedTest computes Paired for baseline[i] and followUp[i]. Improvement
// is an increase when higherIsBetter, else a decrease.
func PairedTest(baseline, followUp []float64, higherIsBetter bool) Paired {
	n := len(baseline)
	change := make([]float64, n)
	var improved, unchanged, worse int
	for i := range baseline {
		change[i] = followUp[i] - baseline[i]
		better := change[i] > 0
		if !higherIsBetter {
			better = change[i] < 0
		}
		switch {
		case change[i] == 0:
			unchanged++
		case better:
			improved++
		default:
			worse++
		}
	}
	bm, bsd := MeanSD(baseline)
	fm, fsd := MeanSD(followUp)
	cm, csd := MeanSD(change)
	return pairedOf(n, bm, bsd, fm, fsd, cm, csd, improved, unchanged, worse)
}

// pairedOf is Paired from the means and SDs of n pairs (PairedTest; the
// reports' Moments.Paired).
func pairedOf(n int, bm, bsd, fm, fsd, cm, csd float64, improved, unchanged, worse int) Paired {
	p := Paired{N: n, DF: n - 1, Improved: improved, Unchanged: unchanged, Worse: worse}
	p.BaselineMean, p.BaselineSD = bm, bsd
	p.FollowUpMean, p.FollowUpSD = fm, fsd
	p.ChangeMean, p.ChangeSD = cm, csd
	p.CILow, p.CIHigh, p.T, p.P, p.D = math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN()
	p.DLow, p.DHigh = math.NaN(), math.NaN()
	if n < 2 {
		return p
	}
	if p.ChangeSD > 0 {
		se := p.ChangeSD / math.Sqrt(float64(n))
		half := tQuantile(0.975, float64(n-1)) * se
		p.CILow, p.CIHigh = p.ChangeMean-half, p.ChangeMean+half
		p.T = p.ChangeMean / se
		p.P = twoSided(p.T, float64(n-1))
		p.D = p.ChangeMean / p.ChangeSD
		// Hedges and Olkin (1985): the standard error of d is
		// sqrt(1/n + d^2 / (2n)).
		dse := math.Sqrt(1/float64(n) + p.D*p.D/(2*float64(n)))
		p.DLow, p.DHigh = p.D-1.959963984540054*dse, p.D+1.959963984540054*dse
	}
	return p
}

// Pooled is the two-sample t test of a difference in means with pooled
// variance.
type Pooled struct {
	Difference float64 // mean(a) - mean(b)
	T          float64
	DF         int // len(a) + len(b) - 2
	P          float64
}

// PooledTest compares the means of a and b as scipy.stats.ttest_ind does
// with equal_var=True. T and P are NaN when undefined, as in scipy: a group
// with fewer than 2 values, or no variance in either group.
func PooledTest(a, b []float64) Pooled {
	ma, sa := MeanSD(a)
	mb, sb := MeanSD(b)
	return pooledOf(ma, sa, len(a), mb, sb, len(b))
}

// pooledOf is Pooled from the means, SDs and sizes of two groups.
func pooledOf(ma, sa float64, la int, mb, sb float64, lb int) Pooled {
	na, nb := float64(la), float64(lb)
	r := Pooled{Difference: ma - mb, DF: la + lb - 2, T: math.NaN(), P: math.NaN()}
	if la < 2 || lb < 2 {
		return r
	}
	pooled := (sa*sa*(na-1) + sb*sb*(nb-1)) / float64(r.DF)
	se := math.Sqrt(pooled * (1/na + 1/nb))
	if se == 0 {
		return r
	}
	r.T = r.Difference / se
	r.P = twoSided(r.T, float64(r.DF))
	return r
}

// MeanSD returns the mean and the sample standard deviation (n - 1) of xs;
// the SD is NaN for fewer than 2 values, both for none.
func MeanSD(xs []float64) (mean, sd float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN()
	}
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	if len(xs) < 2 {
		return mean, math.NaN()
	}
	ss := 0.0
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(xs)-1))
}

// Percentile returns the q-th percentile (0-100) of xs, interpolating
// linearly between the nearest ranks as numpy.percentile does by default;
// NaN for none.
func Percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := q / 100 * float64(len(s)-1)
	lo := int(math.Floor(pos))
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[lo] + (pos-float64(lo))*(s[lo+1]-s[lo])
}

func tQuantile(p, df float64) float64 {
	return distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}.Quantile(p)
}

// twoSided is the two-sided p value of t with df degrees of freedom.
func twoSided(t, df float64) float64 {
	return 2 * distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}.CDF(-math.Abs(t))
}
