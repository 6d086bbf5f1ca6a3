// Package etcd is the etcd engine (kv.Engine): the exchange's spaces and
// logs as keys under one prefix of an etcd cluster, so that several
// exchange processes serve one store and it survives losing a member.
//
// Keys, under the prefix:
//
//	d/{space}\x00{key}       a space's keys (a log's entries: {log}\x00{number})
//	n/{log}                  a log's last number
//	p/{log}\x00{id}          an entry appended but not yet numbered
//
// Transactions are optimistic, with etcd's own compare-and-swap: a
// transaction reads at one revision and buffers its writes, and commits
// in one etcd Txn only if nothing it read (each key, and each range a
// cursor covered) has changed since; otherwise it runs again. No counter
// is bumped by every write: an appended entry is written as a pending key
// in the transaction's own commit (its create revision is the commit's
// order), and numbered afterwards by a stamp, one etcd Txn that numbers
// every pending entry in create-revision order and moves it into its log.
// The appending Update stamps before it returns, so that once it is
// acknowledged every reader sees the entry; a stamp lost to a crash is
// made by the next writer or by any process's sweep.
package etcd

import (
	"bytes"
	"cmp"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/social-prescribing/exchange/server/storage/kv"
)

// Options configure the engine.
type Options struct {
	// Endpoints are the cluster's client URLs.
	Endpoints []string
	// TLS, when set, is used for every connection (the cluster's CA, and
	// a client certificate when the cluster asks for one).
	TLS *tls.Config
	// Prefix is put before every key, so that several exchanges can share
	// a cluster. Default "/exchange/".
	Prefix string
	// DialTimeout bounds the first connection. Default 5 seconds.
	DialTimeout time.Duration
	// MaxTxnOps is the most operations the cluster takes in one
	// transaction (etcd's --max-txn-ops, 128 by default). A transaction
	// that would write more is refused with kv.ErrTooLarge.
	MaxTxnOps int
	// Client, when set, is used instead of dialling Endpoints; Close
	// leaves it open.
	Client *clientv3.Client
	// OnCommit, when set, is told of every transaction that wrote: how
	// many operations and bytes it sent, how long the commit took, how
	// many times it ran before it committed (conflicts), and whether it
	// failed.
	OnCommit func(ops, bytes int, took time.Duration, runs int, err error)
}

// MaxRequestBytes is etcd's default bound on one request (1.5 MiB): a
// transaction whose writes are larger is refused with kv.ErrTooLarge.
const MaxRequestBytes = 3 << 19

// Engine is the kv.Engine over an etcd cluster.
type Engine struct {
	cli      *clientv3.Client
	onCommit func(ops, bytes int, took time.Duration, runs int, err error)
	own      bool // Close closes cli
	pfx      string
	maxOps   int
	ctx      context.Context // ends at Close
	cancel   context.CancelFunc
	closed   atomic.Bool
	pending  sync.WaitGroup // Updates in flight, for Close

	waitMu sync.Mutex
	last   map[string]uint64 // each log's last number seen
	// lastMod is the mod revision of each log's number key when last seen
	// (0: not known), for stampOwn's guess.
	lastMod map[string]int64
	waitCh  chan struct{} // closed and replaced when a log grows

	// versioned are the spaces Changes was asked about: a commit that
	// writes one also puts its version key, v/{space}.
	versionedMu sync.RWMutex
	versioned   map[string]bool
	unreadable  atomic.Uint64 // moves Changes when the versions cannot be read

	watchers sync.WaitGroup

	// A transaction that met a conflict runs again holding turn, so that
	// this process's writers that meet on a key (a service's capacity
	// counts) take turns rather than keep undoing each other's work; new
	// transactions do not wait for it (docs/benchmarks.md has both ways
	// measured).
	turn sync.Mutex
}

var _ kv.Engine = (*Engine)(nil)

// withDefaults fills in the options left zero.
func (opt Options) withDefaults() Options {
	if opt.Prefix == "" {
		opt.Prefix = "/exchange/"
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = 5 * time.Second
	}
	if opt.MaxTxnOps == 0 {
		opt.MaxTxnOps = 128
	}
	return opt
}

// client is opt.Client, or a new client of opt.Endpoints (own: the caller
// closes it).
func (opt Options) client() (cli *clientv3.Client, own bool, err error) {
	if opt.Client != nil {
		return opt.Client, false, nil
	}
	if len(opt.Endpoints) == 0 {
		return nil, false, errors.New("etcd: no endpoints")
	}
	cli, err = clientv3.New(clientv3.Config{Endpoints: opt.Endpoints, TLS: opt.TLS, DialTimeout: opt.DialTimeout,
		Logger: zap.NewNop(), MaxCallSendMsgSize: MaxRequestBytes + 64<<10})
	if err != nil {
		return nil, false, fmt.Errorf("etcd %s: %w", strings.Join(opt.Endpoints, ","), err)
	}
	return cli, true, nil
}

