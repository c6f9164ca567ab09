package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MeshConfigName is the only name a MeshConfig may have: the mesh has one.
const MeshConfigName = "weft"

// MeshConfig holds the mesh-wide settings. It is a cluster-scoped singleton
// named weft. Every field has a default, so an empty MeshConfig is valid, and
// no MeshConfig at all means the defaults. The API server fills the defaults
// in, so `kubectl get meshconfig weft -o yaml` shows every value in effect.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=weft,shortName=meshcfg
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'weft'",message="metadata.name must be weft: MeshConfig is a singleton, and the controller reads only the one named weft"
// +kubebuilder:printcolumn:name="Trust Domain",type=string,JSONPath=`.spec.trustDomain`
// +kubebuilder:printcolumn:name="mTLS",type=string,JSONPath=`.spec.mtls.mode`
// +kubebuilder:printcolumn:name="Certificates",type=string,JSONPath=`.spec.certificates.provider`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Root Rotation",type=string,JSONPath=`.status.rootRotation.phase`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the mesh-wide configuration.
	// +optional
	// +kubebuilder:default={}
	Spec MeshConfigSpec `json:"spec,omitempty"`

	// Status is what the weft controller made of the spec.
	// +optional
	Status MeshConfigStatus `json:"status,omitempty"`
}

// MeshConfigStatus is the status of every weft object plus the state of the
// built-in CA's root.
type MeshConfigStatus struct {
	Status `json:",inline"`

	// RootRotation is the built-in CA's trust state: the root in effect and,
	// during a rotation, the phase and what it waits for. Written by the
	// leader.
	// +optional
	RootRotation *RootRotationStatus `json:"rootRotation,omitempty"`
}

// ConditionRootRotation is MeshConfig's condition about the built-in CA's
// root. True (reason Stable): the root that
// spec.certificates.builtIn.rootGeneration asks for is the only trust
// anchor. False while a rotation runs, with the phase as reason
// (AddNewRoot, SwitchSigning, RetireOldRoot) and what it waits for as
// message, or with reason RotationBlocked when a rotation cannot start or
// go on (the message says why and what to change).
const ConditionRootRotation = "RootRotation"

// Reasons of the RootRotation condition besides the phase names.
const (
	// ReasonRootStable (RootRotation=True): one root, trusted and signing.
	ReasonRootStable = "Stable"
	// ReasonRotationBlocked (RootRotation=False): a rotation is asked for
	// or in progress but cannot go on; the message names the field to fix.
	ReasonRotationBlocked = "RotationBlocked"
)

// RootRotationStatus is the built-in CA's trust state.
type RootRotationStatus struct {
	// Phase is Stable (one root), or the step of a rotation in progress:
	// AddNewRoot (every proxy is given a bundle with both roots; the old
	// root still signs), SwitchSigning (the new root signs; every workload
	// certificate is re-issued), RetireOldRoot (the old root leaves the
	// bundle). Each step waits until every connected proxy has ACKed its
	// effect.
	Phase string `json:"phase"`

	// RootGeneration is the generation of the root in effect: the
	// spec.certificates.builtIn.rootGeneration its rotation answered (0 for
	// the first root).
	RootGeneration int64 `json:"rootGeneration"`

	// TargetGeneration is the generation a rotation in progress makes
	// current; absent when Stable.
	// +optional
	TargetGeneration int64 `json:"targetGeneration,omitempty"`

	// CurrentRoot is the root in effect (being retired during a rotation).
	// +optional
	CurrentRoot *RootCertificateStatus `json:"currentRoot,omitempty"`

	// NextRoot is the incoming root during a rotation.
	// +optional
	NextRoot *RootCertificateStatus `json:"nextRoot,omitempty"`

	// PhaseSince is when the current phase began.
	// +optional
	PhaseSince *metav1.Time `json:"phaseSince,omitempty"`

	// WaitingFor says what the current phase waits for, with the number of
	// connected proxies that have ACKed it; empty when Stable.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	WaitingFor string `json:"waitingFor,omitempty"`

	// WaitingForProxies names connected proxies (node ids,
	// <pod>.<namespace>) that have not ACKed what the current phase waits
	// for: the first 20 in order of name over every controller replica.
	// +optional
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:MaxLength=320
	WaitingForProxies []string `json:"waitingForProxies,omitempty"`

	// WaitingForProxyCount is how many connected proxies have not ACKed
	// what the current phase waits for (WaitingForProxies names the first
	// 20).
	// +optional
	WaitingForProxyCount int32 `json:"waitingForProxyCount,omitempty"`

	// PhaseDeadline is when the current phase is forced on if proxies
	// still have not ACKed it: phaseSince plus
	// spec.certificates.builtIn.rotationPhaseTimeout (their streams are
	// closed then, and the phase moves on 30 seconds later).
	// +optional
	PhaseDeadline *metav1.Time `json:"phaseDeadline,omitempty"`
}

