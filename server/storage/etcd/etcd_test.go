package etcd_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/social-prescribing/exchange/server/storage/etcd"
	"github.com/social-prescribing/exchange/server/storage/etcd/etcdtest"
	"github.com/social-prescribing/exchange/server/storage/kv"
	"github.com/social-prescribing/exchange/server/storage/kv/kvtest"
	"github.com/social-prescribing/exchange/server/storage/storagetest"
)

func TestMain(m *testing.M) { etcdtest.Main(m) }

func TestEngine(t *testing.T) { kvtest.Run(t, engines(t)) }
func TestStore(t *testing.T)  { storagetest.Run(t, engines(t)) }

// engines opens engines on one three-member cluster, each store under a
// prefix of its own named by its directory.
func engines(t *testing.T) kvtest.Opener {
	c := etcdtest.Start(t, 3)
	prefixes := map[string]string{}
	var n atomic.Int64
	return func(t *testing.T, dir string) kv.Engine {
		p, ok := prefixes[dir]
		if !ok {
			p = fmt.Sprintf("/test%d/", n.Add(1))
			prefixes[dir] = p
		}
		e, err := etcd.Open(context.Background(), etcd.Options{Endpoints: c.Endpoints(), Prefix: p})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
}
