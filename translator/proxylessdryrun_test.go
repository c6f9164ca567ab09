package translator_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator"
)

// A DryRun AuthPolicy is left out of a proxyless gRPC server's
// configuration (gRPC's RBAC filter has no shadow rules, gRFC A41), so
// there it neither denies nor counts. docs/api.md said so; the policy's
// status did not (issue 17: never a silent drop). It stays Accepted
// (sidecars evaluate it) and gains ProxylessLimited naming spec.mode; an
// enforced policy gets no such condition.
func TestDryRunAuthPolicyNamesWhatProxylessServersDrop(t *testing.T) {
	status := func(mode string) []metav1.Condition {
		in, err := translator.DecodeInputs([]byte(retryService + `apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: a, namespace: shop, generation: 3}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  action: Deny
  mode: ` + mode + `
  rules: [{from: {namespaces: [other]}}]
`))
		if err != nil {
			t.Fatal(err)
		}
		return translator.Translate(in).Status[translator.PolicyKey{Kind: translator.KindAuthPolicy, Namespace: "shop", Name: "a"}]
	}
	conds := status("DryRun")
	if c := meta.FindStatusCondition(conds, v1alpha1.ConditionAccepted); c == nil || c.Status != "True" {
		t.Fatalf("Accepted = %+v, want True", c)
	}
	c := meta.FindStatusCondition(conds, translator.ConditionProxylessLimited)
	if c == nil || c.Status != "True" || c.Reason != translator.ReasonUnsupportedByGRPC || c.ObservedGeneration != 3 {
		t.Fatalf("ProxylessLimited = %+v, want True/%s at generation 3", c, translator.ReasonUnsupportedByGRPC)
	}
	for _, want := range []string{"spec.mode DryRun", "Service web", "neither denies nor counts"} {
		if !strings.Contains(c.Message, want) {
			t.Errorf("message %q does not say %q", c.Message, want)
		}
	}
	if c := meta.FindStatusCondition(status("Enforce"), translator.ConditionProxylessLimited); c != nil {
		t.Errorf("an enforced policy: unexpected %+v", c)
	}
}
