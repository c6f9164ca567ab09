package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RateLimitPolicy limits the requests a Service's pods accept: a token
// bucket that each pod's sidecar keeps for itself (a local limit: three
// pods accept three times the rate), optionally a bucket per caller
// identity, and buckets for requests with given paths or methods. It
// attaches to Services (or one port of a Service) by spec.targetRefs and is
// enforced on the inbound side, by the sidecars of the pods the Service
// selects. A limited request is answered with spec.response.statusCode
// (429 by default) without reaching the application.
//
// In DryRun mode the sidecars count what they would limit (Envoy's
// local_rate_limit statistics) and let every request through.
//
// Between two policies on the same target (a Service, or the same port of
// it), the older wins and the newer reports Accepted=False, reason
// Conflicted, and applies nowhere; a policy that names a port beats one
// that targets the whole Service.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=weft,shortName=rlp
// +kubebuilder:printcolumn:name="Targets",type=string,JSONPath=`.spec.targetRefs`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Requests",type=integer,JSONPath=`.spec.limit.requests`
// +kubebuilder:printcolumn:name="Per",type=string,JSONPath=`.spec.limit.unit`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RateLimitPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is what the targets' pods accept.
	Spec RateLimitPolicySpec `json:"spec"`

	// Status is what the weft controller made of the spec.
	// +optional
	Status Status `json:"status,omitempty"`
}

// RateLimitMode says whether a RateLimitPolicy is enforced.
// +kubebuilder:validation:Enum=Enforce;DryRun
type RateLimitMode string

const (
	// RateLimitModeEnforce answers requests beyond a limit with
	// spec.response.statusCode.
	RateLimitModeEnforce RateLimitMode = "Enforce"
	// RateLimitModeDryRun lets every request through and only counts the
	// ones a limit would have refused (the sidecar's
	// local_rate_limit.<port>.rate_limited statistic).
	RateLimitModeDryRun RateLimitMode = "DryRun"
)

// RateLimitPolicySpec is what the targets' pods accept.
// +kubebuilder:validation:XValidation:rule="!has(self.rules) || self.rules.all(r, self.rules.exists_one(s, s.name == r.name))",message="spec.rules: two rules have the same name; give each rule its own name",fieldPath=".rules"
type RateLimitPolicySpec struct {
	// TargetRefs are the Services whose pods apply this policy, in its
	// namespace (group "", kind Service); sectionName, when set, narrows a
	// target to the Service port of that name.
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.exists_one(b, a.group == b.group && a.kind == b.kind && a.name == b.name && (has(a.sectionName) ? a.sectionName : '') == (has(b.sectionName) ? b.sectionName : '')))",message="spec.targetRefs lists the same target more than once; remove the duplicate"
	TargetRefs []RateLimitPolicyTargetReference `json:"targetRefs"`

	// Mode is Enforce (the default) or DryRun, which only counts.
	// +optional
	// +kubebuilder:default=Enforce
	Mode RateLimitMode `json:"mode,omitempty"`

	// Limit is each pod's bucket for every request it receives on the
	// targets' ports, from all callers together. On a TCP port it counts
	// new connections instead: one beyond it is closed at once.
	Limit RateLimitBucket `json:"limit"`

	// CallerLimit, when set, gives each caller identity (the service
	// account in the caller's mTLS certificate) its own bucket on each
	// pod, for all its requests: one busy caller is limited before it
	// uses up the pod's limit. Callers without mesh mTLS (plaintext in
	// Permissive mode) share one bucket. HTTP ports only.
	// +optional
	CallerLimit *RateLimitBucket `json:"callerLimit,omitempty"`

	// Rules add buckets for requests with given paths or methods, such as
	// POST /login. A request counts against the pod's limit and the
	// caller's, and against every rule it matches; the first empty bucket
	// refuses it. HTTP ports only.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Rules []RateLimitRule `json:"rules,omitempty"`

	// Response is what a limited request gets.
	// +optional
	// +kubebuilder:default={}
	Response *RateLimitResponse `json:"response,omitempty"`
}

