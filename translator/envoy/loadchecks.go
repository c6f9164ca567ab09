package envoy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// What Envoy refuses when it loads a resource, beyond protoc-gen-validate
// (which checks each field alone). Each check cites the Envoy function
// that rejects the configuration; a resource that fails one would be
// NACKed, so the xDS layer keeps the last good configuration instead
// (ValidateResource is on the push path).

// maxChainLeaves bounds the expansion of one listener's filter-chain
// matches into the leaves Envoy's matching tree would hold (the product of
// each chain's list lengths): 100,000, far above what weft generates (a
// TCP chain lists a Service's few cluster IPs), so that a pathological
// input cannot make validation itself slow.
const maxChainLeaves = 100_000

// Type URLs of the listener filters a filter-chain match needs.
const (
	tlsInspectorType  = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
	httpInspectorType = "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
)

// loadChecks runs the checks that apply to m's type.
func loadChecks(m proto.Message) error {
	switch r := m.(type) {
	case *listenerv3.Listener:
		return checkListener(r)
	case *clusterv3.Cluster:
		return checkCluster(r)
	case *routev3.RouteConfiguration:
		return checkRouteConfig(r)
	}
	return nil
}

func checkListener(l *listenerv3.Listener) error {
	var errs []error
	if err := checkChainMatches(l.GetFilterChains()); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkInspectors(l)...)
	chains := append([]*listenerv3.FilterChain(nil), l.GetFilterChains()...)
	if d := l.GetDefaultFilterChain(); d != nil {
		chains = append(chains, d)
	}
	for _, fc := range chains {
		if ts := fc.GetTransportSocket(); ts != nil {
			errs = append(errs, wrap(fmt.Sprintf("filter chain %q", fc.GetName()), checkDownstreamTLS(ts.GetTypedConfig())))
		}
		for _, f := range fc.GetFilters() {
			errs = append(errs, wrap(fmt.Sprintf("filter chain %q filter %s", fc.GetName(), f.GetName()), checkNetworkFilter(f.GetTypedConfig())))
		}
	}
	if api := l.GetApiListener().GetApiListener(); api != nil {
		errs = append(errs, wrap("api_listener", checkNetworkFilter(api)))
	}
	return errors.Join(errs...)
}

// checkChainMatches: no two filter chains of a listener may have the same
// match. FilterChainManagerImpl::addFilterChains builds a tree from every
// combination of a chain's match values and refuses a listener in which
// two chains reach the same leaf ("multiple filter chains with the same
// matching rules are defined", source/common/listener_manager/
// filter_chain_manager_impl.cc). Values are compared as Envoy stores
// them: an unset destination port is 0, an empty list one empty key, CIDR
// ranges masked, server names lower-cased.
func checkChainMatches(chains []*listenerv3.FilterChain) error {
	owner := map[string]string{}
	total := 0
	for _, fc := range chains {
		leaves := chainLeaves(fc.GetFilterChainMatch())
		total += len(leaves)
		if total > maxChainLeaves {
			return fmt.Errorf("filter chain matches expand to more than %d combinations", maxChainLeaves)
		}
		for _, leaf := range leaves {
			if prev, ok := owner[leaf]; ok && prev != fc.GetName() {
				return fmt.Errorf("filter chains %q and %q have the same match (Envoy refuses the listener: multiple filter chains with the same matching rules)", prev, fc.GetName())
			}
			owner[leaf] = fc.GetName()
		}
	}
	return nil
}

