package xds_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/xds"
)

// saReviewer vouches for every token that starts with "good-" (as
// shop/frontend, audience weft), counting reviews; safe for concurrent use.
type saReviewer struct {
	mu    sync.Mutex
	calls int
}

func (r *saReviewer) Create(_ context.Context, tr *authnv1.TokenReview, _ metav1.CreateOptions) (*authnv1.TokenReview, error) {
	r.mu.Lock()
	r.calls++
	r.mu.Unlock()
	if strings.HasPrefix(tr.Spec.Token, "good-") || strings.Count(tr.Spec.Token, ".") == 2 {
		return &authnv1.TokenReview{Status: authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"weft"},
			User: authnv1.UserInfo{Username: "system:serviceaccount:shop:frontend"}}}, nil
	}
	return &authnv1.TokenReview{Status: authnv1.TokenReviewStatus{Error: "invalid bearer token"}}, nil
}

func (r *saReviewer) count() int { r.mu.Lock(); defer r.mu.Unlock(); return r.calls }

func fromPeer(ip, token string) context.Context {
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}})
	return metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+token))
}

// TestTokenAuthenticatorLimits: issue 13 — the token cache kept raw tokens
// until 10,000 entries and never evicted expired ones; token size was
// bounded only by gRPC's header limit; anyone could flood unique bogus
// tokens to starve real sidecars.
func TestTokenAuthenticatorLimits(t *testing.T) {
	frontend := frontend()
	r := &saReviewer{}
	auth := &xds.TokenAuthenticator{Reviews: r}

	// A 1 MiB token is refused without a review.
	huge := strings.Repeat("j", 1<<20)
	if err := auth.Authenticate(fromPeer("10.0.0.1", huge), frontend); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "xds.MaxTokenBytes") || r.count() != 0 {
		t.Fatalf("1 MiB token: %v after %d reviews; want Unauthenticated naming xds.MaxTokenBytes, no review", err, r.count())
	}

	// The cache holds hashes, never tokens.
	const secret = "good-secret-token-value"
	if err := auth.Authenticate(fromPeer("10.0.0.2", secret), frontend); err != nil {
		t.Fatal(err)
	}
	if keys, _ := xds.TokenCacheKeys(auth); strings.Contains(keys, secret) || strings.Contains(keys, "secret-token") {
		t.Fatal("the token cache holds a raw token")
	}

	// One peer flooding unique bogus tokens: PeerReviewBurst reviews, the
	// rest refused with ResourceExhausted; another peer is not starved.
	before := r.count()
	refused := 0
	for i := range 1000 {
		err := auth.Authenticate(fromPeer("10.9.9.9", fmt.Sprintf("bogus-%d", i)), frontend)
		if status.Code(err) == codes.ResourceExhausted {
			refused++
		}
	}
	got := r.count() - before
	t.Logf("1,000 unique bogus tokens from one address: %d reviewed, %d refused with ResourceExhausted", got, refused)
	if got > xds.PeerReviewBurst+5 || refused < 1000-xds.PeerReviewBurst-5 {
		t.Errorf("1,000 unique bogus tokens from one address: %d reviews, %d refused; want at most %d reviews", got, refused, xds.PeerReviewBurst+5)
	}
	if err := auth.Authenticate(fromPeer("10.0.0.3", "good-other"), frontend); err != nil {
		t.Errorf("a real sidecar on another address after the flood: %v", err)
	}

	// The cache stays bounded: 25,000 distinct valid tokens from 2,500 pods.
	for i := range 25000 {
		ip := fmt.Sprintf("10.1.%d.%d", i/10/250, i/10%250)
		if err := auth.Authenticate(fromPeer(ip, fmt.Sprintf("good-%d", i)), frontend); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
	}
	if _, n := xds.TokenCacheKeys(auth); n > xds.MaxTokenCacheEntries {
		t.Errorf("the token cache holds %d entries, more than %d", n, xds.MaxTokenCacheEntries)
	}
}

// jwt makes a JWT-shaped token whose exp claim is exp (the reviewer above
// vouches for any).
func jwt(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(fmt.Sprintf(`{"exp":%d,"sub":"system:serviceaccount:shop:frontend"}`, exp.Unix()))) + ".sig"
}

