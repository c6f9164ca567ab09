package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TrafficSplit sends the requests that clients make to one Service (the
// root) to a weighted set of backend Services instead. It is how a canary
// or blue/green rollout is done: clients keep calling the root Service, and
// the weights decide which version answers.
//
// Several TrafficSplits may name the same root Service: one without matches
// (the default split) and others with matches (A/B routes, tried first).
// When two TrafficSplits with the same root, port and matches collide, the
// older one wins and the newer one reports Accepted=False, reason
// Conflicted.
//
// A TrafficSplit means the same as a Gateway API HTTPRoute whose parentRef
// is the root Service (the GAMMA mesh profile); see docs/api.md for which to
// use when. If both cover the same Service and port, the HTTPRoute wins and
// the TrafficSplit reports Accepted=False, reason Conflicted.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=weft,shortName=ts
// +kubebuilder:printcolumn:name="Root Service",type=string,JSONPath=`.spec.rootService.name`
// +kubebuilder:printcolumn:name="Backends",type=string,JSONPath=`.spec.backends`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TrafficSplit struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired split.
	Spec TrafficSplitSpec `json:"spec"`

	// Status is what the weft controller made of the spec.
	// +optional
	Status Status `json:"status,omitempty"`
}

// TrafficSplitSpec is the desired split of one root Service's traffic.
type TrafficSplitSpec struct {
	// RootService is the Service that clients call, in the TrafficSplit's
	// namespace. Requests to its cluster DNS name or ClusterIP are sent to the
	// backends instead of its own endpoints (unless it is also a backend).
	RootService RootServiceReference `json:"rootService"`

	// Matches restrict the split to the requests that match at least one
	// entry (an A/B route); requests that match none go on to the root
	// Service's other TrafficSplits, or to its own endpoints. Omitted, the
	// split applies to every request. Matches apply to HTTP traffic only.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	Matches []HTTPMatch `json:"matches,omitempty"`

	// Backends are the Services that receive the traffic, each with a weight:
	// a backend gets weight / (sum of weights) of the requests. At least one
	// weight must be positive; a backend with weight 0 gets no new requests
	// (use it to keep a version ready while it serves nothing). The root
	// Service itself may be a backend, meaning its own endpoints. Each
	// (name, port) may appear once.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.exists(b, !has(b.weight) || b.weight > 0)",message="spec.backends needs at least one backend with a weight above 0; with every weight 0 every request would fail, so give the version that should serve traffic a positive weight"
	// +kubebuilder:validation:XValidation:rule="self.all(b, self.exists_one(c, c.name == b.name && (has(c.port) ? c.port : 0) == (has(b.port) ? b.port : 0)))",message="spec.backends lists the same Service and port more than once; merge the duplicate entries into one and add their weights"
	Backends []Backend `json:"backends"`

	// Fault injects failures into a share of the split's requests, for
	// chaos tests: a delay before the request is forwarded, an abort that
	// the caller's side answers without forwarding it, or both. It applies
	// to HTTP (and gRPC) traffic only, on the calling side (the caller's
	// sidecar, or a proxyless gRPC client), to the requests this split
	// takes. Remove it to stop injecting.
	// +optional
	Fault *FaultInjection `json:"fault,omitempty"`

	// Mirror sends a copy of a share of the split's requests to another
	// Service (shadow traffic), whose responses are ignored: the caller
	// gets the answer of the split's backends only. HTTP only; proxyless
	// gRPC clients do not mirror (the TrafficSplit reports
	// ProxylessLimited).
	// +optional
	Mirror *RequestMirror `json:"mirror,omitempty"`
}

// FaultInjection is an injected delay, abort, or both; each applies to its
// own share of requests, drawn independently (a request may be delayed and
// then aborted).
// +kubebuilder:validation:XValidation:rule="has(self.delay) || has(self.abort)",message="spec.fault needs delay, abort or both; to inject nothing, remove spec.fault"
type FaultInjection struct {
	// Delay holds a share of requests back before they are forwarded.
	// +optional
	Delay *FaultDelay `json:"delay,omitempty"`

	// Abort answers a share of requests with an error instead of
	// forwarding them.
	// +optional
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay delays a share of requests by a fixed time.
type FaultDelay struct {
	// Percent of the split's requests that are delayed, 0 to 100.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percent int32 `json:"percent"`

	// FixedDelay is how long each delayed request waits, such as 5s.
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self) > duration('0s')",message="spec.fault.delay.fixedDelay must be longer than 0s, such as 500ms; to delay nothing, remove spec.fault.delay"
	FixedDelay Duration `json:"fixedDelay"`
}

// FaultAbort answers a share of requests with an error status.
// +kubebuilder:validation:XValidation:rule="has(self.httpStatus) != has(self.grpcStatus)",message="spec.fault.abort needs exactly one of httpStatus (such as 503) or grpcStatus (such as UNAVAILABLE)"
type FaultAbort struct {
	// Percent of the split's requests that are aborted, 0 to 100.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percent int32 `json:"percent"`

	// HTTPStatus is the status of the answer, 200 to 599 (such as 503).
	// A gRPC client sees the gRPC status that HTTP status maps to (503:
	// UNAVAILABLE; gRPC's HTTP-to-gRPC status mapping).
	// +optional
	// +kubebuilder:validation:Minimum=200
	// +kubebuilder:validation:Maximum=599
	HTTPStatus *int32 `json:"httpStatus,omitempty"`

	// GRPCStatus is the gRPC status of the answer (such as UNAVAILABLE),
	// for gRPC traffic.
	// +optional
	GRPCStatus *GRPCStatusCode `json:"grpcStatus,omitempty"`
}

