package exchangev1

import "strings"

// What both sides of the wire read, beside the messages: the server makes
// them, the gateway and clients parse them.

// ErrorDomain is the google.rpc.ErrorInfo domain of every error the
// exchange returns (errors.proto).
const ErrorDomain = "exchange.socialprescribing.uk"

// The reason an ErrorInfo carries is its ErrorReason's Code, e.g.
// "CONSENT_REQUIRED".

// APIKeyPrefix begins every API key: sprx_{organisation id}_{key id}_{secret}.
const APIKeyPrefix = "sprx_"

// ParseAPIKey splits a key into the organisation it belongs to
// (organizations/{org}), the stored key's name and the secret, or reports
// that it is not in the form of a key.
func ParseAPIKey(token string) (org, name, secret string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(token, APIKeyPrefix), "_")
	if !strings.HasPrefix(token, APIKeyPrefix) || len(parts) != 3 {
		return "", "", "", false
	}
	org = "organizations/" + parts[0]
	return org, org + "/apiKeys/" + parts[1], parts[2], true
}
