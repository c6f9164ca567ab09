package xds_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/xds"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/internal/testing/testpki"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	weftxds "github.com/weftmesh/weft/xds"
)

// TestGRPCLocalityFailover: locality-aware routing (docs/design/171) with
// weft's ADS server and real gRPC-Go xDS clients and servers. Service echo
// prefers the caller's zone; echo-a1 runs in zone-a, echo-b1 (and, after
// an endpoint-only change, echo-b2) in zone-b. Two replicas of one
// client Deployment (same identity and labels) run in zone-a and zone-b;
// their zones come from the ADS's Locator (the controller's Pod → Node),
// not from their bootstraps. Each reaches only its own zone; an endpoint
// change, applied by patch, keeps the priorities; when zone-a's server
// stops (still listed in EDS), zone-a's client fails over to zone-b.
func TestGRPCLocalityFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ads := weftxds.NewADS(logr.Discard())
	zones := map[string]string{"frontend-a": "zone-a", "frontend-b": "zone-b", "echo-a1": "zone-a", "echo-b1": "zone-b", "echo-b2": "zone-b"}
	ads.SetLocator(func(namespace, pod string) (string, string) {
		if namespace != "shop" {
			return "", ""
		}
		return "", zones[pod]
	})
	addr := serve(t, ads)
	ca, dir := testpki.NewCA(t), t.TempDir()

	type backend struct {
		*echoBackend
		zone string
		srv  *xds.GRPCServer
	}
	var backends []*backend
	serving := map[string]chan struct{}{}
	for i, name := range []string{"echo-a1", "echo-b1", "echo-b2"} {
		up := make(chan struct{})
		var once sync.Once
		serving[name] = up
		b := &backend{echoBackend: &echoBackend{name: name, ip: fmt.Sprintf("127.0.0.%d", 30+i)}, zone: zones[name]}
		lis, err := net.Listen("tcp", b.ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		b.port = lis.Addr().(*net.TCPAddr).Port
		files := ca.Issue(t, dir, "spiffe://cluster.local/ns/shop/sa/echo")
		creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := xds.NewGRPCServer(grpc.Creds(creds), xds.BootstrapContentsForTesting(echoBootstrap(t, addr, b.name+".shop", "echo", "echo", b.ip, files)),
			xds.ServingModeCallback(func(_ net.Addr, args xds.ServingModeChangeArgs) {
				if args.Mode == connectivity.ServingModeServing {
					once.Do(func() { close(up) })
				}
			}))
		if err != nil {
			t.Fatal(err)
		}
		srv.RegisterService(&echoService, b.echoBackend)
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		b.srv = srv
		backends = append(backends, b)
	}

	// inputs: echo with the endpoints of the first n backends.
	inputs := func(n int) *translator.Inputs {
		var b strings.Builder
		b.WriteString("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
		b.WriteString("---\napiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: shop}\nspec: {selector: {app: echo}, ports: [{name: grpc, port: 80, targetPort: grpc}]}\n")
		for _, e := range backends[:n] {
			fmt.Fprintf(&b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: echo-%s, namespace: shop, labels: {kubernetes.io/service-name: echo}}\naddressType: IPv4\nports: [{name: grpc, port: %d}]\nendpoints: [{addresses: [%s], zone: %s, targetRef: {kind: Pod, name: %s, namespace: shop}}]\n",
				e.name, e.port, e.ip, e.zone, e.name)
		}
		for _, e := range backends {
			fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: shop, labels: {app: echo}, annotations: {weft.dev/proxyless: grpc}}\nspec: {serviceAccountName: echo, containers: [{name: app, image: x}]}\nstatus: {podIPs: [{ip: %s}]}\n", e.name, e.ip)
		}
		b.WriteString(`---
apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: echo, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: echo}]
  outlierDetection: {failurePercentage: {threshold: 50}}
  loadBalancer: {locality: PreferLocalZone}
`)
		in, err := translator.DecodeInputs([]byte(b.String()))
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	out := translator.Translate(inputs(2))
	for k, conds := range out.Status {
		for _, c := range conds {
			if (c.Type == "Accepted" || c.Type == "ResolvedRefs") && c.Status != "True" {
				t.Fatalf("%v: %s=%s: %s", k, c.Type, c.Status, c.Message)
			}
		}
	}
	mesh := out.Mesh
	ads.Update(mesh, time.Now())
	// Before its listener arrives an xDS server refuses connections, and a
	// client would fail over from a zone that is merely starting.
	for _, name := range []string{"echo-a1", "echo-b1"} {
		select {
		case <-serving[name]:
		case <-ctx.Done():
			t.Fatalf("%s never served", name)
		}
	}

	client := func(pod string) *grpc.ClientConn {
		files := ca.Issue(t, dir, "spiffe://cluster.local/ns/shop/sa/frontend")
		resolver, err := xds.NewXDSResolverWithConfigForTesting(echoBootstrap(t, addr, pod+".shop", "frontend", "frontend", "127.0.0.2", files))
		if err != nil {
			t.Fatal(err)
		}
		creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient("xds:///echo.shop:80", grpc.WithResolvers(resolver), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// spread makes n calls and counts the answers by backend.
	spread := func(conn *grpc.ClientConn, n int) (map[string]int, error) {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			name, err := who(ctx, conn)
			if err != nil {
				return got, err
			}
			got[name]++
		}
		return got, nil
	}
	a, b := client("frontend-a"), client("frontend-b")
	for _, c := range []struct {
		conn *grpc.ClientConn
		want string
	}{{a, "echo-a1"}, {b, "echo-b1"}} {
		// A connection still in backoff can leave the first calls on the
		// next level; once the caller's zone is READY it takes them all.
		testkit.EventuallyTrue(t, c.want+" answering its zone's client", func() bool {
			name, err := who(ctx, c.conn)
			if err != nil {
				t.Fatal(err)
			}
			return name == c.want
		})
		got, err := spread(c.conn, 100)
		if err != nil {
			t.Fatal(err)
		}
		if got[c.want] != 100 {
			t.Errorf("100 calls reached %v, want all on %s (its caller's zone)", got, c.want)
		}
	}

	// An endpoint-only change (echo-b2 joins zone-b) is patched into
	// both groups, each with its own priorities.
	patches := ads.Patches()
	in3 := inputs(3)
	var slices []*discoveryv1.EndpointSlice
	for _, s := range in3.EndpointSlices {
		if s.Labels[discoveryv1.LabelServiceName] == "echo" {
			slices = append(slices, s)
		}
	}
	pods := func(ns, name string) *corev1.Pod {
		for _, p := range in3.Pods {
			if p.Namespace == ns && p.Name == name {
				return p
			}
		}
		return nil
	}
	key := ir.ServiceKey{Namespace: "shop", Name: "echo"}
	mesh = translator.UpdateEndpoints(mesh, key, slices, pods)
	ads.UpdateEndpoints(mesh, []ir.ServiceKey{key}, time.Now())
	if ads.Patches() == patches {
		t.Fatal("the endpoint change was not patched: this test is about the patch path")
	}
	testkit.EventuallyTrue(t, "zone-b's client reaches echo-b2 too", func() bool {
		got, err := spread(b, 40)
		if err != nil {
			t.Fatal(err)
		}
		if got["echo-a1"] > 0 {
			t.Fatalf("zone-b's client reached zone-a after the patch: %v", got)
		}
		return got["echo-b2"] > 0
	})
	if got, err := spread(a, 100); err != nil || got["echo-a1"] != 100 {
		t.Fatalf("after the patch, zone-a's client: %v, %v; want all 100 on echo-a1 (a patch that sent the shared assignment would spread them)", got, err)
	}

	// zone-a's server stops, still listed in EDS: its client fails over.
	backends[0].srv.Stop()
	failed := 0
	testkit.EventuallyTrue(t, "zone-a's client answered from zone-b", func() bool {
		name, err := who(ctx, a)
		if err != nil {
			failed++
			return false
		}
		return name != "echo-a1"
	})
	got, err := spread(a, 50)
	if err != nil {
		t.Fatal(err)
	}
	if got["echo-b1"]+got["echo-b2"] != 50 {
		t.Errorf("after echo-a1 stopped, zone-a's client: %v, want all 50 in zone-b", got)
	}
	t.Logf("zone-a's client failed over with %d failed calls", failed)
}
