package bolt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/social-prescribing/exchange/server/storage/kv"
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
						results[g].err = s.Update(ctx, func(wt kv.Writer) error {
							b := wt.(*tx).b("organizations")
							// The writer reads its own keys as the model
							// has them, before and after its changes.
							mine := maps.Clone(model)
							maps.DeleteFunc(mine, func(k, _ string) bool { return !strings.HasPrefix(k, fmt.Sprintf("k%d-", g)) })
							checkOwn(t, b, g, mine, "before writing")
							defer func() {
								for k, v := range writes {
									if v == nil {
										delete(mine, k)
									} else {
										mine[k] = *v
									}
								}
								checkOwn(t, b, g, mine, "after writing")
							}()
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
				// checkCopy opens a copy of the store and checks it holds
				// everything acknowledged.
				checkCopy := func(p string) {
					c, err := Open(p, opt)
					if err != nil {
						t.Fatal(err)
					}
					check(t, c, model, seq, rng)
					c.Close()
				}
				switch rng.IntN(10) {
				case 0:
					// A backup holds everything acknowledged before it.
					copyPath := filepath.Join(t.TempDir(), "exchange.db")
					f, err := os.Create(copyPath)
					if err != nil {
						t.Fatal(err)
					}
					if err := s.Backup(ctx, func(int64) (io.Writer, error) { return f, nil }); err != nil {
						t.Fatal(err)
					}
					f.Close()
					checkCopy(copyPath)
				case 1:
					// What a crash leaves: the file and the log as they are
					// now, without the checkpoint Close makes.
					crash := filepath.Join(t.TempDir(), "exchange.db")
					copyFile(t, path, crash)
					copyFile(t, path+".log", crash+".log")
					copyFile(t, path+".log.1", crash+".log.1")
					checkCopy(crash)
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

// checkOwn compares a writer's view of call g's keys with want, by Get,
// by a cursor walking them forward from Seek, and backward from past the
// last of them.
func checkOwn(t *testing.T, b *bucket, g int, want map[string]string, when string) {
	pfx := fmt.Sprintf("k%d-", g)
	for i := range 30 {
		k := fmt.Sprintf("%s%02d", pfx, i)
		w, ok := want[k]
		if got := b.Get([]byte(k)); (got != nil) != ok || string(got) != w {
			t.Errorf("%s: writer Get(%s) = %q, want %q (present %v)", when, k, got, w, ok)
		}
	}
	keys := slices.Sorted(maps.Keys(want))
	var fwd []string
	c := b.Cursor()
	for k, v := c.Seek([]byte(pfx)); k != nil && strings.HasPrefix(string(k), pfx); k, v = c.Next() {
		fwd = append(fwd, string(k))
		if string(v) != want[string(k)] {
			t.Errorf("%s: writer cursor %s = %q, want %q", when, k, v, want[string(k)])
		}
	}
	if !slices.Equal(fwd, keys) {
		t.Errorf("%s: writer cursor forward %v, want %v", when, fwd, keys)
	}
	var back []string
	k, _ := c.Seek([]byte(fmt.Sprintf("k%d.", g))) // '.' sorts after '-'
	if k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	for ; k != nil && strings.HasPrefix(string(k), pfx); k, _ = c.Prev() {
		back = append(back, string(k))
	}
	slices.Reverse(back)
	if !slices.Equal(back, keys) {
		t.Errorf("%s: writer cursor backward %v, want %v", when, back, keys)
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

func check(t *testing.T, s *Engine, model map[string]string, seq uint64, rng *rand.Rand) {
	t.Helper()
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range model {
			if !yield(k) {
				return
			}
		}
	})
	err := s.View(context.Background(), func(rt kv.Reader) error {
		b := rt.(*tx).b("organizations")
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

// TestCrashDuringCheckpointReplaysBothEpochs: while a checkpoint is still
// putting one generation into the file, the writer acknowledges more in
// the other log file. A crash then leaves the file without either; both
// must be replayed, in order. The copy of the file and logs taken while
// the checkpoint is held is such a crash.
func TestCrashDuringCheckpointReplaysBothEpochs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exchange.db")
	hold, held := make(chan struct{}), make(chan struct{}, 10)
	var holding sync.Once
	s, err := Open(path, Options{CheckpointInterval: time.Nanosecond, beforeCheckpoint: func() {
		held <- struct{}{}
		<-hold
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { holding.Do(func() { close(hold) }); s.Close() }()
	put := func(k, v string) {
		t.Helper()
		err := s.Update(context.Background(), func(wt kv.Writer) error {
			return wt.(*tx).b("organizations").Put([]byte(k), []byte(v))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	put("a", "1") // the first generation, now held in its checkpoint
	<-held
	put("a", "2") // the second, in the other log file
	put("b", "1")
	crash := filepath.Join(t.TempDir(), "exchange.db")
	for _, ext := range []string{"", ".log", ".log.1"} {
		copyFile(t, path+ext, crash+ext)
	}
	c, err := Open(crash, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	check(t, c, map[string]string{"a": "2", "b": "1"}, 0, rand.New(rand.NewPCG(1, 2)))
}

// TestRollbackKeepsTheGroupsEarlierCalls: a failing call is taken back to
// what the group's layer held before it, including what earlier calls of
// the same group wrote there, and not to what the file holds.
func TestRollbackKeepsTheGroupsEarlierCalls(t *testing.T) {
	l := newLayer()
	put := func(r *record, k, v string) { r.put(l, kv.Entry{Key: []byte(k), Val: []byte(v)}) }
	del := func(r *record, k string) { r.put(l, kv.Entry{Key: []byte(k), Del: true}) }
	var earlier, failing record
	put(&earlier, "kept", "earlier")
	del(&earlier, "deleted")
	put(&failing, "kept", "failing")
	put(&failing, "kept", "failing again")
	put(&failing, "deleted", "failing")
	put(&failing, "new", "failing")
	del(&failing, "gone")
	failing.rollback()
	for _, c := range []struct {
		key, val string
		del, had bool
	}{
		{key: "kept", val: "earlier", had: true},
		{key: "deleted", del: true, had: true},
		{key: "new"},
		{key: "gone"},
	} {
		e, had := l.tree.Get(kv.Entry{Key: []byte(c.key)})
		if had != c.had || string(e.Val) != c.val || e.Del != c.del {
			t.Errorf("%s after the rollback: %q (deleted %v, in the layer %v), want %q (deleted %v, in the layer %v)",
				c.key, e.Val, e.Del, had, c.val, c.del, c.had)
		}
	}
}

// TestChangesKeepTheirOwnKeys: the store copies the keys and values of
// puts and deletes, so a caller may reuse its buffers (or pass bbolt's
// own, which last only as long as its transaction) once the call returns;
// the group's layer, the log and the overlay all see what was asked.
func TestChangesKeepTheirOwnKeys(t *testing.T) {
	for _, interval := range []time.Duration{time.Nanosecond, time.Hour} {
		t.Run(fmt.Sprint("checkpoint every ", interval), func(t *testing.T) { keepOwnKeys(t, interval) })
	}
}

func keepOwnKeys(t *testing.T, interval time.Duration) {
	path := filepath.Join(t.TempDir(), "exchange.db")
	s, err := Open(path, Options{CheckpointInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	update := func(fn func(b *bucket) error) {
		t.Helper()
		if err := s.Update(context.Background(), func(wt kv.Writer) error { return fn(wt.(*tx).b("organizations")) }); err != nil {
			t.Fatal(err)
		}
	}
	update(func(b *bucket) error {
		for _, k := range []string{"a", "b"} {
			if err := b.Put([]byte(k), []byte("first")); err != nil {
				return err
			}
		}
		return nil
	})
	update(func(b *bucket) error {
		k, v := []byte("a"), []byte("second")
		if err := b.Put(k, v); err != nil {
			return err
		}
		copy(k, "c")
		copy(v, "garble")
		k = []byte("b")
		if err := b.Delete(k); err != nil {
			return err
		}
		copy(k, "a")
		return nil
	})
	want := map[string]string{"a": "second"}
	check(t, s, want, 0, rand.New(rand.NewPCG(1, 2)))
	s.Close()
	if s, err = Open(path, Options{CheckpointInterval: interval}); err != nil {
		t.Fatal(err)
	}
	check(t, s, want, 0, rand.New(rand.NewPCG(1, 2)))
	s.Close()
}
