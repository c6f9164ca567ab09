package status

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator"
)

// TestWriterBackendTrafficPolicy: a BackendTrafficPolicy gets the status
// every weft kind has, through the real API server: Accepted, ResolvedRefs
// and Programmed; of two on one Service the older is Accepted and the newer
// Accepted=False, reason Conflicted, naming the winner; ProxylessLimited
// names what proxyless gRPC clients drop and goes once they apply it all.
func TestWriterBackendTrafficPolicy(t *testing.T) {
	h := start(t)
	// Created in one second, perhaps: the names order them then (a-... is
	// the older).
	if _, err := h.env.Kubectl(h.ctx, []byte(`
apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: a-checkout, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: checkout}]
  loadBalancer: {type: Maglev, consistentHash: {type: Header, header: {name: x-user-id}}}
`), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.env.Kubectl(h.ctx, []byte(`
apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: b-checkout-and-cart, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: cart}, {group: "", kind: Service, name: checkout}]
  circuitBreaker: {maxRequests: 10}
`), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	older := translator.PolicyKey{Kind: translator.KindBackendTrafficPolicy, Namespace: "shop", Name: "a-checkout"}
	newer := translator.PolicyKey{Kind: translator.KindBackendTrafficPolicy, Namespace: "shop", Name: "b-checkout-and-cart"}
	h.translate()

	h.eventually("conditions on both", func() bool {
		return h.condition(older, v1alpha1.ConditionProgrammed) != nil && h.condition(newer, v1alpha1.ConditionProgrammed) != nil
	})
	if c := h.condition(older, v1alpha1.ConditionAccepted); c.Status != metav1.ConditionTrue || c.ObservedGeneration != 1 {
		t.Errorf("older Accepted = %+v, want True for generation 1", c)
	}
	if c := h.condition(older, v1alpha1.ConditionResolvedRefs); c.Status != metav1.ConditionTrue {
		t.Errorf("older ResolvedRefs = %+v, want True", c)
	}
	c := h.condition(newer, v1alpha1.ConditionAccepted)
	if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonConflicted || !strings.Contains(c.Message, "shop/a-checkout") || !strings.Contains(c.Message, "spec.targetRefs[1]") {
		t.Errorf("newer Accepted = %+v, want False, Conflicted, naming spec.targetRefs[1] and shop/a-checkout", c)
	}
	if p := h.condition(newer, v1alpha1.ConditionProgrammed); p.Status != metav1.ConditionFalse || p.Reason != v1alpha1.ReasonInvalid {
		t.Errorf("newer Programmed = %+v, want False, Invalid (nothing of it is programmed)", p)
	}
	pl := h.condition(older, translator.ConditionProxylessLimited)
	if pl == nil || pl.Status != metav1.ConditionTrue || pl.Reason != translator.ReasonUnsupportedByGRPC || !strings.Contains(pl.Message, "spec.loadBalancer.type Maglev") {
		t.Errorf("older ProxylessLimited = %+v, want True naming Maglev", pl)
	}

	h.src.set(older, Distribution{Generation: 1, Proxies: 2, Acked: 2})
	h.w.ProgrammedChanged(older)
	h.eventually("older Programmed=True", func() bool {
		return h.condition(older, v1alpha1.ConditionProgrammed).Status == metav1.ConditionTrue
	})

	// RingHash is what proxyless clients do: the condition goes.
	if _, err := h.env.Kubectl(h.ctx, nil, "patch", "-n", "shop", "backendtrafficpolicy", "a-checkout", "--type=merge", "-p", `{"spec":{"loadBalancer":{"type":"RingHash"}}}`); err != nil {
		t.Fatal(err)
	}
	h.translate()
	h.eventually("ProxylessLimited removed", func() bool {
		return h.condition(older, translator.ConditionProxylessLimited) == nil &&
			h.condition(older, v1alpha1.ConditionAccepted).ObservedGeneration == 2
	})
	if p := h.condition(older, v1alpha1.ConditionProgrammed); p.Status != metav1.ConditionUnknown || p.ObservedGeneration != 2 {
		t.Errorf("Programmed after the change = %+v, want Unknown for generation 2 until proxies ACK it", p)
	}
}
