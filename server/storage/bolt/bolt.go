// Package bolt is the bbolt engine (kv.Engine), the exchange's embedded
// default: one bbolt file and a log beside it, every acknowledged write fdatasynced in the log,
// concurrent writers sharing each fdatasync, and the file brought up to
// date at checkpoints.
package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/social-prescribing/exchange/server/storage/kv"
)

// Options tune the store. The zero value is sensible.
type Options struct {
	// LockTimeout is how long Open waits for another process to release the
	// file. Default 5 seconds.
	LockTimeout time.Duration
	// MaxBatch is the most transactions one group carries. Default 256.
	MaxBatch int
	// CheckpointInterval is how long acknowledged changes may stay in the
	// log before a checkpoint starts committing them to the bbolt file.
	// Default 100ms.
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
	// MaxBacklog bounds the log (and the overlay, which holds the same
	// changes in memory) while checkpoints fail for a full disk: past it,
	// writes are refused with ErrWriteFailed until a checkpoint succeeds.
	// Default 8 times LogLimit.
	MaxBacklog int64
	// OnRefused, when set, is told of each write refused without being
	// tried: "backlog" (MaxBacklog reached) or "stopped" (ErrStopped).
	OnRefused func(reason string)
	// OnFatal, when set, is told once, on the writer, that the store
	// stopped for good (kv.ErrStopped): a failed fdatasync of the log,
	// or a checkpoint that failed other than for a full disk. The process
	// should exit, so that a supervisor restarts it and the log replays.
	OnFatal func(error)

	// beforeCheckpoint, in tests, runs on the checkpointer before each
	// commit.
	beforeCheckpoint func()
	// fdatasync, in tests, replaces the log's fdatasync.
	fdatasync func(*os.File) error
	// checkpointErr, in tests, fails a checkpoint with its error, if any,
	// before it commits.
	checkpointErr func() error
}

// Engine is the kv.Engine on a bbolt file and its log: each space a
// bucket, each log a bucket keyed by its sequence.
//
// Writes: one goroutine (loop) runs every Update, several at a time, over
// the last checkpoint with the changes acknowledged since laid over it. A
// group's changes are appended to the log and fdatasynced, then laid over
// the file for readers (the overlay), then acknowledged. Every
// CheckpointInterval (or LogLimit bytes of log) the writer hands its
// generation of changes to a second goroutine (checkpointer), which puts
// them into bbolt and commits with fsync, together with the next log
// epoch, while the writer goes on in the other log file. Open replays the
// log, so nothing acknowledged is lost to a crash or a power cut.
//
// Reads: a bbolt read transaction of the last checkpoint, with the overlay
// laid over it.
type Engine struct {
	db               *bolt.DB
	logs             [2]*wal // by epoch parity
	ov               *overlay
	maxBatch         int
	interval         time.Duration
	logLimit         int64
	onCommit         func(int, time.Duration, error)
	onCheckpoint     func(time.Duration, error)
	beforeCheckpoint func()
	maxBacklog       int64
	onRefused        func(string)
	onFatal          func(error)
	checkpointErr    func() error
	refusing         bool // the writer is refusing writes for the backlog
	// stopped, once set, is why the store stopped for good (ErrStopped).
	stopped atomic.Pointer[error]

	// The writer's own state.
	epoch       uint64 // of the log being written
	frozenEpoch uint64 // the epoch ov.frozen's checkpoint commits
	pending     bool   // ov.work holds changes
	busy        bool   // the checkpointer is committing ov.frozen
	lastFreeze  time.Time
	nextTry     time.Time // after a failed checkpoint, when to try again
	// rtx is the read transaction of the last checkpoint the writer's
	// groups run over, kept from one group to the next while no
	// checkpoint runs (so that they need not look their buckets up
	// again: rbuckets), and let go before one starts, so that a
	// checkpoint that must grow the file's memory map never waits for it.
	rtx      *bolt.Tx
	rbuckets map[string]*bolt.Bucket
	// rec and ops keep their arrays from one call and one group to the
	// next: growing them anew for every call was a fifth of the bytes the
	// writer allocated.
	rec     record
	ops     []op
	jobs    chan checkpointJob
	results chan checkpointResult

	mu     sync.RWMutex // guards closed against sends on calls
	closed bool
	calls  chan *call
	done   chan struct{}

	// changes counts, for each space Changes was asked about, the groups
	// that changed it; copied on write, so the writer reads it unlocked.
	changes   atomic.Pointer[map[string]*atomic.Uint64]
	changesMu sync.Mutex
	// last is each log's last number, for Wait (read from the file at the
	// first Wait on the log, kept up to date by reply).
	waitMu sync.Mutex
	last   map[string]uint64
	waitCh chan struct{} // closed and replaced when a log grows
	// saved is the group's appended logs before the current call, to take
	// back if it fails.
	saved []logNumber
}

