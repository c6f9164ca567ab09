package sim

import (
	"fmt"
	"net/netip"
	"strings"

	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// rbacPrefixes are an RBAC filter's rules_stat_prefix and
// shadow_rules_stat_prefix, which also prefix its dynamic metadata keys.
type rbacPrefixes struct{ rules, shadow string }

// rbac runs an RBAC filter's shadow, then enforced rules. The shadow
// result denies nothing: Envoy counts it and writes it to the stream's
// dynamic metadata, as it does the enforced result (HTTP only); an
// enforced denial's details name the matched policy. status is 403 for
// the HTTP filter and 0 for the network one, which closes the connection.
func (k *walker) rbac(p *Pod, name string, pre rbacPrefixes, rules, shadow *rbacv3.RBAC, ds downstream, req *Request, status int) (Verdict, bool) {
	in := RBACInput{Local: ds.local, Remote: ds.remote, TLS: ds.tls, PeerURIs: ds.peerURIs, SNI: ds.sni, Request: req}
	ns := "envoy.filters.network.rbac"
	if status != 0 {
		ns = "envoy.filters.http.rbac"
	}
	if shadow != nil {
		r := EvalRBAC(shadow, in)
		k.logf("%s envoy: %s shadow rules (%s): would %s (policy %q)", p.Key(), name, shadow.GetAction(), allowWord(r.Allowed), r.Policy)
		if r.Policy != "" {
			k.si.setMeta(ns, pre.shadow+"shadow_effective_policy_id", r.Policy)
		}
		k.si.setMeta(ns, pre.shadow+"shadow_engine_result", engineResult(r.Allowed))
	}
	if rules == nil {
		return Verdict{}, true
	}
	r := EvalRBAC(rules, in)
	k.logf("%s envoy: %s (%s): %s (policy %q, peer %v, source %s)", p.Key(), name, rules.GetAction(), allowWord(r.Allowed), r.Policy, ds.peerURIs, ds.remote.Addr())
	if status != 0 {
		if r.Policy != "" {
			k.si.setMeta(ns, pre.rules+"enforced_effective_policy_id", r.Policy)
		}
		k.si.setMeta(ns, pre.rules+"enforced_engine_result", engineResult(r.Allowed))
	}
	if r.Allowed {
		return Verdict{}, true
	}
	matched := r.Policy
	if matched == "" {
		matched = "none"
	}
	details := "rbac_access_denied_matched_policy[" + matched + "]"
	pol := name
	if r.Policy != "" {
		pol += " " + r.Policy
	}
	reason := "RBAC closes the connection"
	if status != 0 {
		reason = "RBAC: access denied"
		k.si.codeDetails = details
	} else if k.si != nil {
		k.si.termDetails = details
	}
	return Verdict{Kind: Denied, Status: status, Policy: pol, Reason: reason, Pod: p.Key(), Port: ds.local.Port()}, false
}

func allowWord(ok bool) string {
	if ok {
		return "allow"
	}
	return "deny"
}

// http runs an HTTP connection manager for one request: path
// normalization, virtual host and route, the upgrade check, the HTTP
// filters in order, then the router.
func (k *walker) http(p *Pod, h *hcmv3.HttpConnectionManager, ds downstream, c conn) Verdict {
	prev := k.si
	k.si = newStreamInfo(ds, true)
	k.si.proto = c.proto
	defer func() { k.si = prev }()
	v := k.httpStream(p, h, ds, c)
	if k.si.req != nil {
		k.writeLogs(p, "http_connection_manager "+h.GetStatPrefix(), h.GetAccessLog(), k.si, v)
	}
	return v
}

// httpStream is http's work; k.si is the request's stream info.
func (k *walker) httpStream(p *Pod, h *hcmv3.HttpConnectionManager, ds downstream, c conn) Verdict {
	if len(c.tls) > 0 {
		return Verdict{Kind: Reset, Reason: fmt.Sprintf("%s: HTTP connection manager %q got TLS bytes: codec error, connection closed", p.Key(), h.GetStatPrefix())}
	}
	if !c.proto.isHTTP() {
		if c.proto == ServerFirst {
			return Verdict{Kind: Reset, Reason: fmt.Sprintf("%s: HTTP connection manager %q waits for a request a server-first client never sends", p.Key(), h.GetStatPrefix())}
		}
		return Verdict{Kind: Reset, Reason: fmt.Sprintf("%s: HTTP connection manager %q got %s, not HTTP: codec error, connection closed", p.Key(), h.GetStatPrefix(), c.proto)}
	}
	req := c.req.clone()
	unescape := false
	switch h.GetPathWithEscapedSlashesAction() {
	case hcmv3.HttpConnectionManager_REJECT_REQUEST:
		if hasEscapedSlash(req.path()) {
			return Verdict{Kind: Responded, Status: 400, Reason: fmt.Sprintf("%s: HCM %q rejects a path with an escaped slash (path_with_escaped_slashes_action REJECT_REQUEST)", p.Key(), h.GetStatPrefix())}
		}
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
		if hasEscapedSlash(req.path()) {
			return Verdict{Kind: Responded, Status: 307, Reason: fmt.Sprintf("%s: HCM %q redirects to the unescaped path (path_with_escaped_slashes_action UNESCAPE_AND_REDIRECT)", p.Key(), h.GetStatPrefix())}
		}
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		unescape = true
	}
	if unescape || h.GetNormalizePath().GetValue() || h.GetMergeSlashes() {
		if np := normalizePath(req.path(), unescape, h.GetNormalizePath().GetValue(), h.GetMergeSlashes()); np != req.path() {
			k.logf("%s envoy: path %s normalized to %s", p.Key(), req.path(), np)
			req.Headers[":path"] = np
		}
	}
	k.mutateRequestHeaders(p, h, ds, req)
	k.si.req = req
	rc := h.GetRouteConfig()
	if rds := h.GetRds(); rds != nil {
		rc = nil
		for _, r := range p.Proxy.Routes {
			if r.GetName() == rds.GetRouteConfigName() {
				rc = r
			}
		}
		if rc == nil {
			return Verdict{Kind: NoRoute, Status: 404, Reason: fmt.Sprintf("%s: RDS route configuration %q does not exist (the listener would never warm)", p.Key(), rds.GetRouteConfigName())}
		}
	}
	host := req.Headers[":authority"]
	vh := MatchVirtualHost(rc, host)
	var rt *routev3.Route
	if vh != nil {
		rt = MatchRoute(vh, req)
	}
	k.logf("%s envoy: HCM %q: route configuration %q, virtual host %q, route %q for Host %s %s", p.Key(), h.GetStatPrefix(), rc.GetName(), vh.GetName(), routeName(rt), host, req.path())
	// The upgrade check runs when the stream is set up, before any HTTP
	// filter (ConnectionManagerImpl::ActiveStream::decodeHeaders, in
	// source/common/http/conn_manager_impl.cc): an upgrade that neither
	// the route nor the manager allows is answered 403 (UpgradeFailed).
	if up, ok := req.get("upgrade"); ok && rt != nil && !upgradeAllowed(h, rt, up) {
		return Verdict{Kind: Denied, Status: 403, Policy: "upgrade_configs", Reason: fmt.Sprintf("%s: HCM %q does not allow the %q upgrade (no upgrade_configs): 403 UpgradeFailed", p.Key(), h.GetStatPrefix(), up)}
	}
	k.fault = nil
	k.streamIdle = envoyStreamIdleTimeout
	if d := h.GetStreamIdleTimeout(); d != nil {
		k.streamIdle = d.AsDuration()
	}
	for _, f := range h.GetHttpFilters() {
		switch typeOf(f.GetTypedConfig()) {
		case typeHTTPFault:
			cfg := &faultv3.HTTPFault{}
			if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
				return Verdict{Kind: Invalid, Reason: err.Error()}
			}
			if rt == nil {
				continue
			}
			fault, err := faultFor(faultFilter{f.GetName(), cfg}, rc, vh, rt)
			if err != nil {
				return Verdict{Kind: Invalid, Reason: fmt.Sprintf("%s: %v", p.Key(), err)}
			}
			if fault == nil {
				continue
			}
			k.fault = fault
			k.logf("%s envoy: fault filter %q: delay %g%% by %s, abort %g%%", p.Key(), f.GetName(), fault.DelayPercent, fault.Delay, fault.AbortPercent)
			// The walk follows a request no fault aborted, unless every
			// request is aborted (FaultFilter::decodeHeaders answers
			// with the abort status, response flag FI).
			if fault.AbortPercent >= 100 {
				k.recordRoute(p, rt, ds)
				return Verdict{Kind: Responded, Status: int(fault.HTTPStatus), Policy: f.GetName(), Reason: fmt.Sprintf("%s: fault filter %q aborts every request (FI)", p.Key(), f.GetName())}
			}
		case typeHTTPRBAC:
			cfg := &rbachttpv3.RBAC{}
			if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
				return Verdict{Kind: Invalid, Reason: err.Error()}
			}
			if v, ok := k.rbac(p, f.GetName(), rbacPrefixes{cfg.GetRulesStatPrefix(), cfg.GetShadowRulesStatPrefix()}, cfg.GetRules(), cfg.GetShadowRules(), ds, req, 403); !ok {
				return v
			}
		case typeHTTPLocalRateLimit:
			cfg := &localrlv3.LocalRateLimit{}
			if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
				return Verdict{Kind: Invalid, Reason: err.Error()}
			}
			if v, ok := k.httpLocalRateLimit(p, f.GetName(), cfg, ds, req); !ok {
				return v
			}
		case typeRouter:
			return k.route(p, rc, vh, rt, ds, c, req)
		default:
			k.logf("%s envoy: HTTP filter %q is not simulated: skipped", p.Key(), f.GetName())
		}
	}
	return Verdict{Kind: Reset, Reason: fmt.Sprintf("%s: HCM %q has no router filter", p.Key(), h.GetStatPrefix())}
}