// Open connects to the cluster and checks that it answers.
func Open(ctx context.Context, opt Options) (*Engine, error) {
	opt = opt.withDefaults()
	cli, own, err := opt.client()
	if err != nil {
		return nil, err
	}
	e := &Engine{cli: cli, own: own, onCommit: opt.OnCommit, pfx: opt.Prefix, maxOps: opt.MaxTxnOps, last: map[string]uint64{},
		waitCh: make(chan struct{}), versioned: map[string]bool{}, lastMod: map[string]int64{}}
	cctx, cancel := context.WithTimeout(ctx, opt.DialTimeout)
	resp, err := e.cli.Get(cctx, e.pfx+"n/", clientv3.WithPrefix())
	cancel()
	if err != nil {
		e.closeClient()
		return nil, fmt.Errorf("etcd %s: the cluster does not answer: %w", strings.Join(opt.Endpoints, ","), err)
	}
	for _, k := range resp.Kvs {
		log := strings.TrimPrefix(string(k.Key), e.pfx+"n/")
		e.last[log], e.lastMod[log] = number(k.Value), k.ModRevision
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.watchers.Add(2)
	go e.watchLogs(resp.Header.Revision + 1)
	go e.sweep()
	return e, nil
}

func (e *Engine) closeClient() {
	if e.own {
		e.cli.Close()
	}
}

// Client is the engine's etcd client (for elections and health checks).
func (e *Engine) Client() *clientv3.Client { return e.cli }

// Prefix is the prefix every key of the engine is under.
func (e *Engine) Prefix() string { return e.pfx }

func (e *Engine) dataKey(space string, k []byte) string {
	return e.pfx + "d/" + space + "\x00" + string(k)
}

func (e *Engine) spaceRange(space string) (lo, hi string) {
	return e.pfx + "d/" + space + "\x00", e.pfx + "d/" + space + "\x01"
}

func (e *Engine) counterKey(log string) string { return e.pfx + "n/" + log }

func (e *Engine) pendingRange(log string) (lo, hi string) {
	return e.pfx + "p/" + log + "\x00", e.pfx + "p/" + log + "\x01"
}

func number(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// unavailable wraps an error of the cluster: the outcome of a write in
// flight is not known.
func unavailable(err error) error {
	if errors.Is(err, rpctypes.ErrTooManyOps) || errors.Is(err, rpctypes.ErrRequestTooLarge) {
		return fmt.Errorf("%w: %w", kv.ErrTooLarge, err)
	}
	return fmt.Errorf("%w: etcd: %w", kv.ErrUnavailable, err)
}

// View implements kv.Engine: the reads of fn are at one revision, the
// cluster's latest when fn first reads (a linearizable read).
func (e *Engine) View(ctx context.Context, fn func(kv.Reader) error) error {
	if e.closed.Load() {
		return kv.ErrClosed
	}
	t := &tx{e: e, ctx: ctx}
	err := fn(t)
	if t.err != nil {
		return t.err
	}
	return err
}

// Update implements kv.Engine.
func (e *Engine) Update(ctx context.Context, fn func(kv.Writer) error) error {
	if e.closed.Load() {
		return kv.ErrClosed
	}
	e.pending.Add(1)
	defer e.pending.Done()
	held := false
	defer func() {
		if held {
			e.turn.Unlock()
		}
	}()
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err // nothing was sent: nothing was written
		}
		t := &tx{e: e, ctx: ctx, writer: true, writes: map[string]*kv.Changes{}}
		err := runSafely(fn, t)
		if t.err != nil {
			return t.err
		}
		if err != nil {
			return err
		}
		rev, ok, err := t.commit(attempt + 1)
		if err != nil {
			return err
		}
		if !ok {
			// A concurrent write changed what fn read: run it again, in
			// turn with this process's other writers that did, and after a
			// short random pause that grows, so that writers of several
			// processes that keep meeting spread out.
			if !held {
				e.turn.Lock()
				held = true
			} else {
				time.Sleep(time.Duration(rand.Int64N(int64(200*time.Microsecond) << min(attempt, 6))))
			}
			continue
		}
		// The numbering goes on if the caller leaves: the write is made,
		// and its entries must be numbered before Update says so.
		sctx, scancel := context.WithTimeout(e.ctx, 10*time.Second)
		defer scancel()
		if len(t.appends) > 0 && !t.stampOwn(sctx, rev) {
			for _, log := range t.logs() {
				if err := e.stamp(sctx, log, rev); err != nil {
					// The write is kept; its entries are numbered by the
					// next stamp (another writer's, or the sweep's).
					slog.Warn("etcd: appended entries are not numbered yet", "log", log, "err", err)
				}
			}
		}
		return nil
	}
}

func runSafely(fn func(kv.Writer) error, t *tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in transaction: %v", r)
		}
	}()
	return fn(t)
}

