package bolt_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bbolt "go.etcd.io/bbolt"
)

// BenchmarkIndexLayout weighs a storage redesign before anyone builds it:
// is a referral's write cheaper if its twenty-odd index entries go into one
// bucket, a prefix per index, instead of a bucket per index, as the store
// keeps them now? It uses bbolt alone, not the store: each commit puts one
// entry, shaped like the store's index keys (organisation, time, name),
// into each of 20 indexes of 50,000 entries (and of 100,000 with
// EXCHANGE_BENCH_LARGE=1), fsynced, and reports the pages each commit
// writes. docs/benchmarks.md has the figures.
//
//	EXCHANGE_BENCH_LARGE=1 go test ./server/storage/bolt -run '^$' -bench IndexLayout -benchtime 3000x
func BenchmarkIndexLayout(b *testing.B) {
	sizes := []int{50000}
	if os.Getenv("EXCHANGE_BENCH_LARGE") != "" {
		sizes = append(sizes, 100000)
	}
	for _, entries := range sizes {
		for _, buckets := range []int{20, 1} {
			b.Run(fmt.Sprintf("entries=%d/buckets=%d", entries, buckets), func(b *testing.B) { indexLayout(b, 20, buckets, entries) })
		}
	}
}

// indexLayout puts one entry into each of indexes indexes per commit, the
// indexes kept in buckets buckets and holding entries entries beforehand.
func indexLayout(b *testing.B, indexes, buckets, entries int) {
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "layout.db"), 0o600, &bbolt.Options{FreelistType: bbolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	// key is entry n of index ix: a prefix when the indexes share a
	// bucket, then organisation, time and name.
	key := func(ix, n int) []byte {
		k := make([]byte, 0, 64)
		if buckets == 1 {
			k = append(k, byte(ix))
		}
		k = fmt.Appendf(k, "organizations/org-%03d", n%50)
		k = append(k, 0)
		k = binary.BigEndian.AppendUint64(k, uint64(n))
		return append(k, "referrals/0123456789abcdef"...)
	}
	put := func(tx *bbolt.Tx, n int) error {
		for ix := range indexes {
			bk, err := tx.CreateBucketIfNotExists(fmt.Appendf(nil, "ix%02d", ix%buckets))
			if err == nil {
				err = bk.Put(key(ix, n), []byte{1})
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	// Filled in transactions of 2,000: bbolt splits nodes only at commit,
	// so inserts into one huge transaction cost time quadratic in its size.
	for lo := 0; lo < entries; lo += 2000 {
		if err := db.Update(func(tx *bbolt.Tx) error {
			for n := lo; n < lo+2000; n++ {
				if err := put(tx, n); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	before := db.Stats().TxStats
	b.ResetTimer()
	for i := range b.N {
		if err := db.Update(func(tx *bbolt.Tx) error { return put(tx, entries+i) }); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	after := db.Stats().TxStats
	b.ReportMetric(float64(after.GetWrite()-before.GetWrite())/float64(b.N), "pages/commit")
}
