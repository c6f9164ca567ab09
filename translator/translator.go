// Package translator turns Kubernetes objects and weft's policies into the
// mesh model (translator/ir) and a status for every policy.
//
// Translation is pure: no API calls, no clock, no network. A user's mistake
// becomes a condition on that policy and the rest of the mesh translates
// normally; only a bug in weft returns an error.
package translator

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator/ir"
)

// Inputs is everything the control plane knows, as read from the cluster.
// The translator never modifies it.
type Inputs struct {
	Namespaces     []*corev1.Namespace
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Pods           []*corev1.Pod
	TrafficSplits  []*v1alpha1.TrafficSplit
	HTTPRoutes     []*gatewayv1.HTTPRoute
	// GRPCRoutes, like HTTPRoutes, route calls to Services (GAMMA).
	GRPCRoutes []*gatewayv1.GRPCRoute
	// ReferenceGrants permit HTTPRoutes and GRPCRoutes to use Services
	// of other namespaces (backendPermitted).
	ReferenceGrants []*gatewayv1beta1.ReferenceGrant
	RetryPolicies   []*v1alpha1.RetryPolicy
	AuthPolicies    []*v1alpha1.AuthPolicy
	// BackendTrafficPolicies set how callers treat Services' endpoints.
	BackendTrafficPolicies []*v1alpha1.BackendTrafficPolicy
	// RateLimitPolicies limit what Services' pods accept.
	RateLimitPolicies []*v1alpha1.RateLimitPolicy
	// MeshConfig is the singleton named "weft"; nil means all defaults.
	MeshConfig *v1alpha1.MeshConfig
}

// Add appends other's objects to in; other's MeshConfig, if any, replaces
// in's (there is one). It is how several manifests become one input.
func (in *Inputs) Add(other *Inputs) {
	in.Namespaces = append(in.Namespaces, other.Namespaces...)
	in.Services = append(in.Services, other.Services...)
	in.EndpointSlices = append(in.EndpointSlices, other.EndpointSlices...)
	in.Pods = append(in.Pods, other.Pods...)
	in.TrafficSplits = append(in.TrafficSplits, other.TrafficSplits...)
	in.HTTPRoutes = append(in.HTTPRoutes, other.HTTPRoutes...)
	in.GRPCRoutes = append(in.GRPCRoutes, other.GRPCRoutes...)
	in.ReferenceGrants = append(in.ReferenceGrants, other.ReferenceGrants...)
	in.RetryPolicies = append(in.RetryPolicies, other.RetryPolicies...)
	in.AuthPolicies = append(in.AuthPolicies, other.AuthPolicies...)
	in.BackendTrafficPolicies = append(in.BackendTrafficPolicies, other.BackendTrafficPolicies...)
	in.RateLimitPolicies = append(in.RateLimitPolicies, other.RateLimitPolicies...)
	if other.MeshConfig != nil {
		in.MeshConfig = other.MeshConfig
	}
}

// PolicyKey names a policy object whose status the translator computes.
type PolicyKey struct {
	Kind, Namespace, Name string
}

// Output is the result of a translation.
type Output struct {
	Mesh *ir.Mesh
	// Status holds, for every policy in the inputs, its Accepted and
	// ResolvedRefs conditions (Programmed is the xDS layer's to say).
	// LastTransitionTime is left zero: the status writer owns the clock.
	Status map[PolicyKey][]metav1.Condition
	// Warnings are problems that belong to no policy, such as a namespace's
	// unusable weft.dev/mtls-mode label; the controller turns them into
	// Events on the object they name.
	Warnings []string
}

// Translate builds the mesh model and the policies' status from in.
func Translate(in *Inputs) *Output {
	t := &translation{in: in, status: map[PolicyKey][]metav1.Condition{}}
	t.mesh = &ir.Mesh{Namespaces: map[string]*ir.Namespace{}}
	t.meshConfig()
	t.namespaces()
	t.services()
	t.routes()
	t.retryPolicies()
	t.proxylessTimeoutGaps()
	t.backendTrafficPolicies()
	t.rateLimitPolicies()
	t.authPolicies()
	t.defaultRoutes()
	for _, f := range t.pending {
		f()
	}
	sort.Strings(t.warnings)
	return &Output{Mesh: t.mesh, Status: t.status, Warnings: t.warnings}
}

// translation is the state of one Translate call.
type translation struct {
	in     *Inputs
	mesh   *ir.Mesh
	status map[PolicyKey][]metav1.Condition
	// Lookups built from the inputs.
	byKey map[ir.ServiceKey]*ir.Service
	// routed marks ports whose routes came from a TrafficSplit or HTTPRoute,
	// and by which one, to detect conflicts.
	routed map[portKey]*portRouting
	// retried marks what a RetryPolicy already targets.
	retried map[PolicyKey]ir.PolicyRef
	// pending writes each policy's final conditions into status.
	pending []func()
	// tracked is each policy's status while it is being built.
	tracked map[PolicyKey]*policyStatus
	// backendTimeouts lists each HTTPRoute's rules with a
	// timeouts.backendRequest, for proxylessTimeoutGaps.
	backendTimeouts map[PolicyKey][]string
	// grpcRanks are GRPCRoute matches' ranks by path (grpcMethodPath).
	grpcRanks map[string]grpcRank
	warnings  []string
}

type portKey struct {
	svc  ir.ServiceKey
	port int32
}

// sortedByAge returns objs oldest first (then by namespace/name): when two
// policies conflict, the older wins, as in Gateway API.
func sortedByAge[T metav1.Object](objs []T) []T {
	out := append([]T(nil), objs...)
	sort.SliceStable(out, func(i, j int) bool { return older(out[i], out[j]) })
	return out
}
