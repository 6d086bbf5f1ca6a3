package report

import (
	"encoding/binary"
	"errors"
	"slices"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
)

// Rows and sums are stored in a compact form of their own: every write
// reads and writes the sums of its day and month, and every report reads
// many, so they are varints, the key first (DecodeKey reads only it), with
// maps in key order so that equal values have equal bytes.

// errCorrupt: stored bytes that are not a row or sums of this form.
var errCorrupt = errors.New("report: corrupt row or sums")

const encodingVersion = 1

type encoder struct{ b []byte }

func (e *encoder) u(x uint64) { e.b = binary.AppendUvarint(e.b, x) }
func (e *encoder) i(x int64)  { e.b = binary.AppendVarint(e.b, x) }
func (e *encoder) s(x string) { e.u(uint64(len(x))); e.b = append(e.b, x...) }
func (e *encoder) flag(x bool) {
	if x {
		e.u(1)
	} else {
		e.u(0)
	}
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) u() uint64 {
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *decoder) i() int64 {
	x, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *decoder) s() string {
	n := d.u()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	x := string(d.b[:n])
	d.b = d.b[n:]
	return x
}

// count reads a length, at most one byte of input per element.
func (d *decoder) count() int {
	n := d.u()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

func (e *encoder) key(k Key) {
	e.u(encodingVersion)
	e.s(k.Service)
	e.s(k.Recipient)
	e.s(k.Referrer)
	e.u(uint64(k.Route))
	e.u(k.Needs)
}

func (d *decoder) key() Key {
	if d.u() != encodingVersion {
		d.fail()
	}
	return Key{Service: d.s(), Recipient: d.s(), Referrer: d.s(), Route: pb.ReferralRoute(d.u()), Needs: d.u()}
}

// DecodeKey reads only the Key of stored row or sums bytes.
func DecodeKey(b []byte) (Key, error) {
	d := decoder{b: b}
	k := d.key()
	return k, d.err
}

func (e *encoder) side(s *Side) {
	e.u(uint64(len(s.Pairs)))
	for _, p := range s.Pairs {
		e.u(uint64(p.Measure))
		e.i(int64(p.Base))
		e.i(int64(p.Follow))
		e.u(uint64(p.Age))
		e.i(p.BaseTime)
	}
	e.u(uint64(len(s.Measured)))
	for _, m := range s.Measured {
		e.u(uint64(m.Instrument))
		e.flag(m.Follow)
	}
}

func (d *decoder) side() Side {
	var s Side
	for range d.count() {
		s.Pairs = append(s.Pairs, Pair{Measure: int8(d.u()), Base: int32(d.i()), Follow: int32(d.i()), Age: int8(d.u()), BaseTime: d.i()})
	}
	for range d.count() {
		s.Measured = append(s.Measured, Measured{Instrument: pb.Instrument(d.u()), Follow: d.u() == 1})
	}
	return s
}

// MarshalBinary encodes the row.
func (r *Row) MarshalBinary() ([]byte, error) {
	e := encoder{b: make([]byte, 0, 128)}
	e.key(r.Key)
	e.i(r.Created)
	e.u(uint64(r.State))
	e.u(uint64(r.Reason))
	e.flag(r.Accepted)
	e.flag(r.Started)
	e.flag(r.Answered)
	e.i(r.Answer)
	e.u(uint64(r.Sex))
	e.side(&r.All)
	e.flag(r.Shared != nil)
	if r.Shared != nil {
		e.side(r.Shared)
	}
	return e.b, nil
}

// UnmarshalBinary decodes a row MarshalBinary encoded.
func (r *Row) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	*r = Row{Key: d.key(), Created: d.i(), State: pb.ReferralState(d.u()), Reason: pb.StateReasonCode(d.u()),
		Accepted: d.u() == 1, Started: d.u() == 1, Answered: d.u() == 1, Answer: d.i(), Sex: int8(d.u())}
	r.All = d.side()
	if d.u() == 1 {
		s := d.side()
		r.Shared = &s
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	return d.err
}

func sortedKeys[K int | int32 | int64 | pb.Instrument, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (e *encoder) counts(m map[int64]int64) {
	e.u(uint64(len(m)))
	for _, k := range sortedKeys(m) {
		e.i(k)
		e.i(m[k])
	}
}

// countsInto adds the counts counts encoded to *m.
func (d *decoder) countsInto(m *map[int64]int64) {
	for range d.count() {
		k := d.i()
		bump(m, k, d.i())
	}
}

func (e *encoder) outcomes(o *OutcomeSums) {
	e.u(uint64(len(o.Groups)))
	for _, g := range sortedKeys(o.Groups) {
		m := o.Groups[g]
		e.u(uint64(g))
		e.i(m.N)
		e.i(m.SB)
		e.i(m.SB2)
		e.i(m.SF)
		e.i(m.SF2)
		e.u(uint64(len(m.Change)))
		for _, c := range sortedKeys(m.Change) {
			e.i(int64(c))
			e.i(m.Change[c])
		}
	}
	e.u(uint64(len(o.Measured)))
	for _, in := range sortedKeys(o.Measured) {
		e.u(uint64(in))
		e.i(o.Measured[in][0])
		e.i(o.Measured[in][1])
	}
}

// outcomesInto adds the outcomes outcomes encoded to o, or passes over
// them when o is nil.
func (d *decoder) outcomesInto(o *OutcomeSums) {
	for range d.count() {
		g := int(d.u())
		m := Moments{N: d.i(), SB: d.i(), SB2: d.i(), SF: d.i(), SF2: d.i()}
		var into *Moments
		if o != nil {
			if o.Groups == nil {
				o.Groups = map[int]*Moments{}
			}
			if into = o.Groups[g]; into == nil {
				into = &Moments{}
				o.Groups[g] = into
			}
			into.add(&m, 1)
		}
		for range d.count() {
			k, n := int32(d.i()), d.i()
			if into != nil {
				bump(&into.Change, k, n)
			}
		}
	}
	for range d.count() {
		in, base, follow := pb.Instrument(d.u()), d.i(), d.i()
		if o == nil {
			continue
		}
		if o.Measured == nil {
			o.Measured = map[pb.Instrument]*[2]int64{}
		}
		if o.Measured[in] == nil {
			o.Measured[in] = &[2]int64{}
		}
		o.Measured[in][0] += base
		o.Measured[in][1] += follow
	}
}

// MarshalBinary encodes the sums.
func (c *Sums) MarshalBinary() ([]byte, error) {
	e := encoder{b: make([]byte, 0, 256)}
	e.key(c.Key)
	for _, x := range []int64{c.N, c.Accepted, c.Started, c.Completed, c.Open, c.Waitlisted} {
		e.i(x)
	}
	e.counts(c.Final)
	e.counts(c.Answers)
	e.outcomes(&c.All)
	e.outcomes(&c.Shared)
	return e.b, nil
}

// UnmarshalBinary decodes sums MarshalBinary encoded.
func (c *Sums) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	*c = Sums{Key: d.key()}
	d.sumsInto(c, &c.All, &c.Shared)
	return d.err
}

// sumsInto adds the sums encoded after their key to c, their outcomes
// of all to all and those shared to shared (nil: passed over).
func (d *decoder) sumsInto(c *Sums, all, shared *OutcomeSums) {
	for _, x := range []*int64{&c.N, &c.Accepted, &c.Started, &c.Completed, &c.Open, &c.Waitlisted} {
		*x += d.i()
	}
	d.countsInto(&c.Final)
	d.countsInto(&c.Answers)
	d.outcomesInto(all)
	d.outcomesInto(shared)
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
}
