package xdsload

import (
	"hash/maphash"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// isWildcardType: by the xDS protocol, clusters and listeners are
// wildcard types, endpoints and route configurations are named.
func isWildcardType(t string) bool {
	return t == resourcev3.ClusterType || t == resourcev3.ListenerType
}

// followed is what a proxy in ByName mode subscribed to by name: the EDS
// names each held cluster gives and the RDS names each held listener gives.
type followed struct {
	// by owner type → owner resource name → the names it needs.
	owners map[string]map[string][]string
	// subscribed per named type → name → count of owners naming it.
	subscribed map[string]map[string]int
}

func newFollowed() *followed {
	return &followed{
		owners:     map[string]map[string][]string{resourcev3.ClusterType: {}, resourcev3.ListenerType: {}},
		subscribed: map[string]map[string]int{resourcev3.EndpointType: {}, resourcev3.RouteType: {}},
	}
}

// update takes a response to apply and returns the subscription requests
// it calls for (none for endpoints and routes).
func (f *followed) update(r *discoveryv3.DeltaDiscoveryResponse) []*discoveryv3.DeltaDiscoveryRequest {
	var named string
	switch r.TypeUrl {
	case resourcev3.ClusterType:
		named = resourcev3.EndpointType
	case resourcev3.ListenerType:
		named = resourcev3.RouteType
	default:
		return nil
	}
	owners, subs := f.owners[r.TypeUrl], f.subscribed[named]
	if len(owners) == 0 && len(subs) == 0 {
		// Sized for the first response (see Proxy.Run's held).
		owners, subs = make(map[string][]string, len(r.Resources)), make(map[string]int, len(r.Resources))
		f.owners[r.TypeUrl], f.subscribed[named] = owners, subs
	}
	var add, drop []string
	release := func(owner string) {
		for _, n := range owners[owner] {
			if subs[n]--; subs[n] <= 0 {
				delete(subs, n)
				drop = append(drop, n)
			}
		}
		delete(owners, owner)
	}
	for _, res := range r.Resources {
		release(res.Name)
		var needs []string
		if r.TypeUrl == resourcev3.ClusterType {
			needs = clusterNames.get(res.GetResource().GetValue(), edsNames)
		} else {
			needs = listenerNames.get(res.GetResource().GetValue(), rdsNames)
		}
		owners[res.Name] = needs
		for _, n := range needs {
			if subs[n]++; subs[n] == 1 {
				add = append(add, n)
			}
		}
	}
	for _, n := range r.RemovedResources {
		release(n)
	}
	// A name released and named again in one response stays subscribed:
	// neither added nor dropped. (By a set: a first cluster response of
	// 5,000 names made a quadratic scan the harness's largest cost.)
	if len(add) > 0 && len(drop) > 0 {
		dropped := make(map[string]bool, len(drop))
		for _, n := range drop {
			dropped[n] = true
		}
		both := map[string]bool{}
		for _, n := range add {
			if dropped[n] {
				both[n] = true
			}
		}
		if len(both) > 0 {
			in := func(n string) bool { return both[n] }
			add, drop = slices.DeleteFunc(add, in), slices.DeleteFunc(drop, in)
		}
	}
	if len(add) == 0 && len(drop) == 0 {
		return nil
	}
	slices.Sort(add)
	slices.Sort(drop)
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: named, ResourceNamesSubscribe: add, ResourceNamesUnsubscribe: drop}
	return []*discoveryv3.DeltaDiscoveryRequest{req}
}

// namesCache remembers the names an encoded resource gives, by a hash of
// its bytes, for every simulated proxy of the process: proxies that see
// the same clusters and listeners receive the same bytes, and a listener
// with a filter chain per Service (weft) or per port (istiod) is costly
// to decode once per proxy on the cores the measured control plane uses.
// The slices it returns are shared: read only.
type namesCache struct {
	mu sync.Mutex
	m  map[uint64][]string
}

var (
	clusterNames, listenerNames namesCache
	namesSeed                   = maphash.MakeSeed()
)

// get returns decode(b), computed once per distinct b (up to 64Ki
// entries, then the cache starts over).
func (c *namesCache) get(b []byte, decode func([]byte) []string) []string {
	h := maphash.Bytes(namesSeed, b)
	c.mu.Lock()
	v, ok := c.m[h]
	c.mu.Unlock()
	if ok {
		return v
	}
	v = decode(b)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= 1<<16 {
		c.m = map[uint64][]string{}
	}
	c.m[h] = v
	c.mu.Unlock()
	return v
}

// edsNames is the EDS resource an encoded cluster of type EDS names.
func edsNames(b []byte) []string {
	var c clusterv3.Cluster
	if proto.Unmarshal(b, &c) != nil || c.GetType() != clusterv3.Cluster_EDS {
		return nil
	}
	if n := c.GetEdsClusterConfig().GetServiceName(); n != "" {
		return []string{n}
	}
	return []string{c.Name}
}

// rdsNames are the route configurations an encoded listener's HTTP
// connection managers fetch by RDS.
func rdsNames(b []byte) []string {
	var l listenerv3.Listener
	if proto.Unmarshal(b, &l) != nil {
		return nil
	}
	var out []string
	chains := l.FilterChains
	if l.DefaultFilterChain != nil {
		chains = append(chains, l.DefaultFilterChain)
	}
	for _, fc := range chains {
		for _, f := range fc.Filters {
			if f.GetTypedConfig().GetTypeUrl() != "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" {
				continue
			}
			var h hcmv3.HttpConnectionManager
			if f.GetTypedConfig().UnmarshalTo(&h) != nil {
				continue
			}
			if n := h.GetRds().GetRouteConfigName(); n != "" && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	if h := l.GetApiListener().GetApiListener(); h != nil {
		var hc hcmv3.HttpConnectionManager
		if h.UnmarshalTo(&hc) == nil {
			if n := hc.GetRds().GetRouteConfigName(); n != "" && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}
