package xds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/xds"
)

// fakeSecrets stands in for the certs Manager (tested on its own in
// certs/): it hands out distinct material per identity and counts
// acquisitions.
type fakeSecrets struct {
	mu       sync.Mutex
	acquired map[string]int
	version  map[string]string
}

func (f *fakeSecrets) Acquire(id string) { f.mu.Lock(); f.acquired[id]++; f.mu.Unlock() }
func (f *fakeSecrets) Release(id string) { f.mu.Lock(); f.acquired[id]--; f.mu.Unlock() }
func (f *fakeSecrets) Material(id string) ([]byte, []byte, []byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []byte("chain of " + id + f.version[id]), []byte("key of " + id + f.version[id]), []byte("bundle"), true
}

// TestSecretsOnlyForTheProxysIdentity: a sidecar receives its own
// identity's key by SDS, never another's; a renewal pushes only the
// secret; the last proxy to leave releases the identity.
func TestSecretsOnlyForTheProxysIdentity(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	src := &fakeSecrets{acquired: map[string]int{}, version: map[string]string{}}
	ads.SetSecrets(src)
	ads.SetAuthenticator(acceptAll{})
	ads.Update(mesh(t, 10), time.Now())
	addr := serve(t, ads)

	frontend := dialDelta(t, addr, node("frontend-0.shop", "shop", "frontend"), nil)
	other := dialDelta(t, addr, node("ledger-0.other", "other", "ledger"), nil)
	for _, c := range []*deltaClient{frontend, other} {
		if err := c.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType,
			ResourceNamesSubscribe: []string{dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret}}); err != nil {
			t.Fatal(err)
		}
		c.settle()
	}
	key := func(c *deltaClient) string {
		t.Helper()
		for _, r := range c.lastSecrets {
			var s tlsv3.Secret
			if err := r.Resource.UnmarshalTo(&s); err != nil {
				t.Fatal(err)
			}
			if s.Name == dataplane.WorkloadCertSecret {
				return string(s.GetTlsCertificate().GetPrivateKey().GetInlineBytes())
			}
		}
		return ""
	}
	if got, want := key(frontend), "key of spiffe://cluster.local/ns/shop/sa/frontend"; got != want {
		t.Fatalf("frontend's key = %q, want %q", got, want)
	}
	if got, want := key(other), "key of spiffe://cluster.local/ns/other/sa/ledger"; got != want {
		t.Fatalf("ledger's key = %q, want %q", got, want)
	}

	// A renewal of frontend's certificate: frontend gets exactly one
	// response, the secret; ledger gets nothing.
	before := map[string]int{}
	for k, v := range frontend.count {
		before[k] = v
	}
	src.mu.Lock()
	src.version["spiffe://cluster.local/ns/shop/sa/frontend"] = " v2"
	src.mu.Unlock()
	ads.SecretsChanged("spiffe://cluster.local/ns/shop/sa/frontend")
	frontend.settle()
	if n := other.settle(); n != 0 {
		t.Fatalf("another identity's proxy got %d responses for frontend's renewal", n)
	}
	for typ, n := range frontend.count {
		if typ != resourcev3.SecretType && n != before[typ] {
			t.Errorf("renewal re-sent %s", typ)
		}
	}
	if frontend.count[resourcev3.SecretType] != before[resourcev3.SecretType]+1 {
		t.Fatalf("renewal sent %d secret responses, want 1", frontend.count[resourcev3.SecretType]-before[resourcev3.SecretType])
	}
	if got := key(frontend); got != "key of spiffe://cluster.local/ns/shop/sa/frontend v2" {
		t.Fatalf("after renewal frontend holds %q", got)
	}
	src.mu.Lock()
	acquired := src.acquired["spiffe://cluster.local/ns/shop/sa/frontend"]
	src.mu.Unlock()
	if acquired != 1 {
		t.Fatalf("frontend's identity acquired %d times, want 1", acquired)
	}
}

