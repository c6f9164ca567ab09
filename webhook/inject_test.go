package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/weftmesh/weft/dataplane"
)

func enabledNS(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}}}
}

func testPod(mut ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop", Labels: map[string]string{"app": "p"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "setup", Image: "setup"}},
			Containers:     []corev1.Container{{Name: "app", Image: "app"}},
		},
	}
	for _, m := range mut {
		m(p)
	}
	return p
}

func mustInject(t *testing.T, p *corev1.Pod, o Options) *corev1.Pod {
	t.Helper()
	out, r, err := Inject(p, enabledNS(p.Namespace), nil, o)
	if err != nil || !r.Injected {
		t.Fatalf("not injected: %+v %v", r, err)
	}
	return out
}

func TestNativeSidecarStartsBeforeTheApplication(t *testing.T) {
	in := testPod()
	out := mustInject(t, in, Options{})
	var names []string
	for _, c := range out.Spec.InitContainers {
		names = append(names, c.Name)
	}
	if d := cmp.Diff([]string{dataplane.InitContainerName, dataplane.SidecarContainerName, "setup"}, names); d != "" {
		t.Errorf("init container order (-want +got):\n%s", d)
	}
	proxy := out.Spec.InitContainers[1]
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("proxy is not a native sidecar: restartPolicy %v", proxy.RestartPolicy)
	}
	sp := proxy.StartupProbe
	if sp == nil || sp.HTTPGet == nil || sp.HTTPGet.Path != "/ready" || sp.HTTPGet.Port.IntVal != dataplane.ReadinessPort {
		t.Fatalf("startup probe %+v, want GET :15021/ready", sp)
	}
	if proxy.Lifecycle != nil {
		t.Errorf("native sidecar has a lifecycle hook %+v; Kubernetes already stops it after the app", proxy.Lifecycle)
	}
	if len(out.Spec.Containers) != 1 {
		t.Errorf("containers changed: %v", out.Spec.Containers)
	}
	if in.Spec.InitContainers[0].Name != "setup" || len(in.Spec.InitContainers) != 1 {
		t.Error("Inject modified its input")
	}
	sc := out.Spec.InitContainers[0].SecurityContext
	if d := cmp.Diff([]corev1.Capability{"NET_ADMIN", "NET_RAW"}, sc.Capabilities.Add); d != "" || *sc.Privileged || *sc.AllowPrivilegeEscalation {
		t.Errorf("weft-init security context: %+v", sc)
	}
	if *proxy.SecurityContext.RunAsUser != 1337 || !*proxy.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("proxy security context: %+v", proxy.SecurityContext)
	}
}

func TestLegacySidecarDrainsForTheGracePeriod(t *testing.T) {
	grace := func(s int64) func(*corev1.Pod) {
		return func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = &s }
	}
	drain := func(v string) func(*corev1.Pod) {
		return func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationProxyDrainSeconds: v} }
	}
	for _, c := range []struct {
		name  string
		pod   *corev1.Pod
		o     Options
		sleep int64 // 0: no preStop
	}{
		{"default grace 30s", testPod(), Options{LegacySidecar: true}, 28},
		{"grace 120s", testPod(grace(120)), Options{LegacySidecar: true}, 118},
		{"grace 1s", testPod(grace(1)), Options{LegacySidecar: true}, 0},
		{"annotation", testPod(grace(60), drain("5")), Options{LegacySidecar: true}, 5},
		{"API server before 1.30", testPod(), Options{LegacySidecar: true, NoSleepAction: true}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := mustInject(t, c.pod, c.o)
			proxy := out.Spec.Containers[0]
			if proxy.Name != dataplane.SidecarContainerName || proxy.RestartPolicy != nil {
				t.Fatalf("first container is %q (restartPolicy %v), want the legacy proxy", proxy.Name, proxy.RestartPolicy)
			}
			var got int64
			if proxy.Lifecycle != nil {
				got = proxy.Lifecycle.PreStop.Sleep.Seconds
			}
			if got != c.sleep {
				t.Errorf("preStop sleep %ds, want %ds", got, c.sleep)
			}
			if last := out.Spec.InitContainers[len(out.Spec.InitContainers)-1]; last.Name != dataplane.InitContainerName {
				t.Errorf("weft-init must run after the pod's init containers in legacy mode; last is %q", last.Name)
			}
			if out.Annotations[annotationDefaultContainer] != "app" {
				t.Errorf("kubectl default container %q, want app", out.Annotations[annotationDefaultContainer])
			}
		})
	}
}

