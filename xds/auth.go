package xds

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
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

// methodAuthenticator is an Authenticator that also says how the stream
// proved itself; weft's own authenticators are.
type methodAuthenticator interface {
	authenticate(ctx context.Context, node NodeInfo) (method string, err error)
}

// authenticateWith runs auth and names the method that vouched for the stream.
func authenticateWith(ctx context.Context, auth Authenticator, node NodeInfo) (string, error) {
	if m, ok := auth.(methodAuthenticator); ok {
		return m.authenticate(ctx, node)
	}
	return AuthOther, auth.Authenticate(ctx, node)
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

func (c Chain) authenticate(ctx context.Context, node NodeInfo) (string, error) {
	var fixes []string
	for _, a := range c {
		method, err := authenticateWith(ctx, a, node)
		var nc *noCredential
		if !errors.As(err, &nc) {
			return method, err
		}
		fixes = append(fixes, nc.fix)
	}
	if len(fixes) == 0 {
		return "", status.Errorf(codes.Unauthenticated, "node %s: no authenticator is configured", node.ID)
	}
	return "", &noCredential{node: node.ID, missing: "no credential", fix: strings.Join(fixes, "; or ")}
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
}

// Authenticate implements Authenticator.
func (a CertificateAuthenticator) Authenticate(ctx context.Context, node NodeInfo) error {
	_, err := a.authenticate(ctx, node)
	return err
}

func (a CertificateAuthenticator) authenticate(ctx context.Context, node NodeInfo) (string, error) {
	var chain []*x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			chain = info.State.PeerCertificates
		}
	}
	if len(chain) == 0 {
		return "", &noCredential{node: node.ID, missing: "no client certificate",
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
		return "", status.Errorf(codes.Unauthenticated, "node %s: its client certificate does not verify against the mesh's trust bundle: %v", node.ID, err)
	}
	proven, err := certs.IdentityFromCertificate(chain[0])
	if err != nil {
		return "", status.Errorf(codes.Unauthenticated, "node %s: its client certificate is not a workload certificate: %v", node.ID, err)
	}
	if node.TrustDomain == "" {
		return "", status.Errorf(codes.Unavailable, "node %s: the mesh's trust domain is not known yet; retry", node.ID)
	}
	if claimed := node.Proxy.Identity(node.TrustDomain); proven.String() != claimed {
		return "", status.Errorf(codes.PermissionDenied, "node %s claims %s but its certificate proves %s", node.ID, claimed, proven)
	}
	return AuthCertificate, nil
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
// "<pod>.<namespace>" of the node's namespace. Reviews are cached for a minute so
// that a reconnect storm costs one review per pod.
type TokenAuthenticator struct {
	Reviews TokenReviewer

	mu    sync.Mutex
	cache map[string]cachedReview
}

type cachedReview struct {
	status authnv1.TokenReviewStatus
	until  time.Time
}

// Authenticate implements Authenticator.
func (t *TokenAuthenticator) Authenticate(ctx context.Context, node NodeInfo) error {
	_, err := t.authenticate(ctx, node)
	return err
}

func (t *TokenAuthenticator) authenticate(ctx context.Context, node NodeInfo) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	for _, v := range md.Get("authorization") {
		if after, ok := strings.CutPrefix(v, "Bearer "); ok {
			token = strings.TrimSpace(after)
		}
	}
	if token == "" {
		return "", &noCredential{node: node.ID, missing: "no token",
			fix: fmt.Sprintf("send a ServiceAccount token with audience %q as \"authorization: Bearer <token>\" (injected sidecars do)", TokenAudience)}
	}
	// The node id is "<pod>.<namespace>"; a pod name is a DNS subdomain
	// and may itself contain dots, so the namespace is cut from the end.
	pod, ok := strings.CutSuffix(node.ID, "."+node.Proxy.Namespace)
	if !ok || pod == "" {
		return "", status.Errorf(codes.InvalidArgument, "node.id %q is not <pod>.<namespace> for namespace %q (metadata %s): set it to <pod>.%s in the bootstrap",
			node.ID, node.Proxy.Namespace, dataplane.MetaNamespace, node.Proxy.Namespace)
	}
	st, err := t.review(ctx, token)
	if err != nil {
		return "", status.Errorf(codes.Unavailable, "node %s: cannot review its token with the API server: %v", node.ID, err)
	}
	if !st.Authenticated {
		return "", status.Errorf(codes.Unauthenticated, "node %s: the API server rejected its token: %s", node.ID, st.Error)
	}
	want := "system:serviceaccount:" + node.Proxy.Namespace + ":" + node.Proxy.ServiceAccount
	if st.User.Username != want {
		return "", status.Errorf(codes.PermissionDenied, "node %s claims %s but its token is %s's", node.ID, want, st.User.Username)
	}
	if names := st.User.Extra["authentication.kubernetes.io/pod-name"]; len(names) > 0 && names[0] != pod {
		return "", status.Errorf(codes.PermissionDenied, "node %s claims pod %s but its token is bound to pod %s", node.ID, pod, names[0])
	}
	return AuthToken, nil
}

func (t *TokenAuthenticator) review(ctx context.Context, token string) (authnv1.TokenReviewStatus, error) {
	now := time.Now()
	t.mu.Lock()
	if c, ok := t.cache[token]; ok && now.Before(c.until) {
		t.mu.Unlock()
		return c.status, nil
	}
	t.mu.Unlock()
	res, err := t.Reviews.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{TokenAudience}}}, metav1.CreateOptions{})
	if err != nil {
		return authnv1.TokenReviewStatus{}, err
	}
	if res.Status.Authenticated && !contains(res.Status.Audiences, TokenAudience) {
		res.Status.Authenticated = false
		res.Status.Error = fmt.Sprintf("the token is not for audience %q", TokenAudience)
	}
	t.mu.Lock()
	if t.cache == nil || len(t.cache) > 10000 {
		t.cache = map[string]cachedReview{} // bounded: forget all rather than grow
	}
	t.cache[token] = cachedReview{status: res.Status, until: now.Add(time.Minute)}
	t.mu.Unlock()
	return res.Status, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
