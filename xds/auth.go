package xds

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/dataplane"
)

// Authenticator decides whether a stream may speak for the node it names.
// It returns a gRPC status error (Unauthenticated, PermissionDenied) that
// tells the operator what to fix.
type Authenticator interface {
	Authenticate(ctx context.Context, node NodeInfo) error
}

// How a stream proved its identity, as the registry shows it
// (ProxyStatus.Auth).
const (
	AuthCertificate = "certificate" // a workload certificate over mTLS
	AuthToken       = "token"       // a ServiceAccount token, by TokenReview
	AuthOther       = "authenticated"
	AuthNone        = "none" // the anonymous endpoint, or no authenticator
)

// proof is what an authenticator established: how the stream proved its
// identity, and until when the credential is valid (zero: unknown). A
// stream does not outlive its credential (serve closes it then, and the
// proxy reconnects with a fresh one).
type proof struct {
	method  string
	expires time.Time
}

// methodAuthenticator is an Authenticator that also says how the stream
// proved itself and for how long; weft's own authenticators are.
type methodAuthenticator interface {
	authenticate(ctx context.Context, node NodeInfo) (proof, error)
}

// authenticateWith runs auth and names the method that vouched for the stream.
func authenticateWith(ctx context.Context, auth Authenticator, node NodeInfo) (proof, error) {
	if m, ok := auth.(methodAuthenticator); ok {
		return m.authenticate(ctx, node)
	}
	return proof{method: AuthOther}, auth.Authenticate(ctx, node)
}

// noCredential is an authenticator's answer when the stream carries none
// of the credentials it checks: Unauthenticated, and for a Chain the cue
// to ask the next authenticator.
type noCredential struct {
	node    string
	missing string // what was missing: "no token"
	fix     string // what to send instead
}

func (e *noCredential) Error() string {
	return fmt.Sprintf("node %s sent %s: %s", e.node, e.missing, e.fix)
}

// GRPCStatus makes the error a gRPC status (Unauthenticated).
func (e *noCredential) GRPCStatus() *status.Status {
	return status.New(codes.Unauthenticated, e.Error())
}

// Chain authenticates a stream with the first of its authenticators whose
// kind of credential the stream carries: that one alone decides. A stream
// that presents a client certificate proving another identity is refused,
// even if it also sent a valid token (a stream proves one identity, not
// the best of several). A stream with none of the credentials is refused
// with Unauthenticated naming every kind it could have sent.
type Chain []Authenticator

// Authenticate implements Authenticator.
func (c Chain) Authenticate(ctx context.Context, node NodeInfo) error {
	_, err := c.authenticate(ctx, node)
	return err
}

func (c Chain) authenticate(ctx context.Context, node NodeInfo) (proof, error) {
	var fixes []string
	for _, a := range c {
		p, err := authenticateWith(ctx, a, node)
		var nc *noCredential
		if !errors.As(err, &nc) {
			return p, err
		}
		fixes = append(fixes, nc.fix)
	}
	if len(fixes) == 0 {
		return proof{}, status.Errorf(codes.Unauthenticated, "node %s: no authenticator is configured", node.ID)
	}
	return proof{}, &noCredential{node: node.ID, missing: "no credential", fix: strings.Join(fixes, "; or ")}
}

// CertificateAuthenticator accepts a stream whose TLS client certificate
// is a workload certificate of the mesh for the identity the node claims:
// it verifies against the trust bundle proxies are given (for client
// authentication), and its SPIFFE ID (the single URI SAN) is
// spiffe://<trust domain>/ns/<namespace>/sa/<service account> of the
// node. A certificate names no pod, so any pod of the identity may claim
// any node of it — as with a token that is not pod-bound; the secrets it
// can receive are its identity's anyway.
//
// The listener must request, not require, client certificates (TLS
// ClientAuth RequestClientCert): sidecars authenticate with tokens on the
// same port. The chain is verified here, when the stream starts, rather
// than in the handshake: Roots is read for every stream, so a root
// rotation applies to the next stream at once; a session resumed from a
// ticket is judged by the current bundle; and a certificate that does not
// verify is refused with a gRPC status that says why, where a handshake
// failure would show the client only "bad certificate".
type CertificateAuthenticator struct {
	// Roots returns the mesh's current trust bundle (the roots SDS serves).
	Roots func() *x509.CertPool
	// ServiceAccounts, when set, is asked whether the service account the
	// certificate proves still exists: a workload certificate stays valid
	// for its lifetime (24 h by default) after its ServiceAccount is
	// deleted, and must not let its holder reconnect and be served that
	// identity's renewed keys (issue 13, 073). weft-controller always sets
	// it. (A certificate names no pod, so there is no pod to check; a
	// deleted pod's streams end through ADS.PodGone.)
	ServiceAccounts ServiceAccountChecker
}