func chainLeaves(m *listenerv3.FilterChainMatch) []string {
	cidrs := func(rs []*corev3.CidrRange) []string {
		if len(rs) == 0 {
			return []string{""}
		}
		var out []string
		for _, r := range rs {
			a, err := netip.ParseAddr(r.GetAddressPrefix())
			if err != nil {
				out = append(out, r.GetAddressPrefix())
				continue
			}
			bits := a.BitLen()
			if r.GetPrefixLen() != nil {
				bits = int(r.GetPrefixLen().GetValue())
			}
			p, err := a.Prefix(bits)
			if err != nil {
				out = append(out, r.String())
				continue
			}
			out = append(out, p.String())
		}
		return out
	}
	strs := func(ss []string, lower bool) []string {
		if len(ss) == 0 {
			return []string{""}
		}
		out := make([]string, len(ss))
		for i, s := range ss {
			if lower {
				s = strings.ToLower(s)
			}
			out[i] = s
		}
		return out
	}
	ports := []string{""}
	if len(m.GetSourcePorts()) > 0 {
		ports = nil
		for _, p := range m.GetSourcePorts() {
			ports = append(ports, fmt.Sprint(p))
		}
	}
	levels := [][]string{
		{fmt.Sprint(m.GetDestinationPort().GetValue())},
		cidrs(m.GetPrefixRanges()),
		strs(m.GetServerNames(), true),
		{m.GetTransportProtocol()},
		strs(m.GetApplicationProtocols(), false),
		cidrs(m.GetDirectSourcePrefixRanges()),
		{m.GetSourceType().String()},
		cidrs(m.GetSourcePrefixRanges()),
		ports,
	}
	out := []string{""}
	for _, level := range levels {
		var next []string
		for _, prefix := range out {
			for _, v := range level {
				next = append(next, prefix+"|"+v)
			}
			if len(next) > maxChainLeaves {
				return next
			}
		}
		out = next
	}
	return out
}

// checkInspectors: a chain that matches on what only a listener filter
// can see needs that filter. transport_protocol "tls" and server_names are
// set by tls_inspector; application_protocols by tls_inspector (ALPN) or
// http_inspector (plaintext HTTP). Envoy injects a tls_inspector it finds
// missing for server names and "tls" (ListenerImpl's
// needTlsInspector, source/common/listener_manager/listener_impl.cc), but
// nothing ever sets ALPN without an inspector: such a chain silently never
// matches. weft states its listener filters explicitly: both are errors.
// A listener that binds no socket (bind_to_port false) only takes
// connections another listener hands it by use_original_dst, on the same
// socket, so what that listener's inspectors detected counts
// (ActiveTcpSocket::newConnection, docs/design/199): its application
// protocols need no inspector of its own.
func checkInspectors(l *listenerv3.Listener) []error {
	handedOff := l.GetBindToPort() != nil && !l.GetBindToPort().GetValue()
	tls, http := false, false
	for _, f := range l.GetListenerFilters() {
		switch f.GetTypedConfig().GetTypeUrl() {
		case tlsInspectorType:
			tls = true
		case httpInspectorType:
			http = true
		}
	}
	var errs []error
	for _, fc := range l.GetFilterChains() {
		m := fc.GetFilterChainMatch()
		switch {
		case (m.GetTransportProtocol() == "tls" || len(m.GetServerNames()) > 0) && !tls:
			errs = append(errs, fmt.Errorf("filter chain %q matches TLS (transport protocol or server names) but the listener has no tls_inspector", fc.GetName()))
		case len(m.GetApplicationProtocols()) > 0 && !tls && !http && !handedOff:
			errs = append(errs, fmt.Errorf("filter chain %q matches application protocols but the listener has neither tls_inspector nor http_inspector: it would never match", fc.GetName()))
		}
	}
	return errs
}

// checkDownstreamTLS: require_client_certificate needs a validation
// context to verify the certificate with (ServerContextConfigImpl:
// "TLS context has require_client_certificate ... but no validation
// context", source/common/tls/server_context_config_impl.cc).
func checkDownstreamTLS(a *anypb.Any) error {
	ctx := &tlsv3.DownstreamTlsContext{}
	if a.MessageIs(ctx) {
		if err := a.UnmarshalTo(ctx); err != nil {
			return err
		}
		if ctx.GetRequireClientCertificate().GetValue() && ctx.GetCommonTlsContext().GetValidationContextType() == nil {
			return errors.New("require_client_certificate without a validation context")
		}
	}
	return nil
}

// checkNetworkFilter: the network RBAC filter sees no HTTP request, and
// refuses rules about headers or paths (validateRbacRules in
// source/extensions/filters/network/rbac/config.cc: "Fail to create
// network RBAC filter with header/url_path matcher"); an HTTP connection
// manager's inline routes pass checkRouteConfig.
func checkNetworkFilter(a *anypb.Any) error {
	switch {
	case a.MessageIs(&rbacnetv3.RBAC{}):
		cfg := &rbacnetv3.RBAC{}
		if err := a.UnmarshalTo(cfg); err != nil {
			return err
		}
		for _, rules := range []*rbacv3.RBAC{cfg.GetRules(), cfg.GetShadowRules()} {
			for name, p := range rules.GetPolicies() {
				for _, perm := range p.GetPermissions() {
					if httpPermission(perm) {
						return fmt.Errorf("network RBAC policy %q matches headers or paths, which a network filter never sees", name)
					}
				}
				for _, id := range p.GetPrincipals() {
					if httpPrincipal(id) {
						return fmt.Errorf("network RBAC policy %q matches headers or paths, which a network filter never sees", name)
					}
				}
			}
		}
	case a.MessageIs(&hcmv3.HttpConnectionManager{}):
		h := &hcmv3.HttpConnectionManager{}
		if err := a.UnmarshalTo(h); err != nil {
			return err
		}
		if rc := h.GetRouteConfig(); rc != nil {
			return checkRouteConfig(rc)
		}
	}
	return nil
}

