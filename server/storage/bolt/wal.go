package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// The log holds every change acknowledged since the last checkpoint, so
// that an acknowledgement costs one small append and one fdatasync rather
// than a bbolt commit of every page the change touched.
//
// It is two files next to the store, <store>.log for even epochs and
// <store>.log.1 for odd ones; each is written from its start again when
// its next epoch begins. A record is
//
//	length(4) crc32c(4) | epoch(8) op...
//
// where an op is kind(1), the bucket name (1-byte length), and for a put
// the key and value, for a delete the key (each with a uvarint length),
// for a sequence the 8-byte value. Numbers are big-endian.
//
// The epoch ties records to a checkpoint. The writer writes epoch e while
// the file holds e or e-1: a checkpoint of epoch e's changes starts with
// the writer moving to e+1 in the other file, and commits e+1 as the
// file's epoch with the changes. So a file of epoch e replays the records
// of e, then those of e+1. Reading stops at the first record that is
// torn, is of another epoch (left from before), or is zeros (space
// allocated ahead).
type wal struct {
	f     *os.File
	sync  func(*os.File) error // fdatasync; tests replace it
	epoch uint64
	off   int64 // where the next record goes
	size  int64 // bytes allocated (zero-filled) ahead of off
	buf   []byte
}

// growBy is how much the log grows at a time, zero-filled and synced once,
// so that an append rewrites allocated blocks and its fdatasync has no
// file size to flush.
const growBy = 1 << 20

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func openWAL(path string) (*wal, error) {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// A new file's name must be durable before its records are.
		if err := syncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, err
		}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &wal{f: f, sync: fdatasync, size: st.Size()}, nil
}

// records returns the payloads (after the epoch) of the records of epoch,
// in order, and where they end.
func (w *wal) records(epoch uint64) ([][]byte, int64, error) {
	data := make([]byte, w.size)
	if _, err := w.f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("read log: %w", err)
	}
	var out [][]byte
	off := int64(0)
	for off+8 <= int64(len(data)) {
		n := int64(binary.BigEndian.Uint32(data[off:]))
		sum := binary.BigEndian.Uint32(data[off+4:])
		if n < 8 || off+8+n > int64(len(data)) {
			break
		}
		p := data[off+8 : off+8+n]
		if crc32.Checksum(p, crcTable) != sum || binary.BigEndian.Uint64(p) != epoch {
			break
		}
		out = append(out, p[8:])
		off += 8 + n
	}
	return out, off, nil
}

// restart makes the next record the first of epoch.
func (w *wal) restart(epoch uint64) { w.epoch, w.off = epoch, 0 }

// errSync marks a failed fdatasync or fsync of the log: whether what was
// written is on the disk is no longer known, so the store stops
// (storage.ErrStopped).
var errSync = errors.New("fdatasync failed")

// append writes the changes as one record and syncs it. An error that is
// not errSync means nothing was kept: a write the file system refused,
// whose record was then zeroed and the zeros synced, so that a replay
// stops there. With errSync, the record may or may not be kept.
func (w *wal) append(ops []op) error {
	w.buf = encodeOps(w.buf[:0], w.epoch, ops)
	n := int64(len(w.buf))
	if w.off+n > w.size {
		if err := w.grow(w.off + n); err != nil {
			return err
		}
	}
	if _, err := w.f.WriteAt(w.buf, w.off); err != nil {
		if _, zerr := w.f.WriteAt(make([]byte, 8), w.off); zerr != nil {
			return fmt.Errorf("%w: %w (and zeroing the record: %w)", errSync, err, zerr)
		} else if zerr := w.sync(w.f); zerr != nil {
			return fmt.Errorf("%w: zeroing the record after %w: %w", errSync, err, zerr)
		}
		return err
	}
	if err := w.sync(w.f); err != nil {
		// Best effort, so that a replay is likely to stop there; the
		// store stops whatever this does.
		if _, zerr := w.f.WriteAt(make([]byte, 8), w.off); zerr == nil {
			w.sync(w.f)
		}
		return fmt.Errorf("%w: %w", errSync, err)
	}
	w.off += n
	return nil
}

// grow zero-fills the log up to at least end.
func (w *wal) grow(end int64) error {
	size := w.size
	zeros := make([]byte, growBy)
	for size < end {
		if _, err := w.f.WriteAt(zeros, size); err != nil {
			w.f.Truncate(w.size)
			return fmt.Errorf("grow log: %w", err)
		}
		size += growBy
	}
	if err := w.f.Sync(); err != nil {
		w.f.Truncate(w.size)
		return fmt.Errorf("%w: grow log: %w", errSync, err)
	}
	w.size = size
	return nil
}

func (w *wal) close() error { return w.f.Close() }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func encodeOps(b []byte, epoch uint64, ops []op) []byte {
	b = append(b, make([]byte, 16)...)
	binary.BigEndian.PutUint64(b[8:], epoch)
	for _, o := range ops {
		b = append(b, byte(o.kind), byte(len(o.bucket)))
		b = append(b, o.bucket...)
		switch o.kind {
		case opPut:
			b = binary.AppendUvarint(b, uint64(len(o.key)))
			b = append(b, o.key...)
			b = binary.AppendUvarint(b, uint64(len(o.val)))
			b = append(b, o.val...)
		case opDelete:
			b = binary.AppendUvarint(b, uint64(len(o.key)))
			b = append(b, o.key...)
		case opSequence:
			b = binary.BigEndian.AppendUint64(b, o.seq)
		}
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-8))
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(b[8:], crcTable))
	return b
}

var errBadRecord = errors.New("log record does not decode")

func decodeOps(p []byte) ([]op, error) {
	var ops []op
	bytesOf := func() ([]byte, bool) {
		n, k := binary.Uvarint(p)
		if k <= 0 || uint64(len(p)-k) < n {
			return nil, false
		}
		v := p[k : k+int(n)]
		p = p[k+int(n):]
		return v, true
	}
	for len(p) > 0 {
		if len(p) < 2 || len(p) < 2+int(p[1]) {
			return nil, errBadRecord
		}
		o := op{kind: opKind(p[0]), bucket: p[2 : 2+int(p[1])]}
		p = p[2+int(p[1]):]
		ok := true
		switch o.kind {
		case opPut:
			if o.key, ok = bytesOf(); ok {
				o.val, ok = bytesOf()
			}
		case opDelete:
			o.key, ok = bytesOf()
		case opSequence:
			if ok = len(p) >= 8; ok {
				o.seq, p = binary.BigEndian.Uint64(p), p[8:]
			}
		default:
			ok = false
		}
		if !ok {
			return nil, errBadRecord
		}
		ops = append(ops, o)
	}
	return ops, nil
}
