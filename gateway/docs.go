package gateway

import (
	"encoding/json"
	"html/template"
	"net/http"
	"slices"
	"sort"
	"strings"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// The parts of an OpenAPI v2 document the reference page shows.
type (
	openAPI struct {
		Info struct {
			Title, Description, Version string
		}
		Tags []struct {
			Name, Description string
		}
		Paths       map[string]map[string]*operation
		Definitions map[string]*schema
	}
	operation struct {
		Summary, Description, OperationID string
		Parameters                        []parameter
		Responses                         map[string]struct{ Schema *schema }
		Tags                              []string
	}
	parameter struct {
		Name, In, Description, Type, Format, Pattern string
		Required                                     bool
		Schema                                       *schema
		Items                                        *schema
		Enum                                         []string
	}
	schema struct {
		Ref         string `json:"$ref"`
		Type        string
		Format      string
		Title       string
		Description string
		Items       *schema
		Enum        []string
		Properties  map[string]*schema
		ReadOnly    bool
	}
)

func (o *operation) UnmarshalJSON(b []byte) error {
	type plain operation
	var p struct {
		plain
		OperationID string `json:"operationId"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*o = operation(p.plain)
	o.OperationID = p.OperationID
	return nil
}

// Page data.
type (
	docPage struct {
		Title, Description, Version string
		Services                    []docService
		Types                       []docType
	}
	docService struct {
		Name, Description string
		Operations        []docOperation
	}
	docOperation struct {
		ID, Method, Path, Summary, Description string
		Params                                 []docField
		Body, Response                         string // type names, linked
	}
	docField struct {
		Name, In, Type, Link, Description string
		Required, ReadOnly                bool
	}
	docType struct {
		Name, Description string
		Fields            []docField
		Enum              []string
	}
)

func refName(ref string) string { return strings.TrimPrefix(ref, "#/definitions/") }

func typeOf(s *schema) (name, link string) {
	switch {
	case s == nil:
		return "", ""
	case s.Ref != "":
		return refName(s.Ref), refName(s.Ref)
	case s.Type == "array" && s.Items != nil:
		n, l := typeOf(s.Items)
		return "list of " + n, l
	case s.Format != "":
		return s.Type + " (" + s.Format + ")", ""
	}
	return s.Type, ""
}

func joinText(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "\n\n")
}

// buildDocs turns the OpenAPI document into the reference page's data:
// every path and method, grouped by service, with its parameters, request
// body and response, and every type with each field's comment.
func buildDocs(raw []byte) (*docPage, error) {
	var doc openAPI
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	page := &docPage{Title: doc.Info.Title, Description: doc.Info.Description, Version: doc.Info.Version}
	byTag := map[string]int{} // service name -> index in page.Services
	for _, t := range doc.Tags {
		byTag[t.Name] = len(page.Services)
		page.Services = append(page.Services, docService{Name: t.Name, Description: t.Description})
	}
	paths := make([]string, 0, len(doc.Paths))
	for p := range doc.Paths {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, path := range paths {
		for method, op := range doc.Paths[path] {
			d := docOperation{ID: op.OperationID, Method: strings.ToUpper(method), Path: path, Summary: op.Summary, Description: op.Description}
			for _, p := range op.Parameters {
				if p.In == "body" {
					d.Body, _ = typeOf(p.Schema)
					continue
				}
				typ := p.Type
				if p.Format != "" {
					typ += " (" + p.Format + ")"
				}
				if len(p.Enum) > 0 {
					typ += ": " + strings.Join(p.Enum, ", ")
				}
				desc := p.Description
				if p.Pattern != "" {
					desc = joinText(desc, "Pattern: "+p.Pattern)
				}
				d.Params = append(d.Params, docField{Name: p.Name, In: p.In, Type: typ, Description: desc, Required: p.Required})
			}
			if r, ok := op.Responses["200"]; ok {
				d.Response, _ = typeOf(r.Schema)
			}
			tag := "Other"
			if len(op.Tags) > 0 {
				tag = op.Tags[0]
			}
			i, ok := byTag[tag]
			if !ok {
				i = len(page.Services)
				byTag[tag] = i
				page.Services = append(page.Services, docService{Name: tag})
			}
			page.Services[i].Operations = append(page.Services[i].Operations, d)
		}
	}
	for _, s := range page.Services {
		slices.SortFunc(s.Operations, func(a, b docOperation) int { return strings.Compare(a.ID, b.ID) })
	}
	names := make([]string, 0, len(doc.Definitions))
	for n := range doc.Definitions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		def := doc.Definitions[n]
		t := docType{Name: n, Description: joinText(def.Title, def.Description), Enum: def.Enum}
		fields := make([]string, 0, len(def.Properties))
		for f := range def.Properties {
			fields = append(fields, f)
		}
		sort.Strings(fields)
		for _, f := range fields {
			p := def.Properties[f]
			typ, link := typeOf(p)
			t.Fields = append(t.Fields, docField{Name: f, Type: typ, Link: link, Description: joinText(p.Title, p.Description), ReadOnly: p.ReadOnly})
		}
		page.Types = append(page.Types, t)
	}
	return page, nil
}

var docsTemplate = template.Must(template.New("docs").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}: API reference</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; color: #1b1b1b; margin: 0 auto; max-width: 60rem; padding: 1rem; }
h2 { border-bottom: 2px solid #005eb8; padding-top: 1rem; }
h3 code { font-size: 1rem; }
.method { display: inline-block; min-width: 4rem; font-weight: bold; color: #fff; background: #005eb8; padding: 0 .4rem; border-radius: 3px; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid #ccc; padding: .3rem .5rem; }
td.desc, p.desc { white-space: pre-line; }
a { color: #004b93; }
a:focus { outline: 3px solid #ffb81c; }
</style>
</head>
<body>
<header>
<h1>{{.Title}} <small>{{.Version}}</small></h1>
<p class="desc">{{.Description}}</p>
<p>The machine-readable document is at <a href="/openapi.json">/openapi.json</a>.</p>
<nav aria-label="Services"><ul>{{range .Services}}<li><a href="#{{.Name}}">{{.Name}}</a></li>{{end}}<li><a href="#types">Types</a></li></ul></nav>
</header>
<main>
{{range .Services}}
<section id="{{.Name}}">
<h2>{{.Name}}</h2>
<p class="desc">{{.Description}}</p>
{{range .Operations}}
<h3 id="{{.ID}}"><span class="method">{{.Method}}</span> <code>{{.Path}}</code></h3>
<p class="desc">{{.Summary}}{{if .Description}}

{{.Description}}{{end}}</p>
{{if .Params}}<table><caption>Parameters</caption><thead><tr><th scope="col">Name</th><th scope="col">In</th><th scope="col">Type</th><th scope="col">Description</th></tr></thead><tbody>
{{range .Params}}<tr><td><code>{{.Name}}</code>{{if .Required}} (required){{end}}</td><td>{{.In}}</td><td>{{.Type}}</td><td class="desc">{{.Description}}</td></tr>
{{end}}</tbody></table>{{end}}
{{if .Body}}<p>Request body: <a href="#{{.Body}}">{{.Body}}</a></p>{{end}}
{{if .Response}}<p>Response: <a href="#{{.Response}}">{{.Response}}</a></p>{{end}}
{{end}}
</section>
{{end}}
<section id="types">
<h2>Types</h2>
{{range .Types}}
<h3 id="{{.Name}}"><code>{{.Name}}</code></h3>
<p class="desc">{{.Description}}</p>
{{if .Enum}}<p>Values: {{range $i, $v := .Enum}}{{if $i}}, {{end}}<code>{{$v}}</code>{{end}}</p>{{end}}
{{if .Fields}}<table><thead><tr><th scope="col">Field</th><th scope="col">Type</th><th scope="col">Description</th></tr></thead><tbody>
{{range .Fields}}<tr><td><code>{{.Name}}</code>{{if .ReadOnly}} (output only){{end}}</td><td>{{if .Link}}<a href="#{{.Link}}">{{.Type}}</a>{{else}}{{.Type}}{{end}}</td><td class="desc">{{.Description}}</td></tr>
{{end}}</tbody></table>{{end}}
{{end}}
</section>
</main>
</body>
</html>
`))

// Docs serves the OpenAPI document at /openapi.json and the reference page
// rendered from it at /docs.
func Docs() (openapi, docs http.Handler, err error) {
	page, err := buildDocs(pb.OpenAPI)
	if err != nil {
		return nil, nil, err
	}
	var b strings.Builder
	if err := docsTemplate.Execute(&b, page); err != nil {
		return nil, nil, err
	}
	html := b.String()
	openapi = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(pb.OpenAPI)
	})
	docs = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(html))
	})
	return openapi, docs, nil
}
