package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/exchangetest"
)

type result struct {
	code           int
	stdout, stderr string
}

// ctl runs exchangectl in-process against x as organisation org (its key in
// EXCHANGE_TOKEN, the address in EXCHANGE_ADDR).
func ctl(t *testing.T, x *exchangetest.Exchange, org string, args ...string) result {
	t.Helper()
	return ctlEnv(t, map[string]string{"EXCHANGE_ADDR": x.Addr, "EXCHANGE_TOKEN": x.Keys[org], "EXCHANGE_CONFIG": noConfig(t)}, args...)
}

func ctlEnv(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, env{stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }})
	return result{code, out.String(), errb.String()}
}

// noConfig is an empty config file, so a test never reads the user's own.
func noConfig(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ok runs a command that must succeed and returns its stdout.
func ok(t *testing.T, x *exchangetest.Exchange, org string, args ...string) string {
	t.Helper()
	r := ctl(t, x, org, args...)
	if r.code != exitOK {
		t.Fatalf("exchangectl %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// jsonName runs a command with -o json and returns the "name" it printed.
func jsonName(t *testing.T, x *exchangetest.Exchange, org string, args ...string) string {
	t.Helper()
	var v struct{ Name string }
	out := ok(t, x, org, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Name == "" {
		t.Fatalf("exchangectl %s printed %q: %v", strings.Join(args, " "), out, err)
	}
	return v.Name
}

// fails runs a command that must fail with exit status code and a stderr
// holding every one of want.
func fails(t *testing.T, x *exchangetest.Exchange, org string, code int, want []string, args ...string) {
	t.Helper()
	r := ctl(t, x, org, args...)
	if r.code != code {
		t.Fatalf("exchangectl %s: exit %d, want %d\nstderr: %s", strings.Join(args, " "), r.code, code, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("exchangectl %s: stderr %q lacks %q", strings.Join(args, " "), r.stderr, w)
		}
	}
	if r.stdout != "" {
		t.Errorf("exchangectl %s: a failure printed %q on stdout", strings.Join(args, " "), r.stdout)
	}
}

// TestWorkedExample plays the worked example with the CLI only: the
// operator registers the organisations, the group publishes its service and
// capacity, the GP records consent and refers, the link worker accepts and
// refers on, the group accepts and reports uptake and an outcome, and the GP
// reads them.
func TestWorkedExample(t *testing.T) {
	x := exchangetest.Start(t)
	for _, o := range []struct{ id, kind string }{
		{"riverside-practice", "gp_practice"}, {"riverside-pcn", "link_worker_service"}, {"hillside-walkers", "vcse_organization"}} {
		if name := jsonName(t, x, "operator", "org", "create", o.id, "--kind", o.kind, "--display-name", o.id, "--email", "hello@"+o.id+".example"); name != "organizations/"+o.id {
			t.Fatalf("created %s", name)
		}
		var key struct{ Secret string }
		if err := json.Unmarshal([]byte(ok(t, x, "operator", "key", "create", o.id, "--display-name", "test", "-o", "json")), &key); err != nil || !strings.HasPrefix(key.Secret, "sprx_") {
			t.Fatalf("key create: %+v %v", key, err)
		}
		x.Keys[o.id] = key.Secret
	}
	ok(t, x, "riverside-pcn", "service", "create", "riverside-pcn/link-workers", "--display-name", "Link workers", "--category", "social_isolation,mental_wellbeing")
	ok(t, x, "hillside-walkers", "service", "create", "hillside-walkers/health-walks", "--display-name", "Health walks",
		"--category", "physical_activity", "--min-age", "18", "--postcode-district", "M14", "--reply-within", "72h")
	capOut := ok(t, x, "hillside-walkers", "capacity", "set", "hillside-walkers/health-walks", "--status", "accepting", "--max", "10")
	for _, w := range []string{"status:", "ACCEPTING", "max:", "10"} {
		if !strings.Contains(capOut, w) {
			t.Errorf("capacity set printed %q, lacking %q", capOut, w)
		}
	}
	search := ok(t, x, "riverside-pcn", "service", "search", "--category", "physical_activity", "--postcode", "M14 5AB", "--age", "70", "--has-capacity")
	if !strings.Contains(search, "organizations/hillside-walkers/services/health-walks") {
		t.Errorf("search found:\n%s", search)
	}

	consent := jsonName(t, x, "riverside-practice", "consent", "record", "--nhs-number", exchangetest.AdaNHS, "--method", "verbal",
		"--purpose", "direct_care", "--purpose", "feedback_to_referrer", "--scope", "referral_chain", "--valid-until", "8760h")
	person := []string{"--nhs-number", exchangetest.AdaNHS, "--given-name", "Ada", "--family-name", "Lovelace",
		"--date-of-birth", "1952-12-10", "--postcode", "M14 5AB", "--support-level", "intensive"}
	r1 := jsonName(t, x, "riverside-practice", append([]string{"referral", "create", "--service", "riverside-pcn/link-workers", "--consent", consent,
		"--route", "primary_care", "--need", "social_isolation", "--reason", "Lives alone"}, person...)...)
	ok(t, x, "riverside-pcn", "referral", "accept", r1)
	ok(t, x, "riverside-pcn", "referral", "start", r1)
	r2 := jsonName(t, x, "riverside-pcn", append([]string{"referral", "create", "--service", "hillside-walkers/health-walks", "--consent", consent,
		"--route", "link_worker", "--need", "physical_activity", "--parent", r1}, person...)...)

	// The group's inbox, as a table: a header and one aligned row.
	inbox := ok(t, x, "hillside-walkers", "referral", "list", "--state", "requested", "--recipient", "hillside-walkers")
	lines := strings.Split(strings.TrimSpace(inbox), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], r2) ||
		!strings.Contains(lines[1], "Ada Lovelace") || strings.Index(lines[0], "STATE") != strings.Index(lines[1], "REQUESTED") {
		t.Fatalf("inbox table:\n%s", inbox)
	}
	ok(t, x, "hillside-walkers", "referral", "accept", r2)
	ok(t, x, "hillside-walkers", "feedback", "uptake", r2, "--status", "first_session_attended")
	ok(t, x, "hillside-walkers", "feedback", "outcome", r2, "--instrument", "wemwbs", "--timepoint", "baseline", "--total", "41")
	ok(t, x, "hillside-walkers", "feedback", "note", r2, "--text", "Enjoyed it", "--author-side")

	// The link worker reads the feedback as JSON: uptake and outcome, not
	// the group's own note.
	var fb pb.ListFeedbackResponse
	if err := protojson.Unmarshal([]byte(ok(t, x, "riverside-pcn", "feedback", "list", r2, "-o", "json")), &fb); err != nil {
		t.Fatal(err)
	}
	if len(fb.Feedback) != 2 || fb.Feedback[0].GetUptake() == nil || fb.Feedback[1].GetOutcome().GetTotal() != 41 {
		t.Fatalf("link worker reads %v", fb.Feedback)
	}

	// Referral get as a table of fields, and the state as JSON.
	got := ok(t, x, "riverside-practice", "referral", "get", r1)
	for _, w := range []string{"name:", r1, "state:", "IN_PROGRESS", "person:", "Ada Lovelace"} {
		if !strings.Contains(got, w) {
			t.Errorf("referral get printed %q, lacking %q", got, w)
		}
	}
	var ref pb.Referral
	if err := protojson.Unmarshal([]byte(ok(t, x, "hillside-walkers", "referral", "get", r2, "-o", "json")), &ref); err != nil || ref.State != pb.ReferralState_REFERRAL_STATE_ACCEPTED {
		t.Fatalf("referral get -o json: %v %v", ref.State, err)
	}

	// Every state method is reachable: hold, resume, start, complete on the
	// onward referral; cancel and entered-in-error on the first.
	ok(t, x, "hillside-walkers", "referral", "hold", r2, "--reason", "no_capacity")
	ok(t, x, "hillside-walkers", "referral", "resume", r2)
	ok(t, x, "hillside-walkers", "referral", "start", r2)
	ok(t, x, "hillside-walkers", "referral", "complete", r2)
	ok(t, x, "riverside-practice", "referral", "cancel", r1, "--reason", "needs_changed")
	ok(t, x, "riverside-practice", "referral", "entered-in-error", r1)
	r3 := jsonName(t, x, "riverside-practice", append([]string{"referral", "create", "--service", "riverside-pcn/link-workers", "--consent", consent,
		"--route", "primary_care", "--need", "social_isolation"}, person...)...)
	ok(t, x, "riverside-pcn", "referral", "reject", r3, "--reason", "other", "--text", "Moved away")
	r4 := jsonName(t, x, "riverside-practice", append([]string{"referral", "create", "--service", "riverside-pcn/link-workers", "--consent", consent,
		"--route", "primary_care", "--need", "social_isolation"}, person...)...)
	ok(t, x, "riverside-pcn", "referral", "accept", r4)
	ok(t, x, "riverside-pcn", "referral", "fail", r4, "--reason", "unable_to_contact")

	states := ok(t, x, "riverside-practice", "referral", "list", "--referrer", "riverside-practice", "--all", "-o", "json")
	for _, w := range []string{"REFERRAL_STATE_ENTERED_IN_ERROR", "REFERRAL_STATE_REJECTED", "REFERRAL_STATE_FAILED"} {
		if !strings.Contains(states, w) {
			t.Errorf("the GP's referrals lack %s:\n%s", w, states)
		}
	}

	// Consent list and withdrawal.
	if l := ok(t, x, "riverside-practice", "consent", "list", "--nhs-number", exchangetest.AdaNHS); !strings.Contains(l, consent) || !strings.Contains(l, "ACTIVE") {
		t.Errorf("consent list:\n%s", l)
	}
	if w := ok(t, x, "riverside-practice", "consent", "withdraw", consent); !strings.Contains(w, "WITHDRAWN") {
		t.Errorf("consent withdraw:\n%s", w)
	}

	// Organisations and keys, as the operator sees them.
	orgs := ok(t, x, "operator", "org", "list", "--kind", "vcse_organization")
	if !strings.Contains(orgs, "hillside-walkers") || strings.Contains(orgs, "riverside-practice") {
		t.Errorf("org list --kind:\n%s", orgs)
	}
	ok(t, x, "hillside-walkers", "org", "update", "hillside-walkers", "--phone", "0161 496 0000")
	var org pb.Organization
	protojson.Unmarshal([]byte(ok(t, x, "operator", "org", "get", "hillside-walkers", "-o", "json")), &org)
	if org.Contact.GetPhone() != "0161 496 0000" || org.Contact.GetEmail() != "hello@hillside-walkers.example" {
		t.Errorf("org update changed the contact to %v; want the phone added and the email kept", org.Contact)
	}
	keys := ok(t, x, "hillside-walkers", "key", "list", "hillside-walkers", "-o", "json")
	var kl pb.ListApiKeysResponse
	if err := protojson.Unmarshal([]byte(keys), &kl); err != nil || len(kl.ApiKeys) != 1 {
		t.Fatalf("key list: %s %v", keys, err)
	}
	ok(t, x, "operator", "key", "revoke", kl.ApiKeys[0].Name)
	fails(t, x, "hillside-walkers", exitRefused, []string{"UNAUTHENTICATED"}, "referral", "list")

	// The event feed, as one JSON object per line.
	ev := ok(t, x, "riverside-practice", "events", "watch", "--count", "3", "-o", "json")
	if n := strings.Count(strings.TrimSpace(ev), "\n") + 1; n != 3 || !strings.Contains(ev, `"sequence"`) {
		t.Errorf("events watch --count 3 printed %d lines:\n%s", n, ev)
	}
}

// TestErrors checks what a script sees when things go wrong: the status
// code and reason on stderr, the offending field, the exit status, and
// nothing changed.
func TestErrors(t *testing.T) {
	x := exchangetest.Start(t)
	x.Org("practice", pb.OrganizationKind_ORGANIZATION_KIND_GP_PRACTICE)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	walks := x.Service("group", "walks", pb.Category_CATEGORY_PHYSICAL_ACTIVITY)
	consent := x.ConsentFor("practice", exchangetest.AdaNHS, nil)
	create := func(nhs string, extra ...string) []string {
		return append([]string{"referral", "create", "--service", walks, "--consent", consent.Name, "--nhs-number", nhs,
			"--given-name", "Ada", "--family-name", "Lovelace", "--date-of-birth", "1952-12-10", "--postcode", "M14 5AB",
			"--route", "primary_care", "--need", "physical_activity", "--support-level", "signposting"}, extra...)
	}

	fails(t, x, "practice", exitRefused, []string{"INVALID_ARGUMENT (FIELD_INVALID)", "referral.person.nhs_number:"}, create("9434765918")...)
	fails(t, x, "practice", exitRefused, []string{"NOT_FOUND"}, "referral", "get", "nothing-here")
	fails(t, x, "practice", exitRefused, []string{"PERMISSION_DENIED"}, "org", "create", "newcomer", "--kind", "other", "--display-name", "New")

	// A request_id makes a repeated command apply once.
	first := jsonName(t, x, "practice", create(exchangetest.AdaNHS, "--request-id", "gp-0001")...)
	if again := jsonName(t, x, "practice", create(exchangetest.AdaNHS, "--request-id", "gp-0001")...); again != first {
		t.Fatalf("the repeated command made %s after %s", again, first)
	}
	fails(t, x, "practice", exitRefused, []string{"ALREADY_EXISTS (DUPLICATE_REFERRAL)"}, create(exchangetest.AdaNHS)...)
	fails(t, x, "practice", exitRefused, []string{"PERMISSION_DENIED (WRONG_SIDE)"}, "referral", "accept", first)
	fails(t, x, "group", exitRefused, []string{"FAILED_PRECONDITION (INVALID_TRANSITION)"}, "referral", "start", first)
	fails(t, x, "group", exitRefused, []string{"ABORTED"}, "referral", "accept", first, "--etag", "stale")

	// Usage mistakes: exit 2, before any call.
	fails(t, x, "group", exitUsage, []string{`"reason" not set`}, "referral", "reject", first)
	fails(t, x, "group", exitUsage, []string{`"sideways" is not one of`}, "referral", "list", "--state", "sideways")
	fails(t, x, "group", exitUsage, []string{"unknown command"}, "referral", "teleport", first)
	fails(t, x, "group", exitUsage, []string{"unknown command"}, "teleport")
	fails(t, x, "group", exitUsage, []string{"unknown flag"}, "referral", "list", "--colour")
	fails(t, x, "group", exitUsage, []string{"takes 1 argument"}, "referral", "get")
	fails(t, x, "group", exitUsage, []string{"--output must be table or json"}, "referral", "list", "-o", "xml")
	if r := ctlEnv(t, map[string]string{"EXCHANGE_ADDR": x.Addr, "EXCHANGE_CONFIG": noConfig(t)}, "referral", "list"); r.code != exitUsage || !strings.Contains(r.stderr, "no API key") {
		t.Errorf("without a key: exit %d, %q", r.code, r.stderr)
	}

	// Nothing was changed by any of the failures.
	var l pb.ListReferralsResponse
	protojson.Unmarshal([]byte(ok(t, x, "group", "referral", "list", "-o", "json")), &l)
	if len(l.Referrals) != 1 || l.Referrals[0].State != pb.ReferralState_REFERRAL_STATE_REQUESTED {
		t.Fatalf("after the failures the group sees %v", l.Referrals)
	}

	// No exchange at the address: exit 3.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	r := ctlEnv(t, map[string]string{"EXCHANGE_ADDR": closed, "EXCHANGE_TOKEN": x.Keys["group"], "EXCHANGE_CONFIG": noConfig(t)}, "referral", "list", "--timeout", "3s")
	if r.code != exitUnavailable {
		t.Errorf("no exchange: exit %d, %q", r.code, r.stderr)
	}
}

// TestConfigSources: flags beat the environment, which beats the config
// file.
func TestConfigSources(t *testing.T) {
	x := exchangetest.Start(t)
	x.Org("group", pb.OrganizationKind_ORGANIZATION_KIND_VCSE_ORGANIZATION)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("addr: "+x.Addr+"\ntoken: "+x.Keys["group"]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := ctlEnv(t, map[string]string{"EXCHANGE_CONFIG": cfg}, "org", "get", "group"); r.code != 0 || !strings.Contains(r.stdout, "organizations/group") {
		t.Fatalf("from the config file: %+v", r)
	}
	if r := ctlEnv(t, map[string]string{}, "--config", cfg, "org", "get", "group"); r.code != 0 {
		t.Fatalf("from --config: %+v", r)
	}
	if r := ctlEnv(t, map[string]string{"EXCHANGE_CONFIG": cfg, "EXCHANGE_TOKEN": "sprx_bad"}, "org", "get", "group"); r.code != exitRefused || !strings.Contains(r.stderr, "UNAUTHENTICATED") {
		t.Fatalf("the environment should override the file: %+v", r)
	}
	if r := ctlEnv(t, map[string]string{"EXCHANGE_CONFIG": cfg, "EXCHANGE_TOKEN": "sprx_bad"}, "--token", x.Keys["group"], "org", "get", "group"); r.code != 0 {
		t.Fatalf("the flag should override the environment: %+v", r)
	}
	if r := ctlEnv(t, map[string]string{"EXCHANGE_CONFIG": filepath.Join(t.TempDir(), "missing.yaml")}, "org", "get", "group"); r.code != exitRefused || !strings.Contains(r.stderr, "config file") {
		t.Fatalf("a named config file that is missing: %+v", r)
	}
}

// TestEveryCommandHasAnExample walks the command tree: every command a
// person can run explains itself with an example.
func TestEveryCommandHasAnExample(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() != "help" && strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s has no example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk((&app{}).root())
	r := ctlEnv(t, nil, "referral", "create", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "--request-id") {
		t.Errorf("referral create --help: %+v", r)
	}
}