// Wait implements kv.Engine; it wakes for appends made through any
// process (the watch on the logs' numbers).
func (e *Engine) Wait(ctx context.Context, log string, after uint64) error {
	for {
		e.waitMu.Lock()
		n := e.last[log]
		ch := e.waitCh
		e.waitMu.Unlock()
		if n > after {
			return nil
		}
		select {
		case <-ch:
		case <-e.ctx.Done():
			return kv.ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// saw notes a log's number seen (stamped here, or by the watch) and the
// mod revision of its key then, and wakes the waiters when it grew.
func (e *Engine) saw(log string, n uint64, mod int64) {
	e.waitMu.Lock()
	defer e.waitMu.Unlock()
	if mod > e.lastMod[log] {
		e.lastMod[log] = mod
	}
	if n > e.last[log] {
		e.last[log] = n
		close(e.waitCh)
		e.waitCh = make(chan struct{})
	}
}

// guess is a log's last number and its key's mod revision as last seen.
func (e *Engine) guess(log string) (uint64, int64) {
	e.waitMu.Lock()
	defer e.waitMu.Unlock()
	return e.last[log], e.lastMod[log]
}

// watchLogs follows the logs' numbers from rev on, through any process.
// Each time the watch starts again (after a break, which may have lasted
// past a compaction) it first reads every number, so none is missed.
func (e *Engine) watchLogs(rev int64) {
	defer e.watchers.Done()
	resync := func() (int64, bool) {
		ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
		defer cancel()
		resp, err := e.cli.Get(ctx, e.pfx+"n/", clientv3.WithPrefix())
		if err != nil {
			return 0, false
		}
		for _, k := range resp.Kvs {
			e.saw(strings.TrimPrefix(string(k.Key), e.pfx+"n/"), number(k.Value), k.ModRevision)
		}
		return resp.Header.Revision + 1, true
	}
	e.watch(e.pfx+"n/", rev, resync, func(ev *clientv3.Event) {
		e.saw(strings.TrimPrefix(string(ev.Kv.Key), e.pfx+"n/"), number(ev.Kv.Value), ev.Kv.ModRevision)
	})
}

// watch follows the keys under pfx from rev on until Close; when the watch
// breaks it starts again from where resync says (after reading what it
// may have missed).
func (e *Engine) watch(pfx string, rev int64, resync func() (int64, bool), fn func(*clientv3.Event)) {
	for first := true; e.ctx.Err() == nil; first = false {
		if !first {
			r, ok := resync()
			if !ok {
				select {
				case <-e.ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			rev = r
		}
		wctx := clientv3.WithRequireLeader(e.ctx)
		for resp := range e.cli.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithRev(rev)) {
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					rev = resp.CompactRevision
				}
				break
			}
			for _, ev := range resp.Events {
				fn(ev)
			}
			rev = resp.Header.Revision + 1
		}
		select {
		case <-e.ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Changes implements kv.Engine with a linearizable read of the spaces'
// version keys, which every commit that writes one of the spaces puts
// (once any process has asked about the space: the typed layer asks at
// open): a write acknowledged through any process moves it from the next
// read on. It costs one read of the cluster.
func (e *Engine) Changes(spaces ...string) uint64 {
	e.versionedMu.Lock()
	for _, s := range spaces {
		e.versioned[s] = true
	}
	e.versionedMu.Unlock()
	ops := make([]clientv3.Op, len(spaces))
	for i, s := range spaces {
		ops[i] = clientv3.OpGet(e.versionKey(s))
	}
	// Bounded: a call whose store is partitioned away goes on to read the
	// key itself under its own deadline, rather than wait here for ever.
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
	defer cancel()
	resp, err := e.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		// Not knowing is a change: what was cached is not used.
		return e.unreadable.Add(1) << 48
	}
	var n uint64
	for _, r := range resp.Responses {
		if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
			n += uint64(kvs[0].ModRevision)
		}
	}
	return n + e.unreadable.Load()<<48
}

func (e *Engine) versionKey(space string) string { return e.pfx + "v/" + space }

// deletedKey is put by every commit that deletes a key of space: a
// transaction whose reads of the space were too many to check one by one
// checks it instead (compares).
func (e *Engine) deletedKey(space string) string { return e.pfx + "x/" + space }

// isVersioned reports whether a commit writing space puts its version.
func (e *Engine) isVersioned(space string) bool {
	e.versionedMu.RLock()
	defer e.versionedMu.RUnlock()
	return e.versioned[space]
}

// Close implements kv.Engine: it waits for the Updates in flight.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	e.pending.Wait()
	e.cancel()
	e.watchers.Wait()
	e.closeClient()
	return nil
}

// Healthy reports whether the cluster answers a linearizable read (it has
// a leader and a quorum) within ctx.
func (e *Engine) Healthy(ctx context.Context) error {
	_, err := e.cli.Get(clientv3.WithRequireLeader(ctx), e.pfx+"n/", clientv3.WithCountOnly())
	if err != nil {
		return unavailable(err)
	}
	return nil
}

// The transaction.

type tx struct {
	e      *Engine
	ctx    context.Context
	writer bool
	rev    int64 // the revision read at; 0 until the first read
	err    error // the first failure to read: the transaction fails with it
	// reads: each key read and its mod revision then (0: absent); ranges:
	// each key range a cursor covered, [lo, hi).
	reads   map[string]int64
	vals    map[string][]byte
	ranges  [][2]string
	cursors []*cursor
	writes  map[string]*kv.Changes // by space
	// appends are the entries appended, to write as pending keys, and
	// pendingKeys their keys once committed.
	appends     []pendingEntry
	pendingKeys []string
}

type pendingEntry struct {
	log   string
	value []byte
	index []kv.Index
}

func (t *tx) fail(err error) {
	if t.err == nil {
		t.err = unavailable(err)
	}
}

// get reads at the transaction's revision. The first read is
// linearizable and fixes the revision; the later ones are serializable (the
// member answers from what it has applied, without asking the leader), which
// a member that has applied the revision answers the same: one that has not
// yet (the client moved to a member further behind) is asked again
// linearizably.
func (t *tx) get(key string, opts ...clientv3.OpOption) *clientv3.GetResponse {
	if t.err != nil {
		return nil
	}
	var resp *clientv3.GetResponse
	var err error
	if t.rev > 0 {
		resp, err = t.e.cli.Get(t.ctx, key, append(opts, clientv3.WithRev(t.rev), clientv3.WithSerializable())...)
		if errors.Is(err, rpctypes.ErrFutureRev) {
			resp, err = t.e.cli.Get(t.ctx, key, append(opts, clientv3.WithRev(t.rev))...)
		}
	} else {
		resp, err = t.e.cli.Get(t.ctx, key, opts...)
	}
	if err != nil {
		t.fail(err)
		return nil
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	return resp
}

// noteRead records that the transaction saw key at mod revision mod.
func (t *tx) noteRead(key string, mod int64) {
	if t.reads == nil {
		t.reads, t.vals = map[string]int64{}, map[string][]byte{}
	}
	if _, ok := t.reads[key]; !ok {
		t.reads[key] = mod
	}
}

// value reads one key at the transaction's revision, once.
func (t *tx) value(key string) []byte {
	if v, ok := t.vals[key]; ok {
		return v
	}
	resp := t.get(key)
	if resp == nil {
		return nil
	}
	var v []byte
	var mod int64
	if len(resp.Kvs) > 0 {
		v, mod = resp.Kvs[0].Value, resp.Kvs[0].ModRevision
		if v == nil {
			v = []byte{}
		}
	}
	if t.reads == nil {
		t.reads, t.vals = map[string]int64{}, map[string][]byte{}
	}
	t.reads[key], t.vals[key] = mod, v
	return v
}

func (t *tx) Get(space string, k []byte) []byte {
	if c := t.writes[space]; c != nil {
		if en, ok := c.Get(kv.Entry{Key: k}); ok {
			if en.Del {
				return nil
			}
			return en.Val
		}
	}
	return t.value(t.e.dataKey(space, k))
}

func (t *tx) Cursor(space string) kv.Cursor {
	lo, hi := t.e.spaceRange(space)
	c := &cursor{t: t, lo: lo, hi: hi}
	t.cursors = append(t.cursors, c)
	if !t.writer {
		return c
	}
	ch := t.writes[space]
	if ch == nil {
		ch = kv.NewChanges()
		t.writes[space] = ch
	}
	return kv.Merge(c, ch)
}

func (t *tx) Last(log string) uint64 { return number(t.value(t.e.counterKey(log))) }

func (t *tx) Put(space string, k, v []byte) error {
	if len(k) == 0 {
		return errors.New("etcd: an empty key")
	}
	if len(k)+len(v) > MaxRequestBytes {
		return fmt.Errorf("%w: a value of %d bytes", kv.ErrTooLarge, len(v))
	}
	t.change(space).ReplaceOrInsert(kv.Entry{Key: slices.Clone(k), Val: append([]byte{}, v...)})
	return nil
}

func (t *tx) Delete(space string, k []byte) error {
	t.change(space).ReplaceOrInsert(kv.Entry{Key: slices.Clone(k), Del: true})
	return nil
}

func (t *tx) change(space string) *kv.Changes {
	c := t.writes[space]
	if c == nil {
		c = kv.NewChanges()
		t.writes[space] = c
	}
	return c
}

func (t *tx) Append(log string, v []byte, index ...kv.Index) error {
	ix := make([]kv.Index, len(index))
	for i, x := range index {
		ix[i] = kv.Index{Space: x.Space, Key: slices.Clone(x.Key)}
	}
	t.appends = append(t.appends, pendingEntry{log: log, value: append([]byte{}, v...), index: ix})
	return nil
}

// logs are the logs the transaction appended to.
func (t *tx) logs() []string {
	var out []string
	for _, a := range t.appends {
		if !slices.Contains(out, a.log) {
			out = append(out, a.log)
		}
	}
	return out
}

// commit writes the transaction if nothing it read has changed: ok false
// when something did (run it again).
func (t *tx) commit(runs int) (rev int64, ok bool, err error) {
	var ops []clientv3.Op
	size := 0
	for space, ch := range t.writes {
		n := ch.Len()
		if n == 0 {
			continue
		}
		if t.e.isVersioned(space) {
			ops = append(ops, clientv3.OpPut(t.e.versionKey(space), ""))
		}
		deletes := false
		ch.Ascend(func(en kv.Entry) bool { deletes = deletes || en.Del; return !deletes })
		if deletes {
			ops = append(ops, clientv3.OpPut(t.e.deletedKey(space), ""))
		}
		ch.Ascend(func(en kv.Entry) bool {
			key := t.e.dataKey(space, en.Key)
			if en.Del {
				ops = append(ops, clientv3.OpDelete(key))
			} else {
				ops = append(ops, clientv3.OpPut(key, string(en.Val)))
			}
			size += len(key) + len(en.Val)
			return true
		})
	}
	id := uniqueID()
	t.pendingKeys = t.pendingKeys[:0]
	for i, a := range t.appends {
		if len(a.value) > MaxRequestBytes/2 {
			return 0, false, fmt.Errorf("%w: a log entry of %d bytes (the most is %d)", kv.ErrTooLarge, len(a.value), MaxRequestBytes/2)
		}
		key := fmt.Sprintf("%sp/%s\x00%s%08d", t.e.pfx, a.log, id, i)
		t.pendingKeys = append(t.pendingKeys, key)
		v := encodePending(a)
		ops = append(ops, clientv3.OpPut(key, string(v)))
		size += len(key) + len(v)
	}
	if len(ops) == 0 {
		return 0, true, nil // read only: nothing to commit
	}
	if len(ops) > t.e.maxOps || size > MaxRequestBytes {
		return 0, false, fmt.Errorf("%w: a transaction of %d writes and %d bytes (the cluster takes %d writes and %d bytes)",
			kv.ErrTooLarge, len(ops), size, t.e.maxOps, MaxRequestBytes)
	}
	cmps := t.compares()
	if err := t.ctx.Err(); err != nil {
		return 0, false, err // nothing was sent
	}
	start := time.Now()
	resp, err := t.e.cli.Txn(t.ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		err = unavailable(err)
	}
	if t.e.onCommit != nil && (err != nil || resp.Succeeded) {
		t.e.onCommit(len(ops), size, time.Since(start), runs, err)
	}
	if err != nil {
		return 0, false, err
	}
	if !resp.Succeeded {
		return 0, false, nil
	}
	return resp.Header.Revision, true, nil
}

// compares are the conditions of the commit: each key read, by Get or
// handed out by a cursor, is as it was (its mod revision: absent keys 0,
// so a key put or deleted since fails it), and no key in a range a cursor
// covered changed after the read revision (which catches a key put where
// the cursor saw none). Past the cluster's bound on operations, the keys
// read and the ranges of each space are taken as the whole space, with
// the space's deletion mark (deletedKey) for the deletions a range's
// compare cannot see.
func (t *tx) compares() []clientv3.Cmp {
	if t.rev == 0 {
		return nil // nothing was read
	}
	seen := slices.Clone(t.ranges)
	for _, c := range t.cursors {
		for _, r := range c.segs {
			if r[0] < r[1] {
				seen = append(seen, r)
			}
		}
	}
	ranges := coalesce(seen)
	reads := t.reads
	var deleted []string // the spaces checked whole
	if len(reads)+len(ranges) > t.e.maxOps {
		reads = map[string]int64{}
		for k, mod := range t.reads {
			if rest, ok := strings.CutPrefix(k, t.e.pfx+"d/"); ok {
				space, _, _ := strings.Cut(rest, "\x00")
				lo, hi := t.e.spaceRange(space)
				ranges = append(ranges, [2]string{lo, hi})
			} else {
				reads[k] = mod
			}
		}
		ranges = t.wholeSpaces(ranges)
		for _, r := range ranges {
			space, _, _ := strings.Cut(strings.TrimPrefix(r[0], t.e.pfx+"d/"), "\x00")
			deleted = append(deleted, t.e.deletedKey(space))
		}
	}
	cmps := make([]clientv3.Cmp, 0, len(reads)+len(ranges)+len(deleted))
	for _, k := range deleted {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "<", t.rev+1))
	}
	for k, mod := range reads {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", mod))
	}
	for _, r := range ranges {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r[0]), "<", t.rev+1).WithRange(r[1]))
	}
	return cmps
}

