package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/social-prescribing/exchange/gateway"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// restExchange is the exchange with the REST gateway in front of it.
type restExchange struct {
	*exchangetest.Exchange
	url string
}

func startREST(t *testing.T) *restExchange {
	t.Helper()
	x := exchangetest.Start(t)
	h, err := gateway.New(context.Background(), x.Conn, gateway.Options{MaxBodyBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &restExchange{Exchange: x, url: srv.URL}
}

// do sends a JSON request as org ("" for no key) and decodes the reply.
func (x *restExchange) do(t *testing.T, org, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, x.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if org != "" {
		req.Header.Set("Authorization", "Bearer "+x.Keys[org])
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: %d, not JSON: %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, out
}

// errorOf checks the error JSON shape and returns its reason and fields.
func errorOf(t *testing.T, body map[string]any) (code float64, reason string, fields []string) {
	t.Helper()
	if _, ok := body["message"].(string); !ok {
		t.Errorf("error without a message: %v", body)
	}
	code, _ = body["code"].(float64)
	details, _ := body["details"].([]any)
	for _, d := range details {
		m := d.(map[string]any)
		switch m["@type"] {
		case "type.googleapis.com/google.rpc.ErrorInfo":
			reason = m["reason"].(string)
			if m["domain"] != "exchange.socialprescribing.uk" {
				t.Errorf("ErrorInfo domain = %v", m["domain"])
			}
		case "type.googleapis.com/google.rpc.BadRequest":
			for _, v := range m["fieldViolations"].([]any) {
				fields = append(fields, v.(map[string]any)["field"].(string))
			}
		}
	}
	return code, reason, fields
}

func setup(t *testing.T) (x *restExchange, walks, lwService string) {
	x = startREST(t)
	x.Org("riverside-practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("riverside-pcn", pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE)
	x.Org("hillside-walkers", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	lwService = x.Service("riverside-pcn", "link-workers", pb.Category_CATEGORY_SOCIAL_ISOLATION)
	walks = x.Service("hillside-walkers", "health-walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	return x, walks, lwService
}

// TestWorkedExampleOverREST plays the worked example with the GP and the
// link workers over gRPC and the community group over REST.
func TestWorkedExampleOverREST(t *testing.T) {
	x, walks, lwService := setup(t)
	refs := pb.NewReferralServiceClient(x.Conn)
	gp, lw := x.As("riverside-practice"), x.As("riverside-pcn")
	c := x.ConsentFor("riverside-practice", exchangetest.AdaNHS, nil)
	r1, err := x.Refer("riverside-practice", "gp-1", lwService, exchangetest.AdaNHS, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := refs.AcceptReferral(lw, &pb.AcceptReferralRequest{Name: r1.Name}); err != nil {
		t.Fatal(err)
	}
	p := exchangetest.Ada()
	r2, err := refs.CreateReferral(lw, &pb.CreateReferralRequest{RequestId: "lw-1", Referral: &pb.Referral{
		RecipientService: walks, ParentReferral: r1.Name, Person: p, Consent: c.Name, Route: pb.ReferralRoute_REFERRAL_ROUTE_LINK_WORKER,
		Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_INTENSIVE}})
	if err != nil {
		t.Fatal(err)
	}
	const group = "hillside-walkers"

	// The group's inbox over REST.
	filter := url.QueryEscape(`recipient = "organizations/hillside-walkers" AND state = REQUESTED`)
	code, inbox := x.do(t, group, "GET", "/v1/referrals?filter="+filter, "")
	list, _ := inbox["referrals"].([]any)
	if code != 200 || len(list) != 1 || list[0].(map[string]any)["name"] != r2.Name {
		t.Fatalf("inbox = %d %v", code, inbox)
	}
	if person := list[0].(map[string]any)["person"].(map[string]any); person["givenName"] != "Ada" || person["nhsNumber"] != exchangetest.AdaNHS {
		t.Errorf("the group does not see the person it was referred: %v", person)
	}
	code, events := x.do(t, group, "GET", "/v1/events", "")
	if code != 200 {
		t.Fatalf("events = %d %v", code, events)
	}
	last := events["lastSequence"].(string)

	// Accept, report the first session, start, post a WEMWBS score.
	if code, body := x.do(t, group, "POST", "/v1/"+r2.Name+":accept", `{"requestId":"accept-1"}`); code != 200 || body["state"] != "REFERRAL_STATE_ACCEPTED" {
		t.Fatalf("accept = %d %v", code, body)
	}
	if code, body := x.do(t, group, "POST", "/v1/"+r2.Name+"/feedback?requestId=first-session",
		`{"uptake":{"status":"UPTAKE_STATUS_FIRST_SESSION_ATTENDED"}}`); code != 200 {
		t.Fatalf("uptake = %d %v", code, body)
	}
	if code, body := x.do(t, group, "POST", "/v1/"+r2.Name+":start", `{}`); code != 200 || body["state"] != "REFERRAL_STATE_IN_PROGRESS" {
		t.Fatalf("start = %d %v", code, body)
	}
	code, bad := x.do(t, group, "POST", "/v1/"+r2.Name+"/feedback",
		`{"outcome":{"instrument":"INSTRUMENT_WEMWBS","timepoint":"TIMEPOINT_FOLLOW_UP","total":71}}`)
	if _, reason, fields := errorOf(t, bad); code != 400 || reason != "FIELD_INVALID" || len(fields) == 0 || !strings.Contains(fields[0], "total") {
		t.Errorf("WEMWBS 71 = %d %v", code, bad)
	}
	if code, body := x.do(t, group, "POST", "/v1/"+r2.Name+"/feedback",
		`{"outcome":{"instrument":"INSTRUMENT_WEMWBS","timepoint":"TIMEPOINT_FOLLOW_UP","total":52}}`); code != 200 {
		t.Fatalf("outcome = %d %v", code, body)
	}
	if code, body := x.do(t, group, "POST", "/v1/"+r2.Name+"/feedback", `{"note":{"text":"Ada enjoyed the walk"}}`); code != 200 {
		t.Fatalf("note = %d %v", code, body)
	}

	// The group polls its events after the last one it had seen.
	code, events = x.do(t, group, "GET", "/v1/events?after="+last+"&wait=5s", "")
	var types []string
	for _, e := range events["events"].([]any) {
		types = append(types, e.(map[string]any)["type"].(string))
	}
	if code != 200 || strings.Join(types, ",") != "EVENT_TYPE_REFERRAL_STATE_CHANGED,EVENT_TYPE_FEEDBACK_POSTED,EVENT_TYPE_REFERRAL_STATE_CHANGED,EVENT_TYPE_FEEDBACK_POSTED,EVENT_TYPE_FEEDBACK_POSTED" {
		t.Errorf("events after %s = %d %v", last, code, types)
	}

	// The link workers see all three entries over gRPC, the GP no note.
	fb := pb.NewFeedbackServiceClient(x.Conn)
	for ctx, want := range map[context.Context]int{lw: 3, gp: 2} {
		l, err := fb.ListFeedback(ctx, &pb.ListFeedbackRequest{Parent: r2.Name})
		if err != nil || len(l.Feedback) != want {
			t.Errorf("feedback seen over gRPC = %v, %v; want %d entries", l, err, want)
		}
	}
	// The retried accept returns its first response over REST too.
	if code, body := x.do(t, group, "POST", "/v1/"+r2.Name+":accept", `{"requestId":"accept-1"}`); code != 200 || body["state"] != "REFERRAL_STATE_ACCEPTED" {
		t.Errorf("retried accept = %d %v", code, body)
	}
}

func TestLongPollOverREST(t *testing.T) {
	x, walks, _ := setup(t)
	_, events := x.do(t, "hillside-walkers", "GET", "/v1/events", "")
	last := events["lastSequence"].(string)
	done := make(chan map[string]any, 1)
	began := time.Now()
	go func() {
		_, body := x.do(t, "hillside-walkers", "GET", "/v1/events?after="+last+"&wait=30s", "")
		done <- body
	}()
	time.Sleep(200 * time.Millisecond)
	c := x.ConsentFor("riverside-practice", exchangetest.AdaNHS, nil)
	if _, err := x.Refer("riverside-practice", "one", walks, exchangetest.AdaNHS, c.Name); err != nil {
		t.Fatal(err)
	}
	select {
	case body := <-done:
		evs := body["events"].([]any)
		if len(evs) != 1 || evs[0].(map[string]any)["type"] != "EVENT_TYPE_REFERRAL_CREATED" {
			t.Errorf("long-poll = %v", body)
		}
		if time.Since(began) > 5*time.Second {
			t.Errorf("long-poll returned after %v", time.Since(began))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll did not return when an event arrived")
	}
	// With nothing new it returns empty at the wait.
	_, events = x.do(t, "hillside-walkers", "GET", "/v1/events", "")
	began = time.Now()
	code, body := x.do(t, "hillside-walkers", "GET", "/v1/events?after="+events["lastSequence"].(string)+"&wait=0.3s", "")
	if code != 200 || body["events"] != nil || time.Since(began) < 300*time.Millisecond {
		t.Errorf("empty long-poll = %d %v after %v", code, body, time.Since(began))
	}
}

func TestErrorShapes(t *testing.T) {
	x, walks, _ := setup(t)
	c := x.ConsentFor("riverside-practice", exchangetest.AdaNHS, nil)
	r, err := x.Refer("riverside-practice", "first", walks, exchangetest.AdaNHS, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	referral := func(nhs string) string {
		return fmt.Sprintf(`{"recipientService":%q,"consent":%q,"route":"REFERRAL_ROUTE_PRIMARY_CARE",
			"needs":["CATEGORY_PHYSICAL_ACTIVITY"],"supportLevel":"SUPPORT_LEVEL_SIGNPOSTING",
			"person":{"nhsNumber":%q,"givenName":"Ada","familyName":"Jones","dateOfBirth":"1948-03-14","postcode":"M14 5AB"}}`, walks, c.Name, nhs)
	}
	for _, tc := range []struct {
		name, org, method, path, body string
		status                        int
		code                          float64
		reason                        string
		field                         string
	}{
		{"bad fields", "riverside-practice", "POST", "/v1/referrals?requestId=bad", referral("9434765918"), 400, 3, "FIELD_INVALID", "referral.person.nhs_number"},
		{"malformed JSON", "riverside-practice", "POST", "/v1/referrals?requestId=bad", `{"person": {"nhsNumber": 94}`, 400, 3, "MALFORMED_REQUEST", ""},
		{"unknown field", "riverside-practice", "POST", "/v1/referrals?requestId=bad", `{"patient": {}}`, 400, 3, "MALFORMED_REQUEST", ""},
		{"data after the JSON", "riverside-practice", "POST", "/v1/referrals?requestId=bad", `{} {}`, 400, 3, "MALFORMED_REQUEST", ""},
		{"malformed JSON, whole body", "hillside-walkers", "POST", "/v1/" + r.Name + ":accept", `{"etag":`, 400, 3, "MALFORMED_REQUEST", ""},
		{"no key", "", "GET", "/v1/" + r.Name, "", 401, 16, "API_KEY_MISSING", ""},
		{"not allowed", "hillside-walkers", "POST", "/v1/organizations?organizationId=sneaky", `{"kind":"ORGANIZATION_KIND_OTHER","displayName":"x"}`, 403, 7, "NOT_ALLOWED", ""},
		{"not found", "riverside-pcn", "GET", "/v1/" + r.Name, "", 404, 5, "RESOURCE_NOT_FOUND", ""},
		{"duplicate", "riverside-practice", "POST", "/v1/referrals?requestId=again", referral(exchangetest.AdaNHS), 409, 6, "DUPLICATE_REFERRAL", ""},
		{"stale etag", "hillside-walkers", "POST", "/v1/" + r.Name + ":accept", `{"etag":"0000000000000000"}`, 409, 10, "ETAG_MISMATCH", ""},
		{"wrong move", "hillside-walkers", "POST", "/v1/" + r.Name + ":complete", `{}`, 412, 9, "INVALID_TRANSITION", ""},
		{"no such path", "riverside-practice", "GET", "/v1/nothing", "", 404, 5, "UNKNOWN_ROUTE", ""},
		{"no such method", "riverside-practice", "DELETE", "/v1/referrals", "", 405, 3, "UNKNOWN_ROUTE", ""},
		{"not UTF-8", "riverside-practice", "GET", "/v1/referrals?filter=%FF", "", 400, 3, "MALFORMED_REQUEST", "filter"},
		{"too large", "riverside-practice", "POST", "/v1/referrals?requestId=big", `{"reason":"` + strings.Repeat("x", 70<<10) + `"}`, 413, 3, "REQUEST_TOO_LARGE", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := x.do(t, tc.org, tc.method, tc.path, tc.body)
			code, reason, fields := errorOf(t, body)
			if status != tc.status || code != tc.code || reason != tc.reason {
				t.Errorf("= HTTP %d code %v reason %s, want %d %v %s: %v", status, code, reason, tc.status, tc.code, tc.reason, body)
			}
			if tc.field != "" && (len(fields) == 0 || fields[0] != tc.field) {
				t.Errorf("field violations = %v, want %s", fields, tc.field)
			}
			msg, _ := body["message"].(string)
			if tc.reason == "MALFORMED_REQUEST" && tc.body != "" && !strings.Contains(msg, "line 1") {
				t.Errorf("malformed request message does not say where: %v", msg)
			}
			if strings.HasPrefix(tc.name, "malformed") && !strings.HasPrefix(msg, "the body is not valid JSON") {
				t.Errorf("malformed JSON message = %q, want it to say the body is not JSON", msg)
			}
		})
	}
	// Nothing was written by the refusals.
	l, err := pb.NewReferralServiceClient(x.Conn).ListReferrals(x.As("riverside-practice"), &pb.ListReferralsRequest{})
	if err != nil || len(l.Referrals) != 1 {
		t.Errorf("referrals after refusals = %v, %v", l, err)
	}
}

func TestOpenAPIAndDocs(t *testing.T) {
	openapi, docs, err := gateway.Docs()
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	openapi.ServeHTTP(rec, httptest.NewRequest("GET", "/openapi.json", nil))
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	docs.ServeHTTP(rec, httptest.NewRequest("GET", "/docs", nil))
	page := rec.Body.String()
	n := 0
	param := regexp.MustCompile(`\{([^}]*)\}`)
	resources := []string{"organization", "service", "capacity", "consent", "referral", "apiKey"}
	for path, methods := range doc.Paths {
		// Path parameters are named for the resource they take.
		for _, m := range param.FindAllStringSubmatch(path, -1) {
			if !slices.Contains(resources, m[1]) {
				t.Errorf("%s: path parameter {%s} is not named for its resource", path, m[1])
			}
		}
		for method, op := range methods {
			n++
			if !strings.Contains(page, `id="`+op.OperationID+`"`) || !strings.Contains(page, "<code>"+path+"</code>") {
				t.Errorf("/docs lacks %s %s (%s)", method, path, op.OperationID)
			}
		}
	}
	if n < 36 {
		t.Errorf("the OpenAPI document has %d operations; the contract has 36 RPCs over REST (Backup is gRPC only)", n)
	}
	// Field comments from the contracts reach the page.
	for _, want := range []string{"maxActiveReferrals", "Optional maximum number of active referrals", "CAPACITY_STATUS_WAITLIST", "Authorization: Bearer"} {
		if !strings.Contains(page, want) {
			t.Errorf("/docs lacks %q", want)
		}
	}
}

// TestReportsOverREST: a commissioner reads both reports over REST, with
// the filter in the query string; a bad filter is a 400 naming the field.
func TestReportsOverREST(t *testing.T) {
	x, walks, _ := setup(t)
	x.Org("icb", pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER)
	for i := range 5 {
		nhs := exchangetest.NHSNumber(900 + 10*i)
		c := x.ConsentFor("riverside-practice", nhs, func(c *pb.Consent) {
			c.Purposes = append(c.Purposes, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION)
		})
		if _, err := x.Refer("riverside-practice", fmt.Sprint("rest-report-", i), walks, nhs, c.Name); err != nil {
			t.Fatal(err)
		}
	}
	code, body := x.do(t, "icb", "GET", "/v1/reports/activity?filter.route=REFERRAL_ROUTE_PRIMARY_CARE&filter.service="+url.QueryEscape(walks)+"&filter.startTime=2020-01-01T00:00:00Z", "")
	if code != 200 || body["referrals"].(map[string]any)["value"] != "5" || body["suppressionThreshold"] != float64(5) {
		t.Fatalf("GET /v1/reports/activity: %d %v", code, body)
	}
	code, body = x.do(t, "icb", "GET", "/v1/reports/outcomes", "")
	if code != 200 || len(body["measures"].([]any)) != 8 {
		t.Fatalf("GET /v1/reports/outcomes: %d %v", code, body)
	}
	code, body = x.do(t, "icb", "GET", "/v1/reports/activity?filter.organization=hillside", "")
	if _, reason, fields := errorOf(t, body); code != 400 || reason != "FIELD_INVALID" || len(fields) != 1 || fields[0] != "filter.organization" {
		t.Errorf("a bad filter: %d %v", code, body)
	}
	if code, _ := x.do(t, "", "GET", "/v1/reports/activity", ""); code != 401 {
		t.Errorf("no key: %d", code)
	}
}

// TestRateLimitOverREST: a group over its rate limit gets 429 with
// Retry-After and the reason; other groups go on.
func TestRateLimitOverREST(t *testing.T) {
	x := exchangetest.StartWith(t, api.Options{Limits: api.Limits{Rate: 0.5, Burst: 30}})
	h, err := gateway.New(context.Background(), x.Conn, gateway.Options{MaxBodyBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	x.Org("hillside-walkers", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	x.Org("riverside-pcn", pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE)
	get := func(org string) *http.Response {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/organizations/hillside-walkers", nil)
		req.Header.Set("Authorization", "Bearer "+x.Keys[org])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	var resp *http.Response
	for range 40 {
		if resp = get("hillside-walkers"); resp.StatusCode != 200 {
			break
		}
	}
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("HTTP %d after 40 calls, want 429", resp.StatusCode)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 2 {
		t.Errorf("Retry-After = %q, want 1 or 2 seconds", resp.Header.Get("Retry-After"))
	}
	if other := get("riverside-pcn"); other.StatusCode != 200 {
		t.Errorf("another organisation got HTTP %d", other.StatusCode)
	}
}

// TestAdminOverREST: the audit log and an erasure over REST, for the
// operator only.
func TestAdminOverREST(t *testing.T) {
	x, walks, _ := setup(t)
	c := x.ConsentFor("riverside-practice", exchangetest.AdaNHS, nil)
	r, err := x.Refer("riverside-practice", "r1", walks, exchangetest.AdaNHS, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	status, body := x.do(t, "operator", "GET", "/v1/auditEvents?resource="+r.Name, "")
	events, _ := body["auditEvents"].([]any)
	if status != 200 || len(events) != 1 || events[0].(map[string]any)["method"] != "/exchange.v1.ReferralService/CreateReferral" {
		t.Errorf("audit over REST: %d %v", status, body)
	}
	status, body = x.do(t, "hillside-walkers", "GET", "/v1/auditEvents", "")
	if _, reason, _ := errorOf(t, body); status != 403 || reason != "NOT_ALLOWED" {
		t.Errorf("a group reading the audit log: %d %v", status, body)
	}
	status, body = x.do(t, "operator", "POST", "/v1/persons:erase", `{"nhsNumber":"943 476 5919","requestId":"e1"}`)
	if status != 200 || body["clearedReferrals"] != float64(1) {
		t.Errorf("erasure over REST: %d %v", status, body)
	}
}

// TestTwoCredentialsOverREST: Authorization and Grpc-Metadata-Authorization
// together are 401 AMBIGUOUS_CREDENTIALS, not the first one's caller.
func TestTwoCredentialsOverREST(t *testing.T) {
	x, _, _ := setup(t)
	req, _ := http.NewRequest("GET", x.url+"/v1/organizations", nil)
	req.Header.Set("Authorization", "Bearer "+x.Keys["riverside-practice"])
	req.Header.Set("Grpc-Metadata-Authorization", "Bearer "+x.Keys["hillside-walkers"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	if _, reason, _ := errorOf(t, body); resp.StatusCode != 401 || reason != "AMBIGUOUS_CREDENTIALS" {
		t.Fatalf("two credentials: %d %v; want 401 AMBIGUOUS_CREDENTIALS", resp.StatusCode, body)
	}
}

// TestListFilterNeverWidensOverREST: over REST as over gRPC, a filter that
// names another organisation lists nothing of it (issue 25, defect 1).
func TestListFilterNeverWidensOverREST(t *testing.T) {
	x, walks, lwService := setup(t)
	x.Org("stranger", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	x.Org("icb", pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER)
	c := x.ConsentFor("riverside-practice", exchangetest.AdaNHS, nil)
	if _, err := x.Refer("riverside-practice", "gp-1", lwService, exchangetest.AdaNHS, c.Name); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"stranger", "icb", "hillside-walkers"} {
		for _, f := range []string{`recipient = "organizations/riverside-pcn"`, `referrer = "organizations/riverside-practice"`,
			`recipient = "` + lwService + `"`, `recipient = "` + walks + `"`} {
			code, body := x.do(t, who, "GET", "/v1/referrals?filter="+url.QueryEscape(f), "")
			if code != 200 || len(body) != 0 {
				t.Errorf("%s GET /v1/referrals?filter=%s: %d %v; want 200 and nothing", who, f, code, body)
			}
		}
	}
	code, body := x.do(t, "riverside-pcn", "GET", "/v1/referrals?filter="+url.QueryEscape(`referrer = "organizations/riverside-practice"`), "")
	if l, _ := body["referrals"].([]any); code != 200 || len(l) != 1 {
		t.Errorf("the receiver's own list: %d %v", code, body)
	}
}