// internalOnly are the x-envoy-* request headers an HCM strips from a
// request it does not consider internal.
var internalOnly = []string{
	"x-envoy-retry-on", "x-envoy-retry-grpc-on", "x-envoy-max-retries", "x-envoy-upstream-alt-stat-name",
	"x-envoy-upstream-rq-timeout-ms", "x-envoy-upstream-rq-per-try-timeout-ms", "x-envoy-upstream-rq-timeout-alt-response",
	"x-envoy-expected-rq-timeout-ms", "x-envoy-force-trace", "x-envoy-ip-tags",
}

// mutateRequestHeaders is what an HCM does to a request's headers before
// routing (ConnectionManagerUtility::mutateRequestHeaders in
// source/common/http/conn_manager_utility.cc), as far as the walk needs:
//
//   - use_remote_address: the peer's address is appended to
//     x-forwarded-for (the local address for a loopback peer); the request
//     is internal when x-forwarded-for held no address before and the peer
//     is an internal address. Without it, the request is internal when
//     x-forwarded-for holds exactly one address, an internal one.
//   - internal addresses are internal_address_config's cidr_ranges; with
//     none, no address is internal (Envoy 1.33 and later: the runtime flag
//     envoy.reloadable_features.explicit_internal_address_config; before,
//     RFC 1918 and loopback were).
//   - internal: x-envoy-internal: true. Otherwise x-envoy-internal and the
//     internal-only x-envoy-* headers are removed.
//   - an edge request (use_remote_address and not internal) gets a new
//     x-request-id unless preserve_external_request_id; any request
//     without one gets one.
func (k *walker) mutateRequestHeaders(p *Pod, h *hcmv3.HttpConnectionManager, ds downstream, req *Request) {
	xff, hadXFF := req.get("x-forwarded-for")
	delete(req.Headers, "x-envoy-internal")
	internal := false
	if h.GetUseRemoteAddress().GetValue() {
		peer := ds.remote.Addr()
		appended := peer
		if peer.IsLoopback() {
			appended = ds.local.Addr()
		}
		if hadXFF {
			req.Headers["x-forwarded-for"] = xff + "," + appended.String()
		} else {
			req.Headers["x-forwarded-for"] = appended.String()
		}
		internal = !hadXFF && internalAddress(h.GetInternalAddressConfig(), peer)
	} else if hadXFF && !strings.Contains(xff, ",") {
		if a, err := netip.ParseAddr(strings.TrimSpace(xff)); err == nil {
			internal = internalAddress(h.GetInternalAddressConfig(), a)
		}
	}
	edge := !internal && h.GetUseRemoteAddress().GetValue()
	if internal {
		req.Headers["x-envoy-internal"] = "true"
	} else {
		for _, n := range internalOnly {
			delete(req.Headers, n)
		}
	}
	_, hasID := req.get("x-request-id")
	if (edge && !h.GetPreserveExternalRequestId()) || !hasID {
		k.ids++
		id := fmt.Sprintf("generated-by-%s-%d", p.Key(), k.ids)
		if hasID {
			k.logf("%s envoy: HCM %q: external request (peer %s): x-request-id %s replaced by %s", p.Key(), h.GetStatPrefix(), ds.remote.Addr(), req.Headers["x-request-id"], id)
		}
		req.Headers["x-request-id"] = id
	}
}

