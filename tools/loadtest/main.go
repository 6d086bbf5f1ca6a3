// Command loadtest measures a running exchange the way a Primary Care
// Network's GP systems load it: CreateReferral with a realistic referral
// (about 1.5 KB of protobuf, tools/loadtest/workload) from 1, 16 and 64
// concurrent clients, over gRPC and over REST, each client on its own
// connection, and reports throughput and p50/p99 latency. In the same run
// it measures the anchors: the gRPC ceiling and the durable-write floor
// served by the exchange built for measurement (go build -tags bench,
// --bench-addr), bbolt's own group commit with
// no gRPC, and, given etcd's benchmark tool, a single-node etcd put with
// the same value size and concurrency. Then it compares a lone client's
// CreateReferral with a lone client's durable-write floor in alternate
// short rounds (--lone-rounds), and 64 clients' CreateReferral over gRPC
// and REST with etcd put and the gRPC echo the same way (--rounds), and
// ends with the ratios docs/benchmarks.md sets as targets, each judged on
// the median of its rounds. Every run also reports its CPU per
// call: the server's (process_cpu_seconds_total on the exchange's or
// etcd's /metrics), the load generator's own, and how busy the machine
// was, so that a run on a machine whose cores are all busy shows where a
// call's time goes.
//
// Start the exchange with --rate-limit 0 (one organisation sends
// everything) and --bench-addr; scripts/bench.sh does all of it:
//
//	go run -tags bench ./server --data-dir /tmp/x --rate-limit 0 --bench-addr 127.0.0.1:50061 &
//	go run ./tools/loadtest --data-dir /tmp/x --bench-addr 127.0.0.1:50061
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/tools/loadtest/anchor"
	"github.com/social-prescribing/exchange/tools/loadtest/workload"
)

type options struct {
	grpcAddr, httpAddr, benchAddr, dataDir string
	etcdBenchmark, etcdEndpoint            string
	levels                                 []int
	transports                             []string
	requests                               map[int]int
	loneRounds, loneRequests               int
	rounds, roundRequests                  int
	out                                    string
	// label names what CreateReferral runs on ("on etcd, 2 processes").
	label string
	// txnOps and txnBytes, when set, make etcd's run txn-put of that many
	// keys and bytes a transaction (what one CreateReferral writes)
	// instead of put of one value.
	txnOps, txnBytes int
}

