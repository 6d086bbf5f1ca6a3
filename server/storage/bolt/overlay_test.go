package bolt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/social-prescribing/exchange/server/storage"
)

// TestReadsMatchModel drives random groups of puts, deletes and sequence
// steps through the writer, some calls failing after writing, with
// checkpoints (Backup forces one), replays (a copy of the file and log
// opened as they were) and reopenings at random, and after each round
// compares every read a transaction makes (Get, ForEach, Seek, Next, Prev,
// Sequence) with a model.
func TestReadsMatchModel(t *testing.T) {
	for _, interval := range []time.Duration{time.Nanosecond, time.Hour} {
		t.Run(fmt.Sprint("checkpoint every ", interval), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "exchange.db")
			opt := Options{CheckpointInterval: interval}
			s, err := Open(path, opt)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { s.Close() }()
			rng := rand.New(rand.NewPCG(uint64(interval), 9))
			model := map[string]string{}
			var seq uint64
			ctx := context.Background()
			var failed = errors.New("this call fails after writing")
			for round := range 150 {
				// Eight concurrent calls, each on its own keys, so the
				// model does not depend on their order in the group.
				type result struct {
					writes map[string]*string
					steps  uint64
					err    error
				}
				results := make([]result, 8)
				var wg sync.WaitGroup
				for g := range results {
					writes := map[string]*string{}
					for range rng.IntN(6) {
						k := fmt.Sprintf("k%d-%02d", g, rng.IntN(30))
						if rng.IntN(3) == 0 {
							writes[k] = nil
						} else {
							v := fmt.Sprint(round, "-", rng.Uint32())
							writes[k] = &v
						}
					}
					steps := uint64(rng.IntN(2))
					fail := rng.IntN(5) == 0
					results[g] = result{writes: writes, steps: steps}
					wg.Go(func() {
						results[g].err = s.Update(ctx, func(wt storage.WriteTx) error {
							b := wt.(*tx).b(bOrgs)
							for k, v := range writes {
								var err error
								if v == nil {
									err = b.Delete([]byte(k))
								} else {
									err = b.Put([]byte(k), []byte(*v))
								}
								if err != nil {
									return err
								}
							}
							for range steps {
								if _, err := b.NextSequence(); err != nil {
									return err
								}
							}
							if fail {
								return failed
							}
							return nil
						})
					})
				}
				wg.Wait()
				for _, r := range results {
					if r.err != nil {
						if !errors.Is(r.err, failed) {
							t.Fatal(r.err)
						}
						continue
					}
					for k, v := range r.writes {
						if v == nil {
							delete(model, k)
						} else {
							model[k] = *v
						}
					}
					seq += r.steps
				}
				switch rng.IntN(10) {
				case 0:
					if err := s.Backup(ctx, func(int64) (io.Writer, error) { return io.Discard, nil }); err != nil {
						t.Fatal(err)
					}
				case 1:
					// What a crash leaves: the file and the log as they are
					// now, without the checkpoint Close makes.
					crash := filepath.Join(t.TempDir(), "exchange.db")
					copyFile(t, path, crash)
					copyFile(t, path+".log", crash+".log")
					c, err := Open(crash, opt)
					if err != nil {
						t.Fatal(err)
					}
					check(t, c, model, seq, rng)
					c.Close()
				case 2:
					s.Close()
					if s, err = Open(path, opt); err != nil {
						t.Fatal(err)
					}
				}
				check(t, s, model, seq, rng)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func check(t *testing.T, s *Store, model map[string]string, seq uint64, rng *rand.Rand) {
	t.Helper()
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range model {
			if !yield(k) {
				return
			}
		}
	})
	err := s.View(context.Background(), func(rt storage.ReadTx) error {
		b := rt.(*tx).b(bOrgs)
		if got := b.Sequence(); got != seq {
			t.Errorf("sequence %d, want %d", got, seq)
		}
		for g := range 8 {
			for i := range 30 {
				k := fmt.Sprintf("k%d-%02d", g, i)
				want, ok := model[k]
				if got := b.Get([]byte(k)); (got != nil) != ok || string(got) != want {
					t.Errorf("Get(%s) = %q, want %q (present %v)", k, got, want, ok)
				}
			}
		}
		var all []string
		b.ForEach(func(k, v []byte) error {
			all = append(all, string(k))
			if model[string(k)] != string(v) {
				t.Errorf("ForEach %s = %q, want %q", k, v, model[string(k)])
			}
			return nil
		})
		if !slices.Equal(all, keys) {
			t.Errorf("ForEach keys %v, want %v", all, keys)
		}
		// Seek to a random point, walk forward a few keys, then back one.
		for range 20 {
			from := fmt.Sprintf("k%d-%02d", rng.IntN(9), rng.IntN(31))
			i, _ := slices.BinarySearch(keys, from)
			c := b.Cursor()
			k, _ := c.Seek([]byte(from))
			steps := rng.IntN(4)
			for range steps {
				if k == nil {
					break
				}
				k, _ = c.Next()
			}
			j := min(i+steps, len(keys))
			if want := at(keys, j); string(k) != want || (k == nil) != (j == len(keys)) {
				t.Errorf("Seek(%s)+%d Next = %q, want %q", from, steps, k, want)
				continue
			}
			if k == nil {
				continue
			}
			p, v := c.Prev()
			if want := at(keys, j-1); string(p) != want || (p != nil && string(v) != model[want]) {
				t.Errorf("Seek(%s)+%d Next, Prev = %q, want %q", from, steps, p, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func at(keys []string, i int) string {
	if i < 0 || i >= len(keys) {
		return ""
	}
	return keys[i]
}
