package exchangev1

import (
	"math"
	"strconv"
)

// Bounds are the bin's bounds, -Inf and +Inf for the open end of an open
// end bin (Bin: where the most extreme changes lie is not shown).
func (b *Bin) Bounds() (low, high float64) {
	low, high = math.Inf(-1), math.Inf(1)
	if b.Low != nil {
		low = *b.Low
	}
	if b.High != nil {
		high = *b.High
	}
	return low, high
}

// Label names the bin's changes for people: "0 to 5", "below -5", "10 and
// over".
func (b *Bin) Label() string {
	num := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	switch {
	case b.Low == nil && b.High == nil:
		return "any"
	case b.Low == nil:
		return "below " + num(*b.High)
	case b.High == nil:
		return num(*b.Low) + " and over"
	}
	return num(*b.Low) + " to " + num(*b.High)
}
