package xds_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/xds"
)

// reviewer plays the API server's TokenReview for the decision logic; the
// e2e rollout test runs the real TokenReview against a real API server.
type reviewer struct {
	calls  int
	tokens map[string]authnv1.TokenReviewStatus
}

func (r *reviewer) Create(_ context.Context, tr *authnv1.TokenReview, _ metav1.CreateOptions) (*authnv1.TokenReview, error) {
	r.calls++
	st, ok := r.tokens[tr.Spec.Token]
	if !ok {
		st = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
	}
	return &authnv1.TokenReview{Status: st}, nil
}

func TestTokenAuthenticator(t *testing.T) {
	sa := func(ns, name string, aud []string, extra map[string]authnv1.ExtraValue) authnv1.TokenReviewStatus {
		return authnv1.TokenReviewStatus{Authenticated: true, Audiences: aud,
			User: authnv1.UserInfo{Username: "system:serviceaccount:" + ns + ":" + name, Extra: extra}}
	}
	r := &reviewer{tokens: map[string]authnv1.TokenReviewStatus{
		"frontend":     sa("shop", "frontend", []string{"weft"}, map[string]authnv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"frontend-0"}}),
		"other-aud":    sa("shop", "frontend", []string{"https://kubernetes.default.svc"}, nil),
		"ledger":       sa("other", "ledger", []string{"weft"}, nil),
		"frontend-pod": sa("shop", "frontend", []string{"weft"}, map[string]authnv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"frontend-9"}}),
	}}
	auth := &xds.TokenAuthenticator{Reviews: r}
	node := xds.NodeInfo{ID: "frontend-0.shop", Proxy: dataplane.Proxy{Namespace: "shop", ServiceAccount: "frontend"}}
	cases := []struct {
		token string
		code  codes.Code
		msg   string
	}{
		{"frontend", codes.OK, ""},
		{"", codes.Unauthenticated, `audience "weft"`},
		{"garbage", codes.Unauthenticated, "invalid bearer token"},
		{"other-aud", codes.Unauthenticated, `not for audience "weft"`},
		{"ledger", codes.PermissionDenied, "system:serviceaccount:other:ledger"},
		{"frontend-pod", codes.PermissionDenied, "bound to pod frontend-9"},
	}
	for _, tc := range cases {
		ctx := context.Background()
		if tc.token != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tc.token))
		}
		err := auth.Authenticate(ctx, node)
		if status.Code(err) != tc.code || (tc.msg != "" && !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("token %q: %v, want %v mentioning %q", tc.token, err, tc.code, tc.msg)
		}
	}
	// A pod name may contain dots (it is a DNS subdomain): the pod is the
	// node id without its ".<namespace>" suffix.
	dotted := &xds.TokenAuthenticator{Reviews: &reviewer{tokens: map[string]authnv1.TokenReviewStatus{
		"dotted": sa("shop", "frontend", []string{"weft"}, map[string]authnv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"frontend.v2-0"}}),
	}}}
	withToken := func(tok string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
	}
	dottedNode := node
	dottedNode.ID = "frontend.v2-0.shop"
	if err := dotted.Authenticate(withToken("dotted"), dottedNode); err != nil {
		t.Errorf("pod frontend.v2-0 with its bound token: %v", err)
	}
	// A node id that does not end with its namespace is refused, naming
	// node.id and the form it must have.
	for _, id := range []string{"frontend.v2-0.other", "frontend-0", ".shop", "shop"} {
		n := node
		n.ID = id
		err := dotted.Authenticate(withToken("dotted"), n)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `node.id "`+id+`"`) || !strings.Contains(err.Error(), "<pod>.shop") {
			t.Errorf("node id %q: %v, want InvalidArgument naming node.id and <pod>.shop", id, err)
		}
	}

	// A reconnect with the same token is not reviewed again.
	calls := r.calls
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer frontend"))
	if err := auth.Authenticate(ctx, node); err != nil || r.calls != calls {
		t.Fatalf("cached token: err %v, %d more reviews", err, r.calls-calls)
	}
}

// leafChain signs a workload certificate for id under an intermediate of
// root, as the built-in CA does: leaf first.
func leafChain(t *testing.T, root *builtin.KeyPair, id string, notAfter time.Duration) []*x509.Certificate {
	t.Helper()
	ident, err := certs.ParseIdentity(id)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := builtin.NewIntermediate(root, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := certs.NewWorkloadKey()
	if err != nil {
		t.Fatal(err)
	}
	// A lifetime that ends before now makes an expired certificate.
	now := time.Now()
	if notAfter < 0 {
		now = now.Add(2 * notAfter)
	}
	leaf, err := builtin.SignLeaf(inter, ident, key.Public(), now, max(notAfter, -notAfter))
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{leaf, inter.Cert}
}

// withPeer is the context of a stream on a TLS connection whose client
// presented chain (none when nil), as gRPC's TLS credentials report it.
func withPeer(ctx context.Context, chain []*x509.Certificate) context.Context {
	return peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{}, AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: chain}}})
}

