// Package live reads the translator's inputs from a cluster: what
// weft-controller's watch store holds, read once, for `weft explain`
// without -f.
package live

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator"
)

// Inputs lists every object the translator reads, in every namespace. A
// kind whose CRD is not installed (Gateway API's HTTPRoute or GRPCRoute, often) is
// skipped with a note; the MeshConfig is the one named weft.
func Inputs(ctx context.Context, c client.Reader) (in *translator.Inputs, notes []string, err error) {
	in = &translator.Inputs{}
	list := func(kind string, l client.ObjectList) (bool, error) {
		if err := c.List(ctx, l); err != nil {
			if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
				notes = append(notes, fmt.Sprintf("%s: not served by this cluster (CRD not installed): none read", kind))
				return false, nil
			}
			return false, fmt.Errorf("listing %s: %w", kind, err)
		}
		return true, nil
	}
	var (
		nss    corev1.NamespaceList
		svcs   corev1.ServiceList
		slices discoveryv1.EndpointSliceList
		pods   corev1.PodList
		tss    v1alpha1.TrafficSplitList
		rps    v1alpha1.RetryPolicyList
		btps   v1alpha1.BackendTrafficPolicyList
		rlps   v1alpha1.RateLimitPolicyList
		aps    v1alpha1.AuthPolicyList
		hrs    gatewayv1.HTTPRouteList
		grs    gatewayv1.GRPCRouteList
		rgs    gatewayv1beta1.ReferenceGrantList
	)
	for _, x := range []struct {
		kind string
		l    client.ObjectList
		add  func()
	}{
		{"Namespaces", &nss, func() { in.Namespaces = ptrs(nss.Items) }},
		{"Services", &svcs, func() { in.Services = ptrs(svcs.Items) }},
		{"EndpointSlices", &slices, func() { in.EndpointSlices = ptrs(slices.Items) }},
		{"Pods", &pods, func() { in.Pods = ptrs(pods.Items) }},
		{"TrafficSplits", &tss, func() { in.TrafficSplits = ptrs(tss.Items) }},
		{"RetryPolicies", &rps, func() { in.RetryPolicies = ptrs(rps.Items) }},
		{"BackendTrafficPolicies", &btps, func() { in.BackendTrafficPolicies = ptrs(btps.Items) }},
		{"RateLimitPolicies", &rlps, func() { in.RateLimitPolicies = ptrs(rlps.Items) }},
		{"AuthPolicies", &aps, func() { in.AuthPolicies = ptrs(aps.Items) }},
		{"HTTPRoutes", &hrs, func() { in.HTTPRoutes = ptrs(hrs.Items) }},
		{"GRPCRoutes", &grs, func() { in.GRPCRoutes = ptrs(grs.Items) }},
		{"ReferenceGrants", &rgs, func() { in.ReferenceGrants = ptrs(rgs.Items) }},
	} {
		ok, err := list(x.kind, x.l)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			x.add()
		}
	}
	var mc v1alpha1.MeshConfig
	switch err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, &mc); {
	case err == nil:
		in.MeshConfig = &mc
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
	default:
		return nil, nil, fmt.Errorf("reading MeshConfig %s: %w", v1alpha1.MeshConfigName, err)
	}
	return in, notes, nil
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}
