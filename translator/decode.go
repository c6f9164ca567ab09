package translator

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/weftmesh/weft/crds/v1alpha1"
)

var (
	scheme = runtime.NewScheme()
	codecs serializer.CodecFactory
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	utilruntime.Must(gatewayv1.Install(scheme))
	utilruntime.Must(gatewayv1beta1.Install(scheme))
	codecs = serializer.NewCodecFactory(scheme, serializer.EnableStrict)
}

// DecodeInputs reads Kubernetes objects from multi-document YAML (as
// `kubectl get -o yaml` or a manifest folder gives them) into Inputs, for
// golden tests and offline translation. Unknown kinds and unknown fields are
// errors that name the document.
func DecodeInputs(data []byte) (*Inputs, error) {
	in := &Inputs{}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for i := 0; ; i++ {
		var raw runtime.RawExtension
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return in, nil
			}
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(raw.Raw)) == 0 || string(bytes.TrimSpace(raw.Raw)) == "null" {
			continue
		}
		obj, gvk, err := codecs.UniversalDeserializer().Decode(raw.Raw, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			in.Namespaces = append(in.Namespaces, o)
		case *corev1.Service:
			in.Services = append(in.Services, o)
		case *discoveryv1.EndpointSlice:
			in.EndpointSlices = append(in.EndpointSlices, o)
		case *corev1.Pod:
			in.Pods = append(in.Pods, o)
		case *v1alpha1.TrafficSplit:
			in.TrafficSplits = append(in.TrafficSplits, o)
		case *gatewayv1.HTTPRoute:
			in.HTTPRoutes = append(in.HTTPRoutes, o)
		case *gatewayv1.GRPCRoute:
			in.GRPCRoutes = append(in.GRPCRoutes, o)
		case *gatewayv1beta1.ReferenceGrant:
			in.ReferenceGrants = append(in.ReferenceGrants, o)
		case *gatewayv1.ReferenceGrant:
			// The same object (v1beta1's type is v1's): read as the
			// version weft-controller watches.
			in.ReferenceGrants = append(in.ReferenceGrants, (*gatewayv1beta1.ReferenceGrant)(o))
		case *v1alpha1.RetryPolicy:
			in.RetryPolicies = append(in.RetryPolicies, o)
		case *v1alpha1.AuthPolicy:
			in.AuthPolicies = append(in.AuthPolicies, o)
		case *v1alpha1.BackendTrafficPolicy:
			in.BackendTrafficPolicies = append(in.BackendTrafficPolicies, o)
		case *v1alpha1.RateLimitPolicy:
			in.RateLimitPolicies = append(in.RateLimitPolicies, o)
		case *v1alpha1.MeshConfig:
			in.MeshConfig = o
		default:
			return nil, fmt.Errorf("document %d: the translator does not read %s", i, gvk.Kind)
		}
	}
}
