package sim

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netlocalrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/local_ratelimit/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URLs of the extensions the walk understands. Envoy picks an
// extension by its typed_config's type (the filter name is only a
// fallback), so the walk does too.
const (
	typeOriginalDst   = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
	typeTLSInspector  = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
	typeHTTPInspector = "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
	typeHCM           = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	typeTCPProxy      = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	typeNetRBAC       = "envoy.extensions.filters.network.rbac.v3.RBAC"
	typeHTTPRBAC      = "envoy.extensions.filters.http.rbac.v3.RBAC"
	typeRouter        = "envoy.extensions.filters.http.router.v3.Router"
	typeDownstreamTLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	typeUpstreamTLS   = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)

// appSourcePort is the ephemeral port of every simulated client socket.
const appSourcePort = 40000

// defaultListenerFiltersTimeout: Envoy's listener_filters_timeout default
// (ListenerImpl: PROTOBUF_GET_MS_OR_DEFAULT(config, listener_filters_timeout,
// 15000) in source/common/listener_manager/listener_impl.cc).
const defaultListenerFiltersTimeout = "15s"

// conn is one TCP connection on its way.
type conn struct {
	src, dst netip.AddrPort
	uid      int      // the owning socket's user; -1 from outside the World
	tls      []*hello // TLS layers, outermost first
	proto    Protocol
	// app is what the calling application speaks, which the serving
	// application is taken to speak too; proto is what is on the wire
	// now (a proxy may change HTTP/2 to HTTP/1.1 on the way).
	app Protocol
	req *Request
}

// hello is a TLS ClientHello and what the client will check.
type hello struct {
	sni      string
	alpn     []string
	clientID string // the URI SAN of the certificate the client presents
	// verify: the client checks the server's SANs against sans.
	verify bool
	sans   []*matcherv3.StringMatcher
	// by names the originator: the application, or a sidecar.
	by   string
	mesh bool
}

// downstream is what a filter chain knows of its connection.
type downstream struct {
	local, remote netip.AddrPort
	restored      bool // original_dst set local
	outbound      bool // the listener's traffic_direction
	tls           bool
	peerURIs      []string
	sni           string
}

type walker struct {
	w     *World
	trace []string
	hops  int
	seen  map[string]bool
	// state of the last network leg
	mtls        bool
	peerID      string
	passthrough bool
	split       []string
	ids         int // x-request-ids generated, for deterministic values
	// firstUp: the first cluster the caller's sidecar sent to, as Envoy
	// applies it (Verdict.Upstream); nextHash and nextIdle are what the
	// route or tcp_proxy that chose the next cluster says of it.
	firstUp  *Upstream
	nextHash hashChoice
	nextIdle *time.Duration
	// rateLimits: the local rate limit filters passed (Verdict.RateLimits);
	// emptyBuckets is Call.EmptyBuckets.
	rateLimits   []RateLimit
	emptyBuckets bool
	// si is the stream (HTTP request or TCP connection) the innermost
	// filter on the way is handling; accessLog the lines written so far.
	si        *streamInfo
	accessLog []AccessLogLine
	// firstRoute: what the caller's sidecar's route applied
	// (Verdict.Route); fault is the fault filter in effect for the route
	// the HCM being walked chose.
	firstRoute *RoutePolicy
	fault      *Fault
	// streamIdle is the stream idle timeout of the HCM that took the
	// request (stream_idle_timeout, Envoy's 5 minutes when unset).
	streamIdle time.Duration
}

// Walk runs one call through the World and returns its trace and verdict.
// It always ends: a connection that more than MaxHops listeners accept, or
// that returns to a listener it passed with the same destination, is a
// Loop.
func (w *World) Walk(call Call) Result {
	k := &walker{w: w, seen: map[string]bool{}, emptyBuckets: call.EmptyBuckets}
	v := k.start(call)
	if len(v.Split) == 0 {
		v.Split = k.split
	}
	v.Upstream = k.firstUp
	v.RateLimits = k.rateLimits
	v.Route = k.firstRoute
	return Result{Trace: k.trace, Verdict: v, AccessLog: k.accessLog}
}