// RootCertificateStatus identifies a root certificate without its key.
type RootCertificateStatus struct {
	// SHA256 is the certificate's SHA-256 fingerprint in hex (what
	// `openssl x509 -fingerprint -sha256` prints, without colons, in lower
	// case).
	SHA256 string `json:"sha256"`

	// NotAfter is when the root expires.
	NotAfter metav1.Time `json:"notAfter"`
}

// MeshConfigSpec is the mesh-wide configuration.
type MeshConfigSpec struct {
	// TrustDomain is the SPIFFE trust domain of workload identities:
	// spiffe://<trustDomain>/ns/<namespace>/sa/<serviceaccount>. Changing it
	// changes every identity, which breaks AuthPolicies between meshes that
	// still use the old one until certificates are renewed.
	// +optional
	// +kubebuilder:default="cluster.local"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="spec.trustDomain must be a lower-case DNS name such as cluster.local or prod.example.com"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.trustDomain cannot be changed in place: every connected proxy's identity and secrets are keyed by it. To move to a new trust domain, delete the MeshConfig and create it with the new spec.trustDomain, then restart the meshed workloads so they get certificates for the new identities (docs/design/070)"
	TrustDomain string `json:"trustDomain,omitempty"`

	// MTLS sets mutual TLS between workloads.
	// +optional
	// +kubebuilder:default={}
	MTLS MTLSConfig `json:"mtls"`

	// Certificates sets where workload certificates come from and how long
	// they live.
	// +optional
	// +kubebuilder:default={}
	Certificates CertificatesConfig `json:"certificates"`

	// Sidecar sets the proxy container that weft injects into pods.
	// +optional
	// +kubebuilder:default={}
	Sidecar SidecarConfig `json:"sidecar"`

	// Push sets how configuration changes are batched before they are pushed
	// to proxies.
	// +optional
	// +kubebuilder:default={}
	Push PushConfig `json:"push"`

	// AccessLog sets the proxies' access logs.
	// +optional
	// +kubebuilder:default={}
	AccessLog AccessLogConfig `json:"accessLog"`

	// Tracing sets distributed tracing.
	// +optional
	// +kubebuilder:default={}
	Tracing TracingConfig `json:"tracing"`

	// OutboundTrafficPolicy says what a sidecar does with a connection to a
	// destination the mesh does not know (not a Service it can see):
	// AllowAny (the default) passes it through to where the application
	// sent it; RegistryOnly refuses it (HTTP 502, or a closed connection).
	// +optional
	// +kubebuilder:default=AllowAny
	OutboundTrafficPolicy OutboundTrafficPolicy `json:"outboundTrafficPolicy,omitempty"`
}

// MTLSMode says whether workloads accept plaintext.
// +kubebuilder:validation:Enum=Permissive;Strict
type MTLSMode string