// coalesce sorts ranges and joins those that touch or overlap.
func coalesce(ranges [][2]string) [][2]string {
	if len(ranges) == 0 {
		return nil
	}
	rs := slices.Clone(ranges)
	slices.SortFunc(rs, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r[0] <= last[1] {
			last[1] = max(last[1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

// wholeSpaces widens each range to its space's whole range.
func (t *tx) wholeSpaces(ranges [][2]string) [][2]string {
	var out [][2]string
	for _, r := range ranges {
		space, _, _ := strings.Cut(strings.TrimPrefix(r[0], t.e.pfx+"d/"), "\x00")
		lo, hi := t.e.spaceRange(space)
		out = append(out, [2]string{lo, hi})
	}
	return coalesce(out)
}

func uniqueID() string {
	var b [12]byte
	crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// A pending entry's value: the entry's value, then each index's space
// and key, each after its length as a uvarint.
func encodePending(a pendingEntry) []byte {
	b := binary.AppendUvarint(nil, uint64(len(a.value)))
	b = append(b, a.value...)
	for _, ix := range a.index {
		b = binary.AppendUvarint(b, uint64(len(ix.Space)))
		b = append(b, ix.Space...)
		b = binary.AppendUvarint(b, uint64(len(ix.Key)))
		b = append(b, ix.Key...)
	}
	return b
}

func decodePending(b []byte) (value []byte, index []kv.Index, err error) {
	field := func() ([]byte, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, false
		}
		f := b[k : k+int(n)]
		b = b[k+int(n):]
		return f, true
	}
	value, ok := field()
	if !ok {
		return nil, nil, errors.New("a damaged pending entry")
	}
	for len(b) > 0 {
		space, ok1 := field()
		key, ok2 := field()
		if !ok1 || !ok2 {
			return nil, nil, errors.New("a damaged pending entry")
		}
		index = append(index, kv.Index{Space: string(space), Key: key})
	}
	return value, index, nil
}

// stampOwn numbers the transaction's own entries, committed at rev, in
// one etcd Txn, on the guess that no older entry is pending in their logs
// and that each log's number is as this process last saw it: the Txn
// checks both (every pending key of the log created at rev or later; the
// number's key unchanged since) and does nothing if either is wrong. It
// reports whether it numbered them; if not, stamp does, reading first.
func (t *tx) stampOwn(ctx context.Context, rev int64) bool {
	e := t.e
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	type next struct {
		n   uint64
		mod int64
	}
	logs := map[string]*next{}
	for _, log := range t.logs() {
		n, mod := e.guess(log)
		if mod == 0 && n > 0 {
			return false
		}
		logs[log] = &next{n: n, mod: mod}
		plo, phi := e.pendingRange(log)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(e.counterKey(log)), "=", mod),
			clientv3.Compare(clientv3.CreateRevision(plo), ">", rev-1).WithRange(phi))
	}
	for i, a := range t.appends {
		if 2+len(a.index)+1 > e.maxOps {
			return false // its index entries go after it: stamp's way
		}
		// Not numbered meanwhile by another stamp (a sweep's, another
		// process's): its pending key is still there, made at rev.
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(t.pendingKeys[i]), "=", rev))
		l := logs[a.log]
		l.n++
		num := binary.BigEndian.AppendUint64(nil, l.n)
		ops = append(ops, clientv3.OpDelete(t.pendingKeys[i]), clientv3.OpPut(e.dataKey(a.log, num), string(a.value)))
		ops = e.indexOps(ops, num, a.index)
	}
	for log, l := range logs {
		ops = append(ops, clientv3.OpPut(e.counterKey(log), string(binary.BigEndian.AppendUint64(nil, l.n))))
	}
	if len(ops) > e.maxOps || len(cmps) > e.maxOps {
		return false
	}
	resp, err := e.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil || !resp.Succeeded {
		return false
	}
	for log, l := range logs {
		e.saw(log, l.n, resp.Header.Revision)
	}
	return true
}

// stamp numbers the log's pending entries created at or before rev (and
// any older), in create-revision order, in etcd transactions that each
// also move the log's last number: concurrent stamps meet on that key and
// all but one run again, finding fewer entries left.
func (e *Engine) stamp(ctx context.Context, log string, rev int64) error {
	nkey := e.counterKey(log)
	plo, phi := e.pendingRange(log)
	for attempt := 0; ; attempt++ {
		read, err := e.cli.Txn(ctx).Then(
			clientv3.OpGet(nkey),
			clientv3.OpGet(plo, clientv3.WithRange(phi), clientv3.WithMaxCreateRev(rev)),
		).Commit()
		if err != nil {
			return unavailable(err)
		}
		var n uint64
		var nmod int64
		if kvs := read.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			n, nmod = number(kvs[0].Value), kvs[0].ModRevision
		}
		// Commit order, and within one commit the order of its appends
		// (their keys end with it): every pending entry is read, as a
		// limit could cut one commit's entries anywhere.
		pend := read.Responses[1].GetResponseRange().Kvs
		slices.SortStableFunc(pend, func(a, b *mvccpb.KeyValue) int {
			if a.CreateRevision != b.CreateRevision {
				return cmp.Compare(a.CreateRevision, b.CreateRevision)
			}
			return bytes.Compare(a.Key, b.Key)
		})
		if len(pend) == 0 {
			e.saw(log, n, nmod)
			return nil
		}
		ops := make([]clientv3.Op, 0, e.maxOps)
		size := 0
		for _, p := range pend {
			value, index, err := decodePending(p.Value)
			if err != nil {
				return fmt.Errorf("etcd: %s: %w", p.Key, err)
			}
			// An entry with more index entries than one Txn takes (an
			// audit entry of a long list) is numbered with a note of them,
			// and they are put by finishIndexes right after.
			later := 2+len(index)+1 > e.maxOps
			need := 2 + len(index)
			if later {
				need = 3
			}
			if len(ops)+need+1 > e.maxOps || size+len(value) > MaxRequestBytes/2 {
				break // the next Txn
			}
			n++
			num := binary.BigEndian.AppendUint64(nil, n)
			ops = append(ops, clientv3.OpDelete(string(p.Key)),
				clientv3.OpPut(e.dataKey(log, num), string(value)))
			if later {
				ops = append(ops, clientv3.OpPut(e.indexingKey(log, num), string(encodePending(pendingEntry{index: index}))))
			} else {
				ops = e.indexOps(ops, num, index)
			}
			size += len(value)
		}
		ops = append(ops, clientv3.OpPut(nkey, string(binary.BigEndian.AppendUint64(nil, n))))
		done, err := e.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(nkey), "=", nmod)).Then(ops...).Commit()
		if err != nil {
			return unavailable(err)
		}
		if done.Succeeded {
			e.saw(log, n, done.Header.Revision)
			if err := e.finishIndexes(ctx, log); err != nil {
				return err
			}
			attempt = 0
			continue
		}
		time.Sleep(time.Duration(rand.Int64N(int64(200*time.Microsecond) << min(attempt, 6))))
	}
}

