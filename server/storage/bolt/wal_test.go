package bolt

import (
	"fmt"
	"path/filepath"
	"testing"
)

// TestLogStopsAtTornOrStaleRecords: a replay reads the records of its epoch
// in order and stops at the first that is torn, zeroed, or of an earlier
// epoch (left from before a checkpoint).
func TestLogStopsAtTornOrStaleRecords(t *testing.T) {
	put := func(i int) []op {
		return []op{{kind: opPut, bucket: bOrgs, key: []byte(fmt.Sprint("k", i)), val: []byte("v")}}
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
