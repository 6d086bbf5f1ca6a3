package report

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// expected is testdata/expected.json, written by testdata/expected.py with
// scipy.
type expected struct {
	Paired map[string]struct {
		B              []float64 `json:"baseline"`
		F              []float64 `json:"follow_up"`
		HigherIsBetter bool      `json:"higher_is_better"`
		Want           map[string]*float64
	}
	TwoSample map[string]struct {
		A, B []float64
		Want map[string]*float64
	} `json:"two_sample"`
	Percentiles map[string]struct {
		Values   []float64
		P50, P90 *float64
	}
}

func loadExpected(t *testing.T) expected {
	t.Helper()
	b, err := os.ReadFile("testdata/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var e expected
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// same reports whether got agrees with want to 6 significant figures; a
// nil want (scipy's nan) must be NaN.
func same(got float64, want *float64) bool {
	if want == nil {
		return math.IsNaN(got)
	}
	if *want == 0 {
		return math.Abs(got) < 1e-12
	}
	return math.Abs(got-*want) <= 5e-7*math.Abs(*want)
}

func TestPairedAgainstScipy(t *testing.T) {
	for name, c := range loadExpected(t).Paired {
		p := PairedTest(c.B, c.F, c.HigherIsBetter)
		for field, got := range map[string]float64{
			"baseline_mean": p.BaselineMean, "baseline_sd": p.BaselineSD, "follow_up_mean": p.FollowUpMean,
			"follow_up_sd": p.FollowUpSD, "change_mean": p.ChangeMean, "change_sd": p.ChangeSD,
			"ci_low": p.CILow, "ci_high": p.CIHigh, "t": p.T, "p": p.P, "d": p.D, "df": float64(p.DF), "n": float64(p.N),
			"improved": float64(p.Improved), "unchanged": float64(p.Unchanged), "worse": float64(p.Worse),
		} {
			if !same(got, c.Want[field]) {
				t.Errorf("%s: %s = %.10g, scipy %v", name, field, got, show(c.Want[field]))
			}
		}
	}
}

func TestPooledAgainstScipy(t *testing.T) {
	for name, c := range loadExpected(t).TwoSample {
		r := PooledTest(c.A, c.B)
		for field, got := range map[string]float64{"difference": r.Difference, "t": r.T, "p": r.P, "df": float64(r.DF)} {
			if !same(got, c.Want[field]) {
				t.Errorf("%s: %s = %.10g, scipy %v", name, field, got, show(c.Want[field]))
			}
		}
	}
}

func TestPercentileAgainstNumpy(t *testing.T) {
	for name, c := range loadExpected(t).Percentiles {
		if got := Percentile(c.Values, 50); !same(got, c.P50) {
			t.Errorf("%s: median %g, numpy %v", name, got, show(c.P50))
		}
		if got := Percentile(c.Values, 90); !same(got, c.P90) {
			t.Errorf("%s: p90 %g, numpy %v", name, got, show(c.P90))
		}
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("the percentile of nothing is a number")
	}
}

func show(f *float64) any {
	if f == nil {
		return "nan"
	}
	return *f
}

// TestExpectedIsScipys runs testdata/expected.py and checks that the
// committed expected.json is what scipy says today. It needs python3 with
// scipy (Debian: python3-scipy), which CI installs.
func TestExpectedIsScipys(t *testing.T) {
	python := ""
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(p, "-c", "import scipy").Run() == nil {
			python = p
			break
		}
	}
	if python == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI needs python3 with scipy (apt-get install python3-scipy)")
		}
		t.Skip("python3 with scipy is not installed (apt-get install python3-scipy); the committed expected.json is used as is")
	}
	committed, err := os.ReadFile("testdata/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(t.TempDir(), "expected.json")
	if out, err := exec.Command(python, "testdata/expected.py", fresh).CombinedOutput(); err != nil {
		t.Fatalf("expected.py: %v\n%s", err, out)
	}
	now, err := os.ReadFile(fresh)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	json.Unmarshal(committed, &a)
	json.Unmarshal(now, &b)
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		t.Errorf("testdata/expected.json is not what scipy computes now: run python3 server/rules/report/testdata/expected.py and commit it")
	}
}