func TestSkipReasons(t *testing.T) {
	plain := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		ns   *corev1.Namespace
		want SkipReason
	}{
		{"kube-system", testPod(func(p *corev1.Pod) { p.Namespace = "kube-system" }), enabledNS("kube-system"), SystemNamespace},
		{"weft-system", testPod(func(p *corev1.Pod) { p.Namespace = "weft-system" }), enabledNS("weft-system"), SystemNamespace},
		{"opted out by annotation", testPod(func(p *corev1.Pod) { p.Annotations = map[string]string{dataplane.LabelInject: "false"} }), enabledNS("shop"), OptedOut},
		{"opted out by label", testPod(func(p *corev1.Pod) { p.Labels[dataplane.LabelInject] = "false" }), enabledNS("shop"), OptedOut},
		{"annotation beats label", testPod(func(p *corev1.Pod) {
			p.Labels[dataplane.LabelInject] = "true"
			p.Annotations = map[string]string{dataplane.LabelInject: "False"}
		}), plain, OptedOut},
		{"namespace not enabled", testPod(), plain, NamespaceNotEnabled},
		{"namespace unknown", testPod(), nil, NamespaceNotEnabled},
		{"host network", testPod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), enabledNS("shop"), HostNetwork},
		{"static pod", testPod(func(p *corev1.Pod) { p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "x"} }), enabledNS("shop"), StaticPod},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, r, err := Inject(c.pod, c.ns, nil, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Injected || r.Reason != c.want {
				t.Fatalf("report %+v, want skipped %s", r, c.want)
			}
			if got := out.Annotations[dataplane.AnnotationInjectStatus]; got != "skipped: "+string(c.want) {
				t.Errorf("status annotation %q", got)
			}
			if r.Reason.Message() == "" {
				t.Errorf("%s has no message", r.Reason)
			}
			if len(out.Spec.InitContainers) != 1 || len(out.Spec.Containers) != 1 {
				t.Error("a skipped pod got containers")
			}
		})
	}
}

func TestInjectIsIdempotent(t *testing.T) {
	once := mustInject(t, testPod(), Options{})
	twice, r, err := Inject(once, enabledNS("shop"), nil, Options{})
	if err != nil || r.Injected || r.Reason != AlreadyInjected {
		t.Fatalf("second injection: %+v %v", r, err)
	}
	if d := cmp.Diff(once, twice); d != "" {
		t.Errorf("second injection changed the pod:\n%s", d)
	}
	// A pod label opts in where the namespace does not.
	p := testPod(func(p *corev1.Pod) { p.Labels[dataplane.LabelInject] = "true" })
	if _, r, _ := Inject(p, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, nil, Options{}); !r.Injected {
		t.Errorf("pod opt-in was not injected: %+v", r)
	}
}

func TestAppProbesAnnotation(t *testing.T) {
	out := mustInject(t, testPod(func(p *corev1.Pod) {
		p.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intOrStr(8080)}}, TimeoutSeconds: 2}
	}), Options{})
	probes, err := ParseAppProbes(out.Annotations[dataplane.AnnotationAppProbes])
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]AppProbe{"/app-health/app/livez": {Port: 8080, Path: "/healthz", Scheme: "HTTP", TimeoutSeconds: 2}}
	if d := cmp.Diff(want, probes); d != "" {
		t.Errorf("app probes (-want +got):\n%s", d)
	}
	if g := out.Spec.Containers[0].LivenessProbe.HTTPGet; g.Path != "/app-health/app/livez" || g.Port.IntVal != dataplane.ReadinessPort {
		t.Errorf("probe not rewritten: %+v", g)
	}
}

func TestOptionsForVersion(t *testing.T) {
	for _, c := range []struct {
		minor           string
		legacy, nosleep bool
	}{{"28+", true, true}, {"29", false, true}, {"30", false, false}, {"37", false, false}} {
		o := OptionsForVersion(Options{}, "1", c.minor)
		if o.LegacySidecar != c.legacy || o.NoSleepAction != c.nosleep {
			t.Errorf("1.%s: %+v", c.minor, o)
		}
	}
}

