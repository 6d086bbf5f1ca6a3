package api_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/rules/policy"
	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/bolt"
)

// world is the authorisation matrix's cast: practice -> pcn -> group, and
// a stranger.
func world(t *testing.T, opt api.Options) *exchange {
	x := startWith(t, opt)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("pcn", pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	x.Org("stranger", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	x.Service("pcn", "link-workers", pb.Category_CATEGORY_SOCIAL_ISOLATION)
	x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	return x
}

func (x *exchange) audit(t *testing.T, req *pb.ListAuditEventsRequest) []*pb.AuditEvent {
	t.Helper()
	var out []*pb.AuditEvent
	for {
		resp, err := pb.NewAdminServiceClient(x.Conn).ListAuditEvents(x.As("operator"), req)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.AuditEvents...)
		if resp.NextPageToken == "" {
			return out
		}
		req = proto.CloneOf(req)
		req.PageToken = resp.NextPageToken
	}
}

func TestAuditedCoversEveryRPC(t *testing.T) {
	protoregistry.GlobalFiles.RangeFilesByPackage("exchange.v1", func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			s := f.Services().Get(i)
			for j := range s.Methods().Len() {
				m := fmt.Sprintf("/%s/%s", s.FullName(), s.Methods().Get(j).Name())
				if _, ok := policy.MethodPolicy(s.Methods().Get(j)); !ok {
					t.Errorf("%s has no (exchange.v1.method) option in the contract", m)
				}
				if _, ok := policy.Audited[m]; !ok {
					t.Errorf("%s is missing from policy.Audited", m)
				}
				// The audit log is append-only: the only RPC that touches it reads it.
				if strings.Contains(string(s.Methods().Get(j).Input().FullName()), "Audit") && s.Methods().Get(j).Name() != "ListAuditEvents" {
					t.Errorf("%s takes an audit message: the audit log must not be editable", m)
				}
			}
		}
		return true
	})
}

