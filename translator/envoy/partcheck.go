package envoy

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// setSummary is what CheckConsistency needs of one Set to check it
// beside another without reading it again: the names it provides, what
// it needs that it does not provide itself, and whether it has a mistake
// of its own. A Part's is made once (Part.summary) and serves every group
// of its view entry, whose own Set is a few resources: checking a group
// then costs what its own resources cost, not the 8,000 of the whole
// (docs/design/190).
type setSummary struct {
	clusters  map[string]bool // name → is an EDS cluster
	endpoints map[string]bool
	routes    map[string]bool
	listeners map[string]bool
	addrs     map[listenerAt]bool
	// needs are what the set requires of another, each once.
	needs []need
	// bad: the set fails on its own (a resource defined twice, a
	// filter's own mistake, an endpoint without locality, an EDS cluster
	// of the set given endpoints as another type…).
	bad bool
}

// listenerAt is one socket address a listener binds.
type listenerAt struct {
	addr string
	port uint32
}

type need struct {
	kind needKind
	name string
}

type needKind uint8

const (
	needCluster    needKind = iota // a cluster of any type
	needEDSCluster                 // an EDS cluster (for endpoints)
	needEndpoints                  // endpoints (for an EDS cluster)
	needRoute                      // a route configuration (RDS)
)

// summary is p's setSummary, made once.
func (p *Part) summary() *setSummary {
	return p.sum.get(func() *setSummary { return summarize(p.Set) })
}

// summarize reads s as CheckConsistency does, recording what it lacks
// instead of failing on it.
func summarize(s Set) *setSummary {
	m := &setSummary{clusters: make(map[string]bool, len(s.Clusters)), endpoints: make(map[string]bool, len(s.Endpoints)),
		routes: make(map[string]bool, len(s.Routes)), listeners: make(map[string]bool, len(s.Listeners)), addrs: make(map[listenerAt]bool, len(s.Listeners))}
	var needs []need
	for _, c := range s.Clusters {
		if _, dup := m.clusters[c.Name]; dup {
			m.bad = true
		}
		eds := c.GetType() == clusterv3.Cluster_EDS
		m.clusters[c.Name] = eds
		if eds {
			needs = append(needs, need{needEndpoints, c.Name})
		}
	}
	for _, e := range s.Endpoints {
		m.endpoints[e.ClusterName] = true
		for _, loc := range e.Endpoints {
			if loc.Locality == nil || loc.LoadBalancingWeight.GetValue() == 0 {
				m.bad = true
			}
		}
		needs = append(needs, need{needEDSCluster, e.ClusterName})
	}
	require := func(c checks) {
		for _, q := range c {
			switch q.kind {
			case fails:
				m.bad = true
			case rdsRoute:
				needs = append(needs, need{needRoute, q.name})
			default:
				needs = append(needs, need{needCluster, q.name})
			}
		}
	}
	for _, rc := range s.Routes {
		m.routes[rc.Name] = true
		var c checks
		c.routeClusters(rc)
		require(c)
	}
	at := func(a *corev3.Address) {
		sa := a.GetSocketAddress()
		if sa == nil {
			return
		}
		k := listenerAt{sa.GetAddress(), sa.GetPortValue()}
		if m.addrs[k] {
			m.bad = true
		}
		m.addrs[k] = true
	}
	for _, l := range s.Listeners {
		if m.listeners[l.Name] {
			m.bad = true
		}
		m.listeners[l.Name] = true
		at(l.GetAddress())
		for _, a := range l.GetAdditionalAddresses() {
			at(a.GetAddress())
		}
		lc := compiledListener(l)
		if lc.api != nil {
			require(lc.api)
		}
		if l.GetAddress() != nil && len(lc.chains) == 0 {
			m.bad = true
		}
		for _, fc := range lc.chains {
			for _, f := range fc.filters {
				require(f)
			}
		}
	}
	// Keep what the set does not provide itself, once each.
	seen := make(map[need]bool)
	for _, q := range needs {
		switch has, ok := m.provides(q); {
		case has && !ok:
			m.bad = true
		case !has && !seen[q]:
			seen[q] = true
			m.needs = append(m.needs, q)
		}
	}
	return m
}

// provides says whether m has what q names (has), and whether that is
// what q needs (ok: false for endpoints whose cluster is not EDS).
func (m *setSummary) provides(q need) (has, ok bool) {
	switch q.kind {
	case needCluster:
		_, has = m.clusters[q.name]
		return has, has
	case needEDSCluster:
		eds, has := m.clusters[q.name]
		return has, eds
	case needEndpoints:
		has = m.endpoints[q.name]
		return has, has
	default:
		has = m.routes[q.name]
		return has, has
	}
}

// consistentBeside says that a set made of common's and own's resources
// passes CheckConsistency: neither fails on its own, no name (or listener
// address) is in both, and each provides what the other needs. False
// means only "not shown": CheckConsistency then checks the whole set and
// reports what is wrong, as it would have without the parts.
func consistentBeside(common, own *setSummary) bool {
	if common.bad || own.bad {
		return false
	}
	if overlaps(own.clusters, common.clusters) || overlaps(own.endpoints, common.endpoints) || overlaps(own.routes, common.routes) ||
		overlaps(own.listeners, common.listeners) || overlaps(own.addrs, common.addrs) {
		return false
	}
	for _, pair := range [2][2]*setSummary{{common, own}, {own, common}} {
		for _, q := range pair[0].needs {
			if _, ok := pair[1].provides(q); !ok {
				return false
			}
		}
	}
	return true
}

// overlaps says whether a key of a is in b (a is the smaller).
func overlaps[K comparable, V any](a map[K]V, b map[K]V) bool {
	for k := range a {
		if _, ok := b[k]; ok {
			return true
		}
	}
	return false
}
