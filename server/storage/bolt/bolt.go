// Package bolt is the bbolt backend of storage.Store: one file, every
// acknowledged write fsynced, concurrent writers sharing commits.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/storage"
)

// Options tune the store. The zero value is sensible.
type Options struct {
	// LockTimeout is how long Open waits for another process to release the
	// file. Default 5 seconds.
	LockTimeout time.Duration
	// MaxBatch is the most transactions one commit carries. Default 256.
	MaxBatch int
	// OnCommit, when set, is told of every commit: how many callers' writes
	// it carried, how long it took (fsync included), and whether it failed.
	// It runs on the writer, so it must be quick.
	OnCommit func(writes int, took time.Duration, err error)
}

// Store is a storage.Store on a bbolt file.
type Store struct {
	db       *bolt.DB
	maxBatch int
	onCommit func(int, time.Duration, error)

	mu     sync.RWMutex // guards closed against sends on calls
	closed bool
	calls  chan *call
	done   chan struct{}

	lastSeq atomic.Int64
	waitMu  sync.Mutex
	waitCh  chan struct{} // closed and replaced when events are committed
}

type call struct {
	ctx context.Context
	fn  func(storage.WriteTx) error
	err chan error
}

var _ storage.Store = (*Store)(nil)

// Open opens or creates the store at path (mode 0600), creating missing
// buckets. It fails within LockTimeout if another process holds the file.
func Open(path string, opt Options) (*Store, error) {
	if opt.LockTimeout == 0 {
		opt.LockTimeout = 5 * time.Second
	}
	if opt.MaxBatch == 0 {
		opt.MaxBatch = 256
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opt.LockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: the file is locked by another process (is another exchange running on this data directory?)", path)
	}
	if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) {
		return nil, fmt.Errorf("open store %s: the file is not an exchange store or is damaged (%v): restore it from a backup", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db, maxBatch: opt.MaxBatch, onCommit: opt.OnCommit, calls: make(chan *call, opt.MaxBatch), done: make(chan struct{}), waitCh: make(chan struct{})}
	if err := s.prepare(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	go s.loop()
	return s, nil
}

// prepare creates missing buckets and fills indexes added since the file
// was made. bbolt panics on some damaged pages; that becomes an error.
func (s *Store) prepare() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the file is damaged (%v): restore it from a backup", r)
		}
	}()
	return s.db.Update(func(btx *bolt.Tx) error {
		var fill []func(*tx, *pb.Referral) error
		for _, b := range allBuckets {
			if f, ok := backfilled[string(b)]; ok && btx.Bucket(b) == nil {
				fill = append(fill, f)
			}
			if _, err := btx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if len(fill) > 0 && btx.Bucket(bReferrals).Stats().KeyN > 0 {
			t := &tx{btx: btx}
			err := btx.Bucket(bReferrals).ForEach(func(_, v []byte) error {
				r := &pb.Referral{}
				if err := proto.Unmarshal(v, r); err != nil {
					return err
				}
				for _, f := range fill {
					if err := f(t, r); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("filling new indexes: %w", err)
			}
		}
		s.lastSeq.Store(int64(btx.Bucket(bEvents).Sequence()))
		return nil
	})
}

// View implements storage.Store.
func (s *Store) View(ctx context.Context, fn func(storage.ReadTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(btx *bolt.Tx) error { return fn(&tx{btx: btx}) })
}

// Update implements storage.Store. A call whose ctx has ended before the
// writer reaches it is dropped with ctx's error (a deadline is honoured:
// no work starts after it). Once fn has run, Update waits for the commit
// even if ctx ends, so a caller never reports failure for a write that was
// in fact made.
func (s *Store) Update(ctx context.Context, fn func(storage.WriteTx) error) error {
	c := &call{ctx: ctx, fn: fn, err: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return storage.ErrClosed
	}
	select {
	case s.calls <- c:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	return <-c.err
}

// loop is the single writer. It takes the first waiting call, then every call
// already queued behind it (never waiting for more), and commits them in one
// transaction: a lone writer commits at once, and under load each fsync
// carries many writes.
func (s *Store) loop() {
	defer close(s.done)
	for first := range s.calls {
		batch := s.take(nil, first)
	drain:
		for len(batch) < s.maxBatch {
			select {
			case c, ok := <-s.calls:
				if !ok {
					break drain
				}
				batch = s.take(batch, c)
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			s.commit(batch)
		}
	}
}

// take adds c to the batch unless its caller has already gone.
func (s *Store) take(batch []*call, c *call) []*call {
	if err := c.ctx.Err(); err != nil {
		c.err <- err
		return batch
	}
	return append(batch, c)
}

var errRollback = errors.New("rollback")

// commit runs the batch in one transaction. If a call fails, the transaction
// is rolled back, that call gets its error (it saw a consistent state: the
// batch before it), and the rest run again without it.
func (s *Store) commit(batch []*call) {
	for len(batch) > 0 {
		failed, failErr := -1, error(nil)
		var maxSeq int64
		start := time.Now()
		err := s.db.Update(func(btx *bolt.Tx) error {
			t := &tx{btx: btx}
			for i, c := range batch {
				if err := runSafely(c.fn, t); err != nil {
					failed, failErr = i, err
					return errRollback
				}
			}
			maxSeq = t.maxSeq
			return nil
		})
		if failed >= 0 {
			batch[failed].err <- failErr
			batch = append(batch[:failed:failed], batch[failed+1:]...)
			continue
		}
		if err != nil {
			err = fmt.Errorf("%w: %w", storage.ErrWriteFailed, err)
		}
		if s.onCommit != nil {
			s.onCommit(len(batch), time.Since(start), err)
		}
		for _, c := range batch {
			c.err <- err
		}
		if err == nil && maxSeq > 0 {
			s.lastSeq.Store(maxSeq)
			s.waitMu.Lock()
			close(s.waitCh)
			s.waitCh = make(chan struct{})
			s.waitMu.Unlock()
		}
		return
	}
}

func runSafely(fn func(storage.WriteTx) error, t *tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in transaction: %v\n%s", r, debug.Stack())
		}
	}()
	return fn(t)
}

// WaitEvents implements storage.Store.
func (s *Store) WaitEvents(ctx context.Context, after int64) error {
	for {
		s.waitMu.Lock()
		ch := s.waitCh
		s.waitMu.Unlock()
		if s.lastSeq.Load() > after {
			return nil
		}
		select {
		case <-ch:
		case <-s.done:
			return storage.ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Backup implements storage.Store with bbolt's Tx.WriteTo in a read
// transaction: writers go on while it runs.
func (s *Store) Backup(ctx context.Context, start func(size int64) (io.Writer, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(btx *bolt.Tx) error {
		w, err := start(btx.Size())
		if err != nil {
			return err
		}
		_, err = btx.WriteTo(w)
		return err
	})
}

// Size is the size of the store file in bytes.
func (s *Store) Size() int64 {
	var n int64
	s.db.View(func(btx *bolt.Tx) error { n = btx.Size(); return nil })
	return n
}

// Close implements storage.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.calls)
	s.mu.Unlock()
	<-s.done
	return s.db.Close()
}

// Check opens the file at path read-only and runs bbolt's consistency
// check (as `bbolt check` does): every page reachable once, freelist and
// branch ordering sound.
func Check(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// Path returns the file the store is in.
func (s *Store) Path() string { return s.db.Path() }
