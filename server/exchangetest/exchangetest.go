// Package exchangetest runs a real exchange for tests: the gRPC services on
// a loopback listener over a bbolt file in a temporary directory, with an
// operator key and helpers to create organisations, services, consents and
// referrals through the public API.
package exchangetest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/bolt"
	"github.com/social-prescribing/exchange/server/storage/kv"
	"github.com/social-prescribing/exchange/tools/loadtest/workload"
)

// Exchange is a real server on a loopback listener over a bbolt file (or
// another engine, StartOn).
type Exchange struct {
	T     testing.TB
	extra []grpc.UnaryServerInterceptor
	Path  string // the bbolt file
	Opt   api.Options
	Srv   *api.Server
	Store storage.Store
	// Engine is the bbolt engine under Store.
	Engine *bolt.Engine
	Conn   *grpc.ClientConn
	Addr   string            // the gRPC listener
	Keys   map[string]string // organisation id -> API key; "operator" is the operator
	stop   func()
	// engine, when set, opens the engine instead of a bbolt file at Path.
	engine func() (kv.Engine, error)
}

// Start starts an exchange on a new file; it stops when the test ends.
func Start(t testing.TB) *Exchange { return StartWith(t, api.Options{}) }

// StartWith starts an exchange with options, on a new file. Interceptors,
// if any, run after authentication and the limits (tests use them to
// inject faults).
func StartWith(t testing.TB, opt api.Options, interceptors ...grpc.UnaryServerInterceptor) *Exchange {
	t.Helper()
	return StartAt(t, filepath.Join(t.TempDir(), "exchange.db"), opt, interceptors...)
}

// StartAt starts an exchange on the store file at path.
func StartAt(t testing.TB, path string, opt api.Options, interceptors ...grpc.UnaryServerInterceptor) *Exchange {
	t.Helper()
	x := &Exchange{T: t, Path: path, Opt: opt, Keys: map[string]string{}, extra: interceptors}
	x.open()
	t.Cleanup(func() { x.stop() })
	return x
}

// Beside starts a second exchange on the same store as x (StartOn's
// engine opened again: on etcd, a second process's view of the cluster),
// sharing x's keys.
func (x *Exchange) Beside(t testing.TB) *Exchange {
	t.Helper()
	if x.engine == nil {
		t.Fatal("Beside needs an exchange started with StartOn")
	}
	return x.BesideOn(t, x.engine)
}

// BesideOn starts an exchange on the engine engine opens, sharing x's
// keys: a store restored from x's backup, or x's own (Beside).
func (x *Exchange) BesideOn(t testing.TB, engine func() (kv.Engine, error)) *Exchange {
	t.Helper()
	y := &Exchange{T: t, Opt: x.Opt, Keys: x.Keys, engine: engine}
	y.open()
	t.Cleanup(func() { y.stop() })
	return y
}

// StartOn starts an exchange on the engine engine opens (each start and
// restart opens it again); Path and Engine are then unset.
func StartOn(t testing.TB, engine func() (kv.Engine, error), opt api.Options) *Exchange {
	t.Helper()
	x := &Exchange{T: t, Opt: opt, Keys: map[string]string{}, engine: engine}
	x.open()
	t.Cleanup(func() { x.stop() })
	return x
}