// indexOps appends to ops the puts of a log entry's index entries: each
// key followed by the entry's number num.
func (e *Engine) indexOps(ops []clientv3.Op, num []byte, index []kv.Index) []clientv3.Op {
	for _, ix := range index {
		ops = append(ops, clientv3.OpPut(e.dataKey(ix.Space, append(slices.Clip(ix.Key), num...)), ""))
	}
	return ops
}

func (e *Engine) indexingKey(log string, num []byte) string {
	return e.pfx + "i/" + log + "\x00" + string(num)
}

// finishIndexes puts the index entries of the log's numbered entries that
// had more than one Txn takes (noted under i/{log}), a Txn's worth at a
// time, and deletes each note once its entries are all put. Putting an
// index entry twice changes nothing, so finishers that meet do no harm.
func (e *Engine) finishIndexes(ctx context.Context, log string) error {
	lo := e.pfx + "i/" + log + "\x00"
	for {
		resp, err := e.cli.Get(ctx, lo, clientv3.WithRange(e.pfx+"i/"+log+"\x01"), clientv3.WithLimit(1))
		if err != nil {
			return unavailable(err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		note := resp.Kvs[0]
		num := note.Key[len(lo):]
		_, index, err := decodePending(note.Value)
		if err != nil {
			return fmt.Errorf("etcd: %s: %w", note.Key, err)
		}
		take := min(len(index), e.maxOps-1)
		ops := e.indexOps(make([]clientv3.Op, 0, take+1), num, index[:take])
		if rest := index[take:]; len(rest) > 0 {
			ops = append(ops, clientv3.OpPut(string(note.Key), string(encodePending(pendingEntry{index: rest}))))
		} else {
			ops = append(ops, clientv3.OpDelete(string(note.Key)))
		}
		if _, err := e.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(note.Key)), "=", note.ModRevision)).
			Then(ops...).Commit(); err != nil {
			return unavailable(err)
		}
	}
}