// internalAddress: internal_address_config's cidr_ranges hold a
// (InternalAddressConfig in source/common/http/conn_manager_config.h).
func internalAddress(cfg *hcmv3.HttpConnectionManager_InternalAddressConfig, a netip.Addr) bool {
	for _, r := range cfg.GetCidrRanges() {
		if inCIDR(r.GetAddressPrefix(), r.GetPrefixLen().GetValue(), r.GetPrefixLen() != nil, a) {
			return true
		}
	}
	return false
}

func routeName(rt *routev3.Route) string {
	if rt == nil {
		return ""
	}
	if rt.GetName() != "" {
		return rt.GetName()
	}
	m := rt.GetMatch()
	return fmt.Sprintf("prefix=%s path=%s separated=%s regex=%s", m.GetPrefix(), m.GetPath(), m.GetPathSeparatedPrefix(), m.GetSafeRegex().GetRegex())
}

// upgradeAllowed: a route's upgrade_configs entry for the type decides;
// else the manager's (an entry's enabled defaults to true); else no
// (FilterManager::createUpgradeFilterChain, source/common/http/filter_manager.cc).
func upgradeAllowed(h *hcmv3.HttpConnectionManager, rt *routev3.Route, typ string) bool {
	for _, u := range rt.GetRoute().GetUpgradeConfigs() {
		if strings.EqualFold(u.GetUpgradeType(), typ) {
			return u.GetEnabled() == nil || u.GetEnabled().GetValue()
		}
	}
	for _, u := range h.GetUpgradeConfigs() {
		if strings.EqualFold(u.GetUpgradeType(), typ) {
			return u.GetEnabled() == nil || u.GetEnabled().GetValue()
		}
	}
	return false
}

