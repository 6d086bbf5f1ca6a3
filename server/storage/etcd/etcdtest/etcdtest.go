// Package etcdtest starts etcd clusters for tests: each member a child
// process of the test binary itself (running etcd's embed package), on
// loopback ports, with its data in the test's temporary directory, so that
// a test can kill a member with SIGKILL, stop it with SIGSTOP and start it
// again. A member stops when its test ends, and by itself if the test
// process dies (it watches its stdin, a pipe from the test).
//
// A package using it runs Main from its TestMain.
package etcdtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

const memberEnv = "EXCHANGE_ETCDTEST_MEMBER"

// Main runs the tests, or, in a child the tests started, an etcd member.
func Main(m *testing.M) {
	MaybeMember()
	os.Exit(m.Run())
}

// MaybeMember, in a child the tests started, runs an etcd member and
// exits; otherwise it returns at once. A TestMain of its own calls it
// first.
func MaybeMember() {
	if cfg := os.Getenv(memberEnv); cfg != "" {
		os.Exit(runMember(cfg))
	}
}

// memberConfig is what a child needs to run one member.
type memberConfig struct {
	Name, Dir, Peer, Client, Cluster, State string
}

func runMember(js string) int {
	var mc memberConfig
	if err := json.Unmarshal([]byte(js), &mc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = mc.Name, mc.Dir
	peer, _ := url.Parse(mc.Peer)
	client, _ := url.Parse(mc.Client)
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.InitialCluster, cfg.ClusterState, cfg.InitialClusterToken = mc.Cluster, mc.State, "exchange-test"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Elections within a test's patience (etcd's defaults: 100 ms beats, 1 s election).
	cfg.TickMs, cfg.ElectionMs = 50, 500
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd member not ready in 60s")
		return 2
	}
	fmt.Println("ready")
	gone := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(gone) }() // the test went
	select {
	case <-gone:
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, err)
	}
	e.Close()
	return 0
}

// Cluster is a running etcd cluster.
type Cluster struct {
	t       testing.TB
	Members []*Member
}

// Member is one member's process.
type Member struct {
	t      testing.TB
	cfg    memberConfig
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{}
}

// Start starts a cluster of n members and waits until it answers; it
// stops when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var cluster []string
	for i := range n {
		m := &Member{t: t, cfg: memberConfig{Name: fmt.Sprintf("m%d", i), Dir: filepath.Join(t.TempDir(), "etcd"),
			Peer: "http://" + freePort(t), Client: "http://" + freePort(t), State: "new"}}
		cluster = append(cluster, m.cfg.Name+"="+m.cfg.Peer)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.cfg.Cluster = strings.Join(cluster, ",")
	}
	errs := make(chan error, n)
	for _, m := range c.Members {
		go func() { errs <- m.start() }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.Stop)
	return c
}

// freePort returns a loopback address no one listens on now.
func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (m *Member) start() error {
	js, _ := json.Marshal(m.cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), memberEnv+"="+string(js))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	m.cmd, m.stdin, m.exited = cmd, stdin, make(chan struct{})
	ready := make(chan bool, 1)
	go func() {
		buf := make([]byte, 16)
		n, _ := io.ReadAtLeast(out, buf, 5)
		ready <- strings.HasPrefix(string(buf[:n]), "ready")
		io.Copy(io.Discard, out)
	}()
	go func() { cmd.Wait(); close(m.exited) }()
	select {
	case ok := <-ready:
		if ok {
			return nil
		}
	case <-time.After(90 * time.Second):
	}
	cmd.Process.Kill()
	<-m.exited
	return fmt.Errorf("etcd member %s did not start: %s", m.cfg.Name, stderr.String())
}

// Endpoint is the member's client URL.
func (m *Member) Endpoint() string { return m.cfg.Client }

// Name is the member's name.
func (m *Member) Name() string { return m.cfg.Name }

// Kill kills the member with SIGKILL and waits for it to go.
func (m *Member) Kill() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
}

// Pause stops the member with SIGSTOP; Resume goes on with SIGCONT.
func (m *Member) Pause()  { m.cmd.Process.Signal(syscall.SIGSTOP) }
func (m *Member) Resume() { m.cmd.Process.Signal(syscall.SIGCONT) }

// Restart starts a killed member again on its data.
func (m *Member) Restart() {
	m.t.Helper()
	m.Kill()
	m.cfg.State = "existing"
	if err := m.start(); err != nil {
		m.t.Fatal(err)
	}
}

// Stop stops every member.
func (c *Cluster) Stop() {
	for _, m := range c.Members {
		if m.cmd != nil {
			m.cmd.Process.Signal(syscall.SIGCONT)
			m.stdin.Close()
		}
	}
	for _, m := range c.Members {
		if m.cmd != nil {
			select {
			case <-m.exited:
			case <-time.After(10 * time.Second):
				m.cmd.Process.Kill()
				<-m.exited
			}
			m.cmd = nil
		}
	}
}

// Endpoints are the client URLs of every member.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.Endpoint())
	}
	return out
}

// Client returns a client of the whole cluster, closed when the test ends.
func (c *Cluster) Client() *clientv3.Client {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// Leader returns the member that leads now.
func (c *Cluster) Leader(ctx context.Context) *Member {
	c.t.Helper()
	cli := c.Client()
	for _, m := range c.Members {
		if m.cmd == nil {
			continue
		}
		st, err := cli.Status(ctx, m.Endpoint())
		if err == nil && st.Header.MemberId == st.Leader {
			return m
		}
	}
	return nil
}