type call struct {
	ctx context.Context
	fn  func(kv.Writer) error
	err chan error
	// snapshot, instead of fn: checkpoint, and send a read transaction of
	// everything acknowledged before the call.
	snapshot chan *bolt.Tx
}

type checkpointJob struct {
	g     gen
	epoch uint64
}

type checkpointResult struct {
	id  int // the bbolt transaction that holds the generation
	err error
}

var _ kv.Engine = (*Engine)(nil)

// spacesHint is about how many spaces a group touches: the size its maps
// start at.
const spacesHint = 32

// The store's own records: the log epoch the file holds.
var (
	bStore   = []byte("store")
	keyEpoch = []byte("log_epoch")
)

// Open opens or creates the store at path (mode 0600) and its log at
// path+".log" and path+".log.1", replaying the log. It fails within LockTimeout if another process holds the file.
func Open(path string, opt Options) (*Engine, error) {
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
		opt.CheckpointInterval = 100 * time.Millisecond
	}
	if opt.LogLimit == 0 {
		opt.LogLimit = 16 << 20
	}
	if opt.MaxBacklog <= 0 {
		opt.MaxBacklog = 8 * opt.LogLimit
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db, err := openFile(path, opt.LockTimeout)
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: the file is locked by another process (is another exchange running on this data directory?)", path)
	}
	if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) || errors.Is(err, errDamaged) {
		return nil, fmt.Errorf("open store %s: the file is not an exchange store or is damaged (%v): restore it from a backup", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Engine{db: db, maxBatch: opt.MaxBatch, interval: opt.CheckpointInterval, logLimit: opt.LogLimit,
		onCommit: opt.OnCommit, onCheckpoint: opt.OnCheckpoint, beforeCheckpoint: opt.beforeCheckpoint,
		maxBacklog: opt.MaxBacklog, onRefused: opt.OnRefused, onFatal: opt.OnFatal, checkpointErr: opt.checkpointErr,
		jobs: make(chan checkpointJob, 1), results: make(chan checkpointResult, 1),
		calls: make(chan *call, opt.MaxBatch), done: make(chan struct{}), waitCh: make(chan struct{}), last: map[string]uint64{}}
	fail := func(err error) (*Engine, error) {
		for _, w := range s.logs {
			if w != nil {
				w.close()
			}
		}
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := s.prepare(); err != nil {
		return fail(err)
	}
	for i, name := range []string{path + ".log", path + ".log.1"} {
		if s.logs[i], err = openWAL(name); err != nil {
			return fail(err)
		}
		if opt.fdatasync != nil {
			s.logs[i].sync = opt.fdatasync
		}
	}
	if err := s.recover(); err != nil {
		return fail(err)
	}
	go s.checkpointer()
	go s.loop()
	return s, nil
}

// errDamaged marks a file bbolt opened but found damaged.
var errDamaged = errors.New("damaged")

// openFile opens the bbolt file and runs bbolt's consistency check over it
// (tx.Check: every page reachable once, or free, of a known type, keys in
// order), so that a damaged file is refused at start rather than failing
// some call later. bbolt panics on some damaged files, and a file cut
// short faults when bbolt reads past its end; both become an error, never
// a stack trace. The check reads the whole file (its cost is in
// docs/benchmarks.md).
func openFile(path string, timeout time.Duration) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("%w: %v", errDamaged, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		db.Close()
		return nil, err
	}
	err = db.View(func(tx *bolt.Tx) error {
		// Every page the file says it has must be in it: bbolt's check
		// reads them in a goroutine of its own, where a fault would kill
		// the process.
		if tx.Size() > fi.Size() {
			return fmt.Errorf("the file is %d bytes but holds pages up to %d: it was cut short", fi.Size(), tx.Size())
		}
		// Every page reachable from the root, read here first, where a
		// page id that points outside the file faults into a panic this
		// function recovers.
		if err := walk(tx); err != nil {
			return err
		}
		return checkTx(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: %v", errDamaged, err)
	}
	return db, nil
}

// walk reads every key and value of every bucket, nested ones too.
func walk(tx *bolt.Tx) error {
	var bucket func(b *bolt.Bucket) error
	bucket = func(b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					return bucket(nb)
				}
			}
			return nil
		})
	}
	return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return bucket(b) })
}

