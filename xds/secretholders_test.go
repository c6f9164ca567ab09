package xds_test

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/xds"
)

// bundleSecrets serves one trust bundle to every identity; the test
// changes it as a root rotation would.
type bundleSecrets struct {
	fakeSecrets
	bundle []byte
}

func (b *bundleSecrets) Material(id string) ([]byte, []byte, []byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return []byte("chain of " + id), []byte("key of " + id), b.bundle, true
}

func (b *bundleSecrets) set(bundle string) {
	b.mu.Lock()
	b.bundle = []byte(bundle)
	b.mu.Unlock()
}

// TestSecretHolders: a proxy counts as holding a bundle only once it has
// ACKed the response that carried it; a NACK or an unanswered response
// counts as holding nothing known; a proxy without a secret subscription
// is asked about holding nothing; the anonymous endpoint's proxies are not
// counted.
func TestSecretHolders(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	src := &bundleSecrets{fakeSecrets: fakeSecrets{acquired: map[string]int{}, version: map[string]string{}}, bundle: []byte("old")}
	ads.SetSecrets(src)
	ads.SetAuthenticator(acceptAll{})
	ads.Update(mesh(t, 10), time.Now())
	addr := serve(t, ads)

	holds := func(want string) func(xds.HeldSecrets) bool {
		return func(h xds.HeldSecrets) bool { return h.Bundle == nil || bytes.Equal(h.Bundle, []byte(want)) }
	}
	count := func() (int, int, int) {
		n, sat := ads.SecretHolders(holds("old"), holds("new"))
		return n, sat[0], sat[1]
	}
	subscribe := func(c *deltaClient) {
		if err := c.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType,
			ResourceNamesSubscribe: []string{dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret}}); err != nil {
			t.Fatal(err)
		}
	}

	a := dialDelta(t, addr, node("frontend-0.shop", "shop", "frontend"), nil)
	b := dialDelta(t, addr, node("ledger-0.other", "other", "ledger"), nil)
	a.settle()
	b.settle()
	// Neither has asked for secrets: both are asked about holding nothing.
	if n, old, nw := count(); n != 2 || old != 2 || nw != 2 {
		t.Fatalf("without subscriptions: %d proxies, %d hold old, %d hold new; want 2 2 2", n, old, nw)
	}
	subscribe(a)
	subscribe(b)
	a.settle()
	b.settle()
	if n, old, nw := count(); n != 2 || old != 2 || nw != 0 {
		t.Fatalf("after subscribing: %d proxies, %d hold old, %d hold new; want 2 2 0", n, old, nw)
	}

	// The bundle changes: until each proxy ACKs the new one, it holds
	// nothing known.
	src.set("new")
	ads.SecretsChanged("spiffe://cluster.local/ns/shop/sa/frontend")
	ads.SecretsChanged("spiffe://cluster.local/ns/other/sa/ledger")
	if _, old, nw := count(); old != 0 || nw != 0 {
		t.Fatalf("before any ACK: %d hold old, %d hold new; want 0 0 (content sent or pending is not held)", old, nw)
	}
	a.settle()
	if _, old, nw := count(); old != 0 || nw != 1 {
		t.Fatalf("after one ACK: %d hold old, %d hold new; want 0 1", old, nw)
	}
	b.nackTyp = resourcev3.SecretType
	b.settle()
	if _, _, nw := count(); nw != 1 {
		t.Fatalf("a NACKing proxy counted as holding the new bundle (%d)", nw)
	}

	// The plaintext endpoint's proxies get no secrets and are not counted.
	lisAddr := serveAnonymous(t, ads)
	anon := dialDelta(t, lisAddr, node("frontend-1.shop", "shop", "frontend"), nil)
	anon.settle()
	if n, _, _ := count(); n != 2 {
		t.Fatalf("%d proxies counted; the anonymous one must not be", n)
	}
}

func serveAnonymous(t *testing.T, ads *xds.ADS) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, ads.Anonymous())
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// dialSDS opens a stream that subscribes only to the two secrets, as
// weft agent (internal/certagent) does, and never answers: its responses
// stay unacknowledged.
func dialSDS(t *testing.T, addr string, n *corev3.Node) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: n, TypeUrl: resourcev3.SecretType,
		ResourceNamesSubscribe: []string{dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret}}); err != nil {
		t.Fatal(err)
	}
}

