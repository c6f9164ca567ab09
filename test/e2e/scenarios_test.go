package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/localmesh"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/webhook"
	"github.com/weftmesh/weft/xds"
)

// TestScenarios runs issue 16's end-to-end scenarios, each as a user would
// check it, on one local mesh (internal/testing/localmesh: the launcher
// `make run` uses): real kube-apiserver, weft-controller, webhook, `weft
// agent` and weft-demo processes talking over real sockets. The test only
// drives kubectl and reads what the workloads and the controller export
// (/metrics, the demo's admin endpoints, the controller's /debug) — except
// where a scenario says otherwise (5: a simulated Envoy that NACKs).
//
// The scenarios share the mesh, each in its own namespaces, and run one
// after another (their traffic measurements would disturb each other on
// two cores). The samples' canary demo (namespace shop) carries calls the
// whole time: no scenario may make one of them fail. The first subtest
// checks the demo itself (`go test -run TestScenarios/0-demo` for a quick
// look at the whole mesh).
func TestScenarios(t *testing.T) {
	suite := time.Now()
	m := startMesh(t, localmesh.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if out, err := m.ApplySamples(ctx); err != nil {
		t.Fatalf("applying config/samples: %v\n%s", err, out)
	}
	demo, err := m.StartDemo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &scenarios{m: m, ctx: ctx, demo: demo}
	demoBefore := demoCalls(t, demo.Frontend.MetricsURL())
	t.Logf("mesh and demo up in %v", time.Since(suite).Round(100*time.Millisecond))

	for _, sc := range []struct {
		name string
		run  func(*testing.T, *scenarios)
	}{
		{"0-demo", testDemo},
		{"1-canary", testCanary},
		{"6-endpoint-churn", testEndpointChurn},
		{"2-retries", testRetries},
		{"3-authorization", testAuthorization},
		{"5-rejected-configuration", testRejectedConfiguration},
		{"4-mtls-modes", testMTLSModes},
		{"7-bad-input", testBadInput},
	} {
		start, ran := time.Now(), false
		t.Run(sc.name, func(t *testing.T) { ran = true; sc.run(t, s) })
		if ran {
			t.Logf("scenario %s: %v", sc.name, time.Since(start).Round(100*time.Millisecond))
		}
	}

	// The demo in shop carried calls through every scenario: none failed.
	got := demoCalls(t, demo.Frontend.MetricsURL()).since(demoBefore)
	if bad := got.count(func(k callKey) bool { return k.Code != "OK" }); bad > 0 || got.count(nil) == 0 {
		t.Errorf("the demo's frontend, through every scenario: %v failed of %v calls; want none failed: %v", bad, got.count(nil), got)
	}
	t.Logf("the demo's frontend made %v calls during the scenarios, all OK", got.count(nil))
	t.Logf("TestScenarios: %v in all", time.Since(suite).Round(100*time.Millisecond))
}

// scenarios is what the scenarios share.
type scenarios struct {
	m    *localmesh.Mesh
	ctx  context.Context
	demo *localmesh.Demo
}

// kubectl runs kubectl with stdin (may be empty) and fails the test on
// error.
func (s *scenarios) kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	var in []byte
	if stdin != "" {
		in = []byte(stdin)
	}
	out, err := s.m.Env.Kubectl(s.ctx, in, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// namespace creates a meshed namespace (weft.dev/inject=enabled, so pods
// created in it are injected and weft publishes weft-root-ca in it) with
// more labels if given, as KEY=VALUE.
func (s *scenarios) namespace(t *testing.T, name string, labels ...string) {
	t.Helper()
	y := fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels:\n    weft.dev/inject: enabled\n", name)
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		y += fmt.Sprintf("    %s: %q\n", k, v)
	}
	s.kubectl(t, y, "apply", "-f", "-")
}

// start starts a workload and stops it when the test ends.
func (s *scenarios) start(t *testing.T, spec localmesh.Spec) *localmesh.Workload {
	t.Helper()
	w, err := s.m.StartWorkload(s.ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Stop(context.Background()) })
	return w
}

