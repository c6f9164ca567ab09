package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RetryPolicy sets how the calling side of the mesh retries and times out
// requests to a Service, to the Services of a TrafficSplit, or along the
// routes of a Gateway API HTTPRoute or GRPCRoute. It attaches to its targets by
// spec.targetRefs (Gateway API policy attachment) and is applied by the
// client's sidecar.
//
// When several RetryPolicies cover one request, the most specific target
// wins: an HTTPRoute, GRPCRoute or TrafficSplit target beats a Service target. Between
// two policies with the same kind of target, the older one wins and the
// newer one reports Accepted=False, reason Conflicted, and applies to none
// of its targets until the conflict is gone.
//
// Every retry is bounded twice: by spec.attempts per request, and by
// spec.budget across all requests to the target, so retries cannot
// multiply the load on a Service that is already failing.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=weft,shortName=rp
// +kubebuilder:printcolumn:name="Targets",type=string,JSONPath=`.spec.targetRefs`
// +kubebuilder:printcolumn:name="Attempts",type=integer,JSONPath=`.spec.attempts`
// +kubebuilder:printcolumn:name="Retry On",type=string,JSONPath=`.spec.retryOn`,priority=1
// +kubebuilder:printcolumn:name="Timeout",type=string,JSONPath=`.spec.timeout`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RetryPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired retry behaviour.
	Spec RetryPolicySpec `json:"spec"`

	// Status is what the weft controller made of the spec.
	// +optional
	Status Status `json:"status,omitempty"`
}

// RetryPolicySpec is the desired retry and timeout behaviour.
// +kubebuilder:validation:XValidation:rule="!has(self.retryOn) || !('retriable-status-codes' in self.retryOn) || has(self.retriableStatusCodes)",message="spec.retriableStatusCodes must list the status codes to retry, such as [503], because spec.retryOn contains retriable-status-codes",fieldPath=".retriableStatusCodes"
// +kubebuilder:validation:XValidation:rule="!has(self.retriableStatusCodes) || (has(self.retryOn) && 'retriable-status-codes' in self.retryOn)",message="spec.retriableStatusCodes is set but spec.retryOn lacks retriable-status-codes: add it to retryOn, or remove retriableStatusCodes",fieldPath=".retriableStatusCodes"
// +kubebuilder:validation:XValidation:rule="!has(self.perTryTimeout) || !has(self.timeout) || !self.perTryTimeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || !self.timeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.timeout) == duration('0s') || duration(self.perTryTimeout) <= duration(self.timeout)",message="spec.perTryTimeout must not be longer than spec.timeout, which bounds all tries together; shorten perTryTimeout or lengthen timeout",fieldPath=".perTryTimeout"
// +kubebuilder:validation:XValidation:rule="!has(self.idleTimeout) || !has(self.timeout) || !self.idleTimeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || !self.timeout.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.timeout) == duration('0s') || duration(self.idleTimeout) == duration('0s') || duration(self.idleTimeout) < duration(self.timeout)",message="spec.idleTimeout must be shorter than spec.timeout, which ends every request first; shorten idleTimeout, remove it, or lengthen timeout",fieldPath=".idleTimeout"
type RetryPolicySpec struct {
	// TargetRefs are the objects this policy applies to, in its namespace: a
	// Service (group ""), a TrafficSplit (group mesh.weft.dev), or an
	// HTTPRoute or GRPCRoute (group gateway.networking.k8s.io). Requests
	// sent to a Service, through a TrafficSplit's root Service, or along an
	// HTTPRoute or GRPCRoute are retried as this policy says.
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.exists_one(b, a.group == b.group && a.kind == b.kind && a.name == b.name))",message="spec.targetRefs lists the same target more than once; remove the duplicate"
	TargetRefs []RetryPolicyTargetReference `json:"targetRefs"`

	// RetryOn lists the failures that are retried. HTTP: 5xx (any 5xx
	// response, and a reset or timeout before a response), gateway-error
	// (502, 503, 504), reset (the connection was reset or closed before a
	// response), connect-failure (no connection could be made), refused-stream
	// (the server refused the HTTP/2 stream: safe to retry, nothing was
	// processed), retriable-status-codes (the codes in retriableStatusCodes).
	// gRPC, by the grpc-status of the response: unavailable, cancelled,
	// deadline-exceeded, resource-exhausted. These are Envoy's retry_on
	// values. The default retries only what is safe for non-idempotent
	// requests: connect-failure, refused-stream, unavailable and cancelled.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:default={"connect-failure","refused-stream","unavailable","cancelled"}
	RetryOn []RetryCondition `json:"retryOn,omitempty"`

	// RetriableStatusCodes are the HTTP status codes that are retried when
	// retryOn contains retriable-status-codes (and only then), such as [503].
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Minimum=400
	// +kubebuilder:validation:items:Maximum=599
	RetriableStatusCodes []int32 `json:"retriableStatusCodes,omitempty"`

	// Attempts is the number of retries after the first try (so 2 means at
	// most 3 tries in all). 0 turns retries off for the targets, which
	// overrides a less specific RetryPolicy, while timeout still applies.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	Attempts *int32 `json:"attempts,omitempty"`

	// PerTryTimeout bounds each try, the first included, such as 500ms.
	// Omitted, a try may last as long as timeout allows.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self) > duration('0s')",message="spec.perTryTimeout must be longer than 0s; omit it to let each try run until spec.timeout"
	PerTryTimeout *Duration `json:"perTryTimeout,omitempty"`

	// Timeout bounds the whole request, all tries and backoff included, from
	// the first byte sent to the last byte of the response. Omitted or 0s,
	// there is no mesh timeout (the client's own deadline applies); weft does
	// not impose Envoy's 15s default route timeout.
	// +optional
	Timeout *Duration `json:"timeout,omitempty"`

	// IdleTimeout ends a request whose stream carries nothing in either
	// direction for this long, such as 5m: a backend that stalls mid-
	// response, a stream or long poll left silent. Waiting for the first
	// byte of the response counts as idle. The caller gets 504 when no
	// response has started, else the stream is reset. Omitted or 0s, there
	// is no idle limit (weft turns off Envoy's 5-minute default). It ends
	// requests; BackendTrafficPolicy's connection.idleTimeout closes
	// unused connections instead. Proxyless gRPC clients do not apply it.
	// +optional
	IdleTimeout *Duration `json:"idleTimeout,omitempty"`

	// Backoff is the wait between tries: randomized exponential backoff from
	// baseInterval, growing to at most maxInterval.
	// +optional
	// +kubebuilder:default={}
	Backoff *RetryBackoff `json:"backoff,omitempty"`

	// Budget caps retries across all requests to a target, so that retries
	// cannot amplify an outage. The default is Envoy's default retry budget:
	// at most 20% of the active requests may be retries, but at least 3
	// retries may always be active.
	// +optional
	// +kubebuilder:default={}
	Budget *RetryBudget `json:"budget,omitempty"`
}

