package translator_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator"
)

const retryService = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.1, ports: [{name: grpc, port: 80, appProtocol: grpc}]}
---
`

func retryStatus(t *testing.T, spec string) *translator.Output {
	t.Helper()
	in, err := translator.DecodeInputs([]byte(retryService + `apiVersion: mesh.weft.dev/v1alpha1
kind: RetryPolicy
metadata: {name: r, namespace: shop, generation: 1}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
` + spec))
	if err != nil {
		t.Fatal(err)
	}
	return translator.Translate(in)
}

// 12r: proxyless gRPC clients dropped the parts of a RetryPolicy gRPC has
// no equivalent for (HTTP retry conditions, per-try timeout, budget, more
// than 5 tries) without a word. The policy stays Accepted (sidecars apply
// all of it) and a ProxylessLimited condition names each part.
func TestRetryPolicyNamesWhatProxylessClientsDrop(t *testing.T) {
	out := retryStatus(t, `  retryOn: [5xx, reset, unavailable, retriable-status-codes]
  retriableStatusCodes: [503]
  attempts: 7
  perTryTimeout: 1s
  budget: {percent: 10}
`)
	conds := out.Status[translator.PolicyKey{Kind: translator.KindRetryPolicy, Namespace: "shop", Name: "r"}]
	if c := meta.FindStatusCondition(conds, v1alpha1.ConditionAccepted); c == nil || c.Status != "True" {
		t.Fatalf("Accepted = %+v, want True", c)
	}
	c := meta.FindStatusCondition(conds, translator.ConditionProxylessLimited)
	if c == nil || c.Status != "True" || c.Reason != translator.ReasonUnsupportedByGRPC || c.ObservedGeneration != 1 {
		t.Fatalf("ProxylessLimited = %+v, want True/%s", c, translator.ReasonUnsupportedByGRPC)
	}
	for _, want := range []string{"Service web", "spec.retryOn", "5xx", "reset", "retriable-status-codes",
		"spec.perTryTimeout", "spec.budget", "spec.attempts", "5 tries"} {
		if !strings.Contains(c.Message, want) {
			t.Errorf("message %q does not name %q", c.Message, want)
		}
	}
	if strings.Contains(c.Message, "unavailable") {
		t.Errorf("message %q names unavailable, which gRPC honours", c.Message)
	}
}

// A policy gRPC clients apply as written gets no such condition: the
// default retry conditions (connect failures surface to gRPC as
// UNAVAILABLE; refused streams are retried transparently, gRFC A6),
// backoff, timeout and up to 4 retries.
func TestRetryPolicyProxylessHonouredHasNoCondition(t *testing.T) {
	for _, spec := range []string{"", `  attempts: 4
  timeout: 2s
  backoff: {baseInterval: 10ms, maxInterval: 100ms}
  retryOn: [unavailable, deadline-exceeded, resource-exhausted, cancelled, connect-failure, refused-stream]
`} {
		out := retryStatus(t, spec)
		conds := out.Status[translator.PolicyKey{Kind: translator.KindRetryPolicy, Namespace: "shop", Name: "r"}]
		if c := meta.FindStatusCondition(conds, translator.ConditionProxylessLimited); c != nil {
			t.Errorf("spec %q: unexpected %+v", spec, c)
		}
	}
}

// A RetryPolicy as the API server stores it: every default filled in
// (the CRD defaults backoff and budget with default: {}), so its budget is
// never nil. The default budget is not reported (design 057), whether
// written or filled in; another one is.
func TestRetryPolicyDefaultedBudgetIsNotReported(t *testing.T) {
	out := retryStatus(t, `  retryOn: [connect-failure, refused-stream, unavailable, cancelled]
  attempts: 2
  backoff: {baseInterval: 25ms, maxInterval: 250ms}
  budget: {percent: 20, minConcurrency: 3}
`)
	conds := out.Status[translator.PolicyKey{Kind: translator.KindRetryPolicy, Namespace: "shop", Name: "r"}]
	if c := meta.FindStatusCondition(conds, translator.ConditionProxylessLimited); c != nil {
		t.Errorf("the API server's defaults raise %+v", c)
	}
	out = retryStatus(t, "  budget: {percent: 20, minConcurrency: 5}\n")
	conds = out.Status[translator.PolicyKey{Kind: translator.KindRetryPolicy, Namespace: "shop", Name: "r"}]
	if c := meta.FindStatusCondition(conds, translator.ConditionProxylessLimited); c == nil || !strings.Contains(c.Message, "spec.budget") {
		t.Errorf("ProxylessLimited = %+v, want it to name a budget other than the default", c)
	}
}

// connect-failure without unavailable: gRPC reports a failed connection as
// UNAVAILABLE, which the policy does not retry, so proxyless clients do
// not retry connect failures at all.
func TestRetryPolicyConnectFailureNeedsUnavailableForProxyless(t *testing.T) {
	out := retryStatus(t, "  retryOn: [connect-failure, cancelled]\n")
	conds := out.Status[translator.PolicyKey{Kind: translator.KindRetryPolicy, Namespace: "shop", Name: "r"}]
	c := meta.FindStatusCondition(conds, translator.ConditionProxylessLimited)
	if c == nil || !strings.Contains(c.Message, "connect-failure") {
		t.Fatalf("ProxylessLimited = %+v, want it to name connect-failure", c)
	}
}
