package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BackendTrafficPolicy sets how callers' proxies treat the endpoints of a
// Service: circuit breakers, outlier detection (ejecting endpoints that
// fail), the load-balancing algorithm, and connection settings. It
// attaches to Services (or one port of a Service) by spec.targetRefs and is
// applied by every caller's sidecar to its cluster of the Service, and, in
// the part they support, by proxyless gRPC clients.
//
// A Service without a BackendTrafficPolicy gets the defaults each field
// documents. A policy that targets a port (sectionName) beats one that
// targets the whole Service; between two policies with the same kind of
// target, the older wins and the newer reports Accepted=False, reason
// Conflicted, and applies nowhere.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=weft,shortName=btp
// +kubebuilder:printcolumn:name="Targets",type=string,JSONPath=`.spec.targetRefs`
// +kubebuilder:printcolumn:name="Load Balancer",type=string,JSONPath=`.spec.loadBalancer.type`
// +kubebuilder:printcolumn:name="Max Requests",type=integer,JSONPath=`.spec.circuitBreaker.maxRequests`
// +kubebuilder:printcolumn:name="Max Connections",type=integer,JSONPath=`.spec.circuitBreaker.maxConnections`,priority=1
// +kubebuilder:printcolumn:name="Consecutive 5xx",type=integer,JSONPath=`.spec.outlierDetection.consecutive5xx`,priority=1
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BackendTrafficPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is how callers treat the targets' endpoints.
	Spec BackendTrafficPolicySpec `json:"spec"`

	// Status is what the weft controller made of the spec.
	// +optional
	Status Status `json:"status,omitempty"`
}

// BackendTrafficPolicySpec is how callers' proxies treat a Service's
// endpoints. Every section is filled in with its defaults by the API
// server, so `kubectl get -o yaml` shows every value in effect.
// +kubebuilder:validation:XValidation:rule="!has(self.loadBalancer) || !has(self.loadBalancer.locality) || self.loadBalancer.locality != 'PreferLocalZone' || (has(self.outlierDetection) && ((has(self.outlierDetection.consecutive5xx) && self.outlierDetection.consecutive5xx > 0) || (has(self.outlierDetection.consecutiveGatewayErrors) && self.outlierDetection.consecutiveGatewayErrors > 0) || has(self.outlierDetection.failurePercentage)))",message="spec.loadBalancer.locality PreferLocalZone needs outlier detection: without it a zone whose pods fail but stay ready never fails over; set spec.outlierDetection.consecutive5xx above 0 (such as 5) or spec.outlierDetection.failurePercentage, or set locality: None",fieldPath=".loadBalancer.locality"
type BackendTrafficPolicySpec struct {
	// TargetRefs are the Services this policy applies to, in its namespace
	// (group "", kind Service); sectionName, when set, narrows a target to
	// the Service port of that name.
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.exists_one(b, a.group == b.group && a.kind == b.kind && a.name == b.name && (has(a.sectionName) ? a.sectionName : '') == (has(b.sectionName) ? b.sectionName : '')))",message="spec.targetRefs lists the same target more than once; remove the duplicate"
	TargetRefs []BackendTrafficPolicyTargetReference `json:"targetRefs"`

	// CircuitBreaker caps what each caller's proxy sends to the target at
	// once; past a cap, requests fail fast (HTTP 503, gRPC UNAVAILABLE)
	// instead of queueing on a Service that cannot keep up.
	// +optional
	// +kubebuilder:default={}
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`

	// OutlierDetection ejects an endpoint that keeps failing from each
	// caller's load balancing for a while, then lets it back in.
	// +optional
	// +kubebuilder:default={}
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`

	// LoadBalancer chooses the endpoint of each request.
	// +optional
	// +kubebuilder:default={}
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty"`

	// Connection sets how callers' proxies open and keep connections to
	// the endpoints.
	// +optional
	// +kubebuilder:default={}
	Connection *BackendConnection `json:"connection,omitempty"`
}

// BackendTrafficPolicyTargetReference is a target of a
// BackendTrafficPolicy: a Service, or one port of it.
// +kubebuilder:validation:XValidation:rule="size(self.group) == 0 && self.kind == 'Service'",message="a BackendTrafficPolicy target must be a Service (group \"\", kind Service); to narrow it to one port, add sectionName: <the Service port's name>"
type BackendTrafficPolicyTargetReference struct {
	PolicyTargetReference `json:",inline"`

	// SectionName is the name of one port of the Service; omitted, the
	// policy applies to every port. A policy that names the port beats
	// one that targets the whole Service.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SectionName *string `json:"sectionName,omitempty"`
}