// GRPCStatusCode is a gRPC status code by its name.
// +kubebuilder:validation:Enum=CANCELLED;UNKNOWN;INVALID_ARGUMENT;DEADLINE_EXCEEDED;NOT_FOUND;ALREADY_EXISTS;PERMISSION_DENIED;RESOURCE_EXHAUSTED;FAILED_PRECONDITION;ABORTED;OUT_OF_RANGE;UNIMPLEMENTED;INTERNAL;UNAVAILABLE;DATA_LOSS;UNAUTHENTICATED
type GRPCStatusCode string

// GRPCStatusCodes maps each GRPCStatusCode to its number (grpc/codes).
var GRPCStatusCodes = map[GRPCStatusCode]uint32{
	"CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
	"ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
	"ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
	"DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

// RequestMirror copies a share of requests to another Service.
type RequestMirror struct {
	// Backend is the Service that receives the copies, in the
	// TrafficSplit's namespace.
	Backend MirrorBackend `json:"backend"`

	// Percent of the split's requests that are copied, 0 to 100.
	// Omitted, every request is.
	// +optional
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percent *int32 `json:"percent,omitempty"`
}

// MirrorBackend is the Service that receives mirrored requests.
type MirrorBackend struct {
	// Name of the Service, in the TrafficSplit's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="must be a Service name: lower-case letters, digits and '-', starting with a letter"
	Name string `json:"name"`

	// Port of the Service that receives the copies. Omitted, the same port
	// number the client called on the root Service.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int32 `json:"port,omitempty"`
}

// RootServiceReference names the Service that clients call.
type RootServiceReference struct {
	// Name of the Service, in the TrafficSplit's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="must be a Service name: lower-case letters, digits and '-', starting with a letter"
	Name string `json:"name"`

	// Port is the Service port to split. Omitted, every port of the Service
	// is split the same way.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int32 `json:"port,omitempty"`
}

// DefaultBackendWeight is the weight of a backend whose weight is omitted.
// (Defaults inside list items are not filled in by the API server: a default
// there makes `kubectl apply` and GitOps diffs report a change on every
// apply, because the stored list never equals the applied one.)
const DefaultBackendWeight int32 = 1

// Backend is a Service that receives a share of the root Service's traffic.
type Backend struct {
	// Name of the backend Service, in the TrafficSplit's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="must be a Service name: lower-case letters, digits and '-', starting with a letter"
	Name string `json:"name"`

	// Port is the backend Service's port that receives the requests.
	// Omitted, it is the same port number that the client called on the root
	// Service.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int32 `json:"port,omitempty"`

	// Weight is this backend's share, relative to the other backends' weights
	// (90 and 10 send 90% and 10%). 0 sends it no new requests. Omitted, it
	// is 1 (DefaultBackendWeight).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	Weight *int32 `json:"weight,omitempty"`
}

// HTTPMatch matches an HTTP request when every field that is set matches:
// the path, every listed header, and the method.
// +kubebuilder:validation:XValidation:rule="has(self.path) || has(self.headers) || has(self.method)",message="a match needs at least one of path, headers or method; to split every request, omit spec.matches"
type HTTPMatch struct {
	// Path matches the request path.
	// +optional
	Path *PathMatch `json:"path,omitempty"`

	// Headers match request headers; every listed header must match.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Headers []HeaderMatch `json:"headers,omitempty"`

	// Method matches the request method.
	// +optional
	Method *HTTPMethod `json:"method,omitempty"`
}

// HeaderMatchType says how a header value is compared.
// +kubebuilder:validation:Enum=Exact;RegularExpression
type HeaderMatchType string

const (
	// HeaderMatchExact matches the value exactly, case-sensitively.
	HeaderMatchExact HeaderMatchType = "Exact"
	// HeaderMatchRegularExpression matches the whole value against an RE2
	// regular expression. A pattern the proxies would refuse (not RE2, such
	// as a lookahead, or larger than Envoy's default RE2 program size of
	// 100 instructions) makes the TrafficSplit Accepted=False, reason
	// Invalid, and it routes nothing until it is fixed.
	HeaderMatchRegularExpression HeaderMatchType = "RegularExpression"
)

// HeaderMatch matches one request header.
type HeaderMatch struct {
	// Type is Exact or RegularExpression. Omitted, it is Exact.
	// +optional
	Type HeaderMatchType `json:"type,omitempty"`

	// Name is the header name, compared case-insensitively.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$`
	Name string `json:"name"`

	// Value is the value to compare with.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value"`
}

// +kubebuilder:object:root=true

// TrafficSplitList is a list of TrafficSplits.
type TrafficSplitList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficSplit `json:"items"`
}

func init() {
	SchemeBuilder.Register(&TrafficSplit{}, &TrafficSplitList{})
}
