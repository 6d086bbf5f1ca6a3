package bolt

import (
	"bytes"
	"slices"
	"sync"

	"github.com/google/btree"
	bolt "go.etcd.io/bbolt"
)

// bucket is a bbolt bucket as one transaction sees it.
//
// In the writer (rec set), it is the bucket of the long-lived bbolt write
// transaction, which already holds every change since the last checkpoint;
// each change is also recorded, for the log, the overlay and undo.
//
// In a read transaction (ov set), it is the bucket as of the last
// checkpoint with the changes acknowledged since then laid over it.
//
// With neither (Open's own work), it is the plain bbolt bucket.
type bucket struct {
	name []byte
	bb   *bolt.Bucket
	ov   *layer
	rec  *record
}

// cursor is what the transactions use of a bbolt cursor; merged implements
// it over a bucket and its overlay layer.
type cursor interface {
	First() ([]byte, []byte)
	Seek(k []byte) ([]byte, []byte)
	Next() ([]byte, []byte)
	Prev() ([]byte, []byte)
}

func (b *bucket) Get(k []byte) []byte {
	if b.ov != nil {
		if e, ok := b.ov.tree.Get(entry{key: k}); ok {
			if e.del {
				return nil
			}
			return e.val
		}
	}
	return b.bb.Get(k)
}

func (b *bucket) Put(k, v []byte) error {
	if b.rec == nil {
		return b.bb.Put(k, v)
	}
	// bbolt keeps the slices until the transaction commits, which in the
	// writer is a checkpoint later: it, the log and the overlay share
	// copies nobody else holds.
	k, v = slices.Clone(k), cloneValue(v)
	b.rec.saveOld(b, k)
	if err := b.bb.Put(k, v); err != nil {
		return err
	}
	b.rec.redo = append(b.rec.redo, op{kind: opPut, bucket: b.name, key: k, val: v})
	return nil
}

func (b *bucket) Delete(k []byte) error {
	if b.rec == nil {
		return b.bb.Delete(k)
	}
	k = slices.Clone(k)
	if !b.rec.saveOld(b, k) {
		return nil // nothing to delete: nothing to log
	}
	if err := b.bb.Delete(k); err != nil {
		return err
	}
	b.rec.redo = append(b.rec.redo, op{kind: opDelete, bucket: b.name, key: k})
	return nil
}

func (b *bucket) Sequence() uint64 {
	if b.ov != nil && b.ov.hasSeq {
		return b.ov.seq
	}
	return b.bb.Sequence()
}

func (b *bucket) NextSequence() (uint64, error) {
	old := b.bb.Sequence()
	n, err := b.bb.NextSequence()
	if err != nil || b.rec == nil {
		return n, err
	}
	b.rec.undo = append(b.rec.undo, op{kind: opSequence, bucket: b.name, seq: old})
	b.rec.redo = append(b.rec.redo, op{kind: opSequence, bucket: b.name, seq: n})
	return n, nil
}

