package main

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/social-prescribing/exchange/server/storage/etcd/etcdtest"
)

// etcdExchanges starts two exchanges over one three-member cluster, the
// first making the operator key; args go to both.
func etcdExchanges(t *testing.T, cluster *etcdtest.Cluster, args ...string) (bin string, dirs [2]string, start func(i int) *server) {
	t.Helper()
	bin, _ = binaries(t)
	dirs = [2]string{t.TempDir(), t.TempDir()}
	flags := append([]string{"--etcd-endpoints", strings.Join(cluster.Endpoints(), ","), "--etcd-prefix", "/failover/"}, args...)
	return bin, dirs, func(i int) *server { return startBinary(t, bin, dirs[i], flags...) }
}

func dial(t *testing.T, s *server) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDisableRetry())
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestFailoverOnEtcd runs two exchanges over a three-member etcd cluster
// under concurrent consents, referrals, acceptances and notes through
// both, and in each of ten rounds, at random moments, kills the etcd
// leader with SIGKILL and one exchange with SIGKILL, then starts both
// again. After each round, through either exchange: every acknowledged
// write is there; retrying each unanswered call with its request_id gives
// exactly one result; the event feed is 1..N with no duplicate and no gap,
// one REFERRAL_CREATED per referral; the capacity counts are exact.
func TestFailoverOnEtcd(t *testing.T) {
	cluster := etcdtest.Start(t, 3)
	_, dirs, start := etcdExchanges(t, cluster, "--rate-limit", "0", "--retention", "0")
	var xs [2]*server
	xs[0] = start(0)
	xs[1] = start(1)
	operator := operatorKey(t, dirs[0]+"/data")
	conn := dial(t, xs[0])
	keys, service := crashParties(t, conn, operator)
	conn.Close()

	w := &chains{keys: keys, service: service, referral: map[string]string{}}
	unanswered, leaders := 0, map[string]bool{}
	rounds := 10
	for round := range rounds {
		conns := []*grpc.ClientConn{dial(t, xs[0]), dial(t, xs[1])}
		ctx, stop := context.WithCancel(context.Background())
		wg := w.drive(ctx, round, conns, 8)
		time.Sleep(time.Duration(300+rand.IntN(600)) * time.Millisecond)
		leader := cluster.Leader(context.Background())
		if leader == nil {
			t.Fatalf("round %d: the cluster has no leader", round)
		}
		leaders[leader.Name()] = true
		leader.Kill()
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond)
		victim := round % 2
		xs[victim].cmd.Process.Signal(syscall.SIGKILL)
		xs[victim].cmd.Wait()
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		stop()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
		leader.Restart()
		xs[victim] = start(victim)

		conn := dial(t, xs[1-victim])
		retried := w.retry(t, round, conn)
		conn.Close()
		for _, x := range xs {
			conn := dial(t, x)
			verify(t, round, conn, keys, operator, w.all, w.checked, w.referral, service)
			conn.Close()
		}
		t.Logf("round %d: %d writes, %d of them unanswered and retried; killed etcd %s and exchange %d", round, len(w.all)-w.checked, retried, leader.Name(), victim)
		w.checked = len(w.all)
		unanswered += retried
	}
	if unanswered == 0 {
		t.Error("no call was in flight at any kill: the test did not test failover")
	}
	if len(w.all) < 10*rounds { // a floor the race detector on two cores clears: it says the kills fell under load
		t.Errorf("only %d writes in %d rounds: the test did not load the exchanges", len(w.all), rounds)
	}
}

