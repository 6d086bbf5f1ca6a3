package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/storage/kv"
)

// store is the Store over an engine.
type store struct{ e kv.Engine }

// Open returns the Store over the engine, first bringing what the engine
// holds up to this version's records (upgrade). Closing the Store closes
// the engine.
func Open(ctx context.Context, e kv.Engine) (Store, error) {
	s := &store{e: e}
	if err := s.upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrade the store: %w", err)
	}
	s.AuthVersion() // from now on the engine counts changes to what authentication reads
	return s, nil
}

func (s *store) View(ctx context.Context, fn func(ReadTx) error) error {
	return s.e.View(ctx, func(r kv.Reader) error { return fn(&tx{r: r}) })
}

func (s *store) Update(ctx context.Context, fn func(WriteTx) error) error {
	return s.e.Update(ctx, func(w kv.Writer) error { return fn(&tx{r: w, w: w}) })
}

func (s *store) WaitEvents(ctx context.Context, after int64) error {
	return s.e.Wait(ctx, bEvents, uint64(max(after, 0)))
}

// AuthVersion: authentication reads the API keys and the organisations.
func (s *store) AuthVersion() uint64 { return s.e.Changes(bAPIKeys, bOrgs) }

func (s *store) Backup(ctx context.Context, start func(size int64) (io.Writer, error)) error {
	return s.e.Backup(ctx, start)
}

func (s *store) Close() error { return s.e.Close() }

// The store's own records.
const (
	bMeta     = "store_meta"
	keySchema = "schema"
	// schema is the version of the records and indexes this code writes.
	// 1: every index of backfilled exists and is filled.
	// 2: what reports count is kept (tally.go): every referral's report
	// row and the sums of them, the referrals of each consent, and the
	// capacity events by capacity.
	schema = 2
	// upgradePiece is how many referrals one write of an upgrade fills in
	// at first, halved while the engine finds the write too large (etcd
	// takes 128 operations in one).
	upgradePiece = 1024
)

// upgrade brings a store written by an earlier version up to schema, each
// step once and recorded: to 1, it fills the indexes added since
// (backfilled) that are empty, from the referrals stored, and deletes what
// nothing reads any more (retired), in one transaction with the schema's
// record; to 2, it fills what reports count, a piece at a time (each
// piece's writes are idempotent, so one cut short is done again at the
// next start), and then records the schema. A new store only gets its
// record.
func (s *store) upgrade(ctx context.Context) error {
	var version uint64
	var empty bool
	if err := s.e.View(ctx, func(r kv.Reader) error {
		if v := r.Get(bMeta, []byte(keySchema)); len(v) == 8 {
			version = binary.BigEndian.Uint64(v)
		}
		k, _ := r.Cursor(bReferrals).First()
		e, _ := r.Cursor(bEvents).First()
		empty = k == nil && e == nil
		return nil
	}); err != nil || version >= schema {
		return err
	}
	if empty {
		return s.e.Update(ctx, func(w kv.Writer) error { return w.Put(bMeta, []byte(keySchema), u64(schema)) })
	}
	if version < 1 {
		if err := s.upgradeTo1(ctx); err != nil {
			return err
		}
	}
	return s.upgradeTo2(ctx)
}

func (s *store) upgradeTo1(ctx context.Context) error {
	return s.e.Update(ctx, func(w kv.Writer) error {
		t := &tx{r: w, w: w}
		var fill []func(*tx, *pb.Referral) error
		for _, name := range allBuckets {
			if f, ok := backfilled[name]; ok {
				if k, _ := w.Cursor(name).First(); k == nil {
					fill = append(fill, f)
				}
			}
		}
		for _, name := range retired {
			var doomed [][]byte
			c := w.Cursor(name)
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				doomed = append(doomed, append([]byte(nil), k...))
			}
			for _, k := range doomed {
				if err := w.Delete(name, k); err != nil {
					return err
				}
			}
		}
		if len(fill) > 0 {
			var all []*pb.Referral
			c := w.Cursor(bReferrals)
			for k, v := c.First(); k != nil; k, v = c.Next() {
				r := &pb.Referral{}
				if err := proto.Unmarshal(v, r); err != nil {
					return fmt.Errorf("decode %s: %w", k, err)
				}
				all = append(all, r)
			}
			for _, r := range all {
				for _, f := range fill {
					if err := f(t, r); err != nil {
						return fmt.Errorf("filling new indexes: %w", err)
					}
				}
			}
		}
		return w.Put(bMeta, []byte(keySchema), u64(1))
	})
}

// upgradeTo2 fills, for every referral, its place among its consent's
// referrals and its report row and sums (retally), and indexes every
// CAPACITY_CHANGED event, a piece at a time.
func (s *store) upgradeTo2(ctx context.Context) error {
	piece := upgradePiece
	for after := []byte(nil); ; {
		var last []byte
		err := s.e.Update(ctx, func(w kv.Writer) error {
			t := &tx{r: w, w: w}
			var refs []*pb.Referral
			c := w.Cursor(bReferrals)
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && len(refs) < piece; k, v = c.Next() {
				r := &pb.Referral{}
				if err := proto.Unmarshal(v, r); err != nil {
					return fmt.Errorf("decode %s: %w", k, err)
				}
				refs = append(refs, r)
			}
			last = nil
			for _, r := range refs {
				if err := t.indexConsent(nil, r); err != nil {
					return err
				}
				if err := t.retally(r); err != nil {
					return err
				}
				last = []byte(r.Name)
			}
			return nil
		})
		if errors.Is(err, ErrTooLarge) && piece > 1 {
			piece /= 2
			continue
		}
		if err != nil {
			return fmt.Errorf("filling what reports count: %w", err)
		}
		if last == nil {
			break
		}
		after = last
	}
	piece = upgradePiece
	for after := uint64(0); ; {
		var last uint64
		err := s.e.Update(ctx, func(w kv.Writer) error {
			last = 0
			c := w.Cursor(bEvents)
			n := 0
			for k, v := c.Seek(u64(after + 1)); k != nil && n < piece; k, v = c.Next() {
				n++
				last = binary.BigEndian.Uint64(k)
				e := &pb.Event{}
				if err := proto.Unmarshal(v, e); err != nil {
					return fmt.Errorf("decode event %d: %w", last, err)
				}
				if e.Type == pb.EventType_EVENT_TYPE_CAPACITY_CHANGED {
					if err := w.Put(bEventCapacity, append(prefix(e.Resource), k...), nil); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if errors.Is(err, ErrTooLarge) && piece > 1 {
			piece /= 2
			continue
		}
		if err != nil {
			return fmt.Errorf("indexing capacity events: %w", err)
		}
		if last == 0 {
			break
		}
		after = last
	}
	return s.e.Update(ctx, func(w kv.Writer) error { return w.Put(bMeta, []byte(keySchema), u64(schema)) })
}
