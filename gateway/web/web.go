// Package web is the inbox for community groups: server-rendered pages,
// working without JavaScript, where an organisation signs in with its API
// key, sees its referrals, acts on them, reports uptake and outcomes, and
// sets its capacity. Every page calls the exchange through a gRPC client
// connection with the organisation's key, so the same authorisation,
// consent and validation apply as for any other caller.
package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/social-prescribing/exchange/gateway"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

//go:embed templates/*.html style.css
var files embed.FS

// Options configure the inbox.
type Options struct {
	// SecureCookies marks the session cookie Secure even when the request
	// did not arrive over TLS (behind a TLS-terminating proxy).
	SecureCookies bool
	// SessionTTL is how long a sign-in lasts; 12 hours when 0.
	SessionTTL time.Duration
}

const cookieName = "exchange_session"

// signInCookie holds the sign-in form's token until the form is posted: a
// form posted from another site carries neither it nor the token (the
// cookie is SameSite=Strict), so nobody can sign a browser in to their own
// organisation from elsewhere.
const signInCookie = "exchange_signin"

type session struct {
	key, org, orgName, csrf string
	expires                 time.Time
	start                   string // the first page: the inbox, or the reports for a commissioner
}

// Web serves the inbox.
type Web struct {
	opt   Options
	tmpl  *template.Template
	css   []byte
	refs  pb.ReferralServiceClient
	fb    pb.FeedbackServiceClient
	dir   pb.DirectoryServiceClient
	capac pb.CapacityServiceClient
	rep   pb.ReportServiceClient

	mu       sync.Mutex
	sessions map[string]*session // by cookie value
}

// New returns the inbox calling the exchange on conn.
func New(conn grpc.ClientConnInterface, opt Options) *Web {
	if opt.SessionTTL <= 0 {
		opt.SessionTTL = 12 * time.Hour
	}
	css, _ := files.ReadFile("style.css")
	w := &Web{
		opt: opt, css: css, sessions: map[string]*session{},
		refs: pb.NewReferralServiceClient(conn), fb: pb.NewFeedbackServiceClient(conn),
		dir: pb.NewDirectoryServiceClient(conn), capac: pb.NewCapacityServiceClient(conn),
		rep: pb.NewReportServiceClient(conn),
	}
	w.tmpl = template.Must(template.New("").Funcs(funcs).ParseFS(files, "templates/*.html"))
	return w
}

// sameSite reports whether a state-changing request came from the exchange's
// own pages. Browsers send Sec-Fetch-Site (or, older ones, at least Origin)
// with every form post; when it names another site, the request is refused.
// A client that sends neither (not a browser), or an Origin of "null" (a
// browser hiding it), is held to the CSRF and sign-in tokens alone.
func sameSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return true
	case "":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && u.Host == r.Host
}

// Handler returns the routes of the inbox.
func (w *Web) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", w.home)
	mux.HandleFunc("POST /signin", w.signIn)
	mux.HandleFunc("POST /signout", w.signedIn(w.signOut))
	mux.HandleFunc("GET /inbox", w.signedIn(w.inbox))
	mux.HandleFunc("GET /referrals/{id}", w.signedIn(w.referral))
	mux.HandleFunc("POST /referrals/{id}/{action}", w.signedIn(w.act))
	mux.HandleFunc("GET /capacity", w.signedIn(w.capacity))
	mux.HandleFunc("POST /capacity", w.signedIn(w.setCapacity))
	mux.HandleFunc("GET /reports", w.signedIn(w.reports))
	mux.HandleFunc("GET /reports/{report}/{file}", w.signedIn(w.reportCSV))
	mux.HandleFunc("GET /style.css", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/css; charset=utf-8")
		rw.Header().Set("Cache-Control", "max-age=3600")
		rw.Write(w.css)
	})
	return securityHeaders(mux)
}

// securityHeaders forbids framing, sniffing and any script or outside
// resource: the pages need none. An address that is not UTF-8 is refused
// here, as the caller's fault, before any page reads it.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h := rw.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		// same-origin, not no-referrer: a browser then sends the pages' own
		// Origin with their forms, which sameSite checks.
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		if field, bad := gateway.BadURL(r.URL); bad {
			gateway.LogMalformed(r.Context(), r.Method, field)
			http.Error(rw, "This address is not one the exchange gave. Go back and follow a link.", http.StatusBadRequest)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !sameSite(r) {
			http.Error(rw, "This form was sent from another website, so the exchange did not act on it. Open the exchange's own page and try again.", http.StatusForbidden)
			return
		}
		next.ServeHTTP(rw, r)
	})
}

func random() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// call returns a context that calls the exchange as the signed-in
// organisation.
func (s *session) call(r *http.Request) context.Context {
	return metadata.AppendToOutgoingContext(r.Context(), "authorization", "Bearer "+s.key)
}