func httpPermission(p *rbacv3.Permission) bool {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Header, *rbacv3.Permission_UrlPath:
		return true
	case *rbacv3.Permission_AndRules:
		for _, q := range r.AndRules.GetRules() {
			if httpPermission(q) {
				return true
			}
		}
	case *rbacv3.Permission_OrRules:
		for _, q := range r.OrRules.GetRules() {
			if httpPermission(q) {
				return true
			}
		}
	case *rbacv3.Permission_NotRule:
		return httpPermission(r.NotRule)
	}
	return false
}

func httpPrincipal(p *rbacv3.Principal) bool {
	switch r := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Header, *rbacv3.Principal_UrlPath:
		return true
	case *rbacv3.Principal_AndIds:
		for _, q := range r.AndIds.GetIds() {
			if httpPrincipal(q) {
				return true
			}
		}
	case *rbacv3.Principal_OrIds:
		for _, q := range r.OrIds.GetIds() {
			if httpPrincipal(q) {
				return true
			}
		}
	case *rbacv3.Principal_NotId:
		return httpPrincipal(r.NotId)
	}
	return false
}

// checkCluster: the cluster's discovery type and its endpoints agree.
//
//   - ORIGINAL_DST takes its hosts from connections: lb_policy must be
//     CLUSTER_PROVIDED (ClusterInfoImpl, source/common/upstream/
//     upstream_impl.cc: "... is not valid for Cluster type ORIGINAL_DST")
//     and it has no load_assignment endpoints (OriginalDstCluster:
//     "ORIGINAL_DST clusters must have no load assignment configured").
//   - CLUSTER_PROVIDED is only valid for ORIGINAL_DST among the built-in
//     types (same ClusterInfoImpl check).
//   - EDS needs an eds_cluster_config with an eds_config (EdsClusterImpl:
//     "cannot create an EDS cluster without an EDS config").
//   - STATIC endpoints are IP literals (StaticClusterImpl resolves them
//     with Network::Address::resolveProtoAddress: "malformed IP address").
//   - upstream_bind_config holds at most one extra source address, of the
//     other IP version (checkBindConfig in source/common/upstream/
//     default_local_address_selector_factory.cc).
func checkCluster(c *clusterv3.Cluster) error {
	var errs []error
	t := c.GetType()
	switch {
	case t == clusterv3.Cluster_ORIGINAL_DST && c.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED:
		errs = append(errs, fmt.Errorf("ORIGINAL_DST cluster with lb_policy %s: only CLUSTER_PROVIDED is allowed", c.GetLbPolicy()))
	case t != clusterv3.Cluster_ORIGINAL_DST && c.GetClusterType() == nil && c.GetLbPolicy() == clusterv3.Cluster_CLUSTER_PROVIDED:
		errs = append(errs, fmt.Errorf("lb_policy CLUSTER_PROVIDED is only valid for ORIGINAL_DST clusters, not %s", t))
	}
	if t == clusterv3.Cluster_ORIGINAL_DST && len(c.GetLoadAssignment().GetEndpoints()) > 0 {
		errs = append(errs, errors.New("ORIGINAL_DST cluster with load_assignment endpoints: it takes its hosts from connections"))
	}
	if t == clusterv3.Cluster_EDS && c.GetEdsClusterConfig().GetEdsConfig() == nil {
		errs = append(errs, errors.New("EDS cluster without eds_cluster_config.eds_config"))
	}
	if t == clusterv3.Cluster_STATIC {
		for _, loc := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range loc.GetLbEndpoints() {
				if a := e.GetEndpoint().GetAddress().GetSocketAddress(); a != nil {
					if _, err := netip.ParseAddr(a.GetAddress()); err != nil {
						errs = append(errs, fmt.Errorf("STATIC cluster endpoint %q is not an IP address (use STRICT_DNS for names)", a.GetAddress()))
					}
				}
			}
		}
	}
	if b := c.GetUpstreamBindConfig(); b != nil {
		extra := b.GetExtraSourceAddresses()
		switch {
		case len(extra) > 1:
			errs = append(errs, errors.New("upstream_bind_config has more than one extra source address"))
		case len(extra) == 1:
			src, err1 := netip.ParseAddr(b.GetSourceAddress().GetAddress())
			ex, err2 := netip.ParseAddr(extra[0].GetAddress().GetAddress())
			if err1 == nil && err2 == nil && src.Unmap().Is4() == ex.Unmap().Is4() {
				errs = append(errs, errors.New("upstream_bind_config's extra source address has the same IP version as its source address"))
			}
		}
	}
	return errors.Join(errs...)
}