// TestCertificateAuthenticator: a client certificate proves the node's
// identity when it verifies against the bundle read at that moment and
// carries the node's SPIFFE ID; a certificate for another identity, trust
// domain or CA is refused with a status that names what to fix; no
// certificate lets a Chain fall through to the token, and neither is
// refused naming both.
func TestCertificateAuthenticator(t *testing.T) {
	mesh, err := builtin.NewRoot("cluster.local", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := builtin.NewRoot("cluster.local", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The bundle is read through the callback at every stream.
	bundle := []*x509.Certificate{mesh.Cert}
	roots := func() *x509.CertPool {
		p := x509.NewCertPool()
		for _, r := range bundle {
			p.AddCert(r)
		}
		return p
	}
	certAuth := xds.CertificateAuthenticator{Roots: roots}
	chain := xds.Chain{certAuth, &xds.TokenAuthenticator{Reviews: &reviewer{tokens: map[string]authnv1.TokenReviewStatus{
		"frontend": {Authenticated: true, Audiences: []string{"weft"}, User: authnv1.UserInfo{Username: "system:serviceaccount:shop:frontend"}},
	}}}}
	node := xds.NodeInfo{ID: "frontend-0.shop", TrustDomain: "cluster.local", Proxy: dataplane.Proxy{Namespace: "shop", ServiceAccount: "frontend"}}
	frontend := leafChain(t, mesh, "spiffe://cluster.local/ns/shop/sa/frontend", time.Hour)
	otherRootLeaf := leafChain(t, other, "spiffe://cluster.local/ns/shop/sa/frontend", time.Hour)

	cases := []struct {
		name   string
		chain  []*x509.Certificate
		token  string
		node   func(*xds.NodeInfo)
		bundle []*x509.Certificate
		auth   xds.Authenticator
		code   codes.Code
		msg    []string
	}{
		{name: "the node's certificate", chain: frontend, code: codes.OK},
		{name: "the node's certificate, no token needed", chain: frontend, auth: chain, code: codes.OK},
		{name: "another service account", chain: leafChain(t, mesh, "spiffe://cluster.local/ns/shop/sa/ledger", time.Hour), code: codes.PermissionDenied,
			msg: []string{"frontend-0.shop", "claims spiffe://cluster.local/ns/shop/sa/frontend", "proves spiffe://cluster.local/ns/shop/sa/ledger"}},
		{name: "another namespace", chain: leafChain(t, mesh, "spiffe://cluster.local/ns/other/sa/frontend", time.Hour), code: codes.PermissionDenied,
			msg: []string{"proves spiffe://cluster.local/ns/other/sa/frontend"}},
		{name: "another trust domain", chain: leafChain(t, mesh, "spiffe://example.org/ns/shop/sa/frontend", time.Hour), code: codes.PermissionDenied,
			msg: []string{"proves spiffe://example.org/ns/shop/sa/frontend"}},
		{name: "a certificate that proves another identity is refused even with a valid token",
			chain: leafChain(t, mesh, "spiffe://cluster.local/ns/shop/sa/ledger", time.Hour), token: "frontend", auth: chain, code: codes.PermissionDenied},
		{name: "a CA outside the bundle", chain: otherRootLeaf, code: codes.Unauthenticated,
			msg: []string{"frontend-0.shop", "does not verify against the mesh's trust bundle"}},
		{name: "a root added to the bundle is trusted at the next stream", chain: otherRootLeaf, bundle: []*x509.Certificate{mesh.Cert, other.Cert}, code: codes.OK},
		{name: "a root removed from the bundle is not", chain: frontend, bundle: []*x509.Certificate{other.Cert}, code: codes.Unauthenticated, msg: []string{"does not verify"}},
		{name: "the leaf without the intermediate", chain: frontend[:1], code: codes.Unauthenticated, msg: []string{"does not verify"}},
		{name: "expired", chain: leafChain(t, mesh, "spiffe://cluster.local/ns/shop/sa/frontend", -time.Hour), code: codes.Unauthenticated, msg: []string{"expired"}},
		{name: "the mesh root itself is not a workload certificate", chain: []*x509.Certificate{mesh.Cert}, code: codes.Unauthenticated},
		{name: "no trust domain yet", chain: frontend, node: func(n *xds.NodeInfo) { n.TrustDomain = "" }, code: codes.Unavailable, msg: []string{"trust domain"}},
		{name: "no certificate", code: codes.Unauthenticated, msg: []string{"frontend-0.shop sent no client certificate", "workload certificate"}},
		{name: "no certificate: the token decides", token: "frontend", auth: chain, code: codes.OK},
		{name: "no certificate, a bad token", token: "garbage", auth: chain, code: codes.Unauthenticated, msg: []string{"rejected its token"}},
		{name: "neither", auth: chain, code: codes.Unauthenticated,
			msg: []string{"frontend-0.shop sent no credential", "workload certificate", `audience "weft"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bundle = []*x509.Certificate{mesh.Cert}
			if tc.bundle != nil {
				bundle = tc.bundle
			}
			n := node
			if tc.node != nil {
				tc.node(&n)
			}
			auth := tc.auth
			if auth == nil {
				auth = certAuth
			}
			ctx := context.Background()
			if tc.token != "" {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tc.token))
			}
			err := auth.Authenticate(withPeer(ctx, tc.chain), n)
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("%q does not say %q", err, m)
				}
			}
		})
	}
}
