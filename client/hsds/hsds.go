// Package hsds reads an Open Referral Human Services Data Specification
// (HSDS) export, the tabular data package that directories publish: a
// datapackage.json naming CSV files (organizations.csv, services.csv and the
// tables linked to them), and loads its organisations and services into the
// exchange's directory.
//
// Read turns the files into exchange Organizations and Services. A malformed
// row (a missing id or name, an unknown organization_id, a bad age, a
// broken CSV line) is reported as a Problem with its file and line and left
// out; the rest is read. Import then makes the directory match: it finds what
// an earlier import created by its HSDS id, creates what is new, updates what
// changed and leaves the rest alone, so running it twice changes nothing the
// second time.
//
// What is read:
//
//   - organizations.csv: id, name, description, email, website;
//   - services.csv: id, organization_id, name, description, url, email,
//     status (only "active" services, or rows without a status, are
//     loaded), eligibility_description, minimum_age, maximum_age;
//   - phones.csv (optional): organization_id or service_id, number;
//   - taxonomy_terms.csv and attributes.csv (optional): a service's terms,
//     mapped to exchange categories when a term's code or name is a category
//     code (e.g. "PHYSICAL_ACTIVITY" or "Physical activity"); a service with
//     no mapped term gets OTHER.
//
// File names come from the datapackage's resources (by resource name:
// organization, service, phone, taxonomy_term, attribute) and default to
// the names above.
package hsds

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// Problem is a row that was left out, or a service the exchange refused.
type Problem struct {
	File string // e.g. "services.csv"
	Line int    // 1-based line of the row in File; 0 for the whole file
	Msg  string
}

func (p Problem) String() string {
	if p.Line == 0 {
		return p.File + ": " + p.Msg
	}
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
}

// Row ties a record to where it was read.
type Row struct {
	File string
	Line int
}

// Organization is an organisation read from the export.
type Organization struct {
	Row
	Org *pb.Organization // HsdsId set; name empty
}

// Service is a service read from the export.
type Service struct {
	Row
	OrgHsdsID string      // the owning organisation's HSDS id
	Service   *pb.Service // HsdsId set; name empty
}

// Directory is what Read found.
type Directory struct {
	Organizations []Organization
	Services      []Service
	Problems      []Problem
	// Inactive counts services left out because their status is not active.
	Inactive int
}

// resource names in an HSDS datapackage, and their default file names.
var defaults = map[string]string{
	"organization":  "organizations.csv",
	"service":       "services.csv",
	"phone":         "phones.csv",
	"taxonomy_term": "taxonomy_terms.csv",
	"attribute":     "attributes.csv",
}

// ReadDir reads the export at p: a directory holding datapackage.json (or
// just the CSV files), or the datapackage.json file itself.
func ReadDir(p string) (*Directory, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	name := "datapackage.json"
	if !st.IsDir() {
		p, name = path.Dir(p), path.Base(p)
	}
	return Read(os.DirFS(p), name)
}

// Read reads the export in fsys whose datapackage is the file named
// datapackage (which may be missing: the default file names are used).
func Read(fsys fs.FS, datapackage string) (*Directory, error) {
	files, err := resources(fsys, datapackage)
	if err != nil {
		return nil, err
	}
	d := &Directory{}
	phones := map[string]string{} // organization or service id -> first number
	if err := d.table(fsys, files["phone"], false, func(r record) {
		for _, k := range []string{"service_id", "organization_id"} {
			if id := r.get(k); id != "" && phones[k+":"+id] == "" {
				phones[k+":"+id] = r.get("number")
			}
		}
	}); err != nil {
		return nil, err
	}
	terms := map[string]pb.Category{}
	if err := d.table(fsys, files["taxonomy_term"], false, func(r record) {
		for _, s := range []string{r.get("code"), r.get("name"), r.get("term")} {
			if n, ok := pb.ParseCode(pb.Category(0).Descriptor(), s); ok {
				terms[r.get("id")] = pb.Category(n)
				return
			}
		}
	}); err != nil {
		return nil, err
	}
	categories := map[string][]pb.Category{}
	if err := d.table(fsys, files["attribute"], false, func(r record) {
		if e := r.get("link_entity"); e != "" && e != "service" {
			return
		}
		id := r.get("link_id")
		if id == "" {
			id = r.get("service_id") // HSDS 2.0 service_taxonomy
		}
		if c, ok := terms[r.get("taxonomy_term_id")]; ok && !slices.Contains(categories[id], c) {
			categories[id] = append(categories[id], c)
		}
	}); err != nil {
		return nil, err
	}
	orgs := map[string]bool{}
	if err := d.table(fsys, files["organization"], true, func(r record) {
		id, name := r.get("id"), r.get("name")
		switch {
		case id == "":
			d.problem(r, "id is empty")
		case name == "":
			d.problem(r, "organization "+id+": name is empty")
		case orgs[id]:
			d.problem(r, "organization "+id+" appears twice; the first row is used")
		default:
			orgs[id] = true
			d.Organizations = append(d.Organizations, Organization{Row: r.Row, Org: &pb.Organization{
				Kind:        pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION,
				DisplayName: name,
				HsdsId:      id,
				Contact:     contact(r.get("email"), phones["organization_id:"+id], r.get("website")),
			}})
		}
	}); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	if err := d.table(fsys, files["service"], true, func(r record) {
		id, org, name := r.get("id"), r.get("organization_id"), r.get("name")
		switch {
		case id == "":
			d.problem(r, "id is empty")
			return
		case name == "":
			d.problem(r, "service "+id+": name is empty")
			return
		case !orgs[org]:
			d.problem(r, fmt.Sprintf("service %s: organization_id %q is not in the organizations", id, org))
			return
		case seen[id]:
			d.problem(r, "service "+id+" appears twice; the first row is used")
			return
		}
		if s := strings.ToLower(r.get("status")); s != "" && s != "active" {
			d.Inactive++
			return
		}
		minAge, err1 := age(r.get("minimum_age"))
		maxAge, err2 := age(r.get("maximum_age"))
		if err := errors.Join(err1, err2); err != nil {
			d.problem(r, "service "+id+": "+err.Error())
			return
		}
		seen[id] = true
		cats := categories[id]
		if len(cats) == 0 {
			cats = []pb.Category{pb.Category_CATEGORY_OTHER}
		}
		s := &pb.Service{
			DisplayName: name,
			Description: r.get("description"),
			Categories:  cats,
			Contact:     contact(r.get("email"), phones["service_id:"+id], r.get("url")),
			HsdsId:      id,
		}
		if minAge != 0 || maxAge != 0 || r.get("eligibility_description") != "" {
			s.Eligibility = &pb.Eligibility{MinAge: minAge, MaxAge: maxAge, Notes: r.get("eligibility_description")}
		}
		d.Services = append(d.Services, Service{Row: r.Row, OrgHsdsID: org, Service: s})
	}); err != nil {
		return nil, err
	}
	return d, nil
}

