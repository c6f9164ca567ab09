package testenv_test

import (
	"context"
	"strings"
	"testing"
	"time"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/internal/testing/testenv"
)

// TestRealAPIServer proves the harness is a real API server: built-in kinds
// through client-go, cert-manager's CRDs through the built kubectl, and
// Gateway API's CRDs through the controller-runtime client.
func TestRealAPIServer(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("Service and EndpointSlice through client-go", func(t *testing.T) {
		svc, err := cs.CoreV1().Services("shop").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "cart"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "cart"},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// A real API server allocates a cluster IP from its service range.
		if svc.Spec.ClusterIP == "" || !strings.HasPrefix(svc.Spec.ClusterIP, "10.0.0.") {
			t.Fatalf("cluster IP = %q, want one allocated from 10.0.0.0/24", svc.Spec.ClusterIP)
		}
		ready := true
		_, err = cs.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "cart-1", Labels: map[string]string{discoveryv1.LabelServiceName: "cart"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		slices, err := cs.DiscoveryV1().EndpointSlices("shop").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=cart"})
		if err != nil {
			t.Fatal(err)
		}
		if len(slices.Items) != 1 || slices.Items[0].Endpoints[0].Addresses[0] != "10.1.0.7" {
			t.Fatalf("listed slices = %+v, want the one created", slices.Items)
		}
		// Validation is the real one too: an EndpointSlice port must be named
		// as a DNS label.
		_, err = cs.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "bad"},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("Not_A_Label"), Port: ptr(int32(1))}},
		}, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "ports[0].name") {
			t.Fatalf("invalid EndpointSlice: err = %v, want a rejection naming ports[0].name", err)
		}
	})

	t.Run("cert-manager Issuer through kubectl", func(t *testing.T) {
		issuer := `apiVersion: cert-manager.io/v1
kind: Issuer
metadata:
  name: mesh-ca
  namespace: shop
spec:
  ca:
    secretName: mesh-ca-root
`
		out, err := env.Kubectl(ctx, []byte(issuer), "apply", "-f", "-")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "issuer.cert-manager.io/mesh-ca created") {
			t.Fatalf("kubectl apply said %q", out)
		}
		var got certmanagerv1.Issuer
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "mesh-ca"}, &got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.CA == nil || got.Spec.CA.SecretName != "mesh-ca-root" {
			t.Fatalf("read back spec = %+v, want ca.secretName mesh-ca-root", got.Spec)
		}
		// The real CRD's schema rejects an unknown issuer field.
		_, err = env.Kubectl(ctx, []byte(strings.Replace(issuer, "secretName", "secretNam", 1)), "apply", "--validate=strict", "-f", "-")
		if err == nil || !strings.Contains(err.Error(), "secretNam") {
			t.Fatalf("misspelt field: err = %v, want a strict-validation error naming it", err)
		}
		out, err = env.Kubectl(ctx, nil, "get", "issuers", "-n", "shop", "-o", "name")
		if err != nil || strings.TrimSpace(out) != "issuer.cert-manager.io/mesh-ca" {
			t.Fatalf("kubectl get issuers = %q, %v", out, err)
		}
	})

	t.Run("Gateway API HTTPRoute CRD", func(t *testing.T) {
		route := &gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: "shop"},
			Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: ptr(gatewayv1.Group("")), Kind: ptr(gatewayv1.Kind("Service")), Name: "cart",
			}}}},
		}
		if err := env.Client.Create(ctx, route); err != nil {
			t.Fatal(err)
		}
	})
}

func ptr[T any](v T) *T { return &v }
