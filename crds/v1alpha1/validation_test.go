package v1alpha1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	weftv1alpha1 "github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/testing/testenv"
)

// TestMeshAPI runs every check against one real API server (etcd +
// kube-apiserver with weft's CRDs installed): starting one takes seconds, so
// the checks are subtests of a single test. The subtests that only dry-run
// come first; "samples" then creates objects that "kubectl get weft" lists.
func TestMeshAPI(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("empty MeshConfig gets every default", func(t *testing.T) { testMeshConfigDefaults(ctx, t, env) })
	t.Run("invalid objects are rejected with a message", func(t *testing.T) { testInvalid(ctx, t, env) })
	t.Run("valid edge cases are accepted", func(t *testing.T) { testValidEdgeCases(ctx, t, env) })
	t.Run("samples apply", func(t *testing.T) { testSamples(ctx, t, env) })
	t.Run("kubectl get weft lists the samples", func(t *testing.T) { testGetWeft(ctx, t, env) })
	t.Run("Argo CD health test objects are valid", func(t *testing.T) { testArgoCDTestData(ctx, t, env) })
	t.Run("the trust domain cannot change in place", func(t *testing.T) { testTrustDomainImmutable(ctx, t, env) })
}

// testTrustDomainImmutable: issue 13 — changing spec.trustDomain of a
// running mesh stripped every sidecar's secrets. The API server refuses
// the change with a message that says how to make it.
func testTrustDomainImmutable(ctx context.Context, t *testing.T, env *testenv.Env) {
	mc := &unstructured.Unstructured{}
	mc.SetAPIVersion("mesh.weft.dev/v1alpha1")
	mc.SetKind("MeshConfig")
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "weft"}, mc); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(mc.Object, "prod.example.com", "spec", "trustDomain"); err != nil {
		t.Fatal(err)
	}
	err := env.Client.Update(ctx, mc, client.DryRunAll)
	if err == nil || !strings.Contains(err.Error(), "spec.trustDomain cannot be changed in place") || !strings.Contains(err.Error(), "delete the MeshConfig and create it") {
		t.Fatalf("changing spec.trustDomain: %v; want it refused with a message that says how to change it", err)
	}
}

// testArgoCDTestData checks that the objects the Argo CD health checks are
// tested on (config/argocd/mesh.weft.dev/<Kind>/testdata) are objects the
// API server accepts, status included, so that the health tests test real
// objects. Each is created under a new name in its own namespace, then its
// status is written through the status subresource.
func testArgoCDTestData(ctx context.Context, t *testing.T, env *testenv.Env) {
	files, err := filepath.Glob(filepath.Join(env.Root, "config", "argocd", "mesh.weft.dev", "*", "testdata", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Argo CD test data found (%v)", err)
	}
	const ns = "argocd-testdata"
	if _, err := env.Kubectl(ctx, nil, "create", "namespace", ns); err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		t.Run(filepath.Base(filepath.Dir(filepath.Dir(f)))+"/"+filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(data, &obj.Object); err != nil {
				t.Fatal(err)
			}
			status, hasStatus := obj.Object["status"]
			delete(obj.Object, "status")
			if obj.GetNamespace() != "" {
				obj.SetNamespace(ns)
			}
			if obj.GetKind() == "MeshConfig" {
				// The singleton exists (from the samples): check the spec by
				// dry run, and the status on the stored one.
				if err := env.Client.Update(ctx, withResourceVersion(ctx, t, env, obj), client.DryRunAll); err != nil {
					t.Fatalf("spec rejected: %v", err)
				}
			} else {
				obj.SetName(fmt.Sprintf("%s-%d", obj.GetName(), i))
				obj.SetGeneration(0)
				if err := env.Client.Create(ctx, obj); err != nil {
					t.Fatalf("spec rejected: %v", err)
				}
			}
			if !hasStatus {
				return
			}
			obj.Object["status"] = status
			if err := env.Client.Status().Update(ctx, withResourceVersion(ctx, t, env, obj), client.DryRunAll); err != nil {
				t.Errorf("status rejected: %v", err)
			}
		})
	}
}

// withResourceVersion gives obj the stored object's resourceVersion and
// generation, for an update.
func withResourceVersion(ctx context.Context, t *testing.T, env *testenv.Env, obj *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	stored := &unstructured.Unstructured{}
	stored.SetGroupVersionKind(obj.GroupVersionKind())
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), stored); err != nil {
		t.Fatal(err)
	}
	obj.SetResourceVersion(stored.GetResourceVersion())
	obj.SetGeneration(stored.GetGeneration())
	return obj
}

// wantMeshConfigDefaults is the spec of a MeshConfig created with no spec.
const wantMeshConfigDefaults = `
trustDomain: cluster.local
mtls:
  mode: Permissive
certificates:
  provider: BuiltIn
  workloadCertificateLifetime: 24h
sidecar:
  image: docker.io/envoyproxy/envoy-distroless:v1.40.0
  imagePullPolicy: IfNotPresent
  captureBackend: NFTables
  resources:
    requests: {cpu: 100m, memory: 128Mi}
    limits: {memory: 512Mi}
push:
  quietPeriod: 100ms
  maxDelay: 1s
accessLog:
  enabled: false
  format: JSON
tracing:
  collectorAddress: ""
  samplingPercent: 1
outboundTrafficPolicy: AllowAny
`

func testMeshConfigDefaults(ctx context.Context, t *testing.T, env *testenv.Env) {
	var want map[string]any
	if err := yaml.Unmarshal([]byte(wantMeshConfigDefaults), &want); err != nil {
		t.Fatal(err)
	}

	// kubectl, with no spec at all: what a user applying a bare MeshConfig gets.
	out, err := env.Kubectl(ctx, []byte("apiVersion: mesh.weft.dev/v1alpha1\nkind: MeshConfig\nmetadata:\n  name: weft\n"),
		"create", "--dry-run=server", "-o", "json", "-f", "-")
	if err != nil {
		t.Fatalf("an empty MeshConfig named weft was rejected: %v", err)
	}
	var got struct{ Spec map[string]any }
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	assertSameJSON(t, "kubectl: spec of an empty MeshConfig", got.Spec, want)

	// The Go client sends the zero structs of the non-pointer fields
	// (mtls: {}, ...): the nested defaults must still fill them.
	mc := &weftv1alpha1.MeshConfig{ObjectMeta: metav1.ObjectMeta{Name: weftv1alpha1.MeshConfigName}}
	if err := env.Client.Create(ctx, mc, client.DryRunAll); err != nil {
		t.Fatalf("Go client: an empty MeshConfig named weft was rejected: %v", err)
	}
	assertSameJSON(t, "Go client: spec of an empty MeshConfig", mc.Spec, want)
}

// assertSameJSON compares two values by their JSON form.
func assertSameJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	norm := func(v any) any {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var out any
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	g, w := norm(got), norm(want)
	if !reflect.DeepEqual(g, w) {
		gy, _ := yaml.Marshal(g)
		wy, _ := yaml.Marshal(w)
		t.Errorf("%s:\n--- got\n%s--- want\n%s", what, gy, wy)
	}
}

// Minimal valid objects; the cases below change one thing each.
const (
	tsHead = "apiVersion: mesh.weft.dev/v1alpha1\nkind: TrafficSplit\nmetadata: {name: t, namespace: default}\n"
	rpHead = "apiVersion: mesh.weft.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {name: r, namespace: default}\n"
	apHead = "apiVersion: mesh.weft.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {name: a, namespace: default}\n"
	mcHead = "apiVersion: mesh.weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: weft}\n"
	btHead = "apiVersion: mesh.weft.dev/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {name: b, namespace: default}\n"
	rlHead = "apiVersion: mesh.weft.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: l, namespace: default}\n"

	rpTarget = "  targetRefs: [{group: '', kind: Service, name: s}]\n"
	apTarget = "  targetRefs: [{group: '', kind: Service, name: s}]\n  action: Allow\n"
	btTarget = "  targetRefs: [{group: '', kind: Service, name: s}]\n"
	rlTarget = "  targetRefs: [{group: '', kind: Service, name: s}]\n  limit: {requests: 100, unit: Second}\n"
)

// hugeList joins item(0..n-1).
func hugeList(n int, item func(int) string) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(item(i))
	}
	return b.String()
}

type objectCase struct {
	name string
	obj  string
	// want are substrings of kubectl's error, each of which must appear.
	want []string
}

