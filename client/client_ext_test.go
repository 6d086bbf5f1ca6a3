package client_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/social-prescribing/exchange/client"
	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

func dial(t *testing.T, x *exchangetest.Exchange, org string) *client.Client {
	t.Helper()
	c, err := client.Dial(x.Addr, client.WithInsecure(), client.WithAPIKey(x.Keys[org]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRetryCreatesOneReferral loses the response to the first
// CreateReferral after the exchange has stored it: the client retries with
// the same request_id and gets the stored referral, not a second one.
func TestRetryCreatesOneReferral(t *testing.T) {
	var calls atomic.Int32
	lose := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if info.FullMethod == "/exchange.v1.ReferralService/CreateReferral" && calls.Add(1) == 1 && err == nil {
			return nil, status.Error(codes.Unavailable, "connection dropped before the reply")
		}
		return resp, err
	}
	x := exchangetest.StartWith(t, api.Options{}, lose)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	consent := x.ConsentFor("practice", exchangetest.AdaNHS, nil)
	c := dial(t, x, "practice")
	r, err := c.Referrals.CreateReferral(context.Background(), &pb.CreateReferralRequest{Referral: &pb.Referral{
		RecipientService: walks, Person: exchangetest.Ada(), Consent: consent.Name, Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
		Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING}})
	if err != nil {
		t.Fatalf("CreateReferral through a lost reply: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("the exchange saw %d calls, want the first and one retry", n)
	}
	l, err := c.Referrals.ListReferrals(context.Background(), &pb.ListReferralsRequest{})
	if err != nil || len(l.Referrals) != 1 || l.Referrals[0].Name != r.Name {
		t.Fatalf("referrals = %v, %v; want exactly %s", l, err, r.Name)
	}
}

// TestWatchAcrossRestart follows the feed while the exchange restarts:
// every event arrives once, in order, with none missed.
func TestWatchAcrossRestart(t *testing.T) {
	x := exchangetest.Start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	c := dial(t, x, "practice")
	var mu sync.Mutex
	var got []int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Watch(ctx, 0, func(e *pb.Event) error {
			mu.Lock()
			got = append(got, e.Sequence)
			mu.Unlock()
			return nil
		})
	}()
	waitFor := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; {
			mu.Lock()
			have := len(got)
			mu.Unlock()
			if have >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("watched %d events, want %d", have, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	l, err := c.Events.ListEvents(context.Background(), &pb.ListEventsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	before := len(l.Events)
	for i := range 3 {
		x.ConsentFor("practice", exchangetest.NHSNumber(i), nil)
	}
	waitFor(before + 3)
	x.Restart()
	for i := range 3 {
		x.ConsentFor("practice", exchangetest.NHSNumber(100+i), nil)
	}
	waitFor(before + 6)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Watch ended with %v", err)
	}
	l, err = c.Events.ListEvents(context.Background(), &pb.ListEventsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var want []int64
	for _, e := range l.Events {
		want = append(want, e.Sequence)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("watched %v, the feed has %v", got, want)
	}
}

// TestRateLimitedCallsWait: over its rate limit, the client waits the delay
// the exchange asks for and retries, so a burst of calls all succeed, paced
// by the limit; a stream over the stream cap fails at once.
func TestRateLimitedCallsWait(t *testing.T) {
	x := exchangetest.StartWith(t, api.Options{Limits: api.Limits{Rate: 20, Burst: 10, Streams: 1}})
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	c := dial(t, x, "group")
	start := time.Now()
	for i := range 20 {
		if _, err := c.Directory.GetOrganization(context.Background(), &pb.GetOrganizationRequest{Name: "organizations/group"}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("20 calls at 20 a second after a burst of 10 took %v: the limit did not pace them", took)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, err := c.Events.WatchEvents(ctx, &pb.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Recv(); err != nil {
		t.Fatal(err)
	}
	// Tokens for the next call, so that only the stream cap refuses it
	// and its time is one round trip, not waits the rate limit asked for.
	time.Sleep(150 * time.Millisecond)
	start = time.Now()
	second, err := c.Events.WatchEvents(context.Background(), &pb.WatchEventsRequest{})
	if err == nil {
		_, err = second.Recv()
	}
	exchangetest.WantErr(t, err, codes.ResourceExhausted, "TOO_MANY_STREAMS")
	if took := time.Since(start); took > 150*time.Millisecond {
		t.Errorf("the refused stream took %v: it was retried", took)
	}
}

// TestRefusedStreamWaitsForRequest: the exchange sends a stream's refusal
// (a bad key, the cap on open streams, the rate limit) only after the
// client's request has arrived, so the client's send never races the
// refusal. A client that loses that race while replaying a retried stream
// reports io.EOF instead of the refusal (the flaky end of
// TestRateLimitedCallsWait).
func TestRefusedStreamWaitsForRequest(t *testing.T) {
	x := exchangetest.StartWith(t, api.Options{Limits: api.Limits{Streams: 1}})
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := &grpc.StreamDesc{StreamName: "WatchEvents", ServerStreams: true}
	const method = "/exchange.v1.EventService/WatchEvents"
	c := dial(t, x, "group")
	if _, err := c.Events.WatchEvents(ctx, &pb.WatchEventsRequest{}); err != nil {
		t.Fatal(err) // the one stream the cap allows
	}
	bad, err := client.Dial(x.Addr, client.WithInsecure(), client.WithAPIKey("not-a-key"))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	for _, tc := range []struct {
		name   string
		conn   *grpc.ClientConn
		code   codes.Code
		reason string
	}{
		{"bad key", bad.Conn, codes.Unauthenticated, "API_KEY_INVALID"},
		{"too many streams", c.Conn, codes.ResourceExhausted, "TOO_MANY_STREAMS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.conn.NewStream(ctx, watch, method, grpc.WaitForReady(true))
			if err != nil {
				t.Fatal(err)
			}
			headers := make(chan error, 1)
			go func() { _, err := s.Header(); headers <- err }()
			select {
			case <-headers:
				t.Fatal("the refusal came before the request was sent")
			case <-time.After(150 * time.Millisecond):
			}
			if err := s.SendMsg(&pb.WatchEventsRequest{}); err != nil {
				t.Fatal(err)
			}
			if err := s.CloseSend(); err != nil {
				t.Fatal(err)
			}
			<-headers
			exchangetest.WantErr(t, s.RecvMsg(new(pb.WatchEventsResponse)), tc.code, tc.reason)
		})
	}
}
