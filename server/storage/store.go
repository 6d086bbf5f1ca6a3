package storage

import (
	"context"
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
	schema = 1
)

// upgrade brings a store written by an earlier version up to schema: once,
// it fills the indexes added since (backfilled) that are empty, from the
// referrals stored, and deletes what nothing reads any more (retired), in
// one transaction with the schema's record, so that an upgrade cut short
// is done again at the next start. A new store only gets its record.
func (s *store) upgrade(ctx context.Context) error {
	var current bool
	if err := s.e.View(ctx, func(r kv.Reader) error {
		current = r.Get(bMeta, []byte(keySchema)) != nil
		return nil
	}); err != nil || current {
		return err
	}
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
		return w.Put(bMeta, []byte(keySchema), u64(schema))
	})
}