const (
	// MTLSModePermissive accepts both mesh mTLS and plaintext on inbound
	// connections (for callers outside the mesh during a migration); outbound
	// connections to meshed workloads always use mTLS.
	MTLSModePermissive MTLSMode = "Permissive"
	// MTLSModeStrict accepts only mesh mTLS on inbound connections.
	MTLSModeStrict MTLSMode = "Strict"
)

// MTLSConfig sets mutual TLS between workloads.
type MTLSConfig struct {
	// Mode is the mesh-wide inbound mode, Permissive or Strict. A namespace
	// overrides it for its workloads with the label weft.dev/mtls-mode set to
	// Permissive or Strict.
	// +optional
	// +kubebuilder:default=Permissive
	Mode MTLSMode `json:"mode,omitempty"`
}

// CertificateProvider is where workload certificates come from.
// +kubebuilder:validation:Enum=BuiltIn;CertManager
type CertificateProvider string

const (
	// CertificateProviderBuiltIn signs workload certificates with weft's own
	// CA, whose key is kept in a Secret in weft-system.
	CertificateProviderBuiltIn CertificateProvider = "BuiltIn"
	// CertificateProviderCertManager asks cert-manager for each workload
	// certificate through a CertificateRequest to the issuer in
	// certManager.issuerRef.
	CertificateProviderCertManager CertificateProvider = "CertManager"
)

// CertificatesConfig sets where workload certificates come from and how long
// they live.
// +kubebuilder:validation:XValidation:rule="!has(self.provider) || self.provider != 'CertManager' || has(self.certManager)",message="spec.certificates.certManager.issuerRef is required when spec.certificates.provider is CertManager: name the cert-manager Issuer or ClusterIssuer that signs workload certificates",fieldPath=".certManager"
// +kubebuilder:validation:XValidation:rule="!has(self.certManager) || (has(self.provider) && self.provider == 'CertManager')",message="spec.certificates.certManager is set but spec.certificates.provider is not CertManager: set provider: CertManager, or remove certManager",fieldPath=".certManager"
type CertificatesConfig struct {
	// Provider is BuiltIn (weft's own CA) or CertManager.
	// +optional
	// +kubebuilder:default=BuiltIn
	Provider CertificateProvider `json:"provider,omitempty"`

	// CertManager sets the cert-manager issuer; required when provider is
	// CertManager, and only then.
	// +optional
	CertManager *CertManagerConfig `json:"certManager,omitempty"`

	// BuiltIn sets the built-in CA: its root rotation.
	// +optional
	BuiltIn *BuiltInCAConfig `json:"builtIn,omitempty"`

	// WorkloadCertificateLifetime is how long a workload certificate is
	// valid, between 1h and 8760h. Certificates are renewed when half
	// of it has passed.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || (duration(self) >= duration('1h') && duration(self) <= duration('8760h'))",message="spec.certificates.workloadCertificateLifetime must be between 1h and 8760h, such as 24h"
	WorkloadCertificateLifetime Duration `json:"workloadCertificateLifetime,omitempty"`
}

// BuiltInCAConfig sets the built-in CA.
type BuiltInCAConfig struct {
	// RootGeneration asks for a root rotation: raise it (for example from 0
	// to 1) and the controller creates a new root and rotates to it in
	// stages, each waiting until every connected proxy has ACKed it, so no
	// request fails: add the new root to every trust bundle, sign with it,
	// retire the old root (its key is deleted). status.rootRotation shows
	// the progress; `weft ca rotate-root` raises it for you. Kept in Git, a
	// rotation is reviewable and the same value never rotates twice. It
	// only increases. Used while spec.certificates.provider is BuiltIn.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:XValidation:rule="self >= oldSelf",message="spec.certificates.builtIn.rootGeneration may only increase (a root rotation cannot be undone): keep its current value, or raise it by one to rotate again"
	RootGeneration int64 `json:"rootGeneration,omitempty"`

	// RotationPhaseTimeout bounds how long each phase of a root rotation
	// waits for every connected proxy to ACK it. When it has passed, each
	// controller replica closes the xDS streams of its proxies that have
	// not ACKed (they reconnect and are sent the phase's bundle and
	// certificate at once); if some still have not ACKed 30 seconds
	// later, the phase moves on anyway, with a Warning Event
	// (RootRotationForced) naming them — they may then fail mTLS with
	// their peers until they take the new secrets. status.rootRotation
	// names the proxies a phase waits for and when it will be forced.
	// Lower it (to 0s, say) to push a stuck rotation on now; between 0s
	// and 8760h. Absent: 24h.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self) <= duration('8760h')",message="spec.certificates.builtIn.rotationPhaseTimeout must be at most 8760h, such as 24h (or 0s to force a stuck rotation on now)"
	RotationPhaseTimeout Duration `json:"rotationPhaseTimeout,omitempty"`
}

