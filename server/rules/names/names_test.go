package names

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// The names as regular expressions: what the parsers must agree with.
var (
	id         = `([a-z][a-z0-9-]{2,62}|[a-z0-9]{16})`
	orgRE      = regexp.MustCompile(`^organizations/` + id + `$`)
	serviceRE  = regexp.MustCompile(`^organizations/` + id + `/services/` + id + `$`)
	capacityRE = regexp.MustCompile(`^(organizations/` + id + `/services/` + id + `)/capacity$`)
	referralRE = regexp.MustCompile(`^referrals/` + id + `$`)
	consentRE  = regexp.MustCompile(`^consents/` + id + `$`)
	apiKeyRE   = regexp.MustCompile(`^organizations/` + id + `/apiKeys/` + id + `$`)
	chosenRE   = regexp.MustCompile(`^([a-z][a-z0-9-]{2,62})$`)
)

// parsers runs every parser on a name, each giving what it returns, and
// the same from the expressions.
var parsers = []struct {
	name      string
	parse     func(string) []string
	reference func(string) []string
}{
	{"Organization", func(s string) []string { a, ok := Organization(s); return got(ok, a) }, sub(orgRE)},
	{"Service", func(s string) []string { a, b, ok := Service(s); return got(ok, a, b) }, sub(serviceRE)},
	{"ServiceOfCapacity", func(s string) []string { a, ok := ServiceOfCapacity(s); return got(ok, a) }, func(s string) []string {
		if m := capacityRE.FindStringSubmatch(s); m != nil {
			return m[1:2]
		}
		return nil
	}},
	{"Referral", func(s string) []string { a, ok := Referral(s); return got(ok, a) }, sub(referralRE)},
	{"Consent", func(s string) []string { a, ok := Consent(s); return got(ok, a) }, sub(consentRE)},
	{"APIKey", func(s string) []string { a, b, ok := APIKey(s); return got(ok, a, b) }, sub(apiKeyRE)},
	{"ChosenID", func(s string) []string { return got(ChosenID(s), s) }, sub(chosenRE)},
	{"OrgOfService", func(s string) []string { return got(OrgOfService(s) != "", OrgOfService(s)) }, func(s string) []string {
		if m := serviceRE.FindStringSubmatch(s); m != nil {
			return []string{"organizations/" + m[1]}
		}
		return nil
	}},
}

func got(ok bool, parts ...string) []string {
	if !ok {
		return nil
	}
	return parts
}

func sub(re *regexp.Regexp) func(string) []string {
	return func(s string) []string {
		if m := re.FindStringSubmatch(s); m != nil {
			return m[1:]
		}
		return nil
	}
}

func TestNames(t *testing.T) {
	made := "0123456789abcdef" // an id the exchange made: 16 of [a-z0-9]
	chosen := "age-uk-leeds"
	for _, c := range []struct {
		name, parser string
		want         []string
	}{
		{"organizations/" + chosen, "Organization", []string{chosen}},
		{"organizations/" + made, "Organization", []string{made}},
		{"organizations/abc", "Organization", []string{"abc"}},
		{"organizations/ab", "Organization", nil},
		{"organizations/" + strings.Repeat("a", 63), "Organization", []string{strings.Repeat("a", 63)}},
		{"organizations/" + strings.Repeat("a", 64), "Organization", nil},
		{"organizations/1abc", "Organization", nil},
		{"organizations/Abc", "Organization", nil},
		{"organizations/0123456789abcde-", "Organization", nil},
		{"organizations/abc/", "Organization", nil},
		{"organizations/", "Organization", nil},
		{"organisations/abc", "Organization", nil},
		{"organizations/" + chosen + "/services/" + made, "Service", []string{chosen, made}},
		{"organizations/" + chosen + "/services/x", "Service", nil},
		{"organizations/" + chosen + "/services/" + made + "/capacity", "Service", nil},
		{"organizations/" + chosen + "/services/" + made + "/capacity", "ServiceOfCapacity", []string{"organizations/" + chosen + "/services/" + made}},
		{"organizations/" + chosen + "/services/" + made, "ServiceOfCapacity", nil},
		{"organizations/" + chosen + "/services/" + made, "OrgOfService", []string{"organizations/" + chosen}},
		{"organizations/" + chosen + "/apiKeys/" + made, "APIKey", []string{chosen, made}},
		{"organizations/" + chosen + "/apikeys/" + made, "APIKey", nil},
		{"referrals/" + made, "Referral", []string{made}},
		{"referrals/" + made + "/x", "Referral", nil},
		{"consents/" + made, "Consent", []string{made}},
		{"consents/" + made, "Referral", nil},
		{"", "Consent", nil},
		{chosen, "ChosenID", []string{chosen}},
		{made, "ChosenID", nil},
		{"ab", "ChosenID", nil},
	} {
		for _, p := range parsers {
			if p.name != c.parser {
				continue
			}
			if g := p.parse(c.name); !equal(g, c.want) {
				t.Errorf("%s(%q) = %q, want %q", p.name, c.name, g, c.want)
			}
			if r := p.reference(c.name); !equal(r, c.want) {
				t.Errorf("the expression for %s on %q gives %q; the table wants %q", p.name, c.name, r, c.want)
			}
		}
	}
}

// TestNamesAgreeWithExpressions puts 40,000 random names built from the
// collections' words and ids of every length, valid and not (half of
// them in the shape of a name), through each parser and its expression.
func TestNamesAgreeWithExpressions(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const idChars = "abcz09-A/_."
	randomID := func() string {
		n := rng.IntN(70)
		if rng.IntN(3) == 0 {
			n = 16
		}
		b := make([]byte, n)
		for i := range b {
			if rng.IntN(8) == 0 {
				b[i] = idChars[rng.IntN(len(idChars))]
			} else {
				b[i] = "abcdefghijklmnopqrstuvwxyz0123456789-"[rng.IntN(37)]
			}
		}
		return string(b)
	}
	shapes := []string{"{}", "organizations/{}", "organizations/{}/services/{}", "organizations/{}/services/{}/capacity",
		"organizations/{}/apiKeys/{}", "referrals/{}", "consents/{}"}
	words := []string{"organizations/", "/services/", "/apiKeys/", "/capacity", "referrals/", "consents/", "/", ""}
	for range 40000 {
		var b strings.Builder
		if rng.IntN(2) == 0 {
			// The shape of a name, with random ids.
			for i, w := range strings.Split(shapes[rng.IntN(len(shapes))], "{}") {
				if i > 0 {
					b.WriteString(randomID())
				}
				b.WriteString(w)
			}
		} else {
			for range 1 + rng.IntN(5) {
				b.WriteString(words[rng.IntN(len(words))])
				b.WriteString(randomID())
			}
			if rng.IntN(4) == 0 {
				b.WriteString(words[rng.IntN(len(words))])
			}
		}
		name := b.String()
		for _, p := range parsers {
			if g, r := p.parse(name), p.reference(name); !equal(g, r) {
				t.Fatalf("%s(%q) = %q; the expression gives %q", p.name, name, g, r)
			}
		}
	}
}

func equal(a, b []string) bool {
	return len(a) == len(b) && strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

func BenchmarkService(b *testing.B) {
	for b.Loop() {
		Service("organizations/age-uk-leeds/services/0123456789abcdef")
	}
}