// sweep numbers entries left pending by a process that stopped between
// its commit and its stamp, every second.
func (e *Engine) sweep() {
	defer e.watchers.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
		// Each log with an entry pending (p/) or index entries still to
		// put (i/); a log's keys are found one log at a time, each after
		// the last one seen, so that one log's many keys hide no other.
		for _, area := range []string{"p/", "i/"} {
			from, end := e.pfx+area, clientv3.GetPrefixRangeEnd(e.pfx+area)
			for {
				resp, err := e.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
				if err != nil || len(resp.Kvs) == 0 {
					break
				}
				log, _, _ := strings.Cut(strings.TrimPrefix(string(resp.Kvs[0].Key), e.pfx+area), "\x00")
				if area == "p/" {
					err = e.stamp(ctx, log, resp.Header.Revision)
				} else {
					err = e.finishIndexes(ctx, log)
				}
				if err != nil {
					slog.Warn("etcd: numbering or indexing log entries left by a process", "log", log, "err", err)
				}
				from = e.pfx + area + log + "\x01" // the next log
			}
		}
		cancel()
	}
}

// The cursor.

// cursor walks one space at the transaction's revision, reading a page of
// keys at a time. buf holds the keys of [bufLo, bufHi) in order, all that
// range has; pos is the current one (-1 before the first, len(buf) after
// the last).
type cursor struct {
	t            *tx
	lo, hi       string
	buf          []*mvccpb.KeyValue
	bufLo, bufHi string
	pos          int
	page         int64
	// segs are the key ranges the cursor's caller saw: each key it was
	// handed and the absence of keys between them, from where it started
	// (First, Seek, Last) to where it went; the last one grows as it
	// moves. A commit is conditional on nothing in them changing. (The
	// rest of a page read ahead is not in them: a key written there by
	// another transaction changes nothing this one saw.)
	segs [][2]string
}

