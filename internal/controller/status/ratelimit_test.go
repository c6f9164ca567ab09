package status

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator"
)

// TestWriterRateLimitPolicy: a RateLimitPolicy gets the status every weft
// kind has, through the real API server; of two on one Service the newer
// is Conflicted, naming the older; a policy on a Service whose pods are
// proxyless gRPC servers carries ProxylessLimited naming them, which goes
// once no such pod is left.
func TestWriterRateLimitPolicy(t *testing.T) {
	h := start(t)
	if _, err := h.env.Kubectl(h.ctx, []byte(`
apiVersion: v1
kind: Pod
metadata: {name: cart-grpc-0, namespace: shop, labels: {app: cart}, annotations: {weft.dev/proxyless: grpc}}
spec: {containers: [{name: app, image: cart}]}
---
apiVersion: mesh.weft.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: a-checkout-and-cart, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: checkout}, {group: "", kind: Service, name: cart}]
  limit: {requests: 100, unit: Second}
`), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.env.Kubectl(h.ctx, []byte(`
apiVersion: mesh.weft.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: b-checkout, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: checkout}]
  mode: DryRun
  limit: {requests: 1, unit: Minute}
`), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	older := translator.PolicyKey{Kind: translator.KindRateLimitPolicy, Namespace: "shop", Name: "a-checkout-and-cart"}
	newer := translator.PolicyKey{Kind: translator.KindRateLimitPolicy, Namespace: "shop", Name: "b-checkout"}
	h.translate()

	h.eventually("conditions on both", func() bool {
		return h.condition(older, v1alpha1.ConditionProgrammed) != nil && h.condition(newer, v1alpha1.ConditionProgrammed) != nil
	})
	if c := h.condition(older, v1alpha1.ConditionAccepted); c.Status != metav1.ConditionTrue || c.ObservedGeneration != 1 {
		t.Errorf("older Accepted = %+v, want True for generation 1", c)
	}
	c := h.condition(newer, v1alpha1.ConditionAccepted)
	if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonConflicted || !strings.Contains(c.Message, "shop/a-checkout-and-cart") || !strings.Contains(c.Message, "spec.targetRefs[0]") {
		t.Errorf("newer Accepted = %+v, want False, Conflicted, naming spec.targetRefs[0] and shop/a-checkout-and-cart", c)
	}
	pl := h.condition(older, translator.ConditionProxylessLimited)
	if pl == nil || pl.Status != metav1.ConditionTrue || pl.Reason != translator.ReasonUnsupportedByGRPC ||
		!strings.Contains(pl.Message, "Service cart: pods cart-grpc-0") || !strings.Contains(pl.Message, "spec.limit") || strings.Contains(pl.Message, "Service checkout") {
		t.Errorf("older ProxylessLimited = %+v, want True naming Service cart's pod cart-grpc-0 and spec.limit, not checkout", pl)
	}

	h.src.set(older, Distribution{Generation: 1, Proxies: 3, Acked: 3})
	h.w.ProgrammedChanged(older)
	h.eventually("older Programmed=True", func() bool {
		return h.condition(older, v1alpha1.ConditionProgrammed).Status == metav1.ConditionTrue
	})

	// The proxyless pod goes: nothing left that cannot apply the policy.
	if _, err := h.env.Kubectl(h.ctx, nil, "delete", "-n", "shop", "pod", "cart-grpc-0", "--wait=false"); err != nil {
		t.Fatal(err)
	}
	h.eventually("pod gone from the cache", func() bool {
		h.translate()
		return h.condition(older, translator.ConditionProxylessLimited) == nil
	})
}
