package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
	"github.com/social-prescribing/exchange/server/storage/etcd/etcdtest"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// server is the exchange binary running in dir.
type server struct {
	cmd        *exec.Cmd
	grpc, http string
}

// startBinary runs the exchange in dir with args and waits until it
// listens.
func startBinary(t *testing.T, bin, dir string, args ...string) *server {
	t.Helper()
	s := &server{grpc: freeAddr(t), http: freeAddr(t)}
	s.cmd = exec.Command(bin, append([]string{"--grpc-addr", s.grpc, "--http-addr", s.http}, args...)...)
	s.cmd.Dir = dir
	log, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.cmd.Process.Kill(); s.cmd.Wait() })
	// Long enough for --demo's year of referrals on etcd under the race
	// detector; it returns as soon as the exchange listens.
	for deadline := time.Now().Add(3 * time.Minute); ; {
		if c, err := net.Dial("tcp", s.grpc); err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("the exchange did not start:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// endpoints are where a walk-through reaches the exchange.
type endpoints struct{ grpc, http string }

// runWalkthroughs runs the README's blocks against the exchanges start
// starts (the addresses for each block), twice, killing them with kill
// after each run.
func runWalkthroughs(t *testing.T, bash, dir string, blocks []string, start func() [3]endpoints, kill func()) {
	t.Helper()
	at := start()
	wants := [][]string{
		{"REFERRAL_STATE_IN_PROGRESS", "UPTAKE_STATUS_FIRST_SESSION_ATTENDED", "INSTRUMENT_WEMWBS", "REFERRAL_VIEW_WITHOUT_PERSON", "EVENT_TYPE_REFERRAL_CREATED"},
		{"Bob", "REFERRAL_STATE_ACCEPTED", "UPTAKE_STATUS_FIRST_SESSION_ATTENDED", `"total":41`, "EVENT_TYPE_FEEDBACK_POSTED", "lastSequence"},
		{"organizations/community-money-advice", "organizations/hillside-walkers/services/health-walks", "Bob Evans",
			"FIRST_SESSION_ATTENDED", "WEMWBS BASELINE total 41", "max:         12", "ORGANIZATION_CHANGED",
			"CHANGE FROM BASELINE TO FOLLOW-UP", "UCLA3", "ListReferrals", "wrote exchange-backup.db", "organizations: 3 created", "services: 3 created"},
	}
	// The second time, on the same directory after a kill -9: every change
	// is answered again from its request id, so no new event is shown
	// (""), and the import finds everything there.
	again := map[string]string{"EVENT_TYPE_REFERRAL_CREATED": "", "EVENT_TYPE_FEEDBACK_POSTED": "",
		"organizations: 3 created": "organizations: 0 created, 0 updated, 3 unchanged",
		"services: 3 created":      "services: 0 created, 0 updated, 3 unchanged"}
	for round := range 2 {
		for i, block := range blocks {
			script := strings.NewReplacer("127.0.0.1:50051", at[i].grpc, "127.0.0.1:8080", at[i].http).Replace(block)
			cmd := exec.Command(bash, "-euo", "pipefail", "-c", script)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "EXCHANGE_CONFIG=/dev/null")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("walk-through %d, run %d, failed: %v\n%s", i+1, round+1, err, out)
			}
			for _, want := range wants[i] {
				if instead, ok := again[want]; round == 1 && ok {
					if strings.Contains(string(out), want) || instead != "" && !strings.Contains(string(out), instead) {
						t.Errorf("walk-through %d run again shows %s, or not %q:\n%s", i+1, want, instead, out)
					}
				} else if !strings.Contains(string(out), want) {
					t.Errorf("walk-through %d, run %d, output lacks %s:\n%s", i+1, round+1, want, out)
				}
			}
		}
		kill()
		if round == 0 {
			at = start()
		}
	}

}

// TestReadmeWalkthrough runs the README's walk-throughs (every ```sh block:
// grpcurl for the GP and link workers, curl for a community group, the
// exchangectl tour) as written against the built server with --demo, twice
// on the same directory, killing the server with SIGKILL after each run,
// and checks that everything they were told was written is there once.
func TestReadmeWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	bash, dir, bin, blocks := prepareWalkthroughs(t)
	// One exchange on its bbolt file serves every walk-through.
	var s *server
	start := func() [3]endpoints {
		s = startBinary(t, bin, dir, "--demo")
		e := endpoints{s.grpc, s.http}
		return [3]endpoints{e, e, e}
	}
	kill := func() { s.cmd.Process.Signal(syscall.SIGKILL); s.cmd.Wait() }
	runWalkthroughs(t, bash, dir, blocks, start, kill)
	start()
	checkAfterWalkthroughs(t, filepath.Join(dir, "data", "demo-credentials.json"), s.grpc)
	// A clean stop: SIGTERM drains and exits 0.
	s.cmd.Process.Signal(syscall.SIGTERM)
	if err := s.cmd.Wait(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
}