// result is one measured run.
type result struct {
	Target      string  `json:"target"`
	Clients     int     `json:"clients"`
	Requests    int     `json:"requests"`
	PerSecond   float64 `json:"per_second"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	Errors      int     `json:"errors"`
	HeapInUseMB float64 `json:"heap_in_use_mb,omitempty"`
	// CPU per call: the server's (the exchange's, for the anchors too,
	// as they run in its process; etcd's for etcd put), the load
	// generator's (this process, or etcd's benchmark tool), and how busy
	// the whole machine was meanwhile.
	ServerCPUUs    float64 `json:"server_cpu_us_per_call,omitempty"`
	LoadCPUUs      float64 `json:"load_cpu_us_per_call,omitempty"`
	MachineBusyPct float64 `json:"machine_busy_pct,omitempty"`
}

func main() {
	var o options
	fs := flag.NewFlagSet("loadtest", flag.ExitOnError)
	fs.StringVar(&o.grpcAddr, "grpc-addr", "127.0.0.1:50051", "the exchange's gRPC address; several, comma-separated (exchanges over one etcd cluster), share the clients in turn")
	fs.StringVar(&o.label, "label", "", "words after CreateReferral's target names in the results (what it runs on)")
	fs.IntVar(&o.txnOps, "etcd-txn-ops", 0, "with --etcd-benchmark: measure txn-put of this many keys a transaction instead of put")
	fs.IntVar(&o.txnBytes, "etcd-txn-bytes", 0, "with --etcd-txn-ops: the bytes of values a transaction writes, spread over its keys")
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "the exchange's HTTP address (REST and /metrics)")
	fs.StringVar(&o.benchAddr, "bench-addr", "", "the anchors' address (the server's --bench-addr); none measured when empty")
	fs.StringVar(&o.dataDir, "data-dir", "data", "the exchange's data directory: its operator-key sets up the organisations, and bbolt's own group commit is measured on the same disk")
	fs.StringVar(&o.etcdBenchmark, "etcd-benchmark", "", "etcd's tools/benchmark binary; etcd put is measured when given")
	fs.StringVar(&o.etcdEndpoint, "etcd-endpoint", "127.0.0.1:2379", "a running single-node etcd")
	levels := fs.String("clients", "1,16,64", "concurrent clients, each on its own connection")
	transports := fs.String("transports", "grpc,rest", "how CreateReferral is sent: grpc, rest or both")
	fs.IntVar(&o.loneRounds, "lone-rounds", 7, "rounds of the lone-client comparison: a lone CreateReferral run, then a lone fsynced Update RPC run, alternately (needs --bench-addr and 1 in --clients)")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds of the 64-client comparison: CreateReferral over gRPC and over REST, etcd put and the gRPC echo, in turn, each round half the requests of a 64-client run (needs --bench-addr, --etcd-benchmark and 64 in --clients)")
	fs.StringVar(&o.out, "json", "", "also write the results as JSON to this file")
	scale := fs.Float64("scale", 1, "multiply the number of requests per run (1: 1000 at 1 client, 4000 at 16, 8000 at 64)")
	fs.Parse(os.Args[1:])
	for _, t := range strings.Split(*transports, ",") {
		if t = strings.TrimSpace(t); t != "grpc" && t != "rest" {
			log.Fatalf("--transports %q: give grpc, rest or both", *transports)
		}
		o.transports = append(o.transports, t)
	}
	o.requests = map[int]int{}
	for _, f := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			log.Fatalf("--clients %q: give numbers", *levels)
		}
		o.levels = append(o.levels, n)
		base := 8000
		switch {
		case n == 1:
			base = 1000
		case n <= 16:
			base = 4000
		}
		o.requests[n] = max(50, int(*scale*float64(base)))
	}
	o.loneRequests = max(50, int(*scale*300))
	o.roundRequests = max(50, int(*scale*4000))
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

func run(o options) error {
	ctx := context.Background()
	key, err := os.ReadFile(filepath.Join(o.dataDir, "operator-key"))
	if err != nil {
		return fmt.Errorf("the operator key: %w", err)
	}
	setup, err := newSetup(ctx, strings.Split(o.grpcAddr, ",")[0], strings.TrimSpace(string(key)))
	if err != nil {
		return fmt.Errorf("setting up: %w", err)
	}
	payload, _ := proto.Marshal(&pb.CreateReferralRequest{RequestId: newID(), Referral: workload.Referral(1, setup.service, "consents/0123456789")})
	fmt.Printf("payload: a CreateReferralRequest of %d bytes of protobuf\n", len(payload))
	var results []result
	add := func(r result) {
		r.HeapInUseMB = heapInUse(o.httpAddr)
		results = append(results, r)
		fmt.Printf("  %-28s clients=%-3d %8.0f/s  p50 %7.2f ms  p99 %7.2f ms  errors %d  heap %.0f MB  cpu/call server %s load %.0f µs, machine %.0f%% busy\n",
			r.Target, r.Clients, r.PerSecond, r.P50Ms, r.P99Ms, r.Errors, r.HeapInUseMB, micros(r.ServerCPUUs), r.LoadCPUUs, r.MachineBusyPct)
	}
	for _, c := range o.levels {
		n := o.requests[c]
		for _, transport := range o.transports {
			people, err := setup.consents(ctx, n, c)
			if err != nil {
				return err
			}
			r, err := setup.createReferrals(ctx, transport, o, c, people)
			if err != nil {
				return err
			}
			add(r)
		}
		if o.benchAddr != "" {
			for _, m := range []string{anchor.EchoMethod, anchor.WriteMethod} {
				r, err := anchorRun(ctx, o.benchAddr, metricsURL(o.httpAddr), m, payload, c, n)
				if err != nil {
					return err
				}
				add(r)
			}
			r, err := groupCommitRun(o.dataDir, payload, c, n)
			if err != nil {
				return err
			}
			add(r)
		}
		if o.etcdBenchmark != "" {
			r, err := etcdRun(o, c, n, len(payload))
			if err != nil {
				return err
			}
			add(r)
		}
	}
	var lone []loneRound
	if o.benchAddr != "" && slices.Contains(o.levels, 1) && slices.Contains(o.transports, "grpc") && o.loneRounds > 0 {
		if lone, err = setup.loneRounds(ctx, o, payload); err != nil {
			return err
		}
	}
	var rounds []round
	if o.benchAddr != "" && o.etcdBenchmark != "" && slices.Contains(o.levels, 64) && len(o.transports) == 2 && o.rounds > 0 {
		if rounds, err = setup.rounds(ctx, o, payload); err != nil {
			return err
		}
	}
	bytesPerReferral := storeBytesPerReferral(o.httpAddr)
	report(os.Stdout, results, lone, rounds, bytesPerReferral)
	if o.out != "" {
		b, _ := json.MarshalIndent(map[string]any{"results": results, "lone_rounds": lone, "rounds_64": rounds, "store_bytes_per_referral": bytesPerReferral}, "", "  ")
		return os.WriteFile(o.out, b, 0o644)
	}
	return nil
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// setup holds the organisations the load is sent as.
type setup struct {
	conn    *grpc.ClientConn // setup calls (consents)
	gpKey   string
	service string
	next    atomic.Int64 // people used so far
	run     string
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func as(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// newSetup creates a GP practice and a link worker service for this run
// (new ids each run, so runs can follow each other on one store).
func newSetup(ctx context.Context, addr, operator string) (*setup, error) {
	conn, err := dial(addr)
	if err != nil {
		return nil, err
	}
	s := &setup{run: newID()[:8]}
	dir, keys := pb.NewDirectoryServiceClient(conn), pb.NewApiKeyServiceClient(conn)
	op := as(ctx, operator)
	var lwKey string
	for id, kind := range map[string]pb.OrganizationKind{"gp-" + s.run: pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE, "lw-" + s.run: pb.OrganizationKind_ORGANIZATION_KIND_LINK_WORKER_SERVICE} {
		o, err := dir.CreateOrganization(op, &pb.CreateOrganizationRequest{OrganizationId: id, Organization: &pb.Organization{Kind: kind, DisplayName: id}})
		if err != nil {
			return nil, err
		}
		k, err := keys.CreateApiKey(op, &pb.CreateApiKeyRequest{Parent: o.Name})
		if err != nil {
			return nil, err
		}
		if kind == pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE {
			s.gpKey = k.Secret
		} else {
			lwKey = k.Secret
		}
	}
	svc, err := dir.CreateService(as(ctx, lwKey), &pb.CreateServiceRequest{Parent: "organizations/lw-" + s.run, ServiceId: "link-workers",
		Service: &pb.Service{DisplayName: "Link workers", Categories: []pb.Category{pb.Category_CATEGORY_SOCIAL_ISOLATION}, DefaultReplyWithin: durationpb.New(72 * time.Hour)}})
	if err != nil {
		return nil, err
	}
	s.service = svc.Name
	s.conn = conn
	return s, nil
}

// person is someone to refer, with their consent.
type person struct {
	n       int
	consent string
}

// consents records n people's consent, c at a time (not timed).
func (s *setup) consents(ctx context.Context, n, c int) ([]person, error) {
	out := make([]person, n)
	first := int(s.next.Add(int64(n))) - n
	client := pb.NewConsentServiceClient(s.conn)
	err := parallel(min(c, 16), n, func(i int) error {
		p := first + i + int(hash(s.run)%80)*100000 // distinct across runs on one store, mostly
		co, err := client.CreateConsent(as(ctx, s.gpKey), &pb.CreateConsentRequest{RequestId: newID(), Consent: &pb.Consent{
			NhsNumber: workload.NHSNumber(p), Method: pb.ConsentMethod_CONSENT_METHOD_VERBAL,
			Purposes:       []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER, pb.ConsentPurpose_CONSENT_PURPOSE_EVALUATION},
			RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}})
		if err != nil {
			return err
		}
		out[i] = person{n: p, consent: co.Name}
		return nil
	})
	return out, err
}

func hash(s string) uint32 {
	var h uint32 = 2166136261
	for i := range len(s) {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}

// forEach runs fn(client, i) for i from 0 to n-1 on c goroutines, client
// being the goroutine's number.
func forEach(c, n int, fn func(client, i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for client := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				fn(client, i)
			}
		}()
	}
	wg.Wait()
}

// parallel runs fn(0..n-1) on c goroutines and returns the first error.
func parallel(c, n int, fn func(i int) error) error {
	var mu sync.Mutex
	var first error
	forEach(c, n, func(_, i int) {
		if err := fn(i); err != nil {
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
		}
	})
	return first
}

// measure runs n calls from c clients, call(client, i) on client's own
// connection, and times each. serverMetrics is the server's /metrics URL
// for its CPU per call ("" when the work runs in this process).
func measure(target string, c, n int, serverMetrics string, call func(client, i int) error) result {
	lat := make([]time.Duration, n)
	var errs atomic.Int64
	cpu := startCPU(serverMetrics)
	start := time.Now()
	forEach(c, n, func(client, i int) {
		t := time.Now()
		if err := call(client, i); err != nil && errs.Add(1) == 1 {
			log.Printf("%s: %v", target, err)
		}
		lat[i] = time.Since(t)
	})
	elapsed := time.Since(start)
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[int(q*float64(n-1))].Microseconds()) / 1000 }
	r := result{Target: target, Clients: c, Requests: n, PerSecond: float64(n) / elapsed.Seconds(), P50Ms: ms(0.5), P99Ms: ms(0.99), Errors: int(errs.Load())}
	cpu.stop(&r, 0)
	return r
}

// createReferrals is the measured load: one CreateReferral per person.
func (s *setup) createReferrals(ctx context.Context, transport string, o options, c int, people []person) (result, error) {
	conns := make([]*grpc.ClientConn, c)
	clients := make([]*http.Client, c)
	addrs := strings.Split(o.grpcAddr, ",")
	for i := range c {
		conn, err := dial(addrs[i%len(addrs)])
		if err != nil {
			return result{}, err
		}
		defer conn.Close()
		conns[i] = conn
		clients[i] = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 30 * time.Second}
	}
	// Warm each connection up (connect, HTTP/2 settings) before timing.
	for i := range c {
		pb.NewReferralServiceClient(conns[i]).ListReferrals(as(ctx, s.gpKey), &pb.ListReferralsRequest{PageSize: 1})
		if req, err := http.NewRequest("GET", "http://"+o.httpAddr+"/v1/referrals?pageSize=1", nil); err == nil {
			req.Header.Set("Authorization", "Bearer "+s.gpKey)
			if resp, err := clients[i].Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}
	gctx := as(ctx, s.gpKey)
	referral := func(i int) *pb.Referral {
		return workload.Referral(people[i].n, s.service, people[i].consent)
	}
	if transport == "grpc" {
		return measure(strings.TrimSpace("CreateReferral gRPC "+o.label), c, len(people), metricsURL(o.httpAddr), func(client, i int) error {
			_, err := pb.NewReferralServiceClient(conns[client]).CreateReferral(gctx, &pb.CreateReferralRequest{RequestId: newID(), Referral: referral(i)})
			return err
		}), nil
	}
	return measure(strings.TrimSpace("CreateReferral REST "+o.label), c, len(people), metricsURL(o.httpAddr), func(client, i int) error {
		body, err := protojson.Marshal(referral(i))
		if err != nil {
			return err
		}
		req, err := http.NewRequest("POST", "http://"+o.httpAddr+"/v1/referrals?requestId="+newID(), bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+s.gpKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := clients[client].Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %s", resp.Status, b)
		}
		return nil
	}), nil
}

// loneRound is one round of the lone-client comparison.
type loneRound struct {
	Requests            int     `json:"requests"`
	CreateReferralP50Ms float64 `json:"create_referral_p50_ms"`
	FloorP50Ms          float64 `json:"floor_p50_ms"`
	Ratio               float64 `json:"ratio"`
}

// loneRounds compares a lone client's CreateReferral with a lone client's
// fsynced Update RPC (the floor) in alternate short runs. The disk's fsync
// time and the machine's speed drift from minute to minute by more than
// the target's margin, so one run of each, minutes apart, compares the
// drift as much as the two; in alternate runs a few seconds apart both see
// the same machine, and the median of the rounds' ratios is the figure.
func (s *setup) loneRounds(ctx context.Context, o options, payload []byte) ([]loneRound, error) {
	var out []loneRound
	for range o.loneRounds {
		people, err := s.consents(ctx, o.loneRequests, 1)
		if err != nil {
			return nil, err
		}
		g, err := s.createReferrals(ctx, "grpc", o, 1, people)
		if err != nil {
			return nil, err
		}
		f, err := anchorRun(ctx, o.benchAddr, metricsURL(o.httpAddr), anchor.WriteMethod, payload, 1, o.loneRequests)
		if err != nil {
			return nil, err
		}
		if g.Errors > 0 || f.Errors > 0 {
			return nil, fmt.Errorf("lone rounds: %d and %d errors", g.Errors, f.Errors)
		}
		out = append(out, loneRound{Requests: o.loneRequests, CreateReferralP50Ms: g.P50Ms, FloorP50Ms: f.P50Ms, Ratio: g.P50Ms / f.P50Ms})
	}
	return out, nil
}

// round is one round of the 64-client comparison.
type round struct {
	GRPC result `json:"create_referral_grpc"`
	REST result `json:"create_referral_rest"`
	Etcd result `json:"etcd_put"`
	Echo result `json:"grpc_echo"`
}

// The ratios the targets at 64 clients compare.
func (r round) vsEtcd() float64     { return r.GRPC.PerSecond / r.Etcd.PerSecond }
func (r round) p99VsEtcd() float64  { return r.GRPC.P99Ms / r.Etcd.P99Ms }
func (r round) vsEcho() float64     { return r.GRPC.PerSecond / r.Echo.PerSecond }
func (r round) restVsGRPC() float64 { return r.REST.PerSecond / r.GRPC.PerSecond }

// rounds measures CreateReferral over gRPC and over REST, etcd put and the
// gRPC echo at 64 clients in turn, o.rounds times, for the same reason as
// loneRounds: one run of each, a minute or more apart in the table, sees
// the machine at different speeds (the echo ceiling moved by a quarter
// between two runs of the same code), and a ratio of two such runs
// compares the drift as much as the servers. In a round the four runs
// are seconds apart, and the median of the rounds' ratios is the figure.
func (s *setup) rounds(ctx context.Context, o options, payload []byte) ([]round, error) {
	const c = 64
	n := o.roundRequests
	var out []round
	for range o.rounds {
		var r round
		for _, transport := range []string{"grpc", "rest"} {
			people, err := s.consents(ctx, n, c)
			if err != nil {
				return nil, err
			}
			res, err := s.createReferrals(ctx, transport, o, c, people)
			if err != nil {
				return nil, err
			}
			if transport == "grpc" {
				r.GRPC = res
			} else {
				r.REST = res
			}
		}
		var err error
		if r.Etcd, err = etcdRun(o, c, n, len(payload)); err != nil {
			return nil, err
		}
		if r.Echo, err = anchorRun(ctx, o.benchAddr, metricsURL(o.httpAddr), anchor.EchoMethod, payload, c, n); err != nil {
			return nil, err
		}
		if r.GRPC.Errors+r.REST.Errors+r.Etcd.Errors+r.Echo.Errors > 0 {
			return nil, fmt.Errorf("rounds at 64 clients: %d, %d, %d and %d errors", r.GRPC.Errors, r.REST.Errors, r.Etcd.Errors, r.Echo.Errors)
		}
		fmt.Printf("  round %d at 64 clients: CreateReferral gRPC %.0f/s p99 %.2f ms, REST %.0f/s, etcd put %.0f/s p99 %.2f ms, echo %.0f/s\n",
			len(out)+1, r.GRPC.PerSecond, r.GRPC.P99Ms, r.REST.PerSecond, r.Etcd.PerSecond, r.Etcd.P99Ms, r.Echo.PerSecond)
		out = append(out, r)
	}
	return out, nil
}

// medianOf is the median of f over the rounds.
func medianOf[T any](rounds []T, f func(T) float64) float64 {
	r := make([]float64, len(rounds))
	for i, x := range rounds {
		r[i] = f(x)
	}
	slices.Sort(r)
	if len(r)%2 == 1 {
		return r[len(r)/2]
	}
	return (r[len(r)/2-1] + r[len(r)/2]) / 2
}

// anchorRun calls an anchor method at addr with the payload; the anchors
// run in the exchange's process, so its /metrics (serverMetrics) has their
// CPU.
func anchorRun(ctx context.Context, addr, serverMetrics, method string, payload []byte, c, n int) (result, error) {
	conns := make([]*grpc.ClientConn, c)
	in := &wrapperspb.BytesValue{Value: payload}
	for i := range c {
		conn, err := dial(addr)
		if err != nil {
			return result{}, err
		}
		defer conn.Close()
		conns[i] = conn
		if err := conn.Invoke(ctx, anchor.EchoMethod, in, &wrapperspb.BytesValue{}); err != nil {
			return result{}, fmt.Errorf("the anchors at %s: %w", addr, err)
		}
	}
	name := map[string]string{anchor.EchoMethod: "gRPC echo (ceiling)", anchor.WriteMethod: "fsynced bbolt Update RPC"}[method]
	return measure(name, c, n, serverMetrics, func(client, i int) error {
		return conns[client].Invoke(ctx, method, in, &wrapperspb.BytesValue{})
	}), nil
}

// groupCommitRun stores the payload with bbolt's DB.Batch from c
// goroutines, in this process, on a file beside the exchange's store.
func groupCommitRun(dataDir string, payload []byte, c, n int) (result, error) {
	path := filepath.Join(dataDir, "loadtest-batch.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return result{}, err
	}
	defer os.Remove(path)
	defer db.Close()
	return measure("bbolt Batch, no gRPC", c, n, "", func(_, _ int) error { return anchor.GroupCommit(db, payload) }), nil
}

// etcdRun runs etcd's own benchmark tool: put with c clients on c
// connections, values of the payload's size.
func etcdRun(o options, c, n, size int) (result, error) {
	cmd := exec.Command(o.etcdBenchmark, "--endpoints", o.etcdEndpoint, "--clients", fmt.Sprint(c), "--conns", fmt.Sprint(c),
		"put", "--total", fmt.Sprint(n), "--key-size", "16", "--val-size", fmt.Sprint(size), "--key-space-size", "100000000")
	target := "etcd put"
	if o.txnOps > 0 {
		target = fmt.Sprintf("etcd txn-put %d keys", o.txnOps)
		cmd = exec.Command(o.etcdBenchmark, "--endpoints", o.etcdEndpoint, "--clients", fmt.Sprint(c), "--conns", fmt.Sprint(c),
			"txn-put", "--total", fmt.Sprint(n), "--txn-ops", fmt.Sprint(o.txnOps), "--key-size", "32",
			"--val-size", fmt.Sprint(max(1, o.txnBytes/o.txnOps-32)), "--key-space-size", "100000000")
	}
	cpu := startCPU(metricsURL(o.etcdEndpoint))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("etcd benchmark: %v\n%s", err, out)
	}
	r := result{Target: target, Clients: c, Requests: n}
	cpu.stop(&r, (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds())
	// "Requests/sec:\t1234.5" and "50% in 0.0021 secs."
	sc := bufio.NewScanner(bytes.NewReader(out))
	perSec, pct := regexp.MustCompile(`^Requests/sec:\s+([0-9.]+)`), regexp.MustCompile(`^(50|99)% in ([0-9.]+) secs`)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := perSec.FindStringSubmatch(line); m != nil {
			r.PerSecond, _ = strconv.ParseFloat(m[1], 64)
		}
		if m := pct.FindStringSubmatch(line); m != nil {
			secs, _ := strconv.ParseFloat(m[2], 64)
			if m[1] == "50" {
				r.P50Ms = secs * 1000
			} else {
				r.P99Ms = secs * 1000
			}
		}
	}
	if r.PerSecond == 0 {
		return r, fmt.Errorf("no Requests/sec in etcd's output:\n%s", out)
	}
	return r, nil
}

func metricsURL(hostPort string) string { return "http://" + hostPort + "/metrics" }

// metric sums each named metric's series (gauges and counters) on the
// /metrics page at url.
func metric(url string, names ...string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return out
	}
	for _, n := range names {
		for _, m := range families[n].GetMetric() {
			out[n] += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return out
}

func heapInUse(httpAddr string) float64 {
	return metric(metricsURL(httpAddr), "go_memstats_heap_inuse_bytes")["go_memstats_heap_inuse_bytes"] / (1 << 20)
}

func storeBytesPerReferral(httpAddr string) float64 {
	m := metric(metricsURL(httpAddr), "exchange_store_size_bytes", "exchange_referrals")
	if m["exchange_referrals"] == 0 {
		return 0
	}
	return m["exchange_store_size_bytes"] / m["exchange_referrals"]
}

// micros prints a CPU time per call, "-" when none was measured: the work
// ran in the load's own process, or the server's CPU did not move by one
// of its 10 ms ticks during a very short run.
func micros(us float64) string {
	if us == 0 {
		return "-"
	}
	return strconv.FormatFloat(us, 'f', 0, 64)
}

// report prints the results and the target ratios.
func report(w io.Writer, results []result, lone []loneRound, rounds []round, bytesPerReferral float64) {
	get := func(target string, c int) (result, bool) {
		for _, r := range results {
			if r.Target == target && r.Clients == c {
				return r, true
			}
		}
		return result{}, false
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "target\tclients\trequests\tper second\tp50 ms\tp99 ms\terrors\theap MB\tserver CPU µs/call\tload CPU µs/call\tmachine busy %\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%d\t%.0f\t%s\t%.0f\t%.0f\t\n", r.Target, r.Clients, r.Requests, r.PerSecond, r.P50Ms, r.P99Ms, r.Errors, r.HeapInUseMB,
			micros(r.ServerCPUUs), r.LoadCPUUs, r.MachineBusyPct)
	}
	tw.Flush()
	if len(lone) > 0 {
		fmt.Fprintf(w, "\nlone client, alternate runs of %d calls: CreateReferral p50 / fsynced Update RPC p50\n", lone[0].Requests)
		for i, r := range lone {
			fmt.Fprintf(w, "  round %d: %.2f ms / %.2f ms = %.2f\n", i+1, r.CreateReferralP50Ms, r.FloorP50Ms, r.Ratio)
		}
	}
	if len(rounds) > 0 {
		fmt.Fprintf(w, "\n64 clients, alternate runs of %d calls: CreateReferral gRPC / etcd put throughput and p99, / gRPC echo throughput; REST / gRPC throughput\n", rounds[0].GRPC.Requests)
		for i, r := range rounds {
			fmt.Fprintf(w, "  round %d: %.2f, %.2f, %.2f; %.2f\n", i+1, r.vsEtcd(), r.p99VsEtcd(), r.vsEcho(), r.restVsGRPC())
		}
	}
	fmt.Fprintf(w, "\nstore: %.0f bytes per referral (file size / referrals stored)\n\ntargets:\n", bytesPerReferral)
	check := func(what string, got, want float64, atLeast bool) {
		ok := got >= want
		if !atLeast {
			ok = got <= want
		}
		verdict := "met"
		if !ok {
			verdict = "NOT MET"
		}
		rel := ">="
		if !atLeast {
			rel = "<="
		}
		fmt.Fprintf(w, "  %-72s %6.2f  (%s %.2f)  %s\n", what, got, rel, want, verdict)
	}
	// Each target's ratio is written once (round's methods, loneRound's
	// Ratio) and judged on the median of the rounds, or, without rounds,
	// on the table's single runs taken as one round.
	judged, of := rounds, fmt.Sprintf(", median of %d rounds", len(rounds))
	if len(rounds) == 0 {
		var r round
		r.GRPC, _ = get("CreateReferral gRPC", 64)
		r.REST, _ = get("CreateReferral REST", 64)
		r.Etcd, _ = get("etcd put", 64)
		r.Echo, _ = get("gRPC echo (ceiling)", 64)
		judged, of = []round{r}, ""
	}
	ran := judged[0] // which of the runs there are
	if ran.GRPC.PerSecond > 0 && ran.Etcd.PerSecond > 0 {
		check("CreateReferral/etcd put throughput, 64 clients"+of, medianOf(judged, round.vsEtcd), 2, true)
		check("CreateReferral/etcd put p99, 64 clients"+of, medianOf(judged, round.p99VsEtcd), 1, false)
	}
	if ran.GRPC.PerSecond > 0 && ran.Echo.PerSecond > 0 {
		check("CreateReferral/gRPC echo throughput, 64 clients"+of, medianOf(judged, round.vsEcho), 0.4, true)
	}
	loneJudged, loneOf := lone, fmt.Sprintf(", median of %d rounds", len(lone))
	if len(lone) == 0 {
		g1, ok1 := get("CreateReferral gRPC", 1)
		w1, ok2 := get("fsynced bbolt Update RPC", 1)
		if ok1 && ok2 {
			loneJudged, loneOf = []loneRound{{CreateReferralP50Ms: g1.P50Ms, FloorP50Ms: w1.P50Ms, Ratio: g1.P50Ms / w1.P50Ms}}, ""
		}
	}
	if len(loneJudged) > 0 {
		check("CreateReferral/fsynced Update RPC p50, 1 client"+loneOf, medianOf(loneJudged, func(r loneRound) float64 { return r.Ratio }), 1.3, false)
	}
	for _, c := range []int{1, 16} {
		g, ok1 := get("CreateReferral gRPC", c)
		r, ok2 := get("CreateReferral REST", c)
		if ok1 && ok2 {
			check(fmt.Sprintf("REST/gRPC CreateReferral throughput, %d clients", c), r.PerSecond/g.PerSecond, 0.5, true)
		}
	}
	if ran.GRPC.PerSecond > 0 && ran.REST.PerSecond > 0 {
		check("REST/gRPC CreateReferral throughput, 64 clients"+of, medianOf(judged, round.restVsGRPC), 0.5, true)
	}
	cores := machineCores()
	machine := func(r result) float64 { return r.MachineBusyPct / 100 * float64(cores) / r.PerSecond * 1e6 }
	if e64, ok := get("etcd put", 64); ok && ran.GRPC.PerSecond > 0 && e64.MachineBusyPct > 0 {
		fmt.Fprintf(w, "\nCPU per call at 64 clients, the whole machine's (busy share x %d cores / throughput), and the server's and the load's:\n", cores)
		for _, t := range []string{"CreateReferral gRPC", "etcd put", "gRPC echo (ceiling)"} {
			if r, ok := get(t, 64); ok {
				fmt.Fprintf(w, "  %-22s %5.0f µs  (server %s, load %.0f)\n", t, machine(r), micros(r.ServerCPUUs), r.LoadCPUUs)
			}
		}
		fmt.Fprintf(w, "  at twice etcd put's throughput, with the machine as busy as in etcd's run, a call could cost %.0f µs in all\n", machine(e64)/2)
		if echo, ok := get("gRPC echo (ceiling)", 64); ok && echo.MachineBusyPct > 0 {
			fmt.Fprintf(w, "  at 40%% of the echo's throughput, with the machine as busy as in the echo's run, %.0f µs\n", machine(echo)/0.4)
		}
	}
}