type weighted struct {
	name   string
	weight uint32
}

// pick records a weighted split and follows its heaviest member.
func (k *walker) pick(ws []weighted) string {
	var total uint32
	best := -1
	var split []string
	for i, w := range ws {
		total += w.weight
		split = append(split, fmt.Sprintf("%s=%d", w.name, w.weight))
		if best < 0 || w.weight > ws[best].weight {
			best = i
		}
	}
	if len(k.split) == 0 {
		k.split = split
	}
	if best < 0 || total == 0 {
		return ""
	}
	return ws[best].name
}

// route is the router filter: the route's action.
func (k *walker) route(p *Pod, rc *routev3.RouteConfiguration, vh *routev3.VirtualHost, rt *routev3.Route, ds downstream, c conn, req *Request) Verdict {
	if rt == nil {
		k.si.setFlag("NR", "route_not_found")
		return Verdict{Kind: NoRoute, Status: 404, Reason: fmt.Sprintf("%s: no route for Host %s %s (NR)", p.Key(), req.Headers[":authority"], req.path())}
	}
	switch a := rt.GetAction().(type) {
	case *routev3.Route_DirectResponse:
		k.si.codeDetails = "direct_response"
		return Verdict{Kind: Responded, Status: int(a.DirectResponse.GetStatus()), Reason: fmt.Sprintf("%s: direct response", p.Key()), Body: a.DirectResponse.GetBody().GetInlineString()}
	case *routev3.Route_Redirect:
		status := 301
		switch a.Redirect.GetResponseCode() {
		case routev3.RedirectAction_FOUND:
			status = 302
		case routev3.RedirectAction_SEE_OTHER:
			status = 303
		case routev3.RedirectAction_TEMPORARY_REDIRECT:
			status = 307
		case routev3.RedirectAction_PERMANENT_REDIRECT:
			status = 308
		}
		loc, err := redirectLocation(rt, req)
		if err != nil {
			return Verdict{Kind: Invalid, Reason: fmt.Sprintf("%s: redirect: %v", p.Key(), err)}
		}
		return Verdict{Kind: Responded, Status: status, Location: loc, Reason: fmt.Sprintf("%s: redirect to %s", p.Key(), loc)}
	case *routev3.Route_Route:
		ra := a.Route
		name := ra.GetCluster()
		var chosen *routev3.WeightedCluster_ClusterWeight
		if wc := ra.GetWeightedClusters(); wc != nil {
			var ws []weighted
			for _, cw := range wc.GetClusters() {
				ws = append(ws, weighted{cw.GetName(), cw.GetWeight().GetValue()})
			}
			name = k.pick(ws)
			for _, cw := range wc.GetClusters() {
				if cw.GetName() == name && chosen == nil {
					chosen = cw
				}
			}
		}
		if name == "" {
			return Verdict{Kind: NoRoute, Status: 503, Reason: fmt.Sprintf("%s: route names no cluster (or every weight is 0)", p.Key())}
		}
		// The router rewrites the path and host, then adds the route's
		// headers (Filter::decodeHeaders: finalizeRequestHeaders after
		// the rewrite); mirrors copy the request as finalized.
		if ra.GetPrefixRewrite() != "" || ra.GetRegexRewrite() != nil {
			old := req.path()
			np, err := rewritePath(rt.GetMatch(), ra.GetPrefixRewrite(), ra.GetRegexRewrite(), old)
			if err != nil {
				return Verdict{Kind: Invalid, Reason: fmt.Sprintf("%s: regex_rewrite: %v", p.Key(), err)}
			}
			req.Headers[":path"] = np
			k.logf("%s envoy: path rewritten %s -> %s", p.Key(), old, np)
		}
		if hr := ra.GetHostRewriteLiteral(); hr != "" {
			req.Headers[":authority"] = hr
		}
		for _, l := range levels(rc, vh, rt, chosen, false) {
			applyHeaders(req.Headers, l)
		}
		var mirrors []string
		for _, mp := range ra.GetRequestMirrorPolicies() {
			mirrors = append(mirrors, mirrorShare(mp))
		}
		if len(mirrors) > 0 {
			k.logf("%s envoy: request mirrored to %s", p.Key(), strings.Join(mirrors, " "))
		}
		k.logf("%s envoy: router -> cluster %q", p.Key(), name)
		k.recordRoute(p, rt, ds)
		k.nextHash, k.nextIdle = k.routeHash(p, ra, req, ds.remote), nil
		c.req = req
		v := k.upstream(p, name, ds, c, true)
		v.Mirrors = append(mirrors, v.Mirrors...)
		if v.Kind == Delivered || v.Kind == PassthroughPlaintext {
			// On the way back, this proxy changes the response headers
			// after the proxies nearer the application did.
			if v.ResponseHeaders == nil {
				v.ResponseHeaders = map[string]string{}
			}
			for _, l := range levels(rc, vh, rt, chosen, true) {
				applyHeaders(v.ResponseHeaders, l)
			}
		}
		return v
	}
	return Verdict{Kind: NoRoute, Status: 404, Reason: fmt.Sprintf("%s: route action %T is not simulated", p.Key(), rt.GetAction())}
}