// TestSecretOnlyStreamsAreNotPolicyProxies: a stream that subscribes only
// to secrets (the certificate agent beside an application that has its
// own stream) holds no policy: Programmed neither waits for its secret
// ACK nor counts it as a proxy. It is still a connected proxy in the
// registry, and a secret holder for the root rotation.
func TestSecretOnlyStreamsAreNotPolicyProxies(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.SetSecrets(&bundleSecrets{fakeSecrets: fakeSecrets{acquired: map[string]int{}, version: map[string]string{}}, bundle: []byte("b")})
	ads.SetAuthenticator(acceptAll{})
	ads.Update(mesh(t, 10), time.Now())
	addr := serve(t, ads)
	app := dialDelta(t, addr, node("frontend-0.shop", "shop", "frontend"), nil)
	app.settle()
	dialSDS(t, addr, node("frontend-0.shop", "shop", "frontend"))
	eventually(t, func() bool {
		for _, p := range ads.Proxies() {
			if _, ok := p.Types["Secret"]; ok {
				return true
			}
		}
		return false
	}, "the secret-only stream to subscribe")

	ref := ir.PolicyRef{Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: 10}
	if st := ads.PolicyState(ref); st.Affected != 1 || !st.Programmed() {
		t.Fatalf("policy state %+v, want 1 affected proxy (the application's), programmed", st)
	}
	if n := len(ads.Proxies()); n != 2 {
		t.Fatalf("the registry lists %d streams, want 2", n)
	}
	if n, _ := ads.SecretHolders(func(xds.HeldSecrets) bool { return true }); n != 2 {
		t.Fatalf("SecretHolders looked at %d proxies, want 2 (the secret-only stream too)", n)
	}
}

// TestNackedSecretIsNotHeld: a Delta proxy that NACKed a bundle keeps its
// previous one, and a later ACK of another secret does not make the
// server believe it holds the rejected bundle: the root rotation's
// predicates do not count it, and the registry still shows the NACK. The
// rejected version is not re-sent; the next bundle is, and once it is
// ACKed the proxy holds it.
func TestNackedSecretIsNotHeld(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	src := &bundleSecrets{fakeSecrets: fakeSecrets{acquired: map[string]int{}, version: map[string]string{}}, bundle: []byte("old")}
	ads.SetSecrets(src)
	ads.SetAuthenticator(acceptAll{})
	ads.Update(mesh(t, 10), time.Now())
	addr := serve(t, ads)
	holds := func(want string) func(xds.HeldSecrets) bool {
		return func(h xds.HeldSecrets) bool { return bytes.Equal(h.Bundle, []byte(want)) }
	}
	count := func() (int, int, int) {
		_, sat := ads.SecretHolders(holds("old"), holds("new"), holds("newer"))
		return sat[0], sat[1], sat[2]
	}
	secretState := func() xds.TypeStatus { return ads.Proxies()[0].Types["Secret"] }
	subscribe := func(c *deltaClient, name string) {
		if err := c.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: []string{name}}); err != nil {
			t.Fatal(err)
		}
	}
	const id = "spiffe://cluster.local/ns/shop/sa/frontend"

	c := dialDelta(t, addr, node("frontend-0.shop", "shop", "frontend"), nil)
	c.settle()
	subscribe(c, dataplane.TrustBundleSecret)
	c.settle()
	if old, nw, _ := count(); old != 1 || nw != 0 {
		t.Fatalf("after the first bundle: %d hold old, %d new; want 1 0", old, nw)
	}

	// The proxy rejects the new bundle, then subscribes to its certificate
	// and accepts it: it still holds the old bundle.
	src.set("new")
	ads.SecretsChanged(id)
	c.nackTyp = resourcev3.SecretType
	if n := c.settle(); n != 1 {
		t.Fatalf("%d secret responses for the new bundle, want 1", n)
	}
	c.nackTyp = ""
	subscribe(c, dataplane.WorkloadCertSecret)
	c.settle()
	if _, nw, _ := count(); nw != 0 {
		t.Fatalf("%d proxies counted as holding the bundle they rejected", nw)
	}
	if st := secretState(); st.State != xds.Nacked || st.Nack == nil {
		t.Fatalf("secrets after a NACK and an ACK of another secret: %+v, want NACKED (the rejected bundle is not held)", st)
	}
	if c.have[resourcev3.SecretType][dataplane.WorkloadCertSecret] == "" {
		t.Fatal("the certificate was not sent")
	}

	// The next change re-sends nothing rejected; the next bundle arrives,
	// and once ACKed it is held and the NACK is over.
	ads.Update(mesh(t, 20), time.Now())
	c.settle()
	if c.count[resourcev3.SecretType] != 3 {
		t.Fatalf("%d secret responses, want 3 (first bundle, rejected bundle, certificate): the rejected one was sent again", c.count[resourcev3.SecretType])
	}
	src.set("newer")
	ads.SecretsChanged(id)
	c.settle()
	if old, nw, newer := count(); old != 0 || nw != 0 || newer != 1 {
		t.Fatalf("after the newer bundle's ACK: %d old, %d new, %d newer; want 0 0 1", old, nw, newer)
	}
	if st := secretState(); st.State != xds.Synced {
		t.Fatalf("secrets after the newer bundle's ACK: %+v, want SYNCED", st)
	}
}
