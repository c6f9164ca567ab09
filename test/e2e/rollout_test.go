package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/xdsload"
)

// TestRolloutGate drives a canary as a user would: kubectl apply a
// TrafficSplit, and `kubectl wait --for=condition=Programmed` returns once
// the connected proxies (simulated Envoys on real Delta xDS streams) have
// ACKed it; a weight change does the same for the new generation.
// checkoutRoute is the route configuration of the checkout Service's port
// 80, which carries its split (docs/design/090).
const checkoutRoute = "outbound|80||checkout.shop.svc.cluster.local"

func TestRolloutGate(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if _, err := env.Kubectl(ctx, []byte(rolloutYAML), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}

	xdsTLSAddr, monAddr, debugAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin("weft-controller"), "--kubeconfig", env.Kubeconfig,
		"--monitoring-address", monAddr, "--debug-address", debugAddr, "--webhook-address", freeAddr(t), "--xds-tls-address", xdsTLSAddr, "--log-format", "text")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("weft-controller output:\n%s", logs.String())
		}
	})

	conn := dialSidecarPort(t, env, xdsTLSAddr)
	md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: "shop", dataplane.MetaServiceAccount: "frontend",
		dataplane.MetaLabels: map[string]any{"app": "frontend"}})
	var rejecting atomic.Bool
	proxy := &xdsload.Proxy{Node: &corev3.Node{Id: "frontend-0.shop", Metadata: md}, Token: saToken(t, env, "shop", "frontend"),
		Reject: func(r *discoveryv3.DeltaDiscoveryResponse) string {
			if rejecting.Load() && r.TypeUrl == resourcev3.RouteType {
				return "weight 90 is not welcome here"
			}
			return ""
		}}
	go func() {
		// The controller may still be starting: retry until the stream holds.
		for ctx.Err() == nil {
			if err := proxy.Run(ctx, conn); err == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	wait := func(what string) {
		t.Helper()
		out, err := env.Kubectl(ctx, nil, "wait", "-n", "shop", "--for=condition=Programmed", "trafficsplit/checkout", "--timeout=120s")
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	if !proxy.WaitFor(wctx, func(v map[string]map[string]string) bool { return v[resourcev3.RouteType][checkoutRoute] != "" }) {
		t.Fatal("the proxy never received checkout's route configuration")
	}
	wait("first rollout step")
	// The debug endpoint shows the proxy, in sync.
	if body, code, err := httpGet("http://" + debugAddr + "/debug/proxies"); err != nil || code != 200 ||
		!strings.Contains(body, `"id": "frontend-0.shop"`) || !strings.Contains(body, `"state": "SYNCED"`) {
		t.Fatalf("/debug/proxies = %d %s %v", code, body, err)
	}
	out, err := env.Kubectl(ctx, nil, "get", "trafficsplit", "checkout", "-n", "shop", "-o",
		"jsonpath={.metadata.generation} {.status.observedGeneration} {.status.conditions[?(@.type==\"Programmed\")].observedGeneration}")
	if err != nil || out != "1 1 1" {
		t.Fatalf("after the first step: generation, observedGeneration, Programmed's = %q, %v; want 1 1 1", out, err)
	}

	// The next step: 50/50. kubectl wait must not return on the old
	// generation's Programmed.
	before := proxy.Stats().Responses
	if _, err := env.Kubectl(ctx, nil, "patch", "trafficsplit", "checkout", "-n", "shop", "--type=merge",
		"-p", `{"spec":{"backends":[{"name":"checkout-v1","weight":50},{"name":"checkout-v2","weight":50}]}}`); err != nil {
		t.Fatal(err)
	}
	wait("second rollout step")
	out, err = env.Kubectl(ctx, nil, "get", "trafficsplit", "checkout", "-n", "shop", "-o",
		"jsonpath={.status.conditions[?(@.type==\"Programmed\")].observedGeneration} {.status.conditions[?(@.type==\"Programmed\")].status}")
	if err != nil || out != "2 True" {
		t.Fatalf("after the second step: Programmed = %q, %v; want generation 2 True", out, err)
	}
	if got := proxy.Stats().Responses - before; got < 1 {
		t.Fatalf("the proxy received %d responses for the weight change", got)
	}

	// A proxy rejects the next step: Programmed turns False with reason
	// ProxyRejected, the proxy count and its own words, and kubectl wait for
	// Programmed does not pass.
	rejecting.Store(true)
	if _, err := env.Kubectl(ctx, nil, "patch", "trafficsplit", "checkout", "-n", "shop", "--type=merge",
		"-p", `{"spec":{"backends":[{"name":"checkout-v1","weight":10},{"name":"checkout-v2","weight":90}]}}`); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl(ctx, nil, "wait", "-n", "shop", "--for=condition=Programmed=False", "trafficsplit/checkout", "--timeout=120s"); err != nil {
		t.Fatalf("rejected step: %v\n%s", err, out)
	}
	out, err = env.Kubectl(ctx, nil, "get", "trafficsplit", "checkout", "-n", "shop", "-o",
		`jsonpath={.status.conditions[?(@.type=="Programmed")].reason}: {.status.conditions[?(@.type=="Programmed")].message}`)
	if err != nil || !strings.HasPrefix(out, "ProxyRejected: ") || !strings.Contains(out, "weight 90 is not welcome here") {
		t.Fatalf("rejected step: Programmed = %q, %v; want reason ProxyRejected with the proxy's message", out, err)
	}
	if _, err := env.Kubectl(ctx, nil, "wait", "-n", "shop", "--for=condition=Programmed", "trafficsplit/checkout", "--timeout=3s"); err == nil {
		t.Fatal("kubectl wait for Programmed passed although a proxy rejected the change")
	}
	rejecting.Store(false)
	if _, err := env.Kubectl(ctx, nil, "patch", "trafficsplit", "checkout", "-n", "shop", "--type=merge",
		"-p", `{"spec":{"backends":[{"name":"checkout-v1","weight":20},{"name":"checkout-v2","weight":80}]}}`); err != nil {
		t.Fatal(err)
	}
	wait("the step after a rejected one")

	// A TrafficSplit naming a missing backend says so, and the rest of the
	// mesh keeps working.
	if _, err := env.Kubectl(ctx, []byte(strings.Replace(brokenSplit, "BACKEND", "nope", 1)), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl(ctx, nil, "wait", "-n", "shop", "--for=condition=ResolvedRefs=False", "trafficsplit/broken", "--timeout=120s"); err != nil {
		t.Fatalf("missing backend: %v\n%s", err, out)
	}
	out, err = env.Kubectl(ctx, nil, "get", "trafficsplit", "broken", "-n", "shop", "-o", `jsonpath={.status.conditions[?(@.type=="ResolvedRefs")].reason}: {.status.conditions[?(@.type=="ResolvedRefs")].message}`)
	if err != nil || !strings.HasPrefix(out, "BackendNotFound: ") || !strings.Contains(out, `"nope"`) {
		t.Fatalf("missing backend status = %q, %v", out, err)
	}
	wait("the good split after a bad one")
}

const rolloutYAML = `
apiVersion: v1
kind: Namespace
metadata: {name: weft-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: checkout, namespace: shop}
spec: {selector: {app: checkout}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: checkout-v1, namespace: shop}
spec: {selector: {app: checkout, version: v1}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: checkout-v2, namespace: shop}
spec: {selector: {app: checkout, version: v2}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficSplit
metadata: {name: checkout, namespace: shop}
spec:
  rootService: {name: checkout}
  backends: [{name: checkout-v1, weight: 90}, {name: checkout-v2, weight: 10}]
`

const brokenSplit = `
apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec: {selector: {app: other}, ports: [{name: http, port: 80}]}
---
apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficSplit
metadata: {name: broken, namespace: shop}
spec:
  rootService: {name: other}
  backends: [{name: other, weight: 50}, {name: BACKEND, weight: 50}]
`