func (k *walker) logf(format string, args ...any) {
	k.trace = append(k.trace, fmt.Sprintf(format, args...))
}

func (k *walker) start(call Call) Verdict {
	host, portStr, err := net.SplitHostPort(call.To)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil || port <= 0 || port > 65535 {
		return Verdict{Kind: Invalid, Reason: fmt.Sprintf("To %q is not host:port", call.To)}
	}
	dst, err := netip.ParseAddr(host)
	if err != nil {
		addrs := k.w.DNS[host]
		for _, a := range addrs {
			if a.Is6() == call.IPv6 {
				dst = a
				break
			}
		}
		if !dst.IsValid() {
			return Verdict{Kind: Invalid, Reason: fmt.Sprintf("DNS: no %s address for %s", family(call.IPv6), host)}
		}
		k.logf("dns: %s -> %s", host, dst)
	}
	c := conn{dst: netip.AddrPortFrom(dst, uint16(port)), proto: call.Protocol}
	if c.proto == "" {
		c.proto = HTTP1
	}
	c.app = c.proto
	if call.TLS != nil {
		c.tls = []*hello{{sni: call.TLS.SNI, alpn: call.TLS.ALPN, by: "the application"}}
	}
	if c.proto.isHTTP() {
		c.req = newRequest(call)
	}
	if call.From == "" {
		if !call.FromAddr.IsValid() {
			return Verdict{Kind: Invalid, Reason: "a call needs From or FromAddr"}
		}
		c.src, c.uid = netip.AddrPortFrom(call.FromAddr, appSourcePort), -1
		k.logf("outside %s: connect to %s (%s)", call.FromAddr, c.dst, c.describe())
		return k.network(c)
	}
	p := k.w.pod(call.From)
	if p == nil {
		return Verdict{Kind: Invalid, Reason: "no pod " + call.From}
	}
	c.uid = AppUID
	return k.connect(p, c)
}

func newRequest(call Call) *Request {
	h := map[string]string{":method": "GET", ":path": "/", ":scheme": "http", ":authority": call.To}
	if call.Method != "" {
		h[":method"] = call.Method
	}
	if call.Path != "" {
		h[":path"] = call.Path
	}
	if call.Host != "" {
		h[":authority"] = call.Host
	}
	switch call.Protocol {
	case GRPC:
		h[":method"], h["content-type"] = "POST", "application/grpc"
	case WebSocket:
		h["upgrade"], h["connection"] = "websocket", "upgrade"
	}
	for k, v := range call.Headers {
		h[strings.ToLower(k)] = v
	}
	return &Request{Headers: h}
}