// begin starts a segment at key k (full, with the space's prefix).
func (c *cursor) begin(k string) { c.segs = append(c.segs, [2]string{k, k}) }

// saw extends the current segment to the key the cursor returned (nil:
// to the end of the space in the direction it moved).
func (c *cursor) saw(k []byte, forward bool) ([]byte, []byte) {
	key, v := k, []byte(nil)
	if k != nil {
		_, v = c.at()
		// The key itself, by its mod revision: a range's compare sees a
		// key put or changed in it since, but not one deleted.
		c.t.noteRead(c.lo+string(k), c.buf[c.pos].ModRevision)
	}
	seg := &c.segs[len(c.segs)-1]
	switch {
	case forward && k == nil:
		seg[1] = c.hi
	case forward:
		seg[1] = max(seg[1], c.lo+string(k)+"\x00")
	case k == nil:
		seg[0] = c.lo
	default:
		seg[0] = min(seg[0], c.lo+string(k))
	}
	return key, v
}

func (c *cursor) at() ([]byte, []byte) {
	if c.pos < 0 || c.pos >= len(c.buf) {
		return nil, nil
	}
	p := c.buf[c.pos]
	v := p.Value
	if v == nil {
		v = []byte{}
	}
	return p.Key[len(c.lo):], v
}

func (c *cursor) nextPage() int64 {
	if c.page == 0 {
		c.page = 64
	} else if c.page < 1024 {
		c.page *= 2
	}
	return c.page
}

