package api_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// unaryRPCs lists every unary RPC of the contract, in a fixed order.
func unaryRPCs() []protoreflect.MethodDescriptor {
	var out []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFilesByPackage("exchange.v1", func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			ms := f.Services().Get(i).Methods()
			for j := range ms.Len() {
				if !ms.Get(j).IsStreamingServer() && !ms.Get(j).IsStreamingClient() {
					out = append(out, ms.Get(j))
				}
			}
		}
		return true
	})
	slices.SortFunc(out, func(a, b protoreflect.MethodDescriptor) int {
		return strings.Compare(string(a.FullName()), string(b.FullName()))
	})
	return out
}

// FuzzRequests sends any bytes, decoded as the request of any unary RPC,
// as any of the worked example's organisations, over the real wire. Every
// request validator runs on them. Whatever the input: the exchange does not
// panic or fail internally, and every refusal is a status with an
// ErrorInfo reason of the contract (and field violations when a field is
// invalid). Bytes that are not the request message at all are
// INVALID_ARGUMENT MALFORMED_REQUEST.
func FuzzRequests(f *testing.F) {
	x := exchangetest.StartWith(f, api.Options{})
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	consent := x.ConsentFor("practice", exchangetest.AdaNHS, nil)
	r, err := x.Refer("practice", "seed", walks, exchangetest.AdaNHS, consent.Name)
	if err != nil {
		f.Fatal(err)
	}
	callers := []string{"practice", "group", "operator", ""}
	rpcs := unaryRPCs()

	// Seeds: every RPC with an empty request, and well-formed requests
	// naming the seeded resources.
	for i, m := range rpcs {
		f.Add(uint8(i), uint8(0), []byte{})
		req := dynamicpb.NewMessage(m.Input())
		for name, v := range map[protoreflect.Name]string{"name": r.Name, "parent": r.Name, "nhs_number": exchangetest.AdaNHS, "request_id": "fuzz"} {
			if fd := req.Descriptor().Fields().ByName(name); fd != nil && fd.Kind() == protoreflect.StringKind && !fd.IsList() {
				req.Set(fd, protoreflect.ValueOfString(v))
			}
		}
		b, _ := proto.Marshal(req)
		f.Add(uint8(i), uint8(1), b)
	}
	seed, _ := proto.Marshal(&pb.CreateReferralRequest{RequestId: "x", Referral: &pb.Referral{RecipientService: walks, Consent: consent.Name,
		Person: exchangetest.Ada(), Route: pb.ReferralRoute_REFERRAL_ROUTE_SELF, Needs: []pb.Category{1}, SupportLevel: 1}})
	for i, m := range rpcs {
		if m.Name() == "CreateReferral" {
			f.Add(uint8(i), uint8(0), seed)
		}
	}

	for i := range rpcs {
		f.Add(uint8(i), uint8(0), []byte{0x0a, 0x01, 0xff}) // field 1, a string that is not UTF-8
		f.Add(uint8(i), uint8(3), []byte{0x0a, 0x05, 'a'})  // truncated
	}
	reasons := pb.ErrorReason(0).Descriptor().Values()
	f.Fuzz(func(t *testing.T, which, who uint8, data []byte) {
		m := rpcs[int(which)%len(rpcs)]
		ctx, cancel := context.WithTimeout(x.As(callers[int(who)%len(callers)]), 10*time.Second)
		defer cancel()
		method := "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
		req := dynamicpb.NewMessage(m.Input())
		if proto.Unmarshal(data, req) != nil {
			// Bytes that are not the request message (malformed wire
			// format, strings that are not UTF-8), sent as they are.
			err := x.Conn.Invoke(ctx, method, data, dynamicpb.NewMessage(m.Output()), grpc.ForceCodec(rawCodec{}))
			if c, reason := exchangetest.Reason(err); c != codes.InvalidArgument || reason != "MALFORMED_REQUEST" {
				t.Fatalf("%s with malformed bytes %x: %v; want INVALID_ARGUMENT MALFORMED_REQUEST", method, data, err)
			}
			return
		}
		err := x.Conn.Invoke(ctx, method, req, dynamicpb.NewMessage(m.Output()))
		if err == nil {
			return
		}
		st := status.Convert(err)
		switch st.Code() {
		case codes.Internal, codes.Unknown, codes.Unavailable, codes.DeadlineExceeded:
			t.Fatalf("%s: %v", method, err)
		}
		var reason string
		var fields []*errdetails.BadRequest_FieldViolation
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.ErrorInfo:
				reason = d.Reason
			case *errdetails.BadRequest:
				fields = d.FieldViolations
			}
		}
		if reasons.ByName(protoreflect.Name("ERROR_REASON_"+reason)) == nil {
			t.Fatalf("%s: %v has no ErrorInfo reason of the contract (%q)", method, err, reason)
		}
		if reason == "FIELD_INVALID" {
			if len(fields) == 0 {
				t.Fatalf("%s: FIELD_INVALID without field violations: %v", method, err)
			}
			for _, v := range fields {
				if v.Field == "" || v.Description == "" {
					t.Fatalf("%s: violation without field or description: %v", method, v)
				}
			}
		}
	})
}