// checkTx is bbolt's consistency check over one read transaction: the
// first few problems it finds, joined.
func checkTx(tx *bolt.Tx) error {
	var errs []error
	for err := range tx.Check() {
		if len(errs) < 5 {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// prepare creates the engine's own bucket and reads the log epoch the
// file holds. bbolt panics on some damaged pages; that becomes an error.
func (s *Engine) prepare() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the file is damaged (%v): restore it from a backup", r)
		}
	}()
	return s.db.Update(func(btx *bolt.Tx) error {
		b, err := btx.CreateBucketIfNotExists(bStore)
		if err != nil {
			return err
		}
		if v := b.Get(keyEpoch); len(v) == 8 {
			s.epoch = binary.BigEndian.Uint64(v)
		}
		return nil
	})
}

// recover replays the log's records of the file's epoch and of the next
// and checkpoints them, so that the writer starts from a file holding
// everything acknowledged and both log files stale.
func (s *Engine) recover() error {
	g, last := gen{}, s.epoch
	for _, epoch := range []uint64{s.epoch, s.epoch + 1} {
		recs, end, w, err := s.records(epoch)
		if err != nil {
			return err
		}
		for i, p := range recs {
			ops, err := decodeOps(p)
			if err != nil {
				return fmt.Errorf("log record %d of epoch %d: %w", i, epoch, err)
			}
			g.add(ops)
		}
		if len(recs) > 0 {
			w.off, last = end, epoch
		}
	}
	id, err := s.commitGen(g, last+1)
	if err != nil {
		return err
	}
	s.epoch = last + 1
	s.log().restart(s.epoch)
	s.ov = newOverlay(id)
	s.lastFreeze = time.Now()
	return nil
}

// records returns the records of epoch from whichever log file holds them
// (a store written before there were two keeps every epoch in the first).
func (s *Engine) records(epoch uint64) ([][]byte, int64, *wal, error) {
	for _, w := range []*wal{s.logs[epoch%2], s.logs[1-epoch%2]} {
		recs, end, err := w.records(epoch)
		if err != nil || len(recs) > 0 {
			return recs, end, w, err
		}
	}
	return nil, 0, nil, nil
}

// log is the log file being written.
func (s *Engine) log() *wal { return s.logs[s.epoch%2] }

// View implements kv.Engine. It reads the last checkpoint with the
// changes acknowledged since laid over it.
func (s *Engine) View(ctx context.Context, fn func(kv.Reader) error) error {
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
		return fn(&tx{btx: btx, gens: snap.gens})
	}
}

// Update implements kv.Engine. A call whose ctx has ended before the
// writer reaches it is dropped with ctx's error (a deadline is honoured:
// no work starts after it). Once fn has run, Update waits for the log's
// fdatasync even if ctx ends, so a caller never reports failure for a
// write that was in fact made.
func (s *Engine) Update(ctx context.Context, fn func(kv.Writer) error) error {
	return s.send(ctx, &call{ctx: ctx, fn: fn, err: make(chan error, 1)})
}

