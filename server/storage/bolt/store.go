package bolt

import (
	"context"

	"github.com/social-prescribing/exchange/server/storage"
)

// Store is the exchange's Store over a bbolt engine, with the engine's
// own figures beside it.
type Store struct {
	storage.Store
	Engine *Engine
}

// OpenStore opens the engine at path (Open) and the exchange's Store over
// it; closing the Store closes the engine.
func OpenStore(path string, opt Options) (*Store, error) {
	e, err := Open(path, opt)
	if err != nil {
		return nil, err
	}
	s, err := storage.Open(context.Background(), e)
	if err != nil {
		e.Close()
		return nil, err
	}
	return &Store{Store: s, Engine: e}, nil
}

// Path returns the file the store is in.
func (s *Store) Path() string { return s.Engine.Path() }

// Size is the size of the store in bytes: the file and its log.
func (s *Store) Size() int64 { return s.Engine.Size() }

// Err returns why the store stopped for good, or nil while it serves.
func (s *Store) Err() error { return s.Engine.Err() }
