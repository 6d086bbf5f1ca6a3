package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage"
)

// The model-based authorisation test. It builds a random modelWorld through the
// API (organisations of every kind, services, consents some withdrawn and
// some expired, referral chains one to three deep, feedback and notes, the
// clock moved on), reads what was stored straight from the store, and then,
// for every caller (each organisation, the operator, no key) and every read
// RPC with every request field and filter term alone and combined, page
// sizes and page tokens, holds the answer to a plain model of who may see
// what. What a caller may not see must be indistinguishable from what does
// not exist. TestModelCoversTheContract fails when an RPC, a request field
// or a filter term of the contract has no case here, so a new one cannot be
// added without its rule.
//
// The model is written out here, on its own, from the contract's comments:
// it does not call policy.

// readRPCs are the contract's read RPCs, each with the fields of its
// request the test varies (every field must be listed).
var readRPCs = map[string][]string{
	"DirectoryService/GetOrganization":   {"name"},
	"DirectoryService/ListOrganizations": {"page_size", "page_token", "filter"},
	"DirectoryService/GetService":        {"name"},
	"DirectoryService/ListServices":      {"parent", "page_size", "page_token"},
	"DirectoryService/SearchServices":    {"categories", "postcode", "age", "has_capacity", "page_size", "page_token"},
	"CapacityService/GetCapacity":        {"name"},
	"ConsentService/GetConsent":          {"name"},
	"ConsentService/ListConsents":        {"nhs_number", "page_size", "page_token"},
	"ReferralService/GetReferral":        {"name"},
	"ReferralService/ListReferrals":      {"page_size", "page_token", "filter"},
	"FeedbackService/ListFeedback":       {"parent", "page_size", "page_token"},
	"EventService/ListEvents":            {"after", "page_size", "wait"},
	"EventService/WatchEvents":           {"after"},
	"ReportService/GetActivityReport":    {"filter"},
	"ReportService/GetOutcomeReport":     {"filter"},
	"ApiKeyService/ListApiKeys":          {"parent", "page_size", "page_token"},
	"AdminService/ListAuditEvents":       {"page_size", "page_token", "organization", "resource", "start_time", "end_time"},
}

// writeRPCs are the contract's other RPCs: they change something, and the
// authorisation matrix (authz_ext_test.go) holds their rules.
var writeRPCs = []string{
	"DirectoryService/CreateOrganization", "DirectoryService/UpdateOrganization", "DirectoryService/CreateService",
	"DirectoryService/UpdateService", "CapacityService/UpdateCapacity", "ConsentService/CreateConsent",
	"ConsentService/WithdrawConsent", "ReferralService/CreateReferral", "ReferralService/AcceptReferral",
	"ReferralService/RejectReferral", "ReferralService/StartReferral", "ReferralService/HoldReferral",
	"ReferralService/ResumeReferral", "ReferralService/CompleteReferral", "ReferralService/FailReferral",
	"ReferralService/CancelReferral", "ReferralService/MarkReferralEnteredInError", "FeedbackService/CreateFeedback",
	"ApiKeyService/CreateApiKey", "ApiKeyService/RevokeApiKey", "AdminService/ErasePerson", "AdminService/Backup",
}

// filterTerms are the filter terms the model knows, by request message.
var filterTerms = map[string][]string{
	"ListReferralsRequest":     {"state", "recipient", "referrer", "parent", "overdue"},
	"ListOrganizationsRequest": {"kind"},
}

// reportFilterFields are the ReportFilter fields the model knows.
var reportFilterFields = []string{"start_time", "end_time", "service", "category", "route", "organization", "trend_interval"}

// TestModelCoversTheContract: every RPC is a read with a case in the model
// test or a write in the matrix; every field of a read's request is
// varied; every filter term the contract documents is modelled.
func TestModelCoversTheContract(t *testing.T) {
	seen := map[string]bool{}
	protoregistry.GlobalFiles.RangeFilesByPackage("exchange.v1", func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			s := f.Services().Get(i)
			for j := range s.Methods().Len() {
				m := s.Methods().Get(j)
				rpc := string(s.Name()) + "/" + string(m.Name())
				seen[rpc] = true
				fields, read := readRPCs[rpc]
				if !read && !slices.Contains(writeRPCs, rpc) {
					t.Errorf("%s has no case in the model test (readRPCs) and is not a write (writeRPCs)", rpc)
					continue
				}
				if !read {
					continue
				}
				in := m.Input().Fields()
				for k := range in.Len() {
					if name := string(in.Get(k).Name()); !slices.Contains(fields, name) {
						t.Errorf("%s: the model test does not vary the request field %s", rpc, name)
					}
				}
			}
		}
		return true
	})
	for rpc := range readRPCs {
		if !seen[rpc] {
			t.Errorf("the model test names %s, which the contract does not have", rpc)
		}
	}
	// The filter terms each List request documents (its filter comment
	// lists them as "- `term = ...`" or "`term = ...`").
	for file, msgs := range map[string][]string{
		"referral.proto": {"ListReferralsRequest"}, "directory.proto": {"ListOrganizationsRequest"},
	} {
		b, err := os.ReadFile("../../proto/exchange/v1/" + file)
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range msgs {
			body := string(b)[strings.Index(string(b), "message "+msg+" {"):]
			body = body[:strings.Index(body, "\n}\n")]
			for _, m := range regexp.MustCompile("`([a-z_]+) = ").FindAllStringSubmatch(body, -1) {
				if m[1] != "field" && !slices.Contains(filterTerms[msg], m[1]) { // "each `field = value`"
					t.Errorf("%s documents the filter term %s, which the model test does not know", msg, m[1])
				}
			}
		}
	}
	rf := (&pb.ReportFilter{}).ProtoReflect().Descriptor().Fields()
	for k := range rf.Len() {
		if name := string(rf.Get(k).Name()); !slices.Contains(reportFilterFields, name) {
			t.Errorf("ReportFilter.%s has no case in the model test", name)
		}
	}
}

