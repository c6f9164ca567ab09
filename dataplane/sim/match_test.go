package sim_test

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/dataplane/sim"
)

func chain(name string, m *listenerv3.FilterChainMatch) *listenerv3.FilterChain {
	return &listenerv3.FilterChain{Name: name, FilterChainMatch: m}
}

func cidr(a string, bits uint32) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: a, PrefixLen: wrapperspb.UInt32(bits)}
}

func TestMatchFilterChain(t *testing.T) {
	port := wrapperspb.UInt32
	l := &listenerv3.Listener{
		FilterChains: []*listenerv3.FilterChain{
			chain("8080-mtls", &listenerv3.FilterChainMatch{DestinationPort: port(8080), TransportProtocol: "tls", ApplicationProtocols: []string{"weft"}}),
			chain("8080-plain", &listenerv3.FilterChainMatch{DestinationPort: port(8080), TransportProtocol: "raw_buffer"}),
			chain("9000-vip", &listenerv3.FilterChainMatch{DestinationPort: port(9000), PrefixRanges: []*corev3.CidrRange{cidr("10.0.0.1", 32)}}),
			chain("any-wide", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.0.0.0", 8)}}),
			chain("any-narrow", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.1.0.0", 16)}}),
			chain("sni-exact", &listenerv3.FilterChainMatch{DestinationPort: port(443), ServerNames: []string{"api.example.com"}}),
			chain("sni-wild", &listenerv3.FilterChainMatch{DestinationPort: port(443), ServerNames: []string{"*.example.com"}}),
			chain("sni-none", &listenerv3.FilterChainMatch{DestinationPort: port(443)}),
			chain("h2-first", &listenerv3.FilterChainMatch{DestinationPort: port(8443), ApplicationProtocols: []string{"h2"}}),
			chain("http11", &listenerv3.FilterChainMatch{DestinationPort: port(8443), ApplicationProtocols: []string{"http/1.1"}}),
		},
		DefaultFilterChain: chain("default", nil),
	}
	for _, tc := range []struct {
		name string
		seen sim.Seen
		want string
	}{
		{"mtls by ALPN", sim.Seen{Local: ap("10.1.1.1:8080"), TransportProtocol: "tls", ALPN: []string{"weft", "h2"}}, "8080-mtls"},
		{"plaintext", sim.Seen{Local: ap("10.1.1.1:8080"), TransportProtocol: "raw_buffer"}, "8080-plain"},
		// TLS without ALPN weft: the port subtree has no match, and Envoy
		// does not try the port-less chains: the default chain.
		{"tls without weft ALPN: default, no fallback to port-less chains", sim.Seen{Local: ap("10.1.1.1:8080"), TransportProtocol: "tls", ALPN: []string{"h2"}}, "default"},
		{"port subtree with a non-matching prefix: default", sim.Seen{Local: ap("10.0.0.2:9000"), TransportProtocol: "raw_buffer"}, "default"},
		{"port subtree match", sim.Seen{Local: ap("10.0.0.1:9000"), TransportProtocol: "raw_buffer"}, "9000-vip"},
		{"longest prefix wins", sim.Seen{Local: ap("10.1.2.3:7000"), TransportProtocol: "raw_buffer"}, "any-narrow"},
		{"wider prefix", sim.Seen{Local: ap("10.2.2.3:7000"), TransportProtocol: "raw_buffer"}, "any-wide"},
		{"no prefix matches", sim.Seen{Local: ap("192.168.0.1:7000"), TransportProtocol: "raw_buffer"}, "default"},
		{"exact SNI", sim.Seen{Local: ap("10.1.1.1:443"), TransportProtocol: "tls", ServerName: "api.example.com"}, "sni-exact"},
		{"wildcard SNI", sim.Seen{Local: ap("10.1.1.1:443"), TransportProtocol: "tls", ServerName: "www.example.com"}, "sni-wild"},
		{"wildcard needs a label", sim.Seen{Local: ap("10.1.1.1:443"), TransportProtocol: "tls", ServerName: "example.com"}, "sni-none"},
		{"other SNI", sim.Seen{Local: ap("10.1.1.1:443"), TransportProtocol: "tls", ServerName: "other.org"}, "sni-none"},
		{"client ALPN order decides", sim.Seen{Local: ap("10.1.1.1:8443"), TransportProtocol: "tls", ALPN: []string{"http/1.1", "h2"}}, "http11"},
		{"no ALPN: default", sim.Seen{Local: ap("10.1.1.1:8443"), TransportProtocol: "tls"}, "default"},
		{"IPv6 does not match IPv4 prefixes", sim.Seen{Local: ap("[fd00::1]:7000"), TransportProtocol: "raw_buffer"}, "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc, err := sim.MatchFilterChain(l, tc.seen)
			if err != nil {
				t.Fatal(err)
			}
			if fc.GetName() != tc.want {
				t.Errorf("got chain %q, want %q", fc.GetName(), tc.want)
			}
		})
	}
	dup := &listenerv3.Listener{FilterChains: []*listenerv3.FilterChain{chain("a", nil), chain("b", nil)}}
	if _, err := sim.MatchFilterChain(dup, sim.Seen{Local: ap("10.0.0.1:80")}); err == nil {
		t.Error("identical chains: no error")
	}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func req(method, path string, headers ...string) *sim.Request {
	h := map[string]string{":method": method, ":path": path, ":authority": "svc"}
	for i := 0; i+1 < len(headers); i += 2 {
		h[headers[i]] = headers[i+1]
	}
	return &sim.Request{Headers: h}
}

func TestMatchVirtualHost(t *testing.T) {
	rc := &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{
		{Name: "exact", Domains: []string{"svc", "svc:80", "[fd00::1]:80"}},
		{Name: "suffix", Domains: []string{"*.example.com"}},
		{Name: "longer-suffix", Domains: []string{"*.api.example.com"}},
		{Name: "prefix", Domains: []string{"svc.*"}},
		{Name: "star", Domains: []string{"*"}},
	}}
	for host, want := range map[string]string{
		"svc": "exact", "SVC:80": "exact", "[fd00::1]:80": "exact", "svc:8080": "star",
		"a.example.com": "suffix", "x.api.example.com": "longer-suffix", "svc.ns": "prefix", "other": "star",
	} {
		if got := sim.MatchVirtualHost(rc, host).GetName(); got != want {
			t.Errorf("Host %s: got %q, want %q", host, got, want)
		}
	}
	if vh := sim.MatchVirtualHost(&routev3.RouteConfiguration{VirtualHosts: rc.VirtualHosts[:1]}, "other"); vh != nil {
		t.Errorf("no domain matches: got %q", vh.GetName())
	}
}

func TestMatchRoute(t *testing.T) {
	vh := &routev3.VirtualHost{Routes: []*routev3.Route{
		{Name: "exact", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/login"}}},
		{Name: "separated", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"}}},
		{Name: "regex", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/v[0-9]+"}}}},
		{Name: "header", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
			{Name: "x-canary", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("yes")}},
		}}},
		{Name: "query", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, QueryParameters: []*routev3.QueryParameterMatcher{
			{Name: "debug", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("1")}},
		}}},
		{Name: "prefix", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/app"}}},
	}}
	for _, tc := range []struct {
		r    *sim.Request
		want string
	}{
		{req("GET", "/login"), "exact"},
		{req("GET", "/login?next=/"), "exact"},
		{req("GET", "/login/x"), ""},
		{req("GET", "/api"), "separated"},
		{req("GET", "/api/v1"), "separated"},
		{req("GET", "/api?x=1"), "separated"},
		{req("GET", "/apiv1"), ""},
		{req("GET", "/v12"), "regex"},
		{req("GET", "/v12/x"), ""},
		{req("GET", "/other", "x-canary", "yes"), "header"},
		{req("GET", "/other", "x-canary", "no"), ""},
		{req("GET", "/other?debug=1"), "query"},
		{req("GET", "/apples"), "prefix"},
	} {
		if got := sim.MatchRoute(vh, tc.r).GetName(); got != tc.want {
			t.Errorf("%s %v: got route %q, want %q", tc.r.Headers[":path"], tc.r.Headers, got, tc.want)
		}
	}
}

