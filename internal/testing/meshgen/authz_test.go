package meshgen

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
)

// TestAuthorize pins the reference evaluator to docs/api.md's sentences,
// one case each.
func TestAuthorize(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}}
	pol := func(name string, action v1alpha1.AuthAction, mode v1alpha1.AuthMode, target string, rules ...v1alpha1.AuthRule) *v1alpha1.AuthPolicy {
		kind := "Service"
		if target == "shop" || target == "other" {
			kind = "Namespace"
		}
		return &v1alpha1.AuthPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: v1alpha1.AuthPolicySpec{
			TargetRefs: []v1alpha1.AuthPolicyTargetReference{{PolicyTargetReference: v1alpha1.PolicyTargetReference{Kind: kind, Name: target}}},
			Action:     action, Mode: mode, Rules: rules}}
	}
	fromSA := func(sa string) *v1alpha1.AuthSource { return &v1alpha1.AuthSource{ServiceAccounts: []string{sa}} }
	req := AuthRequest{Namespace: "shop", Labels: map[string]string{"app": "web"}, MTLS: true, SourceNamespace: "shop", SourceServiceAccount: "client",
		Peer: netip.MustParseAddr("10.1.0.5"), Port: 8080, HTTP: true, Method: "GET", Path: "/api/v1"}
	plain := req
	plain.MTLS = false
	tcp := req
	tcp.HTTP, tcp.Method, tcp.Path = false, "", ""
	for _, tc := range []struct {
		name     string
		policies []*v1alpha1.AuthPolicy
		r        AuthRequest
		allowed  bool
	}{
		{"no policy: allowed", nil, req, true},
		{"Deny {} denies everything", []*v1alpha1.AuthPolicy{pol("d", "Deny", "", "web", v1alpha1.AuthRule{})}, req, false},
		{"Deny beats Allow", []*v1alpha1.AuthPolicy{pol("a", "Allow", "", "web", v1alpha1.AuthRule{}), pol("d", "Deny", "", "shop", v1alpha1.AuthRule{From: fromSA("shop/client")})}, req, false},
		{"an Allow makes the rest denied", []*v1alpha1.AuthPolicy{pol("a", "Allow", "", "web", v1alpha1.AuthRule{From: fromSA("shop/other")})}, req, false},
		{"Allow by service account", []*v1alpha1.AuthPolicy{pol("a", "Allow", "", "web", v1alpha1.AuthRule{From: fromSA("shop/client")})}, req, true},
		{"callers without mesh mTLS never match serviceAccounts", []*v1alpha1.AuthPolicy{pol("a", "Allow", "", "web", v1alpha1.AuthRule{From: fromSA("shop/client")})}, plain, false},
		{"nor namespaces", []*v1alpha1.AuthPolicy{pol("a", "Allow", "", "web", v1alpha1.AuthRule{From: &v1alpha1.AuthSource{Namespaces: []string{"shop"}}})}, plain, false},
		{"ipBlocks match without mTLS", []*v1alpha1.AuthPolicy{pol("a", "Allow", "", "web", v1alpha1.AuthRule{From: &v1alpha1.AuthSource{IPBlocks: []string{"10.1.0.0/16"}}})}, plain, true},
		{"from lists are alternatives", []*v1alpha1.AuthPolicy{pol("a", "Allow", "", "web", v1alpha1.AuthRule{From: &v1alpha1.AuthSource{ServiceAccounts: []string{"x/y"}, IPBlocks: []string{"10.1.0.5/32"}}})}, req, true},
		{"to lists must all match", []*v1alpha1.AuthPolicy{pol("d", "Deny", "", "web", v1alpha1.AuthRule{To: &v1alpha1.AuthOperation{Ports: []int32{8080}, Methods: []v1alpha1.HTTPMethod{"POST"}}})}, req, true},
		{"ports are container ports", []*v1alpha1.AuthPolicy{pol("d", "Deny", "", "web", v1alpha1.AuthRule{To: &v1alpha1.AuthOperation{Ports: []int32{8080}}})}, req, false},
		{"PathPrefix by element: /api matches /api/v1", []*v1alpha1.AuthPolicy{pol("d", "Deny", "", "web", v1alpha1.AuthRule{To: &v1alpha1.AuthOperation{Paths: []v1alpha1.PathMatch{{Value: "/api"}}}})}, req, false},
		{"PathPrefix by element: /ap does not match /api/v1", []*v1alpha1.AuthPolicy{pol("d", "Deny", "", "web", v1alpha1.AuthRule{To: &v1alpha1.AuthOperation{Paths: []v1alpha1.PathMatch{{Value: "/ap"}}}})}, req, true},
		{"Exact", []*v1alpha1.AuthPolicy{pol("d", "Deny", "", "web", v1alpha1.AuthRule{To: &v1alpha1.AuthOperation{Paths: []v1alpha1.PathMatch{{Type: "Exact", Value: "/api/v1"}}}})}, req, false},
		{"methods never match TCP: a Deny on them lets TCP through", []*v1alpha1.AuthPolicy{pol("d", "Deny", "", "web", v1alpha1.AuthRule{To: &v1alpha1.AuthOperation{Methods: []v1alpha1.HTTPMethod{"GET"}}})}, tcp, true},
		{"paths never match TCP: an Allow on them refuses TCP", []*v1alpha1.AuthPolicy{pol("a", "Allow", "", "web", v1alpha1.AuthRule{To: &v1alpha1.AuthOperation{Paths: []v1alpha1.PathMatch{{Value: "/"}}}})}, tcp, false},
		{"DryRun never changes the outcome", []*v1alpha1.AuthPolicy{pol("d", "Deny", "DryRun", "web", v1alpha1.AuthRule{})}, req, true},
		{"a Namespace target naming another namespace is not in effect", []*v1alpha1.AuthPolicy{pol("d", "Deny", "", "other", v1alpha1.AuthRule{})}, req, true},
		{"a Service target that selects other pods", []*v1alpha1.AuthPolicy{pol("d", "Deny", "", "db", v1alpha1.AuthRule{})}, req, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Authorize(tc.policies, []*corev1.Service{svc}, tc.r)
			if d.Allowed != tc.allowed {
				t.Errorf("Authorize: %+v, want allowed=%v", d, tc.allowed)
			}
		})
	}
}
