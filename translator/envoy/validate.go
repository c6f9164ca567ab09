package envoy

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"weak"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Validate checks a proxy's resources before anything is sent: each one
// passes protoc-gen-validate, including the typed configs packed in Any
// fields (which ValidateAll does not open), and the set is consistent:
// every RDS name has a route configuration, every route and TCP proxy names
// a cluster that exists, every EDS cluster has endpoints, and no weighted
// split sums to zero. An error names the offending resource; it is a bug in
// weft, never the user's.
func (r *Resources) Validate() error {
	errs := []error{r.CheckConsistency()}
	for _, c := range r.Clusters {
		errs = append(errs, wrap("cluster "+c.Name, ValidateResource(c)))
	}
	for _, e := range r.Endpoints {
		errs = append(errs, wrap("endpoints "+e.ClusterName, ValidateResource(e)))
	}
	for _, rc := range r.Routes {
		errs = append(errs, wrap("route "+rc.Name, ValidateResource(rc)))
	}
	for _, l := range r.Listeners {
		errs = append(errs, wrap("listener "+l.Name, ValidateResource(l)))
	}
	return errors.Join(errs...)
}

// ValidateResource runs protoc-gen-validate on one resource and on every
// message packed in an Any inside it. The xDS server calls it only for
// resources whose encoding changed, since it costs more than building.
//
// It also runs the checks Envoy makes when it loads a resource
// (loadchecks.go): what passes field validation but would still be NACKed.
func ValidateResource(m proto.Message) error {
	if cla, ok := m.(*endpointv3.ClusterLoadAssignment); ok {
		// No Any inside endpoints: skip the reflective walk, which would
		// visit every endpoint.
		return cla.ValidateAll()
	}
	return errors.Join(validateDeep(m), loadChecks(m))
}