// TestAuditLog checks that reads, writes and refusals about a referral are
// in the audit log, with who, what, when and the outcome, and nothing of
// the person.
func TestAuditLog(t *testing.T) {
	before := time.Now().UTC()
	x := world(t, api.Options{})
	c := x.chain(t, pb.ReferralState_REFERRAL_STATE_REQUESTED)
	refs := pb.NewReferralServiceClient(x.Conn)
	if _, err := refs.GetReferral(x.As("group"), &pb.GetReferralRequest{Name: c.r2}); err != nil {
		t.Fatal(err)
	}
	if _, err := refs.ListReferrals(x.As("group"), &pb.ListReferralsRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err := refs.GetReferral(x.As("stranger"), &pb.GetReferralRequest{Name: c.r2})
	wantErr(t, err, codes.NotFound, "RESOURCE_NOT_FOUND")
	_, err = refs.StartReferral(x.As("group"), &pb.StartReferralRequest{Name: c.r2})
	wantErr(t, err, codes.FailedPrecondition, "INVALID_TRANSITION")
	_, err = refs.GetReferral(context.Background(), &pb.GetReferralRequest{Name: c.r2})
	wantErr(t, err, codes.Unauthenticated, "API_KEY_MISSING")
	if _, err := pb.NewConsentServiceClient(x.Conn).ListConsents(x.As("practice"), &pb.ListConsentsRequest{NhsNumber: c.nhs}); err != nil {
		t.Fatal(err)
	}

	type row struct{ org, method, code, reason string }
	var got []row
	all := x.audit(t, &pb.ListAuditEventsRequest{Resource: c.r2, PageSize: 2})
	for _, e := range all {
		got = append(got, row{e.Organization, e.Method[strings.LastIndex(e.Method, "/")+1:], e.Code, e.Reason})
		if e.EventTime.AsTime().Before(before) || e.Credential == "" && e.Organization != "" {
			t.Errorf("entry %v: bad time or credential", e)
		}
	}
	want := []row{
		{"organizations/pcn", "CreateReferral", "OK", ""},
		{"organizations/group", "GetReferral", "OK", ""},
		{"organizations/group", "ListReferrals", "OK", ""}, // the list showed r2
		{"organizations/stranger", "GetReferral", "NOT_FOUND", "RESOURCE_NOT_FOUND"},
		{"organizations/group", "StartReferral", "FAILED_PRECONDITION", "INVALID_TRANSITION"},
		{"", "GetReferral", "UNAUTHENTICATED", "API_KEY_MISSING"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("audit of %s:\n got %v\nwant %v", c.r2, got, want)
	}
	if all[0].RequestId == "" {
		t.Error("the write's request_id is not recorded")
	}

	// Filters: organisation, time, and the person's consents by hash.
	for _, e := range x.audit(t, &pb.ListAuditEventsRequest{Organization: "organizations/stranger"}) {
		if e.Organization != "organizations/stranger" {
			t.Errorf("organisation filter let through %v", e)
		}
	}
	if n := len(x.audit(t, &pb.ListAuditEventsRequest{StartTime: timestamppb.New(time.Now().Add(time.Hour))})); n != 0 {
		t.Errorf("%d entries after a future start time", n)
	}
	if n := len(x.audit(t, &pb.ListAuditEventsRequest{EndTime: timestamppb.New(before)})); n != 0 {
		t.Errorf("%d entries before the first call", n)
	}
	if got := x.audit(t, &pb.ListAuditEventsRequest{Resource: api.PersonResource(c.nhs)}); len(got) != 1 || !strings.HasSuffix(got[0].Method, "/ListConsents") {
		t.Errorf("the person's consent list: %v", got)
	}

	// Sequence numbers have no gaps, and no entry holds the NHS number.
	everything := x.audit(t, &pb.ListAuditEventsRequest{PageSize: 1000})
	for i, e := range everything {
		if e.Sequence != int64(i+1) {
			t.Fatalf("entry %d has sequence %d", i, e.Sequence)
		}
		b, _ := proto.Marshal(e)
		if bytes.Contains(b, []byte(c.nhs)) || bytes.Contains(b, []byte("Jones")) {
			t.Errorf("entry %d holds personal data: %v", i, e)
		}
	}

	// Bad filters are refused with the field.
	_, err = pb.NewAdminServiceClient(x.Conn).ListAuditEvents(x.As("operator"), &pb.ListAuditEventsRequest{
		StartTime: timestamppb.Now(), EndTime: timestamppb.New(before)})
	wantErr(t, err, codes.InvalidArgument, "FIELD_INVALID")
}

// TestErasePerson erases a person with a closed and an open referral,
// feedback and consents, and checks that nothing of them is left while the
// counts and reports stay the same.
func TestErasePerson(t *testing.T) {
	x := world(t, api.Options{})
	c := x.chain(t, pb.ReferralState_REFERRAL_STATE_IN_PROGRESS)
	refs := pb.NewReferralServiceClient(x.Conn)
	fb := pb.NewFeedbackServiceClient(x.Conn)
	group := x.As("group")
	if _, err := fb.CreateFeedback(group, &pb.CreateFeedbackRequest{Parent: c.r2, RequestId: "note-1", Feedback: &pb.Feedback{
		Content: &pb.Feedback_Note{Note: &pb.Note{Text: "Ada Jones loved the walk"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := fb.CreateFeedback(group, &pb.CreateFeedbackRequest{Parent: c.r2, Feedback: &pb.Feedback{
		Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS,
			Timepoint: pb.Timepoint_TIMEPOINT_BASELINE, Total: 40}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := refs.CompleteReferral(x.As("group"), &pb.CompleteReferralRequest{Name: c.r2}); err != nil {
		t.Fatal(err)
	}
	other := x.chain(t, pb.ReferralState_REFERRAL_STATE_REQUESTED) // someone else: untouched

	adm := pb.NewAdminServiceClient(x.Conn)
	_, err := adm.ErasePerson(x.As("practice"), &pb.ErasePersonRequest{NhsNumber: c.nhs})
	wantErr(t, err, codes.PermissionDenied, "NOT_ALLOWED")
	_, err = adm.ErasePerson(x.As("operator"), &pb.ErasePersonRequest{NhsNumber: "123"})
	wantErr(t, err, codes.InvalidArgument, "FIELD_INVALID")

	got, err := adm.ErasePerson(x.As("operator"), &pb.ErasePersonRequest{NhsNumber: c.nhs, RequestId: "erase-1"})
	if err != nil {
		t.Fatal(err)
	}
	// r1 (pcn's, open) and r2 (closed); one consent; one note.
	if got.ClearedReferrals != 2 || got.CancelledReferrals != 1 || got.ClearedConsents != 1 || got.ClearedFeedback != 1 {
		t.Errorf("erasure = %v", got)
	}
	for _, name := range []string{c.r1, c.r2} {
		r, err := refs.GetReferral(x.As("pcn"), &pb.GetReferralRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if r.Person.GetNhsNumber() != "" || r.Person.GetFamilyName() != "" || r.Person.GetPostcode() != "" || r.Reason != "" || r.EraseTime == nil {
			t.Errorf("%s still holds personal fields: %v", name, r)
		}
		if r.Person.GetAgeBand() != "70-79" {
			t.Errorf("%s age band = %q, want 70-79", name, r.Person.GetAgeBand())
		}
	}
	r1, _ := refs.GetReferral(x.As("pcn"), &pb.GetReferralRequest{Name: c.r1})
	if r1.State != pb.ReferralState_REFERRAL_STATE_CANCELLED || r1.StateReason.GetCode() != pb.StateReasonCode_STATE_REASON_CODE_ERASED {
		t.Errorf("the open referral is %v %v, want CANCELLED ERASED", r1.State, r1.StateReason)
	}
	cons, err := pb.NewConsentServiceClient(x.Conn).ListConsents(x.As("practice"), &pb.ListConsentsRequest{NhsNumber: c.nhs})
	if err != nil || len(cons.Consents) != 0 {
		t.Errorf("consents by NHS number after erasure: %v %v", cons, err)
	}
	notes, err := fb.ListFeedback(group, &pb.ListFeedbackRequest{Parent: c.r2})
	if err != nil {
		t.Fatal(err)
	}
	outcomesKept := 0
	for _, f := range notes.Feedback {
		if f.GetNote().GetText() != "" {
			t.Errorf("note text kept: %v", f)
		}
		if f.GetOutcome() != nil {
			outcomesKept++
		}
	}
	if outcomesKept != 1 {
		t.Errorf("%d outcome scores kept, want 1", outcomesKept)
	}
	// The stored answer of the retried note held the text: gone, so the
	// store holds no copy of it in any record.
	err = x.Store.View(context.Background(), func(tx storage.ReadTx) error {
		if _, err := tx.GetIdempotency("organizations/group", "note-1"); err == nil {
			t.Error("the stored answer holding the note survived the erasure")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The other person is untouched; the counts are the same.
	if r, _ := refs.GetReferral(x.As("pcn"), &pb.GetReferralRequest{Name: other.r2}); r.Person.GetNhsNumber() != other.nhs {
		t.Error("another person's referral was cleared")
	}
	// Again: nothing left to clear. Audited without the NHS number.
	again, err := adm.ErasePerson(x.As("operator"), &pb.ErasePersonRequest{NhsNumber: c.nhs})
	if err != nil || again.ClearedReferrals != 0 || again.ClearedConsents != 0 {
		t.Errorf("second erasure: %v %v", again, err)
	}
	entries := x.audit(t, &pb.ListAuditEventsRequest{Resource: got.Name})
	if len(entries) != 1 || entries[0].ClearedReferrals != 2 || entries[0].Organization != "organizations/operator" {
		t.Errorf("audit of the erasure: %v", entries)
	}
}

// TestErasureKeepsReports: erasing people whose referrals are closed
// changes no report: sex and the age band stay for the splits.
func TestErasureKeepsReports(t *testing.T) {
	x, walks, _ := reportWorld(t, api.Options{})
	var names []string
	for i := range 12 {
		sex := pb.Sex_SEX_FEMALE
		if i%2 == 1 {
			sex = pb.Sex_SEX_MALE
		}
		dob := "1950-06-01"
		if i%3 == 0 {
			dob = "1990-06-01"
		}
		names = append(names, journey(t, x, walks, "group", person{n: i, sex: sex, dob: dob, evaluation: true,
			baseline: int32(30 + i), followUp: int32(36 + i%5*2)}))
	}
	refs := pb.NewReferralServiceClient(x.Conn)
	for _, n := range names {
		if _, err := refs.CompleteReferral(x.As("group"), &pb.CompleteReferralRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	strip := func(m proto.Message) proto.Message {
		m = proto.Clone(m)
		for _, f := range []protoreflect.Name{"generate_time", "capacity"} { // "now" ends the last period
			if fd := m.ProtoReflect().Descriptor().Fields().ByName(f); fd != nil {
				m.ProtoReflect().Clear(fd)
			}
		}
		return m
	}
	act, out := strip(activity(t, x, "icb", nil)), strip(outcomes(t, x, "icb", nil))
	for i := range 6 {
		if _, err := pb.NewAdminServiceClient(x.Conn).ErasePerson(x.As("operator"), &pb.ErasePersonRequest{NhsNumber: exchangetest.NHSNumber(5000 + 10*i)}); err != nil {
			t.Fatal(err)
		}
	}
	if r, _ := refs.GetReferral(x.As("group"), &pb.GetReferralRequest{Name: names[0]}); r.EraseTime == nil {
		t.Fatal("the first person was not erased")
	}
	if got := strip(activity(t, x, "icb", nil)); !proto.Equal(got, act) {
		t.Errorf("erasure changed the activity report:\n%v\n%v", got, act)
	}
	if got := strip(outcomes(t, x, "icb", nil)); !proto.Equal(got, out) {
		t.Errorf("erasure changed the outcome report:\n%v\n%v", got, out)
	}
}

// TestRetention clears referrals closed longer than the period, and stored
// answers older than the request_id window.
func TestRetention(t *testing.T) {
	clk := newClock()
	x := world(t, api.Options{Now: clk.now})
	closed := x.chain(t, pb.ReferralState_REFERRAL_STATE_ACCEPTED)
	refs := pb.NewReferralServiceClient(x.Conn)
	if _, err := refs.CancelReferral(x.As("pcn"), &pb.CancelReferralRequest{Name: closed.r2, Reason: &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_PERSON_DECLINED}}); err != nil {
		t.Fatal(err)
	}
	clk.advance(100 * 24 * time.Hour)
	open := x.chain(t, pb.ReferralState_REFERRAL_STATE_IN_PROGRESS)

	n, err := x.Srv.SweepRetention(context.Background(), 90*24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("sweep cleared %d (%v), want 1", n, err)
	}
	r, _ := refs.GetReferral(x.As("pcn"), &pb.GetReferralRequest{Name: closed.r2})
	if r.EraseTime == nil || r.Person.GetFamilyName() != "" || r.State != pb.ReferralState_REFERRAL_STATE_CANCELLED {
		t.Errorf("closed referral after the retention period: %v", r)
	}
	for _, name := range []string{closed.r1, open.r2} {
		if r, _ := refs.GetReferral(x.As("pcn"), &pb.GetReferralRequest{Name: name}); r.EraseTime != nil {
			t.Errorf("open referral %s was cleared", name)
		}
	}
	if n, _ := x.Srv.SweepRetention(context.Background(), 90*24*time.Hour); n != 0 {
		t.Errorf("a second sweep cleared %d", n)
	}
	if e := x.audit(t, &pb.ListAuditEventsRequest{Resource: "retention"}); len(e) != 1 || e[0].ClearedReferrals != 1 {
		t.Errorf("retention audit: %v", e)
	}

	// Stored answers are kept for the window, then deleted.
	has := func(org, id string) bool {
		found := false
		x.Store.View(context.Background(), func(tx storage.ReadTx) error {
			_, err := tx.GetIdempotency(org, id)
			found = err == nil
			return nil
		})
		return found
	}
	if !has("organizations/practice", fmt.Sprint("r1-", chains)) {
		t.Fatal("the newest chain's stored answer is missing")
	}
	clk.advance(api.IdempotencyWindow + time.Hour)
	if _, err := x.Srv.SweepRetention(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if has("organizations/practice", fmt.Sprint("r1-", chains)) {
		t.Error("a stored answer older than the window was kept")
	}
}

// TestLimits: the rate limit, the stream cap, page size caps and deadlines.
func TestLimits(t *testing.T) {
	x := world(t, api.Options{Limits: api.Limits{Rate: 1, Burst: 20, Streams: 1}})
	dir := pb.NewDirectoryServiceClient(x.Conn)
	var err error
	for i := 0; i < 25 && err == nil; i++ {
		_, err = dir.GetOrganization(x.As("group"), &pb.GetOrganizationRequest{Name: "organizations/group"})
	}
	wantErr(t, err, codes.ResourceExhausted, "RATE_LIMITED")
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.RetryDelay.AsDuration() <= 0 || retry.RetryDelay.AsDuration() > time.Second {
		t.Errorf("RetryInfo = %v, want a delay up to 1s", retry)
	}
	if _, err := dir.GetOrganization(x.As("stranger"), &pb.GetOrganizationRequest{Name: "organizations/group"}); err != nil {
		t.Errorf("another organisation is limited too: %v", err)
	}
	time.Sleep(retry.RetryDelay.AsDuration())
	if _, err := dir.GetOrganization(x.As("group"), &pb.GetOrganizationRequest{Name: "organizations/group"}); err != nil {
		t.Errorf("after the retry delay: %v", err)
	}

	// One stream per organisation.
	evs := pb.NewEventServiceClient(x.Conn)
	ctx, cancel := context.WithCancel(x.As("stranger"))
	first, err := evs.WatchEvents(ctx, &pb.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Recv(); err != nil { // the directory events: the stream is open
		t.Fatal(err)
	}
	second, err := evs.WatchEvents(x.As("stranger"), &pb.WatchEventsRequest{})
	if err == nil {
		_, err = second.Recv()
	}
	wantErr(t, err, codes.ResourceExhausted, "TOO_MANY_STREAMS")
	cancel()
	time.Sleep(100 * time.Millisecond)
	third, err := evs.WatchEvents(x.As("stranger"), &pb.WatchEventsRequest{})
	if err == nil {
		_, err = third.Recv()
	}
	if err != nil {
		t.Errorf("a stream after the first closed: %v", err)
	}

	// Page sizes are capped.
	_, err = pb.NewReferralServiceClient(x.Conn).ListReferrals(x.As("pcn"), &pb.ListReferralsRequest{PageSize: 5000})
	wantErr(t, err, codes.InvalidArgument, "FIELD_INVALID")
}

// TestDeadlineHonoured: a write whose deadline passes while it waits for
// the store is not made.
func TestDeadlineHonoured(t *testing.T) {
	x := world(t, api.Options{})
	consent := x.ConsentFor("practice", adaNHS, nil)
	var held sync.WaitGroup
	held.Add(1)
	go x.Store.Update(context.Background(), func(storage.WriteTx) error { // the writer is busy
		held.Done()
		time.Sleep(500 * time.Millisecond)
		return nil
	})
	held.Wait()
	ctx, cancel := context.WithTimeout(x.As("practice"), 100*time.Millisecond)
	defer cancel()
	_, err := x.Refer2(ctx, consent.Name)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want DEADLINE_EXCEEDED", err)
	}
	time.Sleep(600 * time.Millisecond)
	list, err := pb.NewReferralServiceClient(x.Conn).ListReferrals(x.As("practice"), &pb.ListReferralsRequest{})
	if err != nil || len(list.Referrals) != 0 {
		t.Fatalf("a write past its deadline was made: %v %v", list, err)
	}
	// The retry with the same request_id makes it, once.
	for range 2 {
		if _, err := x.Refer2(x.As("practice"), consent.Name); err != nil {
			t.Fatal(err)
		}
	}
	if list, _ := pb.NewReferralServiceClient(x.Conn).ListReferrals(x.As("practice"), &pb.ListReferralsRequest{}); len(list.Referrals) != 1 {
		t.Fatalf("%d referrals, want 1", len(list.Referrals))
	}
}

// Refer2 refers Ada to the group's walks with a fixed request_id.
func (x *exchange) Refer2(ctx context.Context, consent string) (*pb.Referral, error) {
	p := ada()
	return pb.NewReferralServiceClient(x.Conn).CreateReferral(ctx, &pb.CreateReferralRequest{RequestId: "deadline-1", Referral: &pb.Referral{
		RecipientService: "organizations/group/services/walks", Person: p, Consent: consent, Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
		Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING}})
}

// TestBackupWhileWriting streams a backup while referrals are being made,
// and checks the copy is a sound store holding a prefix of the writes.
func TestBackupWhileWriting(t *testing.T) {
	x := world(t, api.Options{})
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	made := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			nhs := exchangetest.NHSNumber(90000 + 10*i)
			c := x.ConsentFor("practice", nhs, nil)
			if _, err := x.Refer("practice", fmt.Sprint("bk-", i), "organizations/group/services/walks", nhs, c.Name); err != nil {
				t.Error(err)
				return
			}
			made++
		}
	}()
	time.Sleep(500 * time.Millisecond)
	s, err := pb.NewAdminServiceClient(x.Conn).Backup(x.As("operator"), &pb.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var total int64
	for {
		c, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if total == 0 {
			total = c.TotalBytes
		}
		buf.Write(c.Data)
	}
	stop()
	wg.Wait()
	if int64(buf.Len()) != total || total == 0 {
		t.Fatalf("backup has %d bytes, announced %d", buf.Len(), total)
	}
	copyPath := t.TempDir() + "/exchange.db"
	if err := os.WriteFile(copyPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := bolt.Check(copyPath); err != nil {
		t.Fatalf("the backup fails bbolt check: %v", err)
	}
	store, err := exchangetest.OpenBolt(copyPath, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	inCopy := 0
	store.View(context.Background(), func(tx storage.ReadTx) error {
		p, err := tx.ListReferrals(storage.ReferralQuery{Referrer: "organizations/practice"}, "", 100000, nil)
		inCopy = len(p.Items)
		return err
	})
	if inCopy == 0 || inCopy > made {
		t.Errorf("the copy holds %d referrals of %d made", inCopy, made)
	}
	t.Logf("backup of %d bytes with %d of %d referrals while writing", total, inCopy, made)
}

// TestFullDisk puts the store on a small file system, fills it, and checks
// that writes fail with a clear error and change nothing, that reads go on,
// and that writes work again once space returns, with nothing lost.
func TestFullDisk(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mounting a small tmpfs (needs root): %v %s", err, out)
		}
		t.Skipf("cannot mount a small tmpfs to fill (needs root): %s", out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	x := &exchange{exchangetest.StartAt(t, filepath.Join(dir, "exchange.db"), api.Options{})}
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)

	refer := func(i int) (string, error) {
		nhs := exchangetest.NHSNumber(300000 + 10*i)
		c, err := pb.NewConsentServiceClient(x.Conn).CreateConsent(x.As("practice"), &pb.CreateConsentRequest{RequestId: fmt.Sprint("c", i), Consent: &pb.Consent{
			NhsNumber: nhs, Method: pb.ConsentMethod_CONSENT_METHOD_VERBAL,
			Purposes:       []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE},
			RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}})
		if err != nil {
			return "", err
		}
		r, err := x.Refer("practice", fmt.Sprint("r", i), walks, nhs, c.Name)
		return r.GetName(), err
	}
	var made []string
	for i := range 20 {
		name, err := refer(i)
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, name)
	}

	// Fill the file system with a filler file.
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 64<<10)
	for {
		if _, err := filler.Write(block); err != nil {
			break
		}
	}
	filler.Sync()

	// Write until the store cannot: every acknowledged referral is kept.
	var failure error
	for i := 20; i < 5000 && failure == nil; i++ {
		var name string
		if name, failure = refer(i); failure == nil {
			made = append(made, name)
		}
	}
	if failure == nil {
		t.Fatal("5000 referrals fitted on a full disk")
	}
	wantErr(t, failure, codes.Unavailable, "STORE_UNAVAILABLE")
	if !strings.Contains(status.Convert(failure).Message(), "disk is full") {
		t.Errorf("the error does not say the disk is full: %v", failure)
	}
	// Reads still work while the disk is full; an audited one is refused
	// with the same error if its audit entry cannot be written (bbolt may
	// still find a free page for it), never answered unrecorded.
	if _, err := pb.NewDirectoryServiceClient(x.Conn).GetService(x.As("practice"), &pb.GetServiceRequest{Name: walks}); err != nil {
		t.Errorf("a directory read on a full disk: %v", err)
	}
	if _, err = pb.NewReferralServiceClient(x.Conn).GetReferral(x.As("practice"), &pb.GetReferralRequest{Name: made[0]}); err != nil {
		wantErr(t, err, codes.Unavailable, "STORE_UNAVAILABLE")
	}

	// Space returns: writes work again, and everything acknowledged is there.
	filler.Close()
	os.Remove(filler.Name())
	r, err := x.Refer("practice", "after", walks, exchangetest.NHSNumber(299990), x.ConsentFor("practice", exchangetest.NHSNumber(299990), nil).Name)
	if err != nil {
		t.Fatalf("a write after space returned: %v", err)
	}
	x.Restart()
	for _, name := range append(made, r.Name) {
		if _, err := pb.NewReferralServiceClient(x.Conn).GetReferral(x.As("practice"), &pb.GetReferralRequest{Name: name}); err != nil {
			t.Fatalf("%s after the disk filled and a restart: %v", name, err)
		}
	}
	x.Store.Close()
	if err := bolt.Check(x.Path); err != nil {
		t.Errorf("bbolt check after the disk filled: %v", err)
	}
	t.Logf("%d referrals before the disk filled", len(made))
}
