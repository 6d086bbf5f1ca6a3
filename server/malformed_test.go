package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage/bolt"
)

// TestBadUTF8IsTheCallersFault: an address whose path or query is not
// UTF-8 is 400 INVALID_ARGUMENT MALFORMED_REQUEST naming the field, over
// REST and on the web pages, with or without a key, as is a request that
// reaches the services in process with such a string; never 500 INTERNAL
// or a "store failure" (issue 25, defect 5).
func TestBadUTF8IsTheCallersFault(t *testing.T) {
	store, err := exchangetest.OpenBolt(filepath.Join(t.TempDir(), "exchange.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	op, err := api.CreateOperator(context.Background(), store, time.Now().UTC())
	if err != nil {
		t.Fatal(err)
	}
	// The log says the caller was at fault (INFO), never a store failure
	// (ERROR, which would page the operator).
	var logged strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(b)
	}), nil))
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(logger)
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		if out := logged.String(); strings.Contains(out, "level=ERROR") || !strings.Contains(out, "reason=MALFORMED_REQUEST") {
			t.Errorf("the log:\n%s\nwants the refusals as the caller's fault, and no error", out)
		}
	}()
	srv := api.New(store, api.Options{Logger: logger})
	p := newInProcess(srv, srv.UnaryInterceptors(), srv.StreamInterceptors(), nil)
	h, err := httpHandler(context.Background(), p, http.NotFoundHandler(), 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	defer hs.Close()
	for path, field := range map[string]string{
		"/v1/referrals/%FF":                           "path",
		"/v1/referrals?filter=%FF":                    "filter",
		"/v1/referrals/abc/feedback?requestId=%FF":    "requestId",
		"/v1/organizations/%FF":                       "path",
		"/v1/organizations/a/services?pageToken=a%C3": "pageToken",
		"/referrals/%FF":                              "",
	} {
		for _, key := range []string{"", op} {
			req, _ := http.NewRequest("GET", hs.URL+path, nil)
			if key != "" {
				req.Header.Set("Authorization", "Bearer "+key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("GET %s: %d %s; want 400", path, resp.StatusCode, b)
				continue
			}
			if field == "" {
				continue // a web page
			}
			var body struct {
				Code    int
				Details []struct {
					Reason          string
					FieldViolations []struct{ Field string }
				}
			}
			if err := json.Unmarshal(b, &body); err != nil || body.Code != 3 || len(body.Details) != 2 ||
				body.Details[0].Reason != "MALFORMED_REQUEST" || len(body.Details[1].FieldViolations) != 1 ||
				body.Details[1].FieldViolations[0].Field != field {
				t.Errorf("GET %s: %s; want INVALID_ARGUMENT, MALFORMED_REQUEST and the field %s", path, b, field)
			}
		}
	}
	// In process, past the gateway: the services refuse it themselves.
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+op)
	_, err = pb.NewReferralServiceClient(p).GetReferral(ctx, &pb.GetReferralRequest{Name: "referrals/\xff"})
	exchangetest.WantErr(t, err, 3, "MALFORMED_REQUEST")
	_, err = pb.NewReferralServiceClient(p).ListReferrals(context.Background(), &pb.ListReferralsRequest{Filter: "state = \xff"})
	exchangetest.WantErr(t, err, 3, "MALFORMED_REQUEST")
	if strings.Contains(err.Error(), "\xff") {
		t.Errorf("the error quotes the bad bytes: %v", err)
	}
}

// FuzzHTTPAddresses sends any path and query, as any caller, to the HTTP
// server as it runs (the REST gateway, the web pages, over the in-process
// channel). Whatever the address: never a 5xx; every REST error is JSON
// with an ErrorInfo reason.
func FuzzHTTPAddresses(f *testing.F) {
	store, err := exchangetest.OpenBolt(filepath.Join(f.TempDir(), "exchange.db"), bolt.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	op, err := api.CreateOperator(context.Background(), store, time.Now().UTC())
	if err != nil {
		f.Fatal(err)
	}
	srv := api.New(store, api.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	p := newInProcess(srv, srv.UnaryInterceptors(), srv.StreamInterceptors(), nil)
	h, err := httpHandler(context.Background(), p, http.NotFoundHandler(), 1<<20, false)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{"/v1/referrals/%FF", "/v1/referrals?filter=%FF", "/v1/referrals/abc/feedback?requestId=%FF",
		"/v1/organizations/%FF", "/referrals/%FF", "/v1/referrals?filter=state%20%3D%20REQUESTED&pageSize=2",
		"/v1/organizations/a/services/b/capacity", "/v1/events?after=1&wait=1ms", "/v1/consents?nhsNumber=9434765919",
		"/v1/referrals/%00", "/v1/organizations?filter=kind%20%3D%20%22", "/v1/reports/activity?filter.startTime=x",
		"/v1/referrals?pageToken=%C3%28", "/inbox?x=%FF", "/v1/auditEvents?organization=%E2%82", "/v1%2F"} {
		f.Add(uint8(0), seed, true)
		f.Add(uint8(1), seed, false)
	}
	methods := []string{"GET", "POST", "PATCH", "DELETE"}
	f.Fuzz(func(t *testing.T, m uint8, address string, key bool) {
		u, err := url.Parse(address)
		if err != nil || u.Host != "" || u.Scheme != "" || !strings.HasPrefix(u.Path, "/") {
			return
		}
		req := httptest.NewRequest(methods[int(m)%len(methods)], "http://exchange.example/", nil)
		req.URL.Path, req.URL.RawPath, req.URL.RawQuery, req.RequestURI = u.Path, u.RawPath, u.RawQuery, u.RequestURI()
		if key {
			req.Header.Set("Authorization", "Bearer "+op)
		}
		// A long-poll of the events is cut short: the caller giving up
		// (504, DEADLINE_EXCEEDED) is not the exchange's fault.
		ctx, cancel := context.WithTimeout(req.Context(), 200*time.Millisecond)
		defer cancel()
		req = req.WithContext(ctx)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == http.StatusGatewayTimeout && ctx.Err() != nil {
			return
		}
		if rec.Code >= 500 {
			t.Fatalf("%s %s: HTTP %d %s", req.Method, address, rec.Code, rec.Body)
		}
		// The mux routes on the escaped path: /v1%2F is a web page.
		if !strings.HasPrefix(u.EscapedPath(), "/v1/") || rec.Code < 400 {
			return
		}
		var body struct{ Details []struct{ Reason string } }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Details) == 0 || body.Details[0].Reason == "" {
			t.Fatalf("%s %s: HTTP %d without an ErrorInfo reason: %s", req.Method, address, rec.Code, rec.Body)
		}
	})
}

// writerFunc is an io.Writer of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
