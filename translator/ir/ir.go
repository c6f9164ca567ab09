// Package ir is weft's model of the mesh: what the translator derives from
// Kubernetes objects and weft's policies, and what translator/envoy turns
// into Envoy configuration for each proxy.
//
// The model is plain data, built once per change and never mutated after:
// stages that read it may share it between goroutines without locks. Every
// slice is sorted, so equal inputs give equal models (and equal xDS bytes).
package ir

import (
	"fmt"
	"sort"
	"time"
)

// ClusterDomain is the DNS suffix of Services.
const ClusterDomain = "cluster.local"

// Mesh is the whole model.
type Mesh struct {
	// TrustDomain is the SPIFFE trust domain of every identity.
	TrustDomain string `json:"trustDomain,omitempty"`
	// Services, sorted by namespace then name.
	Services []*Service `json:"services,omitempty"`
	// Namespaces maps a namespace to its mesh-wide settings.
	Namespaces map[string]*Namespace `json:"namespaces,omitempty"`
	// DefaultMTLS applies to namespaces without an override.
	DefaultMTLS MTLSMode `json:"defaultMTLS,omitempty"`
	// Outbound says what happens to traffic to destinations the mesh does
	// not know.
	Outbound OutboundPolicy `json:"outbound,omitempty"`
	// AccessLog and Tracing are the mesh-wide observability settings.
	AccessLog AccessLog `json:"accessLog,omitempty"`
	Tracing   *Tracing  `json:"tracing,omitempty"`

	byKey map[ServiceKey]*Service
}

// Service returns the service with the key, or nil. Services are sorted,
// so this is a binary search: a model that shares all but one Service with
// its predecessor needs no index rebuilt.
func (m *Mesh) Service(k ServiceKey) *Service {
	i := sort.Search(len(m.Services), func(i int) bool { return !m.Services[i].Key.Less(k) })
	if i < len(m.Services) && m.Services[i].Key == k {
		return m.Services[i]
	}
	return nil
}

// Namespace holds per-namespace settings.
type Namespace struct {
	Name string `json:"name,omitempty"`
	// MTLS is this namespace's mode (the mesh default unless its label
	// overrides it).
	MTLS MTLSMode `json:"mtls,omitempty"`
	// AuthPolicies attached to the whole namespace, sorted by creation.
	AuthPolicies []*AuthPolicy `json:"authPolicies,omitempty"`
}

// MTLSMode says whether inbound plaintext is accepted.
type MTLSMode string

const (
	// MTLSPermissive accepts mutual TLS and plaintext.
	MTLSPermissive MTLSMode = "Permissive"
	// MTLSStrict accepts mutual TLS only.
	MTLSStrict MTLSMode = "Strict"
)

// OutboundPolicy is what a sidecar does with traffic to unknown destinations.
type OutboundPolicy string

const (
	// OutboundAllowAny passes such traffic through to its original
	// destination.
	OutboundAllowAny OutboundPolicy = "AllowAny"
	// OutboundRegistryOnly refuses it.
	OutboundRegistryOnly OutboundPolicy = "RegistryOnly"
)

// AccessLog configures Envoy's access log.
type AccessLog struct {
	Enabled bool `json:"enabled,omitempty"`
	JSON    bool `json:"json,omitempty"`
}

// Tracing configures span export.
type Tracing struct {
	// Collector is host:port of an OpenTelemetry (OTLP/gRPC) collector.
	Collector string `json:"collector,omitempty"`
	// SamplingPercent of requests start a trace.
	SamplingPercent float64 `json:"samplingPercent,omitempty"`
}

// ServiceKey names a Service.
type ServiceKey struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
}

func (k ServiceKey) String() string { return k.Namespace + "/" + k.Name }

// Less orders keys by namespace, then name.
func (k ServiceKey) Less(o ServiceKey) bool {
	if k.Namespace != o.Namespace {
		return k.Namespace < o.Namespace
	}
	return k.Name < o.Name
}

