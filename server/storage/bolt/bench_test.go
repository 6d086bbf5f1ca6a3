package bolt_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/bolt"
	"github.com/social-prescribing/exchange/tools/loadtest/workload"
)

// The store's benchmarks: the writes and reads every referral costs, on a
// real file with every commit fsynced. docs/benchmarks.md has figures.
//
//	go test ./server/storage/bolt -run '^$' -bench . -benchmem
//	EXCHANGE_BENCH_LARGE=1 go test ./server/storage/bolt -run '^$' -bench InboxList -benchtime 2000x

const recipients = 10 // link worker services and groups sharing the referrals

var t0 = time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)

// stored is the n-th referral as the exchange stores it.
func stored(n int) *pb.Referral {
	r := workload.Referral(n, fmt.Sprintf("organizations/org-%d/services/s", n%recipients), fmt.Sprintf("consents/c%d", n))
	created := t0.Add(time.Duration(n) * time.Second)
	r.Name = "referrals/" + strconv.Itoa(n)
	r.Referrer = "organizations/practice"
	r.Recipient = fmt.Sprintf("organizations/org-%d", n%recipients)
	r.State = pb.ReferralState_REFERRAL_STATE_REQUESTED
	r.CreateTime, r.UpdateTime, r.StateTime = timestamppb.New(created), timestamppb.New(created), timestamppb.New(created)
	r.ReplyBy = timestamppb.New(created.Add(72 * time.Hour))
	r.Etag = "e1"
	return r
}

