package xds_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	authnv1 "k8s.io/api/authentication/v1"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/certagent"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/internal/testing/testpki"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	weftxds "github.com/weftmesh/weft/xds"
)

// caSecrets is a SecretSource with real key material, signed by a
// built-in CA root on Acquire and on renew (the certs Manager has its own
// tests; here the point is what reaches the agent). spoil makes an
// identity's material unusable (a key that is not the certificate's).
type caSecrets struct {
	t    *testing.T
	root *builtin.KeyPair
	mu   sync.Mutex
	mat  map[string][3][]byte
}

func (s *caSecrets) Acquire(id string) { s.issue(id, false) }
func (s *caSecrets) Release(string)    {}
func (s *caSecrets) Material(id string) ([]byte, []byte, []byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.mat[id]
	return m[0], m[1], m[2], ok
}

func (s *caSecrets) issue(id string, spoil bool) {
	ident, err := certs.ParseIdentity(id)
	if err != nil {
		s.t.Error(err)
		return
	}
	key, _ := certs.NewWorkloadKey()
	leaf, err := builtin.SignLeaf(s.root, ident, key.Public(), time.Now(), time.Hour)
	if err != nil {
		s.t.Error(err)
		return
	}
	if spoil {
		key, _ = certs.NewWorkloadKey()
	}
	keyPEM, _ := certs.EncodeKeyPEM(key)
	s.mu.Lock()
	s.mat[id] = [3][]byte{certs.EncodeCertificatesPEM([]*x509.Certificate{leaf}), keyPEM, certs.EncodeCertificatesPEM([]*x509.Certificate{s.root.Cert})}
	s.mu.Unlock()
}

// serveADS serves ads authenticated over TLS, as weft-controller's :15012
// (certificate for weft-controller.weft-system.svc and localhost from a
// test CA, whose root it returns as a file; client certificates asked
// for, not required), and anonymous over plaintext, as :15010. tlsAddr
// names localhost, so that gRPC, which verifies the server by the
// address's host, can dial it.
func serveADS(t *testing.T, ads *weftxds.ADS) (tlsAddr, rootFile, plainAddr string) {
	t.Helper()
	ca := testpki.NewCA(t)
	f := ca.IssueDNS(t, t.TempDir(), []string{"weft-controller.weft-system.svc", "localhost"})
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	lis := testkit.ServeADS(t, ads, weftxds.ResponseCodec(), grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert})))
	plain := testkit.ServeADS(t, ads.Anonymous(), weftxds.ResponseCodec())
	return net.JoinHostPort("localhost", strconv.Itoa(lis.(*net.TCPAddr).Port)), f.CA, plain.String()
}

// agentTokens are the tokens startAgent's agents send, as the API server
// would review them (TokenReview is tested for real in test/e2e).
func agentTokens(sas ...string) *reviewer {
	r := &reviewer{tokens: map[string]authnv1.TokenReviewStatus{}}
	for _, sa := range sas {
		r.tokens["token-"+sa] = authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{weftxds.TokenAudience},
			User: authnv1.UserInfo{Username: "system:serviceaccount:shop:" + sa}}
	}
	return r
}