func (s *Engine) send(ctx context.Context, c *call) error {
	if err := s.enqueue(ctx, c); err != nil {
		return err
	}
	return <-c.err
}

// enqueue hands c to the writer.
func (s *Engine) enqueue(ctx context.Context, c *call) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return kv.ErrClosed
	}
	select {
	case s.calls <- c:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	return nil
}

// loop is the single writer. It takes the first waiting call, then every call
// already queued behind it (never waiting for more), and runs them as one
// group: a lone writer's call is logged at once, and under load each
// fdatasync carries many calls. It starts a checkpoint when the log is
// full or CheckpointInterval has passed since the last, and makes a last
// one at Close.
func (s *Engine) loop() {
	defer close(s.done)
	// The timer checkpoints writes left in the log when no more come. It
	// is armed only while there are some, so an idle store sleeps.
	timer := time.NewTimer(s.interval)
	defer timer.Stop()
	armed := true
	for {
		select {
		case c, ok := <-s.calls:
			if !ok {
				s.settle(false)
				s.releaseReadTx()
				close(s.jobs)
				return
			}
			batch := s.take(nil, c)
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
		case r := <-s.results:
			s.finished(r)
		case <-timer.C:
			armed = false
		}
		s.maybeCheckpoint()
		if (s.pending || s.ov.frozen != nil) && !armed {
			timer.Reset(s.interval)
			armed = true
		}
	}
}

