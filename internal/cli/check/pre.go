package check

import (
	"context"
	"fmt"
	"sort"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/crds/v1alpha1"
)

// InstallRight is one right an install needs: to create a resource of a
// group, in the install's namespace or cluster-wide.
type InstallRight struct {
	Group, Resource string
	Namespaced      bool
}

// InstallRights are the rights `kubectl apply -k config/default` needs:
// one per kind it creates (a test compares them with what config/default
// renders). Granting weft-controller its ClusterRole also needs the rights
// that role holds, or "escalate" on clusterroles; the API server's answer
// to the apply is the final word on that.
var InstallRights = []InstallRight{
	{"apiextensions.k8s.io", "customresourcedefinitions", false},
	{"", "namespaces", false},
	{"rbac.authorization.k8s.io", "clusterroles", false},
	{"rbac.authorization.k8s.io", "clusterrolebindings", false},
	{"admissionregistration.k8s.io", "mutatingwebhookconfigurations", false},
	{"", "serviceaccounts", true},
	{"", "services", true},
	{"apps", "deployments", true},
	{"policy", "poddisruptionbudgets", true},
	{"rbac.authorization.k8s.io", "roles", true},
	{"rbac.authorization.k8s.io", "rolebindings", true},
}

// Rights the install options add (weft install --webhook-cert-manager:
// config/components/webhook-cert-manager's Issuers and Certificates;
// --pod-monitors: config/components/monitoring's PodMonitors), all in the
// install's namespace. A test compares them with what those options add.
var (
	WebhookCertManagerRights = []InstallRight{
		{"cert-manager.io", "issuers", true},
		{"cert-manager.io", "certificates", true},
	}
	PodMonitorRights = []InstallRight{
		{"monitoring.coreos.com", "podmonitors", true},
	}
)

// PreOptions say what the install will be.
type PreOptions struct {
	// Namespace weft-controller will run in.
	Namespace string
	// CertManager: workload certificates from cert-manager (MeshConfig
	// spec.certificates.provider), so its API must be served.
	CertManager bool
	// WebhookCertManager: weft install --webhook-cert-manager (the
	// webhook's certificate from a cert-manager Certificate and Issuers).
	WebhookCertManager bool
	// PodMonitors: weft install --pod-monitors (Prometheus Operator
	// PodMonitors).
	PodMonitors bool
}

// Rights are every right the install with these options needs.
func (o PreOptions) Rights() []InstallRight {
	out := append([]InstallRight(nil), InstallRights...)
	if o.WebhookCertManager {
		out = append(out, WebhookCertManagerRights...)
	}
	if o.PodMonitors {
		out = append(out, PodMonitorRights...)
	}
	return out
}

// RunPre checks that weft can be installed in the cluster, before it is:
// the API server is reachable and new enough, the user may create what
// config/default holds, no earlier install or other mesh is in the way,
// and cert-manager is there when the install will use it.
func RunPre(ctx context.Context, c client.Client, d discovery.DiscoveryInterface, o PreOptions) []Result {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	r := []Result{apiServer(d)}
	if r[0].Status == Fail {
		return r
	}
	r = append(r, rights(ctx, c, o.Namespace, o.Rights()), existing(ctx, c, d, o.Namespace), otherInjectors(ctx, c))
	var kinds []string
	if o.CertManager {
		kinds = append(kinds, "CertificateRequest", "Issuer", "ClusterIssuer")
	}
	if o.WebhookCertManager {
		kinds = append(kinds, "Certificate", "Issuer")
	}
	if len(kinds) > 0 {
		r = append(r, certManagerServed(d, o, dedupe(kinds, len(kinds))))
	}
	if o.PodMonitors {
		r = append(r, podMonitorsServed(d))
	}
	return r
}

func rights(ctx context.Context, c client.Client, ns string, want []InstallRight) Result {
	r := Result{Name: "Permissions"}
	var denied, errs []string
	for _, right := range want {
		attrs := &authorizationv1.ResourceAttributes{Verb: "create", Group: right.Group, Resource: right.Resource}
		what := right.Resource
		if right.Group != "" {
			what += "." + right.Group
		}
		if right.Namespaced {
			attrs.Namespace = ns
			what += " in " + ns
		}
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attrs}}
		if err := c.Create(ctx, review); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", what, reason(err)))
			continue
		}
		if !review.Status.Allowed {
			denied = append(denied, what)
		}
	}
	switch {
	case len(errs) > 0:
		r.Status, r.Message = Fail, "cannot ask the API server what you may do: "+strings.Join(errs, "; ")
	case len(denied) > 0:
		r.Status = Fail
		r.Message = fmt.Sprintf("you may not create %s", list3(denied))
		r.Fix = "install as a cluster administrator, or ask one to grant these rights (check one with: kubectl auth can-i create " + InstallRights[0].Resource + ")"
	default:
		r.Message = fmt.Sprintf("you may create everything the install holds (%d kinds)", len(want))
	}
	return r
}