// serviceYAML is a Service of one port 80 named http, to the pods' port
// named http, selecting app=<selector app> (and version=<v> when given as
// "app,version").
func serviceYAML(ns, name, selector string) string {
	app, version, _ := strings.Cut(selector, ",")
	sel := fmt.Sprintf("    app: %s\n", app)
	if version != "" {
		sel += fmt.Sprintf("    version: %s\n", version)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %s
  namespace: %s
spec:
  selector:
%s  ports:
  - name: http
    port: 80
    targetPort: http
---
`, name, ns, sel)
}

// trafficSplitYAML splits root's port 80 between backends by weights.
func trafficSplitYAML(ns, root string, backends ...any) string {
	y := fmt.Sprintf(`apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficSplit
metadata:
  name: %s
  namespace: %s
spec:
  rootService: {name: %s, port: 80}
  backends:
`, root, ns, root)
	for i := 0; i+1 < len(backends); i += 2 {
		y += fmt.Sprintf("  - {name: %s, weight: %d}\n", backends[i], backends[i+1])
	}
	return y + "---\n"
}

// waitCondition runs `kubectl wait --for=condition=TYPE[=VALUE]` on one
// object, as a user or a pipeline does, and returns how long it took.
func (s *scenarios) waitCondition(t *testing.T, ns, object, condition string) time.Duration {
	t.Helper()
	start := time.Now()
	out, err := s.m.Env.Kubectl(s.ctx, nil, "wait", "-n", ns, object, "--for=condition="+condition, "--timeout=90s")
	if err != nil {
		st, _ := s.m.Env.Kubectl(s.ctx, nil, "get", "-n", ns, object, "-o", "yaml")
		ps, _ := json.MarshalIndent(s.proxies(t), "", "  ")
		t.Fatalf("%v\n%s\n%s\nproxies: %s", err, out, st, ps)
	}
	return time.Since(start)
}

// condition is one of an object's status conditions, read with kubectl.
type condition struct {
	Type, Status, Reason, Message string
	ObservedGeneration            int64
}

func (s *scenarios) conditions(t *testing.T, ns, object string) (map[string]condition, int64) {
	t.Helper()
	var obj struct {
		Metadata struct{ Generation int64 }
		Status   struct{ Conditions []condition }
	}
	if err := json.Unmarshal([]byte(s.kubectl(t, "", "get", "-n", ns, object, "-o", "json")), &obj); err != nil {
		t.Fatal(err)
	}
	out := map[string]condition{}
	for _, c := range obj.Status.Conditions {
		out[c.Type] = c
	}
	return out, obj.Metadata.Generation
}

// callKey is one series of a weft-demo client's weft_demo_calls_total.
type callKey struct{ Service, Pod, Code string }

// callCounts is a client's weft_demo_calls_total: which Service and pod
// answered its calls, by gRPC code.
type callCounts map[callKey]float64

func demoCalls(t *testing.T, url string) callCounts {
	t.Helper()
	out := callCounts{}
	for _, mt := range metricFamily(t, url, "weft_demo_calls_total") {
		l := labels(mt.Label)
		out[callKey{l["service"], l["pod"], l["code"]}] += mt.GetCounter().GetValue()
	}
	return out
}

func (c callCounts) since(before callCounts) callCounts {
	out := callCounts{}
	for k, v := range c {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// count sums the series that keep says (nil: all).
func (c callCounts) count(keep func(callKey) bool) float64 {
	var n float64
	for k, v := range c {
		if keep == nil || keep(k) {
			n += v
		}
	}
	return n
}

func (c callCounts) String() string {
	var parts []string
	for k, v := range c {
		parts = append(parts, fmt.Sprintf("%s/%s %s: %v", k.Service, k.Pod, k.Code, v))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, "; ") + "}"
}

// awaitCalls polls a client's counts until at least n calls (that keep
// says; nil: all) were made since before, and returns them.
func awaitCalls(t *testing.T, url string, before callCounts, n float64, keep func(callKey) bool) callCounts {
	t.Helper()
	var got callCounts
	testkit.EventuallyTrue(t, fmt.Sprintf("%v calls from %s", n, url), func() bool {
		got = demoCalls(t, url).since(before)
		return got.count(keep) >= n
	})
	return got
}

// served is a weft-demo server's weft_demo_served_total by code.
func served(t *testing.T, w *localmesh.Workload) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, mt := range metricFamily(t, w.MetricsURL(), "weft_demo_served_total") {
		out[labels(mt.Label)["code"]] += mt.GetCounter().GetValue()
	}
	return out
}

func metricFamily(t *testing.T, url, name string) []*dto.Metric {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	if f := families[name]; f != nil {
		return f.Metric
	}
	return nil
}

func labels(ls []*dto.LabelPair) map[string]string {
	out := map[string]string{}
	for _, l := range ls {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// proxies reads the controller's /debug/proxies (every connected stream,
// per type SYNCED/STALE/NACKED with generations), as `weft proxy-status`
// does.
func (s *scenarios) proxies(t *testing.T) []xds.ProxyStatus {
	t.Helper()
	var all []xds.ProxyStatus
	for _, c := range s.m.Controllers() {
		if c.Process == nil || c.Err() != nil {
			continue
		}
		resp, err := http.Get("http://" + c.Debug + "/debug/proxies")
		if err != nil {
			t.Fatal(err)
		}
		var ps []xds.ProxyStatus
		err = json.NewDecoder(resp.Body).Decode(&ps)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ps...)
	}
	return all
}

// appStream is the xDS stream of a proxyless pod's application (not its
// weft agent's, which takes only secrets): the one holding listeners.
func (s *scenarios) appStream(t *testing.T, w *localmesh.Workload) (xds.ProxyStatus, bool) {
	t.Helper()
	for _, p := range s.proxies(t) {
		if _, ok := p.Types["Listener"]; ok && p.ID == w.Pod+"."+w.Namespace {
			return p, true
		}
	}
	return xds.ProxyStatus{}, false
}

// configDump is the controller's /debug/config_dump of one stream: per
// type, the resources it was last built, as JSON.
func (s *scenarios) configDump(t *testing.T, p xds.ProxyStatus) map[string][]json.RawMessage {
	t.Helper()
	for _, c := range s.m.Controllers() {
		if c.Process == nil || c.Err() != nil {
			continue
		}
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/config_dump?proxy=%s&stream=%d", c.Debug, p.ID, p.Stream))
		if err != nil {
			t.Fatal(err)
		}
		var out map[string][]json.RawMessage
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK {
			return out
		}
	}
	t.Fatalf("no replica has stream %d of %s", p.Stream, p.ID)
	return nil
}

// testDemo is `make run`'s mesh, as TestScenarios starts it: the samples
// applied, the demo's four proxyless workloads injected by the webhook and
// calling each other over mutual TLS, split by the canary sample's
// TrafficSplit.
func testDemo(t *testing.T, s *scenarios) {
	m, d, ctx := s.m, s.demo, s.ctx
	// The webhook injected the pods the launcher created.
	pod, err := m.Clientset().CoreV1().Pods(localmesh.DemoNamespace).Get(ctx, "frontend-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := containerNames(append(pod.Spec.InitContainers, pod.Spec.Containers...)); !slices.Contains(got, dataplane.AgentContainerName) || pod.Annotations[dataplane.AnnotationInjectStatus] != webhook.StatusInjected {
		t.Errorf("frontend-0's containers %v, annotations %v: want it injected with %s", got, pod.Annotations, dataplane.AgentContainerName)
	}
	before := scrape(t, d.Frontend.MetricsURL())
	time.Sleep(5 * time.Second)
	got := scrape(t, d.Frontend.MetricsURL()).since(before)
	for _, svc := range []string{"checkout-v1", "checkout-v2", "catalog"} {
		if got[demoCluster(svc)]["2"] == 0 {
			t.Errorf("no successful call to %s in 5 s: %v", svc, got)
		}
	}
	t.Logf("calls in 5 s: %v", got)
}
