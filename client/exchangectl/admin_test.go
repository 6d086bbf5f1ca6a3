package main

import (
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage/bolt"
)

// TestAdminCommands: the operator reads the audit log, erases a person
// and takes a backup; anyone else is refused.
func TestAdminCommands(t *testing.T) {
	x := exchangetest.Start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	c := x.ConsentFor("practice", exchangetest.AdaNHS, nil)
	r, err := x.Refer("practice", "r1", walks, exchangetest.AdaNHS, c.Name)
	if err != nil {
		t.Fatal(err)
	}

	out := ok(t, x, "operator", "audit", "list", "--resource", r.Name)
	for _, want := range []string{"SEQUENCE", "organizations/practice", "CreateReferral", "OK", r.Name} {
		if !strings.Contains(out, want) {
			t.Errorf("audit list lacks %q:\n%s", want, out)
		}
	}
	if out := ok(t, x, "operator", "audit", "list", "--organization", "group", "--since", "-1h", "--all"); strings.Contains(out, "organizations/practice") {
		t.Errorf("--organization group shows the practice:\n%s", out)
	}
	fails(t, x, "group", exitRefused, []string{"PERMISSION_DENIED", "NOT_ALLOWED"}, "audit", "list")
	fails(t, x, "operator", exitUsage, []string{"--since"}, "audit", "list", "--since", "yesterday")

	out = ok(t, x, "operator", "person", "erase", "--nhs-number", exchangetest.AdaNHS, "--request-id", "erase-1")
	if !strings.Contains(out, "erasures/") || !strings.Contains(out, "referrals cleared:    1") {
		t.Errorf("person erase printed:\n%s", out)
	}
	fails(t, x, "practice", exitRefused, []string{"NOT_ALLOWED"}, "person", "erase", "--nhs-number", exchangetest.AdaNHS)

	file := filepath.Join(t.TempDir(), "copy.db")
	out = ok(t, x, "operator", "backup", "--file", file)
	if !strings.Contains(out, "wrote "+file) {
		t.Errorf("backup printed %q", out)
	}
	if err := bolt.Check(file); err != nil {
		t.Errorf("the backup fails bbolt check: %v", err)
	}
	fails(t, x, "group", exitRefused, []string{"NOT_ALLOWED"}, "backup", "--file", filepath.Join(t.TempDir(), "no.db"))
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(file), "*partial*")); len(matches) != 0 {
		t.Errorf("partial files left: %v", matches)
	}
}