// recordRoute keeps what the caller's sidecar's route applies
// (Verdict.Route): the first outbound route the walk takes.
func (k *walker) recordRoute(p *Pod, rt *routev3.Route, ds downstream) {
	ra := rt.GetRoute()
	if !ds.outbound || k.firstRoute != nil || ra == nil {
		return
	}
	k.firstRoute = routePolicyOf(rt, ra, k.fault, k.streamIdle, func(name string) bool {
		for _, c := range p.Proxy.Clusters {
			if c.GetName() == name {
				return true
			}
		}
		return false
	})
}

// upstream connects to a cluster's endpoint: its discovery type gives the
// address, its transport socket (by transport_socket_matches) the TLS, its
// upstream_bind_config the source address; the sidecar's user opens it.
func (k *walker) upstream(p *Pod, name string, ds downstream, c conn, http bool) Verdict {
	status := 0
	if http {
		status = 503
	}
	var cl *clusterv3.Cluster
	for _, x := range p.Proxy.Clusters {
		if x.GetName() == name {
			cl = x
		}
	}
	if cl == nil {
		k.si.setFlag("NC", "cluster_not_found")
		return Verdict{Kind: NoRoute, Status: status, Reason: fmt.Sprintf("%s: cluster %q not found (NC)", p.Key(), name)}
	}
	if k.si != nil {
		k.si.cluster = name
	}
	if ds.outbound && k.firstUp == nil {
		u := upstreamOf(cl, k.nextIdle)
		if u.LB == "RING_HASH" || u.LB == "MAGLEV" {
			// A hash reaches the load balancer only when the cluster
			// hashes (LoadBalancerContext::computeHashKey is read by
			// the ring hash and Maglev load balancers alone).
			u.Hash, u.CookieSet = k.nextHash.key, k.nextHash.cookieSet
		}
		k.firstUp = u
		k.logf("%s envoy: %s", p.Key(), u)
	}
	k.nextHash, k.nextIdle = hashChoice{}, nil
	var dst netip.AddrPort
	var md *structpb.Struct
	switch cl.GetType() {
	case clusterv3.Cluster_ORIGINAL_DST:
		// OriginalDstCluster::LoadBalancer::chooseHost: the downstream
		// connection's restored local address.
		if !ds.restored {
			return Verdict{Kind: Blackholed, Status: status, Reason: fmt.Sprintf("%s: ORIGINAL_DST cluster %q without an original destination", p.Key(), name)}
		}
		dst = ds.local
		// upstream_port_override replaces the port of the original
		// destination (same function).
		if po := cl.GetOriginalDstLbConfig().GetUpstreamPortOverride(); po != nil {
			dst = netip.AddrPortFrom(dst.Addr(), uint16(po.GetValue()))
		}
		k.logf("%s envoy: cluster %q (ORIGINAL_DST) -> %s", p.Key(), name, dst)
	case clusterv3.Cluster_EDS, clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		cla := cl.GetLoadAssignment()
		if cl.GetType() == clusterv3.Cluster_EDS {
			svc := cl.GetEdsClusterConfig().GetServiceName()
			if svc == "" {
				svc = name
			}
			cla = nil
			for _, e := range p.Proxy.Endpoints {
				if e.GetClusterName() == svc {
					cla = e
				}
			}
		}
		if cl.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil {
			cla = k.pickLocality(p, name, cla)
		}
		ep, n := firstEndpoint(cla)
		if ep == nil {
			k.si.setFlag("UH", "no_healthy_upstream")
			return Verdict{Kind: Blackholed, Status: status, Reason: fmt.Sprintf("%s: cluster %q (%s) has no healthy endpoint: no healthy upstream", p.Key(), name, cl.GetType())}
		}
		sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
		a, err := netip.ParseAddr(sa.GetAddress())
		if err != nil {
			if ips := k.w.DNS[sa.GetAddress()]; len(ips) > 0 {
				a = ips[0]
			} else {
				return Verdict{Kind: Blackholed, Status: status, Reason: fmt.Sprintf("%s: cluster %q endpoint %q does not resolve", p.Key(), name, sa.GetAddress())}
			}
		}
		dst = netip.AddrPortFrom(a, uint16(sa.GetPortValue()))
		md = ep.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"]
		k.logf("%s envoy: cluster %q (%s) -> endpoint %s (1 of %d)", p.Key(), name, cl.GetType(), dst, n)
	default:
		return Verdict{Kind: Invalid, Reason: fmt.Sprintf("%s: cluster %q type %s is not simulated", p.Key(), name, cl.GetType())}
	}
	ts, tsName := cl.GetTransportSocket(), "transport_socket"
	for _, m := range cl.GetTransportSocketMatches() {
		if subset(m.GetMatch(), md) {
			ts, tsName = m.GetTransportSocket(), "transport_socket_matches "+m.GetName()
			break
		}
	}
	if k.si != nil {
		k.si.host = dst
	}
	up := conn{dst: dst, uid: ProxyUID, tls: c.tls, proto: c.proto, app: c.app, req: c.req}
	if http {
		up.proto = upstreamHTTP(cl, c.proto)
		if up.proto != c.proto {
			k.logf("%s envoy: cluster %q speaks %s upstream (downstream %s)", p.Key(), name, up.proto, c.proto)
		}
	}
	if bc := cl.GetUpstreamBindConfig(); bc != nil {
		// The extra_source_addresses entry of the upstream address's IP
		// version, else source_address
		// (DefaultUpstreamLocalAddressSelector::getUpstreamLocalAddressImpl
		// in source/common/upstream/default_local_address_selector.cc). A
		// source of the other version cannot connect.
		cands := []*corev3.SocketAddress{bc.GetSourceAddress()}
		for _, e := range bc.GetExtraSourceAddresses() {
			cands = append(cands, e.GetAddress())
		}
		bound := false
		for _, a := range cands {
			if ip, err := netip.ParseAddr(a.GetAddress()); err == nil && is6(ip) == is6(dst.Addr()) {
				up.src, bound = netip.AddrPortFrom(ip, uint16(a.GetPortValue())), true
				break
			}
		}
		if !bound && bc.GetSourceAddress() != nil {
			return Verdict{Kind: Reset, Status: status, Reason: fmt.Sprintf("%s: cluster %q binds %s, which cannot reach %s (no source address of that IP version)", p.Key(), name, bc.GetSourceAddress().GetAddress(), dst)}
		}
	}
	originated := false
	if ts != nil && typeOf(ts.GetTypedConfig()) == typeUpstreamTLS {
		ctx := &tlsv3.UpstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
			return Verdict{Kind: Invalid, Reason: err.Error()}
		}
		h := originate(p, ctx)
		up.tls = append([]*hello{h}, c.tls...)
		originated = true
		k.logf("%s envoy: %s: originate TLS (client certificate %q, SNI %q, ALPN %v, expect %s)", p.Key(), tsName, h.clientID, h.sni, h.alpn, sanList(h.sans))
	} else if ts != nil {
		k.logf("%s envoy: %s: plaintext", p.Key(), tsName)
	}
	if ds.outbound && cl.GetType() == clusterv3.Cluster_ORIGINAL_DST && !originated {
		k.passthrough = true
	}
	return k.connect(p, up)
}