// existing: an earlier install is not an error (applying again upgrades
// it), but the user should know that `weft check` is the command for it.
func existing(ctx context.Context, c client.Client, d discovery.DiscoveryInterface, ns string) Result {
	r := Result{Name: "Earlier install"}
	var found []string
	if list, err := d.ServerResourcesForGroupVersion(v1alpha1.GroupVersion.String()); err == nil && len(list.APIResources) > 0 {
		found = append(found, "weft's CRDs are served")
	}
	var n corev1.Namespace
	switch err := c.Get(ctx, client.ObjectKey{Name: ns}, &n); {
	case err == nil:
		found = append(found, "namespace "+ns+" exists")
	case !apierrors.IsNotFound(err):
		found = append(found, "namespace "+ns+": "+reason(err))
	}
	if len(found) == 0 {
		r.Message = "none: a fresh install"
		return r
	}
	r.Status = Warn
	r.Message = strings.Join(found, "; ") + ": applying config/default again upgrades that install in place"
	r.Fix = "weft check   (the health of what is installed)"
	return r
}

// otherInjectors: another mesh's sidecar injector on the same pods would
// give them two proxies capturing the same traffic.
func otherInjectors(ctx context.Context, c client.Client) Result {
	r := Result{Name: "Other meshes"}
	var list admissionregistrationv1.MutatingWebhookConfigurationList
	if err := c.List(ctx, &list); err != nil {
		r.Status, r.Message = Warn, "cannot list MutatingWebhookConfigurations: "+reason(err)
		return r
	}
	var others []string
	for _, mwc := range list.Items {
		if mwc.Name == WebhookConfigName {
			continue
		}
		for _, w := range mwc.Webhooks {
			if mesh := otherMesh(w.Name); mesh != "" {
				others = append(others, fmt.Sprintf("%s (%s)", mwc.Name, mesh))
				break
			}
		}
	}
	sort.Strings(others)
	if len(others) == 0 {
		r.Message = "no other mesh's sidecar injector is registered"
		return r
	}
	r.Status = Warn
	r.Message = fmt.Sprintf("another mesh injects sidecars: %s. A pod injected by both gets two proxies capturing the same traffic", list3(others))
	r.Fix = "label each namespace for one mesh only (weft.dev/inject=enabled here, and not the other mesh's injection label)"
	return r
}

// otherMesh names the mesh whose injector a webhook's name says it is.
func otherMesh(webhook string) string {
	switch {
	case strings.HasSuffix(webhook, "sidecar-injector.istio.io"):
		return "Istio"
	case strings.Contains(webhook, "linkerd-proxy-injector"):
		return "Linkerd"
	case strings.Contains(webhook, "kuma"):
		return "Kuma"
	case strings.Contains(webhook, "consul-connect-injector"):
		return "Consul"
	}
	return ""
}

// certManagerServed: cert-manager's API, which weft uses to request
// workload certificates (CertificateRequests against an issuer, with
// --cert-manager) and which serves the webhook's certificate (a
// Certificate from Issuers, with --webhook-cert-manager): kinds must be
// served.
func certManagerServed(d discovery.DiscoveryInterface, o PreOptions, kinds []string) Result {
	r := Result{Name: "cert-manager"}
	const gv = "cert-manager.io/v1"
	list, err := d.ServerResourcesForGroupVersion(gv)
	if err != nil && !apierrors.IsNotFound(err) {
		r.Status, r.Message = Fail, fmt.Sprintf("cannot list %s: %v", gv, err)
		return r
	}
	served := map[string]bool{}
	if list != nil {
		for _, res := range list.APIResources {
			served[res.Kind] = true
		}
	}
	var missing []string
	for _, k := range kinds {
		if !served[k] {
			missing = append(missing, k)
		}
	}
	var uses, without []string
	if o.CertManager {
		uses, without = append(uses, "workload certificates"), append(without, "with its built-in CA")
	}
	if o.WebhookCertManager {
		uses, without = append(uses, "the webhook's certificate"), append(without, "without --webhook-cert-manager")
	}
	if len(missing) > 0 {
		r.Status = Fail
		r.Message = fmt.Sprintf("%s not served at %s: the install asks cert-manager for %s", joinAnd(missing), gv, strings.Join(uses, " and "))
		r.Fix = "install cert-manager first (https://cert-manager.io/docs/installation/), or install weft " + strings.Join(without, " and ")
		return r
	}
	r.Message = joinAnd(kinds) + " served at " + gv
	return r
}

// podMonitorsServed: the Prometheus Operator's PodMonitor, which
// --pod-monitors installs.
func podMonitorsServed(d discovery.DiscoveryInterface) Result {
	r := Result{Name: "Prometheus Operator"}
	const gv = "monitoring.coreos.com/v1"
	list, err := d.ServerResourcesForGroupVersion(gv)
	if err != nil && !apierrors.IsNotFound(err) {
		r.Status, r.Message = Fail, fmt.Sprintf("cannot list %s: %v", gv, err)
		return r
	}
	if list != nil {
		for _, res := range list.APIResources {
			if res.Kind == "PodMonitor" {
				r.Message = "PodMonitor served at " + gv
				return r
			}
		}
	}
	r.Status = Fail
	r.Message = fmt.Sprintf("PodMonitor not served at %s: the install adds PodMonitors for weft-controller and the sidecars, which the API server would refuse", gv)
	r.Fix = "install the Prometheus Operator (its CRDs) first, or install weft without --pod-monitors"
	return r
}

// joinAnd is "a", "a and b", "a, b and c".
func joinAnd(ss []string) string {
	if len(ss) < 2 {
		return strings.Join(ss, "")
	}
	return strings.Join(ss[:len(ss)-1], ", ") + " and " + ss[len(ss)-1]
}