// TestPartitionOnEtcd stops (SIGSTOP) the one member an exchange talks
// to, under a client writing through it; the client's calls there fail
// by their deadline and it retries each through the other exchange, which
// talks to the rest of the cluster. Once the member goes on, nothing is
// there twice: each create made once, the feed without a duplicate.
func TestPartitionOnEtcd(t *testing.T) {
	cluster := etcdtest.Start(t, 3)
	bin, _ := binaries(t)
	lonely, rest := cluster.Members[0], cluster.Members[1:]
	flags := []string{"--etcd-prefix", "/partition/", "--rate-limit", "0"}
	dirs := [2]string{t.TempDir(), t.TempDir()}
	a := startBinary(t, bin, dirs[0], append([]string{"--etcd-endpoints", lonely.Endpoint()}, flags...)...)
	b := startBinary(t, bin, dirs[1], append([]string{"--etcd-endpoints", rest[0].Endpoint() + "," + rest[1].Endpoint()}, flags...)...)
	operator := operatorKey(t, dirs[0]+"/data")
	ca, cb := dial(t, a), dial(t, b)
	defer ca.Close()
	defer cb.Close()
	keys, service := crashParties(t, ca, operator)
	w := &chains{keys: keys, service: service, referral: map[string]string{}}

	// One client: each chain's calls through a, each failure retried
	// through b with its request_id.
	stopped, retriedWhileStopped := false, 0
	for i := range 24 {
		if i == 8 {
			lonely.Pause()
			stopped = true
		}
		if i == 16 {
			lonely.Resume()
			stopped = false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		wg := w.drive(ctx, i, []*grpc.ClientConn{ca}, 1)
		time.Sleep(300 * time.Millisecond)
		cancel()
		wg.Wait()
		if n := w.retry(t, i, cb); stopped {
			retriedWhileStopped += n
		}
		w.checked = len(w.all)
	}
	if retriedWhileStopped == 0 {
		t.Error("no call through the stopped member was retried through the other exchange: the test did not test a partition")
	}
	t.Logf("%d writes, %d retried through the other exchange while the member was stopped", len(w.all), retriedWhileStopped)
	lonely.Resume()
	for _, c := range []*grpc.ClientConn{ca, cb} {
		verify(t, 0, c, keys, operator, w.all, 0, w.referral, service)
	}
	// Every acknowledged answer is the answer a retry gets now.
	for _, o := range w.all {
		got, err := o.call(context.Background(), ca)
		if err != nil || !proto.Equal(got, o.resp) {
			t.Fatalf("%s %v: now answers %v (%v), first %v", o.kind, o.req, got, err, o.resp)
		}
	}
}

// TestSweepsMoveAndHealthOnEtcd: of two exchanges over one cluster, one
// runs the sweeps (an etcd election); when it is killed with SIGKILL the
// other takes them over once the dead one's lease lapses. With two of the
// three members killed the survivor's health service says NOT_SERVING,
// and SERVING again once they are back.
func TestSweepsMoveAndHealthOnEtcd(t *testing.T) {
	cluster := etcdtest.Start(t, 3)
	bin, dirs, start := etcdExchanges(t, cluster)
	a := start(0)
	b := start(1)
	leads := func(dir string) bool {
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		return strings.Contains(string(log), "this exchange runs the cluster's sweeps")
	}
	waitFor := func(what string, within time.Duration, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(within); !ok(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v", what, within)
			}
		}
	}
	waitFor("one exchange leads the sweeps", 10*time.Second, func() bool { return leads(dirs[0]) != leads(dirs[1]) })
	leader, other, otherDir := a, b, dirs[1]
	if leads(dirs[1]) {
		leader, other, otherDir = b, a, dirs[0]
	}
	leader.cmd.Process.Signal(syscall.SIGKILL)
	leader.cmd.Wait()
	waitFor("the other exchange takes the sweeps over", 2*leaseSeconds*time.Second, func() bool { return leads(otherDir) })

	healthy := func() bool {
		return exec.Command(bin, "healthcheck", "--grpc-addr", other.grpc, "--timeout", "2s").Run() == nil
	}
	if !healthy() {
		t.Fatal("the exchange is not SERVING with its cluster whole")
	}
	cluster.Members[1].Kill()
	cluster.Members[2].Kill()
	waitFor("NOT_SERVING without a quorum", 15*time.Second, func() bool { return !healthy() })
	cluster.Members[1].Restart()
	cluster.Members[2].Restart()
	waitFor("SERVING again with the quorum back", 30*time.Second, healthy)
}
