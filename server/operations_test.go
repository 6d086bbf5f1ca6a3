package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

// scrape reads /metrics into name{label="value",...} -> value, labels
// sorted by name; a histogram gives its _count.
func scrape(t *testing.T, httpAddr string) (map[string]float64, string) {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s\n%s", resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v", err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			k := name
			if len(labels) > 0 {
				k += "{" + strings.Join(labels, ",") + "}"
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[k] = m.Counter.GetValue()
			case dto.MetricType_GAUGE:
				out[k] = m.Gauge.GetValue()
			case dto.MetricType_HISTOGRAM:
				out[k+"_count"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out, string(body)
}

// TestOperations runs the built exchange as a production site would, with
// JSON logs and traces sent to the console exporter by the OTEL_*
// environment. It takes a referral through its lifecycle over gRPC (and a
// group's read over REST), with an event stream open over gRPC and one
// over REST, then checks that /metrics counts all of it, that the log has
// one line per call with organisation, method, code and duration, that
// spans were exported, and that no personal data is in the metrics, the
// log or the spans.
func TestOperations(t *testing.T) {
	bin, _ := binaries(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	t.Setenv("OTEL_SERVICE_NAME", "exchange-under-test")
	dir := t.TempDir()
	s := startBinary(t, bin, dir, "--log-format", "json", "--rate-limit", "0")
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	operator := operatorKey(t, filepath.Join(dir, "data"))
	dirc, keysc, refs := pb.NewDirectoryServiceClient(conn), pb.NewApiKeyServiceClient(conn), pb.NewReferralServiceClient(conn)
	calls := map[string]int{} // full method -> calls made, to match against the log
	call := func(method string) { calls["/exchange.v1."+method]++ }
	keys := map[string]string{}
	for id, kind := range map[string]pb.OrganizationKind{"practice": pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE, "group": pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION} {
		o, err := dirc.CreateOrganization(as(operator), &pb.CreateOrganizationRequest{OrganizationId: id, Organization: &pb.Organization{Kind: kind, DisplayName: id}})
		call("DirectoryService/CreateOrganization")
		if err != nil {
			t.Fatal(err)
		}
		k, err := keysc.CreateApiKey(as(operator), &pb.CreateApiKeyRequest{Parent: o.Name})
		call("ApiKeyService/CreateApiKey")
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = k.Secret
	}
	svc, err := dirc.CreateService(as(keys["group"]), &pb.CreateServiceRequest{Parent: "organizations/group", ServiceId: "walks",
		Service: &pb.Service{DisplayName: "Walks", Categories: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, DefaultReplyWithin: durationpb.New(72 * time.Hour)}})
	call("DirectoryService/CreateService")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := scrape(t, s.http)

	// The group watches its events while the referral goes through.
	wctx, stopWatch := context.WithCancel(as(keys["group"]))
	watch, err := pb.NewEventServiceClient(conn).WatchEvents(wctx, &pb.WatchEventsRequest{})
	call("EventService/WatchEvents")
	if err != nil {
		t.Fatal(err)
	}
	// And over REST: the gateway's stream on the in-process channel.
	wreq, _ := http.NewRequestWithContext(wctx, "GET", "http://"+s.http+"/v1/events:watch", nil)
	wreq.Header.Set("Authorization", "Bearer "+keys["group"])
	restWatch, err := http.DefaultClient.Do(wreq)
	if err != nil || restWatch.StatusCode != 200 {
		t.Fatalf("REST WatchEvents: %v %v", restWatch, err)
	}
	defer restWatch.Body.Close()
	call("EventService/WatchEvents")
	person := exchangetest.Ada()
	person.GivenName, person.FamilyName = "Ottoline", "Quarrington"
	consent, err := pb.NewConsentServiceClient(conn).CreateConsent(as(keys["practice"]), &pb.CreateConsentRequest{Consent: &pb.Consent{
		NhsNumber: person.NhsNumber, Method: pb.ConsentMethod_CONSENT_METHOD_VERBAL,
		Purposes:       []pb.ConsentPurpose{pb.ConsentPurpose_CONSENT_PURPOSE_DIRECT_CARE, pb.ConsentPurpose_CONSENT_PURPOSE_FEEDBACK_TO_REFERRER},
		RecipientScope: pb.ConsentRecipientScope_CONSENT_RECIPIENT_SCOPE_REFERRAL_CHAIN}})
	call("ConsentService/CreateConsent")
	if err != nil {
		t.Fatal(err)
	}
	r, err := refs.CreateReferral(as(keys["practice"]), &pb.CreateReferralRequest{RequestId: "ops-1", Referral: &pb.Referral{
		RecipientService: svc.Name, Person: person, Consent: consent.Name, Route: pb.ReferralRoute_REFERRAL_ROUTE_PRIMARY_CARE,
		Needs: []pb.Category{pb.Category_CATEGORY_PHYSICAL_ACTIVITY}, SupportLevel: pb.SupportLevel_SUPPORT_LEVEL_SIGNPOSTING,
		Reason: "Lonely since moving; would like to walk with others"}})
	call("ReferralService/CreateReferral")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil { // the stream is open and delivering
		t.Fatal(err)
	}
	// It delivers the events from the first, the referral's among them.
	events := bufio.NewReader(restWatch.Body)
	for i := 0; ; i++ {
		line, err := events.ReadBytes('\n')
		if err != nil || i == 20 {
			t.Fatalf("REST WatchEvents: %v after %d events, none of %s", err, i, r.Name)
		}
		if bytes.Contains(line, []byte(`"resource":"`+r.Name+`"`)) {
			break
		}
	}
	during, _ := scrape(t, s.http)
	if got := during["exchange_event_watchers"]; got != 2 {
		t.Errorf("exchange_event_watchers with two streams open (gRPC, REST) = %v", got)
	}
	if got := during[`exchange_service_active_referrals{service="organizations/group/services/walks"}`]; got != 1 {
		t.Errorf("active referrals of the service = %v, want 1", got)
	}
	group := as(keys["group"])
	if _, err := refs.AcceptReferral(group, &pb.AcceptReferralRequest{Name: r.Name}); err != nil {
		t.Fatal(err)
	}
	call("ReferralService/AcceptReferral")
	if _, err := refs.StartReferral(group, &pb.StartReferralRequest{Name: r.Name}); err != nil {
		t.Fatal(err)
	}
	call("ReferralService/StartReferral")
	// A refusal: a bad name is INVALID_ARGUMENT, counted and logged too.
	_, err = refs.CompleteReferral(group, &pb.CompleteReferralRequest{Name: "not a referral"})
	exchangetest.WantErr(t, err, 3, "FIELD_INVALID")
	call("ReferralService/CompleteReferral")
	if _, err := refs.CompleteReferral(group, &pb.CompleteReferralRequest{Name: r.Name}); err != nil {
		t.Fatal(err)
	}
	call("ReferralService/CompleteReferral")
	// The group reads it back over REST: one call of GetReferral.
	req, _ := http.NewRequest("GET", "http://"+s.http+"/v1/"+r.Name, nil)
	req.Header.Set("Authorization", "Bearer "+keys["group"])
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("REST GetReferral: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	call("ReferralService/GetReferral")
	stopWatch()
	time.Sleep(100 * time.Millisecond) // the server sees the stream end

	after, body := scrape(t, s.http)
	delta := func(k string) float64 { return after[k] - before[k] }
	handled := func(method, code string) string {
		svc, m, _ := strings.Cut(method, "/")
		return fmt.Sprintf(`grpc_server_handled_total{grpc_code=%q,grpc_method=%q,grpc_service="exchange.v1.%s",grpc_type="unary"}`, code, m, svc)
	}
	for k, want := range map[string]float64{
		`exchange_referrals{state="COMPLETED"}`:                                                             1,
		`exchange_referrals{state="REQUESTED"}`:                                                             0,
		handled("ReferralService/CreateReferral", "OK"):                                                     1,
		handled("ReferralService/CompleteReferral", "OK"):                                                   1,
		handled("ReferralService/CompleteReferral", "InvalidArgument"):                                      1,
		handled("ReferralService/GetReferral", "OK"):                                                        1, // the REST call
		`exchange_service_capacity_status{service="organizations/group/services/walks",status="ACCEPTING"}`: 0,
	} {
		if got := delta(k); got != want {
			t.Errorf("%s rose by %v, want %v", k, got, want)
		}
	}
	for k, want := range map[string]float64{
		`exchange_event_watchers`:    0,
		`exchange_referrals_overdue`: 0,
		`exchange_service_capacity_status{service="organizations/group/services/walks",status="ACCEPTING"}`: 1,
		`exchange_service_active_referrals{service="organizations/group/services/walks"}`:                   0,
	} {
		if got, ok := after[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	// Each of the 6 writes since the first scrape was committed (several
	// may share a commit), and the file has a size.
	if d := delta("exchange_store_commit_writes_count"); d < 1 || d > 12 {
		t.Errorf("store commits during the lifecycle = %v", d)
	}
	if after["exchange_store_commit_duration_seconds_count"] < 1 || after["exchange_store_size_bytes"] < 32<<10 {
		t.Errorf("commit latency count %v, database size %v", after["exchange_store_commit_duration_seconds_count"], after["exchange_store_size_bytes"])
	}
	if _, ok := after["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
	// The exchange collects garbage less often than Go's default unless
	// GOGC says otherwise (server/main.go, gcPercent).
	if os.Getenv("GOGC") == "" && after["go_gc_gogc_percent"] != 400 {
		t.Errorf("go_gc_gogc_percent = %v, want the exchange's default 400", after["go_gc_gogc_percent"])
	}

	// Stop the server as a service manager would, so spans are flushed.
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	out, err := os.ReadFile(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{person.NhsNumber, person.GivenName, person.FamilyName, person.Postcode, "Lonely since moving", keys["group"], keys["practice"], operator}
	for _, p := range secrets {
		if strings.Contains(body, p) {
			t.Errorf("/metrics holds %q", p)
		}
		if bytes.Contains(out, []byte(p)) {
			t.Errorf("the log or the spans hold %q", p)
		}
	}

	// One JSON log line per call, with who, what, the outcome and how long.
	logged := map[string]int{}
	traced := map[string]bool{} // trace ids of exported spans
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		if sctx, ok := m["SpanContext"].(map[string]any); ok { // a span from the console exporter
			traced[fmt.Sprint(sctx["TraceID"])] = true
			continue
		}
		if m["msg"] == "call" {
			lines = append(lines, m)
		}
	}
	var withTrace int
	for _, m := range lines {
		method := fmt.Sprint(m["method"])
		if !strings.HasPrefix(method, "/exchange.v1.") {
			continue
		}
		logged[method]++
		for _, f := range []string{"organization", "credential", "code", "duration_ms", "level", "time"} {
			if _, ok := m[f]; !ok {
				t.Errorf("log line %v has no %s", m, f)
			}
		}
		if m["organization"] == "" {
			t.Errorf("log line %v names no organisation", m)
		}
		if m["code"] == "INVALID_ARGUMENT" && m["reason"] != "FIELD_INVALID" {
			t.Errorf("refusal logged without its reason: %v", m)
		}
		if traced[fmt.Sprint(m["trace_id"])] {
			withTrace++
		}
	}
	if fmt.Sprint(logged) != fmt.Sprint(calls) {
		t.Errorf("calls logged:\n%v\nwant one line per call:\n%v", logged, calls)
	}
	if len(traced) == 0 || withTrace != len(lines) {
		t.Errorf("spans exported for %d traces; %d of %d log lines carry a trace id of an exported span", len(traced), withTrace, len(lines))
	}
	if !bytes.Contains(out, []byte("exchange.v1.ReferralService/CreateReferral")) || !bytes.Contains(out, []byte("exchange-under-test")) {
		t.Error("no CreateReferral span from the service named by OTEL_SERVICE_NAME")
	}
}

// TestTracingOffByDefault: only the OTEL_* environment switches tracing on.
func TestTracingOffByDefault(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_SERVICE_NAME": "x"}, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none"}, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
	} {
		if got := tracingWanted(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("tracing with %v = %v, want %v", tc.env, got, tc.want)
		}
	}
}

// TestLogOptions: the two formats, the levels, and bad values.
func TestLogOptions(t *testing.T) {
	var buf bytes.Buffer
	for _, tc := range []struct{ format, level, want string }{
		{"text", "info", "level=INFO msg=call method=m"},
		{"json", "info", `{"time":`},
		{"json", "warn", ""},
	} {
		buf.Reset()
		log, err := newLogger(&buf, tc.format, tc.level)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("call", "method", "m")
		if got := buf.String(); !strings.Contains(got, tc.want) || (tc.want == "") != (got == "") {
			t.Errorf("%s at %s: %q, want %q", tc.format, tc.level, got, tc.want)
		}
	}
	for _, bad := range [][2]string{{"xml", "info"}, {"json", "loud"}} {
		if _, err := newLogger(&buf, bad[0], bad[1]); err == nil {
			t.Errorf("newLogger(%q, %q) accepted", bad[0], bad[1])
		}
	}
	bin, _ := binaries(t)
	b, err := exec.Command(bin, "--log-format", "xml").CombinedOutput()
	if err == nil || !strings.Contains(string(b), "give text or json") {
		t.Errorf("--log-format xml: %v %s", err, b)
	}
}

// TestHealthcheck: `server healthcheck` passes against a running exchange
// and fails, quickly, when nothing listens.
func TestHealthcheck(t *testing.T) {
	bin, _ := binaries(t)
	s := startBinary(t, bin, t.TempDir())
	if b, err := exec.Command(bin, "healthcheck", "--grpc-addr", s.grpc).CombinedOutput(); err != nil || !strings.Contains(string(b), "SERVING") {
		t.Errorf("healthcheck of a running exchange: %v %s", err, b)
	}
	// A wildcard listen address is checked on loopback.
	_, port, _ := strings.Cut(s.grpc, ":")
	cmd := exec.Command(bin, "healthcheck")
	cmd.Env = append(os.Environ(), "EXCHANGE_GRPC_ADDR=0.0.0.0:"+port)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("healthcheck with EXCHANGE_GRPC_ADDR=0.0.0.0:%s: %v %s", port, err, b)
	}
	start := time.Now()
	b, err := exec.Command(bin, "healthcheck", "--grpc-addr", freeAddr(t), "--timeout", "1s").CombinedOutput()
	if err == nil || !strings.Contains(string(b), "unhealthy") || time.Since(start) > 5*time.Second {
		t.Errorf("healthcheck with nothing listening: %v %s after %v", err, b, time.Since(start))
	}
	for listen, want := range map[string]string{"0.0.0.0:50051": "127.0.0.1:50051", ":50051": "127.0.0.1:50051", "[::]:50051": "[::1]:50051", "10.0.0.5:50051": "10.0.0.5:50051"} {
		if got := localAddr(listen); got != want {
			t.Errorf("localAddr(%q) = %q, want %q", listen, got, want)
		}
	}
}

// TestFlagsFromEnvironment: every flag has an EXCHANGE_ variable, the
// command line wins over it, and a bad value is an error naming it.
func TestFlagsFromEnvironment(t *testing.T) {
	newFlags := func() (*flag.FlagSet, *string, *bool, *days) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		addr := fs.String("grpc-addr", "127.0.0.1:50051", "")
		demo := fs.Bool("demo", false, "")
		ret := days(time.Hour)
		fs.Var(&ret, "retention", "")
		return fs, addr, demo, &ret
	}
	t.Setenv("EXCHANGE_GRPC_ADDR", "0.0.0.0:1")
	t.Setenv("EXCHANGE_DEMO", "true")
	t.Setenv("EXCHANGE_RETENTION", "30d")
	fs, addr, demo, ret := newFlags()
	if err := fromEnv(fs); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"--grpc-addr", "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	if *addr != "127.0.0.1:2" || !*demo || time.Duration(*ret) != 30*24*time.Hour {
		t.Errorf("from the environment and the command line: addr %s, demo %v, retention %v", *addr, *demo, time.Duration(*ret))
	}
	if u := fs.Lookup("demo").Usage; !strings.Contains(u, "(env EXCHANGE_DEMO)") {
		t.Errorf("help of --demo: %q", u)
	}
	t.Setenv("EXCHANGE_RETENTION", "soon")
	fs, _, _, _ = newFlags()
	if err := fromEnv(fs); err == nil || !strings.Contains(err.Error(), "EXCHANGE_RETENTION") {
		t.Errorf("a bad EXCHANGE_RETENTION: %v", err)
	}
}

// TestLoadCommand runs the load command, briefly, against the exchange
// built for measurement (the bench tag) with its anchors, so that
// scripts/bench.sh keeps working: every target it measures is in its
// table, with no errors. The exchange-server binary has no anchors.
func TestLoadCommand(t *testing.T) {
	prod, _ := binaries(t)
	if out, err := exec.Command(prod, "--bench-addr", "127.0.0.1:0").CombinedOutput(); err == nil || !strings.Contains(string(out), "flag provided but not defined: -bench-addr") {
		t.Errorf("exchange-server takes --bench-addr: %v\n%s", err, out)
	}
	bin, loadtest := filepath.Join(t.TempDir(), "exchange-bench"), filepath.Join(t.TempDir(), "loadtest")
	for pkg, out := range map[string][]string{".": {"-tags", "bench", "-o", bin}, "../tools/loadtest": {"-o", loadtest}} {
		if b, err := exec.Command("go", append(append([]string{"build"}, out...), pkg)...).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	dir := t.TempDir()
	bench := freeAddr(t)
	s := startBinary(t, bin, dir, "--rate-limit", "0", "--bench-addr", bench, "--log-level", "warn")
	results := filepath.Join(t.TempDir(), "load.json")
	out, err := exec.Command(loadtest, "--grpc-addr", s.grpc, "--http-addr", s.http, "--bench-addr", bench,
		"--data-dir", filepath.Join(dir, "data"), "--clients", "1,4", "--scale", "0.02", "--json", results).CombinedOutput()
	if err != nil {
		t.Fatalf("loadtest: %v\n%s", err, out)
	}
	// Every run says what it cost in CPU: the load's side always. The
	// machine's busy share (where there is a /proc) and the exchange's CPU
	// (from its /metrics) are counted in 10 ms ticks, so a run of a few
	// milliseconds may show none: some run must show each.
	var report struct {
		Results []struct {
			Target      string
			ServerCPU   float64 `json:"server_cpu_us_per_call"`
			LoadCPU     float64 `json:"load_cpu_us_per_call"`
			MachineBusy float64 `json:"machine_busy_pct"`
		}
	}
	b, err := os.ReadFile(results)
	if err == nil {
		err = json.Unmarshal(b, &report)
	}
	if err != nil || len(report.Results) == 0 {
		t.Fatalf("the load command's JSON: %v\n%s", err, b)
	}
	_, proc := os.Stat("/proc/stat")
	var serverCPU, machineBusy float64
	for _, r := range report.Results {
		if r.LoadCPU <= 0 || r.MachineBusy < 0 || r.MachineBusy > 100 {
			t.Errorf("%s: CPU per call for the load %v, the machine's busy share %v%%", r.Target, r.LoadCPU, r.MachineBusy)
		}
		serverCPU += r.ServerCPU
		machineBusy += r.MachineBusy
	}
	if serverCPU <= 0 {
		t.Errorf("no run measured the exchange's CPU per call:\n%s", b)
	}
	if proc == nil && machineBusy <= 0 {
		t.Errorf("no run measured the machine's busy share:\n%s", b)
	}
	for _, want := range []string{"CreateReferral gRPC", "CreateReferral REST", "gRPC echo (ceiling)", "fsynced bbolt Update RPC", "bbolt Batch, no gRPC", "bytes per referral", "REST/gRPC CreateReferral throughput, 1 clients",
		"round 7:", "fsynced Update RPC p50, 1 client, median of 7 rounds"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the load command's report has no %q:\n%s", want, out)
		}
	}
	if regexp.MustCompile(`errors [1-9]`).Match(out) {
		t.Errorf("calls failed under load:\n%s", out)
	}
}

// TestVersion: both binaries say which build they are, with the commit
// they were built from.
func TestVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("no git checkout to build from: %v", err)
	}
	dir := t.TempDir()
	for pkg, name := range map[string]string{".": "exchange-server", "../client/exchangectl": "exchangectl"} {
		bin := filepath.Join(dir, name)
		if b, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
		out, err := exec.Command(bin, "--version").CombinedOutput()
		if want := "(commit " + strings.TrimSpace(string(head)); err != nil || !strings.HasPrefix(string(out), name+" v") || !strings.Contains(string(out), want) {
			t.Errorf("%s --version: %v %q, want its name, version and %q", name, err, out, want)
		}
	}
}
