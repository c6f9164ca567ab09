package sim

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// Upstream is what Envoy applies to a request (or connection) the caller's
// sidecar sends through a cluster, read from the cluster, the route or
// tcp_proxy that chose it, and the request, with Envoy's defaults for what
// they leave out. The walk does not model load or time: it reports the
// limits and detectors in effect, and which request attribute a consistent
// hash reads, so that a test can tell the configuration does what a policy
// asked (docs/design/110).
type Upstream struct {
	Cluster string
	// LB is the cluster's lb_policy: ROUND_ROBIN (Envoy's default),
	// LEAST_REQUEST, RING_HASH, MAGLEV, RANDOM, CLUSTER_PROVIDED.
	LB string
	// Hash is what the request hashed on when the LB is RING_HASH or
	// MAGLEV, such as "header x-user-id=alice", "source IP 10.1.0.1" or
	// "cookie session=abc"; "" when nothing produced a hash (Envoy then
	// picks a random endpoint) or the LB does not hash.
	Hash string
	// CookieSet: the request had no cookie and a hash policy's TTL has the
	// sidecar create it (its name), to hash on and to set on the response.
	CookieSet string
	// Circuit breakers of the DEFAULT priority, Envoy's defaults filled in
	// (1024, 1024, 1024, 3: envoy/config/cluster/v3/circuit_breaker.proto).
	// With a RetryBudget, Envoy ignores MaxRetries.
	MaxConnections, MaxPendingRequests, MaxRequests, MaxRetries uint32
	RetryBudget                                                 *RetryBudget
	// Outlier is nil without outlier_detection.
	Outlier *Outlier
	// ConnectTimeout: the cluster's, else Envoy's 5s. IdleTimeout: the
	// cluster's HTTP idle_timeout for HTTP, tcp_proxy's idle_timeout for
	// TCP, else Envoy's 1h (0: never).
	ConnectTimeout, IdleTimeout time.Duration
	// Keepalive is nil when the cluster does not set tcp_keepalive;
	// zero fields are the kernel's.
	Keepalive *Keepalive
}

// RetryBudget caps concurrent retries to a share of active requests.
type RetryBudget struct {
	Percent        float64
	MinConcurrency uint32
}

// Outlier is an outlier_detection with Envoy's defaults
// (envoy/config/cluster/v3/outlier_detection.proto). A detector whose
// enforcing percentage is 0 never ejects and is reported as 0 here:
// consecutive 5xx (enforced by default), consecutive gateway failures and
// failure percentage (not enforced by default).
type Outlier struct {
	Consecutive5xx, ConsecutiveGatewayFailure uint32
	// FailurePercentageThreshold with its minimum hosts and request volume.
	FailurePercentageThreshold, FailurePercentageMinimumHosts, FailurePercentageRequestVolume uint32
	Interval, BaseEjectionTime                                                                time.Duration
	MaxEjectionPercent                                                                        uint32
}

// Keepalive is a cluster's upstream TCP keepalive, in seconds.
type Keepalive struct {
	Probes, Time, Interval uint32
}

func (u *Upstream) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster %q: %s", u.Cluster, u.LB)
	if u.LB == "RING_HASH" || u.LB == "MAGLEV" {
		if u.Hash == "" {
			b.WriteString(" (no hash: a random endpoint)")
		} else {
			fmt.Fprintf(&b, " on %s", u.Hash)
		}
	}
	fmt.Fprintf(&b, "; circuit breakers: %d connections, %d pending, %d requests, ", u.MaxConnections, u.MaxPendingRequests, u.MaxRequests)
	if u.RetryBudget != nil {
		fmt.Fprintf(&b, "retry budget %g%% (at least %d)", u.RetryBudget.Percent, u.RetryBudget.MinConcurrency)
	} else {
		fmt.Fprintf(&b, "%d retries", u.MaxRetries)
	}
	if o := u.Outlier; o != nil {
		var on []string
		if o.Consecutive5xx > 0 {
			on = append(on, fmt.Sprintf("%d consecutive 5xx", o.Consecutive5xx))
		}
		if o.ConsecutiveGatewayFailure > 0 {
			on = append(on, fmt.Sprintf("%d consecutive gateway failures", o.ConsecutiveGatewayFailure))
		}
		if o.FailurePercentageThreshold > 0 {
			on = append(on, fmt.Sprintf("%d%% failed of %d requests (%d endpoints or more)", o.FailurePercentageThreshold, o.FailurePercentageRequestVolume, o.FailurePercentageMinimumHosts))
		}
		if len(on) == 0 {
			on = []string{"success rate only"}
		}
		fmt.Fprintf(&b, "; outlier detection every %s: %s; eject for %s, at most %d%%", o.Interval, strings.Join(on, ", "), o.BaseEjectionTime, o.MaxEjectionPercent)
	} else {
		b.WriteString("; no outlier detection")
	}
	fmt.Fprintf(&b, "; connect timeout %s, idle timeout %s", u.ConnectTimeout, u.IdleTimeout)
	if k := u.Keepalive; k != nil {
		fmt.Fprintf(&b, ", keepalive (probes %d, time %ds, interval %ds; 0: the kernel's)", k.Probes, k.Time, k.Interval)
	}
	return b.String()
}