func (x *Exchange) open() {
	t := x.T
	t.Helper()
	var eng kv.Engine
	var err error
	if x.engine != nil {
		eng, err = x.engine()
	} else {
		x.Engine, err = bolt.Open(x.Path, bolt.Options{})
		eng = x.Engine
	}
	if err != nil {
		t.Fatal(err)
	}
	store, err := storage.Open(context.Background(), eng)
	if err != nil {
		eng.Close()
		t.Fatal(err)
	}
	x.Srv = api.New(store, x.Opt)
	x.Store = store
	g := grpc.NewServer(x.Srv.Interceptors(x.extra...)...)
	x.Srv.Register(g)
	addr := x.Addr // a restart listens where the exchange was
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	x.Addr = l.Addr().String()
	go g.Serve(l)
	x.Conn, err = grpc.NewClient(x.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	x.stop = func() { x.Conn.Close(); g.Stop(); store.Close() }
	if _, ok := x.Keys["operator"]; !ok {
		if x.Keys["operator"], err = api.CreateOperator(context.Background(), store, time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
	}
}

// Restart stops the server and closes the store, then opens both again on
// the same file and address.
func (x *Exchange) Restart() {
	x.T.Helper()
	x.stop()
	x.open()
}

// As returns a context calling as organisation org ("" for no key).
func (x *Exchange) As(org string) context.Context {
	if org == "" {
		return context.Background()
	}
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+x.Keys[org])
}

// Org creates organisation id with an API key (in Keys).
func (x *Exchange) Org(id string, kind pb.OrganizationKind) {
	x.T.Helper()
	op := x.As("operator")
	o, err := pb.NewDirectoryServiceClient(x.Conn).CreateOrganization(op, &pb.CreateOrganizationRequest{
		OrganizationId: id, Organization: &pb.Organization{Kind: kind, DisplayName: id}})
	if err != nil {
		x.T.Fatal(err)
	}
	k, err := pb.NewApiKeyServiceClient(x.Conn).CreateApiKey(op, &pb.CreateApiKeyRequest{Parent: o.Name})
	if err != nil {
		x.T.Fatal(err)
	}
	x.Keys[id] = k.Secret
}

// Service creates a service of org replying within 72 hours, and returns
// its name.
func (x *Exchange) Service(org, id string, cats ...pb.Category) string {
	x.T.Helper()
	s, err := pb.NewDirectoryServiceClient(x.Conn).CreateService(x.As(org), &pb.CreateServiceRequest{
		Parent: "organizations/" + org, ServiceId: id,
		Service: &pb.Service{DisplayName: id, Categories: cats, DefaultReplyWithin: durationpb.New(72 * time.Hour)}})
	if err != nil {
		x.T.Fatal(err)
	}
	return s.Name
}

// ConsentFor records, as org, a consent for DIRECT_CARE and
// FEEDBACK_TO_REFERRER across the referral chain, changed by edit.
func (x *Exchange) ConsentFor(org, nhs string, edit func(*pb.Consent)) *pb.Consent {
	x.T.Helper()
	c := &pb.Consent{NhsNumber: nhs, Method: pb.ConsentMethod_CONSENT_METHOD_VERBAL,
		Purposes:       []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER},
		RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}
	if edit != nil {
		edit(c)
	}
	got, err := pb.NewConsentServiceClient(x.Conn).CreateConsent(x.As(org), &pb.CreateConsentRequest{Consent: c})
	if err != nil {
		x.T.Fatal(err)
	}
	return got
}

// Refer sends, as org, a referral of Ada with NHS number nhs.
func (x *Exchange) Refer(org, requestID, service, nhs, consent string) (*pb.Referral, error) {
	p := Ada()
	p.NhsNumber = nhs
	return pb.NewReferralServiceClient(x.Conn).CreateReferral(x.As(org), &pb.CreateReferralRequest{RequestId: requestID, Referral: &pb.Referral{
		RecipientService: service, Person: p, Consent: consent, Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
		Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING}})
}

// Capacity sets, as org, a service's status and maximum.
func (x *Exchange) Capacity(service, org string, status pb.CapacityStatus, max int32) {
	x.T.Helper()
	if _, err := pb.NewCapacityServiceClient(x.Conn).UpdateCapacity(x.As(org), &pb.UpdateCapacityRequest{
		Capacity:   &pb.Capacity{Name: service + "/capacity", Status: status, MaxActiveReferrals: max},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status", "max_active_referrals"}}}); err != nil {
		x.T.Fatal(err)
	}
}

// Need returns the path of the first of programs installed, or skips the
// test saying which is missing; in CI (CI=true) it fails the test instead,
// since .ci/run installs them.
func Need(t testing.TB, programs ...string) string {
	t.Helper()
	for _, p := range programs {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; .ci/run installs it", programs[0])
	}
	t.Skipf("%s is not installed: skipping (install it, or run .ci/run)", programs[0])
	return ""
}

// Reason returns an error's code and ErrorInfo reason.
func Reason(err error) (codes.Code, string) {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return st.Code(), info.Reason
		}
	}
	return st.Code(), ""
}

// WantErr fails the test unless err has code and reason.
func WantErr(t testing.TB, err error, code codes.Code, why string) {
	t.Helper()
	if c, r := Reason(err); c != code || r != why {
		t.Fatalf("error = %v (%v %q), want %v %s", err, c, r, code, why)
	}
}

// AdaNHS is the NHS number of the worked example's Ada.
const AdaNHS = "9434765919"

// Ada is the person of the worked example.
func Ada() *pb.Person {
	return &pb.Person{NhsNumber: AdaNHS, GivenName: "Ada", FamilyName: "Jones", DateOfBirth: "1948-03-14", Postcode: "M14 5AB"}
}

// NHSNumber returns a valid NHS number from the test range, distinct for
// each n (workload.NHSNumber, which the benchmarks use too).
func NHSNumber(n int) string { return workload.NHSNumber(n) }
