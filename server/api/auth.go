package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	pb "github.com/social-prescribing/exchange/proto/exchange/v1"
	"github.com/social-prescribing/exchange/server/rules/names"
	"github.com/social-prescribing/exchange/server/storage"
)

// An API key is pb.APIKeyPrefix + "<organization id>_<key id>_<secret>": the first parts
// name the stored key, organizations/{org}/apiKeys/{id}; only a SHA-256 hash
// of the secret is stored. The secret has 160 random bits, so a fast hash is
// enough (no password stretching needed).

// NewAPIKey makes a key for org and returns the record to store and the
// secret to show once.
func NewAPIKey(org, displayName string, now time.Time) (*storage.APIKey, string) {
	id := newID()
	b := make([]byte, 20)
	rand.Read(b)
	secretPart := idEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(secretPart))
	orgID, _ := names.Organization(org)
	return &storage.APIKey{
		Name: org + "/apiKeys/" + id, Organization: org, DisplayName: displayName,
		Hash: h[:], CreateTime: now,
	}, pb.APIKeyPrefix + orgID + "_" + id + "_" + secretPart
}

// authenticate resolves a bearer token to its caller.
func authenticate(tx storage.ReadTx, token string) (Caller, error) {
	_, name, secret, ok := pb.ParseAPIKey(token)
	if !ok {
		return Caller{}, errBadKey
	}
	k, err := tx.GetAPIKey(name)
	if errors.Is(err, storage.ErrNotFound) {
		return Caller{}, errBadKey
	}
	if err != nil {
		return Caller{}, err
	}
	h := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(h[:], k.Hash) != 1 || !k.RevokeTime.IsZero() {
		return Caller{}, errBadKey
	}
	o, err := tx.GetOrganization(k.Organization)
	if err != nil {
		return Caller{}, errBadKey
	}
	return Caller{Org: o.Name, Kind: o.Kind, KeyName: k.Name, Operator: o.Kind == pb.OrganizationKind_ORGANIZATION_KIND_OPERATOR}, nil
}

var errBadKey = apiError(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_API_KEY_INVALID,
	"the API key is not valid or has been revoked", nil)

// publicMethods need no key.
var publicMethods = map[string]bool{
	"/grpc.health.v1.Health/Check": true,
	"/grpc.health.v1.Health/Watch": true,
	"/grpc.health.v1.Health/List":  true,
}

func isPublic(method string) bool {
	return publicMethods[method] || strings.HasPrefix(method, "/grpc.reflection.")
}

// callerOf authenticates a call by its API key or, when it has none, by
// its verified client certificate (mutual TLS). When both are sent they
// must name the same organisation.
func (c *core) callerOf(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	cert := clientCertificate(ctx)
	if len(vals) == 0 && cert == nil {
		return nil, apiError(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_API_KEY_MISSING,
			"no API key: send the header authorization: Bearer <key>", nil)
	}
	if len(vals) > 1 {
		return nil, apiError(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_AMBIGUOUS_CREDENTIALS,
			"more than one authorization value: send exactly one credential", nil)
	}
	var token string
	if len(vals) > 0 {
		var ok bool
		if token, ok = strings.CutPrefix(vals[0], "Bearer "); !ok {
			return nil, apiError(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_API_KEY_MISSING,
				"the authorization header must be: Bearer <key>", nil)
		}
	}
	var caller Caller
	version, keyHash := c.store.AuthVersion(), sha256.Sum256([]byte(token))
	cached := token != "" && c.keys.get(version, keyHash, &caller)
	if !cached {
		err := c.store.View(ctx, func(tx storage.ReadTx) error {
			var err error
			if token != "" {
				caller, err = authenticate(tx, strings.TrimSpace(token))
			} else {
				caller, err = certificateCaller(tx, cert)
			}
			return err
		})
		if err != nil {
			return nil, storeError(ctx, err)
		}
		if token != "" {
			c.keys.put(version, keyHash, caller)
		}
	}
	if token != "" && cert != nil && "organizations/"+cert.Subject.CommonName != caller.Org {
		return nil, errCertNotMapped
	}
	if n := noteFrom(ctx); n != nil {
		n.caller = caller
	}
	return withCaller(ctx, caller), nil
}

// keyCache remembers whom API keys authenticated, so that a call need not
// read the store for it, for as long as the store's AuthVersion says no
// key or organisation has changed since: a revoked key fails on the next
// call after the revocation is acknowledged. Keys are held by a SHA-256 of
// the whole key, never in clear, and only keys that authenticated.
type keyCache struct {
	mu      sync.Mutex
	version uint64
	callers map[[sha256.Size]byte]Caller
}

// maxCachedKeys bounds the cache; it starts again empty when full. A
// Primary Care Network has some hundreds of keys.
const maxCachedKeys = 4096

// get finds whom the key of SHA-256 h authenticated, if the cache is of
// version.
func (k *keyCache) get(version uint64, h [sha256.Size]byte, c *Caller) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.version != version {
		return false
	}
	got, ok := k.callers[h]
	if ok {
		*c = got
	}
	return ok
}

// put remembers whom the key of SHA-256 h authenticated, read after
// AuthVersion returned version.
func (k *keyCache) put(version uint64, h [sha256.Size]byte, c Caller) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case version < k.version:
		return // read before a change the cache already knows of
	case version > k.version || len(k.callers) >= maxCachedKeys || k.callers == nil:
		k.version, k.callers = version, map[[sha256.Size]byte]Caller{}
	}
	k.callers[h] = c
}

var errCertNotMapped = apiError(codes.Unauthenticated, pb.ErrorReason_ERROR_REASON_CERTIFICATE_NOT_MAPPED,
	"the client certificate's common name is not an organisation id of the exchange, or another organisation's API key was sent with it", nil)

// clientCertificate is the call's client certificate when the TLS handshake
// verified it against the client CA, else nil.
func clientCertificate(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return nil
	}
	return info.State.PeerCertificates[0]
}

// certificateCaller maps a verified client certificate to its organisation:
// the Subject common name is the organisation id.
func certificateCaller(tx storage.ReadTx, cert *x509.Certificate) (Caller, error) {
	name := "organizations/" + cert.Subject.CommonName
	if _, ok := names.Organization(name); !ok {
		return Caller{}, errCertNotMapped
	}
	o, err := tx.GetOrganization(name)
	if errors.Is(err, storage.ErrNotFound) {
		return Caller{}, errCertNotMapped
	}
	if err != nil {
		return Caller{}, err
	}
	return Caller{Org: o.Name, Kind: o.Kind, KeyName: "certificates/" + cert.SerialNumber.Text(16),
		Operator: o.Kind == pb.OrganizationKind_ORGANIZATION_KIND_OPERATOR}, nil
}

// UnaryAuth authenticates every unary call but health checks.
func (s *Server) UnaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if isPublic(info.FullMethod) {
		return handler(ctx, req)
	}
	ctx, err := s.core.callerOf(ctx)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a authedStream) Context() context.Context { return a.ctx }

// StreamAuth authenticates every streaming call but health and reflection.
func (s *Server) StreamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if isPublic(info.FullMethod) {
		return handler(srv, ss)
	}
	ctx, err := s.core.callerOf(ss.Context())
	if err != nil {
		return err
	}
	return handler(srv, authedStream{ss, ctx})
}