func openStore(b *testing.B, path string) *exchangetest.BoltStore {
	s, err := exchangetest.OpenBolt(path, bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// create writes a referral as CreateReferral does: the record, its
// indexes and its event.
func create(tx storage.WriteTx, r *pb.Referral) error {
	if err := tx.CreateReferral(r, []string{r.Referrer, r.Recipient}); err != nil {
		return err
	}
	err := tx.AppendEvent(&storage.Event{Event: &pb.Event{Type: pb.EventType_EVENT_TYPE_REFERRAL_CREATED, Resource: r.Name,
		Actor: r.Referrer, EventTime: r.CreateTime}, Audience: []string{r.Referrer, r.Recipient}})
	return err
}

// fill stores referrals [from, to) in large transactions.
func fill(b *testing.B, s *exchangetest.BoltStore, from, to int) {
	for lo := from; lo < to; lo += 5000 {
		err := s.Update(context.Background(), func(tx storage.WriteTx) error {
			for n := lo; n < min(lo+5000, to); n++ {
				if err := create(tx, stored(n)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// parallel runs b.N calls of fn from writers goroutines and reports
// throughput as calls/s.
func parallel(b *testing.B, writers int, fn func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
				if err := fn(i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

// BenchmarkCreate stores referrals, each its own fsynced write, from 1 and
// from 64 concurrent writers (who share commits).
func BenchmarkCreate(b *testing.B) {
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := openStore(b, filepath.Join(b.TempDir(), "exchange.db"))
			parallel(b, writers, func(i int) error {
				return s.Update(context.Background(), func(tx storage.WriteTx) error { return create(tx, stored(i)) })
			})
			b.StopTimer()
			path := s.Path()
			s.Close() // the last checkpoint: the file then holds every referral
			st, _ := os.Stat(path)
			b.ReportMetric(float64(st.Size())/float64(b.N), "file-bytes/referral")
		})
	}
}

// BenchmarkStateChange accepts stored referrals: the record, the moved
// index entries and an event, in one fsynced write each.
func BenchmarkStateChange(b *testing.B) {
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := openStore(b, filepath.Join(b.TempDir(), "exchange.db"))
			fill(b, s, 0, b.N)
			parallel(b, writers, func(i int) error {
				return s.Update(context.Background(), func(tx storage.WriteTx) error {
					r, err := tx.GetReferral("referrals/" + strconv.Itoa(i))
					if err != nil {
						return err
					}
					r.State = pb.ReferralState_REFERRAL_STATE_ACCEPTED
					if err := tx.UpdateReferral(r); err != nil {
						return err
					}
					err = tx.AppendEvent(&storage.Event{Event: &pb.Event{Type: pb.EventType_EVENT_TYPE_REFERRAL_STATE_CHANGED, Resource: r.Name, Actor: r.Recipient},
						Audience: []string{r.Referrer, r.Recipient}})
					return err
				})
			})
		})
	}
}

// BenchmarkEventAppend appends events alone.
func BenchmarkEventAppend(b *testing.B) {
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := openStore(b, filepath.Join(b.TempDir(), "exchange.db"))
			parallel(b, writers, func(i int) error {
				return s.Update(context.Background(), func(tx storage.WriteTx) error {
					err := tx.AppendEvent(&storage.Event{Event: &pb.Event{Type: pb.EventType_EVENT_TYPE_FEEDBACK_POSTED, Resource: "referrals/" + strconv.Itoa(i),
						Actor: "organizations/org-1", EventTime: timestamppb.New(t0)}, Audience: []string{"organizations/practice", "organizations/org-1"}})
					return err
				})
			})
		})
	}
}

// BenchmarkAnswerSweep deletes the stored answers of the oldest hour of a
// seven-day window (1/168 of them) while a writer goes on writing, and
// reports the longest that writer waited for one write: with the answers
// read in one write transaction, as erasure reads them (DeleteIdempotency),
// and a piece at a time, as the retention sweep does
// (storage.DeleteExpiredAnswers); and, for comparison, the longest wait
// in half a second of writes with no sweep. 100,000 answers; 1,000,000 too
// with EXCHANGE_BENCH_LARGE=1.
func BenchmarkAnswerSweep(b *testing.B) {
	sizes := []int{100000}
	if os.Getenv("EXCHANGE_BENCH_LARGE") != "" {
		sizes = append(sizes, 1000000)
	}
	ctx := context.Background()
	for _, n := range sizes {
		step := 7 * 24 * time.Hour / time.Duration(n)
		cutoff := t0.Add(time.Hour)
		// put stores answers [from, to), the i-th made at t0 + i*step.
		put := func(b *testing.B, s *exchangetest.BoltStore, from, to int) {
			resp := make([]byte, 800)
			for lo := from; lo < to; lo += 10000 {
				err := s.Update(ctx, func(tx storage.WriteTx) error {
					for i := lo; i < min(lo+10000, to); i++ {
						err := tx.PutIdempotency(fmt.Sprintf("organizations/org-%d", i%50), fmt.Sprintf("%032x", i*7919),
							&storage.Idempotency{Method: "/exchange.v1.ReferralService/CreateReferral", RequestHash: make([]byte, 32),
								CreateTime: t0.Add(time.Duration(i) * step), Response: resp})
						if err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		for _, way := range []struct {
			name  string
			sweep func(s *exchangetest.BoltStore) (int, error)
		}{
			{"one-transaction", func(s *exchangetest.BoltStore) (n int, err error) {
				err = s.Update(ctx, func(tx storage.WriteTx) error {
					n, err = tx.DeleteIdempotency(func(r *storage.Idempotency) bool { return r.CreateTime.Before(cutoff) })
					return err
				})
				return n, err
			}},
			{"pieces", func(s *exchangetest.BoltStore) (int, error) {
				return storage.DeleteExpiredAnswers(ctx, s, cutoff, storage.AnswerSweepPiece)
			}},
			{"no-sweep", func(s *exchangetest.BoltStore) (int, error) { // the writer alone, for comparison
				time.Sleep(500 * time.Millisecond)
				return -1, nil
			}},
		} {
			b.Run(fmt.Sprintf("answers=%d/%s", n, way.name), func(b *testing.B) {
				s := openStore(b, filepath.Join(b.TempDir(), "exchange.db"))
				put(b, s, 0, n)
				expired := int((time.Hour + step - 1) / step) // made before t0 + 1h
				var worst time.Duration
				b.ResetTimer()
				for i := range b.N {
					if i > 0 {
						b.StopTimer()
						put(b, s, 0, expired) // the hour the last sweep deleted
						b.StartTimer()
					}
					stop, waited := make(chan struct{}), make(chan time.Duration)
					go func() { // the writer that goes on writing
						var longest time.Duration
						for {
							select {
							case <-stop:
								waited <- longest
								return
							default:
							}
							start := time.Now()
							err := s.Update(ctx, func(tx storage.WriteTx) error {
								return tx.PutIdempotency("organizations/other", "r", &storage.Idempotency{Method: "M", CreateTime: t0.Add(8 * 24 * time.Hour)})
							})
							if err != nil {
								b.Error(err)
							}
							longest = max(longest, time.Since(start))
						}
					}()
					deleted, err := way.sweep(s)
					close(stop)
					worst = max(worst, <-waited)
					if err != nil || deleted != expired && deleted != -1 {
						b.Fatalf("deleted %d (%v), want %d", deleted, err, expired)
					}
				}
				b.ReportMetric(float64(worst)/1e6, "max-write-wait-ms")
			})
		}
	}
}

// inboxStores are the stores BenchmarkInboxList reads, filled once per
// process (the benchmark function runs more than once) and removed when
// the benchmarks end.
var inboxStores = map[int]*exchangetest.BoltStore{}

func filled(b *testing.B, n int) *exchangetest.BoltStore {
	if s, ok := inboxStores[n]; ok {
		return s
	}
	dir, err := os.MkdirTemp("", "inbox-bench")
	if err != nil {
		b.Fatal(err)
	}
	s, err := exchangetest.OpenBolt(filepath.Join(dir, "exchange.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	fill(b, s, 0, n)
	// Reopen, so that every size is read from the checkpointed file rather
	// than the smaller ones from the changes laid over it.
	s.Close()
	if s, err = exchangetest.OpenBolt(filepath.Join(dir, "exchange.db"), bolt.Options{}); err != nil {
		b.Fatal(err)
	}
	inboxStores[n] = s
	cleanups = append(cleanups, func() { s.Close(); os.RemoveAll(dir) })
	return s
}

var cleanups []func()

func TestMain(m *testing.M) {
	code := m.Run()
	for _, c := range cleanups {
		c()
	}
	os.Exit(code)
}

// BenchmarkInboxList reads the first page of 50 of one recipient's inbox
// of REQUESTED referrals, newest stores sharing it among 50 recipients. The
// page must cost the same whatever the store holds: 1,000,000 referrals
// run only with EXCHANGE_BENCH_LARGE=1 (filling takes minutes).
func BenchmarkInboxList(b *testing.B) {
	sizes := []int{1000, 100000}
	if os.Getenv("EXCHANGE_BENCH_LARGE") != "" {
		sizes = append(sizes, 1000000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("referrals=%d", n), func(b *testing.B) {
			s := filled(b, n)
			q := storage.ReferralQuery{Recipient: "organizations/org-7", State: pb.ReferralState_REFERRAL_STATE_REQUESTED}
			b.ResetTimer()
			for i := range b.N {
				err := s.View(context.Background(), func(tx storage.ReadTx) error {
					p, err := tx.ListReferrals(q, "", 50, nil)
					if err == nil && len(p.Items) != 50 {
						err = fmt.Errorf("page %d of %d items", i, len(p.Items))
					}
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpenCheck opens a store, which runs bbolt's consistency check
// over the whole file, and closes it: 64 MB of stored answers; 1 GB too
// with EXCHANGE_BENCH_LARGE=1. The file is written with bbolt alone
// (without fsync), as the exchange would have left it.
func BenchmarkOpenCheck(b *testing.B) {
	sizes := []int{64 << 20}
	if os.Getenv("EXCHANGE_BENCH_LARGE") != "" {
		sizes = append(sizes, 1<<30)
	}
	for _, size := range sizes {
		b.Run(fmt.Sprintf("%dMB", size>>20), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "exchange.db")
			s, err := exchangetest.OpenBolt(path, bolt.Options{})
			if err != nil {
				b.Fatal(err)
			}
			s.Close()
			db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoSync: true, FreelistType: bbolt.FreelistMapType})
			if err != nil {
				b.Fatal(err)
			}
			value := make([]byte, 800)
			for n := 0; n < size/len(value); {
				if err := db.Update(func(tx *bbolt.Tx) error {
					bk, err := tx.CreateBucketIfNotExists([]byte("idempotency")) // the engine makes a space's bucket at its first write
					if err != nil {
						return err
					}
					for i := 0; i < 20000; i, n = i+1, n+1 {
						if err := bk.Put([]byte(fmt.Sprintf("organizations/org-%d\x00%012d", n%50, n)), value); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			db.Close()
			fi, _ := os.Stat(path)
			b.ResetTimer()
			for b.Loop() {
				s, err := exchangetest.OpenBolt(path, bolt.Options{})
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
			b.ReportMetric(float64(fi.Size())/(1<<20), "file-MB")
		})
	}
}
