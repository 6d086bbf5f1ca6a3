package bolt

import (
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/social-prescribing/exchange/server/storage/kv"
)

// bucket is a bbolt bucket as one transaction sees it: the bucket of the
// last checkpoint (bb) with layers of later changes laid over it, newest
// first.
//
// In a read transaction the layers are a snapshot of the overlay: the
// changes acknowledged since the last checkpoint.
//
// In the writer (t.rec set), layers[0] is the group's own layer, which the
// call's changes go into, over the overlay's generations as the writer
// holds them; each change is also recorded, for the log, the overlay and
// undo. The bbolt file is written only by checkpoints.
//
// With neither (Open's own work), bb is a bucket of a bbolt write
// transaction and changes go straight into it.
type bucket struct {
	name   []byte
	bb     *bolt.Bucket
	layers []*layer
	t      *tx // its rec is the writer's current call's record
}

func (b *bucket) Get(k []byte) []byte {
	for _, l := range b.layers {
		if e, ok := l.tree.Get(kv.Entry{Key: k}); ok {
			if e.Del {
				return nil
			}
			return e.Val
		}
	}
	if b.bb == nil {
		return nil
	}
	return b.bb.Get(k)
}

func (b *bucket) Put(k, v []byte) error {
	if b.t.rec == nil {
		return b.bb.Put(k, v)
	}
	// The checkpoint puts the change into bbolt later, so bbolt's own
	// refusals are made here, where the call can still be told.
	switch {
	case len(k) == 0:
		return berrors.ErrKeyRequired
	case len(k) > bolt.MaxKeySize:
		return berrors.ErrKeyTooLarge
	case len(v) > bolt.MaxValueSize:
		return berrors.ErrValueTooLarge
	}
	// The layer, the log, the overlay and bbolt at the checkpoint share
	// copies nobody else holds, made in one allocation.
	buf := make([]byte, len(k)+len(v))
	copy(buf, k)
	copy(buf[len(k):], v)
	k, v = buf[:len(k):len(k)], buf[len(k):] // v is empty, not nil, for a nil v
	b.t.rec.put(b.layers[0], kv.Entry{Key: k, Val: v})
	b.t.rec.redo = append(b.t.rec.redo, op{kind: opPut, bucket: b.name, key: k, val: v})
	return nil
}

func (b *bucket) Delete(k []byte) error {
	if b.t.rec == nil {
		return b.bb.Delete(k)
	}
	if b.Get(k) == nil {
		return nil // nothing to delete: nothing to log
	}
	k = slices.Clone(k)
	b.t.rec.put(b.layers[0], kv.Entry{Key: k, Del: true})
	b.t.rec.redo = append(b.t.rec.redo, op{kind: opDelete, bucket: b.name, key: k})
	return nil
}

func (b *bucket) Sequence() uint64 {
	for _, l := range b.layers {
		if l.hasSeq {
			return l.seq
		}
	}
	if b.bb == nil {
		return 0
	}
	return b.bb.Sequence()
}

func (b *bucket) NextSequence() (uint64, error) {
	if b.t.rec == nil {
		return b.bb.NextSequence()
	}
	l := b.layers[0]
	b.t.rec.undo = append(b.t.rec.undo, undo{l: l, seq: l.seq, hasSeq: l.hasSeq})
	n := b.Sequence() + 1
	l.seq, l.hasSeq = n, true
	b.t.rec.redo = append(b.t.rec.redo, op{kind: opSequence, bucket: b.name, seq: n})
	return n, nil
}

// Cursor walks the bucket with its layers laid over. The writer's own
// layer is always included, so a cursor sees the call's later changes;
// the other layers do not change while a transaction runs, and empty ones
// are left out.
func (b *bucket) Cursor() kv.Cursor {
	var c kv.Cursor = kv.Empty{}
	if b.bb != nil {
		c = b.bb.Cursor()
	}
	for i := len(b.layers) - 1; i >= 0; i-- {
		if b.layers[i].tree.Len() > 0 || (i == 0 && b.t.rec != nil) {
			c = kv.Merge(c, b.layers[i].tree)
		}
	}
	return c
}

