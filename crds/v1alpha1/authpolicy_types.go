package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AuthPolicy allows or denies requests to the workloads behind a Service, or
// to every workload of a namespace. It is enforced by the receiving side's
// sidecar, on the caller's mTLS identity (its SPIFFE ID), namespace and IP
// address and on what the request asks for.
//
// How policies combine for one workload:
//
//  1. A request that matches a rule of any Deny policy is denied. Deny beats
//     Allow.
//  2. Otherwise, if any Allow policy selects the workload, the request is
//     allowed only if it matches a rule of one of them: once a workload has
//     an Allow policy, everything not allowed is denied.
//  3. Otherwise (no Allow policy selects the workload) the request is
//     allowed.
//
// A denied HTTP request gets 403; a denied TCP connection is closed. A policy
// in DryRun mode is evaluated the same way but only records what it would
// have denied (in the proxy's access log and metrics), without denying.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=weft,shortName=ap
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Targets",type=string,JSONPath=`.spec.targetRefs`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired authorization.
	Spec AuthPolicySpec `json:"spec"`

	// Status is what the weft controller made of the spec.
	// +optional
	Status Status `json:"status,omitempty"`
}

// AuthAction is what an AuthPolicy does with the requests its rules match.
// +kubebuilder:validation:Enum=Allow;Deny
type AuthAction string

const (
	// AuthActionAllow allows matching requests; once a workload has an Allow
	// policy, requests that match no Allow rule are denied.
	AuthActionAllow AuthAction = "Allow"
	// AuthActionDeny denies matching requests, whatever Allow policies say.
	AuthActionDeny AuthAction = "Deny"
)

// AuthMode says whether an AuthPolicy is enforced.
// +kubebuilder:validation:Enum=Enforce;DryRun
type AuthMode string

const (
	// AuthModeEnforce denies what the policy denies.
	AuthModeEnforce AuthMode = "Enforce"
	// AuthModeDryRun only records what the policy would deny, in the proxy's
	// access log and metrics.
	AuthModeDryRun AuthMode = "DryRun"
)

// AuthPolicySpec is the desired authorization.
type AuthPolicySpec struct {
	// TargetRefs are the workloads the policy protects: Services (group "",
	// kind Service; the policy applies to the workloads the Service selects)
	// or the policy's own namespace (group "", kind Namespace, name the
	// policy's namespace; the policy applies to every workload in it). A
	// Namespace target must be the only target. A Namespace target naming
	// another namespace makes the policy Accepted=False, reason Invalid.
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.exists_one(b, a.group == b.group && a.kind == b.kind && a.name == b.name))",message="spec.targetRefs lists the same target more than once; remove the duplicate"
	// +kubebuilder:validation:XValidation:rule="!self.exists(t, t.kind == 'Namespace') || size(self) == 1",message="spec.targetRefs: a Namespace target already covers every Service in the namespace; list it alone, or write a separate AuthPolicy for the Services"
	TargetRefs []AuthPolicyTargetReference `json:"targetRefs"`

	// Action is Allow or Deny: what happens to requests that match a rule.
	Action AuthAction `json:"action"`

	// Mode is Enforce (the default) or DryRun (record what would be denied,
	// deny nothing). Use DryRun to try a policy on live traffic first.
	// +optional
	// +kubebuilder:default=Enforce
	Mode AuthMode `json:"mode,omitempty"`

	// Rules are alternatives: a request matches the policy when it matches at
	// least one rule. A rule with neither from nor to ({}) matches every
	// request, so `action: Deny` with `rules: [{}]` denies everything.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="size(self) > 0",message="spec.rules must list at least one rule; to match every request write rules: [{}]"
	Rules []AuthRule `json:"rules"`
}

// AuthPolicyTargetReference is a target of an AuthPolicy: a Service or the
// policy's namespace.
// +kubebuilder:validation:XValidation:rule="size(self.group) == 0 && (self.kind == 'Service' || self.kind == 'Namespace')",message="an AuthPolicy target must be a Service or a Namespace, with group \"\" (the empty string)"
type AuthPolicyTargetReference struct {
	PolicyTargetReference `json:",inline"`
}

// AuthRule matches requests by where they come from and what they ask for.
// A request matches the rule when it matches both from and to; an omitted
// from matches every source and an omitted to matches every request.
type AuthRule struct {
	// From matches the source of the request.
	// +optional
	From *AuthSource `json:"from,omitempty"`

	// To matches what the request asks for.
	// +optional
	To *AuthOperation `json:"to,omitempty"`
}

// AuthSource matches a request's source when the source matches at least one
// entry of any list (the lists are alternatives, not conditions that must
// all hold).
// +kubebuilder:validation:XValidation:rule="has(self.serviceAccounts) || has(self.namespaces) || has(self.ipBlocks)",message="from needs at least one of serviceAccounts, namespaces or ipBlocks; to match every source, omit from"
type AuthSource struct {
	// ServiceAccounts are caller identities written namespace/name, such as
	// shop/frontend: the service account in the caller's mTLS certificate
	// (spiffe://<trust domain>/ns/<namespace>/sa/<name>). Callers without
	// mesh mTLS never match.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=317
	// +kubebuilder:validation:items:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",message="a service account must be written namespace/name, such as shop/frontend"
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`

	// Namespaces match every mTLS caller whose identity is in one of these
	// namespaces.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="a namespace must be a namespace name: lower-case letters, digits and '-'"
	Namespaces []string `json:"namespaces,omitempty"`

	// IPBlocks match the caller's IP address (the connection's peer address)
	// against CIDRs, such as 10.0.0.0/8 or 2001:db8::/32; a single address is
	// written /32 (IPv4) or /128 (IPv6).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="an IP block must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32; write a single address as 10.1.2.3/32"
	IPBlocks []string `json:"ipBlocks,omitempty"`
}

// AuthOperation matches what a request asks for: it matches when every list
// that is set matches (a port in ports, and a method in methods, and a path
// in paths). Methods and paths match HTTP requests only; a rule with them
// never matches plain TCP traffic.
// +kubebuilder:validation:XValidation:rule="has(self.ports) || has(self.methods) || has(self.paths)",message="to needs at least one of ports, methods or paths; to match every request, omit to"
type AuthOperation struct {
	// Ports are the destination workload's ports (container ports, that is a
	// Service's targetPort), not Service ports.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	Ports []int32 `json:"ports,omitempty"`

	// Methods are HTTP methods, such as GET.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=9
	Methods []HTTPMethod `json:"methods,omitempty"`

	// Paths match the request path, exactly or by prefix.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Paths []PathMatch `json:"paths,omitempty"`
}

// +kubebuilder:object:root=true

// AuthPolicyList is a list of AuthPolicies.
type AuthPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&AuthPolicy{}, &AuthPolicyList{})
}
