package bolt

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"
)

// TestLogStopsAtTornOrStaleRecords: a replay reads the records of its epoch
// in order and stops at the first that is torn, zeroed, or of an earlier
// epoch (left from before a checkpoint).
func TestLogStopsAtTornOrStaleRecords(t *testing.T) {
	put := func(i int) []op {
		return []op{{kind: opPut, bucket: []byte("organizations"), key: []byte(fmt.Sprint("k", i)), val: []byte("v")}}
	}
	for _, tc := range []struct {
		name   string
		damage func(w *wal, ends []int64)
		want   int
	}{
		{"intact", func(*wal, []int64) {}, 3},
		{"last record torn", func(w *wal, ends []int64) { w.f.WriteAt([]byte{0xff}, ends[2]-1) }, 2},
		{"middle record torn", func(w *wal, ends []int64) { w.f.WriteAt([]byte{0xff}, ends[1]-1) }, 1},
		{"header zeroed", func(w *wal, ends []int64) { w.f.WriteAt(make([]byte, 8), ends[0]) }, 1},
		{"stale records after a restart", func(w *wal, ends []int64) {
			w.restart(8)
			w.append(put(9))
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := openWAL(filepath.Join(t.TempDir(), "x.log"))
			if err != nil {
				t.Fatal(err)
			}
			defer w.close()
			w.restart(7)
			var ends []int64
			for i := range 3 {
				if err := w.append(put(i)); err != nil {
					t.Fatal(err)
				}
				ends = append(ends, w.off)
			}
			tc.damage(w, ends)
			recs, end, err := w.records(7)
			if err != nil || len(recs) != tc.want {
				t.Fatalf("records = %d, %v; want %d", len(recs), err, tc.want)
			}
			if tc.want > 0 && end != ends[tc.want-1] {
				t.Errorf("end = %d, want %d", end, ends[tc.want-1])
			}
			for i, p := range recs {
				ops, err := decodeOps(p)
				if err != nil || len(ops) != 1 || string(ops[0].key) != fmt.Sprint("k", i) {
					t.Errorf("record %d = %v, %v", i, ops, err)
				}
			}
		})
	}
}

// TestReplaysSingleLogOfEarlierRelease: a store written before there were
// two log files keeps every epoch's records in exchange.db.log, odd ones
// too; they are replayed.
func TestReplaysSingleLogOfEarlierRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exchange.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// What the earlier release leaves after a crash: the file at an odd
	// epoch, and that epoch's records in the one log file.
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(btx *bbolt.Tx) error {
		return btx.Bucket(bStore).Put(keyEpoch, binary.BigEndian.AppendUint64(nil, 41))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	os.Remove(path + ".log.1")
	w, err := openWAL(path + ".log")
	if err != nil {
		t.Fatal(err)
	}
	w.restart(41)
	if err := w.append([]op{{kind: opPut, bucket: []byte("organizations"), key: []byte("k"), val: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	w.close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(t, s, map[string]string{"k": "v"}, 0, rand.New(rand.NewPCG(1, 2)))
}
