package xds_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestGRPCRoutesToTCPAndHeadlessBackends: a proxyless client sees, next to
// the gRPC Service it calls, a Service whose port is TCP (an unnamed or
// "tcp" port, which gets no gRPC listener) and a headless Service (which
// gets no gRPC listener either: gRPC's resolver dials a listener, and a
// headless Service has no virtual address). Both are fine as backends of
// a TrafficSplit on the gRPC Service: the route names their clusters, so
// the client must hold them (weft refuses a set whose route names a
// missing cluster, and gRPC-Go would hold the whole channel until the
// missing cluster times out), and every backend answers its share.
func TestGRPCRoutesToTCPAndHeadlessBackends(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := startEcho(t, ctx, 3, "")
	// front → echo-1 (gRPC port), raw → echo-2 (TCP port), peers →
	// echo-3 (headless). Slices name the pods: the selectors are moot.
	extra := func(split bool) string {
		var b strings.Builder
		for i, s := range []struct{ name, spec, portName string }{
			{"front", "ports: [{name: grpc, port: 80, targetPort: grpc}]", "grpc"},
			{"raw", "ports: [{name: tcp, port: 80, targetPort: 9}]", "tcp"},
			{"peers", "clusterIP: None\n  ports: [{name: grpc, port: 80, targetPort: grpc}]", "grpc"},
		} {
			e := m.backends[i]
			fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: shop}\nspec:\n  selector: {app: none}\n  %s\n---\n", s.name, s.spec)
			fmt.Fprintf(&b, "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: %s-1, namespace: shop, labels: {kubernetes.io/service-name: %s}}\naddressType: IPv4\nports: [{name: %s, port: %d}]\nendpoints: [{addresses: [%s], targetRef: {kind: Pod, name: %s, namespace: shop}}]\n---\n",
				s.name, s.name, s.portName, e.port, e.ip, e.name)
		}
		if split {
			b.WriteString("apiVersion: mesh.weft.dev/v1alpha1\nkind: TrafficSplit\nmetadata: {name: front, namespace: shop, generation: 1}\nspec:\n  rootService: {name: front}\n  backends: [{name: front, weight: 1}, {name: raw, weight: 1}, {name: peers, weight: 1}]\n")
		}
		return b.String()
	}

	// The TCP and headless Services only visible: the client calls front.
	m.update(extra(false))
	conn := m.client("front")
	if got, err := who(ctx, conn); err != nil || got != "echo-1" {
		t.Fatalf("front with TCP and headless Services visible: %q, %v; want echo-1", got, err)
	}

	// Then split among the three: every backend answers. (While gRPC
	// switches to the new routes, a call may fail with "unknown cluster
	// selected": its new config selector is in place before the new
	// clusters' balancers are; so errors are counted, not fatal, until
	// every backend answered and the last calls all passed.)
	m.update(extra(true))
	seen, errs, streak := map[string]int{}, 0, 0
	var lastErr error
	start := time.Now()
	for len(seen) < 3 || streak < 30 {
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("after two minutes: answers %v, %d failed calls (last: %v); want echo-1 (front), echo-2 (raw, TCP port) and echo-3 (peers, headless) answering every call",
				seen, errs, lastErr)
		}
		got, err := who(ctx, conn)
		if err != nil {
			errs, streak, lastErr = errs+1, 0, err
			time.Sleep(20 * time.Millisecond)
			continue
		}
		seen[got]++
		streak++
	}
	t.Logf("split over front, raw (TCP port), peers (headless): %v after %v; %d calls failed meanwhile (last: %v)", seen, time.Since(start), errs, lastErr)

	// And a fresh client, which never had a last good configuration.
	if got, err := who(ctx, m.client("front")); err != nil {
		t.Fatalf("a new client of front: %q, %v", got, err)
	}
}