// modelWorld is what the model test built, and what the store holds of it.
type modelWorld struct {
	x         *exchange
	clock     *clock
	rng       *rand.Rand
	orgs      []string // organisation ids
	kind      map[string]pb.OrganizationKind
	services  map[string][]string // by organisation id
	persons   []string
	referrals map[string]*pb.Referral // from the store, by name
	consents  map[string]*pb.Consent
	feedback  map[string][]*pb.Feedback // by referral
	order     []string                  // referral names, in the order made
}

func org(id string) string { return "organizations/" + id }

func buildWorld(t *testing.T, seed uint64) *modelWorld {
	clk := &clock{t: time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)}
	x := startWith(t, api.Options{Now: clk.now, ReportMinCount: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w := &modelWorld{x: x, clock: clk, rng: rand.New(rand.NewPCG(seed, seed*7919)), kind: map[string]pb.OrganizationKind{},
		services: map[string][]string{}}
	for id, k := range map[string]pb.OrganizationKind{
		"gp1": pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE, "gp2": pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE,
		"lw1": pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE, "lw2": pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE,
		"vcse1": pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION, "vcse2": pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION,
		"vcse3": pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION, "icb": pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER,
	} {
		x.Org(id, k)
		w.kind[id] = k
		w.orgs = append(w.orgs, id)
	}
	sort.Strings(w.orgs)
	for id, svcs := range map[string][]string{"lw1": {"link"}, "lw2": {"link"}, "vcse1": {"walks", "cafe"}, "vcse2": {"debt"}, "vcse3": {"garden"}} {
		for i, s := range svcs {
			w.services[id] = append(w.services[id], x.Service(id, s, pb.Category(1+i+len(id)%3)))
		}
	}
	for i := range 8 {
		w.persons = append(w.persons, exchangetest.NHSNumber(5000+37*i))
	}
	refs := pb.NewReferralServiceClient(x.Conn)
	fbs := pb.NewFeedbackServiceClient(x.Conn)
	n := 0
	rid := func() string { n++; return fmt.Sprintf("model-%d", n) }
	consent := func(by, nhs string) *pb.Consent {
		return x.ConsentFor(by, nhs, func(c *pb.Consent) {
			if w.rng.IntN(10) < 6 {
				c.Purposes = append(c.Purposes, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION)
			}
			if w.rng.IntN(10) < 3 {
				c.Purposes = slices.DeleteFunc(c.Purposes, func(p pb.ConsentPurpose) bool {
					return p == pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER
				})
			}
			if w.rng.IntN(10) < 2 {
				c.ValidUntil = timestamppb.New(clk.now().Add(time.Hour)) // expires when the clock moves on
			}
		})
	}
	pick := func(ids ...string) string { return ids[w.rng.IntN(len(ids))] }
	// refer makes a referral as by to one of to's services, and its
	// feedback and moves; depth 1 has no parent.
	var refer func(by, to, nhs, consent, parent string, depth int)
	refer = func(by, to, nhs, consentName, parent string, depth int) {
		p := exchangetest.Ada()
		p.NhsNumber = nhs
		r, err := refs.CreateReferral(x.As(by), &pb.CreateReferralRequest{RequestId: rid(), Referral: &pb.Referral{
			RecipientService: pick(w.services[to]...), ParentReferral: parent, Person: p, Consent: consentName,
			Route: pb.ReferralRoute(1 + w.rng.IntN(3)), Needs: []pb.Category{pb.Category(1 + w.rng.IntN(4))},
			SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING, Reason: "model"}})
		if status.Code(err) == codes.AlreadyExists {
			return
		}
		if err != nil {
			t.Fatalf("%s refers to %s: %v", by, to, err)
		}
		w.order = append(w.order, r.Name)
		clk.advance(time.Minute)
		recipient := to
		if w.rng.IntN(10) < 2 {
			if _, err := refs.RejectReferral(x.As(recipient), &pb.RejectReferralRequest{Name: r.Name,
				Reason: &pb.StateReason{Code: pb.StateReasonCode_STATE_REASON_CODE_NOT_ELIGIBLE}}); err != nil {
				t.Fatal(err)
			}
			return
		}
		if w.rng.IntN(10) < 2 {
			return // left REQUESTED: overdue once the clock moves on
		}
		if _, err := refs.AcceptReferral(x.As(recipient), &pb.AcceptReferralRequest{Name: r.Name}); err != nil {
			t.Fatal(err)
		}
		note := func(author string) {
			aud := pb.FeedbackAudience_FEEDBACK_AUDIENCE_UNSPECIFIED
			if w.rng.IntN(10) < 3 {
				aud = pb.FeedbackAudience_FEEDBACK_AUDIENCE_AUTHOR_SIDE
			}
			if _, err := fbs.CreateFeedback(x.As(author), &pb.CreateFeedbackRequest{Parent: r.Name, RequestId: rid(), Feedback: &pb.Feedback{
				Audience: aud, Content: &pb.Feedback_Note{Note: &pb.Note{Text: "a note"}}}}); err != nil {
				t.Fatal(err)
			}
		}
		if w.rng.IntN(10) < 5 {
			note(recipient)
		}
		if w.rng.IntN(10) < 4 {
			note(by)
		}
		if w.rng.IntN(10) < 6 {
			if _, err := fbs.CreateFeedback(x.As(recipient), &pb.CreateFeedbackRequest{Parent: r.Name, RequestId: rid(), Feedback: &pb.Feedback{
				Content: &pb.Feedback_Uptake{Uptake: &pb.Uptake{Status: pb.UptakeStatus_UPTAKE_STATUS_FIRST_SESSION_ATTENDED}}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := fbs.CreateFeedback(x.As(recipient), &pb.CreateFeedbackRequest{Parent: r.Name, RequestId: rid(), Feedback: &pb.Feedback{
				Content: &pb.Feedback_Outcome{Outcome: &pb.OutcomeMeasure{Instrument: pb.Instrument_INSTRUMENT_WEMWBS,
					Timepoint: pb.Timepoint_TIMEPOINT_BASELINE, Total: int32(30 + w.rng.IntN(20))}}}}); err != nil {
				t.Fatal(err)
			}
		}
		// Refer on: link workers to community groups, groups to another group.
		if depth < 3 && w.rng.IntN(10) < 6 {
			var next []string
			for _, id := range []string{"vcse1", "vcse2", "vcse3"} {
				if id != recipient {
					next = append(next, id)
				}
			}
			c := consentName
			if w.rng.IntN(10) < 3 {
				c = consent(recipient, nhs).Name // its own consent
			}
			refer(recipient, pick(next...), nhs, c, r.Name, depth+1)
		}
		if w.rng.IntN(10) < 3 {
			if _, err := refs.StartReferral(x.As(recipient), &pb.StartReferralRequest{Name: r.Name}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var recorded []*pb.Consent
	for range 12 {
		gp, nhs := pick("gp1", "gp2"), pick(w.persons...)
		c := consent(gp, nhs)
		recorded = append(recorded, c)
		refer(gp, pick("lw1", "lw2"), nhs, c.Name, "", 1)
	}
	// A community group's own consent and referral, and a stranger's
	// referral of someone already referred (a possible duplicate).
	c := consent("vcse3", w.persons[0])
	refer("vcse3", "vcse1", w.persons[0], c.Name, "", 1)
	c = consent("gp2", w.persons[0])
	refer("gp2", "vcse1", w.persons[0], c.Name, "", 1)
	// Withdraw some consents; move the clock on so that the short ones
	// expire and unanswered referrals are overdue.
	for _, c := range recorded {
		if w.rng.IntN(10) < 3 {
			if _, err := pb.NewConsentServiceClient(x.Conn).WithdrawConsent(x.As(strings.TrimPrefix(c.RecordedBy, "organizations/")),
				&pb.WithdrawConsentRequest{Name: c.Name}); err != nil {
				t.Fatal(err)
			}
		}
	}
	clk.advance(80 * time.Hour)

	// What the store holds.
	w.referrals, w.consents, w.feedback = map[string]*pb.Referral{}, map[string]*pb.Consent{}, map[string][]*pb.Feedback{}
	err := x.Store.View(context.Background(), func(tx storage.ReadTx) error {
		for _, name := range w.order {
			r, err := tx.GetReferral(name)
			if err != nil {
				return err
			}
			w.referrals[name] = r
			c, err := tx.GetConsent(r.Consent)
			if err != nil {
				return err
			}
			w.consents[c.Name] = c
			p, err := tx.ListFeedback(name, "", 1000, nil)
			if err != nil {
				return err
			}
			w.feedback[name] = p.Items
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range recorded {
		if _, ok := w.consents[c.Name]; !ok {
			err := x.Store.View(context.Background(), func(tx storage.ReadTx) error {
				got, err := tx.GetConsent(c.Name)
				w.consents[c.Name] = got
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return w
}

// The model.

type relation int

const (
	none relation = iota
	referrer
	receiver
	upstream
)

func (w *modelWorld) relation(caller string, r *pb.Referral) relation {
	switch caller {
	case r.Referrer:
		return referrer
	case r.Recipient:
		return receiver
	}
	for p := r.ParentReferral; p != ""; p = w.referrals[p].ParentReferral {
		if a := w.referrals[p]; caller == a.Referrer || caller == a.Recipient {
			return upstream
		}
	}
	return none
}

func (w *modelWorld) active(c *pb.Consent, purpose pb.ConsentPurpose) bool {
	return w.activeAt(c, purpose, w.clock.now())
}

func (w *modelWorld) activeAt(c *pb.Consent, purpose pb.ConsentPurpose, now time.Time) bool {
	return c.WithdrawTime == nil && (c.ValidUntil == nil || now.Before(c.ValidUntil.AsTime())) &&
		(c.ValidFrom == nil || !now.Before(c.ValidFrom.AsTime())) && slices.Contains(c.Purposes, purpose)
}

// fullView: the organisation that recorded the consent and made the
// referral always sees the person; the receiver, and a referrer relying on
// a consent recorded upstream, while the consent is active for direct
// care; nobody else.
func (w *modelWorld) fullView(rel relation, r *pb.Referral) bool {
	c := w.consents[r.Consent]
	return (rel == referrer && c.RecordedBy == r.Referrer) ||
		((rel == referrer || rel == receiver) && w.active(c, pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE))
}

func open(s pb.ReferralState) bool {
	switch s {
	case pb.ReferralState_REFERRAL_STATE_REQUESTED, pb.ReferralState_REFERRAL_STATE_ACCEPTED,
		pb.ReferralState_REFERRAL_STATE_IN_PROGRESS, pb.ReferralState_REFERRAL_STATE_ON_HOLD:
		return true
	}
	return false
}

// consentVisible: its recorder, and the parties of the open referrals that
// rely on it.
func (w *modelWorld) consentVisible(caller string, c *pb.Consent) bool {
	if c.RecordedBy == caller {
		return true
	}
	for _, r := range w.referrals {
		if r.Consent == c.Name && open(r.State) && w.relation(caller, r) != none {
			return true
		}
	}
	return false
}

// feedbackVisible: the author; never the other side's author-side notes;
// notes between the two sides; uptake and outcomes to every party while the
// consent allows feedback to the referrer.
func (w *modelWorld) feedbackVisible(caller string, r *pb.Referral, f *pb.Feedback) bool {
	rel := w.relation(caller, r)
	switch {
	case f.Author == caller:
		return true
	case rel == none || f.Audience == pb.FeedbackAudience_FEEDBACK_AUDIENCE_AUTHOR_SIDE:
		return false
	case f.GetNote() != nil:
		return rel == referrer || rel == receiver
	}
	return w.active(w.consents[r.Consent], pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER)
}

// countedOutcome: an organisation's own report counts the outcomes it
// authored, and those shared with it: not kept to the author's side, and
// posted while the consent allowed feedback to the referrer (a consent that
// expired since still covers them; a withdrawn one counts nothing).
func (w *modelWorld) countedOutcome(caller string, r *pb.Referral, f *pb.Feedback) bool {
	switch {
	case f.Author == caller:
		return true
	case w.relation(caller, r) == none || f.Audience == pb.FeedbackAudience_FEEDBACK_AUDIENCE_AUTHOR_SIDE:
		return false
	}
	return w.activeAt(w.consents[r.Consent], pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER, f.CreateTime.AsTime())
}

// counted: commissioners and the operator count every referral, others
// those they made or received; only with a consent for evaluation that was
// not withdrawn.
func (w *modelWorld) counted(caller string, operator bool, r *pb.Referral, f *pb.ReportFilter) bool {
	c := w.consents[r.Consent]
	everyone := operator || (caller != "" && w.kind[strings.TrimPrefix(caller, "organizations/")] == pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER)
	created := r.CreateTime.AsTime()
	return (everyone || r.Referrer == caller || r.Recipient == caller) && c.WithdrawTime == nil &&
		slices.Contains(c.Purposes, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION) &&
		(f.StartTime == nil || !created.Before(f.StartTime.AsTime())) && (f.EndTime == nil || created.Before(f.EndTime.AsTime())) &&
		(f.Service == "" || r.RecipientService == f.Service) && (f.Category == 0 || slices.Contains(r.Needs, f.Category)) &&
		(f.Route == 0 || r.Route == f.Route) && (f.Organization == "" || r.Referrer == f.Organization || r.Recipient == f.Organization)
}

// shape is an error as a caller sees it, with name replaced, so that the
// refusal of a hidden resource can be compared with that of a missing one.
func shape(err error, name string) string {
	st, _ := status.FromError(err)
	b, _ := prototext.MarshalOptions{}.Marshal(st.Proto())
	return strings.ReplaceAll(string(b), name, "NAME")
}

// missing returns a name like name that names nothing.
func missing(name string) string {
	last := name[len(name)-1]
	if last == 'a' {
		return name[:len(name)-1] + "b"
	}
	return name[:len(name)-1] + "a"
}

// pages lists every page of a list, page size size, calling list with each
// token; it fails on a repeated item.
func pages[T any](t *testing.T, what string, list func(token string) ([]T, string, error), key func(T) string) ([]T, error) {
	t.Helper()
	var all []T
	seen := map[string]bool{}
	for token, n := "", 0; ; n++ {
		items, next, err := list(token)
		if err != nil {
			return all, err
		}
		if token != "" && len(items) == 0 && next == "" && (strings.HasPrefix(what, "ListConsents") || strings.HasPrefix(what, "ListFeedback")) {
			// A token promised more; pages of a person's consents or a
			// referral's feedback count only what the caller may see.
			t.Errorf("%s: a next page token led to an empty last page", what)
		}
		for _, it := range items {
			if seen[key(it)] {
				t.Errorf("%s: %s twice", what, key(it))
			}
			seen[key(it)] = true
		}
		all = append(all, items...)
		if next == "" {
			return all, nil
		}
		if n > 10000 {
			t.Fatalf("%s: no end to the pages", what)
		}
		token = next
	}
}

func sortedNames(names []string) string {
	s := slices.Clone(names)
	sort.Strings(s)
	return strings.Join(s, " ")
}

// TestAccessMatchesModel holds every read RPC to the model, for every
// caller, in three random worlds.
func TestAccessMatchesModel(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("world ", seed), func(t *testing.T) {
			w := buildWorld(t, seed+1)
			callers := append(slices.Clone(w.orgs), "operator", "")
			for _, id := range callers {
				t.Run("as "+orElse(id, "no key"), func(t *testing.T) { w.checkCaller(t, id) })
			}
		})
	}
}

func orElse(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

func (w *modelWorld) checkCaller(t *testing.T, id string) {
	x := w.x
	ctx := x.As(id)
	caller := ""
	if id != "" && id != "operator" {
		caller = org(id)
	}
	anon := id == ""
	refs, cons, fbs := pb.NewReferralServiceClient(x.Conn), pb.NewConsentServiceClient(x.Conn), pb.NewFeedbackServiceClient(x.Conn)
	unauth := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s without a key: %v; want UNAUTHENTICATED", what, err)
		}
	}

	// GetReferral: each referral, as the model says, and hidden ones as
	// missing ones.
	for _, name := range w.order {
		r := w.referrals[name]
		got, err := refs.GetReferral(ctx, &pb.GetReferralRequest{Name: name})
		_, errMissing := refs.GetReferral(ctx, &pb.GetReferralRequest{Name: missing(name)})
		if anon {
			unauth("GetReferral", err)
			continue
		}
		rel := w.relation(caller, r)
		if rel == none {
			if shape(err, name) != shape(errMissing, missing(name)) {
				t.Errorf("GetReferral %s (hidden) = %v; a missing one = %v", name, err, errMissing)
			}
			continue
		}
		if err != nil {
			t.Errorf("GetReferral %s as %v: %v", name, rel, err)
			continue
		}
		w.checkReferral(t, "GetReferral", caller, rel, got)
	}

	// ListReferrals: every filter term alone, pairs and triples of them,
	// page sizes 1, 3 and 1000 followed to the end.
	var filters []string
	add := func(f string) { filters = append(filters, f) }
	add("")
	terms := map[string][]string{}
	for s := range pb.ReferralState_name {
		if s != 0 {
			terms["state"] = append(terms["state"], "state = "+strings.TrimPrefix(pb.ReferralState(s).String(), "REFERRAL_STATE_"))
		}
	}
	for _, o := range w.orgs {
		terms["recipient"] = append(terms["recipient"], fmt.Sprintf("recipient = %q", org(o)))
		terms["referrer"] = append(terms["referrer"], fmt.Sprintf("referrer = %q", org(o)))
		for _, s := range w.services[o] {
			terms["recipient"] = append(terms["recipient"], fmt.Sprintf("recipient = %q", s))
		}
	}
	for _, name := range w.order {
		terms["parent"] = append(terms["parent"], fmt.Sprintf("parent = %q", name))
	}
	terms["parent"] = append(terms["parent"], fmt.Sprintf("parent = %q", missing(w.order[0])))
	terms["overdue"] = []string{"overdue = true", "overdue = false"}
	for _, field := range filterTerms["ListReferralsRequest"] {
		if len(terms[field]) == 0 {
			t.Fatalf("no values for the filter term %s", field)
		}
		for _, v := range terms[field] {
			add(v)
		}
	}
	fields := filterTerms["ListReferralsRequest"]
	for range 40 {
		k := 2 + w.rng.IntN(2)
		perm := w.rng.Perm(len(fields))[:k]
		var parts []string
		for _, i := range perm {
			vs := terms[fields[i]]
			parts = append(parts, vs[w.rng.IntN(len(vs))])
		}
		add(strings.Join(parts, " AND "))
	}
	if caller != "" {
		add(fmt.Sprintf("recipient = %q AND overdue = true", caller))
		add(fmt.Sprintf("recipient = %q AND overdue = true AND state = REQUESTED", caller))
	}
	for i, f := range filters {
		want, wantErr := w.listModel(caller, f)
		for _, size := range []int32{1000, 1, 3} {
			if size != 1000 && i%4 != 0 {
				continue // the small pages on a quarter of the filters
			}
			got, err := pages(t, "ListReferrals "+f, func(token string) ([]*pb.Referral, string, error) {
				l, err := refs.ListReferrals(ctx, &pb.ListReferralsRequest{Filter: f, PageSize: size, PageToken: token})
				return l.GetReferrals(), l.GetNextPageToken(), err
			}, func(r *pb.Referral) string { return r.Name })
			switch {
			case anon:
				unauth("ListReferrals", err)
			case wantErr != "":
				if _, reason := exchangetest.Reason(err); reason != wantErr {
					t.Errorf("ListReferrals %q as %s: %v; want %s", f, id, err, wantErr)
				}
			case err != nil:
				t.Errorf("ListReferrals %q as %s (page size %d): %v", f, id, size, err)
			default:
				var names []string
				for _, r := range got {
					names = append(names, r.Name)
					w.checkReferral(t, "ListReferrals "+f, caller, w.relation(caller, w.referrals[r.Name]), r)
				}
				if sortedNames(names) != sortedNames(want) {
					t.Errorf("ListReferrals %q as %s (page size %d) = %v; the model says %v", f, id, size, names, want)
				}
			}
		}
		if strings.HasPrefix(f, "parent = ") && wantErr == "" && !anon {
			// A hidden parent is as a missing one.
			p := strings.Trim(strings.TrimPrefix(f, "parent = "), `"`)
			if r, ok := w.referrals[p]; ok && w.relation(caller, r) == none {
				_, err := refs.ListReferrals(ctx, &pb.ListReferralsRequest{Filter: f})
				_, errMissing := refs.ListReferrals(ctx, &pb.ListReferralsRequest{Filter: fmt.Sprintf("parent = %q", missing(p))})
				if shape(err, p) != shape(errMissing, missing(p)) {
					t.Errorf("ListReferrals under hidden %s = %v; under a missing one = %v", p, err, errMissing)
				}
			}
		}
	}

	// Consents: GetConsent each, ListConsents of each person.
	for name, c := range w.consents {
		got, err := cons.GetConsent(ctx, &pb.GetConsentRequest{Name: name})
		_, errMissing := cons.GetConsent(ctx, &pb.GetConsentRequest{Name: missing(name)})
		switch {
		case anon:
			unauth("GetConsent", err)
		case !w.consentVisible(caller, c):
			if shape(err, name) != shape(errMissing, missing(name)) {
				t.Errorf("GetConsent %s (hidden) = %v; a missing one = %v", name, err, errMissing)
			}
		case err != nil || got.Name != name:
			t.Errorf("GetConsent %s: %v, %v", name, got, err)
		}
	}
	for _, nhs := range append(slices.Clone(w.persons), exchangetest.NHSNumber(99991)) {
		var want []string
		for name, c := range w.consents {
			if c.NhsNumber == nhs && w.consentVisible(caller, c) {
				want = append(want, name)
			}
		}
		for _, size := range []int32{1, 1000} {
			got, err := pages(t, "ListConsents "+nhs, func(token string) ([]*pb.Consent, string, error) {
				l, err := cons.ListConsents(ctx, &pb.ListConsentsRequest{NhsNumber: nhs, PageSize: size, PageToken: token})
				return l.GetConsents(), l.GetNextPageToken(), err
			}, func(c *pb.Consent) string { return c.Name })
			if anon {
				unauth("ListConsents", err)
				continue
			}
			var names []string
			for _, c := range got {
				names = append(names, c.Name)
			}
			if err != nil || sortedNames(names) != sortedNames(want) {
				t.Errorf("ListConsents %s as %s (page size %d) = %v, %v; the model says %v", nhs, id, size, names, err, want)
			}
		}
	}

	// ListFeedback of each referral.
	for _, name := range w.order {
		r := w.referrals[name]
		var want []string
		for _, f := range w.feedback[name] {
			if w.feedbackVisible(caller, r, f) {
				want = append(want, f.Name)
			}
		}
		for _, size := range []int32{1, 1000} {
			got, err := pages(t, "ListFeedback "+name, func(token string) ([]*pb.Feedback, string, error) {
				l, err := fbs.ListFeedback(ctx, &pb.ListFeedbackRequest{Parent: name, PageSize: size, PageToken: token})
				return l.GetFeedback(), l.GetNextPageToken(), err
			}, func(f *pb.Feedback) string { return f.Name })
			switch {
			case anon:
				unauth("ListFeedback", err)
			case w.relation(caller, r) == none:
				_, errMissing := fbs.ListFeedback(ctx, &pb.ListFeedbackRequest{Parent: missing(name), PageSize: size})
				if len(got) > 0 || shape(err, name) != shape(errMissing, missing(name)) {
					t.Errorf("ListFeedback of hidden %s = %d items, %v; of a missing one = %v", name, len(got), err, errMissing)
				}
			default:
				var names []string
				for _, f := range got {
					names = append(names, f.Name)
				}
				if err != nil || sortedNames(names) != sortedNames(want) {
					t.Errorf("ListFeedback %s as %s (page size %d) = %v, %v; the model says %v", name, id, size, names, err, want)
				}
			}
		}
	}

	w.checkEvents(t, id, caller, anon)
	w.checkReports(t, id, caller, anon)
	w.checkDirectory(t, id, anon)
}

// checkReferral holds one referral as caller saw it to the model.
func (w *modelWorld) checkReferral(t *testing.T, what, caller string, rel relation, got *pb.Referral) {
	t.Helper()
	if rel == none {
		t.Errorf("%s: %s is shown to %s, which may not see it", what, got.Name, caller)
		return
	}
	r := w.referrals[got.Name]
	full := w.fullView(rel, r)
	if (got.Person != nil) != full || (got.Reason != "") != (full && r.Reason != "") ||
		(got.View == pb.ReferralView_REFERRAL_VIEW_FULL) != full {
		t.Errorf("%s: %s shows %s (relation %d) the person %v (view %v); the model says full = %v", what, got.Name, caller, rel, got.Person != nil, got.View, full)
	}
	wantDup := ""
	if rel == receiver {
		wantDup = r.PossibleDuplicateOf
	}
	if got.PossibleDuplicateOf != wantDup {
		t.Errorf("%s: %s shows %s possible_duplicate_of %q; the model says %q", what, got.Name, caller, got.PossibleDuplicateOf, wantDup)
	}
	if got.State != r.State || got.Consent != r.Consent || got.RecipientService != r.RecipientService {
		t.Errorf("%s: %s differs from the store: %v", what, got.Name, got)
	}
}

// listModel is the model's answer to ListReferrals with filter f: the
// referrals caller may see that match it, or the reason of the error.
func (w *modelWorld) listModel(caller, f string) ([]string, string) {
	match := []func(*pb.Referral) bool{}
	overdue, recipientSelf, parent := false, false, ""
	if f != "" {
		for _, term := range strings.Split(f, " AND ") {
			k, v, _ := strings.Cut(term, " = ")
			v = strings.Trim(v, `"`)
			switch k {
			case "state":
				st := pb.ReferralState(pb.ReferralState_value["REFERRAL_STATE_"+v])
				match = append(match, func(r *pb.Referral) bool { return r.State == st })
			case "recipient":
				recipientSelf = recipientSelf || v == caller || strings.HasPrefix(v, caller+"/services/")
				match = append(match, func(r *pb.Referral) bool { return r.Recipient == v || r.RecipientService == v })
			case "referrer":
				match = append(match, func(r *pb.Referral) bool { return r.Referrer == v })
			case "parent":
				parent = v
				match = append(match, func(r *pb.Referral) bool { return r.ParentReferral == v })
			case "overdue":
				overdue = v == "true"
			}
		}
	}
	if overdue && !recipientSelf {
		return nil, "FIELD_INVALID" // the filter is checked before anything is read
	}
	if p, ok := w.referrals[parent]; parent != "" && (!ok || w.relation(caller, p) == none) {
		return nil, "RESOURCE_NOT_FOUND"
	}
	if overdue {
		now := w.clock.now()
		match = append(match, func(r *pb.Referral) bool {
			return r.State == pb.ReferralState_REFERRAL_STATE_REQUESTED && r.ReplyBy.AsTime().Before(now)
		})
	}
	var out []string
	for _, name := range w.order {
		r := w.referrals[name]
		ok := w.relation(caller, r) != none
		for _, m := range match {
			ok = ok && m(r)
		}
		if ok {
			out = append(out, name)
		}
	}
	return out, ""
}

// checkEvents: every event a caller is sent is of something it may see
// (a referral it is a party to, feedback on one it may read, a consent of
// its own or of a referral of its, or the public directory); every
// referral it is a party to has its REFERRAL_CREATED; WatchEvents sends
// the same as ListEvents; pages of ListEvents join up.
func (w *modelWorld) checkEvents(t *testing.T, id, caller string, anon bool) {
	evs := pb.NewEventServiceClient(w.x.Conn)
	ctx := w.x.As(id)
	var all []*pb.Event
	for after := int64(0); ; {
		l, err := evs.ListEvents(ctx, &pb.ListEventsRequest{After: after, PageSize: 7})
		if anon {
			unauthOK(t, "ListEvents", err)
			return
		}
		if err != nil {
			t.Fatalf("ListEvents: %v", err)
		}
		all = append(all, l.Events...)
		if len(l.Events) == 0 {
			break
		}
		after = l.LastSequence
	}
	created := map[string]bool{}
	for _, e := range all {
		if id == "operator" {
			continue
		}
		res := e.Resource
		switch {
		case strings.Contains(res, "/feedback/"):
			ref := res[:strings.Index(res, "/feedback/")]
			r := w.referrals[ref]
			var f *pb.Feedback
			for _, x := range w.feedback[ref] {
				if x.Name == res {
					f = x
				}
			}
			rel := w.relation(caller, r)
			if f == nil || rel == none || (f.Author != caller && (f.Audience == pb.FeedbackAudience_FEEDBACK_AUDIENCE_AUTHOR_SIDE ||
				(f.GetNote() != nil && rel == upstream))) {
				t.Errorf("event %d %v of %s sent to %s", e.Sequence, e.Type, res, caller)
			}
		case strings.HasPrefix(res, "referrals/"):
			if w.relation(caller, w.referrals[res]) == none {
				t.Errorf("event %d %v of %s sent to %s, no party to it", e.Sequence, e.Type, res, caller)
			}
			if e.Type == pb.EventType_EVENT_TYPE_REFERRAL_CREATED {
				created[res] = true
			}
		case strings.HasPrefix(res, "consents/"):
			c := w.consents[res]
			ok := c != nil && c.RecordedBy == caller
			for _, r := range w.referrals {
				ok = ok || (r.Consent == res && w.relation(caller, r) != none)
			}
			if !ok {
				t.Errorf("event %d %v of %s sent to %s", e.Sequence, e.Type, res, caller)
			}
		}
	}
	if id != "operator" {
		for _, name := range w.order {
			if w.relation(caller, w.referrals[name]) != none && !created[name] {
				t.Errorf("%s is a party to %s but was not sent its REFERRAL_CREATED", caller, name)
			}
		}
	}
	// WatchEvents sends the same events.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := evs.WatchEvents(wctx, &pb.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range all {
		got, err := s.Recv()
		if err != nil || got.Event.Sequence != e.Sequence {
			t.Fatalf("WatchEvents event %d = %v, %v; ListEvents gave %d", i, got, err, e.Sequence)
		}
	}
}

func unauthOK(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("%s without a key: %v; want UNAUTHENTICATED", what, err)
	}
}

// checkReports: the activity report counts exactly the referrals the model
// says the caller may count, for every report filter field alone and
// combined; the outcome report's baselines likewise.
func (w *modelWorld) checkReports(t *testing.T, id, caller string, anon bool) {
	reps := pb.NewReportServiceClient(w.x.Conn)
	ctx := w.x.As(id)
	mid := w.referrals[w.order[len(w.order)/2]].CreateTime
	var filters []*pb.ReportFilter
	values := map[string][]*pb.ReportFilter{
		"start_time":     {{StartTime: mid}},
		"end_time":       {{EndTime: timestamppb.New(mid.AsTime().Add(time.Second))}},
		"service":        {{Service: w.services["vcse1"][0]}, {Service: w.services["lw1"][0]}},
		"category":       {{Category: 1}, {Category: 2}},
		"route":          {{Route: 1}, {Route: 2}},
		"organization":   {{Organization: org("gp1")}, {Organization: org("vcse1")}, {Organization: org("icb")}},
		"trend_interval": {{TrendInterval: pb.TrendInterval_TREND_INTERVAL_MONTH}, {TrendInterval: pb.TrendInterval_TREND_INTERVAL_QUARTER}},
	}
	filters = append(filters, &pb.ReportFilter{})
	for _, field := range reportFilterFields {
		filters = append(filters, values[field]...)
	}
	for range 10 {
		f := &pb.ReportFilter{}
		for _, field := range reportFilterFields {
			if w.rng.IntN(3) == 0 {
				vs := values[field]
				proto.Merge(f, vs[w.rng.IntN(len(vs))])
			}
		}
		filters = append(filters, f)
	}
	for _, f := range filters {
		a, err := reps.GetActivityReport(ctx, &pb.GetActivityReportRequest{Filter: f})
		o, oerr := reps.GetOutcomeReport(ctx, &pb.GetOutcomeReportRequest{Filter: f})
		if anon {
			unauthOK(t, "GetActivityReport", err)
			unauthOK(t, "GetOutcomeReport", oerr)
			continue
		}
		if err != nil || oerr != nil {
			t.Errorf("reports with %v: %v, %v", f, err, oerr)
			continue
		}
		n, baselines := 0, 0
		for _, name := range w.order {
			r := w.referrals[name]
			if !w.counted(caller, id == "operator", r, f) {
				continue
			}
			n++
			everyone := id == "operator" || w.kind[id] == pb.OrganizationKind_ORGANIZATION_KIND_COMMISSIONER
			for _, fb := range w.feedback[name] {
				if m := fb.GetOutcome(); m != nil && m.Timepoint == pb.Timepoint_TIMEPOINT_BASELINE && (everyone || w.countedOutcome(caller, r, fb)) {
					baselines++
					break
				}
			}
		}
		got := 0
		for _, c := range o.Completeness {
			got += int(c.Baseline.GetValue())
		}
		// The trend, when the referrals span more than one period, splits
		// the same referrals.
		inTrend := 0
		for _, p := range a.Trend {
			inTrend += int(p.Referrals.GetValue())
		}
		if len(a.Trend) > 0 && inTrend != n {
			t.Errorf("reports as %s with %v: the trend holds %d referrals; the model says %d", id, f, inTrend, n)
		}
		if a.Referrals.GetValue() != int64(n) || got != baselines {
			t.Errorf("reports as %s with %v: %d referrals, %d baselines; the model says %d and %d", id, f, a.Referrals.GetValue(), got, n, baselines)
		}
	}
}

// checkDirectory: organisations, services, capacity and search are the
// same for every caller with a key; API keys only for their organisation
// (and the operator); the audit log only for the operator; hidden as
// refusals, never as someone else's data.
func (w *modelWorld) checkDirectory(t *testing.T, id string, anon bool) {
	x := w.x
	ctx := x.As(id)
	dir := pb.NewDirectoryServiceClient(x.Conn)
	capc := pb.NewCapacityServiceClient(x.Conn)
	for _, o := range w.orgs {
		_, err := dir.GetOrganization(ctx, &pb.GetOrganizationRequest{Name: org(o)})
		if anon {
			unauthOK(t, "GetOrganization", err)
		} else if err != nil {
			t.Errorf("GetOrganization %s: %v", o, err)
		}
		l, err := dir.ListServices(ctx, &pb.ListServicesRequest{Parent: org(o), PageSize: 1000})
		if !anon && (err != nil || len(l.Services) != len(w.services[o])) {
			t.Errorf("ListServices %s = %v, %v", o, l, err)
		}
		for _, s := range w.services[o] {
			_, err := dir.GetService(ctx, &pb.GetServiceRequest{Name: s})
			_, cerr := capc.GetCapacity(ctx, &pb.GetCapacityRequest{Name: s + "/capacity"})
			if !anon && (err != nil || cerr != nil) {
				t.Errorf("GetService/GetCapacity %s: %v, %v", s, err, cerr)
			}
		}
		keys, err := pb.NewApiKeyServiceClient(x.Conn).ListApiKeys(ctx, &pb.ListApiKeysRequest{Parent: org(o), PageSize: 1000})
		switch {
		case anon:
			unauthOK(t, "ListApiKeys", err)
		case id == o || id == "operator":
			if err != nil || len(keys.ApiKeys) == 0 {
				t.Errorf("ListApiKeys %s as %s = %v, %v", o, id, keys, err)
			}
			for _, k := range keys.GetApiKeys() {
				if !strings.HasPrefix(k.Name, org(o)+"/") {
					t.Errorf("ListApiKeys %s lists %s", o, k.Name)
				}
			}
		case status.Code(err) != codes.PermissionDenied || len(keys.GetApiKeys()) > 0:
			t.Errorf("ListApiKeys %s as %s = %v, %v; want PERMISSION_DENIED", o, id, keys, err)
		}
	}
	for _, kind := range []pb.OrganizationKind{0, pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION, pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE} {
		f := ""
		want := len(w.orgs) + 1 // and the operator's own
		if kind != 0 {
			f = "kind = " + strings.TrimPrefix(kind.String(), "ORGANIZATION_KIND_")
			want = 0
			for _, o := range w.orgs {
				if w.kind[o] == kind {
					want++
				}
			}
		}
		got, err := pages(t, "ListOrganizations "+f, func(token string) ([]*pb.Organization, string, error) {
			l, err := dir.ListOrganizations(ctx, &pb.ListOrganizationsRequest{Filter: f, PageSize: 2, PageToken: token})
			return l.GetOrganizations(), l.GetNextPageToken(), err
		}, func(o *pb.Organization) string { return o.Name })
		if anon {
			unauthOK(t, "ListOrganizations", err)
		} else if err != nil || len(got) != want {
			t.Errorf("ListOrganizations %q = %d, %v; want %d", f, len(got), err, want)
		}
	}
	s, err := dir.SearchServices(ctx, &pb.SearchServicesRequest{Categories: []pb.Category{1, 2, 3}, Postcode: "M14 5AB", Age: 40, HasCapacity: true, PageSize: 2})
	if anon {
		unauthOK(t, "SearchServices", err)
	} else if err != nil || len(s.Matches) == 0 {
		t.Errorf("SearchServices = %v, %v", s, err)
	}
	audit, err := pb.NewAdminServiceClient(x.Conn).ListAuditEvents(ctx, &pb.ListAuditEventsRequest{PageSize: 10,
		Organization: org("gp1"), StartTime: timestamppb.New(w.clock.now().Add(-1000 * time.Hour)), EndTime: timestamppb.New(w.clock.now())})
	switch {
	case anon:
		unauthOK(t, "ListAuditEvents", err)
	case id == "operator":
		if err != nil || len(audit.AuditEvents) == 0 {
			t.Errorf("the operator's audit log = %v, %v", audit, err)
		}
	case status.Code(err) != codes.PermissionDenied:
		t.Errorf("ListAuditEvents as %s: %v; want PERMISSION_DENIED", id, err)
	}
}
