package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/api"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage/etcd"
	"github.com/social-prescribing/exchange/server/storage/etcd/etcdtest"
	"github.com/social-prescribing/exchange/server/storage/kv"
	"github.com/social-prescribing/exchange/tools/loadtest/workload"
)

// quiet keeps the call log out of a benchmark's figures.
func quiet(b *testing.B) {
	old := slog.Default()
	slog.SetDefault(slog.New(slog.DiscardHandler))
	b.Cleanup(func() { slog.SetDefault(old) })
}

// footprintReferrals is how many realistic referrals (each with its own
// consent, as the load test sends them) the footprint stores.
const footprintReferrals = 1000

// fill stores n realistic referrals, each after its consent, through the
// API.
// evaluation adds consent for evaluation, as most people give (the load
// command's consents too), so that each referral counts in reports.
func evaluation(c *pb.Consent) {
	c.Purposes = append(c.Purposes, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION)
}

func fill(b *testing.B, x *exchangetest.Exchange, n int) {
	b.Helper()
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	svc := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				c := x.ConsentFor("practice", workload.NHSNumber(i), evaluation)
				_, err := pb.NewReferralServiceClient(x.Conn).CreateReferral(x.As("practice"),
					&pb.CreateReferralRequest{RequestId: fmt.Sprint("fill-", i), Referral: workload.Referral(i, svc, c.Name)})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkFootprint stores footprintReferrals realistic referrals with
// their consents, events, audit entries and stored answers on each engine
// and reports the bytes each takes per referral; on etcd also the keys per
// referral, and the operations and bytes of one CreateReferral's
// transaction (what etcd's benchmark txn-put is given to compare with).
//
//	go test ./server -run '^$' -bench Footprint -benchtime 1x
func BenchmarkFootprint(b *testing.B) {
	quiet(b)
	b.Run("bbolt", func(b *testing.B) {
		for range b.N {
			path := filepath.Join(b.TempDir(), "exchange.db")
			x := exchangetest.StartAt(b, path, api.Options{})
			fill(b, x, footprintReferrals)
			x.Restart() // a checkpoint and an empty log: the file alone
			b.ReportMetric(float64(x.Engine.Size())/footprintReferrals, "bytes/referral")
		}
	})
	b.Run("etcd", func(b *testing.B) {
		for range b.N {
			cluster := etcdtest.Start(b, 1)
			var mu sync.Mutex
			var last [2]int
			open := func() (kv.Engine, error) {
				return etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/footprint/",
					OnCommit: func(ops, bytes int, _ time.Duration, _ int, _ error) {
						mu.Lock()
						last = [2]int{ops, bytes}
						mu.Unlock()
					}})
			}
			x := exchangetest.StartOn(b, open, api.Options{})
			fill(b, x, footprintReferrals)
			// One more, alone, for the size of its transaction.
			c := x.ConsentFor("practice", workload.NHSNumber(footprintReferrals), evaluation)
			if _, err := pb.NewReferralServiceClient(x.Conn).CreateReferral(x.As("practice"), &pb.CreateReferralRequest{
				RequestId: "one", Referral: workload.Referral(footprintReferrals, "organizations/group/services/walks", c.Name)}); err != nil {
				b.Fatal(err)
			}
			mu.Lock()
			b.ReportMetric(float64(last[0]), "ops/CreateReferral")
			b.ReportMetric(float64(last[1]), "bytes/CreateReferral")
			mu.Unlock()
			cli := cluster.Client()
			ctx := context.Background()
			resp, err := cli.Get(ctx, "/footprint/", clientv3.WithPrefix())
			if err != nil {
				b.Fatal(err)
			}
			logical := 0
			for _, p := range resp.Kvs {
				logical += len(p.Key) + len(p.Value)
			}
			n := float64(footprintReferrals + 1)
			b.ReportMetric(float64(len(resp.Kvs))/n, "keys/referral")
			b.ReportMetric(float64(logical)/n, "kv-bytes/referral")
			ep := cluster.Endpoints()[0]
			st, err := cli.Status(ctx, ep)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(st.DbSize)/n, "db-bytes/referral")
			// The history compacted away and the file defragmented, as the
			// operator's compaction and defragmentation leave it.
			if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
				b.Fatal(err)
			}
			if _, err := cli.Defragment(ctx, ep); err != nil {
				b.Fatal(err)
			}
			if st, err = cli.Status(ctx, ep); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(st.DbSize)/n, "compacted-db-bytes/referral")
		}
	})
}

// BenchmarkCreateReferralOnEtcd sends the load test's referral through one
// exchange on a one-member etcd cluster from 1, 16 and 64 goroutines, to
// one service (as the load command does: every referral moves that
// service's capacity counts, one key) and spread over 32 (as a region's
// referrals are), and reports the transactions run again for a conflict,
// per referral.
//
//	go test ./server -run '^$' -bench CreateReferralOnEtcd -benchtime 300x
func BenchmarkCreateReferralOnEtcd(b *testing.B) {
	quiet(b)
	cluster := etcdtest.Start(b, 1)
	var reruns atomic.Int64
	open := func() (kv.Engine, error) {
		return etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/create/",
			OnCommit: func(_, _ int, _ time.Duration, runs int, _ error) { reruns.Add(int64(runs - 1)) }})
	}
	x := exchangetest.StartOn(b, open, api.Options{Limits: api.Limits{}})
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	var svcs []string
	for i := range 32 {
		svcs = append(svcs, x.Service("group", fmt.Sprint("walks-", i), pb.Category_CATEGORY_PHYSICAL_ACTIVITY))
	}
	person := 0
	for _, c := range []struct{ services, clients int }{{1, 1}, {1, 16}, {1, 64}, {32, 16}, {32, 64}} {
		b.Run(fmt.Sprintf("services=%d/clients=%d", c.services, c.clients), func(b *testing.B) {
			clients := c.clients
			consents := make([]string, b.N)
			for i := range b.N {
				consents[i] = x.ConsentFor("practice", workload.NHSNumber(person+i), nil).Name
			}
			first := person
			person += b.N
			reruns.Store(0)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range clients {
				wg.Go(func() {
					for {
						i := int(next.Add(1)) - 1
						if i >= b.N {
							return
						}
						_, err := pb.NewReferralServiceClient(x.Conn).CreateReferral(x.As("practice"), &pb.CreateReferralRequest{
							RequestId: fmt.Sprint("c-", first+i), Referral: workload.Referral(first+i, svcs[i%c.services], consents[i])})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(reruns.Load())/float64(b.N), "reruns/referral")
		})
	}
}
