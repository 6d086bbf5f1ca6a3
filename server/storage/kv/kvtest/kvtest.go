// Package kvtest is the conformance suite of kv.Engine: every engine's test
// calls Run (and storagetest.Run, the typed layer's suite over the same
// engine).
package kvtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/social-prescribing/exchange/server/storage/kv"
)

// Opener opens the engine kept in dir (the same dir again reopens what it
// holds; an engine that keeps nothing in files names its store by dir).
type Opener func(t *testing.T, dir string) kv.Engine

// Run runs every conformance test.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"GetPutDelete", testGetPutDelete},
		{"CursorsBothWays", testCursors},
		{"WritesSeenInTheirTransaction", testOwnWrites},
		{"LogNumbersAndIndexes", testAppend},
		{"WaitWakesOnAppend", testWait},
		{"FailedUpdateKeepsNothing", testRollback},
		{"ViewIsOneSnapshot", testSnapshot},
		{"ConcurrentIncrementsAllCount", testIncrements},
		{"ConcurrentInsertsSeeEachOther", testPhantoms},
		{"ConcurrentAppendsInCommitOrder", testConcurrentAppends},
		{"ChangesMoveWithTheirSpaces", testChanges},
		{"Backup", testBackup},
		{"SurvivesReopen", testReopen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

var ctx = context.Background()

func newEngine(t *testing.T, open Opener) kv.Engine {
	e := open(t, t.TempDir())
	t.Cleanup(func() { e.Close() })
	return e
}

func update(t *testing.T, e kv.Engine, fn func(kv.Writer) error) {
	t.Helper()
	if err := e.Update(ctx, fn); err != nil {
		t.Fatal(err)
	}
}

func view(t *testing.T, e kv.Engine, fn func(kv.Reader) error) {
	t.Helper()
	if err := e.View(ctx, fn); err != nil {
		t.Fatal(err)
	}
}

func num(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func testGetPutDelete(t *testing.T, open Opener) {
	e := newEngine(t, open)
	update(t, e, func(w kv.Writer) error {
		if err := w.Put("s", nil, []byte("x")); err == nil {
			t.Error("an empty key was taken")
		}
		return errors.Join(w.Put("s", []byte("a"), []byte("1")), w.Put("s", []byte("b"), nil),
			w.Put("other", []byte("a"), []byte("other's")), w.Put("s", []byte("c"), []byte("3")))
	})
	update(t, e, func(w kv.Writer) error {
		return errors.Join(w.Put("s", []byte("a"), []byte("one")), w.Delete("s", []byte("c")), w.Delete("s", []byte("never")))
	})
	view(t, e, func(r kv.Reader) error {
		for _, c := range []struct {
			space, key string
			want       []byte
		}{{"s", "a", []byte("one")}, {"s", "b", []byte{}}, {"s", "c", nil}, {"s", "z", nil}, {"other", "a", []byte("other's")}, {"none", "a", nil}} {
			got := r.Get(c.space, []byte(c.key))
			if !bytes.Equal(got, c.want) || (got == nil) != (c.want == nil) {
				t.Errorf("Get(%s, %s) = %q, want %q", c.space, c.key, got, c.want)
			}
		}
		return nil
	})
}

// keys lists a space with a cursor, forwards from First or backwards from
// Last.
func keys(r kv.Reader, space string, backwards bool) []string {
	var out []string
	c := r.Cursor(space)
	k, _ := c.First()
	if backwards {
		k, _ = c.Last()
	}
	for ; k != nil; k, _ = step(c, backwards) {
		out = append(out, string(k))
	}
	return out
}

func step(c kv.Cursor, backwards bool) ([]byte, []byte) {
	if backwards {
		return c.Prev()
	}
	return c.Next()
}

func testCursors(t *testing.T, open Opener) {
	e := newEngine(t, open)
	// More keys than an engine reads at a time, with neighbours in the
	// spaces before and after.
	var want []string
	for from := 0; from < 300; from += 100 { // an engine bounds one transaction's writes (etcd: 128)
		update(t, e, func(w kv.Writer) error {
			for i := from; i < from+100; i++ {
				k := fmt.Sprintf("k%04d", i*2)
				want = append(want, k)
				if err := w.Put("b", []byte(k), []byte("v"+k)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	update(t, e, func(w kv.Writer) error {
		return errors.Join(w.Put("a", []byte("zz"), nil), w.Put("c", []byte("0"), nil), w.Put("b", []byte("k\x00"), []byte("x")))
	})
	want = append([]string{"k\x00"}, want...)
	view(t, e, func(r kv.Reader) error {
		if got := keys(r, "b", false); !slices.Equal(got, want) {
			t.Errorf("forwards: %d keys, want %d (first %q)", len(got), len(want), got[:min(3, len(got))])
		}
		back := slices.Clone(want)
		slices.Reverse(back)
		if got := keys(r, "b", true); !slices.Equal(got, back) {
			t.Errorf("backwards: %d keys, want %d", len(got), len(back))
		}
		c := r.Cursor("b")
		for _, s := range []struct{ seek, want, next, prev string }{
			{"k0101", "k0102", "k0104", "k0100"},
			{"k0102", "k0102", "k0104", "k0100"},
			{"", "k\x00", "k0000", ""},
			{"k", "k\x00", "k0000", ""},
		} {
			k, v := c.Seek([]byte(s.seek))
			if string(k) != s.want || string(v) != "v"+s.want && s.want != "k\x00" {
				t.Errorf("Seek(%q) = %q %q, want %q", s.seek, k, v, s.want)
			}
			if k, _ := c.Next(); string(k) != s.next {
				t.Errorf("Next after Seek(%q) = %q, want %q", s.seek, k, s.next)
			}
			c.Seek([]byte(s.seek))
			if k, _ := c.Prev(); string(k) != s.prev {
				t.Errorf("Prev after Seek(%q) = %q, want %q", s.seek, k, s.prev)
			}
		}
		if k, _ := c.Seek([]byte("l")); k != nil {
			t.Errorf("Seek past the end = %q", k)
		}
		if k, _ := r.Cursor("empty").First(); k != nil {
			t.Errorf("an empty space has %q", k)
		}
		if k, _ := r.Cursor("empty").Last(); k != nil {
			t.Errorf("an empty space ends with %q", k)
		}
		return nil
	})
}

func testOwnWrites(t *testing.T, open Opener) {
	e := newEngine(t, open)
	update(t, e, func(w kv.Writer) error {
		return errors.Join(w.Put("s", []byte("a"), nil), w.Put("s", []byte("c"), nil), w.Put("s", []byte("e"), nil))
	})
	update(t, e, func(w kv.Writer) error {
		c := w.Cursor("s")
		if k, _ := c.First(); string(k) != "a" {
			t.Errorf("first = %q", k)
		}
		if err := errors.Join(w.Put("s", []byte("b"), []byte("new")), w.Delete("s", []byte("c")), w.Put("s", []byte("f"), nil)); err != nil {
			return err
		}
		if v := w.Get("s", []byte("b")); string(v) != "new" {
			t.Errorf("own put read back as %q", v)
		}
		if v := w.Get("s", []byte("c")); v != nil {
			t.Errorf("own delete read back as %q", v)
		}
		if got := keys(w, "s", false); fmt.Sprint(got) != "[a b e f]" {
			t.Errorf("own writes in a cursor: %v", got)
		}
		if got := keys(w, "s", true); fmt.Sprint(got) != "[f e b a]" {
			t.Errorf("own writes in a cursor backwards: %v", got)
		}
		return nil
	})
	view(t, e, func(r kv.Reader) error {
		if got := keys(r, "s", false); fmt.Sprint(got) != "[a b e f]" {
			t.Errorf("after commit: %v", got)
		}
		return nil
	})
}

func testAppend(t *testing.T, open Opener) {
	e := newEngine(t, open)
	for i := range 3 {
		update(t, e, func(w kv.Writer) error {
			for j := range 2 {
				v := fmt.Sprintf("entry %d", i*2+j+1)
				if err := w.Append("log", []byte(v), kv.Index{Space: "ix", Key: []byte("org\x00")},
					kv.Index{Space: "ix", Key: fmt.Appendf(nil, "by%d\x00", j)}); err != nil {
					return err
				}
			}
			return w.Append("other", []byte("x"))
		})
	}
	view(t, e, func(r kv.Reader) error {
		if n := r.Last("log"); n != 6 {
			t.Errorf("Last(log) = %d, want 6", n)
		}
		if n := r.Last("other"); n != 3 {
			t.Errorf("Last(other) = %d, want 3: each log numbers its own", n)
		}
		if n := r.Last("none"); n != 0 {
			t.Errorf("Last of a log never written = %d", n)
		}
		for n := uint64(1); n <= 6; n++ {
			if v := r.Get("log", num(n)); string(v) != fmt.Sprintf("entry %d", n) {
				t.Errorf("entry %d = %q", n, v)
			}
			if r.Get("ix", append([]byte("org\x00"), num(n)...)) == nil {
				t.Errorf("no index entry for %d", n)
			}
			if r.Get("ix", append(fmt.Appendf(nil, "by%d\x00", (n-1)%2), num(n)...)) == nil {
				t.Errorf("no second index entry for %d", n)
			}
		}
		if got := len(keys(r, "ix", false)); got != 12 {
			t.Errorf("%d index entries, want 12", got)
		}
		return nil
	})
}

func testWait(t *testing.T, open Opener) {
	e := newEngine(t, open)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := e.Wait(short, "log", 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait on an empty log = %v, want the deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Wait(ctx, "log", 0) }()
	time.Sleep(20 * time.Millisecond)
	update(t, e, func(w kv.Writer) error { return w.Append("other", nil) })
	select {
	case err := <-done:
		t.Fatalf("Wait woke for another log: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	update(t, e, func(w kv.Writer) error { return w.Append("log", []byte("x")) })
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not wake on an append")
	}
	if err := e.Wait(ctx, "log", 0); err != nil { // already there
		t.Fatal(err)
	}
}

func testRollback(t *testing.T, open Opener) {
	e := newEngine(t, open)
	boom := errors.New("boom")
	err := e.Update(ctx, func(w kv.Writer) error {
		if err := errors.Join(w.Put("s", []byte("half"), nil), w.Append("log", []byte("lost"), kv.Index{Space: "ix", Key: []byte("k")})); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update = %v, want the function's error", err)
	}
	update(t, e, func(w kv.Writer) error { return w.Append("log", []byte("kept")) })
	view(t, e, func(r kv.Reader) error {
		if r.Get("s", []byte("half")) != nil || len(keys(r, "ix", false)) != 0 {
			t.Error("a failed update left its writes behind")
		}
		if n := r.Last("log"); n != 1 || string(r.Get("log", num(1))) != "kept" {
			t.Errorf("after a failed append the log's last is %d, %q: a failed update took a number", n, r.Get("log", num(1)))
		}
		return nil
	})
}

func testSnapshot(t *testing.T, open Opener) {
	e := newEngine(t, open)
	update(t, e, func(w kv.Writer) error {
		return errors.Join(w.Put("s", []byte("a"), []byte("1")), w.Append("log", nil))
	})
	done := make(chan error, 1)
	view(t, e, func(r kv.Reader) error {
		before := r.Get("s", []byte("a"))
		// A write while the view is open. It may wait for the view to
		// end (bbolt: a checkpoint that must grow the file waits for
		// readers), so the view waits for it only a while.
		go func() {
			done <- e.Update(ctx, func(w kv.Writer) error {
				return errors.Join(w.Put("s", []byte("a"), []byte("2")), w.Put("s", []byte("b"), nil), w.Append("log", nil))
			})
		}()
		select {
		case err := <-done:
			done <- err
		case <-time.After(2 * time.Second):
		}
		if got := r.Get("s", []byte("a")); !bytes.Equal(got, before) {
			t.Errorf("a view saw a later write: %q, then %q", before, got)
		}
		if got := keys(r, "s", false); fmt.Sprint(got) != "[a]" {
			t.Errorf("a view's cursor saw a later write: %v", got)
		}
		if n := r.Last("log"); n != 1 {
			t.Errorf("a view saw a later append: last %d", n)
		}
		return nil
	})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	view(t, e, func(r kv.Reader) error {
		if got := keys(r, "s", false); fmt.Sprint(got) != "[a b]" {
			t.Errorf("after the write: %v", got)
		}
		return nil
	})
}

// testIncrements: read-modify-write of one key from many writers at once
// loses none (an engine that detects conflicts runs fn again).
func testIncrements(t *testing.T, open Opener) {
	e := newEngine(t, open)
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			errs <- e.Update(ctx, func(w kv.Writer) error {
				var c uint64
				if v := w.Get("s", []byte("count")); len(v) == 8 {
					c = binary.BigEndian.Uint64(v)
				}
				return w.Put("s", []byte("count"), num(c+1))
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	view(t, e, func(r kv.Reader) error {
		if v := r.Get("s", []byte("count")); len(v) != 8 || binary.BigEndian.Uint64(v) != n {
			t.Errorf("count = %x, want %d", v, n)
		}
		return nil
	})
}

// testPhantoms: writers that each look for any key under a prefix and add
// one only if there is none leave exactly one: a scan is part of what a
// transaction read.
func testPhantoms(t *testing.T, open Opener) {
	e := newEngine(t, open)
	update(t, e, func(w kv.Writer) error { return w.Put("s", []byte("other"), nil) })
	const n = 12
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			err := e.Update(ctx, func(w kv.Writer) error {
				c := w.Cursor("s")
				if k, _ := c.Seek([]byte("slot/")); k != nil && bytes.HasPrefix(k, []byte("slot/")) {
					return nil
				}
				return w.Put("s", fmt.Appendf(nil, "slot/%02d", i), nil)
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	view(t, e, func(r kv.Reader) error {
		if got := keys(r, "s", false); len(got) != 2 {
			t.Errorf("keys after %d writers each added one if none was there: %v", n, got)
		}
		return nil
	})
}

// testConcurrentAppends: appends from many writers, some failing, are
// numbered 1..n with no gap and no repeat, and each writer's entries in
// the order it made them.
func testConcurrentAppends(t *testing.T, open Opener) {
	e := newEngine(t, open)
	const writers, each = 16, 3
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for j := range each {
				err := e.Update(ctx, func(w kv.Writer) error {
					if err := w.Append("log", fmt.Appendf(nil, "%02d/%d", i, j)); err != nil {
						return err
					}
					if i%5 == 4 && j == 1 {
						return errors.New("planned")
					}
					return nil
				})
				if err != nil && err.Error() != "planned" {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	want := writers*each - (writers / 5)
	view(t, e, func(r kv.Reader) error {
		if n := r.Last("log"); n != uint64(want) {
			t.Errorf("last = %d, want %d", n, want)
		}
		seen := map[string]bool{}
		last := map[string]int{}
		c := r.Cursor("log")
		i := uint64(0)
		for k, v := c.First(); k != nil; k, v = c.Next() {
			i++
			if binary.BigEndian.Uint64(k) != i {
				t.Fatalf("entry %d is numbered %d", i, binary.BigEndian.Uint64(k))
			}
			if seen[string(v)] {
				t.Errorf("%s appended twice", v)
			}
			seen[string(v)] = true
			var w, j int
			fmt.Sscanf(string(v), "%d/%d", &w, &j)
			if p, ok := last[fmt.Sprint(w)]; ok && p >= j {
				t.Errorf("writer %d's entry %d numbered after its entry %d", w, p, j)
			}
			last[fmt.Sprint(w)] = j
		}
		if int(i) != want {
			t.Errorf("%d entries, want %d", i, want)
		}
		return nil
	})
}

func testChanges(t *testing.T, open Opener) {
	e := newEngine(t, open)
	before := e.Changes("keys", "orgs")
	update(t, e, func(w kv.Writer) error { return w.Put("other", []byte("a"), nil) })
	if e.Changes("keys", "orgs") != before {
		t.Error("Changes moved for a write to another space")
	}
	update(t, e, func(w kv.Writer) error { return w.Put("orgs", []byte("a"), nil) })
	mid := e.Changes("keys", "orgs")
	if mid == before {
		t.Error("Changes did not move for a put in a space asked about")
	}
	update(t, e, func(w kv.Writer) error { return w.Delete("keys", []byte("k")) })
	update(t, e, func(w kv.Writer) error { return w.Put("keys", []byte("k"), nil) })
	update(t, e, func(w kv.Writer) error { return w.Delete("keys", []byte("k")) })
	if e.Changes("keys", "orgs") == mid {
		t.Error("Changes did not move for a delete")
	}
}

func testBackup(t *testing.T, open Opener) {
	e := newEngine(t, open)
	update(t, e, func(w kv.Writer) error { return w.Put("s", []byte("a"), bytes.Repeat([]byte("v"), 4096)) })
	var buf bytes.Buffer
	size := int64(-2)
	err := e.Backup(ctx, func(n int64) (io.Writer, error) { size = n; return &buf, nil })
	if err != nil {
		t.Fatal(err)
	}
	if size < -1 || (size >= 0 && size != int64(buf.Len())) || buf.Len() < 4096 {
		t.Errorf("backup of %d bytes, announced %d", buf.Len(), size)
	}
	refused := errors.New("no room")
	if err := e.Backup(ctx, func(int64) (io.Writer, error) { return nil, refused }); !errors.Is(err, refused) {
		t.Errorf("backup whose start failed = %v", err)
	}
	update(t, e, func(w kv.Writer) error { return w.Put("s", []byte("b"), nil) }) // writes go on after
}

func testReopen(t *testing.T, open Opener) {
	dir := t.TempDir()
	e := open(t, dir)
	update(t, e, func(w kv.Writer) error {
		return errors.Join(w.Put("s", []byte("kept"), []byte("v")), w.Append("log", []byte("1")))
	})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Update(ctx, func(kv.Writer) error { return nil }); !errors.Is(err, kv.ErrClosed) {
		t.Errorf("update after close = %v, want ErrClosed", err)
	}
	e = open(t, dir)
	defer e.Close()
	update(t, e, func(w kv.Writer) error { return w.Append("log", []byte("2")) })
	view(t, e, func(r kv.Reader) error {
		if v := r.Get("s", []byte("kept")); string(v) != "v" {
			t.Errorf("after reopen: %q", v)
		}
		if n := r.Last("log"); n != 2 {
			t.Errorf("the log's numbers after reopen reached %d, want 2", n)
		}
		return nil
	})
	if err := e.Wait(ctx, "log", 1); err != nil {
		t.Error(err)
	}
}
