package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/rules/lifecycle"
	"github.com/social-prescribing/exchange/server/storage/bolt"
)

// op is one write the crash test makes, with its request_id, and what it
// learnt of it: acknowledged (resp set) or not (the exchange died first).
type op struct {
	kind  string // "consent", "referral", "accept", "note"
	key   string // the caller's API key
	req   proto.Message
	resp  proto.Message
	acked bool
}

// call sends an op once.
func (o *op) call(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+o.key)
	switch r := o.req.(type) {
	case *pb.CreateConsentRequest:
		return pb.NewConsentServiceClient(conn).CreateConsent(ctx, r)
	case *pb.CreateReferralRequest:
		return pb.NewReferralServiceClient(conn).CreateReferral(ctx, r)
	case *pb.AcceptReferralRequest:
		return pb.NewReferralServiceClient(conn).AcceptReferral(ctx, r)
	case *pb.CreateFeedbackRequest:
		return pb.NewFeedbackServiceClient(conn).CreateFeedback(ctx, r)
	}
	panic(fmt.Sprintf("op %T", o.req))
}

// TestCrashSafety runs the exchange as a child process, drives concurrent
// consents, referrals, state changes and feedback, kills it with SIGKILL at
// a random moment, restarts it on the same file, and checks, round after
// round: every acknowledged write is there; retrying each unacknowledged
// call with its request_id yields exactly one result; nothing half-written
// is visible (every referral has its consent, its event and its capacity
// count); event sequence numbers have no gap; and bbolt's consistency check
// passes on the file.
func TestCrashSafety(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	args := []string{"--rate-limit", "0", "--retention", "0"}
	s := startBinary(t, bin, dir, args...)
	dialed := func(s *server) *grpc.ClientConn {
		conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDisableRetry())
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	conn := dialed(s)
	operator := operatorKey(t, dataDir)
	keys, service := crashParties(t, conn, operator)
	conn.Close()

	w := &chains{keys: keys, service: service, referral: map[string]string{}}
	unanswered := 0
	rounds := 10
	for round := range rounds {
		conn := dialed(s)
		ctx, stop := context.WithCancel(context.Background())
		wg := w.drive(ctx, round, []*grpc.ClientConn{conn}, 8)
		time.Sleep(time.Duration(100+rand.IntN(600)) * time.Millisecond)
		// Kill the exchange under the calls in flight (they go unanswered,
		// made or not), and stop starting new chains.
		s.cmd.Process.Signal(syscall.SIGKILL)
		stop()
		s.cmd.Wait()
		wg.Wait()
		conn.Close()
		if err := bolt.Check(filepath.Join(dataDir, "exchange.db")); err != nil {
			t.Fatalf("round %d: bbolt check after SIGKILL: %v", round, err)
		}

		s = startBinary(t, bin, dir, args...)
		conn = dialed(s)
		retried := w.retry(t, round, conn)
		verify(t, round, conn, keys, operator, w.all, w.checked, w.referral, service)
		conn.Close()
		t.Logf("round %d: %d writes, %d of them unanswered and retried", round, len(w.all)-w.checked, retried)
		w.checked = len(w.all)
		unanswered += retried
	}
	if unanswered == 0 {
		t.Error("no call was in flight at any kill: the test did not test crashes")
	}
	if len(w.all) < 40*rounds {
		t.Errorf("only %d writes in %d rounds: the test did not load the exchange", len(w.all), rounds)
	}
}