// take adds c to the batch unless its caller has already gone. A snapshot
// request ends the batch before it: the batch runs, then the snapshot is
// taken.
func (s *Engine) take(batch []*call, c *call) []*call {
	if err := c.ctx.Err(); err != nil {
		c.err <- err
		return batch
	}
	if c.snapshot == nil {
		if err := s.refusal(); err != nil {
			c.err <- err
			return batch
		}
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

// commit runs the group's calls over a read transaction of the last
// checkpoint and the overlay, each call's changes going into the group's
// own layers so that it sees the calls before it; a call that fails is
// taken back and gets its error. The rest are logged in one record and
// acknowledged once it is fdatasynced.
func (s *Engine) commit(batch []*call) {
	start := time.Now()
	if s.rtx == nil {
		btx, err := s.db.Begin(false)
		if err != nil {
			for _, c := range batch {
				c.err <- fmt.Errorf("%w: %w", kv.ErrWriteFailed, err)
			}
			return
		}
		s.rtx, s.rbuckets = btx, make(map[string]*bolt.Bucket, spacesHint)
	}
	t := &tx{btx: s.rtx, bolts: s.rbuckets, gens: s.ov.writerGens(), stage: make(gen, spacesHint)}
	ops := s.ops[:0]
	var done []*call
	for _, c := range batch {
		clear(s.rec.undo)
		s.rec.redo, s.rec.undo = s.rec.redo[:0], s.rec.undo[:0]
		t.rec = &s.rec
		s.saved = append(s.saved[:0], t.appended...)
		if err := c.ctx.Err(); err != nil {
			c.err <- err // its caller went while the calls before it ran
			continue
		}
		if err := runSafely(c.fn, t); err != nil {
			t.rec.rollback()
			t.appended = append(t.appended[:0], s.saved...)
			c.err <- err
			continue
		}
		ops = append(ops, t.rec.redo...)
		done = append(done, c)
	}
	t.rec = nil
	if cap(ops) <= maxKeptOps {
		s.ops = ops[:0] // for the next group, once this one is done
	}
	if cap(s.rec.undo) > maxKeptOps || cap(s.rec.redo) > maxKeptOps {
		s.rec = record{}
	}
	if s.busy {
		// The calls' reads are done: a checkpoint that must grow the
		// file's memory map does not wait for the log's fdatasync.
		s.releaseReadTx()
	}
	if len(done) == 0 {
		return
	}
	var err error
	if len(ops) > 0 {
		if err = s.log().append(ops); errors.Is(err, errSync) {
			err = s.stop(err)
		} else if err != nil {
			err = fmt.Errorf("%w: %w", kv.ErrWriteFailed, err)
		} else {
			s.ov.add(ops)
			s.pending = true
			s.countChanges(ops)
		}
	}
	if s.onCommit != nil {
		s.onCommit(len(done), time.Since(start), err)
	}
	s.reply(done, err, t.appended)
}

// refusal is why a write is refused before it is tried: the store has
// stopped, or checkpoints are failing and the log holds MaxBacklog.
func (s *Engine) refusal() error {
	if err := s.Err(); err != nil {
		if s.onRefused != nil {
			s.onRefused("stopped")
		}
		return err
	}
	if s.ov.frozen != nil && !s.nextTry.IsZero() && s.log().off >= s.maxBacklog {
		if !s.refusing {
			s.refusing = true
			slog.Warn("checkpoints are failing (a full disk?) and the store's log is at its bound: writes are refused until a checkpoint succeeds",
				"log_bytes", s.log().off, "max_backlog_bytes", s.maxBacklog)
		}
		if s.onRefused != nil {
			s.onRefused("backlog")
		}
		return fmt.Errorf("%w: checkpoints are failing and the log holds %d bytes: writes are refused until one succeeds", kv.ErrWriteFailed, s.log().off)
	}
	return nil
}

// stop stops the store for good (ErrStopped) after err, once, and returns
// the error its callers get.
func (s *Engine) stop(err error) error {
	stopped := fmt.Errorf("%w: %w", kv.ErrStopped, err)
	if s.stopped.CompareAndSwap(nil, &stopped) && s.onFatal != nil {
		s.onFatal(stopped)
	}
	return *s.stopped.Load()
}

// Err returns why the store stopped for good (wrapping
// kv.ErrStopped), or nil while it serves.
func (s *Engine) Err() error {
	if p := s.stopped.Load(); p != nil {
		return *p
	}
	return nil
}

// Changes implements kv.Engine: the sum of the spaces' counts of groups
// that changed them (a space's count starts when it is first asked for).
func (s *Engine) Changes(spaces ...string) uint64 {
	var n uint64
	for _, sp := range spaces {
		n += s.counter(sp).Load()
	}
	return n
}

func (s *Engine) counter(space string) *atomic.Uint64 {
	if m := s.changes.Load(); m != nil {
		if c := (*m)[space]; c != nil {
			return c
		}
	}
	s.changesMu.Lock()
	defer s.changesMu.Unlock()
	m := map[string]*atomic.Uint64{}
	if old := s.changes.Load(); old != nil {
		if c := (*old)[space]; c != nil {
			return c
		}
		for k, v := range *old {
			m[k] = v
		}
	}
	c := new(atomic.Uint64)
	m[space] = c
	s.changes.Store(&m)
	return c
}

// countChanges adds one to the count of each counted space the group's
// changes touch, before the group is acknowledged.
func (s *Engine) countChanges(ops []op) {
	m := s.changes.Load()
	if m == nil {
		return
	}
	var seen []*atomic.Uint64
	for _, o := range ops {
		if c := (*m)[string(o.bucket)]; c != nil && !slices.Contains(seen, c) {
			seen = append(seen, c)
			c.Add(1)
		}
	}
}

// reply acknowledges the calls and wakes the waiters of the logs they
// appended to.
func (s *Engine) reply(done []*call, err error, appended []logNumber) {
	for _, c := range done {
		c.err <- err
	}
	if err != nil || len(appended) == 0 {
		return
	}
	s.waitMu.Lock()
	for _, a := range appended {
		s.last[a.log] = max(s.last[a.log], a.n)
	}
	close(s.waitCh)
	s.waitCh = make(chan struct{})
	s.waitMu.Unlock()
}

// maybeCheckpoint starts a checkpoint when one is due and none is running:
// the writer's generation when the log is full or the interval has
// passed, or again the frozen one after a failed checkpoint, one interval
// later. If the log is full while a checkpoint runs, the writer waits for
// it rather than let the log and the overlay grow without end.
func (s *Engine) maybeCheckpoint() {
	if s.Err() != nil {
		return // stopped: the log replays at the next start
	}
	if s.busy && s.log().off >= s.logLimit {
		s.await()
	}
	if s.busy {
		return
	}
	now := time.Now()
	switch {
	case s.ov.frozen != nil:
		if !now.Before(s.nextTry) {
			s.start()
		}
	case s.pending && (s.log().off >= s.logLimit || now.Sub(s.lastFreeze) >= s.interval):
		s.freeze()
	}
}

// freeze hands the writer's generation to the checkpointer: the writer
// goes on in the next epoch, in the other log file (whose records the last
// checkpoint holds), and the checkpoint commits that epoch as the file's.
func (s *Engine) freeze() {
	s.epoch++
	s.log().restart(s.epoch)
	s.frozenEpoch = s.epoch
	s.ov.freeze()
	s.pending = false
	s.lastFreeze = time.Now()
	s.start()
}

// maxKeptOps bounds the arrays the writer keeps for the next call and
// group, so that one large call (an erasure) does not hold its memory for
// good.
const maxKeptOps = 1 << 14

// releaseReadTx lets the writer's read transaction go.
func (s *Engine) releaseReadTx() {
	if s.rtx != nil {
		s.rtx.Rollback()
		s.rtx, s.rbuckets = nil, nil
	}
}

func (s *Engine) start() {
	s.releaseReadTx()
	s.busy = true
	s.jobs <- checkpointJob{g: s.ov.frozen, epoch: s.frozenEpoch}
}

// finished takes a checkpoint's result. After a failure for a full disk
// the frozen generation stays in the overlay (and its records in the log)
// and is tried again an interval later; writes go on meanwhile, up to
// MaxBacklog. Any other failure (an fsync that failed, a damaged file)
// stops the store: after a failed fsync a later one may report success for
// pages that never reached the disk.
func (s *Engine) finished(r checkpointResult) {
	s.busy = false
	if r.err != nil {
		if !fullDisk(r.err) {
			s.stop(r.err)
		}
		s.nextTry = time.Now().Add(s.interval)
		return
	}
	s.nextTry = time.Time{}
	if s.refusing {
		s.refusing = false
		slog.Info("a checkpoint succeeded: the store takes writes again")
	}
	s.ov.checkpointed(r.id)
}

// settle waits for the checkpoint running, then checkpoints everything
// acknowledged and waits for that too. With force it checkpoints even if
// nothing is new, so that the file's epoch moves on.
func (s *Engine) settle(force bool) error {
	if s.busy {
		s.await()
	}
	if err := s.Err(); err != nil {
		return err // stopped: no checkpoint after a failed fsync
	}
	if s.ov.frozen != nil {
		s.start()
		if err := s.await(); err != nil {
			return err
		}
	}
	if !s.pending && !force {
		return nil
	}
	s.freeze()
	return s.await()
}

// await waits for the running checkpoint and takes its result.
func (s *Engine) await() error {
	r := <-s.results
	s.finished(r)
	return r.err
}

// checkpointer commits the generations the writer hands it.
func (s *Engine) checkpointer() {
	for j := range s.jobs {
		if s.beforeCheckpoint != nil {
			s.beforeCheckpoint()
		}
		if s.checkpointErr != nil {
			if err := s.checkpointErr(); err != nil {
				s.results <- checkpointResult{err: fmt.Errorf("%w: checkpoint: %w", kv.ErrWriteFailed, err)}
				continue
			}
		}
		id, err := s.commitGen(j.g, j.epoch)
		s.results <- checkpointResult{id: id, err: err}
	}
}

// commitGen puts a generation into bbolt and commits it (with fsync)
// together with the log epoch the file then holds. It returns the
// transaction's id.
func (s *Engine) commitGen(g gen, epoch uint64) (id int, err error) {
	start := time.Now()
	btx, err := s.db.Begin(true)
	if err == nil {
		id = btx.ID()
		err = func() (err error) {
			// bbolt panics on some damaged pages; that becomes an error.
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("the file is damaged (%v): restore it from a backup", r)
				}
			}()
			if err := g.apply(btx); err != nil {
				return err
			}
			return btx.Bucket(bStore).Put(keyEpoch, binary.BigEndian.AppendUint64(nil, epoch))
		}()
		if err == nil {
			err = btx.Commit()
		} else {
			btx.Rollback()
		}
	}
	if s.onCheckpoint != nil {
		s.onCheckpoint(time.Since(start), err)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: checkpoint: %w", kv.ErrWriteFailed, err)
	}
	return id, nil
}