var invalidCases = []objectCase{
	// Issue 13, huge inputs: refused with a message naming the cap (see
	// docs/api.md, "Limits").
	{"authpolicy: 5,000 rules", apHead + "spec:\n" + apTarget + "  rules:\n" + hugeList(5000, func(i int) string {
		return fmt.Sprintf("  - from: {serviceAccounts: [ns-%d/sa-%d]}\n", i, i)
	}), []string{"spec.rules", "Too many: 5000: must have at most 32 items"}},
	{"trafficsplit: 1,000 backends", tsHead + "spec:\n  rootService: {name: web}\n  backends:\n" + hugeList(1000, func(i int) string {
		return fmt.Sprintf("  - {name: b-%d, weight: 1}\n", i)
	}), []string{"spec.backends", "Too many: 1000: must have at most 16 items"}},
	// TrafficSplit
	{"trafficsplit: all weights zero", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a, weight: 0}, {name: b, weight: 0}]\n",
		[]string{"spec.backends", "needs at least one backend with a weight above 0"}},
	{"trafficsplit: no backends", tsHead + "spec:\n  rootService: {name: web}\n  backends: []\n",
		[]string{"spec.backends", "needs at least one backend with a weight above 0"}},
	{"trafficsplit: duplicate backend", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a, weight: 1}, {name: a, weight: 2}]\n",
		[]string{"spec.backends", "lists the same Service and port more than once; merge the duplicate entries"}},
	{"trafficsplit: duplicate backend with port", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a, port: 80, weight: 1}, {name: b}, {name: a, port: 80}]\n",
		[]string{"spec.backends", "lists the same Service and port more than once"}},
	{"trafficsplit: negative weight", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a, weight: -1}, {name: b, weight: 1}]\n",
		[]string{"spec.backends[0].weight", "greater than or equal to 0"}},
	{"trafficsplit: empty fault", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  fault: {}\n",
		[]string{"spec.fault", "needs delay, abort or both; to inject nothing, remove spec.fault"}},
	{"trafficsplit: fault abort with both statuses", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  fault: {abort: {percent: 10, httpStatus: 503, grpcStatus: UNAVAILABLE}}\n",
		[]string{"spec.fault.abort", "needs exactly one of httpStatus (such as 503) or grpcStatus (such as UNAVAILABLE)"}},
	{"trafficsplit: fault abort without a status", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  fault: {abort: {percent: 10}}\n",
		[]string{"spec.fault.abort", "needs exactly one of httpStatus"}},
	{"trafficsplit: fault abort above 100 percent", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  fault: {abort: {percent: 101, httpStatus: 503}}\n",
		[]string{"spec.fault.abort.percent", "less than or equal to 100"}},
	{"trafficsplit: fault abort HTTP status 600", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  fault: {abort: {percent: 1, httpStatus: 600}}\n",
		[]string{"spec.fault.abort.httpStatus", "less than or equal to 599"}},
	{"trafficsplit: fault abort unknown gRPC status", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  fault: {abort: {percent: 1, grpcStatus: OK}}\n",
		[]string{"spec.fault.abort.grpcStatus", "Unsupported value", "UNAVAILABLE"}},
	{"trafficsplit: fault delay of 0s", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  fault: {delay: {percent: 10, fixedDelay: 0s}}\n",
		[]string{"spec.fault.delay.fixedDelay", "must be longer than 0s, such as 500ms; to delay nothing, remove spec.fault.delay"}},
	{"trafficsplit: fault delay without fixedDelay", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  fault: {delay: {percent: 10}}\n",
		[]string{"spec.fault.delay.fixedDelay", "Required value"}},
	{"trafficsplit: fault delay negative", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  fault: {delay: {percent: 10, fixedDelay: -1s}}\n",
		[]string{"spec.fault.delay.fixedDelay", "must not be negative"}},
	{"trafficsplit: mirror without a backend", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  mirror: {percent: 10}\n",
		[]string{"spec.mirror.backend", "Required value"}},
	{"trafficsplit: mirror percent negative", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  mirror: {backend: {name: shadow}, percent: -5}\n",
		[]string{"spec.mirror.percent", "greater than or equal to 0"}},
	{"trafficsplit: mirror backend not a Service name", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  mirror: {backend: {name: Shadow_1}}\n",
		[]string{"spec.mirror.backend.name", "must be a Service name"}},
	{"trafficsplit: no root service", tsHead + "spec:\n  backends: [{name: a}]\n",
		[]string{"spec.rootService", "Required value"}},
	{"trafficsplit: root service not a Service name", tsHead + "spec:\n  rootService: {name: Web_1}\n  backends: [{name: a}]\n",
		[]string{"spec.rootService.name", "must be a Service name"}},
	{"trafficsplit: backend port 0", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a, port: 0}]\n",
		[]string{"spec.backends[0].port", "greater than or equal to 1"}},
	{"trafficsplit: empty match", tsHead + "spec:\n  rootService: {name: web}\n  matches: [{}]\n  backends: [{name: a}]\n",
		[]string{"spec.matches[0]", "a match needs at least one of path, headers or method; to split every request, omit spec.matches"}},
	{"trafficsplit: relative path", tsHead + "spec:\n  rootService: {name: web}\n  matches: [{path: {value: api}}]\n  backends: [{name: a}]\n",
		[]string{"spec.matches[0].path", "must start with '/'"}},
	{"trafficsplit: path with query", tsHead + "spec:\n  rootService: {name: web}\n  matches: [{path: {type: Exact, value: '/a?b=c'}}]\n  backends: [{name: a}]\n",
		[]string{"spec.matches[0].path", "must not contain '?'"}},
	{"trafficsplit: unknown method", tsHead + "spec:\n  rootService: {name: web}\n  matches: [{method: FETCH}]\n  backends: [{name: a}]\n",
		[]string{"spec.matches[0].method", `Unsupported value: "FETCH"`, `"GET"`}},
	{"trafficsplit: bad header name", tsHead + "spec:\n  rootService: {name: web}\n  matches: [{headers: [{name: 'x beta', value: a}]}]\n  backends: [{name: a}]\n",
		[]string{"spec.matches[0].headers[0].name"}},

	// RetryPolicy
	{"retrypolicy: unknown retry condition", rpHead + "spec:\n" + rpTarget + "  retryOn: [5xx, 5xxx]\n",
		[]string{"spec.retryOn[1]", `Unsupported value: "5xxx"`, `"gateway-error"`, `"deadline-exceeded"`}},
	{"retrypolicy: negative timeout", rpHead + "spec:\n" + rpTarget + "  timeout: -1s\n",
		[]string{"spec.timeout", "must not be negative"}},
	{"retrypolicy: negative per-try timeout", rpHead + "spec:\n" + rpTarget + "  perTryTimeout: -500ms\n",
		[]string{"spec.perTryTimeout", "must not be negative"}},
	{"retrypolicy: decimal duration", rpHead + "spec:\n" + rpTarget + "  timeout: 1.5s\n",
		[]string{"spec.timeout", "must be whole numbers with the units h, m, s or ms"}},
	{"retrypolicy: duration without unit", rpHead + "spec:\n" + rpTarget + "  timeout: '30'\n",
		[]string{"spec.timeout", "must be whole numbers with the units h, m, s or ms"}},
	{"retrypolicy: zero per-try timeout", rpHead + "spec:\n" + rpTarget + "  perTryTimeout: 0s\n",
		[]string{"spec.perTryTimeout", "must be longer than 0s"}},
	{"retrypolicy: per-try timeout longer than timeout", rpHead + "spec:\n" + rpTarget + "  perTryTimeout: 2s\n  timeout: 1500ms\n",
		[]string{"spec.perTryTimeout", "must not be longer than spec.timeout"}},
	{"retrypolicy: negative idle timeout", rpHead + "spec:\n" + rpTarget + "  idleTimeout: -1m\n",
		[]string{"spec.idleTimeout", "must not be negative"}},
	{"retrypolicy: idle timeout without unit", rpHead + "spec:\n" + rpTarget + "  idleTimeout: '300'\n",
		[]string{"spec.idleTimeout", "must be whole numbers with the units h, m, s or ms"}},
	{"retrypolicy: idle timeout not shorter than timeout", rpHead + "spec:\n" + rpTarget + "  idleTimeout: 30s\n  timeout: 30s\n",
		[]string{"spec.idleTimeout", "must be shorter than spec.timeout", "shorten idleTimeout, remove it, or lengthen timeout"}},
	{"retrypolicy: retriable-status-codes without codes", rpHead + "spec:\n" + rpTarget + "  retryOn: [retriable-status-codes]\n",
		[]string{"spec.retriableStatusCodes", "must list the status codes to retry"}},
	{"retrypolicy: codes without retriable-status-codes", rpHead + "spec:\n" + rpTarget + "  retryOn: [5xx]\n  retriableStatusCodes: [503]\n",
		[]string{"spec.retriableStatusCodes", "retryOn lacks retriable-status-codes: add it to retryOn, or remove retriableStatusCodes"}},
	{"retrypolicy: status code out of range", rpHead + "spec:\n" + rpTarget + "  retryOn: [retriable-status-codes]\n  retriableStatusCodes: [200]\n",
		[]string{"spec.retriableStatusCodes[0]", "greater than or equal to 400"}},
	{"retrypolicy: empty retryOn", rpHead + "spec:\n" + rpTarget + "  retryOn: []\n",
		[]string{"spec.retryOn", "at least 1 items"}},
	{"retrypolicy: target kind not retryable", rpHead + "spec:\n  targetRefs: [{group: apps, kind: Deployment, name: d}]\n",
		[]string{"spec.targetRefs[0]", "a RetryPolicy target must be a Service"}},
	{"retrypolicy: GRPCRoute target in the wrong group", rpHead + "spec:\n  targetRefs: [{group: mesh.weft.dev, kind: GRPCRoute, name: g}]\n",
		[]string{"spec.targetRefs[0]", "or an HTTPRoute or GRPCRoute (group gateway.networking.k8s.io)"}},
	{"retrypolicy: TrafficSplit target in the wrong group", rpHead + "spec:\n  targetRefs: [{group: '', kind: TrafficSplit, name: t}]\n",
		[]string{"spec.targetRefs[0]", "TrafficSplit (group mesh.weft.dev)"}},
	{"retrypolicy: duplicate target", rpHead + "spec:\n  targetRefs: [{group: '', kind: Service, name: s}, {group: '', kind: Service, name: s}]\n",
		[]string{"spec.targetRefs", "lists the same target more than once"}},
	{"retrypolicy: no targets", rpHead + "spec:\n  targetRefs: []\n",
		[]string{"spec.targetRefs", "at least 1 items"}},
	{"retrypolicy: backoff base above max", rpHead + "spec:\n" + rpTarget + "  backoff: {baseInterval: 1s, maxInterval: 100ms}\n",
		[]string{"spec.backoff.maxInterval", "must be at least spec.backoff.baseInterval"}},
	{"retrypolicy: budget above 100%", rpHead + "spec:\n" + rpTarget + "  budget: {percent: 150}\n",
		[]string{"spec.budget.percent", "less than or equal to 100"}},
	{"retrypolicy: too many attempts", rpHead + "spec:\n" + rpTarget + "  attempts: 11\n",
		[]string{"spec.attempts", "less than or equal to 10"}},

	// AuthPolicy
	{"authpolicy: empty rule list", apHead + "spec:\n" + apTarget + "  rules: []\n",
		[]string{"spec.rules", "must list at least one rule; to match every request write rules: [{}]"}},
	{"authpolicy: no rules", apHead + "spec:\n" + apTarget,
		[]string{"spec.rules", "Required value"}},
	{"authpolicy: unknown action", apHead + "spec:\n  targetRefs: [{group: '', kind: Service, name: s}]\n  action: Permit\n  rules: [{}]\n",
		[]string{"spec.action", `Unsupported value: "Permit"`, `"Allow"`, `"Deny"`}},
	{"authpolicy: unknown mode", apHead + "spec:\n" + apTarget + "  mode: Audit\n  rules: [{}]\n",
		[]string{"spec.mode", `Unsupported value: "Audit"`, `"DryRun"`}},
	{"authpolicy: empty from", apHead + "spec:\n" + apTarget + "  rules: [{from: {}}]\n",
		[]string{"spec.rules[0].from", "from needs at least one of serviceAccounts, namespaces or ipBlocks; to match every source, omit from"}},
	{"authpolicy: empty to", apHead + "spec:\n" + apTarget + "  rules: [{to: {}}]\n",
		[]string{"spec.rules[0].to", "to needs at least one of ports, methods or paths"}},
	{"authpolicy: empty serviceAccounts list", apHead + "spec:\n" + apTarget + "  rules: [{from: {serviceAccounts: []}}]\n",
		[]string{"spec.rules[0].from.serviceAccounts", "at least 1 items"}},
	{"authpolicy: service account without namespace", apHead + "spec:\n" + apTarget + "  rules: [{from: {serviceAccounts: [frontend]}}]\n",
		[]string{"spec.rules[0].from.serviceAccounts[0]", "must be written namespace/name, such as shop/frontend"}},
	{"authpolicy: IP address without prefix length", apHead + "spec:\n" + apTarget + "  rules: [{from: {ipBlocks: [10.1.2.3]}}]\n",
		[]string{"spec.rules[0].from.ipBlocks[0]", "must be a CIDR such as 10.0.0.0/8"}},
	{"authpolicy: CIDR prefix too long", apHead + "spec:\n" + apTarget + "  rules: [{from: {ipBlocks: [10.0.0.0/33]}}]\n",
		[]string{"spec.rules[0].from.ipBlocks[0]", "must be a CIDR"}},
	{"authpolicy: port 0", apHead + "spec:\n" + apTarget + "  rules: [{to: {ports: [0]}}]\n",
		[]string{"spec.rules[0].to.ports[0]", "greater than or equal to 1"}},
	{"authpolicy: relative path", apHead + "spec:\n" + apTarget + "  rules: [{to: {paths: [{type: Exact, value: admin}]}}]\n",
		[]string{"spec.rules[0].to.paths[0]", "must start with '/'"}},
	{"authpolicy: target a Deployment", apHead + "spec:\n  targetRefs: [{group: apps, kind: Deployment, name: d}]\n  action: Deny\n  rules: [{}]\n",
		[]string{"spec.targetRefs[0]", "an AuthPolicy target must be a Service or a Namespace"}},
	{"authpolicy: Namespace target beside a Service", apHead + "spec:\n  targetRefs: [{group: '', kind: Namespace, name: default}, {group: '', kind: Service, name: s}]\n  action: Deny\n  rules: [{}]\n",
		[]string{"spec.targetRefs", "a Namespace target already covers every Service in the namespace; list it alone"}},

	// RateLimitPolicy
	{"ratelimitpolicy: TrafficSplit target", rlHead + "spec:\n  targetRefs: [{group: mesh.weft.dev, kind: TrafficSplit, name: t}]\n  limit: {requests: 1, unit: Second}\n",
		[]string{"spec.targetRefs[0]", "a RateLimitPolicy target must be a Service", "add sectionName"}},
	{"ratelimitpolicy: duplicate target", rlHead + "spec:\n  targetRefs: [{group: '', kind: Service, name: s, sectionName: http}, {group: '', kind: Service, name: s, sectionName: http}]\n  limit: {requests: 1, unit: Second}\n",
		[]string{"spec.targetRefs", "lists the same target more than once; remove the duplicate"}},
	{"ratelimitpolicy: no targets", rlHead + "spec:\n  targetRefs: []\n  limit: {requests: 1, unit: Second}\n",
		[]string{"spec.targetRefs", "at least 1 items"}},
	{"ratelimitpolicy: no limit", rlHead + "spec:\n  targetRefs: [{group: '', kind: Service, name: s}]\n",
		[]string{"spec.limit", "Required value"}},
	{"ratelimitpolicy: zero requests", rlHead + "spec:\n  targetRefs: [{group: '', kind: Service, name: s}]\n  limit: {requests: 0, unit: Second}\n",
		[]string{"spec.limit.requests", "greater than or equal to 1"}},
	{"ratelimitpolicy: a day", rlHead + "spec:\n  targetRefs: [{group: '', kind: Service, name: s}]\n  limit: {requests: 1, unit: Day}\n",
		[]string{"spec.limit.unit", `Unsupported value: "Day"`, `"Second"`, `"Minute"`, `"Hour"`}},
	{"ratelimitpolicy: burst below requests", rlHead + "spec:\n  targetRefs: [{group: '', kind: Service, name: s}]\n  limit: {requests: 10, unit: Second, burst: 5}\n",
		[]string{"spec.limit.burst", "burst must be at least requests", "omit it to make it equal to requests"}},
	{"ratelimitpolicy: caller burst below requests", rlHead + "spec:\n" + rlTarget + "  callerLimit: {requests: 10, unit: Minute, burst: 1}\n",
		[]string{"spec.callerLimit.burst", "burst must be at least requests"}},
	{"ratelimitpolicy: unknown mode", rlHead + "spec:\n" + rlTarget + "  mode: Shadow\n",
		[]string{"spec.mode", `Unsupported value: "Shadow"`, `"DryRun"`}},
	{"ratelimitpolicy: rule without a bucket", rlHead + "spec:\n" + rlTarget + "  rules: [{name: login, match: {methods: [POST]}}]\n",
		[]string{"spec.rules[0]", "a rule needs limit (one bucket shared by every caller), callerLimit (a bucket per caller), or both"}},
	{"ratelimitpolicy: rule matching everything", rlHead + "spec:\n" + rlTarget + "  rules: [{name: all, match: {}, limit: {requests: 1, unit: Second}}]\n",
		[]string{"spec.rules[0].match", "match needs paths or methods; to count every request, use spec.limit or spec.callerLimit instead of a rule"}},
	{"ratelimitpolicy: two rules of one name", rlHead + "spec:\n" + rlTarget + "  rules: [{name: a, match: {methods: [POST]}, limit: {requests: 1, unit: Second}}, {name: a, match: {methods: [PUT]}, limit: {requests: 1, unit: Second}}]\n",
		[]string{"spec.rules", "two rules have the same name; give each rule its own name"}},
	{"ratelimitpolicy: rule name with capitals", rlHead + "spec:\n" + rlTarget + "  rules: [{name: Login, match: {methods: [POST]}, limit: {requests: 1, unit: Second}}]\n",
		[]string{"spec.rules[0].name", "should match"}},
	{"ratelimitpolicy: relative path", rlHead + "spec:\n" + rlTarget + "  rules: [{name: login, match: {paths: [{type: Exact, value: login}]}, limit: {requests: 1, unit: Second}}]\n",
		[]string{"spec.rules[0].match.paths[0]", "path value must start with '/'"}},
	{"ratelimitpolicy: path with a query", rlHead + "spec:\n" + rlTarget + "  rules: [{name: login, match: {paths: [{value: '/login?next=/'}]}, limit: {requests: 1, unit: Second}}]\n",
		[]string{"spec.rules[0].match.paths[0]", "must not contain '?' or '#'"}},
	{"ratelimitpolicy: unknown method", rlHead + "spec:\n" + rlTarget + "  rules: [{name: m, match: {methods: [FETCH]}, limit: {requests: 1, unit: Second}}]\n",
		[]string{"spec.rules[0].match.methods[0]", `Unsupported value: "FETCH"`}},
	{"ratelimitpolicy: rule burst below requests", rlHead + "spec:\n" + rlTarget + "  rules: [{name: login, match: {methods: [POST]}, callerLimit: {requests: 5, unit: Second, burst: 4}}]\n",
		[]string{"spec.rules[0].callerLimit.burst", "burst must be at least requests"}},
	{"ratelimitpolicy: status 200", rlHead + "spec:\n" + rlTarget + "  response: {statusCode: 200}\n",
		[]string{"spec.response.statusCode", "must be between 400 and 599, such as 429 (Too Many Requests) or 503"}},
	{"ratelimitpolicy: status 600", rlHead + "spec:\n" + rlTarget + "  response: {statusCode: 600}\n",
		[]string{"spec.response.statusCode", "must be between 400 and 599"}},
	{"ratelimitpolicy: 17 rules", rlHead + "spec:\n" + rlTarget + "  rules:\n" + hugeList(17, func(i int) string {
		return fmt.Sprintf("  - {name: r%d, match: {methods: [GET]}, limit: {requests: 1, unit: Second}}\n", i)
	}), []string{"spec.rules", "must have at most 16 items"}},

	// BackendTrafficPolicy
	{"backendtrafficpolicy: TrafficSplit target", btHead + "spec:\n  targetRefs: [{group: mesh.weft.dev, kind: TrafficSplit, name: t}]\n",
		[]string{"spec.targetRefs[0]", "a BackendTrafficPolicy target must be a Service", "add sectionName"}},
	{"backendtrafficpolicy: duplicate target", btHead + "spec:\n  targetRefs: [{group: '', kind: Service, name: s}, {group: '', kind: Service, name: s}]\n",
		[]string{"spec.targetRefs", "lists the same target more than once; remove the duplicate"}},
	{"backendtrafficpolicy: duplicate port target", btHead + "spec:\n  targetRefs: [{group: '', kind: Service, name: s, sectionName: http}, {group: '', kind: Service, name: s, sectionName: http}]\n",
		[]string{"spec.targetRefs", "lists the same target more than once"}},
	{"backendtrafficpolicy: section name that is no port name", btHead + "spec:\n  targetRefs: [{group: '', kind: Service, name: s, sectionName: HTTP_1}]\n",
		[]string{"spec.targetRefs[0].sectionName", "should match"}},
	{"backendtrafficpolicy: no targets", btHead + "spec:\n  targetRefs: []\n",
		[]string{"spec.targetRefs", "at least 1 items"}},
	{"backendtrafficpolicy: ring hash without a hash key", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: RingHash}\n",
		[]string{"spec.loadBalancer.consistentHash", "is required with type RingHash or Maglev", "consistentHash: {type: Header, header: {name: x-user-id}}"}},
	{"backendtrafficpolicy: Maglev without a hash key", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: Maglev}\n",
		[]string{"spec.loadBalancer.consistentHash", "is required with type RingHash or Maglev"}},
	{"backendtrafficpolicy: a hash key with round robin", btHead + "spec:\n" + btTarget + "  loadBalancer: {consistentHash: {type: SourceIP}}\n",
		[]string{"spec.loadBalancer.consistentHash", "has no effect with type RoundRobin or LeastRequest: set type: RingHash or Maglev, or remove consistentHash"}},
	{"backendtrafficpolicy: a hash key with least request", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: LeastRequest, consistentHash: {type: SourceIP}}\n",
		[]string{"spec.loadBalancer.consistentHash", "has no effect with type RoundRobin or LeastRequest"}},
	{"backendtrafficpolicy: header hash without a header", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: RingHash, consistentHash: {type: Header}}\n",
		[]string{"spec.loadBalancer.consistentHash.header", "is required with type Header: name the header, such as header: {name: x-user-id}"}},
	{"backendtrafficpolicy: cookie hash without a cookie", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: Maglev, consistentHash: {type: Cookie}}\n",
		[]string{"spec.loadBalancer.consistentHash.cookie", "is required with type Cookie: name the cookie, such as cookie: {name: session}"}},
	{"backendtrafficpolicy: a header beside a source IP hash", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: RingHash, consistentHash: {type: SourceIP, header: {name: x-user}}}\n",
		[]string{"spec.loadBalancer.consistentHash.header", "is set but type is not Header: set type: Header, or remove header"}},
	{"backendtrafficpolicy: a cookie beside a header hash", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: RingHash, consistentHash: {type: Header, header: {name: x-user}, cookie: {name: session}}}\n",
		[]string{"spec.loadBalancer.consistentHash.cookie", "is set but type is not Cookie: set type: Cookie, or remove cookie"}},
	{"backendtrafficpolicy: unknown load balancer", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: Random}\n",
		[]string{"spec.loadBalancer.type", `Unsupported value: "Random"`, `"LeastRequest"`, `"Maglev"`}},
	{"backendtrafficpolicy: unknown hash type", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: RingHash, consistentHash: {type: QueryParameter}}\n",
		[]string{"spec.loadBalancer.consistentHash.type", `Unsupported value: "QueryParameter"`, `"SourceIP"`}},
	{"backendtrafficpolicy: a header name with a space", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: RingHash, consistentHash: {type: Header, header: {name: 'x user'}}}\n",
		[]string{"spec.loadBalancer.consistentHash.header.name"}},
	{"backendtrafficpolicy: relative cookie path", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: RingHash, consistentHash: {type: Cookie, cookie: {name: session, path: app}}}\n",
		[]string{"spec.loadBalancer.consistentHash.cookie.path", "must start with '/'"}},
	{"backendtrafficpolicy: negative cookie TTL", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: RingHash, consistentHash: {type: Cookie, cookie: {name: session, ttl: -1h}}}\n",
		[]string{"spec.loadBalancer.consistentHash.cookie.ttl", "must not be negative"}},
	{"backendtrafficpolicy: locality without outlier detection", btHead + "spec:\n" + btTarget + "  outlierDetection: {consecutive5xx: 0}\n  loadBalancer: {locality: PreferLocalZone}\n",
		[]string{"spec.loadBalancer.locality", "PreferLocalZone needs outlier detection: without it a zone whose pods fail but stay ready never fails over", "set spec.outlierDetection.consecutive5xx above 0 (such as 5) or spec.outlierDetection.failurePercentage, or set locality: None"}},
	{"backendtrafficpolicy: locality with every detector at 0", btHead + "spec:\n" + btTarget + "  outlierDetection: {consecutive5xx: 0, consecutiveGatewayErrors: 0}\n  loadBalancer: {type: LeastRequest, locality: PreferLocalZone}\n",
		[]string{"spec.loadBalancer.locality", "needs outlier detection"}},
	{"backendtrafficpolicy: unknown locality", btHead + "spec:\n" + btTarget + "  loadBalancer: {locality: PreferLocalRegion}\n",
		[]string{"spec.loadBalancer.locality", `Unsupported value: "PreferLocalRegion"`, `"None"`, `"PreferLocalZone"`}},
	{"backendtrafficpolicy: ejection percent above 100", btHead + "spec:\n" + btTarget + "  outlierDetection: {maxEjectionPercent: 150}\n",
		[]string{"spec.outlierDetection.maxEjectionPercent", "must be between 0 and 100", "such as 50"}},
	{"backendtrafficpolicy: negative ejection percent", btHead + "spec:\n" + btTarget + "  outlierDetection: {maxEjectionPercent: -1}\n",
		[]string{"spec.outlierDetection.maxEjectionPercent", "must be between 0 and 100"}},
	{"backendtrafficpolicy: failure percentage above 100", btHead + "spec:\n" + btTarget + "  outlierDetection: {failurePercentage: {threshold: 101}}\n",
		[]string{"spec.outlierDetection.failurePercentage.threshold", "must be between 1 and 100"}},
	{"backendtrafficpolicy: failure percentage 0", btHead + "spec:\n" + btTarget + "  outlierDetection: {failurePercentage: {threshold: 0}}\n",
		[]string{"spec.outlierDetection.failurePercentage.threshold", "must be between 1 and 100"}},
	{"backendtrafficpolicy: failure percentage without a threshold", btHead + "spec:\n" + btTarget + "  outlierDetection: {failurePercentage: {minimumHosts: 2}}\n",
		[]string{"spec.outlierDetection.failurePercentage.threshold", "Required value"}},
	{"backendtrafficpolicy: zero interval", btHead + "spec:\n" + btTarget + "  outlierDetection: {interval: 0s}\n",
		[]string{"spec.outlierDetection.interval", "must be longer than 0s, such as 10s"}},
	{"backendtrafficpolicy: zero base ejection time", btHead + "spec:\n" + btTarget + "  outlierDetection: {baseEjectionTime: 0ms}\n",
		[]string{"spec.outlierDetection.baseEjectionTime", "must be longer than 0s, such as 30s"}},
	{"backendtrafficpolicy: decimal interval", btHead + "spec:\n" + btTarget + "  outlierDetection: {interval: 2.5s}\n",
		[]string{"spec.outlierDetection.interval", "must be whole numbers with the units h, m, s or ms"}},
	{"backendtrafficpolicy: negative consecutive 5xx", btHead + "spec:\n" + btTarget + "  outlierDetection: {consecutive5xx: -1}\n",
		[]string{"spec.outlierDetection.consecutive5xx", "greater than or equal to 0"}},
	{"backendtrafficpolicy: zero connect timeout", btHead + "spec:\n" + btTarget + "  connection: {connectTimeout: 0s}\n",
		[]string{"spec.connection.connectTimeout", "must be longer than 0s, such as 5s"}},
	{"backendtrafficpolicy: negative idle timeout", btHead + "spec:\n" + btTarget + "  connection: {idleTimeout: -5m}\n",
		[]string{"spec.connection.idleTimeout", "must not be negative"}},
	{"backendtrafficpolicy: keepalive in milliseconds", btHead + "spec:\n" + btTarget + "  connection: {tcpKeepalive: {idleTime: 1500ms}}\n",
		[]string{"spec.connection.tcpKeepalive.idleTime", "must be whole seconds of at least 1s", "the kernel counts keepalive time in seconds"}},
	{"backendtrafficpolicy: zero keepalive interval", btHead + "spec:\n" + btTarget + "  connection: {tcpKeepalive: {interval: 0s}}\n",
		[]string{"spec.connection.tcpKeepalive.interval", "must be whole seconds of at least 1s"}},
	{"backendtrafficpolicy: zero keepalive probes", btHead + "spec:\n" + btTarget + "  connection: {tcpKeepalive: {probes: 0}}\n",
		[]string{"spec.connection.tcpKeepalive.probes", "greater than or equal to 1"}},
	{"backendtrafficpolicy: zero max requests", btHead + "spec:\n" + btTarget + "  circuitBreaker: {maxRequests: 0}\n",
		[]string{"spec.circuitBreaker.maxRequests", "greater than or equal to 1"}},
	{"backendtrafficpolicy: negative max retries", btHead + "spec:\n" + btTarget + "  circuitBreaker: {maxRetries: -1}\n",
		[]string{"spec.circuitBreaker.maxRetries", "greater than or equal to 0"}},

	// MeshConfig
	{"meshconfig: a weft-init image with a space", mcHead + "spec:\n  sidecar: {initImage: 'registry.example.com/weft-init v1'}\n",
		[]string{"spec.sidecar.initImage must be an image reference without spaces"}},
	{"meshconfig: an empty agent image", mcHead + "spec:\n  sidecar: {agentImage: ''}\n",
		[]string{"spec.sidecar.agentImage must be an image reference without spaces"}},
	{"meshconfig: IPTables capture without a weft-init image that has iptables", mcHead + "spec:\n  sidecar: {captureBackend: IPTables}\n",
		[]string{"spec.sidecar.captureBackend", "IPTables runs iptables-restore and ip6tables-restore, which weft's own weft-init image does not contain: set spec.sidecar.initImage"}},
	{"meshconfig: unknown capture backend", mcHead + "spec:\n  sidecar: {captureBackend: iptables}\n",
		[]string{"spec.sidecar.captureBackend", `Unsupported value: "iptables"`, `"NFTables", "IPTables"`}},
	{"meshconfig: not named weft", "apiVersion: mesh.weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\n",
		[]string{"metadata.name must be weft: MeshConfig is a singleton"}},
	{"meshconfig: unknown mTLS mode", mcHead + "spec:\n  mtls: {mode: Required}\n",
		[]string{"spec.mtls.mode", `Unsupported value: "Required"`, `"Strict"`}},
	{"meshconfig: CertManager without issuer", mcHead + "spec:\n  certificates: {provider: CertManager}\n",
		[]string{"spec.certificates.certManager", "issuerRef is required when spec.certificates.provider is CertManager"}},
	{"meshconfig: issuer with the built-in CA", mcHead + "spec:\n  certificates: {certManager: {issuerRef: {name: mesh-ca}}}\n",
		[]string{"spec.certificates.certManager", "provider is not CertManager: set provider: CertManager, or remove certManager"}},
	{"meshconfig: cert-manager without a trust bundle", mcHead + "spec:\n  certificates: {provider: CertManager, certManager: {issuerRef: {name: mesh-ca}}}\n",
		[]string{"spec.certificates.certManager.trustBundle", "trustBundle is required", "weft trusts only those CAs"}},
	{"meshconfig: trust bundle naming both a Secret and a ConfigMap", mcHead + "spec:\n  certificates: {provider: CertManager, certManager: {issuerRef: {name: mesh-ca}, trustBundle: {secret: {name: a}, configMap: {name: b}}}}\n",
		[]string{"spec.certificates.certManager.trustBundle", "must name exactly one of secret or configMap"}},
	{"meshconfig: trust bundle naming nothing", mcHead + "spec:\n  certificates: {provider: CertManager, certManager: {issuerRef: {name: mesh-ca}, trustBundle: {}}}\n",
		[]string{"spec.certificates.certManager.trustBundle", "must name exactly one of secret or configMap"}},
	{"meshconfig: rotation phase timeout above a year", mcHead + "spec:\n  certificates: {builtIn: {rotationPhaseTimeout: 9000h}}\n",
		[]string{"spec.certificates.builtIn.rotationPhaseTimeout", "must be at most 8760h"}},
	{"meshconfig: negative rotation phase timeout", mcHead + "spec:\n  certificates: {builtIn: {rotationPhaseTimeout: -1h}}\n",
		[]string{"spec.certificates.builtIn.rotationPhaseTimeout", "must not be negative"}},
	{"meshconfig: certificate lifetime too short", mcHead + "spec:\n  certificates: {workloadCertificateLifetime: 10m}\n",
		[]string{"spec.certificates.workloadCertificateLifetime", "must be between 1h and 8760h"}},
	{"meshconfig: quiet period above max delay", mcHead + "spec:\n  push: {quietPeriod: 2s, maxDelay: 1s}\n",
		[]string{"spec.push.maxDelay", "must be at least spec.push.quietPeriod"}},
	{"meshconfig: negative quiet period", mcHead + "spec:\n  push: {quietPeriod: -100ms}\n",
		[]string{"spec.push.quietPeriod", "must not be negative"}},
	{"meshconfig: collector address is a URL", mcHead + "spec:\n  tracing: {collectorAddress: 'http://otel:4317'}\n",
		[]string{"spec.tracing.collectorAddress", "must be host:port"}},
	{"meshconfig: trust domain with capitals", mcHead + "spec:\n  trustDomain: Cluster.Local\n",
		[]string{"spec.trustDomain", "must be a lower-case DNS name"}},
	{"meshconfig: sampling above 100", mcHead + "spec:\n  tracing: {samplingPercent: 101}\n",
		[]string{"spec.tracing.samplingPercent", "less than or equal to 100"}},
}