// Envoy's defaults for what a cluster leaves out.
const (
	envoyMaxConnections     = 1024
	envoyMaxPendingRequests = 1024
	envoyMaxRequests        = 1024
	envoyMaxRetries         = 3
	envoyConnectTimeout     = 5 * time.Second
	envoyIdleTimeout        = time.Hour
)

// upstreamOf reads a cluster as Envoy applies it (ClusterInfoImpl in
// source/common/upstream/upstream_impl.cc and the protos' documented
// defaults). idle is the idle timeout of the connection when tcp_proxy
// set it (TCP), else nil: the cluster's HTTP option decides.
func upstreamOf(cl *clusterv3.Cluster, tcpIdle *time.Duration) *Upstream {
	u := &Upstream{Cluster: cl.GetName(), LB: cl.GetLbPolicy().String(),
		MaxConnections: envoyMaxConnections, MaxPendingRequests: envoyMaxPendingRequests, MaxRequests: envoyMaxRequests, MaxRetries: envoyMaxRetries,
		ConnectTimeout: envoyConnectTimeout, IdleTimeout: envoyIdleTimeout}
	// Only the DEFAULT priority's thresholds apply to requests without a
	// priority, which is every request a weft route sends.
	for _, t := range cl.GetCircuitBreakers().GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		if v := t.GetMaxConnections(); v != nil {
			u.MaxConnections = v.GetValue()
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			u.MaxPendingRequests = v.GetValue()
		}
		if v := t.GetMaxRequests(); v != nil {
			u.MaxRequests = v.GetValue()
		}
		if v := t.GetMaxRetries(); v != nil {
			u.MaxRetries = v.GetValue()
		}
		if rb := t.GetRetryBudget(); rb != nil {
			// retry_budget's own defaults: 20% and 3.
			u.RetryBudget = &RetryBudget{Percent: 20, MinConcurrency: 3}
			if p := rb.GetBudgetPercent(); p != nil {
				u.RetryBudget.Percent = p.GetValue()
			}
			if m := rb.GetMinRetryConcurrency(); m != nil {
				u.RetryBudget.MinConcurrency = m.GetValue()
			}
		}
		break
	}
	if od := cl.GetOutlierDetection(); od != nil {
		o := &Outlier{Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 10}
		u32 := func(v interface{ GetValue() uint32 }, def uint32, set bool) uint32 {
			if set {
				return v.GetValue()
			}
			return def
		}
		if u32(od.GetEnforcingConsecutive_5Xx(), 100, od.GetEnforcingConsecutive_5Xx() != nil) > 0 {
			o.Consecutive5xx = u32(od.GetConsecutive_5Xx(), 5, od.GetConsecutive_5Xx() != nil)
		}
		if u32(od.GetEnforcingConsecutiveGatewayFailure(), 0, od.GetEnforcingConsecutiveGatewayFailure() != nil) > 0 {
			o.ConsecutiveGatewayFailure = u32(od.GetConsecutiveGatewayFailure(), 5, od.GetConsecutiveGatewayFailure() != nil)
		}
		if u32(od.GetEnforcingFailurePercentage(), 0, od.GetEnforcingFailurePercentage() != nil) > 0 {
			o.FailurePercentageThreshold = u32(od.GetFailurePercentageThreshold(), 85, od.GetFailurePercentageThreshold() != nil)
			o.FailurePercentageMinimumHosts = u32(od.GetFailurePercentageMinimumHosts(), 5, od.GetFailurePercentageMinimumHosts() != nil)
			o.FailurePercentageRequestVolume = u32(od.GetFailurePercentageRequestVolume(), 50, od.GetFailurePercentageRequestVolume() != nil)
		}
		if d := od.GetInterval(); d != nil {
			o.Interval = d.AsDuration()
		}
		if d := od.GetBaseEjectionTime(); d != nil {
			o.BaseEjectionTime = d.AsDuration()
		}
		if v := od.GetMaxEjectionPercent(); v != nil {
			o.MaxEjectionPercent = v.GetValue()
		}
		u.Outlier = o
	}
	if d := cl.GetConnectTimeout(); d != nil {
		u.ConnectTimeout = d.AsDuration()
	}
	if tcpIdle != nil {
		u.IdleTimeout = *tcpIdle
	} else if a := cl.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; a != nil {
		o := &httpv3.HttpProtocolOptions{}
		if err := a.UnmarshalTo(o); err == nil {
			if d := o.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil {
				u.IdleTimeout = d.AsDuration()
			}
		}
	}
	if ka := cl.GetUpstreamConnectionOptions().GetTcpKeepalive(); ka != nil {
		u.Keepalive = &Keepalive{Probes: ka.GetKeepaliveProbes().GetValue(), Time: ka.GetKeepaliveTime().GetValue(), Interval: ka.GetKeepaliveInterval().GetValue()}
	}
	return u
}

