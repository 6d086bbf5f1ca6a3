package web_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/social-prescribing/exchange/gateway/web"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// inbox is an exchange with a referral from the link workers "pcn" to the
// walking group "walkers", and the web inbox in front of it.
type inbox struct {
	*exchangetest.Exchange
	url, referral string
}

func startInbox(t *testing.T) *inbox {
	t.Helper()
	x := exchangetest.Start(t)
	x.Org("pcn", pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE)
	x.Org("walkers", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("walkers", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	c := x.ConsentFor("pcn", exchangetest.AdaNHS, nil)
	r, err := x.Refer("pcn", "web-1", walks, exchangetest.AdaNHS, c.Name)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(web.New(x.Conn, web.Options{}).Handler())
	t.Cleanup(srv.Close)
	return &inbox{Exchange: x, url: srv.URL, referral: r.Name}
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, so each step is seen.
func browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, c *http.Client, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn opens the sign-in page, as a browser would, and posts its form
// with key.
func signIn(t *testing.T, c *http.Client, base, key string) (*http.Response, string) {
	t.Helper()
	_, page := get(t, c, base+"/")
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the sign-in page has no token:\n%s", page)
	}
	return post(t, c, base+"/signin", url.Values{"api_key": {key}, "csrf": {m[1]}})
}

func TestSessionAndCSRF(t *testing.T) {
	x := startInbox(t)
	c := browser(t)
	if code, body := get(t, c, x.url+"/inbox"); code != http.StatusSeeOther {
		t.Fatalf("inbox without signing in = %d %s", code, body)
	}
	resp, body := signIn(t, c, x.url, "sprx_walkers_aaaaaaaaaaaaaaaa_nope")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "did not accept that key") {
		t.Fatalf("bad key = %d", resp.StatusCode)
	}
	resp, _ = signIn(t, c, x.url, x.Keys["walkers"])
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/inbox" {
		t.Fatalf("sign in = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	cookie := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("session cookie %q lacks %s", cookie, want)
		}
	}
	if strings.Contains(cookie, x.Keys["walkers"]) || strings.Contains(resp.Header.Get("Location"), "sprx_") {
		t.Error("the API key leaked into a cookie or a URL")
	}
	code, page := get(t, c, x.url+"/inbox")
	if code != 200 || !strings.Contains(page, "Ada Jones") || strings.Contains(page, x.Keys["walkers"]) {
		t.Fatalf("inbox = %d", code)
	}
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token on the page")
	}
	id := strings.TrimPrefix(x.referral, "referrals/")
	// A form without the session's token is refused and changes nothing.
	resp, _ = post(t, c, x.url+"/referrals/"+id+"/accept", url.Values{"csrf": {"forged"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("forged form = %d", resp.StatusCode)
	}
	r, _ := pb.NewReferralServiceClient(x.Conn).GetReferral(x.As("pcn"), &pb.GetReferralRequest{Name: x.referral})
	if r.State != pb.ReferralState_REFERRAL_STATE_REQUESTED {
		t.Errorf("a forged form changed the referral: %v", r.State)
	}
	// Sign out ends the session.
	resp, _ = post(t, c, x.url+"/signout", url.Values{"csrf": {m[1]}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign out = %d", resp.StatusCode)
	}
	if code, _ := get(t, c, x.url+"/inbox"); code != http.StatusSeeOther {
		t.Errorf("inbox after signing out = %d", code)
	}
}

func TestPagesFollowConsentAndRules(t *testing.T) {
	x := startInbox(t)
	c := browser(t)
	signIn(t, c, x.url, x.Keys["walkers"])
	id := strings.TrimPrefix(x.referral, "referrals/")
	_, page := get(t, c, x.url+"/referrals/"+id)
	csrf := csrfRE.FindStringSubmatch(page)[1]
	if !strings.Contains(page, exchangetest.AdaNHS) || !strings.Contains(page, "/accept") || strings.Contains(page, "/complete") {
		t.Errorf("a new referral's page should show the person and offer accept, not complete")
	}
	// An outcome out of range: 400, the message next to the field, nothing written.
	resp, page := post(t, c, x.url+"/referrals/"+id+"/outcome", url.Values{"csrf": {csrf}, "request_id": {"o1"},
		"instrument": {"WEMWBS"}, "timepoint": {"BASELINE"}, "total": {"71"}})
	if resp.StatusCode != http.StatusBadRequest || !regexp.MustCompile(`field-error" id="total-error">WEMWBS total must be between 14 and 70`).MatchString(page) {
		t.Errorf("outcome 71 = %d", resp.StatusCode)
	}
	l, _ := pb.NewFeedbackServiceClient(x.Conn).ListFeedback(x.As("pcn"), &pb.ListFeedbackRequest{Parent: x.referral})
	if len(l.Feedback) != 0 {
		t.Errorf("a refused outcome was stored: %v", l.Feedback)
	}
	// Another organisation's referral does not exist for this one.
	x.Org("stranger", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	s := browser(t)
	signIn(t, s, x.url, x.Keys["stranger"])
	if code, page := get(t, s, x.url+"/referrals/"+id); code != http.StatusNotFound || strings.Contains(page, "Ada") {
		t.Errorf("a stranger opening the referral = %d", code)
	}
	// After withdrawal the group no longer sees the person.
	cons, _ := pb.NewReferralServiceClient(x.Conn).GetReferral(x.As("pcn"), &pb.GetReferralRequest{Name: x.referral})
	if _, err := pb.NewConsentServiceClient(x.Conn).WithdrawConsent(x.As("pcn"), &pb.WithdrawConsentRequest{Name: cons.Consent}); err != nil {
		t.Fatal(err)
	}
	_, page = get(t, c, x.url+"/referrals/"+id)
	if strings.Contains(page, exchangetest.AdaNHS) || strings.Contains(page, "Ada") || !strings.Contains(page, "consent does not allow") {
		t.Errorf("after withdrawal the page still shows the person")
	}
}

// TestCrossSiteSignInIsRefused: a sign-in form posted from another site,
// with a valid key, signs nobody in (issue 25, defect 9): it lacks the
// sign-in token, or the browser says it came from elsewhere. Every other
// state-changing request from elsewhere is refused too, before its CSRF
// token is even read.
func TestCrossSiteSignInIsRefused(t *testing.T) {
	x := startInbox(t)
	key := x.Keys["walkers"]
	signedIn := func(c *http.Client) bool {
		code, _ := get(t, c, x.url+"/inbox")
		return code == http.StatusOK
	}
	// An attacker's page posts the form: no token, no sign-in cookie.
	c := browser(t)
	if resp, _ := post(t, c, x.url+"/signin", url.Values{"api_key": {key}}); resp.StatusCode != http.StatusForbidden || signedIn(c) {
		t.Fatalf("sign-in without the form's token: %d, signed in %v", resp.StatusCode, signedIn(c))
	}
	// A token from the attacker's own visit, without the cookie it goes with.
	c2 := browser(t)
	_, page := get(t, c2, x.url+"/")
	token := csrfRE.FindStringSubmatch(page)[1]
	if resp, _ := post(t, c, x.url+"/signin", url.Values{"api_key": {key}, "csrf": {token}}); resp.StatusCode != http.StatusForbidden || signedIn(c) {
		t.Fatalf("sign-in with another browser's token: %d", resp.StatusCode)
	}
	// With the token and cookie, but the browser says another site sent it.
	for name, h := range map[string][2]string{
		"Origin":         {"Origin", "https://attacker.example"},
		"Sec-Fetch-Site": {"Sec-Fetch-Site", "cross-site"},
		"same-site":      {"Sec-Fetch-Site", "same-site"},
	} {
		c := browser(t)
		_, page := get(t, c, x.url+"/")
		form := url.Values{"api_key": {key}, "csrf": {csrfRE.FindStringSubmatch(page)[1]}}
		req, _ := http.NewRequest("POST", x.url+"/signin", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set(h[0], h[1])
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || signedIn(c) {
			t.Errorf("%s: sign-in %d, signed in %v; want 403", name, resp.StatusCode, signedIn(c))
		}
	}
	// The exchange's own page, as a browser sends it, signs in.
	c3 := browser(t)
	_, page = get(t, c3, x.url+"/")
	form := url.Values{"api_key": {key}, "csrf": {csrfRE.FindStringSubmatch(page)[1]}}
	req, _ := http.NewRequest("POST", x.url+"/signin", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", x.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := c3.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !signedIn(c3) {
		t.Fatalf("same-origin sign-in: %d", resp.StatusCode)
	}
	// Signed in, a cross-site post of an action is refused even with the
	// session's CSRF token.
	_, inbox := get(t, c3, x.url+"/capacity")
	csrf := csrfRE.FindStringSubmatch(inbox)[1]
	req, _ = http.NewRequest("POST", x.url+"/signout", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://attacker.example")
	resp, err = c3.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !signedIn(c3) {
		t.Fatalf("cross-site sign-out: %d, still signed in %v", resp.StatusCode, signedIn(c3))
	}
}

// TestFormsNotUTF8: a form value that is not UTF-8 is the caller's fault
// (400), whatever connection the pages call the exchange on; here a
// network one, on which the request could not even be sent.
func TestFormsNotUTF8(t *testing.T) {
	x := startInbox(t)
	c := browser(t)
	signIn(t, c, x.url, x.Keys["walkers"])
	_, page := get(t, c, x.url+"/capacity")
	csrf := csrfRE.FindStringSubmatch(page)[1]
	resp, body := post(t, c, x.url+"/capacity", url.Values{"csrf": {csrf}, "notes": {"caf\xe9"}, "status": {"ACCEPTING"}})
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a form value that is not UTF-8: %d %s; want 400", resp.StatusCode, body)
	}
}

// TestSignInFromEitherTab: two tabs of the sign-in page share one token,
// so the first tab's form still signs in after the second was opened.
func TestSignInFromEitherTab(t *testing.T) {
	x := startInbox(t)
	c := browser(t)
	_, first := get(t, c, x.url+"/")
	get(t, c, x.url+"/") // the second tab
	resp, _ := post(t, c, x.url+"/signin", url.Values{"api_key": {x.Keys["walkers"]}, "csrf": {csrfRE.FindStringSubmatch(first)[1]}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the first tab's sign-in: %d; want a redirect to the inbox", resp.StatusCode)
	}
}
