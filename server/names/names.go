// Package names parses and builds the AIP-122 resource names of the exchange.
package names

import (
	"regexp"
	"strings"
)

var id = `([a-z][a-z0-9-]{2,62}|[a-z0-9]{16})`

var (
	orgRE      = regexp.MustCompile(`^organizations/` + id + `$`)
	serviceRE  = regexp.MustCompile(`^organizations/` + id + `/services/` + id + `$`)
	capacityRE = regexp.MustCompile(`^organizations/` + id + `/services/` + id + `/capacity$`)
	referralRE = regexp.MustCompile(`^referrals/` + id + `$`)
	consentRE  = regexp.MustCompile(`^consents/` + id + `$`)
	apiKeyRE   = regexp.MustCompile(`^organizations/` + id + `/apiKeys/` + id + `$`)
)

// Organization returns the id in `organizations/{id}`.
func Organization(name string) (string, bool) { return one(orgRE, name) }

// Service returns the organisation and service ids in
// `organizations/{org}/services/{service}`.
func Service(name string) (org, service string, ok bool) { return two(serviceRE, name) }

// ServiceOfCapacity returns the service name of a capacity name.
func ServiceOfCapacity(name string) (string, bool) {
	if !capacityRE.MatchString(name) {
		return "", false
	}
	return strings.TrimSuffix(name, "/capacity"), true
}

// Referral returns the id in `referrals/{id}`.
func Referral(name string) (string, bool) { return one(referralRE, name) }

// Consent returns the id in `consents/{id}`.
func Consent(name string) (string, bool) { return one(consentRE, name) }

// APIKey returns the organisation and key ids in
// `organizations/{org}/apiKeys/{key}`.
func APIKey(name string) (org, key string, ok bool) { return two(apiKeyRE, name) }

// OrgOfService returns `organizations/{org}` for a service name, or "".
func OrgOfService(service string) string {
	org, _, ok := Service(service)
	if !ok {
		return ""
	}
	return "organizations/" + org
}

func one(re *regexp.Regexp, name string) (string, bool) {
	m := re.FindStringSubmatch(name)
	if m == nil {
		return "", false
	}
	return m[1], true
}

func two(re *regexp.Regexp, name string) (string, string, bool) {
	m := re.FindStringSubmatch(name)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}
