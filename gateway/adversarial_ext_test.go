package gateway_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// TestLongAndHiddenOverREST: over REST, a 40 kB name or filter is the
// caller's fault (never a 500), and another organisation's referral is as
// a missing one.
func TestLongAndHiddenOverREST(t *testing.T) {
	x, walks, lwService := setup(t)
	x.Org("stranger", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	_ = walks
	c := x.ConsentFor("riverside-practice", exchangetest.AdaNHS, nil)
	r1, err := x.Refer("riverside-practice", "gp-1", lwService, exchangetest.AdaNHS, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	// Long names.
	for _, path := range []string{
		"/v1/referrals/" + strings.Repeat("a", 40000),
		"/v1/referrals?filter=" + url.QueryEscape(`parent = "referrals/`+strings.Repeat("a", 40000)+`"`),
		"/v1/consents/" + strings.Repeat("a", 40000),
	} {
		code, body := x.do(t, "stranger", "GET", path, "")
		if code >= 500 {
			t.Errorf("GET %s...: %d %v", path[:30], code, body)
		}
	}
	// Hidden vs missing over REST.
	c1, b1 := x.do(t, "stranger", "GET", "/v1/"+r1.Name, "")
	c2, b2 := x.do(t, "stranger", "GET", "/v1/referrals/aaaaaaaaaaaaaaaa", "")
	m1 := strings.ReplaceAll(strings.ReplaceAll(toString(b1), r1.Name, "X"), "referrals/aaaaaaaaaaaaaaaa", "X")
	m2 := strings.ReplaceAll(toString(b2), "referrals/aaaaaaaaaaaaaaaa", "X")
	if c1 != c2 || m1 != m2 {
		t.Errorf("hidden %d %s vs missing %d %s", c1, m1, c2, m2)
	}
	// A filter with a NUL, bad quotes.
	for _, f := range []string{"recipient = \"organizations/x\x00\"", `recipient = "`, `"`, "state = \u00a0REQUESTED"} {
		code, body := x.do(t, "stranger", "GET", "/v1/referrals?filter="+url.QueryEscape(f), "")
		if code >= 500 {
			t.Errorf("filter %q: %d %v", f, code, body)
		}
	}
	code, body := x.do(t, "stranger", "GET", "/v1/referrals?filter=%ff", "")
	if code >= 500 {
		t.Errorf("filter %%ff: %d %v", code, body)
	}
	code, body = x.do(t, "stranger", "GET", "/v1/referrals?pageToken=%ff%fe", "")
	if code >= 500 {
		t.Errorf("token: %d %v", code, body)
	}
}

func toString(m map[string]any) string {
	var b strings.Builder
	for _, k := range []string{"code", "message", "details"} {
		b.WriteString(k)
		b.WriteString("=")
		b.WriteString(strings.TrimSpace(strings.ReplaceAll(fmtAny(m[k]), "\n", " ")))
		b.WriteString(";")
	}
	return b.String()
}

func fmtAny(v any) string { return fmtSprint(v) }

var fmtSprint = fmt.Sprint
