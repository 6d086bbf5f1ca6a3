package etcd

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/etcd/etcdtest"
	"github.com/social-prescribing/exchange/server/storage/kv"
)

func openOn(t *testing.T, c *etcdtest.Cluster, pfx string) *Engine {
	e, err := Open(context.Background(), Options{Endpoints: c.Endpoints(), Prefix: pfx})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func newTx(e *Engine) *tx {
	return &tx{e: e, ctx: context.Background(), writer: true, writes: map[string]*kv.Changes{}}
}

func logEntries(t *testing.T, e *Engine, log string) []string {
	var out []string
	e.View(context.Background(), func(r kv.Reader) error {
		c := r.Cursor(log)
		for k, v := c.First(); k != nil; k, v = c.Next() {
			out = append(out, string(v)+"@"+string(rune('0'+binary.BigEndian.Uint64(k))))
		}
		return nil
	})
	return out
}

// Process A commits an append; process B's stamp numbers it before A's
// stampOwn runs, and a newer entry C is pending: A's stampOwn must not
// number A's entry a second time.
func TestStampOwnSkipsEntriesNumberedMeanwhile(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a := openOn(t, c, "/dup/")
	b := openOn(t, c, "/dup/")
	ta := newTx(a)
	ta.Append("log", []byte("A"))
	revA, ok, err := ta.commit(1)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	// B (another process: its sweep, or the fallback stamp of a later commit) numbers A's entry.
	if err := b.stamp(context.Background(), "log", revA); err != nil {
		t.Fatal(err)
	}
	// A's watch learns of B's stamp.
	for dl := time.Now().Add(5 * time.Second); ; {
		if n, _ := a.guess("log"); n == 1 {
			break
		}
		if time.Now().After(dl) {
			t.Fatal("watch did not deliver")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A newer commit C, not numbered yet.
	tc := newTx(b)
	tc.Append("log", []byte("C"))
	if _, ok, err := tc.commit(1); err != nil || !ok {
		t.Fatal(ok, err)
	}
	own := ta.stampOwn(context.Background(), revA)
	if err := b.stamp(context.Background(), "log", 1<<62); err != nil {
		t.Fatal(err)
	}
	got := logEntries(t, a, "log")
	t.Logf("stampOwn numbered: %v; log: %v", own, got)
	if len(got) != 2 {
		t.Fatalf("log should be [A@1 C@2], is %v", got)
	}
}

// An entry with more index entries than one etcd Txn takes is numbered,
// its index entries put after it, and the entries behind it are numbered
// too.
func TestEntryWithManyIndexEntriesIsNumbered(t *testing.T) {
	c := etcdtest.Start(t, 1)
	e := openOn(t, c, "/wedge/")
	ctx := context.Background()
	err := e.Update(ctx, func(w kv.Writer) error {
		var ix []kv.Index
		for i := range 130 {
			ix = append(ix, kv.Index{Space: "ix", Key: []byte{byte(i)}})
		}
		return w.Append("log", []byte("big"), ix...)
	})
	t.Logf("Update with 130 index entries: %v", err)
	if err := e.Update(ctx, func(w kv.Writer) error { return w.Append("log", []byte("small")) }); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := e.Wait(wctx, "log", 0); err != nil {
		resp, _ := e.cli.Get(ctx, "/wedge/p/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		t.Fatalf("both Updates returned nil, yet after 3s the log has no entry (%v); %d entries pending; stamp: %v",
			err, resp.Count, e.stamp(ctx, "log", 1<<62))
	}
}

// A watch resumed from a compacted revision would skip the numbers' changes
// before the compaction: the watch reads them again first, so Wait does not
// block while the log has entries.
func TestWaitAfterTheWatchPassedACompaction(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx := context.Background()
	a := openOn(t, c, "/cmp/")
	if err := a.Update(ctx, func(w kv.Writer) error { return w.Append("log", []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	// Later writes elsewhere, then a compaction to now.
	var rev int64
	for range 5 {
		r, err := a.cli.Put(ctx, "/other", "v")
		if err != nil {
			t.Fatal(err)
		}
		rev = r.Header.Revision
	}
	if _, err := a.cli.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	// A process whose watch was at revision 2 (before the stamp) when it broke.
	lag := &Engine{cli: a.cli, pfx: a.pfx, last: map[string]uint64{}, lastMod: map[string]int64{}, waitCh: make(chan struct{})}
	lag.ctx, lag.cancel = context.WithCancel(ctx)
	defer lag.cancel()
	lag.watchers.Add(1)
	go lag.watchLogs(2)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := lag.Wait(wctx, "log", 0); err != nil {
		t.Fatalf("log has entry 1, yet Wait(after 0): %v", err)
	}
}

// Write skew through a deletion in a range a cursor covered: T1 sees k
// with a cursor and puts flag; T2 reads flag (absent) and deletes k. In
// any serial order one of them sees the other's write, so one of them
// must run again.
func TestDeletionInAScannedRangeConflicts(t *testing.T) {
	c := etcdtest.Start(t, 1)
	e := openOn(t, c, "/skew/")
	ctx := context.Background()
	if err := e.Update(ctx, func(w kv.Writer) error { return w.Put("s", []byte("k"), []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	read, t2done := make(chan struct{}), make(chan struct{})
	runs1 := 0
	errc := make(chan error, 1)
	go func() {
		errc <- e.Update(ctx, func(w kv.Writer) error {
			runs1++
			k, _ := w.Cursor("s").First()
			if runs1 == 1 {
				close(read)
				<-t2done
			}
			if k == nil {
				return nil // k is gone: put nothing
			}
			return w.Put("x", []byte("flag"), []byte("1"))
		})
	}()
	<-read
	if err := e.Update(ctx, func(w kv.Writer) error {
		if w.Get("x", []byte("flag")) != nil {
			return nil
		}
		return w.Delete("s", []byte("k"))
	}); err != nil {
		t.Fatal(err)
	}
	close(t2done)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	var k, flag []byte
	e.View(ctx, func(r kv.Reader) error { k, flag = r.Get("s", []byte("k")), r.Get("x", []byte("flag")); return nil })
	if k == nil && flag != nil {
		t.Fatalf("T1 ran %d time(s) and committed after T2 deleted the key its cursor returned: k deleted AND flag set (write skew)", runs1)
	}
}

// The audit entry of a ListReferrals page of 200 (Shown: 200 names) is
// numbered, and the audit log goes on.
func TestLongAuditEntryIsNumbered(t *testing.T) {
	c := etcdtest.Start(t, 1)
	e := openOn(t, c, "/aud/")
	ctx := context.Background()
	st, err := storage.Open(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	shown := make([]string, 200)
	for i := range shown {
		shown[i] = fmt.Sprintf("referrals/r%d", i)
	}
	for _, ev := range []*pb.AuditEvent{
		{EventTime: timestamppb.Now(), Organization: "organizations/gp", Method: "ListReferrals", Resource: "organizations/gp", Shown: shown},
		{EventTime: timestamppb.Now(), Organization: "organizations/gp", Method: "GetReferral", Resource: "referrals/r1"},
	} {
		if err := st.Update(ctx, func(tx storage.WriteTx) error { return tx.AppendAudit(ev) }); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2500 * time.Millisecond) // two sweeps
	var n int64
	st.View(ctx, func(tx storage.ReadTx) error { n, _ = tx.LastAuditSequence(); return nil })
	if n != 2 {
		t.Fatalf("two audit entries acknowledged; LastAuditSequence = %d", n)
	}
}
