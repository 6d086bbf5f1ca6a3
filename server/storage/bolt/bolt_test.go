package bolt_test

import (
	"path/filepath"
	"testing"

	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/bolt"
	"github.com/social-prescribing/exchange/server/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, dir string) storage.Store {
		s, err := bolt.Open(filepath.Join(dir, "exchange.db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