// CircuitBreaker caps concurrent work towards a Service, per calling proxy
// (each caller's proxy counts its own).
type CircuitBreaker struct {
	// MaxConnections is the most connections a caller's proxy opens to
	// all of the Service's endpoints together. HTTP/1.1 requests beyond
	// what they carry wait for one (up to maxPendingRequests).
	// +optional
	// +kubebuilder:default=1024
	// +kubebuilder:validation:Minimum=1
	MaxConnections *int32 `json:"maxConnections,omitempty"`

	// MaxPendingRequests is the most requests that may wait for a
	// connection; one more fails at once (HTTP 503).
	// +optional
	// +kubebuilder:default=1024
	// +kubebuilder:validation:Minimum=1
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`

	// MaxRequests is the most requests in flight to the Service at once;
	// one more fails at once (HTTP 503; proxyless gRPC: UNAVAILABLE).
	// +optional
	// +kubebuilder:default=1024
	// +kubebuilder:validation:Minimum=1
	MaxRequests *int32 `json:"maxRequests,omitempty"`

	// MaxRetries is the most retries in flight to the Service at once.
	// Omitted, the retry budget of the RetryPolicy that applies (20% of
	// active requests, at least 3, by default) bounds retries, or Envoy's
	// default of 3 without one. Set, it replaces that budget for this
	// Service: Envoy applies a fixed cap or a budget, not both.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxRetries *int32 `json:"maxRetries,omitempty"`
}

// OutlierDetection ejects failing endpoints from load balancing: each
// caller's proxy counts the failures of each endpoint it sends to, ejects
// one that crosses a threshold for baseEjectionTime (longer each time it
// is ejected again), and lets it back in afterwards.
type OutlierDetection struct {
	// Consecutive5xx ejects an endpoint after this many 5xx responses in a
	// row (a connection that fails or is reset counts as one). 0 turns it
	// off.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Consecutive5xx *int32 `json:"consecutive5xx,omitempty"`

	// ConsecutiveGatewayErrors ejects an endpoint after this many 502, 503
	// or 504 responses (or connection failures) in a row. Omitted or 0:
	// off.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	ConsecutiveGatewayErrors *int32 `json:"consecutiveGatewayErrors,omitempty"`

	// FailurePercentage ejects an endpoint whose share of failed requests
	// over the last interval reaches a threshold. Omitted: off. Proxyless
	// gRPC clients apply this, not the consecutive counts.
	// +optional
	FailurePercentage *FailurePercentage `json:"failurePercentage,omitempty"`

	// Interval is how often the counts are evaluated, such as 10s.
	// +optional
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self) > duration('0s')",message="spec.outlierDetection.interval must be longer than 0s, such as 10s"
	Interval Duration `json:"interval,omitempty"`

	// BaseEjectionTime is how long an endpoint stays out the first time;
	// each further ejection multiplies it (2x, 3x, ...).
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self) > duration('0s')",message="spec.outlierDetection.baseEjectionTime must be longer than 0s, such as 30s"
	BaseEjectionTime Duration `json:"baseEjectionTime,omitempty"`

	// MaxEjectionPercent is the largest share of the Service's endpoints,
	// in percent, that may be out at once (Envoy still ejects one endpoint
	// when the share rounds to none).
	// +optional
	// +kubebuilder:default=50
	// +kubebuilder:validation:XValidation:rule="self >= 0 && self <= 100",message="spec.outlierDetection.maxEjectionPercent must be between 0 and 100: it is a share of the Service's endpoints in percent, such as 50; 100 lets every endpoint be ejected"
	MaxEjectionPercent *int32 `json:"maxEjectionPercent,omitempty"`
}

// FailurePercentage ejects endpoints by their share of failed requests.
type FailurePercentage struct {
	// Threshold is the share of failed requests, in percent, at which an
	// endpoint is ejected, such as 50.
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 100",message="spec.outlierDetection.failurePercentage.threshold must be between 1 and 100: it is the share of an endpoint's requests, in percent, that must fail for it to be ejected, such as 50"
	Threshold int32 `json:"threshold"`

	// MinimumHosts: the check runs only while the Service has at least
	// this many endpoints.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MinimumHosts *int32 `json:"minimumHosts,omitempty"`

	// RequestVolume: an endpoint is judged only once it has had this many
	// requests in the interval.
	// +optional
	// +kubebuilder:default=50
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	RequestVolume *int32 `json:"requestVolume,omitempty"`
}

// LoadBalancerType is a load-balancing algorithm.
// +kubebuilder:validation:Enum=RoundRobin;LeastRequest;RingHash;Maglev
type LoadBalancerType string

const (
	// LoadBalancerRoundRobin takes the endpoints in turn.
	LoadBalancerRoundRobin LoadBalancerType = "RoundRobin"
	// LoadBalancerLeastRequest picks the less busy of two random
	// endpoints (power of two choices).
	LoadBalancerLeastRequest LoadBalancerType = "LeastRequest"
	// LoadBalancerRingHash sends requests with the same hash key to the
	// same endpoint (a consistent-hash ring): adding or removing an
	// endpoint moves only the keys next to it.
	LoadBalancerRingHash LoadBalancerType = "RingHash"
	// LoadBalancerMaglev is consistent hashing with Maglev's lookup table:
	// faster to build and to look up than a ring, and spreads keys more
	// evenly, at the cost of moving a few more keys when endpoints change.
	LoadBalancerMaglev LoadBalancerType = "Maglev"
)

// LoadBalancer is how a caller's proxy chooses an endpoint.
// +kubebuilder:validation:XValidation:rule="!((has(self.type) ? self.type : 'RoundRobin') in ['RingHash', 'Maglev']) || has(self.consistentHash)",message="spec.loadBalancer.consistentHash is required with type RingHash or Maglev: name the request attribute that keeps a client on one endpoint, such as consistentHash: {type: Header, header: {name: x-user-id}}",fieldPath=".consistentHash"
// +kubebuilder:validation:XValidation:rule="!has(self.consistentHash) || (has(self.type) ? self.type : 'RoundRobin') in ['RingHash', 'Maglev']",message="spec.loadBalancer.consistentHash has no effect with type RoundRobin or LeastRequest: set type: RingHash or Maglev, or remove consistentHash",fieldPath=".consistentHash"
type LoadBalancer struct {
	// Type is RoundRobin, LeastRequest, RingHash or Maglev. RingHash and
	// Maglev need consistentHash.
	// +optional
	// +kubebuilder:default=RoundRobin
	Type LoadBalancerType `json:"type,omitempty"`

	// ConsistentHash is the request attribute whose value picks the
	// endpoint, for RingHash and Maglev.
	// +optional
	ConsistentHash *ConsistentHash `json:"consistentHash,omitempty"`

	// Locality is None (every endpoint, wherever it runs) or
	// PreferLocalZone: each caller sends to the endpoints in its own zone
	// while they can serve, then to the rest of its region, then to the
	// rest (docs/design/171). Needs outlier detection, which is what
	// notices a zone whose pods fail while Kubernetes still calls them
	// ready.
	// +optional
	// +kubebuilder:default=None
	Locality LocalityMode `json:"locality,omitempty"`
}

// LocalityMode is whether callers prefer endpoints near them.
// +kubebuilder:validation:Enum=None;PreferLocalZone
type LocalityMode string

const (
	// LocalityNone spreads requests over every endpoint, in any zone.
	LocalityNone LocalityMode = "None"
	// LocalityPreferLocalZone sends each caller's requests to the
	// endpoints in its zone first, failing over to its region, then to
	// any.
	LocalityPreferLocalZone LocalityMode = "PreferLocalZone"
)

// ConsistentHashType is what a consistent hash is computed from.
// +kubebuilder:validation:Enum=Header;Cookie;SourceIP
type ConsistentHashType string

const (
	// ConsistentHashHeader hashes a request header's value.
	ConsistentHashHeader ConsistentHashType = "Header"
	// ConsistentHashCookie hashes a cookie's value.
	ConsistentHashCookie ConsistentHashType = "Cookie"
	// ConsistentHashSourceIP hashes the calling pod's address.
	ConsistentHashSourceIP ConsistentHashType = "SourceIP"
)

// ConsistentHash names the request attribute a consistent hash reads.
// +kubebuilder:validation:XValidation:rule="self.type != 'Header' || has(self.header)",message="spec.loadBalancer.consistentHash.header is required with type Header: name the header, such as header: {name: x-user-id}",fieldPath=".header"
// +kubebuilder:validation:XValidation:rule="self.type != 'Cookie' || has(self.cookie)",message="spec.loadBalancer.consistentHash.cookie is required with type Cookie: name the cookie, such as cookie: {name: session}",fieldPath=".cookie"
// +kubebuilder:validation:XValidation:rule="!has(self.header) || self.type == 'Header'",message="spec.loadBalancer.consistentHash.header is set but type is not Header: set type: Header, or remove header",fieldPath=".header"
// +kubebuilder:validation:XValidation:rule="!has(self.cookie) || self.type == 'Cookie'",message="spec.loadBalancer.consistentHash.cookie is set but type is not Cookie: set type: Cookie, or remove cookie",fieldPath=".cookie"
type ConsistentHash struct {
	// Type is Header, Cookie or SourceIP.
	Type ConsistentHashType `json:"type"`

	// Header names the request header to hash (type Header). A request
	// without it goes to a random endpoint.
	// +optional
	Header *HashHeader `json:"header,omitempty"`

	// Cookie names the cookie to hash (type Cookie).
	// +optional
	Cookie *HashCookie `json:"cookie,omitempty"`
}

// HashHeader is a header to hash.
type HashHeader struct {
	// Name is the header name, such as x-user-id.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$`
	Name string `json:"name"`
}

