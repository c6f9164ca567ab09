package webhook

// SkipReason names why a pod was not injected. The name appears in the
// pod's weft.dev/inject-status annotation and as the reason label of
// weft_webhook_injections_total, so users and dashboards see the same word.
type SkipReason string

// The reasons not to inject, in the order they are checked.
const (
	// SystemNamespace: kube-system, kube-public, kube-node-lease and
	// weft-system are never meshed (the control plane must not depend on
	// itself, and system pods must start when weft is down).
	SystemNamespace SkipReason = "SystemNamespace"
	// AlreadyInjected: the pod has a weft-proxy (or, proxyless, a
	// weft-agent) container. Injecting it again changes nothing.
	AlreadyInjected SkipReason = "AlreadyInjected"
	// OptedOut: the pod says weft.dev/inject: "false".
	OptedOut SkipReason = "OptedOut"
	// NamespaceNotEnabled: the namespace lacks weft.dev/inject: enabled and
	// the pod does not ask for injection.
	NamespaceNotEnabled SkipReason = "NamespaceNotEnabled"
	// HostNetwork: the pod shares the node's network, which weft-init must
	// not rewrite.
	HostNetwork SkipReason = "HostNetwork"
	// StaticPod: a mirror of a static pod; the kubelet runs the manifest
	// on disk, not this object, so a sidecar added here would never run.
	StaticPod SkipReason = "StaticPod"
)

var skipMessages = map[SkipReason]string{
	SystemNamespace:     "pods in kube-system, kube-public, kube-node-lease and weft-system are never injected",
	AlreadyInjected:     "the pod already has a weft-proxy or weft-agent container",
	OptedOut:            `the pod has weft.dev/inject: "false"`,
	NamespaceNotEnabled: `the namespace is not labelled weft.dev/inject=enabled and the pod does not have weft.dev/inject: "true"`,
	HostNetwork:         "the pod uses the node's network (hostNetwork: true), whose traffic weft cannot capture",
	StaticPod:           "the pod mirrors a static pod, which the kubelet runs from its manifest",
}

// Message explains the reason to a user.
func (r SkipReason) Message() string { return skipMessages[r] }

// Report says what Inject did.
type Report struct {
	// Injected is true when the sidecar was added.
	Injected bool
	// Reason is why not, when Injected is false.
	Reason SkipReason
	// RewrittenProbes lists the application probes now served through the
	// sidecar, as /app-health/<container>/<probe> paths.
	RewrittenProbes []string
}

// Status is the value of the weft.dev/inject-status annotation.
func (r Report) Status() string {
	if r.Injected {
		return StatusInjected
	}
	return "skipped: " + string(r.Reason)
}
