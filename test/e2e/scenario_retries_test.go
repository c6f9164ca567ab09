package e2e

import (
	"math"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/testing/localmesh"
)

// testRetries is scenario 2, retries as a proxyless gRPC client applies
// them (gRFC A44: retry on gRPC status codes, at most 5 tries, no per-try
// timeout, and no retry budget from xDS; docs/design/057). pay is split
// 50/50 between pay-v1 and pay-v2, and pay-v2 fails half its calls with
// UNAVAILABLE.
//
//   - Without a RetryPolicy a call that reaches pay-v2 fails with
//     probability q = 0.5.
//   - With `retryOn: [unavailable], attempts: N` the client tries again on
//     pay-v2 (gRPC picks the split's backend once per call, so retries stay
//     on it) up to N times: the call fails only if all N+1 tries fail,
//     q = 0.5^(N+1) = 0.125 for N = 2. Each try is independent (the server
//     draws its failures at random), so over n calls to pay-v2 the failure
//     rate has standard deviation sqrt(q(1-q)/n): 0.016 at q = 0.5 and
//     0.010 at q = 0.125 for n = 1,000; the bounds below are about 4.4
//     deviations (±0.07 and ±0.045). The tries a call makes are 1, 2 or 3
//     with probabilities 1/2, 1/4, 1/4: 1.75 on average, standard deviation
//     0.83 per call, 0.026 over 1,000 calls; the bound of ±0.15 also covers
//     the calls in flight when the counters are read (8 callers, 3 tries).
//   - When pay-v2 fails every call, every call to it makes exactly N+1
//     tries: the attempts cap the amplification at N+1 = 3 times. A sidecar
//     would cap it further with the policy's retry budget (at most 10% of
//     active requests may be retries); gRPC has no retry budget in xDS, so
//     for proxyless clients the attempts are the only cap, and the policy
//     says so: ProxylessLimited=True, reason UnsupportedByGRPC, naming
//     spec.budget (docs/api.md, RetryPolicy). The budget is tighter than
//     the default (20%, at least 3), which every stored RetryPolicy has
//     (the API server fills it in) and which is not named (design 057).
//
// Failed calls are those the client saw fail; tries are what pay-v2's own
// counter (weft_demo_served_total) says it answered.
func testRetries(t *testing.T, s *scenarios) {
	const ns = "retry"
	s.namespace(t, ns)
	s.kubectl(t, serviceYAML(ns, "pay", "pay")+serviceYAML(ns, "pay-v1", "pay,v1")+serviceYAML(ns, "pay-v2", "pay,v2")+
		trafficSplitYAML(ns, "pay", "pay-v1", 50, "pay-v2", 50), "apply", "-f", "-")
	s.start(t, localmesh.Spec{Namespace: ns, Pod: "pay-v1-0", ServiceAccount: "pay", Labels: map[string]string{"app": "pay", "version": "v1"}, Services: []string{"pay", "pay-v1"}})
	v2 := s.start(t, localmesh.Spec{Namespace: ns, Pod: "pay-v2-0", ServiceAccount: "pay", Labels: map[string]string{"app": "pay", "version": "v2"}, Services: []string{"pay", "pay-v2"}})
	client := s.start(t, localmesh.Spec{Namespace: ns, Pod: "client-0", ServiceAccount: "client", Labels: map[string]string{"app": "client"},
		Targets: []string{"pay." + ns + ":80"}, Rate: 300, Concurrency: 8})
	s.waitCondition(t, ns, "trafficsplit/pay", "Programmed")
	if err := v2.SetFailPercent(50); err != nil {
		t.Fatal(err)
	}
	url := client.MetricsURL()
	onV2 := func(k callKey) bool { return k.Service == "pay-v2" }
	failed := func(k callKey) bool { return k.Service == "pay-v2" && k.Code != "OK" }
	tries := func() float64 {
		n := 0.0
		for _, v := range served(t, v2) {
			n += v
		}
		return n
	}
	// measure returns the failure rate of calls to pay-v2 and the tries
	// pay-v2 served per call, over at least n calls to it.
	measure := func(what string, n float64) (rate, perCall float64) {
		t.Helper()
		before, triesBefore := demoCalls(t, url), tries()
		got := awaitCalls(t, url, before, n, onV2)
		rate, perCall = got.count(failed)/got.count(onV2), (tries()-triesBefore)/got.count(onV2)
		if bad := got.count(func(k callKey) bool { return k.Service != "pay-v2" && k.Code != "OK" }); bad > 0 {
			t.Errorf("%s: %v calls not to pay-v2 failed: %v", what, bad, got)
		}
		t.Logf("%s: %v of %v calls to pay-v2 failed (%.3f), %.2f tries per call; all calls: %v", what, got.count(failed), got.count(onV2), rate, perCall, got)
		return rate, perCall
	}

	if rate, perCall := measure("pay-v2 fails 50%, no RetryPolicy", 1000); math.Abs(rate-0.5) > 0.07 || math.Abs(perCall-1) > 0.05 {
		t.Errorf("without retries: failure rate %.3f, %.2f tries per call; want 0.5 ± 0.07 and 1", rate, perCall)
	}

	const attempts = 2
	s.kubectl(t, `apiVersion: mesh.weft.dev/v1alpha1
kind: RetryPolicy
metadata: {name: pay, namespace: retry}
spec:
  targetRefs: [{group: mesh.weft.dev, kind: TrafficSplit, name: pay}]
  retryOn: [unavailable]
  attempts: 2
  budget: {percent: 10, minConcurrency: 3}
`, "apply", "-f", "-")
	s.waitCondition(t, ns, "retrypolicy/pay", "Programmed")
	want := math.Pow(0.5, attempts+1)
	if rate, perCall := measure("pay-v2 fails 50%, retried twice on UNAVAILABLE", 1000); math.Abs(rate-want) > 0.045 || math.Abs(perCall-1.75) > 0.15 {
		t.Errorf("with attempts %d: failure rate %.3f, %.2f tries per call; want %.3f ± 0.045 and 1.75 ± 0.15", attempts, rate, perCall, want)
	}

	if err := v2.SetFailPercent(100); err != nil {
		t.Fatal(err)
	}
	rate, perCall := measure("pay-v2 fails every call, retried twice", 500)
	if rate != 1 || math.Abs(perCall-(attempts+1)) > 0.1 {
		t.Errorf("pay-v2 failing every call: failure rate %.3f, %.2f tries per call; want 1 and exactly %d (the attempts cap the amplification)", rate, perCall, attempts+1)
	}
	conds, gen := s.conditions(t, ns, "retrypolicy/pay")
	pl := conds["ProxylessLimited"]
	if pl.Status != "True" || pl.Reason != "UnsupportedByGRPC" || !strings.Contains(pl.Message, "spec.budget") || pl.ObservedGeneration != gen {
		t.Errorf("RetryPolicy conditions %+v; want ProxylessLimited=True, UnsupportedByGRPC, naming spec.budget (gRPC has no retry budget)", conds)
	}
	t.Logf("the budget does not cap a proxyless client: %.2f tries per call to a backend failing every call; the RetryPolicy says: ProxylessLimited=%s %s: %s", perCall, pl.Status, pl.Reason, pl.Message)
	if err := v2.SetFailPercent(0); err != nil {
		t.Fatal(err)
	}
}
