package exchangetest

import (
	"context"

	"github.com/social-prescribing/exchange/server/storage"
	"github.com/social-prescribing/exchange/server/storage/bolt"
)

// BoltStore is the exchange's Store over a bbolt engine, with the
// engine's own figures beside it.
type BoltStore struct {
	storage.Store
	Engine *bolt.Engine
}

// OpenBolt opens the bbolt engine at path and the exchange's Store over
// it; closing the Store closes the engine.
func OpenBolt(path string, opt bolt.Options) (*BoltStore, error) {
	e, err := bolt.Open(path, opt)
	if err != nil {
		return nil, err
	}
	s, err := storage.Open(context.Background(), e)
	if err != nil {
		e.Close()
		return nil, err
	}
	return &BoltStore{Store: s, Engine: e}, nil
}

// Path returns the file the store is in.
func (s *BoltStore) Path() string { return s.Engine.Path() }

// Size is the size of the store in bytes: the file and its log.
func (s *BoltStore) Size() int64 { return s.Engine.Size() }

// Err returns why the store stopped for good, or nil while it serves.
func (s *BoltStore) Err() error { return s.Engine.Err() }