// RateLimitPolicyTargetReference is a target of a RateLimitPolicy: a
// Service, or one port of it.
// +kubebuilder:validation:XValidation:rule="size(self.group) == 0 && self.kind == 'Service'",message="a RateLimitPolicy target must be a Service (group \"\", kind Service); to narrow it to one port, add sectionName: <the Service port's name>"
type RateLimitPolicyTargetReference struct {
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

// RateLimitUnit is the period a bucket refills in.
// +kubebuilder:validation:Enum=Second;Minute;Hour
type RateLimitUnit string

const (
	// RateLimitSecond refills every second.
	RateLimitSecond RateLimitUnit = "Second"
	// RateLimitMinute refills every minute.
	RateLimitMinute RateLimitUnit = "Minute"
	// RateLimitHour refills every hour.
	RateLimitHour RateLimitUnit = "Hour"
)

// RateLimitBucket is a token bucket: it holds up to burst tokens, starts
// full, and gains `requests` tokens every unit; each request takes one,
// and a request that finds it empty is limited.
// +kubebuilder:validation:XValidation:rule="!has(self.burst) || self.burst >= self.requests",message="burst must be at least requests: it is the most requests let through at once (the bucket's size), such as twice requests; omit it to make it equal to requests",fieldPath=".burst"
type RateLimitBucket struct {
	// Requests is how many requests are let through per unit, such as 100.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	Requests int32 `json:"requests"`

	// Unit is Second, Minute or Hour: the bucket gains `requests` tokens
	// once per unit.
	Unit RateLimitUnit `json:"unit"`

	// Burst is the bucket's size: the most requests let through at once
	// after a quiet period. Omitted, it equals requests.
	// +optional
	// +kubebuilder:validation:Maximum=1000000000
	Burst *int32 `json:"burst,omitempty"`
}

// RateLimitRule is a bucket for the requests that match.
// +kubebuilder:validation:XValidation:rule="has(self.limit) || has(self.callerLimit)",message="a rule needs limit (one bucket shared by every caller), callerLimit (a bucket per caller), or both"
type RateLimitRule struct {
	// Name names the rule in statistics and in weft explain, such as
	// login.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// Match selects the requests the rule counts.
	Match RateLimitMatch `json:"match"`

	// Limit is one bucket for the matching requests of every caller
	// together, on each pod.
	// +optional
	Limit *RateLimitBucket `json:"limit,omitempty"`

	// CallerLimit is a bucket per caller identity for its matching
	// requests, on each pod.
	// +optional
	CallerLimit *RateLimitBucket `json:"callerLimit,omitempty"`
}

// RateLimitMatch selects requests by path and method; a request matches
// when it matches one of the paths (if any are listed) and one of the
// methods (if any are listed).
// +kubebuilder:validation:XValidation:rule="has(self.paths) || has(self.methods)",message="match needs paths or methods; to count every request, use spec.limit or spec.callerLimit instead of a rule"
type RateLimitMatch struct {
	// Paths are alternatives; the path is compared after the sidecar
	// normalizes it (as AuthPolicy does), without the query string.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	Paths []PathMatch `json:"paths,omitempty"`

	// Methods are alternatives, such as [POST, PUT].
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=9
	Methods []HTTPMethod `json:"methods,omitempty"`
}

// RateLimitResponse is what a limited request gets.
type RateLimitResponse struct {
	// StatusCode is the HTTP status of a limited request's response. A
	// limited gRPC call ends with RESOURCE_EXHAUSTED whatever the code.
	// +optional
	// +kubebuilder:default=429
	// +kubebuilder:validation:XValidation:rule="self >= 400 && self <= 599",message="spec.response.statusCode must be between 400 and 599, such as 429 (Too Many Requests) or 503: Envoy answers 429 for anything lower"
	StatusCode *int32 `json:"statusCode,omitempty"`

	// RateLimitHeaders, true by default, adds X-RateLimit-Limit,
	// X-RateLimit-Remaining and X-RateLimit-Reset (draft-polli-ratelimit-
	// headers-03) to every response of the limited ports, so that clients
	// can slow down before they are limited, and Retry-After (the seconds
	// until the rejecting bucket's next token, at least 1) to a limited
	// request's 429 answer (not to another statusCode, nor to gRPC).
	// +optional
	// +kubebuilder:default=true
	RateLimitHeaders *bool `json:"rateLimitHeaders,omitempty"`
}

// +kubebuilder:object:root=true

// RateLimitPolicyList is a list of RateLimitPolicies.
type RateLimitPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RateLimitPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RateLimitPolicy{}, &RateLimitPolicyList{})
}
