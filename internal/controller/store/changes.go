package store

import (
	"sort"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftmesh/weft/translator/ir"
)

// Kind is one kind of object the store watches; Kinds is a set of them.
type Kind uint16

// The watched kinds, in the order they appear in translator.Inputs.
const (
	KindNamespace Kind = 1 << iota
	KindService
	KindEndpointSlice
	KindPod
	KindTrafficSplit
	KindHTTPRoute
	KindRetryPolicy
	KindAuthPolicy
	KindMeshConfig
	KindBackendTrafficPolicy
	KindRateLimitPolicy
	KindGRPCRoute
	KindReferenceGrant

	kindEnd
)

// endpointKinds change nothing in a translation but Services' endpoints.
const endpointKinds = KindEndpointSlice | KindPod

var kindNames = map[Kind]string{
	KindNamespace:            "Namespace",
	KindService:              "Service",
	KindEndpointSlice:        "EndpointSlice",
	KindPod:                  "Pod",
	KindTrafficSplit:         "TrafficSplit",
	KindHTTPRoute:            "HTTPRoute",
	KindRetryPolicy:          "RetryPolicy",
	KindAuthPolicy:           "AuthPolicy",
	KindMeshConfig:           "MeshConfig",
	KindBackendTrafficPolicy: "BackendTrafficPolicy",
	KindRateLimitPolicy:      "RateLimitPolicy",
	KindGRPCRoute:            "GRPCRoute",
	KindReferenceGrant:       "ReferenceGrant",
}

// Has says whether every kind of k is in the set.
func (s Kind) Has(k Kind) bool { return s&k == k && k != 0 }

// each calls f for every kind in the set, in order.
func (s Kind) each(f func(Kind)) {
	for k := Kind(1); k < kindEnd; k <<= 1 {
		if s&k != 0 {
			f(k)
		}
	}
}

// String lists the kinds, such as "EndpointSlice,Pod".
func (s Kind) String() string {
	var names []string
	s.each(func(k Kind) { names = append(names, kindNames[k]) })
	return strings.Join(names, ",")
}

// Changes summarizes what a batch changed, so that the caller can do the
// least work: a full translation, or only endpoints.
type Changes struct {
	// Full is set on the first batch, after the caches synced: everything
	// is new, and Kinds lists every kind.
	Full bool
	// Kinds that had at least one significant change (status-only updates
	// and resyncs are not changes).
	Kinds Kind
	// EndpointsOnly is true when only EndpointSlices and Pods changed: the
	// mesh model is the previous one with the endpoints of Services
	// replaced (translator.UpdateEndpoints for each of Services).
	EndpointsOnly bool
	// Services whose endpoints may have changed: the Services of changed
	// EndpointSlices, and of slices that point at changed Pods. Sorted.
	// Filled whenever EndpointSlices or Pods changed, not only when
	// EndpointsOnly.
	Services []ir.ServiceKey
	// Pods added, changed or deleted, sorted: their proxies' views (labels,
	// IPs) may have changed.
	Pods []types.NamespacedName
	// ServiceAccountsGone are the ServiceAccounts deleted, sorted: their
	// streams must end (issue 13). ServiceAccounts are no translator
	// input: a batch with only these has no Kinds and translates nothing.
	ServiceAccountsGone []types.NamespacedName
}

// changeSet accumulates the changes of one pending batch.
type changeSet struct {
	kinds    Kind
	services map[ir.ServiceKey]struct{}
	pods     map[types.NamespacedName]struct{}
	saGone   map[types.NamespacedName]struct{}
}

func (c *changeSet) serviceAccountGone(key types.NamespacedName) {
	if c.saGone == nil {
		c.saGone = map[types.NamespacedName]struct{}{}
	}
	c.saGone[key] = struct{}{}
}

func (c *changeSet) add(k Kind) { c.kinds |= k }

// slice records a change to an EndpointSlice; old and new may name
// different Services if its label changed.
func (c *changeSet) slice(slices ...*discoveryv1.EndpointSlice) {
	c.kinds |= KindEndpointSlice
	for _, s := range slices {
		if s == nil {
			continue
		}
		if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
			if c.services == nil {
				c.services = map[ir.ServiceKey]struct{}{}
			}
			c.services[ir.ServiceKey{Namespace: s.Namespace, Name: name}] = struct{}{}
		}
	}
}

func (c *changeSet) pod(key types.NamespacedName) {
	c.kinds |= KindPod
	if c.pods == nil {
		c.pods = map[types.NamespacedName]struct{}{}
	}
	c.pods[key] = struct{}{}
}

// summary turns the set into Changes. slices are the current
// EndpointSlices: a changed Pod affects the Services whose slices point at
// it.
func (c *changeSet) summary(slices map[types.NamespacedName]*discoveryv1.EndpointSlice) Changes {
	ch := Changes{Kinds: c.kinds}
	ch.EndpointsOnly = c.kinds != 0 && c.kinds&^endpointKinds == 0
	services := c.services
	if len(c.pods) > 0 {
		if services == nil {
			services = map[ir.ServiceKey]struct{}{}
		}
		for _, s := range slices {
			name := s.Labels[discoveryv1.LabelServiceName]
			if name == "" {
				continue
			}
			for _, e := range s.Endpoints {
				if r := e.TargetRef; r != nil && r.Kind == "Pod" {
					if _, ok := c.pods[types.NamespacedName{Namespace: s.Namespace, Name: r.Name}]; ok {
						services[ir.ServiceKey{Namespace: s.Namespace, Name: name}] = struct{}{}
						break
					}
				}
			}
		}
	}
	for k := range services {
		ch.Services = append(ch.Services, k)
	}
	sort.Slice(ch.Services, func(i, j int) bool { return ch.Services[i].Less(ch.Services[j]) })
	for k := range c.pods {
		ch.Pods = append(ch.Pods, k)
	}
	sortKeys(ch.Pods)
	for k := range c.saGone {
		ch.ServiceAccountsGone = append(ch.ServiceAccountsGone, k)
	}
	sortKeys(ch.ServiceAccountsGone)
	return ch
}

func sortKeys(keys []types.NamespacedName) {
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Namespace != keys[j].Namespace {
			return keys[i].Namespace < keys[j].Namespace
		}
		return keys[i].Name < keys[j].Name
	})
}
