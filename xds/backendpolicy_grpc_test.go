package xds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/internal/testing/testpki"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	weftxds "github.com/weftmesh/weft/xds"
)

// BackendTrafficPolicy for proxyless gRPC (docs/design/110), shown with
// real gRPC-Go xDS clients and servers against weft's ADS server: what the
// translator emits for them is what gRPC-Go does with it.

// echoBackend is one pod of Service echo: its own loopback address (the
// whole of 127/8 is local), port and identity, an xDS-enabled gRPC server
// answering /weft.test.Echo/Who with its name, that can be told to fail
// every call or to hold calls until released.
type echoBackend struct {
	name, ip string
	port     int
	fail     atomic.Bool
	calls    atomic.Int64
	mu       sync.Mutex
	hold     chan struct{} // non-nil: calls wait for it to close
	held     atomic.Int64
}

var echoService = grpc.ServiceDesc{
	ServiceName: "weft.test.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Who",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(&emptypb.Empty{}); err != nil {
				return nil, err
			}
			b := srv.(*echoBackend)
			b.calls.Add(1)
			b.mu.Lock()
			hold := b.hold
			b.mu.Unlock()
			if hold != nil {
				b.held.Add(1)
				select {
				case <-hold:
				case <-ctx.Done():
				}
				b.held.Add(-1)
			}
			if b.fail.Load() {
				return nil, status.Error(codes.Unavailable, b.name+" is failing")
			}
			return wrapperspb.String(b.name), nil
		},
	}},
}

type echoMesh struct {
	t        *testing.T
	ctx      context.Context
	ads      *weftxds.ADS
	addr     string
	ca       *testpki.CA
	dir      string
	backends []*echoBackend
}

// startEcho starts n backends of Services echo and sticky (the same pods)
// and weft's ADS serving the mesh with policy (YAML documents, may be "").
func startEcho(t *testing.T, ctx context.Context, n int, policy string) *echoMesh {
	m := &echoMesh{t: t, ctx: ctx, ads: weftxds.NewADS(logr.Discard()), ca: testpki.NewCA(t), dir: t.TempDir()}
	m.addr = serve(t, m.ads)
	for i := 1; i <= n; i++ {
		b := &echoBackend{name: fmt.Sprintf("echo-%d", i), ip: fmt.Sprintf("127.0.0.%d", 10+i)}
		lis, err := net.Listen("tcp", b.ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		b.port = lis.Addr().(*net.TCPAddr).Port
		m.backends = append(m.backends, b)
		files := m.ca.Issue(t, m.dir, "spiffe://cluster.local/ns/shop/sa/echo")
		creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := xds.NewGRPCServer(grpc.Creds(creds), xds.BootstrapContentsForTesting(echoBootstrap(t, m.addr, b.name+".shop", "echo", "echo", b.ip, files)))
		if err != nil {
			t.Fatal(err)
		}
		srv.RegisterService(&echoService, b)
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
	}
	m.update(policy)
	return m
}

func (m *echoMesh) update(policy string) {
	m.t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
	for _, svc := range []string{"echo", "sticky"} {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: shop}\nspec: {selector: {app: echo}, ports: [{name: grpc, port: 80, targetPort: grpc}]}\n", svc)
		for _, e := range m.backends {
			fmt.Fprintf(&b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: %s-%s, namespace: shop, labels: {kubernetes.io/service-name: %s}}\naddressType: IPv4\nports: [{name: grpc, port: %d}]\nendpoints: [{addresses: [%s], targetRef: {kind: Pod, name: %s, namespace: shop}}]\n",
				svc, e.name, svc, e.port, e.ip, e.name)
		}
	}
	for _, e := range m.backends {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: shop, labels: {app: echo}, annotations: {weft.dev/proxyless: grpc}}\nspec: {serviceAccountName: echo, containers: [{name: app, image: x}]}\nstatus: {podIPs: [{ip: %s}]}\n", e.name, e.ip)
	}
	if policy != "" {
		b.WriteString("---\n" + policy)
	}
	in, err := translator.DecodeInputs([]byte(b.String()))
	if err != nil {
		m.t.Fatal(err)
	}
	out := translator.Translate(in)
	for k, conds := range out.Status {
		for _, c := range conds {
			if (c.Type == "Accepted" || c.Type == "ResolvedRefs") && c.Status != "True" {
				m.t.Fatalf("%v: %s=%s: %s", k, c.Type, c.Status, c.Message)
			}
		}
	}
	m.ads.Update(out.Mesh, time.Now())
}

