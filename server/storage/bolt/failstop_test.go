package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/social-prescribing/exchange/server/storage/kv"
)

// TestFailedSyncStopsTheStore: a failed fdatasync of the log stops the
// store for good (issue 25, defect 10): the group's callers are told the
// outcome is unknown (ErrStopped), not that nothing was written; OnFatal is
// told once; every later write is refused without being tried; no
// checkpoint runs after it; and a store reopened on the files holds every
// acknowledged write.
func TestFailedSyncStopsTheStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exchange.db")
	var failing atomic.Bool
	var fatal, refused atomic.Int32
	var checkpoints atomic.Int32
	s, err := Open(path, Options{
		CheckpointInterval: time.Hour,
		fdatasync: func(f *os.File) error {
			if failing.Load() {
				return syscall.EIO
			}
			return fdatasync(f)
		},
		OnFatal:      func(error) { fatal.Add(1) },
		OnRefused:    func(reason string) { refused.Add(1) },
		OnCheckpoint: func(time.Duration, error) { checkpoints.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	put := func(k string) error {
		return s.Update(context.Background(), func(wt kv.Writer) error {
			return wt.(*tx).b("organizations").Put([]byte(k), []byte("v"))
		})
	}
	for i := range 10 {
		if err := put(fmt.Sprint("acked-", i)); err != nil {
			t.Fatal(err)
		}
	}
	failing.Store(true)
	before := checkpoints.Load()
	if err := put("unknown"); !errors.Is(err, kv.ErrStopped) || errors.Is(err, kv.ErrWriteFailed) {
		t.Fatalf("the write whose fdatasync failed: %v; want ErrStopped (outcome unknown)", err)
	}
	failing.Store(false)
	if err := put("after"); !errors.Is(err, kv.ErrStopped) {
		t.Fatalf("a write after the failure: %v; want ErrStopped", err)
	}
	if fatal.Load() != 1 || refused.Load() != 1 || !errors.Is(s.Err(), kv.ErrStopped) {
		t.Fatalf("OnFatal told %d times, OnRefused %d, Err() = %v", fatal.Load(), refused.Load(), s.Err())
	}
	// Reads go on; Close makes no checkpoint.
	if err := s.View(context.Background(), func(rt kv.Reader) error {
		if v := rt.(*tx).b("organizations").Get([]byte("acked-9")); string(v) != "v" {
			return fmt.Errorf("acked-9 = %q", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := checkpoints.Load() - before; n != 0 {
		t.Fatalf("%d checkpoints ran after the failure", n)
	}
	reopened(t, path, func(orgs *bucket) {
		for i := range 10 {
			if v := orgs.Get([]byte(fmt.Sprint("acked-", i))); string(v) != "v" {
				t.Errorf("acknowledged acked-%d lost", i)
			}
		}
		if v := orgs.Get([]byte("after")); v != nil {
			t.Error("a write refused after the failure was kept")
		}
	})
}

// TestBacklogIsBounded: while checkpoints fail for a full disk, writes go
// on into the log up to MaxBacklog, are then refused (ErrWriteFailed,
// OnRefused "backlog"), and are taken again once a checkpoint succeeds;
// nothing acknowledged is lost.
func TestBacklogIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exchange.db")
	var full atomic.Bool
	var refused atomic.Int32
	s, err := Open(path, Options{
		CheckpointInterval: time.Millisecond, LogLimit: 64 << 10, MaxBacklog: 256 << 10,
		checkpointErr: func() error {
			if full.Load() {
				return syscall.ENOSPC
			}
			return nil
		},
		OnRefused: func(reason string) {
			if reason == "backlog" {
				refused.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	value := make([]byte, 1000)
	var acked []string
	put := func(k string) error {
		err := s.Update(context.Background(), func(wt kv.Writer) error {
			return wt.(*tx).b("organizations").Put([]byte(k), value)
		})
		if err == nil {
			acked = append(acked, k)
		}
		return err
	}
	full.Store(true)
	var err2 error
	for i := 0; i < 5000 && err2 == nil; i++ {
		err2 = put(fmt.Sprint("k", i))
		time.Sleep(10 * time.Microsecond)
	}
	if !errors.Is(err2, kv.ErrWriteFailed) || refused.Load() == 0 {
		t.Fatalf("after %d writes with checkpoints failing: %v, %d refused; want refusals", len(acked), err2, refused.Load())
	}
	if n := len(acked); n > 400 {
		t.Fatalf("%d writes of 1 KB taken with a bound of 256 KiB", n)
	}
	if s.Err() != nil {
		t.Fatalf("a full disk stopped the store: %v", s.Err())
	}
	full.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for put("again") != nil {
		if time.Now().After(deadline) {
			t.Fatal("writes still refused after checkpoints succeed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Close()
	reopened(t, path, func(orgs *bucket) {
		for _, k := range acked {
			if orgs.Get([]byte(k)) == nil {
				t.Errorf("acknowledged %s lost", k)
			}
		}
	})
}

// TestFailedCheckpointSyncStopsTheStore: a checkpoint that fails other
// than for a full disk (a failed fsync of the bbolt file) stops the store:
// after a failed fsync, a later one may report success for pages that never
// reached the disk, so the checkpoint is not tried again.
func TestFailedCheckpointSyncStopsTheStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exchange.db")
	var fatal atomic.Int32
	s, err := Open(path, Options{CheckpointInterval: time.Millisecond,
		checkpointErr: func() error { return syscall.EIO },
		OnFatal:       func(error) { fatal.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(context.Background(), func(wt kv.Writer) error {
		return wt.(*tx).b("organizations").Put([]byte("a"), []byte("v"))
	}); err != nil {
		t.Fatal(err) // acknowledged: it is in the log
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(s.Err(), kv.ErrStopped) || fatal.Load() != 1 {
		t.Fatalf("after a checkpoint failed with EIO: Err() = %v, OnFatal told %d times", s.Err(), fatal.Load())
	}
	err = s.Update(context.Background(), func(wt kv.Writer) error { return nil })
	if !errors.Is(err, kv.ErrStopped) {
		t.Fatalf("a write after it: %v", err)
	}
	s.Close()
	reopened(t, path, func(orgs *bucket) {
		if string(orgs.Get([]byte("a"))) != "v" {
			t.Error("the acknowledged write was lost")
		}
	})
}

// reopened opens the store at path again, as the next start would, and
// hands check its organisations bucket, where the tests write.
func reopened(t *testing.T, path string, check func(orgs *bucket)) {
	t.Helper()
	r, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.View(context.Background(), func(rt kv.Reader) error {
		check(rt.(*tx).b("organizations"))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
