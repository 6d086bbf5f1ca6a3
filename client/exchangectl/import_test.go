package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// hsdsFixture writes an HSDS tabular export: a datapackage.json naming the
// files, orgs organisations with svcs services between them, phones,
// taxonomy terms linked to services, and malformed rows. It returns the
// directory and the lines of services.csv that must be reported.
func hsdsFixture(t *testing.T, orgs, svcs int) (dir string, badLines map[int]string) {
	t.Helper()
	dir = t.TempDir()
	write := func(name string, header []string, rows [][]string, raw ...string) {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		w := csv.NewWriter(f)
		w.Write(header)
		w.WriteAll(rows)
		for _, r := range raw {
			fmt.Fprintln(f, r)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// The datapackage names the service file differently from the default,
	// as a publisher may.
	dp := `{"name": "greater-manchester", "profile": "tabular-data-package", "resources": [
	  {"name": "organization", "path": "organizations.csv"},
	  {"name": "service", "path": "gm_services.csv"},
	  {"name": "phone", "path": "phones.csv"},
	  {"name": "taxonomy_term", "path": "taxonomy_terms.csv"},
	  {"name": "attribute", "path": "attributes.csv"}]}`
	if err := os.WriteFile(filepath.Join(dir, "datapackage.json"), []byte(dp), 0o600); err != nil {
		t.Fatal(err)
	}
	var orgRows, phoneRows, serviceRows, attrRows [][]string
	for i := range orgs {
		// Two organisations share each name, so ids must be made unique.
		orgRows = append(orgRows, []string{fmt.Sprintf("0a6e%04d-org", i), fmt.Sprintf("Community Group %d", i/2),
			"A group", fmt.Sprintf("hello%d@group.example", i), "https://group.example"})
		phoneRows = append(phoneRows, []string{fmt.Sprintf("ph-o%d", i), fmt.Sprintf("0a6e%04d-org", i), "", "0161 496 0000"})
	}
	write("organizations.csv", []string{"id", "name", "description", "email", "website"}, orgRows,
		`,Nameless Trust,no id,,`)
	terms := [][]string{{"t1", "PHYSICAL_ACTIVITY", "Physical activity"}, {"t2", "", "Social isolation"}, {"t3", "X99", "Knitting"}}
	write("taxonomy_terms.csv", []string{"id", "code", "name"}, terms)
	for i := range svcs {
		id := fmt.Sprintf("svc-%05d", i)
		serviceRows = append(serviceRows, []string{id, fmt.Sprintf("0a6e%04d-org", i%orgs), fmt.Sprintf("Walk %d", i),
			"Weekly walks", "https://walks.example", "", "active", "18", "", "Adults"})
		attrRows = append(attrRows, []string{"a" + id, id, "t1", "service"}, []string{"b" + id, id, "t3", "service"})
		if i%2 == 0 {
			attrRows = append(attrRows, []string{"c" + id, id, "t2", "service"})
		}
	}
	header := []string{"id", "organization_id", "name", "description", "url", "email", "status", "minimum_age", "maximum_age", "eligibility_description"}
	first := len(serviceRows) + 2 // the line after the good rows
	badLines = map[int]string{
		first:     "organization_id", // unknown organisation
		first + 1: "age",             // bad age
		first + 2: "wrong number of fields",
		first + 3: "id is empty",
		first + 4: "contact.email", // refused by the exchange
		first + 5: "name is empty",
	}
	write("gm_services.csv", header, serviceRows,
		`svc-x1,no-such-org,Lost walk,,,,active,,,`,
		`svc-x2,0a6e0000-org,Old walk,,,,active,ninety,,`,
		`svc-x3,0a6e0000-org,Short row`,
		`,0a6e0000-org,No id,,,,active,,,`,
		`svc-x5,0a6e0000-org,Bad email,,,not-an-email,active,,,`,
		`svc-x6,0a6e0000-org,,,,,active,,,`,
		`svc-x7,0a6e0000-org,Closed walk,,,,defunct,,,`)
	write("attributes.csv", []string{"id", "link_id", "taxonomy_term_id", "link_entity"}, attrRows)
	write("phones.csv", []string{"id", "organization_id", "service_id", "number"}, phoneRows)
	return dir, badLines
}

var countsRE = regexp.MustCompile(`(?m)^(organizations|services): (\d+) created, (\d+) updated, (\d+) unchanged`)

// counts reads "created, updated, unchanged" for organisations and services.
func counts(t *testing.T, out string) [2][3]string {
	t.Helper()
	var c [2][3]string
	m := countsRE.FindAllStringSubmatch(out, -1)
	if len(m) != 2 {
		t.Fatalf("import printed:\n%s", out)
	}
	for i := range m {
		copy(c[i][:], m[i][2:])
	}
	return c
}

// TestDirectoryImport loads a generated HSDS export of 220 services with
// malformed rows, twice: the first run creates everything well-formed and
// reports every bad row with its line; the second creates nothing; a
// changed row is then updated alone.
func TestDirectoryImport(t *testing.T) {
	x := exchangetest.Start(t)
	const orgs, svcs = 60, 220
	dir, bad := hsdsFixture(t, orgs, svcs)

	r := ctl(t, x, "operator", "directory", "import", filepath.Join(dir, "datapackage.json"))
	if r.code != exitRefused {
		t.Fatalf("first import: exit %d, want 1 for the skipped rows\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := counts(t, r.stdout); got != [2][3]string{{"60", "0", "0"}, {"220", "0", "0"}} {
		t.Errorf("first import: %v\n%s", got, r.stdout)
	}
	if !strings.Contains(r.stdout, "1 not active") || !strings.Contains(r.stdout, "skipped: 7") {
		t.Errorf("first import summary:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "skipped organizations.csv:") || !strings.Contains(r.stderr, "imported 100 of 281") ||
		!strings.Contains(r.stderr, "imported 281 of 281") {
		t.Errorf("first import stderr:\n%s", r.stderr)
	}
	for line, why := range bad {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^skipped gm_services\.csv:%d: .*%s`, line, regexp.QuoteMeta(why)))
		if !re.MatchString(r.stderr) {
			t.Errorf("line %d (%s) not reported:\n%s", line, why, r.stderr)
		}
	}

	// What landed: every service, with its HSDS id, categories from the
	// taxonomy (the unknown term ignored), eligibility and phone.
	var l pb.ListServicesResponse
	if err := protojson.Unmarshal([]byte(ok(t, x, "operator", "service", "list", "--all", "--page-size", "1000", "-o", "json")), &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Services) != svcs {
		t.Fatalf("%d services in the exchange, want %d", len(l.Services), svcs)
	}
	byHSDS := map[string]*pb.Service{}
	for _, s := range l.Services {
		byHSDS[s.HsdsId] = s
	}
	s0, s1 := byHSDS["svc-00000"], byHSDS["svc-00001"]
	if s0 == nil || s1 == nil || len(s0.Categories) != 2 || s0.Categories[0] != pb.Category_CATEGORY_PHYSICAL_ACTIVITY ||
		s0.Categories[1] != pb.Category_CATEGORY_SOCIAL_ISOLATION || len(s1.Categories) != 1 || s0.Eligibility.GetMinAge() != 18 {
		t.Fatalf("imported services: %v / %v", s0, s1)
	}
	var ol pb.ListOrganizationsResponse
	protojson.Unmarshal([]byte(ok(t, x, "operator", "org", "list", "--all", "-o", "json")), &ol)
	names := map[string]bool{}
	for _, o := range ol.Organizations {
		if o.HsdsId != "" {
			names[o.Name] = true
			if o.Kind != pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION || o.Contact.GetPhone() != "0161 496 0000" {
				t.Errorf("imported organisation %v", o)
			}
		}
	}
	if len(names) != orgs || !names["organizations/community-group-0"] || !names["organizations/community-group-0-2"] {
		t.Errorf("organisation names: %v", names)
	}

	// Again: nothing created, nothing updated.
	r = ctl(t, x, "operator", "directory", "import", dir)
	if got := counts(t, r.stdout); got != [2][3]string{{"0", "0", "60"}, {"0", "0", "220"}} {
		t.Errorf("second import: %v\n%s\n%s", got, r.stdout, r.stderr)
	}

	// On a terminal, a progress bar instead of lines.
	var out, errb bytes.Buffer
	vars := map[string]string{"EXCHANGE_ADDR": x.Addr, "EXCHANGE_TOKEN": x.Keys["operator"], "EXCHANGE_CONFIG": noConfig(t)}
	run(context.Background(), []string{"directory", "import", dir}, env{stdout: &out, stderr: &errb, tty: true, getenv: func(k string) string { return vars[k] }})
	if !strings.Contains(errb.String(), "importing") || strings.Contains(errb.String(), "imported 100 of") {
		t.Errorf("import on a terminal wrote:\n%q", errb.String())
	}

	// One description changes in the export: one update, after a dry run
	// that changes nothing. (The dry run counts the row with the bad email as
	// created: only the exchange checks email addresses.)
	path := filepath.Join(dir, "gm_services.csv")
	b, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(b), "svc-00007,0a6e0007-org,Walk 7,Weekly walks", "svc-00007,0a6e0007-org,Walk 7,Fortnightly walks", 1)), 0o600)
	r = ctl(t, x, "operator", "directory", "import", dir, "--dry-run")
	if got := counts(t, r.stdout); got != [2][3]string{{"0", "0", "60"}, {"1", "1", "219"}} || !strings.Contains(r.stdout, "dry run") {
		t.Errorf("dry run: %v\n%s", got, r.stdout)
	}
	r = ctl(t, x, "operator", "directory", "import", dir)
	if got := counts(t, r.stdout); got != [2][3]string{{"0", "0", "60"}, {"0", "1", "219"}} {
		t.Errorf("import after a change: %v\n%s", got, r.stdout)
	}
	if s := ok(t, x, "operator", "service", "get", byHSDS["svc-00007"].Name, "-o", "json"); !strings.Contains(s, "Fortnightly") {
		t.Errorf("the change did not land: %s", s)
	}

	// Only the operator may import: a practice's changes are refused.
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	b, _ = os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(b), "Walk 8,Weekly walks", "Walk 8,Hijacked walks", 1)), 0o600)
	if r := ctl(t, x, "practice", "directory", "import", dir); r.code != exitRefused || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
		t.Errorf("import by a practice: exit %d\n%s", r.code, r.stderr)
	}
}
