package bolt

import (
	"encoding/binary"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/social-prescribing/exchange/server/storage/kv"
)

// tx is a transaction: a reader's (gens from a snapshot), the writer's
// (stage and rec set: the group's layers and the current call's record;
// the calls of a group share one tx, and its buckets), or Open's own
// (neither, over a bbolt write transaction); see bucket.
type tx struct {
	btx   *bolt.Tx
	gens  []gen
	stage gen
	rec   *record
	// appended are the logs the transaction appended to, and their last
	// numbers (for Wait).
	appended []logNumber
	buckets  map[string]*bucket
	// bolts, when set, keeps btx's buckets across transactions over it
	// (the writer's groups).
	bolts map[string]*bolt.Bucket
}

// logNumber is a log's last number a transaction appended.
type logNumber struct {
	log string
	n   uint64
}

var _ kv.Writer = (*tx)(nil)

func (t *tx) Get(space string, k []byte) []byte   { return t.b(space).Get(k) }
func (t *tx) Cursor(space string) kv.Cursor       { return t.b(space).Cursor() }
func (t *tx) Put(space string, k, v []byte) error { return t.b(space).Put(k, v) }
func (t *tx) Delete(space string, k []byte) error { return t.b(space).Delete(k) }
func (t *tx) Last(log string) uint64              { return t.b(log).Sequence() }

// Append numbers the entry with the log bucket's sequence, in the
// transaction: the writer runs one transaction at a time, so the order of
// numbers is the order of commits.
func (t *tx) Append(log string, v []byte, index ...kv.Index) error {
	b := t.b(log)
	n, err := b.NextSequence()
	if err != nil {
		return err
	}
	num := binary.BigEndian.AppendUint64(nil, n)
	if err := b.Put(num, v); err != nil {
		return err
	}
	for _, ix := range index {
		if err := t.b(ix.Space).Put(append(slices.Clip(ix.Key), num...), nil); err != nil {
			return err
		}
	}
	for i := range t.appended {
		if t.appended[i].log == log {
			t.appended[i].n = n
			return nil
		}
	}
	t.appended = append(t.appended, logNumber{log, n})
	return nil
}

func (t *tx) b(name string) *bucket {
	if b, ok := t.buckets[name]; ok {
		return b
	}
	bb, ok := t.bolts[name]
	if !ok {
		bb = t.btx.Bucket([]byte(name))
		if t.bolts != nil {
			t.bolts[name] = bb
		}
	}
	b := &bucket{name: []byte(name), bb: bb, t: t, layers: make([]*layer, 0, 1+len(t.gens))}
	if t.stage != nil {
		l := t.stage[name]
		if l == nil {
			l = newLayer()
			t.stage[name] = l
		}
		b.layers = append(b.layers, l)
	}
	for _, g := range t.gens {
		if l := g[name]; l != nil {
			b.layers = append(b.layers, l)
		}
	}
	if t.buckets == nil {
		n := 0 // a read touches a few buckets
		if t.stage != nil {
			n = spacesHint // a group, most
		}
		t.buckets = make(map[string]*bucket, n)
	}
	t.buckets[name] = b
	return b
}