// prepareWalkthroughs reads the README's walk-throughs and makes the
// directory they run in.
func prepareWalkthroughs(t *testing.T) (bash, dir, bin string, blocks []string) {
	t.Helper()
	var ctl string
	exchangetest.Need(t, "grpcurl")
	exchangetest.Need(t, "curl")
	exchangetest.Need(t, "jq")
	bash = exchangetest.Need(t, "bash")
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for rest := string(readme); ; {
		_, block, ok := strings.Cut(rest, "\n```sh\n")
		if !ok {
			break
		}
		block, rest, _ = strings.Cut(block, "\n```\n")
		blocks = append(blocks, block)
	}
	if len(blocks) != 3 {
		t.Fatalf("README.md has %d ```sh blocks, want the grpcurl and curl walk-throughs and the exchangectl tour", len(blocks))
	}

	dir = t.TempDir()
	bin, ctl = binaries(t)
	for _, b := range []string{bin, ctl} { // the scripts call them by name
		if err := os.Symlink(b, filepath.Join(dir, filepath.Base(b))); err != nil {
			t.Fatal(err)
		}
	}
	// The tour imports the sample directory by its path in the repository.
	sample, err := filepath.Abs("../client/hsds/testdata/sample")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "client/hsds/testdata"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sample, filepath.Join(dir, "client/hsds/testdata/sample")); err != nil {
		t.Fatal(err)
	}
	return bash, dir, bin, blocks
}

// checkAfterWalkthroughs checks, through the exchange at addr, that what
// the walk-throughs were told was written is there once.
func checkAfterWalkthroughs(t *testing.T, credentials, addr string) {
	t.Helper()
	// After each run a kill -9 and a restart on the same directory: both
	// referrals are there once, and --demo does not create the
	// organisations again.
	var creds []struct {
		Organization string `json:"organization"`
		APIKey       string `json:"api_key"`
	}
	b, err := os.ReadFile(credentials)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &creds); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+creds[1].APIKey) // the link workers
	// Every page: --demo also wrote a year of synthetic referrals.
	all := &pb.ListReferralsResponse{}
	for token := ""; ; {
		page, err := pb.NewReferralServiceClient(conn).ListReferrals(ctx, &pb.ListReferralsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		all.Referrals = append(all.Referrals, page.Referrals...)
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	var ada, demo []*pb.Referral
	var onward *pb.Referral
	for _, r := range all.Referrals {
		if n := r.Person.GetNhsNumber(); n == "9990000018" || n == "9990000026" {
			demo = append(demo, r)
		}
		if r.Person.GetNhsNumber() == "9434765919" {
			ada = append(ada, r)
			if r.ParentReferral != "" {
				onward = r
			}
		}
	}
	if len(ada) != 2 || onward == nil || len(demo) != 2 {
		t.Fatalf("after kill -9 the link workers list %d referrals, Ada's %v and the demo's %v; want Ada's two and Bob's and Carys's", len(all.Referrals), ada, demo)
	}
	f, err := pb.NewFeedbackServiceClient(conn).ListFeedback(ctx, &pb.ListFeedbackRequest{Parent: onward.Name})
	if err != nil || len(f.Feedback) != 2 {
		t.Errorf("feedback on the onward referral after kill -9 = %v, %v; want uptake and outcome", f, err)
	}
	// What the community group did over REST survived too.
	for _, r := range all.Referrals {
		if r.Person.GetGivenName() == "Bob" {
			f, err := pb.NewFeedbackServiceClient(conn).ListFeedback(ctx, &pb.ListFeedbackRequest{Parent: r.Name})
			if r.State != pb.ReferralState_REFERRAL_STATE_ACCEPTED || err != nil || len(f.Feedback) != 2 {
				t.Errorf("Bob's referral after kill -9 = %v with %v, %v", r.State, f, err)
			}
		}
	}
	orgs, err := pb.NewDirectoryServiceClient(conn).ListOrganizations(ctx, &pb.ListOrganizationsRequest{})
	if err != nil || len(orgs.Organizations) != 9 {
		t.Errorf("organisations after a second --demo start = %d, %v; want 5 demo, the operator and the 3 imported once", len(orgs.GetOrganizations()), err)
	}
}

// TestReadmeWalkthroughOnEtcd runs the same walk-throughs against two
// exchanges over one three-member etcd cluster: the GP's and link
// workers' grpcurl through the first, the community group's curl and the
// exchangectl tour (with the event feed) through the second, which reads
// what the first wrote. Both are killed with SIGKILL after each run.
func TestReadmeWalkthroughOnEtcd(t *testing.T) {
	bash, dir, bin, blocks := prepareWalkthroughs(t)
	cluster := etcdtest.Start(t, 3)
	flags := []string{"--etcd-endpoints", strings.Join(cluster.Endpoints(), ","), "--etcd-prefix", "/walkthrough/"}
	other := t.TempDir()
	var first, second *server
	start := func() [3]endpoints {
		first = startBinary(t, bin, dir, append([]string{"--demo"}, flags...)...)
		second = startBinary(t, bin, other, flags...)
		return [3]endpoints{{first.grpc, first.http}, {second.grpc, second.http}, {second.grpc, second.http}}
	}
	kill := func() {
		for _, s := range []*server{first, second} {
			s.cmd.Process.Signal(syscall.SIGKILL)
			s.cmd.Wait()
		}
	}
	runWalkthroughs(t, bash, dir, blocks, start, kill)
	start()
	checkAfterWalkthroughs(t, filepath.Join(dir, "data", "demo-credentials.json"), second.grpc)
	checkAfterWalkthroughs(t, filepath.Join(dir, "data", "demo-credentials.json"), first.grpc)
}