func TestEvalRBAC(t *testing.T) {
	auth := func(m *matcherv3.StringMatcher) *rbacv3.Principal {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
	}
	anyPerm := []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}
	method := func(m string) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(m)}}}}
	}
	path := func(m *matcherv3.StringMatcher) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}}}}
	}
	allow := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"ns-shop": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8080}}}, Principals: []*rbacv3.Principal{auth(prefix("spiffe://td/ns/shop/sa/"))}},
		"ops-ip":  {Permissions: anyPerm, Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.9.0.0", 16)}}}},
	}}
	deny := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"no-delete": {Permissions: []*rbacv3.Permission{method("DELETE")}, Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}},
		"no-admin": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{path(prefix("/admin")), {Rule: &rbacv3.Permission_NotRule{NotRule: method("GET")}}}}}}},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_NotId{NotId: auth(exact("spiffe://td/ns/ops/sa/root"))}}}},
	}}
	shop := []string{"spiffe://td/ns/shop/sa/web"}
	for _, tc := range []struct {
		name   string
		cfg    *rbacv3.RBAC
		in     sim.RBACInput
		allow  bool
		policy string
	}{
		{"allow by namespace prefix", allow, sim.RBACInput{Local: ap("10.1.1.1:8080"), Remote: ap("10.1.1.2:4"), TLS: true, PeerURIs: shop}, true, "ns-shop"},
		{"allow needs the port", allow, sim.RBACInput{Local: ap("10.1.1.1:9090"), Remote: ap("10.1.1.2:4"), TLS: true, PeerURIs: shop}, false, ""},
		{"authenticated needs TLS", allow, sim.RBACInput{Local: ap("10.1.1.1:8080"), Remote: ap("10.1.1.2:4"), PeerURIs: shop}, false, ""},
		{"allow by source IP", allow, sim.RBACInput{Local: ap("10.1.1.1:9090"), Remote: ap("10.9.1.2:4")}, true, "ops-ip"},
		{"deny DELETE", deny, sim.RBACInput{Request: req("DELETE", "/x")}, false, "no-delete"},
		{"network filter sees no method", deny, sim.RBACInput{}, true, ""},
		{"deny POST /admin", deny, sim.RBACInput{Request: req("POST", "/admin/x?y")}, false, "no-admin"},
		{"GET /admin is fine", deny, sim.RBACInput{Request: req("GET", "/admin")}, true, ""},
		{"root may POST /admin", deny, sim.RBACInput{TLS: true, PeerURIs: []string{"spiffe://td/ns/ops/sa/root"}, Request: req("POST", "/admin")}, true, ""},
		{"nil rules allow", nil, sim.RBACInput{}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := sim.EvalRBAC(tc.cfg, tc.in)
			if r.Allowed != tc.allow || r.Policy != tc.policy {
				t.Errorf("got %+v, want allowed=%v policy=%q", r, tc.allow, tc.policy)
			}
		})
	}
}
