package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Category is the kubectl category of every weft kind: `kubectl get weft -A`
// lists them all.
const Category = "weft"

// LabelMTLSMode is the namespace label that overrides MeshConfig's mesh-wide
// mTLS mode for the workloads of one namespace. Its value is Permissive or
// Strict; any other value is ignored (and reported on MeshConfig's status).
const LabelMTLSMode = "weft.dev/mtls-mode"

// Groups that targetRefs and backends may name.
const (
	// GroupCore is the Kubernetes core API group (Service, Namespace): the
	// empty string.
	GroupCore = ""
	// GroupGatewayAPI is the Gateway API group (HTTPRoute).
	GroupGatewayAPI = "gateway.networking.k8s.io"
)

// Condition types. Every weft object reports all three on its status, each
// with the observedGeneration of the spec it describes. They follow Gateway
// API's meaning of the same names.
const (
	// ConditionAccepted is True when the controller has read the object and
	// found it valid and not in conflict with another object; False (reasons
	// Invalid, Conflicted) means the object has no effect until it is fixed.
	ConditionAccepted = "Accepted"
	// ConditionResolvedRefs is True when everything the object names exists:
	// the Services, TrafficSplits, HTTPRoutes, ports and issuers it refers to.
	// False (reasons BackendNotFound, TargetNotFound, PortNotFound,
	// IssuerNotFound) names the missing reference in its message. What can be
	// resolved still takes effect.
	ConditionResolvedRefs = "ResolvedRefs"
	// ConditionProgrammed is True when every proxy that needs the object's
	// configuration has acknowledged (ACKed) it, or when no proxy needs it.
	// It is the condition GitOps health checks wait for.
	ConditionProgrammed = "Programmed"
)

// Condition reasons. Every reason is CamelCase and states why a condition has
// its status; the message adds the detail (which field, which reference,
// which proxy).
const (
	// ReasonAccepted (Accepted=True): the object is valid and in effect.
	ReasonAccepted = "Accepted"
	// ReasonInvalid (Accepted=False, Programmed=False): the object passed the
	// API server's validation but is invalid in context, for example an
	// AuthPolicy whose Namespace target is not its own namespace, or a header
	// regular expression that does not compile. The message names the field.
	ReasonInvalid = "Invalid"
	// ReasonConflicted (Accepted=False): another object of the same kind
	// already covers the same target, and the older one wins (by
	// creationTimestamp, then namespace/name). The message names the winner.
	ReasonConflicted = "Conflicted"
	// ReasonPending (any condition, status Unknown or False): the controller
	// has not yet processed this generation, or is waiting for proxies.
	ReasonPending = "Pending"

	// ReasonResolvedRefs (ResolvedRefs=True): every reference resolved.
	ReasonResolvedRefs = "ResolvedRefs"
	// ReasonBackendNotFound (ResolvedRefs=False): a TrafficSplit backend or
	// root Service does not exist. Traffic is split among the backends that
	// exist; a missing backend's share is answered with HTTP 503.
	ReasonBackendNotFound = "BackendNotFound"
	// ReasonTargetNotFound (ResolvedRefs=False): a policy's targetRef names an
	// object that does not exist. The policy applies to the targets that do.
	ReasonTargetNotFound = "TargetNotFound"
	// ReasonPortNotFound (ResolvedRefs=False): a port named in the object is
	// not a port of the referenced Service.
	ReasonPortNotFound = "PortNotFound"
	// ReasonIssuerNotFound (ResolvedRefs=False, MeshConfig only): the
	// cert-manager issuer named in spec.certificates.certManager.issuerRef
	// does not exist or is not Ready; workload certificates are not renewed
	// until it is.
	ReasonIssuerNotFound = "IssuerNotFound"
	// ReasonInvalidTrustBundle (ResolvedRefs=False, MeshConfig only):
	// spec.certificates.certManager.trustBundle names a Secret or ConfigMap
	// key that does not exist or holds no PEM CA certificates; weft keeps
	// trusting the CA certificates it read last.
	ReasonInvalidTrustBundle = "InvalidTrustBundle"

	// ReasonProgrammed (Programmed=True): every proxy that needs this
	// object's configuration has ACKed it.
	ReasonProgrammed = "Programmed"
	// ReasonProxyRejected (Programmed=False): at least one proxy rejected
	// (NACKed) the configuration built from this object. The message gives
	// the number of proxies and quotes one proxy's error; the proxies keep
	// their last good configuration.
	ReasonProxyRejected = "ProxyRejected"
)

// PolicyTargetReference names the object a policy attaches to, in the
// policy's own namespace (Gateway API's LocalPolicyTargetReference).
type PolicyTargetReference struct {
	// Group is the API group of the target: "" (the empty string) for core
	// kinds such as Service and Namespace, mesh.weft.dev for TrafficSplit,
	// gateway.networking.k8s.io for HTTPRoute.
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group"`

	// Kind is the kind of the target, such as Service.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind"`

	// Name is the name of the target, in the policy's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// Status is the status of every weft object: what the weft controller made
// of the object's current spec.
type Status struct {
	// ObservedGeneration is the metadata.generation the controller last
	// processed. Each condition also carries its own observedGeneration; a
	// condition whose observedGeneration is older than metadata.generation
	// describes an older spec.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions are Accepted, ResolvedRefs and Programmed (see the
	// ConditionX and ReasonX constants of the Go package, and docs/api.md).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Duration is a span of time written as whole numbers with units: h, m, s
// or ms, such as 250ms, 10s or 1m30s (Gateway API's duration format,
// GEP-2257). It is a string rather than metav1.Duration so that every client
// decodes every stored value, and so that a mistake gets a message that says
// how to write it.
// +kubebuilder:validation:MaxLength=24
// +kubebuilder:validation:XValidation:rule="!self.startsWith('-')",message="must not be negative: write a duration such as 250ms, 10s or 1m30s"
// +kubebuilder:validation:XValidation:rule="self.startsWith('-') || self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$')",message="must be whole numbers with the units h, m, s or ms, such as 250ms, 10s or 1m30s (no spaces, no decimals)"
type Duration string

// PathMatchType says how a request path is compared.
// +kubebuilder:validation:Enum=Exact;PathPrefix
type PathMatchType string

const (
	// PathMatchExact matches the path exactly, case-sensitively.
	PathMatchExact PathMatchType = "Exact"
	// PathMatchPathPrefix matches the path when it begins with the value,
	// element by element: /api matches /api and /api/v1 but not /apiv1.
	PathMatchPathPrefix PathMatchType = "PathPrefix"
)

// PathMatch matches a request's path (without the query string).
// +kubebuilder:validation:XValidation:rule="self.value.startsWith('/')",message="path value must start with '/', such as /api"
// +kubebuilder:validation:XValidation:rule="!self.value.contains('?') && !self.value.contains('#')",message="path value must not contain '?' or '#': paths are matched without the query string and fragment"
type PathMatch struct {
	// Type is Exact or PathPrefix. Omitted, it is PathPrefix.
	// +optional
	Type PathMatchType `json:"type,omitempty"`

	// Value is the path, starting with '/'.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Value string `json:"value"`
}

// HTTPMethod is an HTTP request method.
// +kubebuilder:validation:Enum=GET;HEAD;POST;PUT;DELETE;CONNECT;OPTIONS;TRACE;PATCH
type HTTPMethod string