// Hostname is the Service's fully qualified DNS name.
func (k ServiceKey) Hostname() string {
	return k.Name + "." + k.Namespace + ".svc." + ClusterDomain
}

// Service is a Kubernetes Service as the mesh sees it.
type Service struct {
	Key ServiceKey `json:"key,omitempty"`
	// ClusterIPs are the virtual IPs; empty for a headless Service.
	ClusterIPs []string `json:"clusterIPs,omitempty"`
	// Headless Services are reached at their endpoints' own addresses.
	Headless bool `json:"headless,omitempty"`
	// Selector picks the pods that serve the Service; a proxy whose labels
	// match serves its ports (inbound). Empty selects nothing.
	Selector map[string]string `json:"selector,omitempty"`
	// Ports, sorted by port number.
	Ports []*Port `json:"ports,omitempty"`
	// ExportTo lists the namespaces whose proxies may see this Service;
	// "*" means every namespace. It always includes the Service's own.
	ExportTo []string `json:"exportTo,omitempty"`
	// AuthPolicies attached to this Service, sorted by creation.
	AuthPolicies []*AuthPolicy `json:"authPolicies,omitempty"`
}

// Port returns the port with the number, or nil.
func (s *Service) Port(n int32) *Port {
	for _, p := range s.Ports {
		if p.Port == n {
			return p
		}
	}
	return nil
}

// ExportedTo says whether proxies in namespace ns may see the Service.
func (s *Service) ExportedTo(ns string) bool {
	if ns == s.Key.Namespace {
		return true
	}
	for _, e := range s.ExportTo {
		if e == "*" || e == ns {
			return true
		}
	}
	return false
}

// Protocol is how the mesh handles a port's traffic.
type Protocol string

const (
	ProtocolHTTP  Protocol = "HTTP"
	ProtocolHTTP2 Protocol = "HTTP2"
	ProtocolGRPC  Protocol = "GRPC"
	ProtocolTCP   Protocol = "TCP"
)

// IsHTTP is true for protocols that Envoy routes per request.
func (p Protocol) IsHTTP() bool { return p != ProtocolTCP }

