// Package kv is the storage boundary: the small key-value engine every
// backend implements (ordered keys in named spaces, a read view and a
// read-write transaction, logs numbered in commit order), and nothing
// more. The exchange's records, their indexes, the change feed, the audit
// log and the stored answers are written once above it (package storage);
// the engines are below it (storage/bolt: one bbolt file and its log;
// storage/etcd: an etcd cluster). kvtest is the suite every engine passes.
package kv

import (
	"context"
	"errors"
	"io"
)

// Errors an engine returns. Wrap them; test with errors.Is.
var (
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("store closed")
	// ErrWriteFailed wraps a commit the engine refused (a full disk, an
	// I/O error, a cluster without quorum): nothing of the transaction
	// was kept, and a later write may succeed once the cause is gone.
	ErrWriteFailed = errors.New("the store could not write")
	// ErrStopped: the engine stopped for good after a failed fsync (or a
	// checkpoint that failed for another reason than a full disk), as etcd
	// and PostgreSQL do: what the file system holds is no longer known.
	// The writes of the group that failed may or may not be kept, and every
	// later write is refused; the process must restart, and the engine's
	// log then replays what reached the disk. A retry with the same
	// request_id after the restart returns the first answer if the write
	// was kept, and makes it otherwise.
	ErrStopped = errors.New("the store stopped after a failed fsync")
	// ErrUnavailable: the engine could not be reached (a cluster without
	// quorum, a partition, a member that stopped answering). Whether a
	// write in flight was kept is not known: a retry with the same
	// request_id answers it either way.
	ErrUnavailable = errors.New("the store could not be reached")
	// ErrTooLarge: a key or value is larger than the engine takes, or a
	// transaction writes more than it takes in one commit. Nothing was
	// kept.
	ErrTooLarge = errors.New("too large for the store")
)

// Cursor walks one space's keys in byte order. Each method returns the key
// and value it lands on, or nil, nil past either end. What it returns is
// valid until the transaction ends and must not be changed.
type Cursor interface {
	First() (k, v []byte)
	Last() (k, v []byte)
	// Seek lands on the first key at or after k.
	Seek(k []byte) (k2, v []byte)
	Next() (k, v []byte)
	Prev() (k, v []byte)
}

// Reader reads one consistent view of every space.
type Reader interface {
	// Get returns the value of key in space, or nil when there is none
	// (a stored empty value is not nil). Valid until the transaction ends.
	Get(space string, key []byte) []byte
	// Cursor walks space. In a write transaction it sees the
	// transaction's own puts and deletes, including those made after it
	// was opened.
	Cursor(space string) Cursor
	// Last returns the number of the newest entry of log (0: none).
	Last(log string) uint64
}

// Index is an index entry of a log entry: an empty value is put in Space
// under Key followed by the entry's number (8 bytes, big-endian).
type Index struct {
	Space string
	Key   []byte
}

// Writer writes inside a transaction.
type Writer interface {
	Reader
	// Put sets key in space to value; an empty key is refused.
	Put(space string, key, value []byte) error
	// Delete removes key from space; deleting a key that is not there is
	// not an error.
	Delete(space string, key []byte) error
	// Append adds value to log under the log's next number, and puts
	// index's entries with that number. Numbers are 1, 2, 3, ... in
	// commit order (an entry committed later has a larger number), with
	// no gap, and a reader that has seen number n and reads again sees
	// every entry after n. The log's space is log itself, keyed by the
	// number (8 bytes, big-endian). Whether the transaction that appends
	// reads its own entries (and Last counts them) is the engine's:
	// bbolt's does, etcd's does not, so write nothing that depends on
	// either; once Update returns, every reader does.
	Append(log string, value []byte, index ...Index) error
}

// Engine is a transactional key-value store.
type Engine interface {
	// View runs fn in a read-only transaction over one consistent view.
	// fn must not wait for an Update of the same engine: the Update may
	// wait for the view to end (bbolt: a checkpoint that must grow the
	// file's memory map waits for its readers).
	View(ctx context.Context, fn func(Reader) error) error
	// Update runs fn in a read-write transaction and returns once the
	// transaction is durably committed. fn may run more than once (when
	// another transaction in its batch fails, or a concurrent one changed
	// what it read), so it must have no effects outside the transaction
	// other than setting its results. If fn returns an error, nothing it
	// wrote is kept and Update returns that error.
	Update(ctx context.Context, fn func(Writer) error) error
	// Wait blocks until log has an entry numbered above after, or ctx
	// ends.
	Wait(ctx context.Context, log string, after uint64) error
	// Changes returns a number that changes whenever a write that touched
	// any of spaces is acknowledged, before it is acknowledged to its
	// caller (a cache of what those spaces held, made after Changes
	// returned v, is good while it still returns v).
	Changes(spaces ...string) uint64
	// Backup writes a consistent copy of the whole store, taken while
	// writes go on: it calls start with the copy's size (-1 when not known
	// ahead), then writes the copy to the writer start returns.
	Backup(ctx context.Context, start func(size int64) (io.Writer, error)) error
	// Close waits for pending commits and closes the engine.
	Close() error
}