func (w *Web) lookup(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.sessions[c.Value]
	if s != nil && time.Now().After(s.expires) {
		delete(w.sessions, c.Value)
		return nil
	}
	return s
}

type handler func(rw http.ResponseWriter, r *http.Request, s *session)

// signedIn requires a session, and a matching CSRF token on every POST.
func (w *Web) signedIn(h handler) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		s := w.lookup(r)
		if s == nil {
			http.Redirect(rw, r, "/", http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(rw, r.Body, 64<<10)
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.csrf)) != 1 {
				http.Error(rw, "This form has expired. Go back, reload the page and try again.", http.StatusForbidden)
				return
			}
			// The exchange refuses strings that are not UTF-8; say so here,
			// whatever connection the pages call it on.
			if field, bad := gateway.BadValues(r.PostForm); bad {
				gateway.LogMalformed(r.Context(), r.Method, field)
				http.Error(rw, "Some of what was typed could not be read. Go back, check it and try again.", http.StatusBadRequest)
				return
			}
		}
		h(rw, r, s)
	}
}

func (w *Web) setCookie(rw http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(rw, &http.Cookie{Name: cookieName, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: w.opt.SecureCookies || r.TLS != nil})
}

// page is what every template gets.
type page struct {
	Title   string
	Org     string // display name of the signed-in organisation
	CSRF    string
	Flash   string
	Done    string // the action the flash reports, e.g. "accept"
	Error   string
	Content any
}

func (w *Web) render(rw http.ResponseWriter, code int, name string, p page) {
	var b strings.Builder
	if err := w.tmpl.ExecuteTemplate(&b, name, p); err != nil {
		http.Error(rw, "the page could not be shown", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.WriteHeader(code)
	rw.Write([]byte(b.String()))
}

func (w *Web) home(rw http.ResponseWriter, r *http.Request) {
	if s := w.lookup(r); s != nil {
		http.Redirect(rw, r, s.start, http.StatusSeeOther)
		return
	}
	w.signInPage(rw, r, http.StatusOK, "")
}

// signInPage shows the sign-in form with its token, in the form and in the
// signInCookie: the browser's own, if it has one, so that two tabs of the
// sign-in page both work.
func (w *Web) signInPage(rw http.ResponseWriter, r *http.Request, code int, msg string) {
	token := random()
	if c, err := r.Cookie(signInCookie); err == nil && len(c.Value) == len(token) {
		token = c.Value
	}
	// Path "/", so that the sign-in page (at "/") sees it and reuses it.
	http.SetCookie(rw, &http.Cookie{Name: signInCookie, Value: token, Path: "/", MaxAge: 3600,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: w.opt.SecureCookies || r.TLS != nil})
	w.render(rw, code, "signin.html", page{Title: "Sign in", CSRF: token, Error: msg})
}

func (w *Web) signIn(rw http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(rw, r.Body, 8<<10)
	key := strings.TrimSpace(r.PostFormValue("api_key"))
	fail := func(msg string) { w.signInPage(rw, r, http.StatusUnauthorized, msg) }
	c, err := r.Cookie(signInCookie)
	if err != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(c.Value)) != 1 {
		w.signInPage(rw, r, http.StatusForbidden, "This sign-in form has expired. Type your key again and sign in.")
		return
	}
	org, _, _, ok := pb.ParseAPIKey(key)
	if !ok {
		fail("That is not an exchange API key. It starts with sprx_ and was given to you when your organisation joined.")
		return
	}
	s := &session{key: key, org: org, csrf: random(), expires: time.Now().Add(w.opt.SessionTTL)}
	o, err := w.dir.GetOrganization(metadata.AppendToOutgoingContext(r.Context(), "authorization", "Bearer "+key),
		&pb.GetOrganizationRequest{Name: s.org})
	if err != nil {
		fail("The exchange did not accept that key. Check it, or ask the exchange's operator for a new one.")
		return
	}
	s.orgName, s.start = o.DisplayName, "/inbox"
	if o.Kind == pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER {
		s.start = "/reports" // a commissioner receives no referrals
	}
	id := random()
	w.mu.Lock()
	for k, old := range w.sessions { // drop expired sessions as new ones come
		if time.Now().After(old.expires) {
			delete(w.sessions, k)
		}
	}
	w.sessions[id] = s
	w.mu.Unlock()
	w.setCookie(rw, r, id, int(w.opt.SessionTTL.Seconds()))
	http.SetCookie(rw, &http.Cookie{Name: signInCookie, Path: "/", MaxAge: -1})
	http.Redirect(rw, r, s.start, http.StatusSeeOther)
}

func (w *Web) signOut(rw http.ResponseWriter, r *http.Request, s *session) {
	if c, err := r.Cookie(cookieName); err == nil {
		w.mu.Lock()
		delete(w.sessions, c.Value)
		w.mu.Unlock()
	}
	w.setCookie(rw, r, "", -1)
	http.Redirect(rw, r, "/", http.StatusSeeOther)
}