// HashCookie is a cookie to hash.
type HashCookie struct {
	// Name is the cookie name, such as session.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$`
	Name string `json:"name"`

	// TTL, when set, has the caller's sidecar create the cookie when a
	// request lacks it (a random value, set on the response, valid for
	// the TTL; 0s makes it a session cookie), so that a client's next
	// requests stay on one endpoint. Omitted, the application sets the
	// cookie, and a request without it goes to a random endpoint.
	// +optional
	TTL *Duration `json:"ttl,omitempty"`

	// Path is the Path attribute of a cookie the sidecar creates.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="spec.loadBalancer.consistentHash.cookie.path must start with '/', such as /"
	Path string `json:"path,omitempty"`
}

// BackendConnection is how callers' proxies open and keep connections.
type BackendConnection struct {
	// ConnectTimeout bounds the opening of a connection to an endpoint
	// (TCP and the mesh's TLS handshake).
	// +optional
	// +kubebuilder:default="5s"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self) > duration('0s')",message="spec.connection.connectTimeout must be longer than 0s, such as 5s"
	ConnectTimeout Duration `json:"connectTimeout,omitempty"`

	// IdleTimeout closes a connection to an endpoint that carried no
	// request (on HTTP ports) or no bytes (on TCP ports) for this long. 0s
	// never closes idle connections.
	// +optional
	// +kubebuilder:default="1h"
	IdleTimeout *Duration `json:"idleTimeout,omitempty"`

	// TCPKeepalive, when set, turns on TCP keepalive probes on the
	// connections to the endpoints, so that a peer that vanished is
	// noticed; its fields left out take the node's kernel settings.
	// Omitted: no keepalive.
	// +optional
	TCPKeepalive *TCPKeepalive `json:"tcpKeepalive,omitempty"`
}

// TCPKeepalive is the kernel's keepalive on a connection.
type TCPKeepalive struct {
	// Probes is how many unanswered probes close the connection.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=127
	Probes *int32 `json:"probes,omitempty"`

	// IdleTime is how long a connection is idle before the first probe,
	// in whole seconds, such as 2m.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || (!self.contains('ms') && duration(self) >= duration('1s'))",message="spec.connection.tcpKeepalive.idleTime must be whole seconds of at least 1s, such as 30s or 2m (the kernel counts keepalive time in seconds)"
	IdleTime *Duration `json:"idleTime,omitempty"`

	// Interval is the time between probes, in whole seconds, such as 75s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || (!self.contains('ms') && duration(self) >= duration('1s'))",message="spec.connection.tcpKeepalive.interval must be whole seconds of at least 1s, such as 75s (the kernel counts keepalive time in seconds)"
	Interval *Duration `json:"interval,omitempty"`
}

// +kubebuilder:object:root=true

// BackendTrafficPolicyList is a list of BackendTrafficPolicies.
type BackendTrafficPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BackendTrafficPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BackendTrafficPolicy{}, &BackendTrafficPolicyList{})
}
