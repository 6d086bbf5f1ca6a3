package filter_test

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/social-prescribing/exchange/server/rules/filter"
)

func TestParse(t *testing.T) {
	yesNo := func(v string) error {
		if v != "true" && v != "false" {
			return errors.New("must be true or false")
		}
		return nil
	}
	fields := []filter.Field{{Name: "state"}, {Name: "recipient"}, {Name: "overdue", Check: yesNo}}
	for _, tc := range []struct {
		in      string
		want    filter.Terms
		wantErr string
	}{
		{"", filter.Terms{}, ""},
		{"   ", filter.Terms{}, ""},
		{"state = REQUESTED", filter.Terms{"state": "REQUESTED"}, ""},
		{"state=REQUESTED", filter.Terms{"state": "REQUESTED"}, ""},
		{`state = "REQUESTED" AND recipient = "organizations/a"`, filter.Terms{"state": "REQUESTED", "recipient": "organizations/a"}, ""},
		{`recipient = "a AND b"`, filter.Terms{"recipient": "a AND b"}, ""},
		{`recipient = "say \"hi\" \\ ok"`, filter.Terms{"recipient": `say "hi" \ ok`}, ""},
		{"  state = REQUESTED  AND  overdue = true ", filter.Terms{"state": "REQUESTED", "overdue": "true"}, ""},
		{"colour = red", nil, `cannot filter on "colour"; fields: state, recipient, overdue`},
		{"state", nil, `"state" must be followed by = and a value`},
		{"state =", nil, "state: expected a value"},
		{`state = ""`, nil, "state: an empty value"},
		{`state = "open`, nil, "state: a quoted value is not closed"},
		{"state = A and recipient = b", nil, "terms are joined by AND"},
		{"state = A OR state = B", nil, "terms are joined by AND"},
		{"state = A AND state = B", nil, `"state" appears twice`},
		{"state = A AND", nil, "expected a field name"},
		{"overdue = maybe", nil, "overdue: must be true or false"},
		{"= x", nil, "expected a field name at 0"},
		{"state != A", nil, `"state" must be followed by =`},
	} {
		got, err := filter.Parse(tc.in, fields...)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Parse(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.wantErr)
			}
		case err != nil || !maps.Equal(got, tc.want):
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"state = A AND recipient = \"x y\"", `a = "\"`, "a=b AND", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		terms, err := filter.Parse(s, filter.Field{Name: "a"}, filter.Field{Name: "state"}, filter.Field{Name: "recipient"})
		if err == nil {
			for k, v := range terms {
				if v == "" || (k != "a" && k != "state" && k != "recipient") {
					t.Fatalf("Parse(%q) = %v", s, terms)
				}
			}
		}
	})
}
