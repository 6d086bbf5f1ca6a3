// Package bolt is the bbolt backend of storage.Store: one bbolt file and a
// log beside it, every acknowledged write fdatasynced in the log,
// concurrent writers sharing each fdatasync, and the file brought up to
// date at checkpoints.
package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
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
	// MaxBatch is the most transactions one group carries. Default 256.
	MaxBatch int
	// CheckpointInterval is how long acknowledged changes may stay in the
	// log before they are committed to the bbolt file. Default 1 second.
	CheckpointInterval time.Duration
	// LogLimit is how large the log may grow before a checkpoint. Default
	// 16 MiB.
	LogLimit int64
	// OnCommit, when set, is told of every group: how many callers' writes
	// it carried, how long it took (the log's fdatasync included), and
	// whether it failed. It runs on the writer, so it must be quick.
	OnCommit func(writes int, took time.Duration, err error)
	// OnCheckpoint, when set, is told of every checkpoint: how long the
	// bbolt commit took (fsync included) and whether it failed.
	OnCheckpoint func(took time.Duration, err error)
}

// Store is a storage.Store on a bbolt file and its log.
//
// Writes: one goroutine (loop) runs every Update, several at a time, in a
// bbolt write transaction that stays open from one checkpoint to the next.
// A group's changes are appended to the log and fdatasynced, then laid over
// the file for readers (the overlay), then acknowledged. Every
// CheckpointInterval (or LogLimit bytes of log) the transaction commits,
// with fsync, together with the next log epoch; the log then starts again
// and the overlay empties. Open replays the log's records of the file's
// epoch, so nothing acknowledged is lost to a crash or a power cut.
//
// Reads: a bbolt read transaction of the last checkpoint, with the overlay
// laid over it.
type Store struct {
	db           *bolt.DB
	wal          *wal
	ov           *overlay
	maxBatch     int
	interval     time.Duration
	logLimit     int64
	onCommit     func(int, time.Duration, error)
	onCheckpoint func(time.Duration, error)

	// The writer's own state.
	wtx        *bolt.Tx // the open write transaction, holding the overlay's changes
	epoch      uint64   // the epoch the file holds; the log's records carry it
	dirty      bool     // wtx holds changes not yet checkpointed
	lastCommit time.Time
	nextTry    time.Time // after a failed checkpoint, when to try again
	broken     error     // set when the writer cannot go on: every write fails with it

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
	// snapshot, instead of fn: checkpoint, and send a read transaction of
	// everything acknowledged before the call.
	snapshot chan *bolt.Tx
}

var _ storage.Store = (*Store)(nil)

// The store's own records: the log epoch the file holds.
var (
	bStore   = []byte("store")
	keyEpoch = []byte("log_epoch")
)

// Open opens or creates the store at path (mode 0600) and its log at
// path+".log", creating missing buckets and replaying the log. It fails
// within LockTimeout if another process holds the file.
func Open(path string, opt Options) (*Store, error) {
	if opt.LockTimeout == 0 {
		opt.LockTimeout = 5 * time.Second
	}
	if opt.MaxBatch == 0 {
		opt.MaxBatch = 256
	}
	if opt.CheckpointInterval < 0 || opt.LogLimit < 0 {
		return nil, fmt.Errorf("open store %s: the checkpoint interval and log limit cannot be negative", path)
	}
	if opt.CheckpointInterval == 0 {
		opt.CheckpointInterval = time.Second
	}
	if opt.LogLimit == 0 {
		opt.LogLimit = 16 << 20
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
	s := &Store{db: db, maxBatch: opt.MaxBatch, interval: opt.CheckpointInterval, logLimit: opt.LogLimit,
		onCommit: opt.OnCommit, onCheckpoint: opt.OnCheckpoint,
		calls: make(chan *call, opt.MaxBatch), done: make(chan struct{}), waitCh: make(chan struct{})}
	if err := s.prepare(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if s.wal, err = openWAL(path + ".log"); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := s.recover(); err != nil {
		s.wal.close()
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
		for _, b := range append(allBuckets, bStore) {
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
		if v := btx.Bucket(bStore).Get(keyEpoch); len(v) == 8 {
			s.epoch = binary.BigEndian.Uint64(v)
		}
		return nil
	})
}

// recover replays the log's records of the file's epoch and checkpoints
// them, so that the writer starts from a file holding everything
// acknowledged.
func (s *Store) recover() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the file is damaged (%v): restore it from a backup", r)
		}
	}()
	if s.wtx, err = s.db.Begin(true); err != nil {
		return err
	}
	s.ov = newOverlay(s.wtx.ID() - 1)
	s.wal.restart(s.epoch)
	if err := s.replay(); err != nil {
		s.wtx.Rollback()
		return err
	}
	s.dirty = true
	if err := s.checkpoint(); err != nil {
		return err
	}
	s.lastSeq.Store(int64(s.wtx.Bucket(bEvents).Sequence()))
	return nil
}