// DefaultRotationPhaseTimeout is spec.certificates.builtIn.rotationPhaseTimeout
// when absent: a day lets a proxy that is restarting, or a node that is
// briefly unreachable, catch up, and still ends a stuck rotation within a
// working day.
const DefaultRotationPhaseTimeout = "24h"

// CertManagerConfig points at the cert-manager issuer of workload
// certificates and pins the CA that weft trusts for them.
// +kubebuilder:validation:XValidation:rule="has(self.trustBundle)",message="spec.certificates.certManager.trustBundle is required: name the Secret or ConfigMap key in weft-system that holds the CA certificate(s) signing the mesh's workload certificates, such as trustBundle: {secret: {name: mesh-ca, key: ca.crt}}; weft trusts only those CAs, not whatever the issuer returns (docs/design/074)",fieldPath=".trustBundle"
type CertManagerConfig struct {
	// IssuerRef is the issuer that signs workload certificates.
	IssuerRef IssuerReference `json:"issuerRef"`

	// TrustBundle pins the CA certificates weft trusts for workload
	// certificates: a key of a Secret or ConfigMap in weft-system (where
	// weft-controller runs) holding PEM certificates. Proxies are given
	// only these CAs to trust (the SDS trust bundle), a proxyless
	// workload's certificate authenticates it to the xDS server only if
	// it chains to one of them, and a certificate cert-manager returns
	// that does not is refused (the request's status.ca is ignored).
	// Name a CA that signs only for the mesh: anyone who can get a
	// certificate from it with a workload's SPIFFE ID can act as that
	// workload. Required; re-read when it changes (every certificate is
	// then re-issued).
	// +optional
	TrustBundle *TrustBundleSource `json:"trustBundle,omitempty"`
}

// TrustBundleSource names one key of a Secret or of a ConfigMap in
// weft-system that holds PEM CA certificates.
// +kubebuilder:validation:XValidation:rule="has(self.secret) != has(self.configMap)",message="spec.certificates.certManager.trustBundle must name exactly one of secret or configMap, such as {secret: {name: mesh-ca, key: ca.crt}}"
type TrustBundleSource struct {
	// Secret is a Secret in weft-system, such as the one a cert-manager
	// CA Issuer reads (key ca.crt).
	// +optional
	Secret *KeyReference `json:"secret,omitempty"`

	// ConfigMap is a ConfigMap in weft-system, such as one trust-manager
	// writes.
	// +optional
	ConfigMap *KeyReference `json:"configMap,omitempty"`
}

