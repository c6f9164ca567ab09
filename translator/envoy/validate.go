package envoy

import (
	"errors"
	"fmt"

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
func (r *Resources) CheckConsistency() error {
	var errs []error
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range r.Clusters {
		if clusters[c.Name] != nil {
			errs = append(errs, fmt.Errorf("cluster %q: defined twice", c.Name))
		}
		clusters[c.Name] = c
	}
	endpoints := map[string]bool{}
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
	routes := map[string]bool{}
	for _, rc := range r.Routes {
		routes[rc.Name] = true
		errs = append(errs, wrap("route "+rc.Name, checkRouteClusters(rc, clusters)))
	}
	// Envoy refuses a listener whose name or address another listener has
	// ("duplicate address"), and use_original_dst hands a connection to
	// the one listener bound to its destination (docs/design/182): each
	// name and each socket address once.
	names, addrs := map[string]bool{}, map[string]string{}
	for _, l := range r.Listeners {
		if names[l.Name] {
			errs = append(errs, fmt.Errorf("listener %q: defined twice", l.Name))
		}
		names[l.Name] = true
		as := []*corev3.Address{l.GetAddress()}
		for _, a := range l.GetAdditionalAddresses() {
			as = append(as, a.GetAddress())
		}
		for _, a := range as {
			sa := a.GetSocketAddress()
			if sa == nil {
				continue
			}
			k := fmt.Sprintf("%s|%d", sa.GetAddress(), sa.GetPortValue())
			if prev, ok := addrs[k]; ok {
				errs = append(errs, fmt.Errorf("listeners %q and %q: both at %s port %d", prev, l.Name, sa.GetAddress(), sa.GetPortValue()))
			}
			addrs[k] = l.Name
		}
	}
	for _, l := range r.Listeners {
		if api := l.GetApiListener().GetApiListener(); api != nil {
			errs = append(errs, wrap("listener "+l.Name, checkFilter(&listenerv3.Filter{Name: "api_listener", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: api}}, routes, clusters)))
		}
		chains := append([]*listenerv3.FilterChain(nil), l.FilterChains...)
		if l.DefaultFilterChain != nil {
			chains = append(chains, l.DefaultFilterChain)
		}
		if l.GetAddress() != nil && len(chains) == 0 {
			// Envoy rejects it: "no filter chains specified".
			errs = append(errs, fmt.Errorf("listener %s: a listener with an address needs a filter chain or a default filter chain", l.Name))
		}
		for _, fc := range chains {
			for _, f := range fc.Filters {
				errs = append(errs, wrap(fmt.Sprintf("listener %s chain %q", l.Name, fc.Name), checkFilter(f, routes, clusters)))
			}
		}
	}
	return errors.Join(errs...)
}

func checkFilter(f *listenerv3.Filter, routes map[string]bool, clusters map[string]*clusterv3.Cluster) error {
	msg, err := f.GetTypedConfig().UnmarshalNew()
	if err != nil {
		return fmt.Errorf("filter %s: %w", f.Name, err)
	}
	switch m := msg.(type) {
	case *hcmv3.HttpConnectionManager:
		if m.StatPrefix == "" {
			return errors.New("the HTTP connection manager needs a stat_prefix (gRPC rejects it otherwise)")
		}
		if n := len(m.HttpFilters); n == 0 || m.HttpFilters[n-1].Name != "envoy.filters.http.router" {
			return errors.New("the HTTP filters must end with the router")
		}
		if rds := m.GetRds(); rds != nil && !routes[rds.RouteConfigName] {
			return fmt.Errorf("RDS route configuration %q does not exist", rds.RouteConfigName)
		}
		if rc := m.GetRouteConfig(); rc != nil {
			return checkRouteClusters(rc, clusters)
		}
	case *tcpproxyv3.TcpProxy:
		if c := m.GetCluster(); c != "" && clusters[c] == nil {
			return fmt.Errorf("TCP proxy cluster %q does not exist", c)
		}
		if wc := m.GetWeightedClusters(); wc != nil {
			var sum uint32
			for _, c := range wc.Clusters {
				sum += c.Weight
				if clusters[c.Name] == nil {
					return fmt.Errorf("TCP proxy cluster %q does not exist", c.Name)
				}
			}
			if sum == 0 {
				return errors.New("TCP proxy weights sum to 0")
			}
		}
	}
	return nil
}

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