func (c conn) describe() string {
	s := string(c.proto)
	if c.req != nil {
		s += fmt.Sprintf(" %s %s Host %s", c.req.Headers[":method"], c.req.path(), c.req.Headers[":authority"])
	}
	for _, h := range c.tls {
		s = fmt.Sprintf("TLS from %s (SNI %q, ALPN %v) around %s", h.by, h.sni, h.alpn, s)
	}
	return s
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

func is6(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }

func loopback(v6 bool) netip.Addr {
	if v6 {
		return netip.IPv6Loopback()
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// connect opens c from inside pod p: nat OUTPUT decides whether it is
// captured; a connection to a local address stays in the pod (over lo).
func (k *walker) connect(p *Pod, c conn) Verdict {
	v6 := is6(c.dst.Addr())
	local := c.dst.Addr().IsLoopback() || p.owns(c.dst.Addr())
	out := "eth0"
	if local {
		out = "lo"
	}
	if !c.src.IsValid() || !c.src.Addr().IsValid() || c.src.Addr().IsUnspecified() {
		port := uint16(appSourcePort)
		if c.src.IsValid() && c.src.Port() != 0 {
			port = c.src.Port()
		}
		var a netip.Addr
		switch {
		case c.dst.Addr().IsLoopback():
			a = loopback(v6)
		case local:
			a = c.dst.Addr()
		default:
			var ok bool
			if a, ok = p.address(v6); !ok {
				return Verdict{Kind: Refused, Reason: fmt.Sprintf("pod %s has no %s address to reach %s", p.Key(), family(v6), c.dst)}
			}
		}
		c.src = netip.AddrPortFrom(a, port)
	} else if c.src.Port() == 0 {
		c.src = netip.AddrPortFrom(c.src.Addr(), appSourcePort)
	}
	who := "app"
	if c.uid == ProxyUID {
		who = "sidecar"
	}
	k.logf("%s %s: connect %s -> %s as uid %d via %s (%s)", p.Key(), who, c.src, c.dst, c.uid, out, c.describe())
	nat, tool := p.nat(v6), "iptables"
	if v6 {
		tool = "ip6tables"
	}
	if nat == nil {
		k.logf("%s: no %s nat rules: not captured", p.Key(), tool)
	}
	nv := nat.Eval("OUTPUT", Packet{Src: c.src, Dst: c.dst, Out: out, UID: c.uid, GID: c.uid})
	switch {
	case nv.Dropped:
		return Verdict{Kind: Reset, Reason: fmt.Sprintf("%s nat OUTPUT drops it (%s)", tool, nv.Rule)}
	case nv.RedirectTo != 0:
		k.logf("%s: %s nat OUTPUT: %s -> REDIRECT to %s", p.Key(), tool, nv.Rule, netip.AddrPortFrom(loopback(v6), uint16(nv.RedirectTo)))
		return k.accept(p, netip.AddrPortFrom(loopback(v6), uint16(nv.RedirectTo)), c.dst, c)
	case nat != nil:
		rule := nv.Rule
		if rule == "" {
			rule = "chain policy"
		}
		k.logf("%s: %s nat OUTPUT: not captured (%s)", p.Key(), tool, rule)
	}
	if local {
		return k.accept(p, c.dst, c.dst, c)
	}
	return k.network(c)
}

// network carries c off its pod: kube-proxy translates a cluster IP to an
// endpoint, then the packet reaches the pod that owns the address, or an
// address outside the World.
func (k *walker) network(c conn) Verdict {
	if svc, sp := k.w.service(c.dst); svc != nil {
		// kube-proxy balances a cluster IP over the endpoints of its own
		// family (an IPv6 cluster IP is served by the IPv6 EndpointSlices).
		var eps []netip.AddrPort
		if sp != nil {
			for _, e := range sp.Endpoints {
				if is6(e.Addr()) == is6(c.dst.Addr()) {
					eps = append(eps, e)
				}
			}
		}
		if len(eps) == 0 {
			// kube-proxy rejects connections to a Service port without
			// endpoints (ICMP port unreachable / REJECT).
			return Verdict{Kind: Refused, Reason: fmt.Sprintf("kube-proxy: %s/%s has no endpoints on %s", svc.Namespace, svc.Name, c.dst)}
		}
		k.logf("kube-proxy: %s (%s/%s) -> %s (1 of %d)", c.dst, svc.Namespace, svc.Name, eps[0], len(eps))
		c.dst = eps[0]
	}
	p := k.w.podAt(c.dst.Addr())
	if p == nil {
		k.logf("network: %s is outside the World", c.dst)
		return Verdict{Kind: Delivered, Addr: c.dst}
	}
	return k.ingress(p, c)
}

// ingress: a connection from the network arrives at pod p; nat PREROUTING
// decides whether it is captured.
func (k *walker) ingress(p *Pod, c conn) Verdict {
	k.mtls, k.peerID = false, ""
	v6 := is6(c.dst.Addr())
	nat, tool := p.nat(v6), "iptables"
	if v6 {
		tool = "ip6tables"
	}
	k.logf("%s: arrives %s -> %s", p.Key(), c.src, c.dst)
	if nat == nil {
		k.logf("%s: no %s nat rules: not captured", p.Key(), tool)
	}
	nv := nat.Eval("PREROUTING", Packet{Src: c.src, Dst: c.dst, In: "eth0", UID: -1, GID: -1})
	switch {
	case nv.Dropped:
		return Verdict{Kind: Reset, Reason: fmt.Sprintf("%s nat PREROUTING drops it (%s)", tool, nv.Rule)}
	case nv.RedirectTo != 0:
		to := netip.AddrPortFrom(c.dst.Addr(), uint16(nv.RedirectTo))
		k.logf("%s: %s nat PREROUTING: %s -> REDIRECT to %s", p.Key(), tool, nv.Rule, to)
		return k.accept(p, to, c.dst, c)
	case nat != nil:
		rule := nv.Rule
		if rule == "" {
			rule = "chain policy"
		}
		k.logf("%s: %s nat PREROUTING: not captured (%s)", p.Key(), tool, rule)
	}
	return k.accept(p, c.dst, c.dst, c)
}

// accept finds the socket that takes a connection to local in pod p: the
// most specific bind wins (an exact address before a wildcard), as in
// Linux's socket lookup. orig is the destination before any REDIRECT
// (SO_ORIGINAL_DST).
func (k *walker) accept(p *Pod, local, orig netip.AddrPort, c conn) Verdict {
	k.hops++
	if k.hops > MaxHops {
		return Verdict{Kind: Loop, Reason: fmt.Sprintf("more than %d listeners took the connection", MaxHops)}
	}
	var best *listenerv3.Listener
	bestScore := 0
	if p.Proxy != nil {
		for _, l := range p.Proxy.Listeners {
			// bind_to_port false: Envoy opens no socket for the listener;
			// it only takes connections handed off by use_original_dst.
			if bp := l.GetBindToPort(); bp != nil && !bp.GetValue() {
				continue
			}
			if s := listenerBinds(l, local); s > bestScore {
				best, bestScore = l, s
			}
		}
	}
	var app *AppSocket
	for i := range p.Apps {
		if s := bindScore(p.Apps[i].Bind, p.Apps[i].Port, true, local); s > bestScore {
			app, bestScore, best = &p.Apps[i], s, nil
		}
	}
	switch {
	case best != nil:
		return k.listener(p, best, local, orig, c)
	case app != nil:
		return k.deliver(p, app, local, c)
	}
	return Verdict{Kind: Refused, Reason: fmt.Sprintf("nothing in %s listens on %s", p.Key(), local)}
}

// bindScore: 2 for a socket bound to exactly a, 1 for a wildcard bind of
// a's family, 0 otherwise. dual: a [::] bind also takes IPv4 (the socket
// is not IPV6_V6ONLY).
func bindScore(bind netip.Addr, port uint16, dual bool, a netip.AddrPort) int {
	if port != a.Port() {
		return 0
	}
	addr := a.Addr().Unmap()
	switch {
	case bind.Unmap() == addr:
		return 2
	case bind == netip.IPv4Unspecified() && addr.Is4():
		return 1
	case bind == netip.IPv6Unspecified() && (addr.Is6() || dual):
		return 1
	}
	return 0
}

// listenerBinds scores a listener's address and additional_addresses. Envoy
// binds "::" with IPV6_V6ONLY unless the address sets ipv4_compat.
func listenerBinds(l *listenerv3.Listener, a netip.AddrPort) int {
	best := 0
	addrs := []*corev3.Address{l.GetAddress()}
	for _, aa := range l.GetAdditionalAddresses() {
		addrs = append(addrs, aa.GetAddress())
	}
	for _, ad := range addrs {
		sa := ad.GetSocketAddress()
		ip, err := netip.ParseAddr(sa.GetAddress())
		if err != nil {
			continue
		}
		if s := bindScore(ip, uint16(sa.GetPortValue()), sa.GetIpv4Compat(), a); s > best {
			best = s
		}
	}
	return best
}

func typeOf(a *anypb.Any) string {
	u := a.GetTypeUrl()
	return u[strings.LastIndex(u, "/")+1:]
}

func hasListenerFilter(l *listenerv3.Listener, typ string) bool {
	return runsListenerFilter(l, typ, netip.AddrPort{})
}

// runsListenerFilter: the listener has the filter and its filter_disabled
// predicate does not hold for a connection to local (ActiveTcpSocket
// skips a filter whose predicate matches: ListenerFilterMatcher in
// source/common/network/filter_matcher.cc). An invalid local address
// only asks whether the listener has the filter.
func runsListenerFilter(l *listenerv3.Listener, typ string, local netip.AddrPort) bool {
	for _, f := range l.GetListenerFilters() {
		if typeOf(f.GetTypedConfig()) == typ {
			return !local.IsValid() || f.GetFilterDisabled() == nil || !filterPredicate(f.GetFilterDisabled(), local)
		}
	}
	return false
}

// filterPredicate is a ListenerFilterChainMatchPredicate: any_match,
// not_match, and_match, or_match, destination_port_range ([start, end)).
func filterPredicate(p *listenerv3.ListenerFilterChainMatchPredicate, local netip.AddrPort) bool {
	switch r := p.GetRule().(type) {
	case *listenerv3.ListenerFilterChainMatchPredicate_AnyMatch:
		return r.AnyMatch
	case *listenerv3.ListenerFilterChainMatchPredicate_NotMatch:
		return !filterPredicate(r.NotMatch, local)
	case *listenerv3.ListenerFilterChainMatchPredicate_AndMatch:
		for _, q := range r.AndMatch.GetRules() {
			if !filterPredicate(q, local) {
				return false
			}
		}
		return true
	case *listenerv3.ListenerFilterChainMatchPredicate_OrMatch:
		for _, q := range r.OrMatch.GetRules() {
			if filterPredicate(q, local) {
				return true
			}
		}
		return false
	case *listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange:
		port := int32(local.Port())
		return port >= r.DestinationPortRange.GetStart() && port < r.DestinationPortRange.GetEnd()
	}
	return false
}

// listener runs Envoy's listener: listener filters, then the filter chain.
func (k *walker) listener(p *Pod, l *listenerv3.Listener, local, orig netip.AddrPort, c conn) Verdict {
	ds := downstream{local: local, remote: c.src, outbound: l.GetTrafficDirection() == corev3.TrafficDirection_OUTBOUND}
	// original_dst (source/extensions/filters/listener/original_dst):
	// the local address becomes SO_ORIGINAL_DST, which for a connection
	// no REDIRECT touched is the local address itself.
	if hasListenerFilter(l, typeOriginalDst) {
		ds.local, ds.restored = orig, true
	}
	k.logf("%s envoy: listener %q takes %s (local address %s)", p.Key(), l.GetName(), local, ds.local)
	key := p.Key() + "|" + l.GetName() + "|" + ds.local.String()
	if k.seen[key] {
		return Verdict{Kind: Loop, Reason: fmt.Sprintf("the connection to %s came back to listener %q of %s", ds.local, l.GetName(), p.Key())}
	}
	k.seen[key] = true
	// The listener filters run first, on the listener that accepted the
	// connection; only when they are done does use_original_dst look for
	// another listener (ActiveTcpSocket::newConnection), whose own
	// listener filters then run on the same socket. What an inspector
	// detected stays on the socket (ConnectionSocketImpl keeps the
	// detected transport and application protocols), so either
	// listener's inspectors count.
	if v, ok := k.listenerFiltersWait(p, l, ds.local, c); !ok {
		return v
	}
	tlsInspector, httpInspector := runsListenerFilter(l, typeTLSInspector, ds.local), runsListenerFilter(l, typeHTTPInspector, ds.local)
	// use_original_dst hands a restored connection to the listener bound
	// to the original destination, when one exists (Listener docs,
	// use_original_dst; ConnectionHandlerImpl::getBalancedHandlerByAddress),
	// whether or not that listener binds a socket of its own
	// (bind_to_port: false is what such listeners are for).
	if l.GetUseOriginalDst().GetValue() && ds.restored {
		var to *listenerv3.Listener
		score := 0
		for _, o := range p.Proxy.Listeners {
			if s := listenerBinds(o, ds.local); o != l && s > score {
				to, score = o, s
			}
		}
		if to != nil {
			k.logf("%s envoy: use_original_dst hands it to listener %q", p.Key(), to.GetName())
			l = to
			ds.outbound = l.GetTrafficDirection() == corev3.TrafficDirection_OUTBOUND
			if v, ok := k.listenerFiltersWait(p, l, ds.local, c); !ok {
				return v
			}
			tlsInspector = tlsInspector || runsListenerFilter(l, typeTLSInspector, ds.local)
			httpInspector = httpInspector || runsListenerFilter(l, typeHTTPInspector, ds.local)
		}
	}
	seen := Seen{Local: ds.local, Remote: c.src, TransportProtocol: "raw_buffer"}
	if tlsInspector && len(c.tls) > 0 {
		seen.TransportProtocol, seen.ServerName, seen.ALPN = "tls", c.tls[0].sni, c.tls[0].alpn
	}
	if httpInspector && len(c.tls) == 0 && c.proto.isHTTP() {
		seen.ALPN = []string{"http/1.1"}
		if c.proto == H2C || c.proto == GRPC {
			seen.ALPN = []string{"h2c"}
		}
	}
	if len(c.tls) > 0 {
		ds.sni = c.tls[0].sni
	}
	fc, err := MatchFilterChain(l, seen)
	if err != nil {
		return Verdict{Kind: Reset, Reason: err.Error()}
	}
	if fc == nil {
		return Verdict{Kind: NoRoute, Reason: fmt.Sprintf("listener %q: no filter chain matches %s (transport %s, ALPN %v): Envoy closes the connection (NR)", l.GetName(), ds.local, seen.TransportProtocol, seen.ALPN)}
	}
	which := "filter chain"
	if fc == l.GetDefaultFilterChain() {
		which = "default filter chain"
	}
	k.logf("%s envoy: %s %q (transport %s, SNI %q, ALPN %v)", p.Key(), which, fc.GetName(), seen.TransportProtocol, seen.ServerName, seen.ALPN)
	return k.chain(p, fc, ds, c)
}

// listenerFiltersWait: tls_inspector and http_inspector wait for the
// client's first bytes. A server-first protocol sends none: after
// listener_filters_timeout the socket is closed unless
// continue_on_listener_filters_timeout (ActiveTcpSocket::onTimeout in
// source/common/listener_manager/active_tcp_socket.cc).
func (k *walker) listenerFiltersWait(p *Pod, l *listenerv3.Listener, local netip.AddrPort, c conn) (Verdict, bool) {
	if !runsListenerFilter(l, typeTLSInspector, local) && !runsListenerFilter(l, typeHTTPInspector, local) {
		return Verdict{}, true
	}
	if c.proto != ServerFirst || len(c.tls) > 0 {
		return Verdict{}, true
	}
	timeout := defaultListenerFiltersTimeout
	if t := l.GetListenerFiltersTimeout(); t != nil {
		timeout = t.AsDuration().String()
	}
	if !l.GetContinueOnListenerFiltersTimeout() {
		return Verdict{Kind: Reset, Reason: fmt.Sprintf("listener %q: its listener filters wait for the client to speak, a server-first client never does: closed after %s (continue_on_listener_filters_timeout is off)", l.GetName(), timeout)}, false
	}
	k.logf("%s envoy: listener %q: listener filters time out after %s and continue", p.Key(), l.GetName(), timeout)
	return Verdict{}, true
}

// chain runs a filter chain: its transport socket, then its network
// filters in order.
func (k *walker) chain(p *Pod, fc *listenerv3.FilterChain, ds downstream, c conn) Verdict {
	if ts := fc.GetTransportSocket(); ts != nil && typeOf(ts.GetTypedConfig()) == typeDownstreamTLS {
		ctx := &tlsv3.DownstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
			return Verdict{Kind: Invalid, Reason: err.Error()}
		}
		if v, ok := k.terminateTLS(p, ctx, &ds, &c); !ok {
			return v
		}
	}
	// The connection's stream info: the network RBAC filters write to it
	// and tcp_proxy logs it.
	prev := k.si
	k.si = newStreamInfo(ds, false)
	defer func() { k.si = prev }()
	for i, f := range fc.GetFilters() {
		switch typeOf(f.GetTypedConfig()) {
		case typeNetRBAC:
			cfg := &rbacnetv3.RBAC{}
			if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
				return Verdict{Kind: Invalid, Reason: err.Error()}
			}
			if v, ok := k.rbac(p, f.GetName(), rbacPrefixes{"", cfg.GetShadowRulesStatPrefix()}, cfg.GetRules(), cfg.GetShadowRules(), ds, nil, 0); !ok {
				k.closedBeforeProxy(p, fc.GetFilters()[i+1:], v)
				return v
			}
		case typeNetLocalRateLimit:
			cfg := &netlocalrlv3.LocalRateLimit{}
			if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
				return Verdict{Kind: Invalid, Reason: err.Error()}
			}
			if v, ok := k.netLocalRateLimit(p, f.GetName(), cfg); !ok {
				return v
			}
		case typeHCM:
			cfg := &hcmv3.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
				return Verdict{Kind: Invalid, Reason: err.Error()}
			}
			return k.http(p, cfg, ds, c)
		case typeTCPProxy:
			cfg := &tcpproxyv3.TcpProxy{}
			if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
				return Verdict{Kind: Invalid, Reason: err.Error()}
			}
			name := cfg.GetCluster()
			if wc := cfg.GetWeightedClusters(); wc != nil {
				var ws []weighted
				for _, cw := range wc.GetClusters() {
					ws = append(ws, weighted{cw.GetName(), cw.GetWeight()})
				}
				name = k.pick(ws)
			}
			k.logf("%s envoy: tcp_proxy %q -> cluster %q", p.Key(), cfg.GetStatPrefix(), name)
			// tcp_proxy's idle_timeout (default 1h, tcp_proxy.proto)
			// closes the connection; its hash policy feeds the cluster.
			idle := envoyIdleTimeout
			if d := cfg.GetIdleTimeout(); d != nil {
				idle = d.AsDuration()
			}
			k.nextHash, k.nextIdle = tcpHash(cfg, ds.remote), &idle
			v := k.upstream(p, name, ds, c, false)
			k.writeLogs(p, "tcp_proxy "+cfg.GetStatPrefix(), cfg.GetAccessLog(), k.si, v)
			return v
		default:
			k.logf("%s envoy: network filter %q is not simulated: skipped", p.Key(), f.GetName())
		}
	}
	return Verdict{Kind: Reset, Reason: fmt.Sprintf("filter chain %q ends without a terminal filter", fc.GetName())}
}

