package client_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// TestWatchFromNowAcrossRestart: Watch from now (after = -1) takes "now"
// once, so a stream dropped before the first event still resumes from
// there and misses nothing committed while it reconnects.
func TestWatchFromNowAcrossRestart(t *testing.T) {
	x := exchangetest.Start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	c := dial(t, x, "practice")
	var mu sync.Mutex
	var got []int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Watch(ctx, -1, func(e *pb.Event) error {
		mu.Lock()
		got = append(got, e.Sequence)
		mu.Unlock()
		return nil
	})
	time.Sleep(300 * time.Millisecond) // the stream is open, from now
	l, _ := c.Events.ListEvents(context.Background(), &pb.ListEventsRequest{PageSize: 1000})
	start := l.LastSequence
	x.Restart()
	for i := range 3 { // while the client backs off before reconnecting
		x.ConsentFor("practice", exchangetest.NHSNumber(i), nil)
	}
	time.Sleep(2 * time.Second)
	x.ConsentFor("practice", exchangetest.NHSNumber(50), nil)
	time.Sleep(1 * time.Second)
	l, _ = c.Events.ListEvents(context.Background(), &pb.ListEventsRequest{After: start, PageSize: 1000})
	var want []int64
	for _, e := range l.Events {
		want = append(want, e.Sequence)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("watched from now %v; the feed since the watch began has %v", got, want)
	}
}