// TestStreamEndsWithItsCredential: issue 13 — a stream outlived its
// one-hour token. A token-authenticated stream now ends when the token
// expires (the proxy reconnects with its current token), and a
// certificate-authenticated one is bound to the certificate's NotAfter.
func TestStreamEndsWithItsCredential(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.SetAuthenticator(&xds.TokenAuthenticator{Reviews: &saReviewer{}})
	ads.Update(mesh(t, 10), time.Now())
	cc, err := grpc.NewClient(serve(t, ads), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	exp := time.Now().Add(2 * time.Second)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+jwt(exp))
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node("frontend-0.shop", "shop", "frontend"), TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	var end error
	for end == nil {
		_, end = s.Recv()
	}
	at := time.Since(exp)
	if status.Code(end) != codes.Unauthenticated || !strings.Contains(end.Error(), "expired") || at < -time.Second || at > 3*time.Second {
		t.Fatalf("stream with a token expiring at +2s ended %v after the expiry with %v; want Unauthenticated at the expiry", at, end)
	}

	// A certificate's lifetime is the stream's.
	root, err := builtin.NewRoot("cluster.local", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chain := leafChain(t, root, "spiffe://cluster.local/ns/shop/sa/frontend", 90*time.Minute)
	certAuth := xds.CertificateAuthenticator{Roots: func() *x509.CertPool { p := x509.NewCertPool(); p.AddCert(root.Cert); return p }}
	n := frontend()
	n.TrustDomain = "cluster.local"
	method, until, err := xds.Authenticate(withPeer(context.Background(), chain), certAuth, n)
	if err != nil || method != xds.AuthCertificate || !until.Equal(chain[0].NotAfter) {
		t.Fatalf("certificate: method %q until %v, err %v; want %q until the certificate's NotAfter %v", method, until, err, xds.AuthCertificate, chain[0].NotAfter)
	}
}

func frontend() xds.NodeInfo {
	return xds.NodeInfo{ID: "frontend-0.shop", Proxy: dataplane.Proxy{Namespace: "shop", ServiceAccount: "frontend"}}
}

// TestDeletedServiceAccountForgetsCachedTokens: a token review is cached
// for a minute; once the service account is gone, a stream reconnecting
// with its token must be reviewed again (the API server then refuses it),
// not admitted from the cache.
func TestDeletedServiceAccountForgetsCachedTokens(t *testing.T) {
	r := &saReviewer{}
	auth := &xds.TokenAuthenticator{Reviews: r}
	ads := xds.NewADS(logr.Discard())
	ads.SetAuthenticator(xds.Chain{auth})
	if err := auth.Authenticate(fromPeer("10.0.0.2", "good-1"), frontend()); err != nil {
		t.Fatal(err)
	}
	if err := auth.Authenticate(fromPeer("10.0.0.2", "good-1"), frontend()); err != nil || r.count() != 1 {
		t.Fatalf("second presentation: %v after %d reviews; want the cached review", err, r.count())
	}
	ads.ServiceAccountGone("other", "frontend") // another namespace's: kept
	if _, n := xds.TokenCacheKeys(auth); n != 1 {
		t.Fatalf("another namespace's deletion dropped the cached review")
	}
	ads.ServiceAccountGone("shop", "frontend")
	if _, n := xds.TokenCacheKeys(auth); n != 0 {
		t.Fatalf("%d cached reviews after the service account was deleted, want 0", n)
	}
	if err := auth.Authenticate(fromPeer("10.0.0.2", "good-1"), frontend()); err != nil || r.count() != 2 {
		t.Errorf("after the deletion: %v after %d reviews; want a new review (2)", err, r.count())
	}
}

// podReviewer vouches for tokens "pod-<name>" as pod-bound tokens of
// shop/frontend's pod <name>, counting reviews.
type podReviewer struct{ saReviewer }

func (r *podReviewer) Create(ctx context.Context, tr *authnv1.TokenReview, o metav1.CreateOptions) (*authnv1.TokenReview, error) {
	res, err := r.saReviewer.Create(ctx, tr, o)
	if pod, ok := strings.CutPrefix(tr.Spec.Token, "good-pod-"); ok && err == nil {
		res.Status.User.Extra = map[string]authnv1.ExtraValue{"authentication.kubernetes.io/pod-name": {pod}}
	}
	return res, err
}

// TestDeletedPodForgetsCachedTokens: PodGone ended a deleted pod's
// streams, but its pod-bound token's review stayed cached for a minute,
// so whoever held the token could reconnect at once and be admitted from
// the cache (and served the identity's key) although the API server
// refuses it. The reviews of tokens bound to that pod are forgotten now;
// other pods' are kept.
func TestDeletedPodForgetsCachedTokens(t *testing.T) {
	r := &podReviewer{}
	auth := &xds.TokenAuthenticator{Reviews: r}
	ads := xds.NewADS(logr.Discard())
	ads.SetAuthenticator(xds.Chain{auth})
	other := xds.NodeInfo{ID: "frontend-1.shop", Proxy: dataplane.Proxy{Namespace: "shop", ServiceAccount: "frontend"}}
	for _, c := range []struct {
		token string
		node  xds.NodeInfo
	}{{"good-pod-frontend-0", frontend()}, {"good-pod-frontend-1", other}} {
		if err := auth.Authenticate(fromPeer("10.0.0.2", c.token), c.node); err != nil {
			t.Fatal(err)
		}
	}
	ads.PodGone("other", "frontend-0") // another namespace's pod: kept
	if _, n := xds.TokenCacheKeys(auth); n != 2 {
		t.Fatalf("another namespace's pod deletion left %d cached reviews, want 2", n)
	}
	ads.PodGone("shop", "frontend-0")
	if _, n := xds.TokenCacheKeys(auth); n != 1 {
		t.Fatalf("%d cached reviews after pod frontend-0 was deleted, want 1 (frontend-1's)", n)
	}
	if err := auth.Authenticate(fromPeer("10.0.0.2", "good-pod-frontend-0"), frontend()); err != nil || r.count() != 3 {
		t.Errorf("after the deletion: %v after %d reviews; want a new review (3)", err, r.count())
	}
}