// KeyReference names a key of an object in weft-system.
type KeyReference struct {
	// Name of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Key holding the PEM certificates.
	// +optional
	// +kubebuilder:default="ca.crt"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// IssuerReference names a cert-manager issuer (cert-manager's
// ObjectReference).
type IssuerReference struct {
	// Name of the issuer.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Kind is Issuer (in weft-system, where weft creates its
	// CertificateRequests) or ClusterIssuer, or the kind of an external
	// issuer.
	// +optional
	// +kubebuilder:default=Issuer
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Kind string `json:"kind,omitempty"`

	// Group is the issuer's API group: cert-manager.io, or an external
	// issuer's group.
	// +optional
	// +kubebuilder:default="cert-manager.io"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group,omitempty"`
}

// SidecarConfig sets the injected proxy container.
// +kubebuilder:validation:XValidation:rule="!has(self.captureBackend) || self.captureBackend != 'IPTables' || has(self.initImage)",message="spec.sidecar.captureBackend IPTables runs iptables-restore and ip6tables-restore, which weft's own weft-init image does not contain: set spec.sidecar.initImage to a weft-init image that has them, or use NFTables (the default, for every node with nf_tables)",fieldPath=".captureBackend"
type SidecarConfig struct {
	// Image is the Envoy proxy image of the sidecar. Pods keep the image they
	// were created with; a change applies to pods created afterwards.
	// +optional
	// +kubebuilder:default="docker.io/envoyproxy/envoy-distroless:v1.40.0"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`

	// AllowedImages are the images a pod's weft.dev/proxy-image
	// annotation may choose instead of Image: the sidecar runs as the UID
	// that traffic capture exempts, so an arbitrary image there would
	// bypass the mesh. Each entry is an image reference, or a prefix
	// ending in "*" (docker.io/envoyproxy/envoy-distroless:*). Empty (the
	// default): the annotation may name only Image itself.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=512
	// +listType=set
	AllowedImages []string `json:"allowedImages,omitempty"`

	// InitImage is the weft-init image, the init container that redirects a
	// meshed pod's traffic to its sidecar. Empty (the default) means the
	// image of weft-controller's own version (its --init-image flag), so an
	// upgrade of weft upgrades it too; set it to pull from a mirror.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="size(self) > 0 && !self.contains(' ')",message="spec.sidecar.initImage must be an image reference without spaces, such as registry.example.com/weft-init:v0.1.0; remove it to use weft-controller's own version"
	InitImage string `json:"initImage,omitempty"`

	// AgentImage is the image running `weft agent` beside proxyless gRPC
	// applications (weft.dev/proxyless: grpc). Empty (the default) means
	// the weft image of weft-controller's own version (its --agent-image
	// flag).
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="size(self) > 0 && !self.contains(' ')",message="spec.sidecar.agentImage must be an image reference without spaces, such as registry.example.com/weft:v0.1.0; remove it to use weft-controller's own version"
	AgentImage string `json:"agentImage,omitempty"`

	// CaptureBackend is how weft-init programs a meshed pod's traffic
	// capture into the kernel: NFTables (the default) talks netlink to
	// nf_tables and needs nothing in its image; IPTables runs
	// iptables-restore and ip6tables-restore (weft-init --backend=iptables),
	// for nodes whose kernel lacks nf_tables, and therefore needs an
	// initImage that contains them. Both install the same rules. New pods
	// only; a pod keeps the backend it was created with.
	// +optional
	// +kubebuilder:default=NFTables
	CaptureBackend CaptureBackend `json:"captureBackend,omitempty"`

	// ImagePullPolicy is the sidecar's image pull policy.
	// +optional
	// +kubebuilder:default=IfNotPresent
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Resources are the sidecar container's default resource requests and
	// limits.
	// +optional
	// +kubebuilder:default={requests: {cpu: "100m", memory: "128Mi"}, limits: {memory: "512Mi"}}
	Resources *SidecarResources `json:"resources,omitempty"`
}

// CaptureBackend is how weft-init programs netfilter
// (docs/design/085, 127).
// +kubebuilder:validation:Enum=NFTables;IPTables
type CaptureBackend string

const (
	// CaptureNFTables programs nf_tables over netlink (weft-init's
	// default).
	CaptureNFTables CaptureBackend = "NFTables"
	// CaptureIPTables runs iptables-restore and ip6tables-restore
	// (weft-init --backend=iptables).
	CaptureIPTables CaptureBackend = "IPTables"
)

// SidecarResources are a container's resource requests and limits.
type SidecarResources struct {
	// Requests are the resources the scheduler reserves for the sidecar.
	// +optional
	Requests corev1.ResourceList `json:"requests,omitempty"`

	// Limits are the most the sidecar may use.
	// +optional
	Limits corev1.ResourceList `json:"limits,omitempty"`
}

// PushConfig sets how changes are batched before they are pushed to proxies.
// +kubebuilder:validation:XValidation:rule="!has(self.quietPeriod) || !has(self.maxDelay) || !self.quietPeriod.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || !self.maxDelay.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || duration(self.quietPeriod) <= duration(self.maxDelay)",message="spec.push.maxDelay must be at least spec.push.quietPeriod; raise maxDelay or lower quietPeriod",fieldPath=".maxDelay"
type PushConfig struct {
	// QuietPeriod is how long the controller waits after a change for more
	// changes before it pushes them together. 0s pushes every change at
	// once.
	// +optional
	// +kubebuilder:default="100ms"
	QuietPeriod Duration `json:"quietPeriod,omitempty"`

	// MaxDelay bounds the wait: a change is pushed at most this long after it
	// was seen, even if changes keep coming.
	// +optional
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]{1,5}(h|m|s|ms)){1,4}$') || (duration(self) > duration('0s') && duration(self) <= duration('1m'))",message="spec.push.maxDelay must be longer than 0s and at most 1m, such as 1s"
	MaxDelay Duration `json:"maxDelay,omitempty"`
}

