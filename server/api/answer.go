package api

import (
	"encoding/binary"
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// A retry with a request_id returns the first response, so each write
// stores its answer (the idempotency record). Most of an answer is what
// the request sent: a CreateReferral's answer is the referral it was given,
// with a name, times, a state and an etag added. The stored answer keeps
// only the difference. Fields are compared as they are on the wire, run by
// run (a field's bytes, or a repeated field's consecutive entries), against
// the request's own message of the answer's type (CreateReferralRequest's
// `referral`); a run the request holds byte for byte is stored as its
// field number, and a retry, whose request is the same bytes (its hash is
// checked first), fills it back in. The answer is restored byte for byte,
// so the retry gets exactly the first response, and the personal data a
// caller sent is not kept a second time in the store.
//
// The stored form is a sequence of segments, each a uvarint x and then:
// for even x, x/2 bytes of the answer as they were; for odd x, nothing:
// the run of field x/2 of the request's message.

var errDamagedAnswer = errors.New("stored answer: damaged record")

// embedded returns the wire bytes of the field of req (marshalled as
// reqBytes) whose message type is the answer's, or nil when req has none.
func embedded(req proto.Message, reqBytes []byte, answer proto.Message) []byte {
	want := answer.ProtoReflect().Descriptor().FullName()
	fields := req.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if f.Kind() == protoreflect.MessageKind && !f.IsList() && !f.IsMap() && f.Message().FullName() == want {
			return fieldBytes(reqBytes, f.Number())
		}
	}
	return nil
}

// fieldBytes returns the value of the first length-delimited field num in
// the message b, or nil.
func fieldBytes(b []byte, num protowire.Number) []byte {
	var buf [16]run
	rs, ok := runs(b, buf[:0])
	if !ok {
		return nil
	}
	r := runOf(b, rs, num)
	if _, typ, k := protowire.ConsumeTag(r); k > 0 && typ == protowire.BytesType {
		if v, m := protowire.ConsumeBytes(r[k:]); m >= 0 {
			return v
		}
	}
	return nil
}

// run is a field's consecutive entries in a message: m[start:end].
type run struct {
	num        protowire.Number
	start, end int
}

// runs splits the message b into runs, or fails if b is not a message.
func runs(b []byte, into []run) ([]run, bool) {
	for i := 0; i < len(b); {
		n, typ, k := protowire.ConsumeTag(b[i:])
		if k < 0 {
			return nil, false
		}
		m := protowire.ConsumeFieldValue(n, typ, b[i+k:])
		if m < 0 {
			return nil, false
		}
		if l := len(into); l > 0 && into[l-1].num == n {
			into[l-1].end = i + k + m
		} else {
			into = append(into, run{n, i, i + k + m})
		}
		i += k + m
	}
	return into, true
}

// runOf returns the bytes of the first run of field num, or nil.
func runOf(b []byte, rs []run, num protowire.Number) []byte {
	for _, r := range rs {
		if r.num == num {
			return b[r.start:r.end]
		}
	}
	return nil
}

// elide returns the stored form of answer against the request's message
// of its type (embedded), and whether any run was left out; when none
// was, it returns answer itself, to be stored as it is.
func elide(answer, embedded []byte) ([]byte, bool) {
	if len(embedded) == 0 {
		return answer, false
	}
	var a, b [48]run
	from, ok1 := runs(embedded, a[:0])
	to, ok2 := runs(answer, b[:0])
	if !ok1 || !ok2 {
		return answer, false
	}
	out := make([]byte, 0, 64)
	literal := -1 // start of the answer's bytes not yet written out
	flush := func(end int) {
		if literal >= 0 {
			out = binary.AppendUvarint(out, uint64(end-literal)<<1)
			out = append(out, answer[literal:end]...)
			literal = -1
		}
	}
	shared := false
	for _, r := range to {
		if same := runOf(embedded, from, r.num); same != nil && string(same) == string(answer[r.start:r.end]) {
			flush(r.start)
			out = binary.AppendUvarint(out, uint64(r.num)<<1|1)
			shared = true
		} else if literal < 0 {
			literal = r.start
		}
	}
	if !shared {
		return answer, false
	}
	flush(len(answer))
	return out, true
}

// restore returns the answer elide was given, from its stored form and
// the same request's message.
func restore(stored, embedded []byte) ([]byte, error) {
	from, ok := runs(embedded, nil)
	if !ok {
		return nil, errDamagedAnswer
	}
	out := make([]byte, 0, len(stored)+len(embedded))
	for len(stored) > 0 {
		x, k := binary.Uvarint(stored)
		if k <= 0 {
			return nil, errDamagedAnswer
		}
		stored = stored[k:]
		if x&1 == 1 {
			r := runOf(embedded, from, protowire.Number(x>>1))
			if r == nil {
				return nil, errDamagedAnswer
			}
			out = append(out, r...)
			continue
		}
		if x>>1 > uint64(len(stored)) {
			return nil, errDamagedAnswer
		}
		out = append(out, stored[:x>>1]...)
		stored = stored[x>>1:]
	}
	return out, nil
}