// startAgent runs weft's certificate agent for shop/sa, as `weft agent`
// does, and returns it, the application's bootstrap (its own xDS stream
// on the TLS endpoint, authenticated by the agent's files) and the
// agent's output directory.
func startAgent(t *testing.T, ctx context.Context, tlsAddr, rootFile, sa string) (*certagent.Agent, []byte, string) {
	t.Helper()
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("token-"+sa+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	node := certagent.Node{ID: sa + "-0.shop", Namespace: "shop", ServiceAccount: sa, Labels: map[string]string{"app": sa}, IPs: []string{"127.0.0.1"}}
	certDir := filepath.Join(dir, "certs")
	a, err := certagent.New(certagent.Options{
		XDSAddress: tlsAddr, ServerName: "weft-controller.weft-system.svc", RootCertFile: rootFile, TokenFile: token,
		Node: node, OutDir: certDir, RefreshInterval: 200 * time.Millisecond, Log: logr.Discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { <-done })
	boot, err := certagent.Bootstrap(certagent.BootstrapConfig{XDSAddress: tlsAddr, Node: node, CertDir: certDir, RefreshInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return a, boot, certDir
}

// logLines collects an ADS's log, to read what it said to whom.
type logLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.b.WriteString(prefix + " " + args + "\n")
	}, funcr.Options{})
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCertAgentForProxylessGRPC: weft's certificate agent, on the
// authenticated endpoint as a gRPC-kind node (with its token), receives
// its own identity's certificate by SDS and writes the files that real
// gRPC-Go xDS servers and clients use twice: for their own xDS stream to
// the same endpoint, which they authenticate with the workload
// certificate (the registry says so, and a policy they carry becomes
// Programmed), and for mutual TLS between them. A gRPC client whose
// certificate is another identity's than its node claims is refused with
// PermissionDenied. A renewal reaches the files and the next handshake;
// an unusable secret is NACKed and shows in the registry; the anonymous
// endpoint still serves a gRPC node no secret.
func TestCertAgentForProxylessGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root, err := builtin.NewRoot("cluster.local", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	src := &caSecrets{t: t, root: root, mat: map[string][3][]byte{}}
	var logs logLines
	ads := weftxds.NewADS(logs.logger())
	ads.SetSecrets(src)
	ads.SetAuthenticator(weftxds.Chain{
		weftxds.CertificateAuthenticator{Roots: func() *x509.CertPool {
			p := x509.NewCertPool()
			p.AddCert(root.Cert)
			return p
		}},
		&weftxds.TokenAuthenticator{Reviews: agentTokens("greeter", "frontend")},
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in, err := translator.DecodeInputs([]byte(fmt.Sprintf(greeterMesh, lis.Addr().(*net.TCPAddr).Port, lis.Addr().(*net.TCPAddr).Port)))
	if err != nil {
		t.Fatal(err)
	}
	ads.Update(translator.Translate(in).Mesh, time.Now())
	tlsAddr, rootFile, plainAddr := serveADS(t, ads)

	agentCtx, stopAgents := context.WithCancel(ctx)
	defer stopAgents()
	greeter, serverBoot, greeterDir := startAgent(t, agentCtx, tlsAddr, rootFile, "greeter")
	frontend, clientBoot, _ := startAgent(t, agentCtx, tlsAddr, rootFile, "frontend")
	for _, a := range []*certagent.Agent{greeter, frontend} {
		eventually(t, func() bool { return a.Ready() == nil }, "the agent installed a certificate")
	}
	leafOf := func(m certagent.Material) string {
		c, err := certs.ParseCertificatesPEM(m.Chain)
		if err != nil {
			t.Fatal(err)
		}
		return c[0].URIs[0].String() + " " + c[0].SerialNumber.String()
	}
	if got := leafOf(greeter.Written()); !strings.HasPrefix(got, "spiffe://cluster.local/ns/shop/sa/greeter ") {
		t.Fatalf("greeter's agent holds %s", got)
	}
	if got := leafOf(frontend.Written()); !strings.HasPrefix(got, "spiffe://cluster.local/ns/shop/sa/frontend ") {
		t.Fatalf("frontend's agent holds %s", got)
	}

	// A real gRPC server and client, from the agents' bootstraps.
	screds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := xds.NewGRPCServer(grpc.Creds(screds), xds.BootstrapContentsForTesting(serverBoot))
	if err != nil {
		t.Fatal(err)
	}
	srv.RegisterService(&whoService, "greeter")
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	resolver, err := xds.NewXDSResolverWithConfigForTesting(clientBoot)
	if err != nil {
		t.Fatal(err)
	}
	ccreds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	// One connection per call, so each call shows the certificate the
	// server presents now.
	serverLeaf := func() (string, error) {
		conn, err := grpc.NewClient("xds:///greeter.shop:80", grpc.WithResolvers(resolver), grpc.WithTransportCredentials(ccreds))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		defer rcancel()
		var p peer.Peer
		if err := conn.Invoke(rctx, "/weft.test.Who/Who", &emptypb.Empty{}, &wrapperspb.StringValue{}, grpc.WaitForReady(true), grpc.Peer(&p)); err != nil {
			return "", err
		}
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(info.State.PeerCertificates) == 0 {
			return "", fmt.Errorf("the call was not made over TLS (auth info %T)", p.AuthInfo)
		}
		c := info.State.PeerCertificates[0]
		return c.URIs[0].String() + " " + c.SerialNumber.String(), nil
	}
	got, err := serverLeaf()
	if err != nil {
		t.Fatalf("RPC over mTLS with the agents' files: %v", err)
	}
	if want := leafOf(greeter.Written()); got != want {
		t.Fatalf("the server presented %s, want the agent's %s", got, want)
	}

	// The applications' own xDS streams proved their identity with the
	// workload certificate, the agents' with their tokens. (A client's
	// stream lives as long as a channel uses it: keep one open.)
	conn, err := grpc.NewClient("xds:///greeter.shop:80", grpc.WithResolvers(resolver), grpc.WithTransportCredentials(ccreds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Invoke(ctx, "/weft.test.Who/Who", &emptypb.Empty{}, &wrapperspb.StringValue{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	auth := func() map[string]int {
		n := map[string]int{}
		for _, p := range ads.Proxies() {
			n[p.ID+" "+p.Auth]++
		}
		return n
	}
	want := map[string]int{"greeter-0.shop certificate": 1, "frontend-0.shop certificate": 1, "greeter-0.shop token": 1, "frontend-0.shop token": 1}
	if got := auth(); !maps.Equal(got, want) {
		t.Fatalf("connected proxies by id and authentication: %v, want %v", got, want)
	}
	// The RetryPolicy on greeter is in every gRPC proxy's configuration
	// of the namespace: the two applications ACKed it. The agents share
	// their group but take only secrets: they are not proxies of it.
	ref := ir.PolicyRef{Kind: "RetryPolicy", Namespace: "shop", Name: "greeter", Generation: 3}
	eventually(t, func() bool { return ads.PolicyState(ref).Programmed() }, "the RetryPolicy programmed")
	if st := ads.PolicyState(ref); st.Affected != 2 || st.Acked != 2 {
		t.Fatalf("policy state %+v, want 2 affected proxies (the applications), both ACKed", st)
	}

	// A client whose certificate is greeter's but whose node claims
	// frontend: its xDS stream is refused, and it gets no configuration.
	impostor := certagent.Node{ID: "frontend-1.shop", Namespace: "shop", ServiceAccount: "frontend", Labels: map[string]string{"app": "frontend"}, IPs: []string{"127.0.0.1"}}
	impostorBoot, err := certagent.Bootstrap(certagent.BootstrapConfig{XDSAddress: tlsAddr, Node: impostor, CertDir: greeterDir, RefreshInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	impostorResolver, err := xds.NewXDSResolverWithConfigForTesting(impostorBoot)
	if err != nil {
		t.Fatal(err)
	}
	iconn, err := grpc.NewClient("xds:///greeter.shop:80", grpc.WithResolvers(impostorResolver), grpc.WithTransportCredentials(ccreds))
	if err != nil {
		t.Fatal(err)
	}
	defer iconn.Close()
	ictx, icancel := context.WithTimeout(ctx, 20*time.Second)
	err = iconn.Invoke(ictx, "/weft.test.Who/Who", &emptypb.Empty{}, &wrapperspb.StringValue{})
	icancel()
	refusal := "node frontend-1.shop claims spiffe://cluster.local/ns/shop/sa/frontend but its certificate proves spiffe://cluster.local/ns/shop/sa/greeter"
	// gRPC-Go usually fails the RPC with the xDS stream's status (the
	// refusal); depending on timing its resolver may instead have already
	// replaced the erroring config selector with an empty configuration
	// ("produced zero addresses"). Either way the RPC fails, and the
	// server's log must name the refusal.
	if err == nil || status.Code(err) != codes.Unavailable && status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the impostor's RPC: %v; want it refused (its xDS stream's PermissionDenied: %s)", err, refusal)
	}
	t.Logf("the impostor's RPC fails with: %v", err)
	if !strings.Contains(logs.String(), refusal) {
		t.Fatalf("the server's log does not show the refusal:\n%s", logs.String())
	}
	if got := auth(); !maps.Equal(got, want) {
		t.Fatalf("after the impostor, connected proxies: %v, want %v", got, want)
	}

	// A renewal: new files, and the next handshake presents them.
	before := leafOf(greeter.Written())
	src.issue("spiffe://cluster.local/ns/shop/sa/greeter", false)
	ads.SecretsChanged("spiffe://cluster.local/ns/shop/sa/greeter")
	eventually(t, func() bool { return leafOf(greeter.Written()) != before }, "the renewed certificate in greeter's files")
	eventually(t, func() bool { got, err := serverLeaf(); return err == nil && got == leafOf(greeter.Written()) },
		"the server presenting the renewed certificate")

	// An unusable secret is NACKed with the agent's reason, and the files
	// keep the last good certificate.
	good := leafOf(frontend.Written())
	src.issue("spiffe://cluster.local/ns/shop/sa/frontend", true)
	ads.SecretsChanged("spiffe://cluster.local/ns/shop/sa/frontend")
	eventually(t, func() bool {
		for _, p := range ads.Proxies() {
			if st := p.Types["Secret"]; p.ID == "frontend-0.shop" && st.Nack != nil {
				return strings.Contains(st.Nack.Message, "private key does not match") && st.State == weftxds.Nacked
			}
		}
		return false
	}, "frontend's agent NACKing a key that is not its certificate's")
	if leafOf(frontend.Written()) != good {
		t.Fatal("a NACKed secret changed the files")
	}

	// The debug endpoint shows the agent's secrets by name only. (The
	// agent and the application share the pod's node id: stop the server,
	// so that the id names the agent alone.)
	srv.Stop()
	eventually(t, func() bool {
		n := 0
		for _, p := range ads.Proxies() {
			if p.ID == "greeter-0.shop" {
				n++
			}
		}
		return n == 1
	}, "the gRPC server's own xDS stream to end")
	dbg := httptest.NewServer(ads.DebugHandler())
	defer dbg.Close()
	resp, err := http.Get(dbg.URL + "/debug/config_dump?proxy=greeter-0.shop")
	if err != nil {
		t.Fatal(err)
	}
	dump, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, key, _, _ := src.Material("spiffe://cluster.local/ns/shop/sa/greeter")
	if !strings.Contains(string(dump), `"content": "REDACTED"`) || strings.Contains(string(dump), "PRIVATE KEY") ||
		strings.Contains(string(dump), base64.StdEncoding.EncodeToString(key)[:40]) {
		t.Fatalf("config dump of the agent's node: %.400s", dump)
	}

	// The anonymous endpoint: a gRPC node claiming greeter subscribes to
	// its secrets and gets none.
	md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: "shop", dataplane.MetaServiceAccount: "greeter", dataplane.MetaProxyKind: "grpc",
		dataplane.MetaLabels: map[string]any{"app": "greeter"}, dataplane.MetaPodIPs: "127.0.0.1"})
	n := node("greeter-9.shop", "shop", "greeter")
	n.Metadata = md
	anon := dialDelta(t, plainAddr, n, nil)
	if err := anon.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType,
		ResourceNamesSubscribe: []string{dataplane.WorkloadCertSecret, dataplane.TrustBundleSecret}}); err != nil {
		t.Fatal(err)
	}
	anon.settle()
	if anon.count[resourcev3.SecretType] != 0 || anon.count[resourcev3.ListenerType] == 0 {
		t.Fatalf("an anonymous gRPC node got %v: want configuration and no secret", anon.count)
	}
}

const greeterMesh = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: shop}
spec: {clusterIP: 10.0.0.1, selector: {app: greeter}, ports: [{name: grpc, port: 80, targetPort: %d}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: greeter-1, namespace: shop, labels: {kubernetes.io/service-name: greeter}}
addressType: IPv4
ports: [{name: grpc, port: %d}]
endpoints: [{addresses: [127.0.0.1], targetRef: {kind: Pod, name: greeter-0, namespace: shop}}]
---
apiVersion: v1
kind: Pod
metadata: {name: greeter-0, namespace: shop, labels: {app: greeter}, annotations: {weft.dev/proxyless: grpc}}
spec: {serviceAccountName: greeter, containers: [{name: app, image: x}]}
---
apiVersion: mesh.weft.dev/v1alpha1
kind: RetryPolicy
metadata: {name: greeter, namespace: shop, generation: 3}
spec:
  targetRefs: [{group: "", kind: Service, name: greeter}]
  retryOn: [unavailable]
`
