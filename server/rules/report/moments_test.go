package report

import (
	"testing"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// TestWithheldStatisticsAreNotAlone: five men, four unchanged and one up a
// point, have their statistics withheld; were the women's and everyone's
// shown, the men's sum and sum of squares of change would follow by
// difference (1 and 1: one up a point), and with them their counts. So a
// second group of the relation is withheld with them.
func TestWithheldStatisticsAreNotAlone(t *testing.T) {
	var refs []Referral
	for i, d := range []int32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10} {
		refs = append(refs, ref(i, 30, 30+d)) // women
	}
	for i, d := range []int32{0, 0, 0, 0, 1} {
		r := ref(10+i, 30, 30+d)
		r.R.Person.Sex = pb.Sex_SEX_MALE
		refs = append(refs, r)
	}
	_, o := Build(refs, Context{Threshold: 5, Now: day0.AddDate(0, 3, 0), Filter: &pb.ReportFilter{}})
	m := o.Measures[0]
	all, women, men := m.All, m.Comparisons[0].A, m.Comparisons[0].B
	if men.ChangeMean != nil {
		t.Fatalf("the men's statistics are shown: %v", men)
	}
	if all.ChangeMean != nil && women.ChangeMean != nil {
		t.Errorf("everyone's (%v) and the women's (%v) means are shown beside the men's withheld one", *all.ChangeMean, *women.ChangeMean)
	}
	if m.Comparisons[0].Difference != nil {
		t.Errorf("a difference in change shown for a withheld group")
	}
}

// TestStatisticsWithAHiddenSplitAreWithheld: ten pairs, five unchanged,
// four up a point and one down: with n and the unchanged shown, the mean
// (0.3) and SD (0.675) would leave one solution for the hidden improved (4)
// and worse (1), so the group's statistics are withheld.
func TestStatisticsWithAHiddenSplitAreWithheld(t *testing.T) {
	var refs []Referral
	for i, d := range []int32{0, 0, 0, 0, 0, 1, 1, 1, 1, -1} {
		refs = append(refs, ref(i, 30, 30+d))
	}
	_, o := Build(refs, Context{Threshold: 5, Now: day0.AddDate(0, 3, 0), Filter: &pb.ReportFilter{}})
	a := o.Measures[0].All
	if !a.Worse.Suppressed || !a.Improved.Suppressed {
		t.Fatalf("improved %v and worse %v should be hidden", a.Improved, a.Worse)
	}
	if a.ChangeMean != nil || a.ChangeSd != nil || a.BaselineMean != nil {
		t.Errorf("statistics shown beside hidden counts: %v", a)
	}
}