// RetryPolicyTargetReference is a target of a RetryPolicy: a Service, a
// TrafficSplit, an HTTPRoute or a GRPCRoute.
// +kubebuilder:validation:XValidation:rule="(size(self.group) == 0 && self.kind == 'Service') || (self.group == 'mesh.weft.dev' && self.kind == 'TrafficSplit') || (self.group == 'gateway.networking.k8s.io' && (self.kind == 'HTTPRoute' || self.kind == 'GRPCRoute'))",message="a RetryPolicy target must be a Service (group \"\"), a TrafficSplit (group mesh.weft.dev), or an HTTPRoute or GRPCRoute (group gateway.networking.k8s.io); check group and kind"
type RetryPolicyTargetReference struct {
	PolicyTargetReference `json:",inline"`
}

// RetryCondition is a failure that RetryPolicy retries: an Envoy retry_on
// value.
// +kubebuilder:validation:Enum="5xx";gateway-error;reset;connect-failure;refused-stream;retriable-status-codes;unavailable;cancelled;deadline-exceeded;resource-exhausted
type RetryCondition string

// The retry conditions, with Envoy's retry_on names.
const (
	RetryOn5xx                  RetryCondition = "5xx"
	RetryOnGatewayError         RetryCondition = "gateway-error"
	RetryOnReset                RetryCondition = "reset"
	RetryOnConnectFailure       RetryCondition = "connect-failure"
	RetryOnRefusedStream        RetryCondition = "refused-stream"
	RetryOnRetriableStatusCodes RetryCondition = "retriable-status-codes"
	RetryOnUnavailable          RetryCondition = "unavailable"
	RetryOnCancelled            RetryCondition = "cancelled"
	RetryOnDeadlineExceeded     RetryCondition = "deadline-exceeded"
	RetryOnResourceExhausted    RetryCondition = "resource-exhausted"
)

// RetryBackoff is randomized exponential backoff between tries.
// +kubebuilder:validation:XValidation:rule="!has(self.baseInterval) || !has(self.maxInterval) || !self.baseInterval.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || !self.maxInterval.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.baseInterval) <= duration(self.maxInterval)",message="spec.backoff.maxInterval must be at least spec.backoff.baseInterval; raise maxInterval or lower baseInterval",fieldPath=".maxInterval"
type RetryBackoff struct {
	// BaseInterval is the first wait, before jitter.
	// +optional
	// +kubebuilder:default="25ms"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self) > duration('0s')",message="spec.backoff.baseInterval must be longer than 0s, such as 25ms"
	BaseInterval Duration `json:"baseInterval,omitempty"`

	// MaxInterval is the longest wait.
	// +optional
	// +kubebuilder:default="250ms"
	MaxInterval Duration `json:"maxInterval,omitempty"`
}

// RetryBudget limits concurrent retries to a share of the active requests.
type RetryBudget struct {
	// Percent is the largest share of active requests (and requests waiting
	// for a connection) to a target that may be retries, in percent.
	// +optional
	// +kubebuilder:default=20
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percent *int32 `json:"percent,omitempty"`

	// MinConcurrency is the number of retries that may always be active,
	// whatever the percentage allows, so that a target with little traffic
	// can still retry.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	MinConcurrency *int32 `json:"minConcurrency,omitempty"`
}

// +kubebuilder:object:root=true

// RetryPolicyList is a list of RetryPolicies.
type RetryPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RetryPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RetryPolicy{}, &RetryPolicyList{})
}