// upstreamHTTP is the protocol the router speaks to a cluster's endpoint:
// the cluster's envoy.extensions.upstreams.http.v3.HttpProtocolOptions
// (ClusterInfoImpl::upstreamHttpProtocol in
// source/common/upstream/upstream_impl.cc): explicit HTTP/2 or HTTP/1.1;
// use_downstream_protocol_config: the downstream's; auto_config: by ALPN,
// taken here as the downstream's. Without options, HTTP/1.1.
func upstreamHTTP(cl *clusterv3.Cluster, downstream Protocol) Protocol {
	h2 := func() Protocol {
		if downstream == GRPC {
			return GRPC // gRPC is HTTP/2 with its content type
		}
		if downstream == WebSocket {
			return WebSocket // an upgrade: not modelled over HTTP/2
		}
		return H2C
	}
	h1 := func() Protocol {
		if downstream == WebSocket {
			return WebSocket
		}
		return HTTP1
	}
	a := cl.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if a == nil {
		return h1()
	}
	o := &httpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(o); err != nil {
		return h1()
	}
	switch {
	case o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil:
		return h2()
	case o.GetExplicitHttpConfig() != nil:
		return h1()
	case o.GetUseDownstreamProtocolConfig() != nil, o.GetAutoConfig() != nil:
		if downstream == H2C || downstream == GRPC {
			return h2()
		}
		return h1()
	}
	return h1()
}

