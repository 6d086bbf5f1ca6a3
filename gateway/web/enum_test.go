package web

import (
	"testing"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

func TestEnumWords(t *testing.T) {
	for _, c := range []struct {
		code, label string
		got         string
		parsed      int32
		want        int32
	}{
		{"IN_PROGRESS", "In progress", code(pb.ReferralState_REFERRAL_STATE_IN_PROGRESS),
			int32(parseCode(pb.ReferralState(0).Descriptor(), "IN_PROGRESS")), int32(pb.ReferralState_REFERRAL_STATE_IN_PROGRESS)},
		{"NOT_ELIGIBLE", "Not eligible", code(pb.StateReasonCode_STATE_REASON_CODE_NOT_ELIGIBLE),
			int32(parseCode(pb.StateReasonCode(0).Descriptor(), "NOT_ELIGIBLE")), int32(pb.StateReasonCode_STATE_REASON_CODE_NOT_ELIGIBLE)},
		{"WEMWBS", "Wemwbs", code(pb.Instrument_INSTRUMENT_WEMWBS),
			int32(parseCode(pb.Instrument(0).Descriptor(), "WEMWBS")), int32(pb.Instrument_INSTRUMENT_WEMWBS)},
	} {
		if c.got != c.code || c.parsed != c.want {
			t.Errorf("code = %q, parsed %d; want %q, %d", c.got, c.parsed, c.code, c.want)
		}
	}
	if l := label(pb.CapacityStatus_CAPACITY_STATUS_NO_CAPACITY); l != "No capacity" {
		t.Errorf("label = %q", l)
	}
	if label(pb.ReferralState_REFERRAL_STATE_UNSPECIFIED) != "" || parseCode(pb.Timepoint(0).Descriptor(), "SOMETIME") != 0 {
		t.Error("unspecified or unknown values should be empty or 0")
	}
}
