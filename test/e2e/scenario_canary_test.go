package e2e

import (
	"math"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testing/localmesh"
)

// testCanary is scenario 1: a TrafficSplit sends 90/10 of web's calls to
// web-v1 and web-v2, and 2,000 calls of a client land within 3 points of
// it; the split is changed to 50/50 with kubectl, `kubectl wait
// --for=condition=Programmed` returns, and the client's very next calls
// already follow 50/50 — the wait returned only once the client had
// applied (ACKed) the change.
//
// The bounds: a call goes to web-v2 with probability p, independently, so
// over n calls web-v2's share has standard deviation sqrt(p(1-p)/n): 0.67
// points for p = 0.1 and n = 2,000, so ±3 points is 4.5 standard
// deviations (a false failure about once in 150,000 runs). For 50/50:
// 1.6 points at n = 1,000, and ±6 points is 3.8 deviations (1 in 7,000).
// The first 200 calls after the wait tell the two configurations apart on
// their own: 50/50 puts 100 ± 7 of them on web-v2, 90/10 only 20 ± 4.2; at
// least 70 is 4.2 deviations below the first and 12 above the second.
func testCanary(t *testing.T, s *scenarios) {
	const ns = "canary"
	s.namespace(t, ns)
	s.kubectl(t, serviceYAML(ns, "web", "web")+serviceYAML(ns, "web-v1", "web,v1")+serviceYAML(ns, "web-v2", "web,v2")+
		trafficSplitYAML(ns, "web", "web-v1", 90, "web-v2", 10), "apply", "-f", "-")
	s.start(t, localmesh.Spec{Namespace: ns, Pod: "web-v1-0", ServiceAccount: "web", Labels: map[string]string{"app": "web", "version": "v1"}, Services: []string{"web", "web-v1"}})
	s.start(t, localmesh.Spec{Namespace: ns, Pod: "web-v2-0", ServiceAccount: "web", Labels: map[string]string{"app": "web", "version": "v2"}, Services: []string{"web", "web-v2"}})
	client := s.start(t, localmesh.Spec{Namespace: ns, Pod: "client-0", ServiceAccount: "client", Labels: map[string]string{"app": "client"},
		Targets: []string{"web." + ns + ":80"}, Rate: 400, Concurrency: 8})
	s.waitCondition(t, ns, "trafficsplit/web", "Programmed")

	v2 := func(k callKey) bool { return k.Service == "web-v2" }
	share := func(c callCounts) float64 { return 100 * c.count(v2) / c.count(nil) }

	before := demoCalls(t, client.MetricsURL())
	start := time.Now()
	got := awaitCalls(t, client.MetricsURL(), before, 2000, nil)
	rate := got.count(nil) / time.Since(start).Seconds()
	checkAllOK(t, "90/10", got)
	if sh := share(got); math.Abs(sh-10) > 3 {
		t.Errorf("90/10: web-v2 took %.1f%% of %v calls; want 10 ± 3 points: %v", sh, got.count(nil), got)
	} else {
		t.Logf("90/10: web-v2 took %.2f%% of %v calls (%.0f calls/s)", sh, got.count(nil), rate)
	}

	patched := time.Now()
	s.kubectl(t, "", "patch", "-n", ns, "trafficsplit", "web", "--type=merge", "-p",
		`{"spec":{"backends":[{"name":"web-v1","weight":50},{"name":"web-v2","weight":50}]}}`)
	s.waitCondition(t, ns, "trafficsplit/web", "Programmed")
	waited := time.Since(patched)
	after := demoCalls(t, client.MetricsURL())
	first := awaitCalls(t, client.MetricsURL(), after, 200, nil)
	rest := awaitCalls(t, client.MetricsURL(), after, 1200, nil).since(first)
	checkAllOK(t, "50/50", first)
	checkAllOK(t, "50/50", rest)
	if n := first.count(v2); n < 0.35*first.count(nil) {
		t.Errorf("the first %v calls once kubectl wait returned: %v on web-v2; want at least 35%% (50/50 applied): %v", first.count(nil), n, first)
	}
	if sh := share(rest); math.Abs(sh-50) > 6 {
		t.Errorf("50/50: web-v2 took %.1f%% of %v calls; want 50 ± 6 points: %v", sh, rest.count(nil), rest)
	}
	t.Logf("50/50: kubectl patch to kubectl wait returning: %v; the first %v calls after: %.1f%% on web-v2; the next %v: %.1f%%",
		waited.Round(time.Millisecond), first.count(nil), share(first), rest.count(nil), share(rest))
}

// checkAllOK fails the test if any call in c did not succeed.
func checkAllOK(t *testing.T, what string, c callCounts) {
	t.Helper()
	if bad := c.count(func(k callKey) bool { return k.Code != "OK" }); bad > 0 {
		t.Errorf("%s: %v of %v calls failed: %v", what, bad, c.count(nil), c)
	}
}
