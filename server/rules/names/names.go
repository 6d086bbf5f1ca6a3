// Package names parses and builds the AIP-122 resource names of the exchange.
//
// An id is either 3 to 63 characters of lower-case letters, digits and
// hyphens starting with a letter (a name an organisation chose), or 16
// lower-case letters and digits (an id the exchange made). The names are
// checked by hand rather than by regular expression: every call parses
// several, and names_test.go holds the expressions they must agree with.
package names

import "strings"

// Organization returns the id in `organizations/{id}`.
func Organization(name string) (string, bool) { return one("organizations/", name) }

// Service returns the organisation and service ids in
// `organizations/{org}/services/{service}`.
func Service(name string) (org, service string, ok bool) {
	return two("organizations/", "/services/", name)
}

// ServiceOfCapacity returns the service name of a capacity name,
// `organizations/{org}/services/{service}/capacity`.
func ServiceOfCapacity(name string) (string, bool) {
	service, ok := strings.CutSuffix(name, "/capacity")
	if !ok {
		return "", false
	}
	if _, _, ok := Service(service); !ok {
		return "", false
	}
	return service, true
}

// Referral returns the id in `referrals/{id}`.
func Referral(name string) (string, bool) { return one("referrals/", name) }

// Consent returns the id in `consents/{id}`.
func Consent(name string) (string, bool) { return one("consents/", name) }

// APIKey returns the organisation and key ids in
// `organizations/{org}/apiKeys/{key}`.
func APIKey(name string) (org, key string, ok bool) {
	return two("organizations/", "/apiKeys/", name)
}

// OrgOfService returns `organizations/{org}` for a service name, or "".
func OrgOfService(service string) string {
	org, _, ok := Service(service)
	if !ok {
		return ""
	}
	return service[:len("organizations/")+len(org)]
}

// one is the id of `{collection}{id}`.
func one(collection, name string) (string, bool) {
	id, ok := strings.CutPrefix(name, collection)
	if !ok || !isID(id) {
		return "", false
	}
	return id, true
}

// two is the ids of `{collection}{parent}{child collection}{child}`.
func two(collection, childCollection, name string) (string, string, bool) {
	rest, ok := strings.CutPrefix(name, collection)
	if !ok {
		return "", "", false
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return "", "", false
	}
	parent := rest[:i]
	child, ok := strings.CutPrefix(rest[i:], childCollection)
	if !ok || !isID(parent) || !isID(child) {
		return "", "", false
	}
	return parent, child, true
}

// isID reports whether s is an id: one a caller chose, or 16 of [a-z0-9]
// (one the exchange made).
func isID(s string) bool {
	if len(s) == 16 && strings.IndexFunc(s, func(r rune) bool { return !lowerOrDigit(r) }) < 0 {
		return true
	}
	return ChosenID(s)
}

// ChosenID reports whether s may be an id a caller chooses (an
// organisation's or a service's): 3 to 63 of [a-z0-9-] starting with a
// letter.
func ChosenID(s string) bool {
	if len(s) < 3 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool { return !lowerOrDigit(r) && r != '-' }) < 0
}

func lowerOrDigit(r rune) bool { return 'a' <= r && r <= 'z' || '0' <= r && r <= '9' }
