package envoy_test

import (
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
)

// TestNamedTargetPortSurvivesFirstMember (12d): the xDS server builds one
// configuration per group of proxies with the same identity and labels,
// for the group's first member. A named targetPort was resolved at that
// member's own address, so once its pod went (or if a pod with the same
// service account connected first with forged addresses) the remaining
// replicas lost the port's inbound chains: no RBAC in Permissive mode,
// closed in Strict, while Programmed stayed True. The named port is
// resolved from every endpoint with the group's identity instead.
func TestNamedTargetPortSurvivesFirstMember(t *testing.T) {
	data, err := os.ReadFile("testdata/named-targetport.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in, err := translator.DecodeInputs(data)
	if err != nil {
		t.Fatal(err)
	}
	var first *corev1.Pod
	for _, p := range in.Pods {
		if p.Name == "web-a-0" {
			first = p
		}
	}
	// web-a-0, the group's first member, is gone: its EndpointSlice and
	// Pod leave; web-b-0 (same service account and labels) remains.
	var slices []*discoveryv1.EndpointSlice
	for _, s := range in.EndpointSlices {
		if s.Name != "web-a" {
			slices = append(slices, s)
		}
	}
	in.EndpointSlices = slices
	var pods []*corev1.Pod
	for _, p := range in.Pods {
		if p != first {
			pods = append(pods, p)
		}
	}
	in.Pods = pods
	r := envoy.Build(translator.Translate(in).Mesh, proxyOf(first))
	var chains []string
	for _, l := range r.Listeners {
		if l.Name != "inbound" {
			continue
		}
		for _, fc := range l.FilterChains {
			chains = append(chains, fc.Name)
		}
	}
	if !strings.Contains(strings.Join(chains, " "), "inbound|mtls|9090") {
		t.Fatalf("the group's inbound chains %v lost web-b-0's port 9090 when web-a-0 went", chains)
	}
}
