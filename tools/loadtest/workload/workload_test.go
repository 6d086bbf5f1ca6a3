package workload

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/validate"
)

// TestReferralIsRealistic: about 1.5 KB as a request, and valid.
func TestReferralIsRealistic(t *testing.T) {
	req := &pb.CreateReferralRequest{RequestId: "0f8fad5b-d9cb-469f-a165-70867728950e",
		Referral: Referral(12345, "organizations/riverside-pcn/services/link-workers", "consents/2b4c6d8e0f")}
	n := proto.Size(req)
	if n < 1400 || n > 1600 {
		t.Errorf("a workload CreateReferralRequest is %d bytes, want about 1500", n)
	}
	seen := map[string]bool{}
	for i := range 1000 {
		nhs := NHSNumber(i)
		if _, ok := validate.NHSNumber(nhs); !ok || seen[nhs] {
			t.Fatalf("NHSNumber(%d) = %s: invalid or repeated", i, nhs)
		}
		seen[nhs] = true
	}
}
