package exchangev1

import (
	"math"
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestBinLabelsAndBounds(t *testing.T) {
	for _, c := range []struct {
		b        *Bin
		label    string
		low, top float64
	}{
		{&Bin{Low: proto.Float64(0), High: proto.Float64(5)}, "0 to 5", 0, 5},
		{&Bin{High: proto.Float64(-5)}, "below -5", math.Inf(-1), -5},
		{&Bin{Low: proto.Float64(10)}, "10 and over", 10, math.Inf(1)},
		{&Bin{}, "any", math.Inf(-1), math.Inf(1)},
	} {
		low, high := c.b.Bounds()
		if got := c.b.Label(); got != c.label || low != c.low || high != c.top {
			t.Errorf("%v: %q [%g, %g), want %q [%g, %g)", c.b, got, low, high, c.label, c.low, c.top)
		}
	}
}