// ServiceAccountChecker says whether a ServiceAccount exists.
type ServiceAccountChecker interface {
	// ServiceAccountExists is false with a nil error only when the cluster
	// is known not to have it; an error means it could not be told.
	ServiceAccountExists(ctx context.Context, namespace, name string) (bool, error)
}

// Authenticate implements Authenticator.
func (a CertificateAuthenticator) Authenticate(ctx context.Context, node NodeInfo) error {
	_, err := a.authenticate(ctx, node)
	return err
}

func (a CertificateAuthenticator) authenticate(ctx context.Context, node NodeInfo) (proof, error) {
	var chain []*x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			chain = info.State.PeerCertificates
		}
	}
	if len(chain) == 0 {
		return proof{}, &noCredential{node: node.ID, missing: "no client certificate",
			fix: "present the workload certificate of its identity over mTLS (weft agent writes it for proxyless gRPC)"}
	}
	roots := a.Roots()
	if roots == nil {
		roots = x509.NewCertPool() // never the system roots
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return proof{}, status.Errorf(codes.Unauthenticated, "node %s: its client certificate (issued by %q) does not verify against the mesh's trust bundle "+
			"(the built-in CA's roots, or with cert-manager only the CAs MeshConfig spec.certificates.certManager.trustBundle pins): %v", node.ID, chain[0].Issuer.String(), err)
	}
	proven, err := certs.IdentityFromCertificate(chain[0])
	if err != nil {
		return proof{}, status.Errorf(codes.Unauthenticated, "node %s: its client certificate is not a workload certificate: %v", node.ID, err)
	}
	if node.TrustDomain == "" {
		return proof{}, status.Errorf(codes.Unavailable, "node %s: the mesh's trust domain is not known yet; retry", node.ID)
	}
	if claimed := node.Proxy.Identity(node.TrustDomain); proven.String() != claimed {
		return proof{}, status.Errorf(codes.PermissionDenied, "node %s claims %s but its certificate proves %s", node.ID, claimed, proven)
	}
	if a.ServiceAccounts != nil {
		ok, err := a.ServiceAccounts.ServiceAccountExists(ctx, proven.Namespace, proven.ServiceAccount)
		if err != nil {
			return proof{}, status.Errorf(codes.Unavailable, "node %s: cannot tell whether service account %s/%s exists: %v; retry", node.ID, proven.Namespace, proven.ServiceAccount, err)
		}
		if !ok {
			return proof{}, status.Errorf(codes.PermissionDenied, "node %s: service account %s/%s no longer exists: its certificate for %s is refused although it has not expired", node.ID, proven.Namespace, proven.ServiceAccount, proven)
		}
	}
	return proof{method: AuthCertificate, expires: chain[0].NotAfter}, nil
}

// SetAuthenticator makes the ADS refuse streams that auth rejects (except
// on the Anonymous endpoint). Without one (development only) any stream may
// claim any node, so the ADS then serves no secrets at all. Call it before
// serving.
func (a *ADS) SetAuthenticator(auth Authenticator) { a.auth = auth }

// TokenAudience is the audience of the projected ServiceAccount token that
// injected sidecars present.
const TokenAudience = "weft"

// TokenReviewer checks a token with the API server (TokenReview), as
// authentication/v1 clients do. (An interface, so that the authenticator
// does not need a whole clientset.)
type TokenReviewer interface {
	Create(ctx context.Context, tr *authnv1.TokenReview, opts metav1.CreateOptions) (*authnv1.TokenReview, error)
}

// TokenAuthenticator accepts a stream whose "authorization: Bearer <token>"
// metadata holds a ServiceAccount token for audience "weft" that the API
// server vouches for, issued to the service account (and, for pod-bound
// tokens, the pod) that the node claims. The node id must be
// "<pod>.<namespace>" of the node's namespace.
//
// It is built for reconnect storms and hostile clients: reviews are cached
// (tokenCacheTTL, never past the token's expiry; refusals for
// negativeCacheTTL) under the token's SHA-256, never the token itself, in a
// bounded cache (MaxTokenCacheEntries); a token over MaxTokenBytes is
// refused unread; at most MaxConcurrentTokenReviews reviews run at once;
// and each peer address may cause PeerReviewBurst reviews, then
// PeerReviewsPerSecond, so unique bogus tokens from one pod cannot starve
// the others (what is cached costs nothing and is not limited).
type TokenAuthenticator struct {
	Reviews TokenReviewer

	// cacheTTL replaces tokenCacheTTL when set (tests only: a test that
	// shortens the connection age keeps the cache shorter still, as
	// production's minute is to its 30 minutes).
	cacheTTL time.Duration

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cachedReview
	peers map[string]*bucket
	sem   chan struct{}
	once  sync.Once
}

