package hsds_test

import (
	"testing"
	"testing/fstest"

	"github.com/social-prescribing/exchange/client/hsds"
)

// FuzzRead reads any export: a datapackage and the CSV files. Whatever the
// bytes, Read returns an error or a directory in which every problem names
// its file, every organisation and service has an HSDS id and a name, and
// every service belongs to an organisation that was read.
func FuzzRead(f *testing.F) {
	f.Add(`{"resources":[{"name":"organization","path":"organizations.csv"},{"name":"service","path":"services.csv"}]}`,
		"id,name,email\no1,Hillside Walkers,info@hillside.example\n",
		"id,organization_id,name,status,minimum_age,maximum_age\ns1,o1,Health walks,active,18,\ns2,o1,Old walks,inactive,,\n",
		"id,code,name\nt1,PHYSICAL_ACTIVITY,Physical activity\n",
		"id,link_id,taxonomy_term_id\na1,s1,t1\n")
	f.Add("", "id,name\n\"o1,Broken\n", "id,organization_id,name\ns1,missing,Orphan\ns1,o1,Duplicate\n", "", "")
	f.Add("{", "\ufeffID,Name\no1,A\n", "id,organization_id,name,minimum_age\ns1,o1,X,-4\n", "id\n", "link_id\n")
	f.Fuzz(func(t *testing.T, datapackage, orgs, services, terms, attributes string) {
		fsys := fstest.MapFS{
			"organizations.csv":  {Data: []byte(orgs)},
			"services.csv":       {Data: []byte(services)},
			"taxonomy_terms.csv": {Data: []byte(terms)},
			"attributes.csv":     {Data: []byte(attributes)},
		}
		if datapackage != "" {
			fsys["datapackage.json"] = &fstest.MapFile{Data: []byte(datapackage)}
		}
		d, err := hsds.Read(fsys, "datapackage.json")
		if err != nil {
			return
		}
		ids := map[string]bool{}
		for _, o := range d.Organizations {
			if o.Org.HsdsId == "" || o.Org.DisplayName == "" || o.Line < 1 {
				t.Fatalf("organisation without id, name or line: %+v", o)
			}
			ids[o.Org.HsdsId] = true
		}
		for _, s := range d.Services {
			if s.Service.HsdsId == "" || s.Service.DisplayName == "" || !ids[s.OrgHsdsID] || s.Line < 1 {
				t.Fatalf("service without id, name, line or a known organisation: %+v", s)
			}
		}
		for _, p := range d.Problems {
			if p.File == "" || p.Msg == "" {
				t.Fatalf("problem without file or message: %+v", p)
			}
		}
	})
}