// checkRouteConfig: within a route configuration, a domain names one
// virtual host, compared case-insensitively, and "*" appears once
// (RouteMatcher's constructor in source/common/router/config_impl.cc:
// "Only unique values for domains are permitted", "Only a single
// wildcard domain is permitted"); retry back-off intervals are ordered.
func checkRouteConfig(rc *routev3.RouteConfiguration) error {
	var errs []error
	seen := map[string]string{}
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			k := strings.ToLower(d)
			if prev, ok := seen[k]; ok {
				if k == "*" {
					errs = append(errs, fmt.Errorf("virtual hosts %q and %q both have the wildcard domain *: only one is permitted", prev, vh.GetName()))
				} else {
					errs = append(errs, fmt.Errorf("domain %q is in virtual hosts %q and %q: domains must be unique (case-insensitive)", d, prev, vh.GetName()))
				}
				continue
			}
			seen[k] = vh.GetName()
		}
		errs = append(errs, wrap("virtual host "+vh.GetName(), checkRetry(vh.GetRetryPolicy())))
		for _, r := range vh.GetRoutes() {
			errs = append(errs, wrap(fmt.Sprintf("virtual host %s route %q", vh.GetName(), r.GetName()), checkRetry(r.GetRoute().GetRetryPolicy())))
		}
	}
	return errors.Join(errs...)
}

// checkRetry: a retry back-off's max_interval is not below its
// base_interval (RetryPolicyImpl, source/common/router/
// retry_policy_impl.cc: "max_interval must be greater than or equal to
// the base_interval").
func checkRetry(p *routev3.RetryPolicy) error {
	b := p.GetRetryBackOff()
	if b == nil || b.GetMaxInterval() == nil {
		return nil
	}
	if b.GetMaxInterval().AsDuration() < b.GetBaseInterval().AsDuration() {
		return fmt.Errorf("retry back-off max_interval %s is below base_interval %s", b.GetMaxInterval().AsDuration(), b.GetBaseInterval().AsDuration())
	}
	return nil
}

// ValidateBootstrap checks what Envoy requires of a sidecar's bootstrap
// beyond protoc-gen-validate: a config source that reaches the management
// server through an Envoy-managed gRPC client names a cluster defined
// statically in the bootstrap, and not an EDS one
// (Config::Utility::checkApiConfigSourceSubscriptionBackingCluster in
// source/common/config/utility.cc: "must have a statically defined non-EDS
// cluster"): a cluster that itself arrives over ADS could never connect.
func ValidateBootstrap(b *bootstrapv3.Bootstrap) error {
	static := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		static[c.GetName()] = c
	}
	check := func(what string, src *corev3.ApiConfigSource) error {
		for _, g := range src.GetGrpcServices() {
			name := g.GetEnvoyGrpc().GetClusterName()
			if name == "" {
				continue // google_grpc: no cluster
			}
			if c := static[name]; c == nil || c.GetType() == clusterv3.Cluster_EDS {
				return fmt.Errorf("%s: cluster %q must be defined statically in the bootstrap, and not be an EDS cluster", what, name)
			}
		}
		return nil
	}
	dr := b.GetDynamicResources()
	errs := []error{check("ads_config", dr.GetAdsConfig())}
	for what, cs := range map[string]*corev3.ConfigSource{"lds_config": dr.GetLdsConfig(), "cds_config": dr.GetCdsConfig()} {
		errs = append(errs, check(what, cs.GetApiConfigSource()))
	}
	return errors.Join(errs...)
}