// Token authentication limits.
const (
	// MaxTokenBytes: a projected ServiceAccount token is 1-2 KiB; 8 KiB
	// leaves room for long names and is still refused before any work.
	MaxTokenBytes = 8 << 10
	// tokenCacheTTL: a reconnect storm costs one review per pod; a token
	// revoked (its pod deleted) stops being accepted within a minute.
	tokenCacheTTL = time.Minute
	// negativeCacheTTL: the same bad token sent again is refused from the
	// cache for a few seconds; a fixed one is accepted soon after.
	negativeCacheTTL = 5 * time.Second
	// MaxTokenCacheEntries bounds the cache: above it, expired entries
	// go, then the oldest half. A pod holds one token at a time (two while
	// the kubelet rotates it), so this covers 10,000 pods.
	MaxTokenCacheEntries = 20000
	// MaxConcurrentTokenReviews bounds the reviews in flight to the API
	// server from one replica (a storm waits its turn, within the
	// stream's context, rather than opening thousands of requests).
	MaxConcurrentTokenReviews = 32
	// PeerReviewBurst and PeerReviewsPerSecond: one pod's address
	// authenticates its sidecar and at most an agent, a reconnect needs
	// one or two reviews; but where the network masquerades pod traffic
	// to the node's address, a node's 110 pods share one, and must all be
	// back within 30 s of a leader loss (50 at once, then 5 a second:
	// 12 s). A client trying tokens gets 5 a second of the 200 the
	// replica may ask (tokenReviewQPS in internal/controller).
	PeerReviewBurst      = 50
	PeerReviewsPerSecond = 5.0
	// maxPeers bounds the per-peer buckets kept; idle (refilled) ones go
	// first.
	maxPeers = 65536
)

// podNameExtra is the TokenReview user extra in which the API server names
// the pod a pod-bound token is bound to.
const podNameExtra = "authentication.kubernetes.io/pod-name"

type cachedReview struct {
	status  authnv1.TokenReviewStatus
	expires time.Time // the token's own expiry, if it says
	until   time.Time
}

// bucket is one peer's token bucket of reviews.
type bucket struct {
	tokens float64
	last   time.Time
}

// Authenticate implements Authenticator.
func (t *TokenAuthenticator) Authenticate(ctx context.Context, node NodeInfo) error {
	_, err := t.authenticate(ctx, node)
	return err
}

func (t *TokenAuthenticator) authenticate(ctx context.Context, node NodeInfo) (proof, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	for _, v := range md.Get("authorization") {
		if after, ok := strings.CutPrefix(v, "Bearer "); ok {
			token = strings.TrimSpace(after)
		}
	}
	if token == "" {
		return proof{}, &noCredential{node: node.ID, missing: "no token",
			fix: fmt.Sprintf("send a ServiceAccount token with audience %q as \"authorization: Bearer <token>\" (injected sidecars do)", TokenAudience)}
	}
	if len(token) > MaxTokenBytes {
		return proof{}, status.Errorf(codes.Unauthenticated, "node %s: its token is %d bytes, more than %d (xds.MaxTokenBytes): not a ServiceAccount token", node.ID, len(token), MaxTokenBytes)
	}
	// The node id is "<pod>.<namespace>"; a pod name is a DNS subdomain
	// and may itself contain dots, so the namespace is cut from the end.
	pod, ok := strings.CutSuffix(node.ID, "."+node.Proxy.Namespace)
	if !ok || pod == "" {
		return proof{}, status.Errorf(codes.InvalidArgument, "node.id %q is not <pod>.<namespace> for namespace %q (metadata %s): set it to <pod>.%s in the bootstrap",
			node.ID, node.Proxy.Namespace, dataplane.MetaNamespace, node.Proxy.Namespace)
	}
	rv, err := t.review(ctx, token)
	if err != nil {
		if status.Code(err) == codes.ResourceExhausted {
			return proof{}, status.Errorf(codes.ResourceExhausted, "node %s: %v", node.ID, status.Convert(err).Message())
		}
		return proof{}, status.Errorf(codes.Unavailable, "node %s: cannot review its token with the API server: %v", node.ID, err)
	}
	st := rv.status
	if !st.Authenticated {
		return proof{}, status.Errorf(codes.Unauthenticated, "node %s: the API server rejected its token: %s", node.ID, st.Error)
	}
	want := "system:serviceaccount:" + node.Proxy.Namespace + ":" + node.Proxy.ServiceAccount
	if st.User.Username != want {
		return proof{}, status.Errorf(codes.PermissionDenied, "node %s claims %s but its token is %s's", node.ID, want, st.User.Username)
	}
	if names := st.User.Extra[podNameExtra]; len(names) > 0 && names[0] != pod {
		return proof{}, status.Errorf(codes.PermissionDenied, "node %s claims pod %s but its token is bound to pod %s", node.ID, pod, names[0])
	}
	return proof{method: AuthToken, expires: rv.expires}, nil
}