func testInvalid(ctx context.Context, t *testing.T, env *testenv.Env) {
	for _, c := range invalidCases {
		t.Run(c.name, func(t *testing.T) {
			_, err := env.Kubectl(ctx, []byte(c.obj), "create", "--dry-run=server", "-f", "-")
			if err == nil {
				t.Fatalf("accepted, want rejected with %q:\n%s", c.want, c.obj)
			}
			t.Log(err)
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// validEdgeCases sit next to the rules above and must stay accepted; each
// wants its substrings in the created object's JSON (the defaults applied).
var validEdgeCases = []objectCase{
	// Omitted weights (1) and match types are not filled in: see
	// DefaultBackendWeight.
	{"trafficsplit: one weight zero, weight omitted", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a, weight: 0}, {name: b}]\n",
		[]string{`"backends":[{"name":"a","weight":0},{"name":"b"}]`}},
	{"trafficsplit: same Service on two ports", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a, port: 80}, {name: a, port: 8080}]\n", nil},
	{"trafficsplit: match on headers and method", tsHead + "spec:\n  rootService: {name: web}\n  matches: [{headers: [{name: x-beta, value: 'true'}], method: GET}, {path: {value: /beta}}]\n  backends: [{name: a}]\n",
		[]string{`[{"name":"x-beta","value":"true"}]`, `{"value":"/beta"}`}},
	{"trafficsplit: fault and mirror, every field; mirror percent defaults to 100", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n" +
		"  fault: {delay: {percent: 0, fixedDelay: 1m30s}, abort: {percent: 100, grpcStatus: UNAVAILABLE}}\n  mirror: {backend: {name: shadow, port: 8080}}\n",
		[]string{`"mirror":{"backend":{"name":"shadow","port":8080},"percent":100}`, `"abort":{"grpcStatus":"UNAVAILABLE","percent":100}`}},
	{"trafficsplit: fault abort by HTTP status only", tsHead + "spec:\n  rootService: {name: web}\n  backends: [{name: a}]\n  fault: {abort: {percent: 5, httpStatus: 200}}\n", nil},
	{"retrypolicy: only a target gets the safe defaults and Envoy's budget", rpHead + "spec:\n" + rpTarget,
		[]string{`"retryOn":["connect-failure","refused-stream","unavailable","cancelled"]`, `"attempts":2`,
			`"backoff":{"baseInterval":"25ms","maxInterval":"250ms"}`, `"budget":{"minConcurrency":3,"percent":20}`}},
	{"retrypolicy: idle timeout shorter than timeout", rpHead + "spec:\n" + rpTarget + "  idleTimeout: 29s\n  timeout: 30s\n", nil},
	{"retrypolicy: idle timeout with timeout 0s", rpHead + "spec:\n" + rpTarget + "  idleTimeout: 5m\n  timeout: 0s\n", nil},
	{"retrypolicy: idle timeout 0s", rpHead + "spec:\n" + rpTarget + "  idleTimeout: 0s\n  timeout: 1s\n", nil},
	{"retrypolicy: attempts 0 and timeout 0s", rpHead + "spec:\n" + rpTarget + "  attempts: 0\n  timeout: 0s\n  perTryTimeout: 1m30s\n", nil},
	{"retrypolicy: HTTPRoute, GRPCRoute and TrafficSplit targets, every condition", rpHead + "spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}, {group: gateway.networking.k8s.io, kind: GRPCRoute, name: g}, {group: mesh.weft.dev, kind: TrafficSplit, name: t}]\n" +
		"  retryOn: [5xx, gateway-error, reset, connect-failure, refused-stream, retriable-status-codes, unavailable, cancelled, deadline-exceeded, resource-exhausted]\n  retriableStatusCodes: [502, 503]\n", nil},
	{"backendtrafficpolicy: only a target gets today's fixed values as defaults", btHead + "spec:\n" + btTarget,
		[]string{`"circuitBreaker":{"maxConnections":1024,"maxPendingRequests":1024,"maxRequests":1024}`,
			`"outlierDetection":{"baseEjectionTime":"30s","consecutive5xx":5,"interval":"10s","maxEjectionPercent":50}`,
			`"loadBalancer":{"locality":"None","type":"RoundRobin"}`, `"connection":{"connectTimeout":"5s","idleTimeout":"1h"}`}},
	{"backendtrafficpolicy: a port and the whole Service, ring hash by header", btHead + "spec:\n  targetRefs: [{group: '', kind: Service, name: s, sectionName: grpc}, {group: '', kind: Service, name: s}, {group: '', kind: Service, name: s, sectionName: http}]\n" +
		"  loadBalancer: {type: RingHash, consistentHash: {type: Header, header: {name: x-user-id}}}\n", nil},
	{"backendtrafficpolicy: Maglev by a session cookie the sidecar creates", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: Maglev, consistentHash: {type: Cookie, cookie: {name: session, ttl: 0s, path: /}}}\n", nil},
	{"backendtrafficpolicy: locality with the default outlier detection", btHead + "spec:\n" + btTarget + "  loadBalancer: {locality: PreferLocalZone}\n",
		[]string{`"loadBalancer":{"locality":"PreferLocalZone","type":"RoundRobin"}`, `"consecutive5xx":5`}},
	{"backendtrafficpolicy: locality with failure percentage only", btHead + "spec:\n" + btTarget + "  outlierDetection: {consecutive5xx: 0, failurePercentage: {threshold: 50}}\n  loadBalancer: {locality: PreferLocalZone}\n", nil},
	{"backendtrafficpolicy: locality with gateway errors only", btHead + "spec:\n" + btTarget + "  outlierDetection: {consecutive5xx: 0, consecutiveGatewayErrors: 3}\n  loadBalancer: {locality: PreferLocalZone}\n", nil},
	{"backendtrafficpolicy: ring hash by source IP, least request elsewhere", btHead + "spec:\n" + btTarget + "  loadBalancer: {type: RingHash, consistentHash: {type: SourceIP}}\n", nil},
	{"backendtrafficpolicy: edges: everything off or at its bound", btHead + "spec:\n" + btTarget +
		"  circuitBreaker: {maxConnections: 1, maxPendingRequests: 1, maxRequests: 2147483647, maxRetries: 0}\n" +
		"  outlierDetection: {consecutive5xx: 0, consecutiveGatewayErrors: 0, maxEjectionPercent: 100, failurePercentage: {threshold: 100}}\n" +
		"  connection: {idleTimeout: 0s, tcpKeepalive: {}}\n",
		[]string{`"failurePercentage":{"minimumHosts":5,"requestVolume":50,"threshold":100}`, `"maxEjectionPercent":100`}},
	{"backendtrafficpolicy: every field", btHead + "spec:\n" + btTarget +
		"  circuitBreaker: {maxConnections: 100, maxPendingRequests: 10, maxRequests: 200, maxRetries: 5}\n" +
		"  outlierDetection: {consecutive5xx: 3, consecutiveGatewayErrors: 2, failurePercentage: {threshold: 50, minimumHosts: 2, requestVolume: 10}, interval: 5s, baseEjectionTime: 1m, maxEjectionPercent: 0}\n" +
		"  loadBalancer: {type: LeastRequest}\n" +
		"  connection: {connectTimeout: 250ms, idleTimeout: 5m, tcpKeepalive: {probes: 3, idleTime: 1m30s, interval: 10s}}\n", nil},
	{"ratelimitpolicy: only a limit gets Enforce, 429 and the headers", rlHead + "spec:\n" + rlTarget,
		[]string{`"mode":"Enforce"`, `"response":{"rateLimitHeaders":true,"statusCode":429}`, `"limit":{"requests":100,"unit":"Second"}`}},
	{"ratelimitpolicy: every field, DryRun, a port and a Service", rlHead + "spec:\n  targetRefs: [{group: '', kind: Service, name: s, sectionName: http}, {group: '', kind: Service, name: t}]\n  mode: DryRun\n" +
		"  limit: {requests: 1000000000, unit: Hour, burst: 1000000000}\n  callerLimit: {requests: 1, unit: Minute}\n" +
		"  rules: [{name: login, match: {paths: [{type: Exact, value: /login}, {value: /api}], methods: [POST, PUT]}, limit: {requests: 5, unit: Second, burst: 5}, callerLimit: {requests: 1, unit: Second}}, {name: reads, match: {methods: [GET]}, limit: {requests: 50, unit: Second}}]\n" +
		"  response: {statusCode: 503, rateLimitHeaders: false}\n",
		[]string{`"mode":"DryRun"`, `"response":{"rateLimitHeaders":false,"statusCode":503}`}},
	{"authpolicy: deny everything with an empty rule", apHead + "spec:\n  targetRefs: [{group: '', kind: Namespace, name: default}]\n  action: Deny\n  rules: [{}]\n",
		[]string{`"mode":"Enforce"`}},
	{"authpolicy: IPv6 block and every source kind", apHead + "spec:\n" + apTarget + "  rules: [{from: {serviceAccounts: [shop/front-end.v2], namespaces: [monitoring], ipBlocks: ['2001:db8::/32', 10.0.0.0/8]}}]\n", nil},
	{"meshconfig: cert-manager ClusterIssuer", mcHead + "spec:\n  certificates: {provider: CertManager, certManager: {issuerRef: {name: mesh-ca, kind: ClusterIssuer}, trustBundle: {secret: {name: mesh-ca}}}}\n",
		[]string{`"issuerRef":{"group":"cert-manager.io","kind":"ClusterIssuer","name":"mesh-ca"}`, `"trustBundle":{"secret":{"key":"ca.crt","name":"mesh-ca"}}`}},
	{"meshconfig: weft-init and agent images from a mirror", mcHead + "spec:\n  sidecar: {initImage: 'mirror.example.com/weft-init:v0.1.0', agentImage: 'mirror.example.com/weft@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'}\n",
		[]string{`"initImage":"mirror.example.com/weft-init:v0.1.0"`}},
	{"meshconfig: IPTables capture from a weft-init image with iptables", mcHead + "spec:\n  sidecar: {captureBackend: IPTables, initImage: 'registry.example.com/weft-init-iptables:v0.1.0'}\n",
		[]string{`"captureBackend":"IPTables"`}},
	{"meshconfig: nftables capture by default", mcHead + "spec: {}\n",
		[]string{`"captureBackend":"NFTables"`}},
	{"meshconfig: IPv6 collector, no debounce", mcHead + "spec:\n  tracing: {collectorAddress: '[fd00::1]:4317'}\n  push: {quietPeriod: 0s}\n", nil},
}

func testValidEdgeCases(ctx context.Context, t *testing.T, env *testenv.Env) {
	for _, c := range validEdgeCases {
		t.Run(c.name, func(t *testing.T) {
			out, err := env.Kubectl(ctx, []byte(c.obj), "create", "--dry-run=server", "-o", "json", "-f", "-")
			if err != nil {
				t.Fatalf("rejected, want accepted: %v\n%s", err, c.obj)
			}
			var compact strings.Builder
			var obj any
			if err := json.Unmarshal([]byte(out), &obj); err != nil {
				t.Fatal(err)
			}
			data, _ := json.Marshal(obj) // sorted keys, no spaces
			compact.Write(data)
			for _, w := range c.want {
				if !strings.Contains(compact.String(), w) {
					t.Errorf("created object lacks %s:\n%s", w, compact.String())
				}
			}
		})
	}
}

// sampleFiles lists config/samples, without the kustomization.
func sampleFiles(t *testing.T, root string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yaml" })
	if len(files) < 6 {
		t.Fatalf("want at least 6 samples in config/samples, found %v", files)
	}
	return files
}

func testSamples(ctx context.Context, t *testing.T, env *testenv.Env) {
	files := sampleFiles(t, env.Root)

	t.Run("kustomization lists every sample", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(env.Root, "config", "samples", "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var k struct{ Resources []string }
		if err := yaml.Unmarshal(data, &k); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if !slices.Contains(k.Resources, filepath.Base(f)) {
				t.Errorf("config/samples/kustomization.yaml does not list %s", filepath.Base(f))
			}
		}
	})

	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := env.Kubectl(ctx, nil, "apply", "-f", f)
			if err != nil {
				t.Fatalf("kubectl apply -f %s: %v", f, err)
			}
			docs := countDocuments(t, f)
			if created := strings.Count(out, " created"); created != docs {
				t.Errorf("kubectl apply -f %s created %d objects, the file has %d:\n%s", filepath.Base(f), created, docs, out)
			}
			// Read them back: what was stored is what the file says.
			if _, err := env.Kubectl(ctx, nil, "get", "-f", f, "-o", "name"); err != nil {
				t.Errorf("kubectl get -f %s: %v", f, err)
			}
		})
	}

	// The kustomization installs the same objects: applied after the files,
	// it changes nothing.
	out, err := env.Kubectl(ctx, nil, "apply", "-k", filepath.Join(env.Root, "config", "samples"))
	if err != nil {
		t.Errorf("kubectl apply -k config/samples: %v", err)
	} else if strings.Contains(out, " created") || strings.Contains(out, " configured") {
		t.Errorf("kubectl apply -k config/samples changed what the sample files had applied:\n%s", out)
	}

	// The typed client decodes what the samples stored, defaults included.
	var ts weftv1alpha1.TrafficSplit
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "checkout"}, &ts); err != nil {
		t.Fatalf("reading the canary TrafficSplit: %v", err)
	}
	if got := len(ts.Spec.Backends); got != 2 || *ts.Spec.Backends[0].Weight != 90 || *ts.Spec.Backends[1].Weight != 10 {
		t.Errorf("canary TrafficSplit backends = %+v, want checkout-v1 90, checkout-v2 10", ts.Spec.Backends)
	}
	var rp weftv1alpha1.RetryPolicy
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "checkout"}, &rp); err != nil {
		t.Fatalf("reading the canary RetryPolicy: %v", err)
	}
	if rp.Spec.Budget == nil || *rp.Spec.Budget.Percent != 20 || *rp.Spec.Budget.MinConcurrency != 3 {
		t.Errorf("canary RetryPolicy budget = %+v, want the default 20%% / 3", rp.Spec.Budget)
	}
}

