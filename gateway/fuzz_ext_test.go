package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/social-prescribing/exchange/gateway"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// FuzzGatewayJSON sends any body to the REST API's write routes, as any
// caller, through the gateway's whole input path (body limit, JSON-to-protobuf
// decoding and its syntax message, parameters) to the exchange. Whatever
// the input the answer is JSON with a status the contract names, never a
// server error, and a refusal carries an ErrorInfo reason.
func FuzzGatewayJSON(f *testing.F) {
	x := exchangetest.StartWith(f, api.Options{})
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	consent := x.ConsentFor("practice", exchangetest.AdaNHS, nil)
	r, err := x.Refer("practice", "seed", walks, exchangetest.AdaNHS, consent.Name)
	if err != nil {
		f.Fatal(err)
	}
	h, err := gateway.New(context.Background(), x.Conn, gateway.Options{MaxBodyBytes: 64 << 10})
	if err != nil {
		f.Fatal(err)
	}
	routes := []struct{ method, path string }{
		{"POST", "/v1/referrals?requestId=f"},
		{"POST", "/v1/consents"},
		{"POST", "/v1/" + r.Name + ":accept"},
		{"POST", "/v1/" + r.Name + ":reject"},
		{"POST", "/v1/" + r.Name + "/feedback"},
		{"PATCH", "/v1/" + walks + "/capacity?updateMask=status,maxActiveReferrals"},
		{"PATCH", "/v1/organizations/group"},
		{"POST", "/v1/organizations/group/services?serviceId=new"},
		{"POST", "/v1/persons:erase"},
		{"GET", "/v1/referrals"},
	}
	callers := []string{"practice", "group", "operator", ""}
	for i, body := range []string{
		`{}`, ``, `{"note":{"text":"hello"}}`, `{"status":"CAPACITY_STATUS_ACCEPTING","maxActiveReferrals":12}`,
		`{"recipientService":"` + walks + `","consent":"` + consent.Name + `","route":"REFERRAL_ROUTE_SELF","needs":["CATEGORY_PHYSICAL_ACTIVITY"],"supportLevel":"SUPPORT_LEVEL_SIGNPOSTING","person":{"nhsNumber":"9434765919","givenName":"Ada","familyName":"Jones","dateOfBirth":"1948-03-14","postcode":"M14 5AB"}}`,
		`{"reason":{"code":"STATE_REASON_CODE_OTHER","text":"x"}}`, `{"nhsNumber":"943 476 5919"}`,
		`{"outcome":{"instrument":"INSTRUMENT_WEMWBS","timepoint":"TIMEPOINT_BASELINE","total":52}}`, `[1,2]`, `{"a":`, `"\u0000"`,
	} {
		f.Add(uint8(i), uint8(i), body)
	}
	allowed := map[int]bool{200: true, 400: true, 401: true, 403: true, 404: true, 409: true, 412: true, 413: true, 429: true}
	f.Fuzz(func(t *testing.T, route, who uint8, body string) {
		rt := routes[int(route)%len(routes)]
		req := httptest.NewRequest(rt.method, rt.path, strings.NewReader(body))
		if org := callers[int(who)%len(callers)]; org != "" {
			req.Header.Set("Authorization", "Bearer "+x.Keys[org])
		}
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !allowed[rec.Code] {
			t.Fatalf("%s %s %q: HTTP %d %s", rt.method, rt.path, body, rec.Code, rec.Body)
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s %q: HTTP %d, not JSON: %s", rt.method, rt.path, body, rec.Code, rec.Body)
		}
		if rec.Code == http.StatusOK {
			return
		}
		details, _ := out["details"].([]any)
		for _, d := range details {
			if m, _ := d.(map[string]any); m["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" && m["reason"] != "" {
				return
			}
		}
		t.Fatalf("%s %s %q: HTTP %d without an ErrorInfo reason: %s", rt.method, rt.path, body, rec.Code, rec.Body)
	})
}
