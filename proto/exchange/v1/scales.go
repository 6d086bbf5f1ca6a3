package exchangev1

import "fmt"

// Scale is what an outcome instrument's scores may be (Instrument, in
// feedback.proto): the server checks a measure against it, and forms show
// it as a hint, from this one table.
type Scale struct {
	Items              int   // item scores of a full measure
	ItemMin, ItemMax   int32 // each item's range
	TotalMin, TotalMax int32 // the total's range; 0, 0: none may be given alone
	VAS                bool  // a visual analogue scale 0-100 is part of it
}

// Scales are the instruments' scales.
var Scales = map[Instrument]Scale{
	Instrument_INSTRUMENT_WEMWBS:  {14, 1, 5, 14, 70, false},
	Instrument_INSTRUMENT_SWEMWBS: {7, 1, 5, 7, 35, false},
	Instrument_INSTRUMENT_ONS4:    {4, 0, 10, 0, 0, false},
	Instrument_INSTRUMENT_EQ5D5L:  {5, 1, 5, 0, 0, true},
	Instrument_INSTRUMENT_UCLA3:   {3, 1, 3, 3, 9, false},
}

// Hint says in words what the instrument's scores must be, for forms; ""
// for an instrument without a scale.
func (i Instrument) Hint() string {
	in, ok := Scales[i]
	if !ok {
		return ""
	}
	s := fmt.Sprintf("%s: %d item scores of %d-%d", Code(i), in.Items, in.ItemMin, in.ItemMax)
	if in.TotalMax > 0 {
		s += fmt.Sprintf(", or the total %d-%d", in.TotalMin, in.TotalMax)
	}
	if in.VAS {
		s += ", and the visual analogue scale 0-100"
	}
	return s + "."
}