// client is a proxyless client's connection to xds:///<svc>.shop:80.
func (m *echoMesh) client(svc string) *grpc.ClientConn {
	m.t.Helper()
	files := m.ca.Issue(m.t, m.dir, "spiffe://cluster.local/ns/shop/sa/frontend")
	resolver, err := xds.NewXDSResolverWithConfigForTesting(echoBootstrap(m.t, m.addr, "frontend-0.shop", "frontend", "frontend", "127.0.0.2", files))
	if err != nil {
		m.t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		m.t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///"+svc+".shop:80", grpc.WithResolvers(resolver), grpc.WithTransportCredentials(creds))
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { conn.Close() })
	return conn
}

// who calls Who; md are request headers (metadata).
func who(ctx context.Context, conn *grpc.ClientConn, md ...string) (string, error) {
	out := &wrapperspb.StringValue{}
	if len(md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, md...)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := conn.Invoke(rctx, "/weft.test.Echo/Who", &emptypb.Empty{}, out, grpc.WaitForReady(true))
	return out.Value, err
}

func echoBootstrap(t *testing.T, xdsAddr, id, sa, app, ip string, f testpki.Files) []byte {
	md := map[string]any{
		dataplane.MetaNamespace: "shop", dataplane.MetaServiceAccount: sa, dataplane.MetaLabels: map[string]any{"app": app},
		dataplane.MetaPodIPs: ip, dataplane.MetaProxyKind: "grpc",
	}
	b, err := json.Marshal(testpki.GRPCBootstrap(xdsAddr, id, md, dataplane.GRPCCertProvider, f, dataplane.GRPCServerListenerPrefix+"%s"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGRPCMaxRequestsShedsLoad: with maxRequests 2, a proxyless client
// with two calls in flight fails the third at once with UNAVAILABLE (gRPC's
// xds_cluster_impl counts the cluster's requests), and calls again once
// one finishes; without the policy (the default 1,024) all wait their turn.
func TestGRPCMaxRequestsShedsLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, c := range []struct {
		name     string
		policy   string
		wantShed bool
	}{
		{"maxRequests 2", `apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: echo, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: echo}]
  circuitBreaker: {maxRequests: 2}
`, true},
		{"no policy", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := startEcho(t, ctx, 1, c.policy)
			conn := m.client("echo")
			if _, err := who(ctx, conn); err != nil { // connected, nothing held
				t.Fatal(err)
			}
			b := m.backends[0]
			hold := make(chan struct{})
			b.mu.Lock()
			b.hold = hold
			b.mu.Unlock()
			const calls = 6
			errs := make(chan error, calls)
			for i := 0; i < calls; i++ {
				go func() { _, err := who(ctx, conn); errs <- err }()
			}
			var shed []error
			if c.wantShed {
				// Two reach the server and wait; four fail fast.
				testkit.EventuallyTrue(t, "two calls held by the server", func() bool { return b.held.Load() == 2 })
				for i := 0; i < calls-2; i++ {
					select {
					case err := <-errs:
						shed = append(shed, err)
					case <-ctx.Done():
						t.Fatalf("only %d calls failed fast: %v", len(shed), shed)
					}
				}
				for _, err := range shed {
					if status.Code(err) != codes.Unavailable {
						t.Errorf("a shed call ended %v, want UNAVAILABLE", err)
					}
				}
				if n := b.held.Load(); n != 2 {
					t.Errorf("%d calls held by the server, want 2: the breaker let more through", n)
				}
				t.Logf("shed: %v", shed[0])
			} else {
				testkit.EventuallyTrue(t, "every call held by the server", func() bool { return b.held.Load() == calls })
			}
			close(hold)
			for i := len(shed); i < calls; i++ {
				if err := <-errs; err != nil {
					t.Errorf("a held call ended %v, want OK once released", err)
				}
			}
			b.mu.Lock()
			b.hold = nil
			b.mu.Unlock()
			if _, err := who(ctx, conn); err != nil {
				t.Errorf("after the load went: %v", err)
			}
		})
	}
}

// TestGRPCOutlierDetectionEjectsAndReadmits: three backends, one failing
// every call; with failurePercentage (the detector gRPC applies) its
// calls fail until it is ejected, then every call succeeds on the other
// two; once it recovers, it is let back in after baseEjectionTime and
// serves again.
func TestGRPCOutlierDetectionEjectsAndReadmits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := startEcho(t, ctx, 3, `apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: echo, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: echo}]
  outlierDetection:
    failurePercentage: {threshold: 50, minimumHosts: 3, requestVolume: 5}
    interval: 1s
    baseEjectionTime: 2s
    maxEjectionPercent: 50
`)
	conn := m.client("echo")
	// Every backend serving (round robin reaches only READY ones).
	testkit.EventuallyTrue(t, "all three backends answering", func() bool {
		if _, err := who(ctx, conn); err != nil {
			t.Fatal(err)
		}
		for _, b := range m.backends {
			if b.calls.Load() == 0 {
				return false
			}
		}
		return true
	})
	bad := m.backends[2]
	bad.fail.Store(true)
	failures := 0
	testkit.EventuallyTrue(t, "the failing backend ejected: 60 calls in a row succeed", func() bool {
		for i := 0; i < 60; i++ {
			if _, err := who(ctx, conn); err != nil {
				if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "echo-3 is failing") {
					t.Fatalf("call: %v, want echo-3's UNAVAILABLE", err)
				}
				failures++
				return false
			}
		}
		return true
	})
	if failures == 0 {
		t.Fatal("no call reached the failing backend before it was ejected: the test proved nothing")
	}
	t.Logf("%d calls failed on echo-3 before it was ejected", failures)
	// 60 calls in a row succeeded while echo-3 fails every call: round
	// robin over three would have sent it 20 of them, so it was out.
	ejected := time.Now()
	// It recovers; after baseEjectionTime it is let back in and serves.
	bad.fail.Store(false)
	testkit.EventuallyTrue(t, "echo-3 readmitted: it answers calls again", func() bool {
		for i := 0; i < 30; i++ {
			got, err := who(ctx, conn)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if got == "echo-3" {
				return true
			}
		}
		time.Sleep(200 * time.Millisecond)
		return false
	})
	t.Logf("echo-3 served again %v after it was found ejected (baseEjectionTime 2s, interval 1s)", time.Since(ejected).Round(100*time.Millisecond))
}