// resources returns the file of each resource, from the datapackage when
// there is one.
func resources(fsys fs.FS, datapackage string) (map[string]string, error) {
	files := map[string]string{}
	for k, v := range defaults {
		files[k] = v
	}
	b, err := fs.ReadFile(fsys, datapackage)
	if errors.Is(err, fs.ErrNotExist) {
		return files, nil
	}
	if err != nil {
		return nil, err
	}
	var dp struct {
		Resources []struct {
			Name string `json:"name"`
			Path any    `json:"path"` // a string, or a list of strings
		} `json:"resources"`
	}
	if err := json.Unmarshal(b, &dp); err != nil {
		return nil, fmt.Errorf("%s: %w", datapackage, err)
	}
	for _, r := range dp.Resources {
		if _, ok := defaults[r.Name]; !ok {
			continue
		}
		switch p := r.Path.(type) {
		case string:
			files[r.Name] = p
		case []any:
			if len(p) > 0 {
				if s, ok := p[0].(string); ok {
					files[r.Name] = s
				}
			}
		}
	}
	return files, nil
}

type record struct {
	Row
	cols   map[string]int
	fields []string
}

func (r record) get(col string) string {
	if i, ok := r.cols[col]; ok && i < len(r.fields) {
		return strings.TrimSpace(r.fields[i])
	}
	return ""
}

func (d *Directory) problem(r record, msg string) {
	d.Problems = append(d.Problems, Problem{File: r.File, Line: r.Line, Msg: msg})
}

// table calls fn for each well-formed row of the CSV file name. A row with
// the wrong number of fields or broken quoting is a Problem. A missing file
// is an error when required.
func (d *Directory) table(fsys fs.FS, name string, required bool, fn func(record)) error {
	f, err := fsys.Open(name)
	if errors.Is(err, fs.ErrNotExist) && !required {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.ReuseRecord = false
	header, err := cr.Read()
	if err == io.EOF {
		return fmt.Errorf("%s: the file is empty; it needs a header row", name)
	}
	if err != nil {
		return fmt.Errorf("%s: header: %w", name, err)
	}
	cols := map[string]int{}
	for i, h := range header {
		cols[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))] = i
	}
	if _, ok := cols["id"]; !ok && required {
		return fmt.Errorf("%s: the header has no id column", name)
	}
	for {
		fields, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			d.Problems = append(d.Problems, Problem{File: name, Line: pe.StartLine, Msg: pe.Err.Error()})
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		line, _ := cr.FieldPos(0)
		fn(record{Row: Row{File: name, Line: line}, cols: cols, fields: fields})
	}
}

func contact(email, phone, website string) *pb.Contact {
	if email == "" && phone == "" && website == "" {
		return nil
	}
	return &pb.Contact{Email: email, Phone: phone, Website: website}
}

func age(s string) (int32, error) {
	if s == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f > 130 || f != float64(int32(f)) {
		return 0, fmt.Errorf("age %q is not a whole number of years from 0 to 130", s)
	}
	return int32(f), nil
}
