package api

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/tools/loadtest/workload"
)

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestElidedAnswers: a stored answer keeps what the exchange added to the
// request, and the same request gives the first answer back byte for byte.
func TestElidedAnswers(t *testing.T) {
	sent := workload.Referral(7, "organizations/group/services/walks", "organizations/practice/consents/c1")
	req := &pb.CreateReferralRequest{Referral: sent, RequestId: "r-7"}
	created := func(change func(*pb.Referral)) *pb.Referral {
		r := proto.Clone(sent).(*pb.Referral)
		r.Name = "organizations/practice/referrals/aaaaaaaaaaaaaaaa"
		r.CreateTime = timestamppb.Now()
		r.StateTime = r.CreateTime
		r.State = pb.ReferralState_REFERRAL_STATE_REQUESTED
		r.Etag = "0123456789abcdef"
		if change != nil {
			change(r)
		}
		return r
	}
	for _, c := range []struct {
		name       string
		req        proto.Message
		answer     proto.Message
		elided     bool
		notStored  []string // what the stored form must not hold
		stored     []string // what it must hold
		atMostSize int
	}{
		{name: "a created referral keeps what the exchange added",
			req: req, answer: created(nil), elided: true,
			notStored:  []string{sent.Person.NhsNumber, sent.Person.GivenName, sent.Reason[:40]},
			stored:     []string{"aaaaaaaaaaaaaaaa", "0123456789abcdef"},
			atMostSize: 120},
		{name: "a field the exchange changed is stored as it answered",
			req: req, answer: created(func(r *pb.Referral) { r.Person.GivenName = "Changed" }), elided: true,
			notStored: []string{sent.Reason[:40]}, stored: []string{"Changed", sent.Person.NhsNumber}},
		{name: "a repeated field the exchange added to is stored whole",
			req: req, answer: created(func(r *pb.Referral) { r.Needs = append(r.Needs, pb.Category_CATEGORY_HOUSING) }), elided: true,
			notStored: []string{sent.Person.NhsNumber}},
		{name: "a field the exchange cleared stays cleared",
			req: req, answer: created(func(r *pb.Referral) { r.Person = nil }), elided: true,
			notStored: []string{sent.Person.NhsNumber}},
		{name: "unknown fields in the answer are kept",
			req: req, answer: created(func(r *pb.Referral) {
				r.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 999, protowire.BytesType), []byte("extra")))
			}), elided: true, stored: []string{"extra"}},
		{name: "a request without the answer's type stores it whole",
			req: &pb.AcceptReferralRequest{Name: "organizations/practice/referrals/aaaaaaaaaaaaaaaa", RequestId: "a"}, answer: created(nil),
			stored: []string{sent.Person.NhsNumber}},
		{name: "a request whose message is empty stores it whole",
			req: &pb.CreateReferralRequest{RequestId: "r-8"}, answer: created(nil), stored: []string{sent.Person.NhsNumber}},
		{name: "an answer sharing nothing is stored whole",
			req: req, answer: &pb.Referral{Name: "organizations/practice/referrals/bbbbbbbbbbbbbbbb"}, stored: []string{"bbbbbbbbbbbbbbbb"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			reqBytes, answer := marshal(t, c.req), marshal(t, c.answer)
			emb := embedded(c.req, reqBytes, c.answer)
			stored, elided := elide(answer, emb)
			if elided != c.elided {
				t.Fatalf("elided = %v, want %v", elided, c.elided)
			}
			if !elided && !bytes.Equal(stored, answer) {
				t.Fatal("an answer stored whole differs from the answer")
			}
			for _, s := range c.notStored {
				if bytes.Contains(stored, []byte(s)) {
					t.Errorf("the stored form holds %q", s)
				}
			}
			for _, s := range c.stored {
				if !bytes.Contains(stored, []byte(s)) {
					t.Errorf("the stored form lacks %q", s)
				}
			}
			if c.atMostSize > 0 && len(stored) > c.atMostSize {
				t.Errorf("stored %d bytes of a %d-byte answer, want at most %d", len(stored), len(answer), c.atMostSize)
			}
			if !elided {
				return
			}
			// The retry marshals the same request again.
			back, err := restore(stored, embedded(c.req, marshal(t, c.req), c.answer))
			if err != nil || !bytes.Equal(back, answer) {
				t.Fatalf("restore = %d bytes, %v; want the %d-byte answer", len(back), err, len(answer))
			}
		})
	}
}

// TestElideRandomMessages: for messages made of random runs, some of them
// the request's, restore gives back every answer byte for byte.
func TestElideRandomMessages(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	field := func(num protowire.Number) []byte {
		b := protowire.AppendTag(nil, num, protowire.VarintType)
		switch rng.IntN(3) {
		case 0:
			return protowire.AppendVarint(b, rng.Uint64N(1000))
		case 1:
			b = protowire.AppendTag(nil, num, protowire.BytesType)
			v := make([]byte, rng.IntN(12))
			for i := range v {
				v[i] = byte(rng.IntN(4)) // few values: runs often equal
			}
			return protowire.AppendBytes(b, v)
		default:
			b = protowire.AppendTag(nil, num, protowire.Fixed32Type)
			return protowire.AppendFixed32(b, rng.Uint32N(3))
		}
	}
	message := func() []byte {
		var b []byte
		for range rng.IntN(12) {
			num := protowire.Number(1 + rng.IntN(6))
			for range 1 + rng.IntN(3) { // a run, or a repeated field
				b = append(b, field(num)...)
			}
		}
		return b
	}
	elidedSome := 0
	for i := range 20000 {
		emb, answer := message(), message()
		if i%2 == 0 { // answers that share runs with the request
			answer = append(append(answer[:len(answer):len(answer)], emb...), message()...)
		}
		stored, elided := elide(answer, emb)
		if !elided {
			if !bytes.Equal(stored, answer) {
				t.Fatalf("%d: not elided, but stored %x for %x", i, stored, answer)
			}
			continue
		}
		elidedSome++
		back, err := restore(stored, emb)
		if err != nil || !bytes.Equal(back, answer) {
			t.Fatalf("%d: answer %x, request %x: stored %x, restored %x, %v", i, answer, emb, stored, back, err)
		}
	}
	if elidedSome < 5000 {
		t.Errorf("only %d of 20000 answers shared a run with their request", elidedSome)
	}
}

func TestRestoreRefusesDamagedAnswers(t *testing.T) {
	emb := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), []byte("abc"))
	for name, stored := range map[string][]byte{
		"a literal longer than the record": {20, 'x'},
		"a field the request lacks":        {2<<1 | 1},
		"a cut varint":                     {0x80},
	} {
		if _, err := restore(stored, emb); err == nil {
			t.Errorf("%s: restored without an error", name)
		}
	}
	if _, err := restore([]byte{3<<1 | 1}, []byte{0xff}); err == nil {
		t.Error("a damaged request was restored from")
	}
}

func BenchmarkElide(b *testing.B) {
	sent := workload.Referral(7, "organizations/group/services/walks", "organizations/practice/consents/c1")
	req := &pb.CreateReferralRequest{Referral: sent, RequestId: "r-7"}
	r := proto.Clone(sent).(*pb.Referral)
	r.Name, r.CreateTime, r.Etag = "organizations/practice/referrals/aaaaaaaaaaaaaaaa", timestamppb.Now(), "0123456789abcdef"
	reqBytes, _ := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	answer, _ := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	b.ReportAllocs()
	for b.Loop() {
		elide(answer, embedded(req, reqBytes, r))
	}
}
