package bolt_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/bolt"
)

// damagedCopies writes a store of some thousands of pages, then copies of
// it damaged as disks and people damage files: 4 KiB of a page in use in
// the middle of the file inverted, the file cut to half and to its first
// pages, and 4 KiB of zeros over the first page in use. It
// returns the copies' paths by what was done.
func damagedCopies(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "exchange.db")
	s, err := exchangetest.OpenBolt(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := s.Update(context.Background(), func(tx storage.WriteTx) error {
			for j := range 200 {
				if err := tx.PutIdempotency("organizations/gp", fmt.Sprint(i, "-", j), &storage.Idempotency{
					Method: "/m", RequestHash: []byte{1}, Response: []byte(strings.Repeat("answer ", 40))}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The page in use nearest the middle of the file.
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	size := db.Info().PageSize
	middle, first, branch := -1, -1, -1
	db.View(func(tx *bbolt.Tx) error {
		var used []int
		for id := 2; id < len(good)/size; id++ {
			if p, err := tx.Page(id); err == nil && p != nil && (p.Type == "leaf" || p.Type == "branch") {
				used = append(used, id)
				if p.Type == "branch" && branch < 0 {
					branch = id
				}
			}
		}
		if len(used) > 100 {
			middle, first = used[len(used)/2], used[0]
		}
		return nil
	})
	db.Close()
	if middle < 0 {
		t.Fatal("too few pages in use")
	}
	out := map[string]string{}
	write := func(name string, b []byte) {
		p := filepath.Join(dir, name+".db")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		out[name] = p
	}
	flipped := append([]byte(nil), good...)
	for i := middle * size; i < middle*size+4096; i++ {
		flipped[i] ^= 0xff
	}
	write("4 KiB inverted in the middle", flipped)
	write("cut to half", good[:len(good)/2])
	write("cut to three pages", good[:3*size])
	zeroed := append([]byte(nil), good...)
	copy(zeroed[first*size:first*size+4096], make([]byte, 4096))
	write("4 KiB zeroed over the first page in use", zeroed)
	if branch < 0 {
		t.Fatal("no branch page")
	}
	// A branch page's first child page id, which follows the 16-byte page
	// header and the element's position and key size, pointed far outside
	// the file: bbolt's own check would read it in a goroutine of its own.
	badChild := append([]byte(nil), good...)
	binary.LittleEndian.PutUint64(badChild[branch*size+16+8:], 1<<40)
	write("a child page id outside the file", badChild)
	return out
}

// TestRefusesDamagedFiles: a damaged file is refused when the store opens,
// with the message that says to restore it from a backup, never a panic or
// a store that serves and fails later (issue 25, defect 4).
func TestRefusesDamagedFiles(t *testing.T) {
	for name, path := range damagedCopies(t) {
		t.Run(name, func(t *testing.T) {
			s, err := exchangetest.OpenBolt(path, bolt.Options{})
			if err == nil {
				s.Close()
				t.Fatal("a damaged file opened")
			}
			if !strings.Contains(err.Error(), "restore it from a backup") {
				t.Fatalf("error = %v; want it to say to restore from a backup", err)
			}
		})
	}
}