// AccessLogFormat is the format of access log lines.
// +kubebuilder:validation:Enum=Text;JSON
type AccessLogFormat string

const (
	// AccessLogFormatText writes Envoy's default text format.
	AccessLogFormatText AccessLogFormat = "Text"
	// AccessLogFormatJSON writes one JSON object per request.
	AccessLogFormatJSON AccessLogFormat = "JSON"
)

// AccessLogConfig sets the proxies' access logs.
type AccessLogConfig struct {
	// Enabled writes one line per request (or TCP connection) to the
	// sidecar's standard output.
	// +optional
	// +kubebuilder:default=false
	Enabled *bool `json:"enabled,omitempty"`

	// Format is Text or JSON.
	// +optional
	// +kubebuilder:default=JSON
	Format AccessLogFormat `json:"format,omitempty"`
}

// OutboundTrafficPolicy is AllowAny or RegistryOnly.
// +kubebuilder:validation:Enum=AllowAny;RegistryOnly
type OutboundTrafficPolicy string

const (
	// OutboundAllowAny passes unknown destinations through.
	OutboundAllowAny OutboundTrafficPolicy = "AllowAny"
	// OutboundRegistryOnly refuses unknown destinations.
	OutboundRegistryOnly OutboundTrafficPolicy = "RegistryOnly"
)

// TracingConfig sets distributed tracing.
type TracingConfig struct {
	// CollectorAddress is the host:port of an OpenTelemetry (OTLP/gRPC)
	// collector that proxies send spans to, such as
	// otel-collector.observability:4317. Empty turns tracing off.
	// +optional
	// +kubebuilder:default=""
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:XValidation:rule="self == '' || self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*|\\\\[[0-9a-fA-F:.]+\\\\]):[0-9]{1,5}$')",message="spec.tracing.collectorAddress must be host:port, such as otel-collector.observability:4317, or empty to turn tracing off"
	CollectorAddress *string `json:"collectorAddress,omitempty"`

	// SamplingPercent is the share of requests that start a new trace, from
	// 0 to 100. Requests that arrive with a sampled trace context are traced
	// whatever this says.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	SamplingPercent *int32 `json:"samplingPercent,omitempty"`
}

// +kubebuilder:object:root=true

// MeshConfigList is a list of MeshConfigs (there is at most one, named weft).
type MeshConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshConfig `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MeshConfig{}, &MeshConfigList{})
}