func (b *bucket) ForEach(fn func(k, v []byte) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// Changes, as the log and the overlay hold them.

type opKind byte

const (
	opPut opKind = iota + 1
	opDelete
	opSequence
)

type op struct {
	kind   opKind
	bucket []byte
	key    []byte
	val    []byte // opPut
	seq    uint64 // opSequence
}

// record is what one call changed: redo, in order, for the log and the
// overlay; undo, what the group's layers held before, to take the call
// back if it fails.
type record struct {
	redo []op
	undo []undo
}

// undo is a layer's entry for key (had: whether it had one) or, for a
// nil key, its sequence, before a change.
type undo struct {
	l      *layer
	key    []byte
	old    kv.Entry
	had    bool
	seq    uint64
	hasSeq bool
}

// put puts e in the layer, and what the layer held before in undo.
func (r *record) put(l *layer, e kv.Entry) {
	old, had := l.tree.ReplaceOrInsert(e)
	r.undo = append(r.undo, undo{l: l, key: e.Key, old: old, had: had})
}

// rollback takes the call's changes back out of the group's layers,
// newest first.
func (r *record) rollback() {
	for _, u := range slices.Backward(r.undo) {
		switch {
		case u.key == nil:
			u.l.seq, u.l.hasSeq = u.seq, u.hasSeq
		case u.had:
			u.l.tree.ReplaceOrInsert(u.old)
		default:
			u.l.tree.Delete(kv.Entry{Key: u.key})
		}
	}
}

// The overlay: the changes acknowledged since the last checkpoint, by
// bucket, for transactions to lay over the checkpointed file.

// layer is one bucket's changes.
type layer struct {
	tree   *kv.Changes
	seq    uint64
	hasSeq bool
}

func newLayer() *layer { return &layer{tree: kv.NewChanges()} }

// gen is a generation of changes: every bucket's layer.
type gen map[string]*layer

// add lays changes over the generation's.
func (g gen) add(ops []op) {
	for _, c := range ops {
		l := g[string(c.bucket)]
		if l == nil {
			l = newLayer()
			g[string(c.bucket)] = l
		}
		switch c.kind {
		case opPut:
			l.tree.ReplaceOrInsert(kv.Entry{Key: c.key, Val: c.val})
		case opDelete:
			l.tree.ReplaceOrInsert(kv.Entry{Key: c.key, Del: true})
		case opSequence:
			l.seq, l.hasSeq = c.seq, true
		}
	}
}

// apply writes the generation into a bbolt write transaction, each
// bucket's changes in key order, creating any bucket that does not exist
// yet.
func (g gen) apply(btx *bolt.Tx) error {
	for name, l := range g {
		b, err := btx.CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		if l.hasSeq {
			b.FillPercent = fillAscending // a log: its keys only grow
		}
		l.tree.Ascend(func(e kv.Entry) bool {
			if e.Del {
				err = b.Delete(e.Key)
			} else {
				err = b.Put(e.Key, e.Val)
			}
			return err == nil
		})
		if err == nil && l.hasSeq {
			err = b.SetSequence(l.seq)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// snapshot is the overlay as of one moment: its generations, newest
// first; nothing changes them after it is made. base is the bbolt
// transaction id of the checkpoint they lie over: a reader pairs it with a
// bbolt read transaction at least that new (an older one lacks the
// checkpoint's changes; a newer one already holds those of the oldest
// generation, which lie over it unchanged).
type snapshot struct {
	base int
	gens []gen
}

// overlay holds the writer's generation (work), the generation a
// checkpoint is putting into the file (frozen, or nil), and the snapshot
// readers share until the next change. Only the writer changes it; it
// reads work and frozen without the lock, as nobody else writes them.
// (A reader's snapshot calls Clone on the work trees under the lock; Clone
// writes only a tree's copy-on-write marker, which the writer's reads do
// not touch and its writes, under the lock, do.)
// Snapshots are taken only when a reader asks, and cost a lazy
// copy-on-write clone of each changed tree.
type overlay struct {
	mu      sync.Mutex
	base    int
	work    gen
	frozen  gen
	changed bool
	snap    *snapshot
}

func newOverlay(base int) *overlay {
	return &overlay{base: base, work: gen{}, snap: &snapshot{base: base}}
}

// add lays a group's changes over the others.
func (o *overlay) add(ops []op) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.work.add(ops)
	o.changed = o.changed || len(ops) > 0
}

// freeze hands the writer's generation to a checkpoint and starts a new
// one.
func (o *overlay) freeze() gen {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.frozen, o.work, o.changed = o.work, gen{}, true
	return o.frozen
}

// checkpointed drops the frozen generation once a checkpoint at bbolt
// transaction base holds it.
func (o *overlay) checkpointed(base int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.base, o.frozen, o.changed = base, nil, true
}

// unfreeze drops a frozen generation that holds nothing, after its
// checkpoint failed.
func (o *overlay) unfreeze() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.frozen, o.changed = nil, true
}

// writerGens are the generations as the writer reads them, newest first.
func (o *overlay) writerGens() []gen {
	if o.frozen == nil {
		return []gen{o.work}
	}
	return []gen{o.work, o.frozen}
}

// snapshot returns the overlay as it is now.
func (o *overlay) snapshot() *snapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.changed {
		s := &snapshot{base: o.base}
		if len(o.work) > 0 {
			w := make(gen, len(o.work))
			for name, l := range o.work {
				w[name] = &layer{tree: l.tree.Clone(), seq: l.seq, hasSeq: l.hasSeq}
			}
			s.gens = append(s.gens, w)
		}
		if o.frozen != nil {
			s.gens = append(s.gens, o.frozen)
		}
		o.snap, o.changed = s, false
	}
	return o.snap
}

// fillAscending is how full a checkpoint leaves the pages it splits in a
// log's bucket, whose keys only grow: nothing is ever inserted between
// them, so bbolt's default of half full would leave half of every page
// empty for good. etcd fills its revision-keyed bucket to 90% for the same
// reason. The other buckets keep bbolt's default, which leaves room for
// keys that land between others (an organisation's next referral in an
// index, a hashed key).
const fillAscending = 0.9