// CheckConsistency checks the set as a whole: every RDS name has a route
// configuration, every route and TCP proxy names a cluster that exists,
// every EDS cluster has endpoints, no weighted split sums to zero, every
// locality is set, every listener with an address has a filter chain, and
// no two listeners share a name or an address.
//
// What a listener's filters require (the names they reference, their
// own mistakes) is read from their packed configurations once per
// listener message with many chains (compiledListener): the outbound
// listener of 2,000 Services is shared by every group that reaches them,
// and unpacking its 2,000 connection managers for each group's check was
// a sixth of a cold start's CPU (docs/design/184). Only the lookups of
// those names in each set are done per check.
//
// A group's resources built through a Shared are its view entry's Part
// and its own few (Common, Own): the Part's requirements are read once
// (Part.summary), and a group's check looks up only what its own
// resources and the Part need of each other (consistentBeside). When that
// does not show the set consistent, the whole set is checked as below, so
// the error is the same either way.
func (r *Resources) CheckConsistency() error {
	if r.Common != nil && r.partsCover() && consistentBeside(r.Common.summary(), summarize(r.Own)) {
		return nil
	}
	var errs []error
	clusters := make(map[string]*clusterv3.Cluster, len(r.Clusters))
	for _, c := range r.Clusters {
		if clusters[c.Name] != nil {
			errs = append(errs, fmt.Errorf("cluster %q: defined twice", c.Name))
		}
		clusters[c.Name] = c
	}
	endpoints := make(map[string]bool, len(r.Endpoints))
	for _, e := range r.Endpoints {
		endpoints[e.ClusterName] = true
		for _, loc := range e.Endpoints {
			if loc.Locality == nil || loc.LoadBalancingWeight.GetValue() == 0 {
				errs = append(errs, fmt.Errorf("endpoints %s: every locality needs a locality and a positive weight (gRPC rejects them otherwise)", e.ClusterName))
			}
		}
		if c := clusters[e.ClusterName]; c == nil || c.GetType() != clusterv3.Cluster_EDS {
			errs = append(errs, fmt.Errorf("endpoints %s: no EDS cluster of that name", e.ClusterName))
		}
	}
	for _, c := range r.Clusters {
		if c.GetType() == clusterv3.Cluster_EDS && !endpoints[c.Name] {
			errs = append(errs, fmt.Errorf("cluster %s: EDS cluster without endpoints", c.Name))
		}
	}
	routes := make(map[string]bool, len(r.Routes))
	for _, rc := range r.Routes {
		routes[rc.Name] = true
		errs = append(errs, wrap("route "+rc.Name, checkRouteClusters(rc, clusters)))
	}
	errs = append(errs, checkListenerAddresses(r.Listeners)...)
	for _, l := range r.Listeners {
		lc := compiledListener(l)
		if lc.api != nil {
			errs = append(errs, wrap("listener "+l.Name, lc.api.check(routes, clusters)))
		}
		if l.GetAddress() != nil && len(lc.chains) == 0 {
			// Envoy rejects it: "no filter chains specified".
			errs = append(errs, fmt.Errorf("listener %s: a listener with an address needs a filter chain or a default filter chain", l.Name))
		}
		for _, fc := range lc.chains {
			for _, f := range fc.filters {
				if err := f.check(routes, clusters); err != nil {
					errs = append(errs, wrap(fmt.Sprintf("listener %s chain %q", l.Name, fc.name), err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Parts returns Common and Own when they still describe the lists
// (partsCover), else ok is false: use the lists.
func (r *Resources) Parts() (common *Part, own Set, ok bool) {
	if r.Common == nil || !r.partsCover() {
		return nil, Set{}, false
	}
	return r.Common, r.Own, true
}

// partsCover says whether Common and Own still hold as many resources as
// the lists: a set edited since its build (Common not cleared) is checked
// whole.
func (r *Resources) partsCover() bool {
	c, o := r.Common, r.Own
	return len(r.Clusters) == len(c.Clusters)+len(o.Clusters) && len(r.Endpoints) == len(c.Endpoints)+len(o.Endpoints) &&
		len(r.Listeners) == len(c.Listeners)+len(o.Listeners) && len(r.Routes) == len(c.Routes)+len(o.Routes)
}

func checkFilter(f *listenerv3.Filter, routes map[string]bool, clusters map[string]*clusterv3.Cluster) error {
	return compileFilter(f).check(routes, clusters)
}

// checkRouteClusters is the check of routeClusters' requirements, without
// collecting them first (a proxy's ~2,000 route configurations are checked
// directly: nothing to unpack).
func checkRouteClusters(rc *routev3.RouteConfiguration, clusters map[string]*clusterv3.Cluster) error {
	for _, vh := range rc.VirtualHosts {
		for _, rt := range vh.Routes {
			a := rt.GetRoute()
			if a == nil {
				continue
			}
			if c := a.GetCluster(); c != "" && clusters[c] == nil {
				return fmt.Errorf("virtual host %s: cluster %q does not exist", vh.Name, c)
			}
			for _, m := range a.GetRequestMirrorPolicies() {
				if clusters[m.GetCluster()] == nil {
					return fmt.Errorf("virtual host %s: mirror cluster %q does not exist", vh.Name, m.GetCluster())
				}
			}
			if wc := a.GetWeightedClusters(); wc != nil {
				var sum uint32
				for _, c := range wc.Clusters {
					sum += c.Weight.GetValue()
					if clusters[c.Name] == nil {
						return fmt.Errorf("virtual host %s: cluster %q does not exist", vh.Name, c.Name)
					}
				}
				if sum == 0 {
					return fmt.Errorf("virtual host %s: weights sum to 0", vh.Name)
				}
			}
		}
	}
	return nil
}

// checks are what one filter (or route configuration) requires of the set
// it is in, in the order the check reads them: the first that fails is
// its error.
type checks []requirement

// requirement is one: a name that must exist, or an error of the filter
// itself (kind fails).
type requirement struct {
	kind requirementKind
	// name: the route configuration or cluster named; vh: the virtual host
	// naming it.
	name, vh string
	err      error // kind fails
}

type requirementKind uint8

const (
	fails         requirementKind = iota // always: err
	rdsRoute                             // an RDS route configuration
	vhostCluster                         // a route's (or weighted) cluster
	mirrorCluster                        // a route's mirror cluster
	tcpCluster                           // a TCP proxy's cluster
)

// check returns the first requirement the set (routes, clusters) does not
// meet, as an error.
func (c checks) check(routes map[string]bool, clusters map[string]*clusterv3.Cluster) error {
	for _, q := range c {
		switch q.kind {
		case fails:
			return q.err
		case rdsRoute:
			if !routes[q.name] {
				return fmt.Errorf("RDS route configuration %q does not exist", q.name)
			}
		case vhostCluster:
			if clusters[q.name] == nil {
				return fmt.Errorf("virtual host %s: cluster %q does not exist", q.vh, q.name)
			}
		case mirrorCluster:
			if clusters[q.name] == nil {
				return fmt.Errorf("virtual host %s: mirror cluster %q does not exist", q.vh, q.name)
			}
		case tcpCluster:
			if clusters[q.name] == nil {
				return fmt.Errorf("TCP proxy cluster %q does not exist", q.name)
			}
		}
	}
	return nil
}

// compileFilter reads what a listener filter requires from its packed
// configuration.
func compileFilter(f *listenerv3.Filter) checks {
	msg, err := f.GetTypedConfig().UnmarshalNew()
	if err != nil {
		return checks{{kind: fails, err: fmt.Errorf("filter %s: %w", f.Name, err)}}
	}
	var c checks
	switch m := msg.(type) {
	case *hcmv3.HttpConnectionManager:
		if m.StatPrefix == "" {
			return append(c, requirement{kind: fails, err: errors.New("the HTTP connection manager needs a stat_prefix (gRPC rejects it otherwise)")})
		}
		if n := len(m.HttpFilters); n == 0 || m.HttpFilters[n-1].Name != "envoy.filters.http.router" {
			return append(c, requirement{kind: fails, err: errors.New("the HTTP filters must end with the router")})
		}
		if rds := m.GetRds(); rds != nil {
			c = append(c, requirement{kind: rdsRoute, name: rds.RouteConfigName})
		}
		if rc := m.GetRouteConfig(); rc != nil {
			c.routeClusters(rc)
		}
	case *tcpproxyv3.TcpProxy:
		if name := m.GetCluster(); name != "" {
			c = append(c, requirement{kind: tcpCluster, name: name})
		}
		if wc := m.GetWeightedClusters(); wc != nil {
			var sum uint32
			for _, w := range wc.Clusters {
				sum += w.Weight
				c = append(c, requirement{kind: tcpCluster, name: w.Name})
			}
			if sum == 0 {
				c = append(c, requirement{kind: fails, err: errors.New("TCP proxy weights sum to 0")})
			}
		}
	}
	return c
}

// routeClusters appends what a route configuration requires: the
// clusters its routes name, and weights that do not sum to 0 (what
// checkRouteClusters checks).
func (c *checks) routeClusters(rc *routev3.RouteConfiguration) {
	for _, vh := range rc.VirtualHosts {
		for _, rt := range vh.Routes {
			a := rt.GetRoute()
			if a == nil {
				continue
			}
			if name := a.GetCluster(); name != "" {
				*c = append(*c, requirement{kind: vhostCluster, name: name, vh: vh.Name})
			}
			for _, m := range a.GetRequestMirrorPolicies() {
				*c = append(*c, requirement{kind: mirrorCluster, name: m.GetCluster(), vh: vh.Name})
			}
			if wc := a.GetWeightedClusters(); wc != nil {
				var sum uint32
				for _, w := range wc.Clusters {
					sum += w.Weight.GetValue()
					*c = append(*c, requirement{kind: vhostCluster, name: w.Name, vh: vh.Name})
				}
				if sum == 0 {
					*c = append(*c, requirement{kind: fails, err: fmt.Errorf("virtual host %s: weights sum to 0", vh.Name)})
				}
			}
		}
	}
}

// listenerChecks are what a listener's filters require: its API
// listener's (nil if it has none), and each filter's of each filter chain
// (the default chain last).
type listenerChecks struct {
	api    checks
	chains []chainChecks
}

type chainChecks struct {
	name    string
	filters []checks
}

// compileListener reads what l's filters require.
func compileListener(l *listenerv3.Listener) *listenerChecks {
	lc := &listenerChecks{}
	if api := l.GetApiListener().GetApiListener(); api != nil {
		lc.api = compileFilter(&listenerv3.Filter{Name: "api_listener", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: api}})
		if lc.api == nil {
			lc.api = checks{} // has one, requiring nothing
		}
	}
	chains := l.FilterChains
	if l.DefaultFilterChain != nil {
		chains = append(chains[:len(chains):len(chains)], l.DefaultFilterChain)
	}
	lc.chains = make([]chainChecks, len(chains))
	for i, fc := range chains {
		lc.chains[i] = chainChecks{name: fc.Name, filters: make([]checks, len(fc.Filters))}
		for j, f := range fc.Filters {
			lc.chains[i].filters[j] = compileFilter(f)
		}
	}
	return lc
}

// checkListenerAddresses: Envoy refuses a listener whose name or address
// another listener has ("duplicate address"), and use_original_dst hands
// a connection to the one listener bound to its destination
// (docs/design/182): each name and each socket address once.
func checkListenerAddresses(listeners []*listenerv3.Listener) []error {
	// Run for every group's ~2,000 listeners: keys are structs, not
	// formatted strings, and the maps are sized once.
	type at struct {
		addr string
		port uint32
	}
	var errs []error
	names, addrs := make(map[string]bool, len(listeners)), make(map[at]string, len(listeners))
	check := func(l *listenerv3.Listener, a *corev3.Address) {
		sa := a.GetSocketAddress()
		if sa == nil {
			return
		}
		k := at{sa.GetAddress(), sa.GetPortValue()}
		if prev, ok := addrs[k]; ok {
			errs = append(errs, fmt.Errorf("listeners %q and %q: both at %s port %d", prev, l.Name, k.addr, k.port))
		}
		addrs[k] = l.Name
	}
	for _, l := range listeners {
		if names[l.Name] {
			errs = append(errs, fmt.Errorf("listener %q: defined twice", l.Name))
		}
		names[l.Name] = true
		check(l, l.GetAddress())
		for _, a := range l.GetAdditionalAddresses() {
			check(l, a.GetAddress())
		}
	}
	return errs
}

// compiledListenerChains is how many filter chains make a listener's
// checks worth remembering: a capture listener may have one per headless
// endpoint or refused Service; a proxy's own listeners, built per group,
// have a few. A Service port's listener (bind_to_port false,
// docs/design/182) has two, but one message serves every group that
// holds the Service: 2,000 of them would be unpacked again for each
// group's check, so those are always remembered (rememberChecks).
const compiledListenerChains = 32

// rememberChecks says whether a listener's checks are worth keeping.
func rememberChecks(l *listenerv3.Listener) bool {
	return len(l.FilterChains) >= compiledListenerChains || (l.GetBindToPort() != nil && !l.GetBindToPort().GetValue())
}

// compiledListeners remembers the checks of large listener messages, as
// long as the message lives (weak keys; an entry goes with its message).
// Messages are never modified once built (Shared), so a message's checks
// are its checks for good.
var compiledListeners = struct {
	mu sync.Mutex
	m  map[weak.Pointer[listenerv3.Listener]]*cell[*listenerChecks]
}{m: map[weak.Pointer[listenerv3.Listener]]*cell[*listenerChecks]{}}

// compiledListener is compileListener, once per large listener message
// (concurrent checks of one wait for the first).
func compiledListener(l *listenerv3.Listener) *listenerChecks {
	if !rememberChecks(l) {
		return compileListener(l)
	}
	k := weak.Make(l)
	cl := &compiledListeners
	cl.mu.Lock()
	c := cl.m[k]
	if c == nil {
		c = &cell[*listenerChecks]{}
		cl.m[k] = c
		runtime.AddCleanup(l, func(k weak.Pointer[listenerv3.Listener]) {
			cl.mu.Lock()
			defer cl.mu.Unlock()
			delete(cl.m, k)
		}, k)
	}
	cl.mu.Unlock()
	return c.get(func() *listenerChecks { return compileListener(l) })
}

type validator interface{ ValidateAll() error }

// validateDeep runs ValidateAll on m and on every message packed in an Any
// anywhere inside it.
func validateDeep(m proto.Message) error {
	var errs []error
	if v, ok := m.(validator); ok {
		errs = append(errs, v.ValidateAll())
	}
	walkAny(m.ProtoReflect(), func(a *anypb.Any) {
		inner, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.TypeUrl, err))
			return
		}
		errs = append(errs, wrap(a.TypeUrl, validateDeep(inner)))
	})
	return errors.Join(errs...)
}

// walkAny calls fn for each Any directly inside m (not inside those Anys:
// validateDeep recurses into them after unpacking).
func walkAny(m protoreflect.Message, fn func(*anypb.Any)) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		fn(a)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walkAny(l.Get(i).Message(), fn)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				walkAny(mv.Message(), fn)
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			walkAny(v.Message(), fn)
		}
		return true
	})
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}
