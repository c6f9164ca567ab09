package e2e

import (
	"strings"
	"testing"
	"time"
)

// badEdits are the samples' objects (config/samples: the canary in shop,
// MeshConfig weft) as a user might mistype them: each is refused by the
// API server with the message docs/api.md gives, and the live object is
// left as it was.
var badEdits = []struct {
	name, object string
	want         []string
}{
	{"canary split with every weight 0", `apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficSplit
metadata: {name: checkout, namespace: shop}
spec:
  rootService: {name: checkout, port: 80}
  backends: [{name: checkout-v1, weight: 0}, {name: checkout-v2, weight: 0}]
`, []string{"spec.backends", "needs at least one backend with a weight above 0", "give the version that should serve traffic a positive weight"}},
	{"canary split naming a backend twice", `apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficSplit
metadata: {name: checkout, namespace: shop}
spec:
  rootService: {name: checkout, port: 80}
  backends: [{name: checkout-v1, weight: 50}, {name: checkout-v1, weight: 50}]
`, []string{"spec.backends lists the same Service and port more than once; merge the duplicate entries into one and add their weights"}},
	{"retry policy with a misspelt condition", `apiVersion: mesh.weft.dev/v1alpha1
kind: RetryPolicy
metadata: {name: checkout, namespace: shop}
spec:
  targetRefs: [{group: mesh.weft.dev, kind: TrafficSplit, name: checkout}]
  retryOn: [connect-failure, unavailabel]
`, []string{"spec.retryOn[1]", `Unsupported value: "unavailabel"`, `"unavailable"`}},
	{"retry policy whose tries outlast its timeout", `apiVersion: mesh.weft.dev/v1alpha1
kind: RetryPolicy
metadata: {name: checkout, namespace: shop}
spec:
  targetRefs: [{group: mesh.weft.dev, kind: TrafficSplit, name: checkout}]
  perTryTimeout: 10s
  timeout: 5s
`, []string{"spec.perTryTimeout", "must not be longer than spec.timeout"}},
	{"auth policy with no rules", `apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: checkout-from-frontend, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: checkout}]
  action: Allow
  rules: []
`, []string{"spec.rules must list at least one rule; to match every request write rules: [{}]"}},
	{"auth policy naming a service account without its namespace", `apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: checkout-from-frontend, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: checkout}]
  action: Allow
  rules: [{from: {serviceAccounts: [frontend]}}]
`, []string{"spec.rules[0].from.serviceAccounts[0]", "must be written namespace/name, such as shop/frontend"}},
	{"mesh config with certificates living 10 minutes", `apiVersion: mesh.weft.dev/v1alpha1
kind: MeshConfig
metadata: {name: weft}
spec:
  certificates: {workloadCertificateLifetime: 10m}
`, []string{"spec.certificates.workloadCertificateLifetime", "must be between 1h and 8760h"}},
	{"a second mesh config", `apiVersion: mesh.weft.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
`, []string{"metadata.name must be weft: MeshConfig is a singleton"}},
	{"backend policy ejecting 150% of endpoints", `apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: checkout, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: checkout}]
  outlierDetection: {maxEjectionPercent: 150}
`, []string{"spec.outlierDetection.maxEjectionPercent must be between 0 and 100"}},
}

// testBadInput is scenario 7: invalid edits of the samples' objects are
// refused by the API server (kubectl apply, not a dry run) with messages
// that name the field and the fix; policies that name something missing
// are stored and report ResolvedRefs=False with the reason; and the demo
// in shop, whose objects the edits aim at, carries every call meanwhile
// on its unchanged configuration.
func testBadInput(t *testing.T, s *scenarios) {
	url := s.demo.Frontend.MetricsURL()
	before := demoCalls(t, url)
	const splitJSON = `jsonpath={.metadata.generation} {.spec.backends}`
	split := s.kubectl(t, "", "get", "-n", "shop", "trafficsplit", "checkout", "-o", splitJSON)

	for _, c := range badEdits {
		out, err := s.m.Env.Kubectl(s.ctx, []byte(c.object), "apply", "-f", "-")
		if err == nil {
			t.Errorf("%s: applied (%s); want it refused", c.name, strings.TrimSpace(out))
			continue
		}
		msg := err.Error()
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: refused with %q; want it to say %q", c.name, msg, w)
			}
		}
		// kubectl's own prefix and the object's name say nothing new.
		if i := strings.Index(msg, "is invalid: "); i >= 0 {
			msg = msg[i+len("is invalid: "):]
		}
		t.Logf("%s: refused: %s", c.name, msg)
	}
	if got := s.kubectl(t, "", "get", "-n", "shop", "trafficsplit", "checkout", "-o", splitJSON); got != split {
		t.Errorf("the canary's TrafficSplit went from %q to %q; want it untouched", split, got)
	}

	// Names that resolve to nothing: stored, and reported.
	s.kubectl(t, serviceYAML("shop", "orders", "orders")+trafficSplitYAML("shop", "orders", "orders-v2", 100)+`apiVersion: mesh.weft.dev/v1alpha1
kind: RetryPolicy
metadata: {name: orders, namespace: shop}
spec:
  targetRefs: [{group: mesh.weft.dev, kind: TrafficSplit, name: ordres}]
`, "apply", "-f", "-")
	for _, c := range []struct{ object, reason, names string }{
		{"trafficsplit/orders", "BackendNotFound", "orders-v2"},
		{"retrypolicy/orders", "TargetNotFound", "ordres"},
	} {
		s.waitCondition(t, "shop", c.object, "ResolvedRefs=False")
		conds, gen := s.conditions(t, "shop", c.object)
		r := conds["ResolvedRefs"]
		if r.Reason != c.reason || r.ObservedGeneration != gen || !strings.Contains(r.Message, c.names) {
			t.Errorf("%s: ResolvedRefs %+v; want False, %s, naming %s", c.object, r, c.reason, c.names)
		}
		t.Logf("%s: ResolvedRefs=%s %s: %s", c.object, r.Status, r.Reason, r.Message)
	}

	// The demo went on: every call of the frontend meanwhile succeeded,
	// still split by the canary's 90/10.
	time.Sleep(2 * time.Second)
	got := demoCalls(t, url).since(before)
	checkAllOK(t, "the demo's frontend during bad input", got)
	if got.count(func(k callKey) bool { return k.Service == "checkout-v1" }) == 0 || got.count(func(k callKey) bool { return k.Service == "catalog" }) == 0 {
		t.Errorf("the demo's frontend during bad input: %v; want calls to checkout-v1 and catalog", got)
	}
	t.Logf("the demo's frontend during bad input: %v calls, all OK: %v", got.count(nil), got)
}