// hashChoice is what a route's or tcp_proxy's hash policies read of one
// request.
type hashChoice struct {
	key       string
	cookieSet string
}

// routeHash evaluates a route's hash policies on a request as Envoy's
// HashPolicyImpl::generateHash does (source/common/http/hash_policy.cc):
// each policy that yields a value adds it to the hash, in order, and a
// terminal one that yields stops the rest. A header hashes its value; a
// cookie its value, or, when the request lacks it and the policy has a
// TTL, a value the sidecar generates and sets on the response; the
// connection's source IP the downstream peer's address. Other policies are
// not simulated (and said so).
func (k *walker) routeHash(p *Pod, ra *routev3.RouteAction, req *Request, remote netip.AddrPort) hashChoice {
	var parts []string
	var hc hashChoice
	for _, hp := range ra.GetHashPolicy() {
		before := len(parts)
		switch {
		case hp.GetHeader() != nil:
			if v, ok := req.get(hp.GetHeader().GetHeaderName()); ok {
				parts = append(parts, fmt.Sprintf("header %s=%s", strings.ToLower(hp.GetHeader().GetHeaderName()), v))
			}
		case hp.GetCookie() != nil:
			c := hp.GetCookie()
			if v, ok := requestCookie(req, c.GetName()); ok {
				parts = append(parts, fmt.Sprintf("cookie %s=%s", c.GetName(), v))
			} else if c.GetTtl() != nil {
				hc.cookieSet = c.GetName()
				parts = append(parts, fmt.Sprintf("cookie %s (generated: Set-Cookie with Max-Age %s, path %q)", c.GetName(), c.GetTtl().AsDuration(), c.GetPath()))
			}
		case hp.GetConnectionProperties().GetSourceIp():
			parts = append(parts, "source IP "+remote.Addr().String())
		default:
			k.logf("%s envoy: hash policy %v is not simulated", p.Key(), hp)
		}
		if hp.GetTerminal() && len(parts) > before {
			break
		}
	}
	hc.key = strings.Join(parts, " + ")
	return hc
}

// tcpHash is tcp_proxy's hash_policy: only the source IP
// (TcpProxy::Filter's hash policy, envoy/type/v3/hash_policy.proto).
func tcpHash(t *tcpproxyv3.TcpProxy, remote netip.AddrPort) hashChoice {
	for _, hp := range t.GetHashPolicy() {
		if hp.GetSourceIp() != nil {
			return hashChoice{key: "source IP " + remote.Addr().String()}
		}
	}
	return hashChoice{}
}

// requestCookie finds a cookie in the request's Cookie header.
func requestCookie(req *Request, name string) (string, bool) {
	raw, ok := req.get("cookie")
	if !ok {
		return "", false
	}
	for _, c := range strings.Split(raw, ";") {
		n, v, found := strings.Cut(strings.TrimSpace(c), "=")
		if found && n == name {
			return v, true
		}
	}
	return "", false
}