func TestHandler(t *testing.T) {
	reader := fake.NewClientBuilder().WithScheme(Scheme).WithObjects(
		enabledNS("shop"),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	).Build()
	h := NewHandler(reader, Scheme, Options{})
	review := func(ns string, p *corev1.Pod) admission.Response {
		raw, _ := json.Marshal(p)
		return h.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			Operation: admissionv1.Create, Namespace: ns,
			Kind:   metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Object: runtime.RawExtension{Raw: raw},
		}})
	}
	counter := func(result, reason string) float64 { return scrape(t, result, reason) }

	before := counter(resultInjected, "")
	p := testPod()
	p.Namespace = "" // as for a pod created from a template
	resp := review("shop", p)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("injection: allowed %v, %d patch operations, %v", resp.Allowed, len(resp.Patches), resp.Result)
	}
	// The real API server applies the patch in test/e2e; here, check that
	// it carries the sidecar.
	ops, _ := json.Marshal(resp.Patches)
	if !strings.Contains(string(ops), `"weft-proxy"`) || !strings.Contains(string(ops), `"weft-init"`) {
		t.Errorf("the patch does not add weft-init and weft-proxy: %s", ops)
	}
	if counter(resultInjected, "") != before+1 {
		t.Error("injected counter did not move")
	}

	before = counter(resultSkipped, string(NamespaceNotEnabled))
	resp = review("plain", testPod())
	if !resp.Allowed || counter(resultSkipped, string(NamespaceNotEnabled)) != before+1 {
		t.Errorf("unlabelled namespace: %+v", resp)
	}
	if len(resp.Patches) != 1 || !strings.Contains(resp.Patches[0].Path, "annotations") {
		t.Errorf("a skipped pod should only get its status annotation: %+v", resp.Patches)
	}

	before = counter(resultRejected, "Invalid")
	resp = review("shop", testPod(func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationProxyCPU: "lots"} }))
	if resp.Allowed || !strings.Contains(resp.Result.Message, "annotation weft.dev/proxy-cpu") || counter(resultRejected, "Invalid") != before+1 {
		t.Errorf("invalid annotation: allowed %v, %q", resp.Allowed, resp.Result.Message)
	}

	resp = review("missing", testPod())
	if resp.Allowed || resp.Result.Code != 500 {
		t.Errorf("missing namespace must fail closed: %+v", resp.Result)
	}
}

func intOrStr(n int) intstr.IntOrString { return intstr.FromInt(n) }

// scrape reads weft_webhook_injections_total from controller-runtime's
// registry the way Prometheus does.
func scrape(t *testing.T, result, reason string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	series := fmt.Sprintf("weft_webhook_injections_total{reason=%q,result=%q} ", reason, result)
	for _, l := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(l, series); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no series %s in\n%s", series, rec.Body.String())
	return 0
}

func TestInjectManifests(t *testing.T) {
	in := []byte(`apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: web}]
---
apiVersion: v1
kind: Pod
metadata: {name: agent}
spec:
  hostNetwork: true
  containers: [{name: agent, image: agent}]
`)
	out, notes, err := InjectManifests(in, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Deployment default/web: injected", "Pod default/agent: skipped: HostNetwork"}
	if d := cmp.Diff(want, notes); d != "" {
		t.Errorf("notes (-want +got):\n%s", d)
	}
	objs, err := DecodeYAML(out)
	if err != nil || len(objs) != 3 {
		t.Fatalf("output has %d objects (%v):\n%s", len(objs), err, out)
	}
	if _, ok := objs[0].(*corev1.Service); !ok {
		t.Errorf("first object is %T, want the Service passed through", objs[0])
	}
	if !strings.Contains(string(out), "name: weft-proxy") {
		t.Errorf("the Deployment was not injected:\n%s", out)
	}
	if _, _, err := InjectManifests([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: x, annotations: {weft.dev/proxy-cpu: lots}}\nspec: {containers: [{name: a, image: a}]}\n"), nil, Options{}); err == nil || !strings.HasPrefix(err.Error(), "Pod x: annotation weft.dev/proxy-cpu") {
		t.Errorf("invalid pod: %v", err)
	}
}

// TestHandlerNamespaceNotCachedYet: a pod created right after its
// namespace (kubectl create namespace x; kubectl apply -n x ...) reaches
// the webhook before the controller's cache has seen the namespace; the
// handler reads it from the API server instead of refusing the pod (found
// by test/e2e TestCLI, whose pod creation was refused "reading namespace
// explain: Namespace explain not found").
func TestHandlerNamespaceNotCachedYet(t *testing.T) {
	cache := fake.NewClientBuilder().WithScheme(Scheme).Build()
	live := fake.NewClientBuilder().WithScheme(Scheme).WithObjects(enabledNS("fresh")).Build()
	raw, _ := json.Marshal(testPod())
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, Namespace: "fresh",
		Kind:   metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Object: runtime.RawExtension{Raw: raw},
	}}
	resp := NewHandler(cache, Scheme, Options{}).WithLiveReader(live).Handle(context.Background(), req)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("a pod in a namespace the cache has not seen yet: allowed %v, %d patch operations, %v; want it injected", resp.Allowed, len(resp.Patches), resp.Result)
	}
	// Without the namespace anywhere, it still fails closed.
	resp = NewHandler(cache, Scheme, Options{}).WithLiveReader(cache).Handle(context.Background(), req)
	if resp.Allowed {
		t.Fatalf("a pod in a namespace that does not exist was allowed")
	}
}
