package trust

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/xds"
)

// TestCertManagerTrustsOnlyThePinnedBundle (issue 13, item 6): with
// cert-manager, the trust bundle proxies are given and the roots the xDS
// server authenticates workload certificates with are exactly the CAs
// MeshConfig's spec.certificates.certManager.trustBundle names — not the
// built-in root, not whatever an issuer reports. A certificate with the
// victim's SPIFFE ID from another CA (a shared ClusterIssuer's) is
// refused naming the field; the bundle follows the Secret when it
// changes, and a bundle that cannot be read keeps the last good one.
func TestCertManagerTrustsOnlyThePinnedBundle(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns = "weft-system"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	_, c, cs := asController(t, env)
	builtinRoot, err := (&builtin.RootStore{Client: c, Namespace: ns, TrustDomain: translator.DefaultTrustDomain}).Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	meshCA := newTestCA(t, "mesh CA")
	sharedCA := newTestCA(t, "shared ClusterIssuer CA")
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mesh-ca"},
		Data: map[string][]byte{"ca.crt": certs.EncodeCertificatesPEM([]*x509.Certificate{meshCA.Cert})}}
	if err := env.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &v1alpha1.MeshConfig{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.MeshConfigName},
		Spec: v1alpha1.MeshConfigSpec{Certificates: v1alpha1.CertificatesConfig{Provider: v1alpha1.CertificateProviderCertManager,
			CertManager: &v1alpha1.CertManagerConfig{IssuerRef: v1alpha1.IssuerReference{Name: "shared", Kind: "ClusterIssuer", Group: "cert-manager.io"},
				TrustBundle: &v1alpha1.TrustBundleSource{Secret: &v1alpha1.KeyReference{Name: "mesh-ca", Key: "ca.crt"}}}}}}); err != nil {
		t.Fatal(err)
	}

	ads := xds.NewADS(logr.Discard())
	ads.Update(translator.Translate(&translator.Inputs{}).Mesh, time.Now())
	reports := startReports(t, ctx, cs, ns, "weft-controller-0")
	_, f, _, err := New(ads, c, ns, translator.DefaultTrustDomain, []string{"weft-controller"}, &ServingCert{}, reports, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	f.idlePoll = 200 * time.Millisecond
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Run(fctx) }()
	t.Cleanup(func() { stop(); <-done })

	bundleIs := func(want ...*x509.Certificate) func() error {
		return func() error {
			got := f.Bundle().Roots()
			if len(got) != len(want) {
				return fmt.Errorf("bundle has %d roots, want %d", len(got), len(want))
			}
			for i := range want {
				if !got[i].Equal(want[i]) {
					return fmt.Errorf("bundle root %d is %q, want %q", i, got[i].Subject, want[i].Subject)
				}
			}
			return nil
		}
	}
	testkit.Eventually(t, "the bundle is the pinned mesh CA only", bundleIs(meshCA.Cert))
	for _, r := range f.Bundle().Roots() {
		if r.Equal(builtinRoot.Cert) {
			t.Fatal("the built-in root is trusted in cert-manager mode")
		}
	}

	// The xDS server's certificate authenticator, wired as run.go does.
	auth := xds.CertificateAuthenticator{Roots: func() *x509.CertPool { return f.Bundle().Pool() }}
	node := xds.NodeInfo{ID: "cart-0.shop", TrustDomain: translator.DefaultTrustDomain, Proxy: dataplane.Proxy{Namespace: "shop", ServiceAccount: "cart"}}
	victim := "spiffe://cluster.local/ns/shop/sa/cart"
	forged := leafFrom(t, sharedCA, victim)
	err = auth.Authenticate(withPeerChain(ctx, forged), node)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "spec.certificates.certManager.trustBundle") || !strings.Contains(err.Error(), "shared ClusterIssuer CA") {
		t.Fatalf("a certificate for %s from the shared CA: %v; want Unauthenticated naming the pinned bundle and the certificate's issuer", victim, err)
	}
	if err := auth.Authenticate(withPeerChain(ctx, leafFrom(t, meshCA, victim)), node); err != nil {
		t.Fatalf("a certificate from the pinned CA: %v", err)
	}

	// The operator moves the pin: the bundle follows.
	secret.Data["ca.crt"] = certs.EncodeCertificatesPEM([]*x509.Certificate{sharedCA.Cert})
	if err := env.Client.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the bundle follows the Secret", bundleIs(sharedCA.Cert))

	// A key that holds no certificate keeps the last good bundle.
	secret.Data["ca.crt"] = []byte("not a certificate")
	if err := env.Client.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // five of the follower's polls
	if err := bundleIs(sharedCA.Cert)(); err != nil {
		t.Fatalf("after the Secret's key was broken: %v; want the last good bundle kept", err)
	}
}

func newTestCA(t *testing.T, name string) *builtin.KeyPair {
	t.Helper()
	kp, err := builtin.NewCA(name, time.Now(), time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func leafFrom(t *testing.T, ca *builtin.KeyPair, id string) []*x509.Certificate {
	t.Helper()
	ident, err := certs.ParseIdentity(id)
	if err != nil {
		t.Fatal(err)
	}
	key, err := certs.NewWorkloadKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := builtin.SignLeaf(ca, ident, key.Public(), time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{leaf}
}

// withPeerChain is the context of a stream on a TLS connection whose
// client presented chain, as gRPC's TLS credentials report it.
func withPeerChain(ctx context.Context, chain []*x509.Certificate) context.Context {
	return peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{}, AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: chain}}})
}