// Port is one port of a Service, with where its traffic goes.
type Port struct {
	Name     string   `json:"name,omitempty"`
	Port     int32    `json:"port,omitempty"`
	Protocol Protocol `json:"protocol,omitempty"`
	// TargetPort is the container port; TargetPortName is set instead when
	// the Service names it, and then each endpoint carries its own number.
	TargetPort     int32  `json:"targetPort,omitempty"`
	TargetPortName string `json:"targetPortName,omitempty"`
	// Endpoints that serve this port, sorted by address.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// Routes for HTTP protocols, in match order: specific matches first.
	// Always at least one for HTTP ports, but not always a catch-all: an
	// HTTPRoute's rules may leave requests unmatched, and those get 404
	// (docs/design/177). A port no HTTPRoute owns ends with a catch-all.
	// They are the producer's routing: every caller's, but for the
	// namespaces Consumers lists.
	Routes []*Route `json:"routes,omitempty"`
	// Consumers are the GAMMA consumer routes of this port: an HTTPRoute
	// in another namespace than the Service's applies to the callers of
	// its own namespace only, instead of Routes (docs/design/176). Sorted
	// by namespace; at most one per namespace.
	Consumers []*ConsumerRoutes `json:"consumers,omitempty"`
	// Retry applies to every route of this port unless a route has its own;
	// nil means the proxy's defaults.
	Retry *Retry `json:"retry,omitempty"`
	// TCPBackends replaces Endpoints for TCP ports with a traffic split.
	TCPBackends []Backend `json:"tcpBackends,omitempty"`
	// Backend is how callers treat this port's endpoints (a
	// BackendTrafficPolicy); nil means DefaultBackend.
	Backend *BackendPolicy `json:"backend,omitempty"`
	// RateLimit is what the sidecars of this port's endpoints accept (a
	// RateLimitPolicy, enforced inbound); nil means no limit.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// PrefersLocalZone says whether callers of this port prefer endpoints in
// their own zone (a BackendTrafficPolicy's loadBalancer.locality).
func (p *Port) PrefersLocalZone() bool { return p.Backend != nil && p.Backend.PreferLocalZone }

// ConsumerRoutes are the routes a port has for callers in Namespace.
type ConsumerRoutes struct {
	Namespace string   `json:"namespace"`
	Routes    []*Route `json:"routes"`
}

// RoutesFor are the routes that callers in namespace ns take: their
// namespace's consumer routes, if it has some, else the producer's.
func (p *Port) RoutesFor(ns string) []*Route {
	if c := p.ConsumerOf(ns); c != nil {
		return c.Routes
	}
	return p.Routes
}

// ConsumerOf is namespace ns's consumer routes of the port, or nil.
func (p *Port) ConsumerOf(ns string) *ConsumerRoutes {
	for _, c := range p.Consumers {
		if c.Namespace == ns {
			return c
		}
	}
	return nil
}

// AllRoutes calls f with every route of the port: the producer's, then
// each consumer namespace's.
func (p *Port) AllRoutes(f func(*Route)) {
	for _, r := range p.Routes {
		f(r)
	}
	for _, c := range p.Consumers {
		for _, r := range c.Routes {
			f(r)
		}
	}
}

// HasConsumers says whether a port of svc has consumer routes.
func (s *Service) HasConsumers() bool {
	for _, p := range s.Ports {
		if len(p.Consumers) > 0 {
			return true
		}
	}
	return false
}

// ConsumerFor says whether a port of svc has consumer routes for callers
// in namespace ns: their configuration of svc differs from other callers'.
func (s *Service) ConsumerFor(ns string) bool {
	for _, p := range s.Ports {
		if p.ConsumerOf(ns) != nil {
			return true
		}
	}
	return false
}

// BackendPolicy returns the port's backend policy, or DefaultBackend.
func (p *Port) BackendPolicy() *BackendPolicy {
	if p.Backend != nil {
		return p.Backend
	}
	return &DefaultBackend
}

// ClusterName is the Envoy cluster of this port of svc, in the format Istio
// users know: outbound|<port>||<hostname>.
func ClusterName(svc ServiceKey, port int32) string {
	return fmt.Sprintf("outbound|%d||%s", port, svc.Hostname())
}

// Endpoint is one ready or not-ready address of a port.
type Endpoint struct {
	Address string `json:"address,omitempty"`
	Port    int32  `json:"port,omitempty"`
	Ready   bool   `json:"ready,omitempty"`
	// Terminating: not ready, but serving while its pod terminates; used
	// only when no endpoint of the port is ready, as kube-proxy does.
	Terminating bool `json:"terminating,omitempty"`
	// Zone is the topology zone, when the EndpointSlice says it.
	Zone string `json:"zone,omitempty"`
	// Identity is the SPIFFE ID of the pod's service account, when the pod
	// is known; empty otherwise.
	Identity string `json:"identity,omitempty"`
	// Meshed is true when the pod has a weft sidecar, so mutual TLS can be
	// used towards it.
	Meshed bool `json:"meshed,omitempty"`
}

// PolicyRef names the policy object that produced part of the model, with
// the generation that produced it, so that status can say when that
// generation has reached the proxies.
type PolicyRef struct {
	Kind       string `json:"kind,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name,omitempty"`
	Generation int64  `json:"generation,omitempty"`
}

func (r PolicyRef) String() string {
	return fmt.Sprintf("%s %s/%s", r.Kind, r.Namespace, r.Name)
}

// Route is one rule of an HTTP port.
type Route struct {
	// Source is the TrafficSplit or HTTPRoute the route comes from; nil for
	// the Service's implicit route.
	Source *PolicyRef `json:"source,omitempty"`
	// Matches: the route applies when any match holds; none means always.
	Matches []Match `json:"matches,omitempty"`
	// Backends with their weights; zero weights are already dropped, and
	// at least one backend remains unless the route is a Redirect.
	Backends []Backend `json:"backends,omitempty"`
	// Retry overrides the port's retry policy when set.
	Retry *Retry `json:"retry,omitempty"`
	// Timeout bounds the whole request, retries included; 0 means none
	// from the route (the retry policy's applies).
	Timeout Duration `json:"timeout,omitempty"`
	// NoTimeout: the route disables the request timeout (an HTTPRoute's
	// explicit timeouts.request 0s; Gateway API: a zero duration
	// disables it), so the retry policy's timeout does not apply either.
	NoTimeout bool `json:"noTimeout,omitempty"`
	// RequestHeaders and ResponseHeaders change the request before it is
	// forwarded and the response before it is returned (Gateway API's
	// header modifier filters).
	RequestHeaders  *HeaderMods `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderMods `json:"responseHeaders,omitempty"`
	// Redirect answers the request with a redirect instead of forwarding
	// it; the route then has no Backends.
	Redirect *Redirect `json:"redirect,omitempty"`
	// Rewrite changes the forwarded request's path or host.
	Rewrite *Rewrite `json:"rewrite,omitempty"`
	// Mirrors receive a copy of a share of the requests; their responses
	// are ignored.
	Mirrors []Mirror `json:"mirrors,omitempty"`
	// BackendTimeout bounds each try (an HTTPRoute's
	// timeouts.backendRequest): the retry policy's per-try timeout when
	// the route retries, else a bound on the one request; 0 means none.
	BackendTimeout Duration `json:"backendTimeout,omitempty"`
	// NoBackendTimeout: the route disables the per-try timeout (an
	// explicit timeouts.backendRequest 0s), the retry policy's included.
	NoBackendTimeout bool `json:"noBackendTimeout,omitempty"`
	// Fault is injected into the route's requests by the caller's side;
	// nil injects nothing.
	Fault *Fault `json:"fault,omitempty"`
}

// Fault is an injected delay and abort, each on its own share of
// requests (percentages 0-100; 0 turns that part off).
type Fault struct {
	DelayPercent uint32   `json:"delayPercent,omitempty"`
	Delay        Duration `json:"delay,omitempty"`
	AbortPercent uint32   `json:"abortPercent,omitempty"`
	// HTTPStatus, or GRPCStatus when set: the abort's answer.
	HTTPStatus uint32  `json:"httpStatus,omitempty"`
	GRPCStatus *uint32 `json:"grpcStatus,omitempty"`
}

// Targets are the Services the route sends requests to: its backends and
// its mirrors (whose clusters a proxy needs as much).
func (r *Route) Targets() []Backend {
	if len(r.Mirrors) == 0 {
		return r.Backends
	}
	out := append([]Backend(nil), r.Backends...)
	for _, m := range r.Mirrors {
		out = append(out, Backend{Service: m.Service, Port: m.Port, Weight: 1})
	}
	return out
}

// HeaderMods modifies HTTP headers: Remove first, then Set (replacing
// any value), then Add (appending to any value). Names are lower case.
type HeaderMods struct {
	Set    []HeaderValue `json:"set,omitempty"`
	Add    []HeaderValue `json:"add,omitempty"`
	Remove []string      `json:"remove,omitempty"`
}

// HeaderValue is one header.
type HeaderValue struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

// PathRewrite replaces a request's path: the whole of it with FullPath,
// or, when ReplacePrefix, the part the route's PathPrefix match matched
// with Prefix (Gateway API's ReplacePrefixMatch: "" and "/" leave one
// "/"). The query is kept.
type PathRewrite struct {
	FullPath      string `json:"fullPath,omitempty"`
	ReplacePrefix bool   `json:"replacePrefix,omitempty"`
	Prefix        string `json:"prefix,omitempty"`
}

// Redirect is an HTTP redirect; empty fields keep the request's value.
// Port 0 keeps the request's port (Envoy then also drops the scheme's
// default port).
type Redirect struct {
	Scheme     string       `json:"scheme,omitempty"`
	Hostname   string       `json:"hostname,omitempty"`
	Port       int32        `json:"port,omitempty"`
	Path       *PathRewrite `json:"path,omitempty"`
	StatusCode int          `json:"statusCode,omitempty"`
}

// Rewrite changes the forwarded request.
type Rewrite struct {
	Hostname string       `json:"hostname,omitempty"`
	Path     *PathRewrite `json:"path,omitempty"`
}

// Mirror sends a copy of Numerator/Denominator of the requests to a
// Service port.
type Mirror struct {
	Service     ServiceKey `json:"service,omitempty"`
	Port        int32      `json:"port,omitempty"`
	Numerator   uint32     `json:"numerator,omitempty"`
	Denominator uint32     `json:"denominator,omitempty"`
}

// Match is one HTTP request match; all of its parts must hold. At most
// one of PathExact, PathPrefix and PathRegex is set; none matches every
// path.
type Match struct {
	PathExact  string `json:"pathExact,omitempty"`
	PathPrefix string `json:"pathPrefix,omitempty"`
	// PathRegex is an RE2 expression the whole path (without the query)
	// must match.
	PathRegex string        `json:"pathRegex,omitempty"`
	Method    string        `json:"method,omitempty"`
	Headers   []HeaderMatch `json:"headers,omitempty"`
	// QueryParams: each named query parameter must be present and match.
	QueryParams []QueryMatch `json:"queryParams,omitempty"`
}

// HeaderMatch matches one request header.
type HeaderMatch struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
	Regex bool   `json:"regex,omitempty"`
}

// QueryMatch matches one query parameter of the request's path: its
// value equals Value, or fully matches the RE2 expression Value when
// Regex. Names are compared exactly (case-sensitive).
type QueryMatch struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
	Regex bool   `json:"regex,omitempty"`
}

// Backend is a weighted destination. An Unresolved backend stands for the
// share of backends that do not exist: requests sent to it get HTTP 503, so
// a typo shows instead of silently shifting traffic.
type Backend struct {
	Unresolved bool       `json:"unresolved,omitempty"`
	Service    ServiceKey `json:"service,omitempty"`
	Port       int32      `json:"port,omitempty"`
	Weight     uint32     `json:"weight,omitempty"`
	// RequestHeaders and ResponseHeaders apply to requests sent to this
	// backend only (a backendRef's header modifier filters), before the
	// route's own.
	RequestHeaders  *HeaderMods `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderMods `json:"responseHeaders,omitempty"`
}

// Retry is a resolved RetryPolicy.
type Retry struct {
	Source        PolicyRef `json:"source,omitempty"`
	On            []string  `json:"on,omitempty"`
	StatusCodes   []uint32  `json:"statusCodes,omitempty"`
	Attempts      uint32    `json:"attempts,omitempty"`
	PerTryTimeout Duration  `json:"perTryTimeout,omitempty"`
	Timeout       Duration  `json:"timeout,omitempty"`
	// IdleTimeout ends a request whose stream is silent that long (Envoy's
	// route idle_timeout); 0 means none.
	IdleTimeout  Duration `json:"idleTimeout,omitempty"`
	BaseInterval Duration `json:"baseInterval,omitempty"`
	MaxInterval  Duration `json:"maxInterval,omitempty"`
	// BudgetPercent of active requests may be retries, but at least
	// BudgetMinConcurrency retries may always run.
	BudgetPercent        float64 `json:"budgetPercent,omitempty"`
	BudgetMinConcurrency uint32  `json:"budgetMinConcurrency,omitempty"`
}

// BackendPolicy is a resolved BackendTrafficPolicy: what a caller's proxy
// applies to its cluster of a Service port. Every field holds the value in
// effect (the policy's, or the default).
type BackendPolicy struct {
	Source PolicyRef `json:"source,omitempty"`
	// Circuit breakers, per caller's proxy. MaxRetries nil: the route's
	// retry budget, or Envoy's default.
	MaxConnections     uint32  `json:"maxConnections,omitempty"`
	MaxPendingRequests uint32  `json:"maxPendingRequests,omitempty"`
	MaxRequests        uint32  `json:"maxRequests,omitempty"`
	MaxRetries         *uint32 `json:"maxRetries,omitempty"`
	// Outlier detection; a count of 0 turns that detector off.
	Consecutive5xx           uint32             `json:"consecutive5xx,omitempty"`
	ConsecutiveGatewayErrors uint32             `json:"consecutiveGatewayErrors,omitempty"`
	FailurePercentage        *FailurePercentage `json:"failurePercentage,omitempty"`
	Interval                 Duration           `json:"interval,omitempty"`
	BaseEjectionTime         Duration           `json:"baseEjectionTime,omitempty"`
	MaxEjectionPercent       uint32             `json:"maxEjectionPercent,omitempty"`
	// LB is the algorithm; Hash the key of RingHash and Maglev.
	LB   LBAlgorithm `json:"lb,omitempty"`
	Hash *HashKey    `json:"hash,omitempty"`
	// PreferLocalZone: each caller's endpoints are in priorities by
	// locality (its zone, its region, the rest; docs/design/171).
	PreferLocalZone bool `json:"preferLocalZone,omitempty"`
	// Connections. IdleTimeout 0 never closes idle connections;
	// TCPKeepalive nil: no keepalive.
	ConnectTimeout Duration      `json:"connectTimeout,omitempty"`
	IdleTimeout    Duration      `json:"idleTimeout,omitempty"`
	TCPKeepalive   *TCPKeepalive `json:"tcpKeepalive,omitempty"`
}

// DefaultBackend is what a port without a BackendTrafficPolicy gets, and
// what each field of one left out means: the values weft always used
// (1,024 connections, pending and active requests; ejection after 5
// consecutive 5xx, evaluated every 10s, for 30s, at most half of the
// endpoints; a 5s connect timeout), round robin, and Envoy's 1h idle
// timeout. translator's TestDefaultsMatchTheCRDs keeps the
// BackendTrafficPolicy CRD's defaults equal to these.
var DefaultBackend = BackendPolicy{
	MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024,
	Consecutive5xx: 5, Interval: Duration(10 * time.Second), BaseEjectionTime: Duration(30 * time.Second), MaxEjectionPercent: 50,
	LB:             LBRoundRobin,
	ConnectTimeout: Duration(5 * time.Second), IdleTimeout: Duration(time.Hour),
}

// FailurePercentage ejects endpoints whose share of failed requests in an
// interval reaches Threshold percent, once they had RequestVolume
// requests, while the cluster has at least MinimumHosts endpoints.
type FailurePercentage struct {
	Threshold     uint32 `json:"threshold,omitempty"`
	MinimumHosts  uint32 `json:"minimumHosts,omitempty"`
	RequestVolume uint32 `json:"requestVolume,omitempty"`
}

// LBAlgorithm is a load-balancing algorithm.
type LBAlgorithm string

const (
	LBRoundRobin   LBAlgorithm = "RoundRobin"
	LBLeastRequest LBAlgorithm = "LeastRequest"
	LBRingHash     LBAlgorithm = "RingHash"
	LBMaglev       LBAlgorithm = "Maglev"
)

// ConsistentHash says whether the algorithm picks endpoints by a hash key.
func (a LBAlgorithm) ConsistentHash() bool { return a == LBRingHash || a == LBMaglev }

// HashKey is what a consistent hash reads: exactly one of a header, a
// cookie, or the caller's address.
type HashKey struct {
	Header   string      `json:"header,omitempty"`
	Cookie   *HashCookie `json:"cookie,omitempty"`
	SourceIP bool        `json:"sourceIP,omitempty"`
}

// HashCookie is a cookie to hash; with a TTL the caller's proxy creates it
// when a request lacks it (a TTL of 0: a session cookie).
type HashCookie struct {
	Name string    `json:"name,omitempty"`
	TTL  *Duration `json:"ttl,omitempty"`
	Path string    `json:"path,omitempty"`
}

// TCPKeepalive turns on keepalive probes; zero fields take the kernel's
// settings. Times are whole seconds.
type TCPKeepalive struct {
	Probes   uint32   `json:"probes,omitempty"`
	Time     Duration `json:"time,omitempty"`
	Interval Duration `json:"interval,omitempty"`
}

// AuthAction is what an AuthPolicy does with matching requests.
type AuthAction string

const (
	AuthAllow AuthAction = "Allow"
	AuthDeny  AuthAction = "Deny"
)

// AuthPolicy is a resolved AuthPolicy.
type AuthPolicy struct {
	Source PolicyRef  `json:"source,omitempty"`
	Action AuthAction `json:"action,omitempty"`
	// DryRun policies are evaluated and logged, never enforced.
	DryRun bool       `json:"dryRun,omitempty"`
	Rules  []AuthRule `json:"rules,omitempty"`
}

// AuthRule matches a request when its source matches (any entry of
// Principals, Namespaces or IPBlocks; all empty means any source) and its
// operation matches (each non-empty list of Ports, Methods and paths has a
// matching entry).
type AuthRule struct {
	// Principals are SPIFFE IDs of callers.
	Principals []string `json:"principals,omitempty"`
	// Namespaces match callers by the namespace of their identity.
	Namespaces []string `json:"namespaces,omitempty"`
	// IPBlocks are CIDRs of the caller's address.
	IPBlocks []string `json:"ipBlocks,omitempty"`
	// Ports are the workload's (container) ports.
	Ports   []int32  `json:"ports,omitempty"`
	Methods []string `json:"methods,omitempty"`
	// PathsExact and PathsPrefix: the path matches any of them.
	PathsExact  []string `json:"pathsExact,omitempty"`
	PathsPrefix []string `json:"pathsPrefix,omitempty"`
}

// Duration is a time.Duration that reads well in goldens and debug output
// ("250ms", not 250000000).
type Duration time.Duration

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// RateLimit is a RateLimitPolicy resolved for the ports it applies to:
// token buckets each sidecar of the ports' endpoints keeps for itself
// (docs/design/165).
type RateLimit struct {
	Source PolicyRef `json:"source"`
	// DryRun counts what would be limited and lets everything through.
	DryRun bool `json:"dryRun,omitempty"`
	// Limit is the workload's bucket for every request (HTTP) or new
	// connection (TCP).
	Limit Bucket `json:"limit"`
	// CallerLimit, when set, is a bucket per caller identity (HTTP).
	CallerLimit *Bucket `json:"callerLimit,omitempty"`
	// Rules are buckets for requests that match (HTTP).
	Rules []RateLimitRule `json:"rules,omitempty"`
	// StatusCode answers a limited HTTP request.
	StatusCode uint32 `json:"statusCode"`
	// Headers adds the X-RateLimit-* headers (draft 03) to responses.
	Headers bool `json:"headers,omitempty"`
}

// Bucket is a token bucket: Burst tokens at most, Requests more every
// Interval.
type Bucket struct {
	Requests uint32   `json:"requests"`
	Burst    uint32   `json:"burst"`
	Interval Duration `json:"interval"`
}

// RateLimitRule is a bucket for requests with given paths or methods.
// Paths are pairwise disjoint (a path covered by a PathPrefix of the same
// rule is left out), so that no request matches a rule twice.
type RateLimitRule struct {
	Name string `json:"name"`
	// PathsExact and PathsPrefix are alternatives; PathsPrefix values have
	// no trailing slash and match element-wise. Both empty: any path.
	PathsExact  []string `json:"pathsExact,omitempty"`
	PathsPrefix []string `json:"pathsPrefix,omitempty"`
	// Methods are alternatives; empty: any method.
	Methods     []string `json:"methods,omitempty"`
	Limit       *Bucket  `json:"limit,omitempty"`
	CallerLimit *Bucket  `json:"callerLimit,omitempty"`
}