// replay applies the log's records of the current epoch to wtx and moves
// the log's end after them.
func (s *Store) replay() error {
	recs, end, err := s.wal.records(s.epoch)
	if err != nil {
		return err
	}
	for i, p := range recs {
		ops, err := decodeOps(p)
		if err != nil {
			return fmt.Errorf("log record %d: %w", i, err)
		}
		if err := apply(s.wtx, ops); err != nil {
			return fmt.Errorf("replaying log record %d: %w", i, err)
		}
	}
	s.wal.off = end
	return nil
}

// reload rebuilds the write transaction from the file and the log, after a
// failed checkpoint or a call that could not be taken back. Readers are
// unaffected: the overlay already holds exactly the log's changes.
func (s *Store) reload(cause error) error {
	if s.wtx != nil {
		s.wtx.Rollback()
	}
	var err error
	if s.wtx, err = s.db.Begin(true); err == nil {
		err = s.replay()
	}
	if err != nil {
		s.broken = fmt.Errorf("%w: the store stopped writing after %v, and could not reload (%v): restart the exchange", storage.ErrWriteFailed, cause, err)
		return s.broken
	}
	return nil
}

// View implements storage.Store. It reads the last checkpoint with the
// changes acknowledged since laid over it.
func (s *Store) View(ctx context.Context, fn func(storage.ReadTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for {
		btx, err := s.db.Begin(false)
		if err != nil {
			return err
		}
		snap := s.ov.snapshot()
		if snap.base > btx.ID() {
			// A checkpoint landed between the two: the overlay is of the
			// newer file.
			btx.Rollback()
			continue
		}
		defer btx.Rollback()
		return fn(&tx{btx: btx, snap: snap})
	}
}

// Update implements storage.Store. A call whose ctx has ended before the
// writer reaches it is dropped with ctx's error (a deadline is honoured:
// no work starts after it). Once fn has run, Update waits for the log's
// fdatasync even if ctx ends, so a caller never reports failure for a
// write that was in fact made.
func (s *Store) Update(ctx context.Context, fn func(storage.WriteTx) error) error {
	return s.send(ctx, &call{ctx: ctx, fn: fn, err: make(chan error, 1)})
}

func (s *Store) send(ctx context.Context, c *call) error {
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
// already queued behind it (never waiting for more), and runs them as one
// group: a lone writer's call is logged at once, and under load each
// fdatasync carries many calls. It checkpoints when the log is full, when
// CheckpointInterval has passed since the last checkpoint, and at Close.
func (s *Store) loop() {
	defer close(s.done)
	// The timer checkpoints writes left in the log when no more come. It
	// is armed only while there are some, so an idle store sleeps.
	timer := time.NewTimer(s.interval)
	defer timer.Stop()
	armed := true
	for {
		var first *call
		select {
		case c, ok := <-s.calls:
			if !ok {
				s.checkpoint()
				if s.wtx != nil {
					s.wtx.Rollback()
				}
				return
			}
			first = c
		case <-timer.C:
			armed = false
			s.checkpoint()
			if s.dirty { // it failed: try again later
				timer.Reset(s.interval)
				armed = true
			}
			continue
		}
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
		if s.dirty && (s.wal.off >= s.logLimit || time.Since(s.lastCommit) >= s.interval) && !time.Now().Before(s.nextTry) {
			s.checkpoint()
		}
		if s.dirty && !armed {
			timer.Reset(s.interval)
			armed = true
		}
	}
}

// take adds c to the batch unless its caller has already gone. A snapshot
// request ends the batch before it: the batch runs, then the snapshot is
// taken.
func (s *Store) take(batch []*call, c *call) []*call {
	if err := c.ctx.Err(); err != nil {
		c.err <- err
		return batch
	}
	if c.snapshot != nil {
		if len(batch) > 0 {
			s.commit(batch)
		}
		s.snapshot(c)
		return nil
	}
	return append(batch, c)
}

// commit runs the group's calls in the write transaction, each seeing the
// ones before it; a call that fails is taken back and gets its error. The
// rest are logged in one record and acknowledged once it is fdatasynced.
func (s *Store) commit(batch []*call) {
	if s.broken != nil {
		for _, c := range batch {
			c.err <- s.broken
		}
		return
	}
	start := time.Now()
	var ops []op
	var done []*call
	var recs []*record
	var maxSeq int64
	for _, c := range batch {
		rec := &record{}
		t := &tx{btx: s.wtx, rec: rec}
		if err := runSafely(c.fn, t); err != nil {
			if uerr := rec.rollback(s.wtx); uerr != nil {
				// The transaction is in an unknown state: build it again
				// from the file and the log, which hold only what was
				// acknowledged, and run the rest of the group again.
				c.err <- err
				if s.reload(uerr) == nil {
					s.commit(slices.DeleteFunc(slices.Clone(batch), func(d *call) bool { return d == c }))
				} else {
					for _, d := range batch {
						if d != c {
							d.err <- s.broken
						}
					}
				}
				return
			}
			c.err <- err
			continue
		}
		ops = append(ops, rec.redo...)
		recs = append(recs, rec)
		done = append(done, c)
		maxSeq = max(maxSeq, t.maxSeq)
	}
	if len(done) == 0 {
		return
	}
	var err error
	if len(ops) > 0 {
		if err = s.wal.append(ops); err != nil {
			err = fmt.Errorf("%w: %w", storage.ErrWriteFailed, err)
			for i := len(recs) - 1; i >= 0; i-- {
				if uerr := recs[i].rollback(s.wtx); uerr != nil {
					s.reload(uerr)
					break
				}
			}
		} else {
			s.ov.add(ops)
			s.dirty = true
		}
	}
	if s.onCommit != nil {
		s.onCommit(len(done), time.Since(start), err)
	}
	s.reply(done, err, maxSeq)
}

// reply acknowledges the calls and wakes event waiters.
func (s *Store) reply(done []*call, err error, maxSeq int64) {
	for _, c := range done {
		c.err <- err
	}
	if err == nil && maxSeq > s.lastSeq.Load() {
		s.lastSeq.Store(maxSeq)
		s.waitMu.Lock()
		close(s.waitCh)
		s.waitCh = make(chan struct{})
		s.waitMu.Unlock()
	}
}

// checkpoint commits the write transaction (with fsync) together with the
// next epoch, so the log's records become stale, then starts the log, the
// overlay and a write transaction afresh. If the commit fails, the write
// transaction is rebuilt from the file and the log, and the next
// checkpoint tries again; writes go on meanwhile.
func (s *Store) checkpoint() error {
	if !s.dirty || s.broken != nil {
		return s.broken
	}
	start := time.Now()
	id, next := s.wtx.ID(), s.epoch+1
	err := s.wtx.Bucket(bStore).Put(keyEpoch, u64(next))
	if err == nil {
		err = s.wtx.Commit()
	} else {
		s.wtx.Rollback()
	}
	s.wtx = nil
	if s.onCheckpoint != nil {
		s.onCheckpoint(time.Since(start), err)
	}
	if err != nil {
		err = fmt.Errorf("%w: checkpoint: %w", storage.ErrWriteFailed, err)
		s.nextTry = time.Now().Add(s.interval)
		s.reload(err)
		return err
	}
	s.epoch = next
	s.wal.restart(next)
	s.ov.reset(id)
	s.dirty = false
	s.lastCommit, s.nextTry = time.Now(), time.Time{}
	if s.wtx, err = s.db.Begin(true); err != nil {
		s.broken = fmt.Errorf("%w: %w", storage.ErrWriteFailed, err)
		return s.broken
	}
	return nil
}

// snapshot answers a snapshot call: it checkpoints, opens a read
// transaction of the result, then checkpoints again, so that no log record
// will ever be of the epoch the snapshot holds (a copy restored over the
// file is never rolled forward by the log).
func (s *Store) snapshot(c *call) {
	if s.broken != nil {
		c.err <- s.broken
		return
	}
	s.dirty = true
	if err := s.checkpoint(); err != nil {
		c.err <- err
		return
	}
	rtx, err := s.db.Begin(false)
	if err != nil {
		c.err <- err
		return
	}
	s.dirty = true
	if err := s.checkpoint(); err != nil {
		rtx.Rollback()
		c.err <- err
		return
	}
	c.snapshot <- rtx
	c.err <- nil
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
// transaction of a checkpoint holding every write acknowledged before the
// call: writers go on while it runs.
func (s *Store) Backup(ctx context.Context, start func(size int64) (io.Writer, error)) error {
	snap := make(chan *bolt.Tx, 1)
	if err := s.send(ctx, &call{ctx: ctx, err: make(chan error, 1), snapshot: snap}); err != nil {
		return err
	}
	btx := <-snap
	defer btx.Rollback()
	w, err := start(btx.Size())
	if err != nil {
		return err
	}
	_, err = btx.WriteTo(w)
	return err
}

// Size is the size of the store in bytes: the file and its log.
func (s *Store) Size() int64 {
	var n int64
	s.db.View(func(btx *bolt.Tx) error { n = btx.Size(); return nil })
	if st, err := os.Stat(s.wal.f.Name()); err == nil {
		n += st.Size()
	}
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
	return errors.Join(s.wal.close(), s.db.Close())
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
