package hsds_test

import (
	"testing"

	"github.com/social-prescribing/exchange/client/hsds"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// TestSample: the sample export the README imports reads whole: three
// organisations, three active services (one seasonal left out), phones and
// categories from the taxonomy.
func TestSample(t *testing.T) {
	d, err := hsds.ReadDir("testdata/sample/datapackage.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Problems) > 0 || len(d.Organizations) != 3 || len(d.Services) != 3 || d.Inactive != 1 {
		t.Fatalf("read %d organisations, %d services, %d inactive, problems %v", len(d.Organizations), len(d.Services), d.Inactive, d.Problems)
	}
	want := map[string][]pb.Category{
		"sample-svc-gardening-club": {pb.Category_CATEGORY_NATURE_AND_OUTDOORS, pb.Category_CATEGORY_PHYSICAL_ACTIVITY},
		"sample-svc-shed-sessions":  {pb.Category_CATEGORY_SOCIAL_ISOLATION},
		"sample-svc-craft-group":    {pb.Category_CATEGORY_ARTS_AND_CREATIVITY, pb.Category_CATEGORY_SOCIAL_ISOLATION},
	}
	for _, s := range d.Services {
		if got := s.Service.Categories; len(got) != len(want[s.Service.HsdsId]) {
			t.Errorf("%s: categories %v, want %v", s.Service.HsdsId, got, want[s.Service.HsdsId])
		}
	}
	if d.Organizations[0].Org.Contact.GetPhone() == "" {
		t.Errorf("the gardens' phone was not read: %v", d.Organizations[0].Org.Contact)
	}
}