// crashParties makes the crash tests' practice and community group, their
// keys, and the group's service.
func crashParties(t *testing.T, conn *grpc.ClientConn, operator string) (keys map[string]string, service string) {
	t.Helper()
	keys = map[string]string{}
	for id, kind := range map[string]pb.OrganizationKind{"practice": pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE, "group": pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION} {
		o, err := pb.NewDirectoryServiceClient(conn).CreateOrganization(as(operator), &pb.CreateOrganizationRequest{OrganizationId: id, Organization: &pb.Organization{Kind: kind, DisplayName: id}})
		if err != nil {
			t.Fatal(err)
		}
		k, err := pb.NewApiKeyServiceClient(conn).CreateApiKey(as(operator), &pb.CreateApiKeyRequest{Parent: o.Name})
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = k.Secret
	}
	svc, err := pb.NewDirectoryServiceClient(conn).CreateService(as(keys["group"]), &pb.CreateServiceRequest{Parent: "organizations/group", ServiceId: "walks",
		Service: &pb.Service{DisplayName: "Walks", Categories: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, DefaultReplyWithin: durationpb.New(72 * time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	return keys, svc.Name
}

// chains are the crash tests' writes: workers walking people through
// consent, referral, accept and a note, and what they learnt of each call.
type chains struct {
	keys     map[string]string
	service  string
	mu       sync.Mutex
	all      []*op
	person   int
	referral map[string]string // request_id of the create -> referral name
	checked  int               // ops before this were verified in an earlier round
}

// drive starts workers, spread over the connections, until ctx ends.
func (w *chains) drive(ctx context.Context, round int, conns []*grpc.ClientConn, workers int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for n := range workers {
		conn := conns[n%len(conns)]
		wg.Go(func() {
			// Each worker stops a chain, and its work, at the first
			// unanswered call.
			for i := 0; ctx.Err() == nil; i++ {
				w.mu.Lock()
				w.person++
				nhs := exchangetest.NHSNumber(7000 + 13*w.person)
				w.mu.Unlock()
				id := fmt.Sprintf("r%d-w%d-%d", round, n, i)
				run := func(o *op) bool {
					w.mu.Lock()
					w.all = append(w.all, o)
					w.mu.Unlock()
					resp, err := o.call(ctx, conn)
					if err != nil {
						return false
					}
					w.mu.Lock()
					o.resp, o.acked = resp, true
					w.mu.Unlock()
					return true
				}
				consent := &op{kind: "consent", key: w.keys["practice"], req: &pb.CreateConsentRequest{RequestId: id + "-c", Consent: &pb.Consent{
					NhsNumber: nhs, Method: pb.ConsentMethod_CONSENT_METHOD_VERBAL,
					Purposes:       []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER},
					RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}}}
				if !run(consent) {
					return
				}
				p := exchangetest.Ada()
				p.NhsNumber = nhs
				ref := &op{kind: "referral", key: w.keys["practice"], req: &pb.CreateReferralRequest{RequestId: id + "-r", Referral: &pb.Referral{
					RecipientService: w.service, Person: p, Consent: consent.resp.(*pb.Consent).Name, Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
					Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING,
					Reason: "Lonely since her husband died; would like to walk with others."}}}
				if !run(ref) {
					return
				}
				name := ref.resp.(*pb.Referral).Name
				if !run(&op{kind: "accept", key: w.keys["group"], req: &pb.AcceptReferralRequest{Name: name, RequestId: id + "-a"}}) {
					return
				}
				if !run(&op{kind: "note", key: w.keys["group"], req: &pb.CreateFeedbackRequest{Parent: name, RequestId: id + "-n",
					Feedback: &pb.Feedback{Content: &pb.Feedback_Note{Note: &pb.Note{Text: "Welcome to the walking group"}}}}}) {
					return
				}
			}
		})
	}
	return &wg
}

// retry retries what was not acknowledged since the last round, twice, in
// the order it was sent: the first retry makes it (or finds it made), the
// second must answer the same. It returns how many it retried.
func (w *chains) retry(t *testing.T, round int, conn *grpc.ClientConn) int {
	t.Helper()
	retried := 0
	for _, o := range w.all[w.checked:] {
		if o.acked {
			continue
		}
		retried++
		first, err := o.call(context.Background(), conn)
		if err != nil {
			t.Fatalf("round %d: retrying %s %v: %v", round, o.kind, o.req, err)
		}
		again, err := o.call(context.Background(), conn)
		if err != nil || !proto.Equal(first, again) {
			t.Fatalf("round %d: a second retry of %s answered differently: %v / %v (%v)", round, o.kind, first, again, err)
		}
		o.resp, o.acked = first, true
	}
	for _, o := range w.all {
		if r, ok := o.req.(*pb.CreateReferralRequest); ok {
			w.referral[r.RequestId] = o.resp.(*pb.Referral).Name
		}
	}
	return retried
}

// verify checks the store through the API after a restart.
// Ops before checked were verified in earlier rounds; the referral list,
// the capacity counts and the event feed are checked whole every round.
func verify(t *testing.T, round int, conn *grpc.ClientConn, keys map[string]string, operator string, all []*op, checked int, referral map[string]string, service string) {
	t.Helper()
	refs := pb.NewReferralServiceClient(conn)
	practice, group := as(keys["practice"]), as(keys["group"])
	// Every acknowledged write is there, as acknowledged.
	wantState := map[string]pb.ReferralState{}
	notes := map[string][]string{}
	for i, o := range all {
		switch o.kind {
		case "consent":
			if i < checked {
				continue
			}
			c, err := pb.NewConsentServiceClient(conn).GetConsent(practice, &pb.GetConsentRequest{Name: o.resp.(*pb.Consent).Name})
			if err != nil || c.NhsNumber != o.req.(*pb.CreateConsentRequest).Consent.NhsNumber {
				t.Fatalf("round %d: acknowledged consent %v: %v %v", round, o.resp, c, err)
			}
		case "referral":
			if _, ok := wantState[o.resp.(*pb.Referral).Name]; !ok {
				wantState[o.resp.(*pb.Referral).Name] = pb.ReferralState_REFERRAL_STATE_REQUESTED
			}
		case "accept":
			wantState[o.resp.(*pb.Referral).Name] = pb.ReferralState_REFERRAL_STATE_ACCEPTED
		case "note":
			if i < checked {
				continue
			}
			name := o.req.(*pb.CreateFeedbackRequest).Parent
			notes[name] = append(notes[name], o.resp.(*pb.Feedback).Name)
		}
	}
	// Exactly one referral per create request, each in the state its
	// acknowledged moves put it in, with its notes.
	seen := map[string]bool{}
	var page string
	for {
		l, err := refs.ListReferrals(practice, &pb.ListReferralsRequest{PageSize: 1000, PageToken: page})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range l.Referrals {
			seen[r.Name] = true
			want, ok := wantState[r.Name]
			if !ok {
				t.Fatalf("round %d: referral %s was never acknowledged nor retried", round, r.Name)
			}
			if r.State != want {
				t.Fatalf("round %d: %s is %v, want %v", round, r.Name, r.State, want)
			}
			if _, err := pb.NewConsentServiceClient(conn).GetConsent(practice, &pb.GetConsentRequest{Name: r.Consent}); err != nil {
				t.Fatalf("round %d: %s has no consent: %v", round, r.Name, err)
			}
		}
		if page = l.NextPageToken; page == "" {
			break
		}
	}
	if len(seen) != len(wantState) || len(seen) != len(referral) {
		t.Fatalf("round %d: %d referrals stored, %d acknowledged, %d create requests", round, len(seen), len(wantState), len(referral))
	}
	for name, want := range notes {
		f, err := pb.NewFeedbackServiceClient(conn).ListFeedback(group, &pb.ListFeedbackRequest{Parent: name, PageSize: 1000})
		if err != nil || len(f.Feedback) != len(want) {
			t.Fatalf("round %d: feedback of %s = %v (%v), want %v", round, name, f, err, want)
		}
	}
	// The capacity counts agree with the referrals (REQUESTED and ACCEPTED
	// both count against the maximum).
	c, err := pb.NewCapacityServiceClient(conn).GetCapacity(group, &pb.GetCapacityRequest{Name: service + "/capacity"})
	if err != nil {
		t.Fatal(err)
	}
	active := 0
	for _, st := range wantState {
		if lifecycle.Active(st) {
			active++
		}
	}
	if int(c.ActiveReferrals) != active {
		t.Fatalf("round %d: capacity counts %d active, %d referrals are active", round, c.ActiveReferrals, active)
	}
	// The event feed: sequence numbers 1..N without a gap, one
	// REFERRAL_CREATED per referral.
	created := map[string]int{}
	var after, want int64
	for {
		l, err := pb.NewEventServiceClient(conn).ListEvents(as(operator), &pb.ListEventsRequest{After: after, PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range l.Events {
			if want++; e.Sequence != want {
				t.Fatalf("round %d: event sequence %d follows %d", round, e.Sequence, want-1)
			}
			if e.Type == pb.EventType_EVENT_TYPE_REFERRAL_CREATED {
				created[e.Resource]++
			}
		}
		if len(l.Events) == 0 {
			break
		}
		after = l.LastSequence
	}
	for name := range wantState {
		if created[name] != 1 {
			t.Fatalf("round %d: %s has %d REFERRAL_CREATED events", round, name, created[name])
		}
	}
	if len(created) != len(wantState) {
		t.Fatalf("round %d: %d referrals have events, %d exist", round, len(created), len(wantState))
	}
}
