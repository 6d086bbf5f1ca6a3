package kv

import (
	"bytes"

	"github.com/google/btree"
)

// Entry is a change laid over a cursor: a put of Key (Val), or its
// deletion (Del).
type Entry struct {
	Key, Val []byte
	Del      bool
}

func entryLess(a, b Entry) bool { return bytes.Compare(a.Key, b.Key) < 0 }

// Changes are puts and deletes in key order, as a transaction or an
// engine's overlay holds them before they reach the store below.
type Changes = btree.BTreeG[Entry]

// changeNodes is the free list every Changes shares: engines make one for
// each space a transaction touches, and a tree with a free list of its own
// would cost an allocation of the list each time.
var changeNodes = btree.NewFreeListG[Entry](btree.DefaultFreeListSize)

// NewChanges returns an empty set of changes.
func NewChanges() *Changes { return btree.NewWithFreeListG(16, entryLess, changeNodes) }

// Merge returns a cursor over bc with the changes laid over: a change
// replaces bc's entry with its key, and a deletion hides it. The changes
// may grow while the cursor is used (a transaction's own writes).
func Merge(bc Cursor, changes *Changes) Cursor { return &merged{bc: bc, tree: changes} }

// Empty is a cursor over nothing.
type Empty struct{}

func (Empty) First() ([]byte, []byte)      { return nil, nil }
func (Empty) Last() ([]byte, []byte)       { return nil, nil }
func (Empty) Seek([]byte) ([]byte, []byte) { return nil, nil }
func (Empty) Next() ([]byte, []byte)       { return nil, nil }
func (Empty) Prev() ([]byte, []byte)       { return nil, nil }

// merged is a cursor over another (bc: the checkpointed file's bucket, or
// a merged cursor of older layers) with a layer's entries laid over: an
// entry replaces bc's entry with its key, and a deleted entry hides it.
type merged struct {
	bc   Cursor
	tree *Changes
	cur  []byte // the key last returned; nil at the end
	// bk, bv is bc's position: its first key not yet passed. After Prev or
	// Last it is unknown (synced false) and Next seeks again.
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
// !incl), given (bk, bv), bc's first key at or after the same point.
func (m *merged) forward(bk, bv, from []byte, incl bool) ([]byte, []byte) {
	for {
		var oe Entry
		found := false
		visit := func(e Entry) bool {
			if !incl && bytes.Equal(e.Key, from) {
				return true
			}
			oe, found = e, true
			return false
		}
		if from == nil {
			m.tree.Ascend(visit)
		} else {
			m.tree.AscendGreaterOrEqual(Entry{Key: from}, visit)
		}
		if found && (bk == nil || bytes.Compare(oe.Key, bk) <= 0) {
			if bk != nil && bytes.Equal(oe.Key, bk) {
				bk, bv = m.bc.Next() // the layer's entry replaces bc's
			}
			if oe.Del {
				from, incl = oe.Key, false
				continue
			}
			m.cur, m.bk, m.bv, m.synced = oe.Key, bk, bv, true
			return oe.Key, oe.Val
		}
		m.cur, m.bk, m.bv, m.synced = bk, bk, bv, true
		return bk, bv
	}
}

func (m *merged) Last() ([]byte, []byte) {
	bk, bv := m.bc.Last()
	return m.backward(bk, bv, nil)
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
	return m.backward(bk, bv, m.cur)
}

// backward returns the last live key before from (nil: the last of all),
// given (bk, bv), bc's last key before the same point.
func (m *merged) backward(bk, bv, from []byte) ([]byte, []byte) {
	m.synced = false
	for {
		var oe Entry
		found := false
		visit := func(e Entry) bool {
			if from != nil && bytes.Equal(e.Key, from) {
				return true
			}
			oe, found = e, true
			return false
		}
		if from == nil {
			m.tree.Descend(visit)
		} else {
			m.tree.DescendLessOrEqual(Entry{Key: from}, visit)
		}
		if found && (bk == nil || bytes.Compare(oe.Key, bk) >= 0) {
			if bk != nil && bytes.Equal(oe.Key, bk) {
				bk, bv = m.bc.Prev()
			}
			if oe.Del {
				from = oe.Key
				continue
			}
			m.cur = oe.Key
			return oe.Key, oe.Val
		}
		m.cur = bk
		return bk, bv
	}
}