// TestDebugEndpoints: proxy status and a config dump that never shows key
// material, unambiguous when streams share a node id.
func TestDebugEndpoints(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.SetSecrets(&fakeSecrets{acquired: map[string]int{}, version: map[string]string{}})
	ads.SetAuthenticator(acceptAll{})
	ads.Update(mesh(t, 10), time.Now())
	srvAddr := serve(t, ads)
	c := dialDelta(t, srvAddr, node("frontend-0.shop", "shop", "frontend"), nil)
	if err := c.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: []string{dataplane.WorkloadCertSecret}}); err != nil {
		t.Fatal(err)
	}
	c.settle()
	srv := httptest.NewServer(ads.DebugHandler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/debug/proxies")
	if code != 200 || !strings.Contains(body, `"id": "frontend-0.shop"`) || !strings.Contains(body, `"state": "SYNCED"`) {
		t.Fatalf("/debug/proxies = %d %s", code, body)
	}
	code, body = get("/debug/config_dump?proxy=frontend-0.shop")
	if code != 200 || !strings.Contains(body, "outbound|80||checkout.shop.svc.cluster.local") || !strings.Contains(body, `"content": "REDACTED"`) {
		t.Fatalf("config dump = %d %.300s", code, body)
	}
	if strings.Contains(body, "key of") {
		t.Fatal("the config dump shows a private key")
	}
	if code, body = get("/debug/config_dump?proxy=nobody"); code != http.StatusNotFound || !strings.Contains(body, "/debug/proxies") {
		t.Fatalf("unknown proxy = %d %s", code, body)
	}

	// A second stream with the same node id and configuration (a pod's
	// application and its agent): the dump is still unambiguous.
	twin := dialDelta(t, srvAddr, node("frontend-0.shop", "shop", "frontend"), nil)
	twin.settle()
	if code, body = get("/debug/config_dump?proxy=frontend-0.shop"); code != 200 || !strings.Contains(body, `"content": "REDACTED"`) {
		t.Fatalf("two streams, one configuration: %d %.300s", code, body)
	}
	// A third on the anonymous endpoint is served another configuration
	// (no secrets): the id alone is ambiguous, and the stream number from
	// /debug/proxies names one.
	anon := dialDelta(t, serveAnonymous(t, ads), node("frontend-0.shop", "shop", "frontend"), nil)
	anon.settle()
	var proxies []xds.ProxyStatus
	if _, body = get("/debug/proxies"); json.Unmarshal([]byte(body), &proxies) != nil || len(proxies) != 3 {
		t.Fatalf("/debug/proxies with three streams: %s", body)
	}
	var anonStream, authStream uint64
	for _, p := range proxies {
		if p.Stream == 0 {
			t.Fatalf("%s has no stream number", p.ID)
		}
		if p.Auth == xds.AuthNone {
			anonStream = p.Stream
		} else {
			authStream = p.Stream
		}
	}
	code, body = get("/debug/config_dump?proxy=frontend-0.shop")
	if code != http.StatusConflict || !strings.Contains(body, fmt.Sprintf("stream %d", anonStream)) || !strings.Contains(body, "&stream=") {
		t.Fatalf("an id with two configurations = %d %s, want 409 listing the streams", code, body)
	}
	code, body = get(fmt.Sprintf("/debug/config_dump?proxy=frontend-0.shop&stream=%d", anonStream))
	if code != 200 || strings.Contains(body, "REDACTED") || !strings.Contains(body, "outbound|80||checkout.shop.svc.cluster.local") {
		t.Fatalf("the anonymous stream's dump = %d %.300s, want configuration without secrets", code, body)
	}
	if code, body = get(fmt.Sprintf("/debug/config_dump?proxy=frontend-0.shop&stream=%d", authStream)); code != 200 || !strings.Contains(body, "REDACTED") {
		t.Fatalf("the authenticated stream's dump = %d %.300s, want its secrets by name", code, body)
	}
	if code, body = get("/debug/config_dump?proxy=frontend-0.shop&stream=x"); code != http.StatusBadRequest || !strings.Contains(body, "/debug/proxies") {
		t.Fatalf("a bad stream number = %d %s", code, body)
	}
	if code, _ = get("/debug/config_dump?proxy=ledger-0.other&stream=" + fmt.Sprint(anonStream)); code != http.StatusNotFound {
		t.Fatalf("another proxy's stream number = %d, want 404", code)
	}
}

// acceptAll stands for an authenticator that vouched for the stream (the
// token authenticator has its own tests).
type acceptAll struct{}

func (acceptAll) Authenticate(context.Context, xds.NodeInfo) error { return nil }

// TestNoSecretsWithoutAuthentication: without an authenticator any stream
// could claim any identity, so no key is ever served.
func TestNoSecretsWithoutAuthentication(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.SetSecrets(&fakeSecrets{acquired: map[string]int{}, version: map[string]string{}})
	ads.Update(mesh(t, 10), time.Now())
	c := dialDelta(t, serve(t, ads), node("frontend-0.shop", "shop", "frontend"), nil)
	if err := c.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: []string{dataplane.WorkloadCertSecret}}); err != nil {
		t.Fatal(err)
	}
	c.settle()
	if c.count[resourcev3.SecretType] != 0 {
		t.Fatal("an unauthenticated stream received a secret")
	}
}

// TestAnonymousEndpointGetsNoSecrets: the unauthenticated (plaintext)
// endpoint serves configuration but never a key, even for an identity whose
// authenticated proxies are connected on the other endpoint.
func TestAnonymousEndpointGetsNoSecrets(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.SetSecrets(&fakeSecrets{acquired: map[string]int{}, version: map[string]string{}})
	ads.SetAuthenticator(acceptAll{})
	ads.Update(mesh(t, 10), time.Now())
	authenticated := dialDelta(t, serve(t, ads), node("frontend-0.shop", "shop", "frontend"), nil)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, ads.Anonymous())
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	anon := dialDelta(t, lis.Addr().String(), node("frontend-1.shop", "shop", "frontend"), nil)
	for _, c := range []*deltaClient{authenticated, anon} {
		if err := c.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: []string{dataplane.WorkloadCertSecret}}); err != nil {
			t.Fatal(err)
		}
		c.settle()
	}
	if authenticated.count[resourcev3.SecretType] != 1 {
		t.Fatalf("the authenticated proxy got %d secret responses, want 1", authenticated.count[resourcev3.SecretType])
	}
	if anon.count[resourcev3.SecretType] != 0 || anon.count[resourcev3.ClusterType] == 0 {
		t.Fatalf("the anonymous proxy got %v: want configuration and no secret", anon.count)
	}
}