// originate is the ClientHello of an UpstreamTlsContext: the sidecar's own
// certificate when the context has one, and the SANs it will accept from
// the server (match_typed_subject_alt_names of the default or combined
// validation context).
func originate(p *Pod, ctx *tlsv3.UpstreamTlsContext) *hello {
	cc := ctx.GetCommonTlsContext()
	h := &hello{sni: ctx.GetSni(), alpn: cc.GetAlpnProtocols(), by: "the sidecar of " + p.Key(), mesh: true}
	if len(cc.GetTlsCertificateSdsSecretConfigs())+len(cc.GetTlsCertificates())+len(cc.GetTlsCertificateProviderInstance().GetInstanceName()) > 0 {
		h.clientID = p.Identity
	}
	var vc *tlsv3.CertificateValidationContext
	switch v := cc.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_ValidationContext:
		vc = v.ValidationContext
		h.verify = true
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		vc = v.CombinedValidationContext.GetDefaultValidationContext()
		h.verify = true
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		h.verify = true
	}
	for _, s := range vc.GetMatchTypedSubjectAltNames() {
		if s.GetSanType() == tlsv3.SubjectAltNameMatcher_URI {
			h.sans = append(h.sans, s.GetMatcher())
		}
	}
	return h
}

// subset: every field of match is in md (an empty match matches all):
// TransportSocketMatcherImpl::resolve in
// source/common/upstream/transport_socket_match_impl.cc.
func subset(match, md *structpb.Struct) bool {
	for k, v := range match.GetFields() {
		got, ok := md.GetFields()[k]
		if !ok || got.GetStringValue() != v.GetStringValue() || got.GetKind() == nil {
			return false
		}
	}
	return true
}