func countDocuments(t *testing.T, file string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, doc := range strings.Split(string(data), "\n---\n") {
		for _, line := range strings.Split(doc, "\n") {
			if strings.HasPrefix(line, "kind:") {
				n++
				break
			}
		}
	}
	return n
}

func testGetWeft(ctx context.Context, t *testing.T, env *testenv.Env) {
	// What a controller would write: the canary split is programmed.
	var ts weftv1alpha1.TrafficSplit
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: "shop", Name: "checkout"}, &ts); err != nil {
		t.Fatal(err)
	}
	ts.Status.ObservedGeneration = ts.Generation
	for _, c := range []string{weftv1alpha1.ConditionAccepted, weftv1alpha1.ConditionResolvedRefs, weftv1alpha1.ConditionProgrammed} {
		meta.SetStatusCondition(&ts.Status.Conditions, metav1.Condition{
			Type: c, Status: metav1.ConditionTrue, Reason: c, ObservedGeneration: ts.Generation, Message: "test",
		})
	}
	if err := env.Client.Status().Update(ctx, &ts); err != nil {
		t.Fatalf("writing the TrafficSplit's status: %v", err)
	}

	out, err := env.Kubectl(ctx, nil, "get", "weft", "-A")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get weft -A:\n%s", out)
	tables := parseTables(out)

	type row = map[string]string
	checks := []struct {
		kind    string
		headers []string
		rows    []row
	}{
		{"trafficsplit.mesh.weft.dev", []string{"NAMESPACE", "NAME", "ROOT SERVICE", "BACKENDS", "PROGRAMMED", "AGE"}, []row{
			{"NAMESPACE": "shop", "NAME": "trafficsplit.mesh.weft.dev/checkout", "ROOT SERVICE": "checkout", "BACKENDS": `[{"name":"checkout-v1","weight":90},{"name":"checkout-v2","weight":10}]`, "PROGRAMMED": "True"},
			{"NAMESPACE": "default", "NAME": "trafficsplit.mesh.weft.dev/reviews", "ROOT SERVICE": "reviews", "BACKENDS": `[{"name":"reviews-v1","weight":80},{"name":"reviews-v2","weight":20}]`, "PROGRAMMED": ""},
			{"NAMESPACE": "default", "NAME": "trafficsplit.mesh.weft.dev/reviews-beta", "ROOT SERVICE": "reviews", "BACKENDS": `[{"name":"reviews-v2","weight":1}]`},
			{"NAMESPACE": "default", "NAME": "trafficsplit.mesh.weft.dev/ratings-chaos", "ROOT SERVICE": "ratings", "BACKENDS": `[{"name":"ratings"}]`},
		}},
		{"retrypolicy.mesh.weft.dev", []string{"NAMESPACE", "NAME", "TARGETS", "ATTEMPTS", "TIMEOUT", "PROGRAMMED", "AGE"}, []row{
			{"NAMESPACE": "shop", "NAME": "retrypolicy.mesh.weft.dev/checkout", "TARGETS": `[{"group":"mesh.weft.dev","kind":"TrafficSplit","name":"checkout"}]`, "ATTEMPTS": "2", "TIMEOUT": "5s"},
			{"NAMESPACE": "default", "NAME": "retrypolicy.mesh.weft.dev/reviews", "TARGETS": `[{"group":"","kind":"Service","name":"reviews"},{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"ratings"}]`, "ATTEMPTS": "3", "TIMEOUT": "3s"},
		}},
		{"authpolicy.mesh.weft.dev", []string{"NAMESPACE", "NAME", "ACTION", "MODE", "TARGETS", "PROGRAMMED", "AGE"}, []row{
			{"NAMESPACE": "shop", "NAME": "authpolicy.mesh.weft.dev/checkout-from-frontend", "ACTION": "Allow", "MODE": "Enforce", "TARGETS": `[{"group":"","kind":"Service","name":"checkout"}]`},
			{"NAMESPACE": "default", "NAME": "authpolicy.mesh.weft.dev/reviews-readers", "ACTION": "Allow", "MODE": "Enforce", "TARGETS": `[{"group":"","kind":"Service","name":"reviews"}]`},
			{"NAMESPACE": "default", "NAME": "authpolicy.mesh.weft.dev/deny-legacy-batch", "ACTION": "Deny", "MODE": "DryRun", "TARGETS": `[{"group":"","kind":"Namespace","name":"default"}]`},
		}},
		{"backendtrafficpolicy.mesh.weft.dev", []string{"NAMESPACE", "NAME", "TARGETS", "LOAD BALANCER", "MAX REQUESTS", "PROGRAMMED", "AGE"}, []row{
			{"NAMESPACE": "default", "NAME": "backendtrafficpolicy.mesh.weft.dev/reviews", "TARGETS": `[{"group":"","kind":"Service","name":"reviews-v1"},{"group":"","kind":"Service","name":"reviews-v2"}]`, "LOAD BALANCER": "RingHash", "MAX REQUESTS": "512"},
		}},
		{"ratelimitpolicy.mesh.weft.dev", []string{"NAMESPACE", "NAME", "TARGETS", "MODE", "REQUESTS", "PER", "PROGRAMMED", "AGE"}, []row{
			{"NAMESPACE": "default", "NAME": "ratelimitpolicy.mesh.weft.dev/ratings", "TARGETS": `[{"group":"","kind":"Service","name":"ratings"}]`, "MODE": "Enforce", "REQUESTS": "100", "PER": "Second"},
		}},
		{"meshconfig.mesh.weft.dev", []string{"NAME", "TRUST DOMAIN", "MTLS", "CERTIFICATES", "PROGRAMMED", "AGE"}, []row{
			{"NAME": "meshconfig.mesh.weft.dev/weft", "TRUST DOMAIN": "cluster.local", "MTLS": "Permissive", "CERTIFICATES": "BuiltIn"},
		}},
	}
	for _, c := range checks {
		t.Run(c.kind, func(t *testing.T) {
			tbl := findTable(tables, c.kind+"/")
			if tbl == nil {
				t.Fatalf("kubectl get weft -A shows no %s:\n%s", c.kind, out)
			}
			for _, h := range c.headers {
				if !slices.Contains(tbl.headers, h) {
					t.Errorf("headers %q lack %q", tbl.headers, h)
				}
			}
			if len(tbl.rows) != len(c.rows) {
				t.Errorf("%d rows, want %d:\n%s", len(tbl.rows), len(c.rows), out)
			}
			for _, want := range c.rows {
				got := tbl.row("NAME", want["NAME"])
				if got == nil {
					t.Errorf("no row %s:\n%s", want["NAME"], out)
					continue
				}
				for col, v := range want {
					if got[col] != v {
						t.Errorf("%s: %s = %q, want %q", want["NAME"], col, got[col], v)
					}
				}
			}
		})
	}
	if strings.Contains(out, "httproute") {
		t.Errorf("kubectl get weft lists Gateway API objects, which are not in the weft category:\n%s", out)
	}
}