func (b *bucket) Cursor() cursor {
	if b.ov == nil {
		return b.bb.Cursor()
	}
	return &merged{bc: b.bb.Cursor(), tree: b.ov.tree}
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

func cloneValue(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return slices.Clone(v)
}

// Changes, as the log, the overlay and undo hold them.

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
// overlay; undo, the values the changes replaced, to take the call back if
// it fails.
type record struct {
	redo, undo []op
}

// saveOld records k's value before a change, and reports whether k exists.
func (r *record) saveOld(b *bucket, k []byte) bool {
	old := b.bb.Get(k)
	if old == nil {
		r.undo = append(r.undo, op{kind: opDelete, bucket: b.name, key: k})
		return false
	}
	r.undo = append(r.undo, op{kind: opPut, bucket: b.name, key: k, val: slices.Clone(old)})
	return true
}

// apply makes the changes in a bbolt write transaction, creating any
// bucket they name that does not exist yet.
func apply(btx *bolt.Tx, ops []op) error {
	for _, o := range ops {
		b, err := btx.CreateBucketIfNotExists(o.bucket)
		if err != nil {
			return err
		}
		switch o.kind {
		case opPut:
			err = b.Put(o.key, o.val)
		case opDelete:
			err = b.Delete(o.key)
		case opSequence:
			err = b.SetSequence(o.seq)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// rollback takes the recorded changes back, newest first.
func (r *record) rollback(btx *bolt.Tx) error {
	undo := slices.Clone(r.undo)
	slices.Reverse(undo)
	return apply(btx, undo)
}

// The overlay: every change acknowledged since the last checkpoint, by
// bucket, for read transactions to lay over the checkpointed file.

type entry struct {
	key, val []byte
	del      bool
}

func entryLess(a, b entry) bool { return bytes.Compare(a.key, b.key) < 0 }

// layer is one bucket's changes.
type layer struct {
	tree   *btree.BTreeG[entry]
	seq    uint64
	hasSeq bool
}

// snapshot is the overlay as of one moment; nothing changes it after it is
// made. base is the bbolt transaction id of the checkpoint it lies over: a
// reader pairs it with a bbolt read transaction at least that new (an
// older one lacks the checkpoint's changes; a newer one already holds some
// of the overlay's, which lay over it unchanged).
type snapshot struct {
	base    int
	buckets map[string]*layer
}

// overlay is the writer's working copy, and the snapshot readers share
// until the next change. Snapshots are taken only when a reader asks, and
// cost a lazy copy-on-write clone of each changed tree.
type overlay struct {
	mu      sync.Mutex
	base    int
	work    map[string]*layer
	changed bool
	snap    *snapshot
}

func newOverlay(base int) *overlay {
	return &overlay{base: base, work: map[string]*layer{}, snap: &snapshot{base: base}}
}

// add lays a group's changes over the others.
func (o *overlay) add(ops []op) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, c := range ops {
		l := o.work[string(c.bucket)]
		if l == nil {
			l = &layer{tree: btree.NewG(16, entryLess)}
			o.work[string(c.bucket)] = l
		}
		switch c.kind {
		case opPut:
			l.tree.ReplaceOrInsert(entry{key: c.key, val: c.val})
		case opDelete:
			l.tree.ReplaceOrInsert(entry{key: c.key, del: true})
		case opSequence:
			l.seq, l.hasSeq = c.seq, true
		}
	}
	o.changed = o.changed || len(ops) > 0
}

// reset empties the overlay after a checkpoint at bbolt transaction base.
func (o *overlay) reset(base int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.base, o.work, o.changed, o.snap = base, map[string]*layer{}, false, &snapshot{base: base}
}

// snapshot returns the overlay as it is now.
func (o *overlay) snapshot() *snapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.changed {
		s := &snapshot{base: o.base, buckets: make(map[string]*layer, len(o.work))}
		for name, l := range o.work {
			s.buckets[name] = &layer{tree: l.tree.Clone(), seq: l.seq, hasSeq: l.hasSeq}
		}
		o.snap, o.changed = s, false
	}
	return o.snap
}

// merged is a cursor over a bucket of the checkpointed file (bc) with the
// overlay's entries for it laid over: an overlay entry replaces the file's
// entry with its key, and a deleted entry hides it.
type merged struct {
	bc   *bolt.Cursor
	tree *btree.BTreeG[entry]
	cur  []byte // the key last returned; nil at the end
	// bk, bv is bc's position: the file's first key not yet passed. After
	// Prev it is unknown (synced false) and Next seeks again.
	bk, bv []byte
	synced bool
}

func (m *merged) First() ([]byte, []byte) {
	bk, bv := m.bc.First()
	return m.forward(bk, bv, nil, true)
}

func (m *merged) Seek(k []byte) ([]byte, []byte) {
	bk, bv := m.bc.Seek(k)
	return m.forward(bk, bv, k, true)
}

func (m *merged) Next() ([]byte, []byte) {
	if m.cur == nil {
		return nil, nil
	}
	bk, bv := m.bk, m.bv
	if !m.synced {
		bk, bv = m.bc.Seek(m.cur)
	}
	if bk != nil && bytes.Equal(bk, m.cur) {
		bk, bv = m.bc.Next()
	}
	return m.forward(bk, bv, m.cur, false)
}

// forward returns the first live key at or after from (after it when
// !incl), given (bk, bv), the file's first key at or after the same point.
func (m *merged) forward(bk, bv, from []byte, incl bool) ([]byte, []byte) {
	for {
		var oe entry
		found := false
		visit := func(e entry) bool {
			if !incl && bytes.Equal(e.key, from) {
				return true
			}
			oe, found = e, true
			return false
		}
		if from == nil {
			m.tree.Ascend(visit)
		} else {
			m.tree.AscendGreaterOrEqual(entry{key: from}, visit)
		}
		if found && (bk == nil || bytes.Compare(oe.key, bk) <= 0) {
			if bk != nil && bytes.Equal(oe.key, bk) {
				bk, bv = m.bc.Next() // the overlay's entry replaces the file's
			}
			if oe.del {
				from, incl = oe.key, false
				continue
			}
			m.cur, m.bk, m.bv, m.synced = oe.key, bk, bv, true
			return oe.key, oe.val
		}
		m.cur, m.bk, m.bv, m.synced = bk, bk, bv, true
		return bk, bv
	}
}

// Prev returns the last live key before the current one.
func (m *merged) Prev() ([]byte, []byte) {
	if m.cur == nil {
		return nil, nil
	}
	bk, bv := m.bc.Seek(m.cur)
	if bk == nil {
		bk, bv = m.bc.Last()
	} else {
		bk, bv = m.bc.Prev()
	}
	from := m.cur
	m.synced = false
	for {
		var oe entry
		found := false
		m.tree.DescendLessOrEqual(entry{key: from}, func(e entry) bool {
			if bytes.Equal(e.key, from) {
				return true
			}
			oe, found = e, true
			return false
		})
		if found && (bk == nil || bytes.Compare(oe.key, bk) >= 0) {
			if bk != nil && bytes.Equal(oe.key, bk) {
				bk, bv = m.bc.Prev()
			}
			if oe.del {
				from = oe.key
				continue
			}
			m.cur = oe.key
			return oe.key, oe.val
		}
		m.cur = bk
		return bk, bv
	}
}