// terminateTLS is a DownstreamTlsContext's handshake. The server presents
// the pod's workload certificate (the only one a weft sidecar holds); the
// client checks its SANs when it verifies; a required client certificate
// must be there. Trust bundles are assumed shared within the World.
func (k *walker) terminateTLS(p *Pod, ctx *tlsv3.DownstreamTlsContext, ds *downstream, c *conn) (Verdict, bool) {
	if len(c.tls) == 0 {
		return Verdict{Kind: TLSFailure, Reason: fmt.Sprintf("%s: plaintext to a filter chain that terminates TLS: the handshake fails", p.Key())}, false
	}
	h := c.tls[0]
	if ctx.GetRequireClientCertificate().GetValue() && h.clientID == "" {
		return Verdict{Kind: TLSFailure, Reason: fmt.Sprintf("%s requires a client certificate; %s presented none", p.Key(), h.by)}, false
	}
	if h.verify {
		if p.Identity == "" || !anyString(h.sans, p.Identity) {
			return Verdict{Kind: TLSFailure, Reason: fmt.Sprintf("%s expected the server to be one of %s; %s presented %q", h.by, sanList(h.sans), p.Key(), p.Identity)}, false
		}
	}
	k.logf("%s envoy: TLS terminated (client certificate %q, SNI %q, ALPN %v)", p.Key(), h.clientID, h.sni, h.alpn)
	ds.tls, ds.sni = true, h.sni
	if h.clientID != "" {
		ds.peerURIs = []string{h.clientID}
	}
	k.mtls, k.peerID = h.mesh && h.clientID != "", h.clientID
	c.tls = c.tls[1:]
	return Verdict{}, true
}

func anyString(ms []*matcherv3.StringMatcher, v string) bool {
	if len(ms) == 0 {
		return true // no SAN check: any certificate from the trust bundle
	}
	for _, m := range ms {
		if MatchString(m, v) {
			return true
		}
	}
	return false
}

func sanList(ms []*matcherv3.StringMatcher) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.GetExact()+m.GetPrefix())
	}
	return "[" + strings.Join(s, " ") + "]"
}