// table is one kind's block of `kubectl get` output.
type table struct {
	headers []string
	rows    []map[string]string
}

func (t *table) row(col, value string) map[string]string {
	for _, r := range t.rows {
		if r[col] == value {
			return r
		}
	}
	return nil
}

// parseTables splits kubectl's output (one block per kind, separated by
// blank lines) and cuts each row at the header's column offsets, so that
// empty cells stay empty.
func parseTables(out string) []*table {
	var tables []*table
	for _, block := range strings.Split(strings.TrimSpace(out), "\n\n") {
		lines := strings.Split(block, "\n")
		if len(lines) == 0 {
			continue
		}
		header := lines[0]
		var starts []int
		var names []string
		for i := 0; i < len(header); {
			if header[i] == ' ' {
				i++
				continue
			}
			j := i
			// A header ends at two spaces (names such as "ROOT SERVICE" hold one).
			for j < len(header) && !(header[j] == ' ' && (j+1 == len(header) || header[j+1] == ' ')) {
				j++
			}
			starts = append(starts, i)
			names = append(names, header[i:j])
			i = j
		}
		tbl := &table{headers: names}
		for _, line := range lines[1:] {
			r := map[string]string{}
			for k, s := range starts {
				end := len(line)
				if k+1 < len(starts) && starts[k+1] < end {
					end = starts[k+1]
				}
				if s < end {
					r[names[k]] = strings.TrimSpace(line[s:end])
				}
			}
			tbl.rows = append(tbl.rows, r)
		}
		tables = append(tables, tbl)
	}
	return tables
}

func findTable(tables []*table, namePrefix string) *table {
	for _, t := range tables {
		if len(t.rows) > 0 && strings.HasPrefix(t.rows[0]["NAME"], namePrefix) {
			return t
		}
	}
	return nil
}