// pickLocality is locality-weighted load balancing: Envoy picks a locality
// by its load_balancing_weight (scaled by its healthy share; the walk
// takes every endpoint as healthy), then an endpoint in it
// (LoadBalancerBase::chooseHostSet and HostSetImpl::chooseLocality in
// source/common/upstream/load_balancer_impl.cc and upstream_impl.cc).
// The walk reports the distribution by locality (its sub_zone, else
// zone) and follows the heaviest, as pick does for weighted clusters.
func (k *walker) pickLocality(p *Pod, cluster string, cla *endpointv3.ClusterLoadAssignment) *endpointv3.ClusterLoadAssignment {
	var ws []weighted
	byName := map[string]*endpointv3.LocalityLbEndpoints{}
	for _, loc := range cla.GetEndpoints() {
		name := loc.GetLocality().GetSubZone()
		if name == "" {
			name = loc.GetLocality().GetZone()
		}
		if len(loc.GetLbEndpoints()) == 0 {
			continue
		}
		byName[name] = loc
		ws = append(ws, weighted{name, loc.GetLoadBalancingWeight().GetValue()})
	}
	chosen := k.pick(ws)
	k.logf("%s envoy: cluster %q locality-weighted -> locality %q", p.Key(), cluster, chosen)
	out := &endpointv3.ClusterLoadAssignment{ClusterName: cla.GetClusterName()}
	if loc := byName[chosen]; loc != nil {
		out.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
	}
	return out
}

// firstEndpoint is the first healthy endpoint of the highest priority (the
// walk is deterministic: it does not balance), and how many there are.
func firstEndpoint(cla *endpointv3.ClusterLoadAssignment) (*endpointv3.LbEndpoint, int) {
	var first *endpointv3.LbEndpoint
	n, prio := 0, uint32(1<<31)
	for _, loc := range cla.GetEndpoints() {
		if loc.GetLoadBalancingWeight() != nil && loc.GetLoadBalancingWeight().GetValue() == 0 {
			continue
		}
		for _, e := range loc.GetLbEndpoints() {
			if hs := e.GetHealthStatus(); hs != corev3.HealthStatus_HEALTHY && hs != corev3.HealthStatus_UNKNOWN {
				continue
			}
			n++
			if first == nil || loc.GetPriority() < prio {
				first, prio = e, loc.GetPriority()
			}
		}
	}
	return first, n
}

// deliver hands the connection to the application's socket.
func (k *walker) deliver(p *Pod, app *AppSocket, local netip.AddrPort, c conn) Verdict {
	v := Verdict{Pod: p.Key(), Port: local.Port(), MTLS: k.mtls, ClientIdentity: k.peerID}
	switch {
	case len(c.tls) > 0 && !app.TLS:
		v.Kind, v.Reason = TLSFailure, fmt.Sprintf("TLS from %s reached the application on %s, which speaks plaintext", c.tls[0].by, local)
		return v
	case len(c.tls) > 0 && c.tls[0].mesh:
		v.Kind, v.Reason = TLSFailure, fmt.Sprintf("mesh mTLS from %s reached the application on %s", c.tls[0].by, local)
		return v
	case len(c.tls) == 0 && app.TLS:
		v.Kind, v.Reason = TLSFailure, fmt.Sprintf("plaintext reached the application's TLS socket on %s", local)
		return v
	case c.proto == HTTP1 && (c.app == H2C || c.app == GRPC):
		// An HTTP/2-only server (every gRPC server) answers an HTTP/1.1
		// request with a protocol error.
		v.Kind, v.Reason = Reset, fmt.Sprintf("the application on %s speaks %s; a proxy sent it HTTP/1.1", local, c.app)
		return v
	}
	v.Kind = Delivered
	if c.req != nil {
		v.RequestHeaders = c.req.clone().Headers
	}
	if k.passthrough && !k.mtls {
		v.Kind, v.Reason = PassthroughPlaintext, "the caller's sidecar passed it through in plaintext"
	}
	k.logf("%s app: accepts on %s (bound %s) from %s", p.Key(), local, app.Bind, c.src)
	return v
}