// snapshot answers a snapshot call: it checkpoints, hands the caller a
// read transaction of the result (the copy's epoch, c), then moves the
// file to epoch c+2 before any more writes, so that no log record will
// ever be of c or c+1, the epochs a copy restored over the file would
// replay. The call's error is the second checkpoint's: a copy is good only
// once the file has moved on. The caller streams the copy meanwhile, so a
// checkpoint that must wait for its read transaction (to grow the memory
// map) waits for the copy, not for itself.
func (s *Engine) snapshot(c *call) {
	if err := s.settle(true); err != nil {
		c.err <- err
		return
	}
	rtx, err := s.db.Begin(false)
	if err != nil {
		c.err <- err
		return
	}
	c.snapshot <- rtx
	s.epoch++ // skipped: never written
	if err := s.settle(true); err != nil {
		// Nothing was written since the copy's checkpoint: the writer goes
		// back to the copy's epoch, which the file still holds, and the
		// copy is refused.
		s.ov.unfreeze()
		s.epoch -= 2
		s.log().restart(s.epoch)
		c.err <- err
		return
	}
	c.err <- nil
}

func runSafely(fn func(kv.Writer) error, t *tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in transaction: %v\n%s", r, debug.Stack())
		}
	}()
	return fn(t)
}

// Wait implements kv.Engine.
func (s *Engine) Wait(ctx context.Context, log string, after uint64) error {
	for {
		s.waitMu.Lock()
		n, ok := s.last[log]
		if !ok {
			// The first wait on the log: its number as acknowledged so far
			// (reply, which holds the lock, cannot move it meanwhile).
			if err := s.View(ctx, func(r kv.Reader) error { n = r.Last(log); return nil }); err != nil {
				s.waitMu.Unlock()
				return err
			}
			s.last[log] = n
		}
		ch := s.waitCh
		s.waitMu.Unlock()
		if n > after {
			return nil
		}
		select {
		case <-ch:
		case <-s.done:
			return kv.ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Backup implements kv.Engine with bbolt's Tx.WriteTo in a read
// transaction of a checkpoint holding every write acknowledged before the
// call: writers go on while it runs.
func (s *Engine) Backup(ctx context.Context, start func(size int64) (io.Writer, error)) error {
	snap := make(chan *bolt.Tx, 1)
	c := &call{ctx: ctx, err: make(chan error, 1), snapshot: snap}
	if err := s.enqueue(ctx, c); err != nil {
		return err
	}
	copyOut := func(btx *bolt.Tx) error {
		defer btx.Rollback()
		w, err := start(btx.Size())
		if err == nil {
			_, err = btx.WriteTo(w)
		}
		return err
	}
	// The writer sends the copy's transaction, then the second
	// checkpoint's result; or only an error, when there is no copy.
	select {
	case btx := <-snap:
		err := copyOut(btx)
		return errors.Join(err, <-c.err)
	case err := <-c.err:
		select {
		case btx := <-snap: // both were ready
			if err != nil {
				btx.Rollback()
				return err
			}
			return copyOut(btx)
		default:
			return err
		}
	}
}

// Size is the size of the store in bytes: the file and its log.
func (s *Engine) Size() int64 {
	var n int64
	s.db.View(func(btx *bolt.Tx) error { n = btx.Size(); return nil })
	for _, w := range s.logs {
		if st, err := os.Stat(w.f.Name()); err == nil {
			n += st.Size()
		}
	}
	return n
}

// Close implements kv.Engine.
func (s *Engine) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.calls)
	s.mu.Unlock()
	<-s.done
	return errors.Join(s.logs[0].close(), s.logs[1].close(), s.db.Close())
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
	return db.View(checkTx)
}

// Path returns the file the store is in.
func (s *Engine) Path() string { return s.db.Path() }
