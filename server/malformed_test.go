package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
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
	store, err := bolt.Open(filepath.Join(t.TempDir(), "exchange.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	op, err := api.CreateOperator(context.Background(), store, time.Now().UTC())
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(store, api.Options{})
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