// TestGRPCRingHashKeepsAKeyOnOneBackend: RingHash by header x-user-id
// sends every call with one key to one backend, and different keys to
// different backends; by source IP (the channel id for gRPC) every call of
// one client channel goes to one backend. The policy reads as programmed
// once the client and the servers ACKed it.
func TestGRPCRingHashKeepsAKeyOnOneBackend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := startEcho(t, ctx, 3, `apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: echo, namespace: shop, generation: 7}
spec:
  targetRefs: [{group: "", kind: Service, name: echo}]
  loadBalancer: {type: RingHash, consistentHash: {type: Header, header: {name: x-user-id}}}
---
apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: sticky, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: sticky}]
  loadBalancer: {type: Maglev, consistentHash: {type: SourceIP}}
`)
	conn := m.client("echo")
	owners := map[string]bool{}
	for k := 0; k < 12; k++ {
		key := fmt.Sprintf("user-%d", k)
		first := ""
		for i := 0; i < 10; i++ {
			got, err := who(ctx, conn, "x-user-id", key)
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			if first == "" {
				first = got
			} else if got != first {
				t.Fatalf("%s went to %s, then to %s: the key did not stay on one backend", key, first, got)
			}
		}
		owners[first] = true
	}
	if len(owners) < 2 {
		t.Errorf("12 keys all went to %v: the hash does not spread keys", owners)
	}
	t.Logf("12 keys x 10 calls, each key on one backend; backends used: %v", owners)

	sticky := m.client("sticky")
	first := ""
	for i := 0; i < 30; i++ {
		got, err := who(ctx, sticky)
		if err != nil {
			t.Fatal(err)
		}
		if first == "" {
			first = got
		} else if got != first {
			t.Fatalf("a client channel's calls went to %s, then %s: source-IP affinity (the channel id) did not hold", first, got)
		}
	}

	ref := ir.PolicyRef{Kind: translator.KindBackendTrafficPolicy, Namespace: "shop", Name: "echo", Generation: 7}
	eventually(t, func() bool { return m.ads.PolicyState(ref).Programmed() }, "the BackendTrafficPolicy programmed")
}