// forward reads the page at or after from.
func (c *cursor) forward(from string) {
	lim := c.nextPage()
	resp := c.t.get(from, clientv3.WithRange(c.hi), clientv3.WithLimit(lim))
	c.buf, c.bufLo, c.bufHi, c.pos = nil, from, c.hi, 0
	if resp == nil {
		return
	}
	c.buf = resp.Kvs
	if resp.More && len(resp.Kvs) > 0 {
		c.bufHi = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// backward reads the page before before.
func (c *cursor) backward(before string) {
	lim := c.nextPage()
	resp := c.t.get(c.lo, clientv3.WithRange(before), clientv3.WithLimit(lim),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	c.buf, c.bufLo, c.bufHi = nil, c.lo, before
	if resp != nil {
		c.buf = slices.Clone(resp.Kvs)
		slices.Reverse(c.buf)
		if resp.More && len(c.buf) > 0 {
			c.bufLo = string(c.buf[0].Key)
		}
	}
	c.pos = len(c.buf) - 1
}

func (c *cursor) First() ([]byte, []byte) {
	c.page = 0
	c.begin(c.lo)
	c.forward(c.lo)
	k, _ := c.at()
	return c.saw(k, true)
}

func (c *cursor) Last() ([]byte, []byte) {
	c.page = 0
	c.begin(c.hi)
	c.backward(c.hi)
	k, _ := c.at()
	return c.saw(k, false)
}

func (c *cursor) Seek(k []byte) ([]byte, []byte) {
	c.page = 0
	c.begin(c.lo + string(k))
	c.forward(c.lo + string(k))
	got, _ := c.at()
	return c.saw(got, true)
}

func (c *cursor) Next() ([]byte, []byte) {
	if len(c.segs) == 0 { // not placed yet: from the first key
		return c.First()
	}
	k, _ := c.next()
	return c.saw(k, true)
}

func (c *cursor) Prev() ([]byte, []byte) {
	if len(c.segs) == 0 { // not placed yet: from the last key
		return c.Last()
	}
	k, _ := c.prev()
	return c.saw(k, false)
}

func (c *cursor) next() ([]byte, []byte) {
	if c.pos+1 < len(c.buf) {
		c.pos++
		return c.at()
	}
	if c.bufHi >= c.hi {
		c.pos = len(c.buf)
		return nil, nil
	}
	// Keep the last key of the page, so that Prev after this Next needs
	// no read.
	var prev *mvccpb.KeyValue
	if len(c.buf) > 0 {
		prev = c.buf[len(c.buf)-1]
	}
	lo := c.bufLo
	c.forward(c.bufHi)
	if prev != nil {
		c.buf = append([]*mvccpb.KeyValue{prev}, c.buf...)
		c.bufLo, c.pos = lo, 1
	}
	return c.at()
}

func (c *cursor) prev() ([]byte, []byte) {
	if c.pos-1 >= 0 && c.pos-1 < len(c.buf) {
		c.pos--
		return c.at()
	}
	if c.pos >= len(c.buf) && len(c.buf) > 0 {
		c.pos = len(c.buf) - 1
		return c.at()
	}
	if c.bufLo <= c.lo {
		c.pos = -1
		return nil, nil
	}
	c.backward(c.bufLo)
	return c.at()
}

// Backup implements kv.Engine with a logical export of every key under
// the prefix at one revision (Restore reads it back): a line naming the
// format, then each key (without the prefix) and value after its length
// as a uvarint. Writers go on while it runs.
func (e *Engine) Backup(ctx context.Context, start func(size int64) (io.Writer, error)) error {
	w, err := start(-1)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, exportHeader); err != nil {
		return err
	}
	var rev int64
	from, end := e.pfx, clientv3.GetPrefixRangeEnd(e.pfx)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(512)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := e.cli.Get(ctx, from, opts...)
		if err != nil {
			return unavailable(err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		var b []byte
		for _, p := range resp.Kvs {
			k := p.Key[len(e.pfx):]
			b = binary.AppendUvarint(b, uint64(len(k)))
			b = append(b, k...)
			b = binary.AppendUvarint(b, uint64(len(p.Value)))
			b = append(b, p.Value...)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

const exportHeader = "exchange etcd export 1\n"

// Restore writes an export Backup made into opt.Prefix of opt's cluster,
// which must hold nothing there, in transactions of at most opt.MaxTxnOps
// keys. A restore cut short leaves a partial copy: delete the prefix and
// run it again.
func Restore(ctx context.Context, opt Options, r io.Reader) error {
	opt = opt.withDefaults()
	cli, own, err := opt.client()
	if err != nil {
		return err
	}
	if own {
		defer cli.Close()
	}
	prefix, maxOps := opt.Prefix, opt.MaxTxnOps
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return unavailable(err)
	}
	if resp.Count > 0 {
		return fmt.Errorf("etcd: %d keys are already under %q: restore only into an empty prefix", resp.Count, prefix)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(data, []byte(exportHeader)) {
		return errors.New("etcd: not an exchange etcd export")
	}
	data = data[len(exportHeader):]
	field := func() ([]byte, error) {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			return nil, errors.New("etcd: the export is cut short or damaged")
		}
		f := data[k : k+int(n)]
		data = data[k+int(n):]
		return f, nil
	}
	var ops []clientv3.Op
	size := 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		ops, size = ops[:0], 0
		if err != nil {
			return unavailable(err)
		}
		return nil
	}
	for len(data) > 0 {
		k, err := field()
		if err != nil {
			return err
		}
		v, err := field()
		if err != nil {
			return err
		}
		if len(ops) == maxOps || size+len(k)+len(v) > MaxRequestBytes/2 {
			if err := flush(); err != nil {
				return err
			}
		}
		ops = append(ops, clientv3.OpPut(prefix+string(k), string(v)))
		size += len(k) + len(v)
	}
	return flush()
}

// Size is the cluster's database size in bytes as the first member that
// answers tells (every exchange sharing the cluster, and its history until
// compaction), or -1 when none answers.
func (e *Engine) Size(ctx context.Context) int64 {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for _, ep := range e.cli.Endpoints() {
		if st, err := e.cli.Status(ctx, ep); err == nil {
			return st.DbSize
		}
	}
	return -1
}
