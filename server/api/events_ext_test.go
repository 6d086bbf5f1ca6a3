package api_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// TestEventsFromNow: after = -1 reads the feed from now on: no event at
// once, and the newest sequence number to go on from; with a wait or on a
// watch, the next event and nothing older.
func TestEventsFromNow(t *testing.T) {
	x := exchangetest.Start(t)
	x.Org("gps", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	ev := pb.NewEventServiceClient(x.Conn)
	x.ConsentFor("gps", exchangetest.NHSNumber(10), nil)
	all, err := ev.ListEvents(x.As("gps"), &pb.ListEventsRequest{})
	if err != nil || len(all.Events) == 0 {
		t.Fatalf("the whole feed: %v, %v", all, err)
	}
	now, err := ev.ListEvents(x.As("gps"), &pb.ListEventsRequest{After: -1})
	if err != nil || len(now.Events) != 0 || now.LastSequence != all.LastSequence {
		t.Fatalf("from now: %v, %v; want no event and last_sequence %d", now, err, all.LastSequence)
	}

	stream, err := ev.WatchEvents(x.As("gps"), &pb.WatchEventsRequest{After: -1})
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan *pb.ListEventsResponse, 1)
	go func() {
		r, err := ev.ListEvents(x.As("gps"), &pb.ListEventsRequest{After: -1, Wait: durationpb.New(20 * time.Second)})
		if err != nil {
			t.Error(err)
		}
		waited <- r
	}()
	time.Sleep(300 * time.Millisecond) // both are waiting
	c := x.ConsentFor("gps", exchangetest.NHSNumber(20), nil)
	if r := <-waited; r == nil || len(r.Events) != 1 || r.Events[0].Resource != c.Name {
		t.Errorf("from now, waiting: %v; want the new consent's event alone", r)
	}
	if m, err := stream.Recv(); err != nil || m.Event.Resource != c.Name {
		t.Errorf("watch from now: %v, %v; want the new consent's event first", m, err)
	}
	next, err := ev.ListEvents(x.As("gps"), &pb.ListEventsRequest{After: now.LastSequence})
	if err != nil || len(next.Events) != 1 || next.Events[0].Resource != c.Name {
		t.Errorf("after the last sequence of from now: %v, %v", next, err)
	}

	_, err = ev.ListEvents(x.As("gps"), &pb.ListEventsRequest{After: -2})
	exchangetest.WantErr(t, err, codes.InvalidArgument, "FIELD_INVALID")
}