func (t *TokenAuthenticator) init() {
	t.once.Do(func() {
		t.cache = map[[sha256.Size]byte]cachedReview{}
		t.peers = map[string]*bucket{}
		t.sem = make(chan struct{}, MaxConcurrentTokenReviews)
	})
}

func (t *TokenAuthenticator) review(ctx context.Context, token string) (cachedReview, error) {
	t.init()
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	t.mu.Lock()
	if c, ok := t.cache[key]; ok && now.Before(c.until) {
		t.mu.Unlock()
		return c, nil
	}
	if !t.allow(peerOf(ctx), now) {
		t.mu.Unlock()
		return cachedReview{}, exhausted("too many token reviews from this address (%d, then %g a second: xds.PeerReviewBurst)", PeerReviewBurst, PeerReviewsPerSecond)
	}
	t.mu.Unlock()
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return cachedReview{}, ctx.Err()
	}
	res, err := t.Reviews.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{TokenAudience}}}, metav1.CreateOptions{})
	<-t.sem
	if err != nil {
		return cachedReview{}, err
	}
	if res.Status.Authenticated && !contains(res.Status.Audiences, TokenAudience) {
		res.Status.Authenticated = false
		res.Status.Error = fmt.Sprintf("the token is not for audience %q", TokenAudience)
	}
	c := cachedReview{status: res.Status, until: now.Add(negativeCacheTTL)}
	if res.Status.Authenticated {
		ttl := tokenCacheTTL
		if t.cacheTTL > 0 {
			ttl = t.cacheTTL
		}
		c.until = now.Add(ttl)
		if exp := tokenExpiry(token); !exp.IsZero() {
			c.expires = exp
			if exp.Before(c.until) {
				c.until = exp
			}
		}
	}
	t.mu.Lock()
	if len(t.cache) >= MaxTokenCacheEntries {
		t.evict(now)
	}
	t.cache[key] = c
	t.mu.Unlock()
	return c, nil
}

// evict makes room in the cache: expired entries, then (if that was not
// enough) the half that expires soonest. Called with mu held.
func (t *TokenAuthenticator) evict(now time.Time) {
	for k, c := range t.cache {
		if !now.Before(c.until) {
			delete(t.cache, k)
		}
	}
	if len(t.cache) < MaxTokenCacheEntries {
		return
	}
	untils := make([]time.Time, 0, len(t.cache))
	for _, c := range t.cache {
		untils = append(untils, c.until)
	}
	sort.Slice(untils, func(i, j int) bool { return untils[i].Before(untils[j]) })
	cut := untils[len(untils)/2]
	for k, c := range t.cache {
		if !c.until.After(cut) {
			delete(t.cache, k)
		}
	}
}

// allow takes one review from peer's bucket. Called with mu held.
func (t *TokenAuthenticator) allow(peer string, now time.Time) bool {
	b := t.peers[peer]
	if b == nil {
		if len(t.peers) >= maxPeers {
			for k, o := range t.peers { // idle peers' buckets are full again
				if o.tokens+now.Sub(o.last).Seconds()*PeerReviewsPerSecond >= PeerReviewBurst {
					delete(t.peers, k)
				}
			}
			if len(t.peers) >= maxPeers {
				return false
			}
		}
		b = &bucket{tokens: PeerReviewBurst, last: now}
		t.peers[peer] = b
	}
	b.tokens = min(PeerReviewBurst, b.tokens+now.Sub(b.last).Seconds()*PeerReviewsPerSecond)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// peerOf is the stream's peer IP address (without the port: a client
// opens new connections at will).
func peerOf(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// tokenExpiry reads the exp claim of a JWT that the API server has just
// vouched for (so its signature was checked there); zero if it has none.
func tokenExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == 0 {
		return time.Time{}
	}
	return time.Unix(claims.Exp, 0)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
