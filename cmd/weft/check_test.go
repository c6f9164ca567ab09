package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/localmesh"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/internal/testing/testpki"
	"github.com/weftmesh/weft/webhook"
	"github.com/weftmesh/weft/xds"
)

// TestCheck runs `weft check` against the real API server: an install
// that config/default and a running weft-controller would leave (the
// controller's effects — Deployment status, caBundle, webhook endpoints,
// policy status — written by the test; the webhook itself served by weft's
// admission handler, which the API server calls for the check's dry-run
// pod), then the same cluster broken in every way the command detects,
// each failure with its fix.
func TestCheck(t *testing.T) {
	// The webhook is served for real (weft's admission handler over TLS)
	// and the API server reaches it through Service weft-webhook's
	// EndpointSlice, which cannot hold a loopback address.
	hostIP, err := localmesh.HostIP()
	if err != nil {
		t.Skip(err)
	}
	env, err := testenv.New(testenv.Options{AggregatorRouting: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the test API server: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// One weft-controller replica's /debug/proxies (xds.ProxyStatus, as the
	// controller encodes it; no kubelet here, so no port-forward: --address,
	// as weft proxy-status takes).
	var proxiesMu sync.Mutex
	connectedIDs := []string{"web-0.shop", "rpc-0.shop"}
	replica := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxiesMu.Lock()
		defer proxiesMu.Unlock()
		var ps []xds.ProxyStatus
		for i, id := range connectedIDs {
			ps = append(ps, xds.ProxyStatus{ID: id, Stream: uint64(i + 1), Namespace: "shop", Kind: "sidecar", Protocol: "delta"})
		}
		_ = json.NewEncoder(w).Encode(ps)
	}))
	defer replica.Close()
	extraArgs := []string{"--address", replica.URL}
	run := func() (string, error) {
		cmd := checkCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SilenceErrors = true
		cmd.SetArgs(append([]string{"--kubeconfig", env.Kubeconfig}, extraArgs...))
		err := cmd.ExecuteContext(ctx)
		return out.String(), err
	}

	// Namespaces and pods first: once the webhook is registered, nothing
	// serves it here, and it fails closed.
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "legacy"}},
	} {
		must(c.Create(ctx, ns))
	}
	always := corev1.ContainerRestartPolicyAlways
	must(c.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0", Annotations: map[string]string{dataplane.AnnotationInjectStatus: "injected"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: dataplane.SidecarContainerName, Image: "envoy", RestartPolicy: &always}},
			Containers:     []corev1.Container{{Name: "app", Image: "web"}},
		},
	}))
	// A proxyless gRPC pod (weft's agent beside the application), and a
	// sidecar pod that is not running yet.
	must(c.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "rpc-0", Annotations: map[string]string{dataplane.AnnotationInjectStatus: "injected", dataplane.AnnotationProxyless: "grpc"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: dataplane.AgentContainerName, Image: "weft", RestartPolicy: &always}},
			Containers:     []corev1.Container{{Name: "app", Image: "rpc"}},
		},
	}))
	must(c.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api-0", Annotations: map[string]string{dataplane.AnnotationInjectStatus: "injected"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: dataplane.SidecarContainerName, Image: "envoy", RestartPolicy: &always}},
			Containers:     []corev1.Container{{Name: "app", Image: "api"}},
		},
	}))
	must(c.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "new-0", Annotations: map[string]string{dataplane.AnnotationInjectStatus: "injected"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: dataplane.SidecarContainerName, Image: "envoy", RestartPolicy: &always}},
			Containers:     []corev1.Container{{Name: "app", Image: "api"}},
		},
	}))
	setRunning := func(names ...string) {
		t.Helper()
		for _, n := range names {
			var p corev1.Pod
			must(c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: n}, &p))
			p.Status.Phase = corev1.PodRunning
			must(c.Status().Update(ctx, &p))
		}
	}
	setRunning("web-0", "rpc-0")
	// A pod that started before its namespace was labelled: once it is,
	// the pod is outside the mesh without the webhook having seen it.
	must(c.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "legacy", Name: "old-0"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "old"}}},
	}))

	// What config/default installs, with what a running controller adds.
	if out, err := env.Kubectl(ctx, nil, "apply", "--server-side", "-k", filepath.Join(env.Root, "config", "webhook")); err != nil {
		t.Fatalf("applying config/webhook: %v\n%s", err, out)
	}
	ca := testpki.NewCA(t)
	webhookAddr := serveWebhook(t, c, ca, hostIP)
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	setCABundle := func(pem []byte) {
		t.Helper()
		must(c.Get(ctx, client.ObjectKey{Name: "weft-sidecar-injector"}, &mwc))
		for i := range mwc.Webhooks {
			mwc.Webhooks[i].ClientConfig.CABundle = pem
		}
		must(c.Update(ctx, &mwc))
	}
	setCABundle(ca.PEM)
	ready := true
	slice := func(addr string) *discoveryv1.EndpointSlice {
		host, port, err := net.SplitHostPort(addr)
		must(err)
		n, err := strconv.Atoi(port)
		must(err)
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "weft-system", Name: "weft-webhook-1", Labels: map[string]string{discoveryv1.LabelServiceName: "weft-webhook"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To(int32(n)), Protocol: ptr.To(corev1.ProtocolTCP)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		}
	}
	must(c.Create(ctx, slice(webhookAddr)))
	replicas := int32(2)
	labels := map[string]string{"app.kubernetes.io/name": "weft-controller"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "weft-controller"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "weft-controller", Image: "weft-controller"}}}}},
	}
	must(c.Create(ctx, dep))
	// One replica's pod, serving /metrics on its monitoring port at the
	// pod IP the API server's pod proxy dials.
	var metricsMu sync.Mutex
	metricsText := "weft_certificates_issued_total{provider=\"builtin\"} 12\nweft_certificates_issue_failures_total{provider=\"builtin\"} 0\nweft_certificates_near_expiry 0\n"
	ml, err := net.Listen("tcp", net.JoinHostPort(hostIP, "0"))
	must(err)
	metricsSrv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		metricsMu.Lock()
		defer metricsMu.Unlock()
		_, _ = io.WriteString(w, metricsText)
	})}
	go func() { _ = metricsSrv.Serve(ml) }()
	defer metricsSrv.Close()
	_, mport, _ := net.SplitHostPort(ml.Addr().String())
	mportN, err := strconv.Atoi(mport)
	must(err)
	ctrlPod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "weft-controller-0", Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "weft-controller", Image: "weft-controller",
			Ports: []corev1.ContainerPort{{Name: "monitoring", ContainerPort: int32(mportN)}}}}},
	}
	must(c.Create(ctx, ctrlPod))
	ctrlPod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: hostIP, PodIPs: []corev1.PodIP{{IP: hostIP}}}
	must(c.Status().Update(ctx, ctrlPod))
	dep.Status = appsv1.DeploymentStatus{Replicas: 2, ReadyReplicas: 2, AvailableReplicas: 2, Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable"}}}
	must(c.Status().Update(ctx, dep))
	ts := &v1alpha1.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec:       v1alpha1.TrafficSplitSpec{RootService: v1alpha1.RootServiceReference{Name: "web"}, Backends: []v1alpha1.Backend{{Name: "web-v1"}}},
	}
	must(c.Create(ctx, ts))
	setConditions := func(programmed metav1.ConditionStatus, reason, msg string) {
		t.Helper()
		must(c.Get(ctx, client.ObjectKeyFromObject(ts), ts))
		g := ts.Generation
		ts.Status.Conditions = []metav1.Condition{
			{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAccepted, ObservedGeneration: g, LastTransitionTime: metav1.Now()},
			{Type: v1alpha1.ConditionResolvedRefs, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonResolvedRefs, ObservedGeneration: g, LastTransitionTime: metav1.Now()},
			{Type: v1alpha1.ConditionProgrammed, Status: programmed, Reason: reason, Message: msg, ObservedGeneration: g, LastTransitionTime: metav1.Now()},
		}
		must(c.Status().Update(ctx, ts))
	}
	setConditions(metav1.ConditionTrue, v1alpha1.ReasonProgrammed, "")
	// A mesh HTTPRoute (GAMMA: its parent is a Service), whose parent
	// status weft writes beside another controller's, and a route attached
	// to a Gateway only, which is not weft's.
	svc, port := gatewayv1.Kind("Service"), gatewayv1.PortNumber(80)
	route := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Group: ptr.To(gatewayv1.Group("")), Kind: &svc, Name: "web", Port: &port}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Kind: &svc, Name: "web-v1", Port: &port}}}}}}},
	}
	must(c.Create(ctx, route))
	must(c.Create(ctx, &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "edge"},
		Spec:       gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "public"}}}},
	}))
	setRouteConditions := func(resolved metav1.ConditionStatus, reason, msg string) {
		t.Helper()
		must(c.Get(ctx, client.ObjectKeyFromObject(route), route))
		g := route.Generation
		cond := func(typ string, st metav1.ConditionStatus, reason, msg string) metav1.Condition {
			return metav1.Condition{Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: g, LastTransitionTime: metav1.Now()}
		}
		route.Status.Parents = []gatewayv1.RouteParentStatus{
			{ParentRef: route.Spec.ParentRefs[0], ControllerName: "example.com/other-mesh", Conditions: []metav1.Condition{cond(v1alpha1.ConditionAccepted, metav1.ConditionFalse, "NotAllowed", "not ours")}},
			{ParentRef: route.Spec.ParentRefs[0], ControllerName: "mesh.weft.dev/weft-controller", Conditions: []metav1.Condition{
				cond(v1alpha1.ConditionAccepted, metav1.ConditionTrue, v1alpha1.ReasonAccepted, ""),
				cond(v1alpha1.ConditionResolvedRefs, resolved, reason, msg),
				cond(v1alpha1.ConditionProgrammed, metav1.ConditionTrue, v1alpha1.ReasonProgrammed, ""),
			}},
		}
		must(c.Status().Update(ctx, route))
	}
	setRouteConditions(metav1.ConditionTrue, v1alpha1.ReasonResolvedRefs, "")

	out, err := run()
	if err != nil || strings.Contains(out, "✖") {
		t.Fatalf("weft check on a healthy install: %v\n%s", err, out)
	}
	for _, want := range []string{
		"✔ Kubernetes API: reachable, v1.37",
		"✔ CRDs: AuthPolicy, BackendTrafficPolicy, MeshConfig, RateLimitPolicy, RetryPolicy, TrafficSplit served at mesh.weft.dev/v1alpha1",
		"✔ weft-controller: available, 2 of 2 replicas ready",
		"✔ Injection webhook: weft-sidecar-injector has a caBundle; Service weft-webhook has 1 ready endpoint(s); it injected a dry-run pod in default",
		"✔ MeshConfig: none named weft: every default applies",
		"✔ Root CA: no built-in root reported",
		"✔ Injection namespaces: 1 labelled weft.dev/inject=enabled: shop",
		"✔ Sidecars: every pod of the 4 in injected namespaces",
		"✔ Connected proxies: all 2 running meshed pods (1 with a sidecar, 1 proxyless) have an xDS stream, over 1 replica(s)",
		"✔ Workload certificates: 12 issued, no issue failure, none near expiry, over 1 replica(s)",
		"✔ Policies: all 2 Accepted, ResolvedRefs and Programmed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("healthy output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("healthy:\n%s", out)

	// Break it.
	dep.Status.ReadyReplicas, dep.Status.AvailableReplicas = 0, 0
	dep.Status.Conditions[0].Status, dep.Status.Conditions[0].Message = corev1.ConditionFalse, "Deployment does not have minimum availability."
	must(c.Status().Update(ctx, dep))
	must(c.Get(ctx, client.ObjectKey{Name: "weft-sidecar-injector"}, &mwc))
	mwc.Webhooks[1].ClientConfig.CABundle = nil
	must(c.Update(ctx, &mwc))
	var legacy corev1.Namespace
	must(c.Get(ctx, client.ObjectKey{Name: "legacy"}, &legacy))
	legacy.Labels[dataplane.LabelInject] = dataplane.InjectEnabled
	must(c.Update(ctx, &legacy))
	setConditions(metav1.ConditionFalse, v1alpha1.ReasonProxyRejected, "1 proxy rejected the configuration: shop/client-0: route: invalid weight")
	setRouteConditions(metav1.ConditionFalse, "BackendNotFound", "Service shop/web-v1 not found")
	must(c.Create(ctx, &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout"},
		Spec:       gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Group: ptr.To(gatewayv1.Group("")), Kind: &svc, Name: "checkout"}}}},
	}))
	// A mesh GRPCRoute weft-controller has not processed.
	must(c.Create(ctx, &gatewayv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "rpc"},
		Spec:       gatewayv1.GRPCRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Group: ptr.To(gatewayv1.Group("")), Kind: &svc, Name: "rpc"}}}},
	}))
	mc := &v1alpha1.MeshConfig{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.MeshConfigName}}
	must(c.Create(ctx, mc))
	mc.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionRootRotation, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonRotationBlocked,
		Message: "spec.certificates.builtIn.rootGeneration is 3 but the root Secret holds generation 1", LastTransitionTime: metav1.Now()}}
	mc.Status.RootRotation = &v1alpha1.RootRotationStatus{Phase: "AddNewRoot", CurrentRoot: &v1alpha1.RootCertificateStatus{SHA256: "aa11bb22cc33dd44ee55ff66",
		NotAfter: metav1.NewTime(time.Now().Add(10*24*time.Hour + time.Hour))}}
	must(c.Status().Update(ctx, mc))
	must(c.Delete(ctx, &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: "retrypolicies.mesh.weft.dev"}}))
	// api-0 runs without a stream, rpc-0 lost its own, and a second
	// replica does not answer.
	setRunning("api-0")
	// new-0 has just started and is not ready: not counted yet (its start
	// time a few minutes ahead, as a node's clock may be, keeps it within
	// the grace however slow this machine is).
	var newPod corev1.Pod
	must(c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "new-0"}, &newPod))
	newPod.Status.Phase, newPod.Status.StartTime = corev1.PodRunning, ptr.To(metav1.NewTime(time.Now().Add(5*time.Minute)))
	must(c.Status().Update(ctx, &newPod))
	proxiesMu.Lock()
	connectedIDs = []string{"web-0.shop"}
	proxiesMu.Unlock()
	extraArgs = append(extraArgs, "--address", "127.0.0.1:1")
	// Renewal failing: certificates near expiry, issues failing.
	metricsMu.Lock()
	metricsText = "weft_certificates_issued_total{provider=\"builtin\"} 12\nweft_certificates_issue_failures_total{provider=\"builtin\"} 5\nweft_certificates_near_expiry 2\n"
	metricsMu.Unlock()

	wants := []string{
		"✖ CRDs: RetryPolicy not served at mesh.weft.dev/v1alpha1\n    fix: weft install | kubectl apply --server-side -f -",
		"✖ weft-controller: Deployment weft-system/weft-controller: no replica is available: Deployment does not have minimum availability. (0 of 2 ready)",
		"    fix: kubectl -n weft-system describe deployment weft-controller; kubectl -n weft-system logs deployment/weft-controller",
		"✖ Injection webhook: MutatingWebhookConfiguration weft-sidecar-injector has no caBundle for object.inject.weft.dev",
		"✖ MeshConfig: root rotation blocked: spec.certificates.builtIn.rootGeneration is 3",
		"✖ Root CA: root sha256 aa11bb22cc33dd44… expires ",
		"(10 days left)\n    fix: weft ca rotate-root --wait",
		"✔ Injection namespaces: 2 labelled weft.dev/inject=enabled: legacy, shop",
		"✖ Sidecars: 1 pod(s) started without the sidecar (the webhook did not see them): they are outside the mesh: legacy/old-0\n    fix: kubectl delete pod old-0 -n legacy",
		"✖ Connected proxies: 2 of 3 running meshed pods have no xDS stream to any weft-controller replica (they keep their last configuration, or have none): shop/api-0, shop/rpc-0; 1 starting (not ready, started under 1m0s ago) not counted yet; replica 127.0.0.1:1 (",
		"did not answer, its proxies are not counted\n    fix: weft proxy-status; kubectl -n shop logs api-0 -c weft-proxy",
		"✖ Workload certificates: 2 served certificate(s) with less than 10% of their lifetime left (weft-controller-0 2): renewal, due at half their lifetime, has been failing; 5 issue failure(s) since the replicas started\n" +
			"    fix: kubectl -n weft-system logs deployment/weft-controller | grep -i certificate; weft ca status",
		"✖ Policies: 4 of 4 not in effect:\n    TrafficSplit shop/web: Programmed=False (ProxyRejected): 1 proxy rejected the configuration: shop/client-0: route: invalid weight\n" +
			"    HTTPRoute shop/checkout: parent Service checkout: no status from weft-controller yet: it has not processed it (is it running?)\n" +
			"    HTTPRoute shop/web: parent Service web:80: ResolvedRefs=False (BackendNotFound): Service shop/web-v1 not found\n" +
			"    GRPCRoute shop/rpc: parent Service rpc: no status from weft-controller yet: it has not processed it (is it running?)\n" +
			"    fix: kubectl describe trafficsplit web -n shop   (weft translate -f shows the same status offline)\n" +
			"    kubectl describe httproute checkout -n shop",
		"    kubectl describe grpcroute rpc -n shop",
	}
	testkit.Eventually(t, "weft check reports every failure", func() error {
		out, err = run()
		if err == nil || err.Error() != "9 of 11 checks failed" {
			return fmt.Errorf("error %v\n%s", err, out)
		}
		for _, want := range wants {
			if !strings.Contains(out, want) {
				return fmt.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		return nil
	})
	t.Logf("broken:\n%s", out)

	// The webhook's other failures, each with its own fix; the caBundle
	// first returns before them.
	webhookFails := func(what string, wants ...string) {
		t.Helper()
		testkit.Eventually(t, "weft check reports "+what, func() error {
			out, err = run()
			if err == nil {
				return fmt.Errorf("no error\n%s", out)
			}
			for _, want := range wants {
				if !strings.Contains(out, want) {
					return fmt.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			return nil
		})
		t.Logf("%s:\n%s", what, out)
	}
	setCABundle(ca.PEM)
	must(c.Delete(ctx, slice(webhookAddr)))
	webhookFails("no ready endpoint",
		"✖ Injection webhook: Service weft-system/weft-webhook has no ready endpoint: the webhook is unreachable",
		"    fix: kubectl -n weft-system get pods -l app.kubernetes.io/name=weft-controller; kubectl -n weft-system logs deployment/weft-controller")
	// An endpoint where nothing listens: the API server's own error.
	l, err := net.Listen("tcp", net.JoinHostPort(hostIP, "0"))
	must(err)
	closed := l.Addr().String()
	l.Close()
	must(c.Create(ctx, slice(closed)))
	webhookFails("connection refused",
		"✖ Injection webhook: a dry-run pod labelled weft.dev/inject=true in default was refused: ",
		"connection refused",
		"    fix: nothing listens behind Service weft-system/weft-webhook")
	// The webhook serves a certificate the caBundle does not verify.
	must(c.Delete(ctx, slice(closed)))
	must(c.Create(ctx, slice(webhookAddr)))
	setCABundle(testpki.NewCA(t).PEM)
	webhookFails("an unknown certificate authority",
		"✖ Injection webhook: a dry-run pod labelled weft.dev/inject=true in default was refused: ",
		"x509",
		"    fix: the webhook's certificate does not verify against weft-sidecar-injector's caBundle")

	// Issue failures without a certificate near expiry: a warning.
	metricsMu.Lock()
	metricsText = "weft_certificates_issued_total{provider=\"cert-manager\"} 12\nweft_certificates_issue_failures_total{provider=\"cert-manager\"} 3\nweft_certificates_near_expiry 0\n"
	metricsMu.Unlock()
	// A probe namespace whose Pod Security level refuses the injected pod
	// (weft-init's capabilities): the webhook answered, the pod would not
	// start there.
	setCABundle(ca.PEM)
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "strict", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "baseline"}}}))
	extraArgs = append(extraArgs, "--probe-namespace", "strict")
	webhookFails("a Pod Security level that refuses injected pods",
		"! Injection webhook: weft-sidecar-injector has a caBundle; Service weft-webhook has 1 ready endpoint(s); Pod Security admission in strict refuses the injected probe pod (",
		"    fix: weft check --probe-namespace NAMESPACE (one whose pod-security.kubernetes.io/enforce level admits weft-init's NET_ADMIN and NET_RAW), or relax strict's level")
	extraArgs = extraArgs[:len(extraArgs)-2]

	// No replica answers: said as such, not as every pod disconnected.
	extraArgs = []string{"--address", "127.0.0.1:1"}
	webhookFails("no replica answering",
		"✖ Connected proxies: no weft-controller replica answered, so no pod's stream can be checked: 127.0.0.1:1 (",
		"    fix: kubectl auth can-i create pods --subresource=portforward -n weft-system; or kubectl -n weft-system port-forward deployment/weft-controller 15014 & weft check --address 127.0.0.1:15014")
	webhookFails("issue failures",
		"! Workload certificates: 3 issue failure(s) since the replicas started (weft-controller-0 3), retried with backoff; none near expiry yet; 12 issued\n    fix: kubectl -n weft-system logs deployment/weft-controller | grep -i certificate")
}

// serveWebhook serves weft's injection handler over TLS on hostIP with a
// certificate for the webhook Service's name from ca, until the test ends.
func serveWebhook(t *testing.T, c client.Client, ca *testpki.CA, hostIP string) string {
	t.Helper()
	f := ca.IssueDNS(t, t.TempDir(), []string{"weft-webhook.weft-system.svc"})
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/inject", webhook.NewWebhook(webhook.NewHandler(c, c.Scheme(), webhook.Options{})))
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)} // the x509 case's handshake errors
	go func() { _ = srv.ServeTLS(lis, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return lis.Addr().String()
}
