// Package check is `weft check`: whether weft is installed and healthy in
// a cluster, one line per check, each failure with what is wrong and the
// command that fixes it.
package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/cli/proxystatus"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/webhook"
)

// Names of what config/default installs.
const (
	DefaultNamespace  = "weft-system"
	ControllerName    = "weft-controller"
	WebhookConfigName = "weft-sidecar-injector"
	WebhookService    = "weft-webhook"
	// InstallCommand installs or repairs every object of config/default
	// (weft install prints them; from a checkout, kubectl apply -k
	// config/default does the same).
	InstallCommand = "weft install | kubectl apply --server-side -f -   (with the flags you installed with)"
)

// MinKubernetesMinor is the oldest Kubernetes minor version (1.29) with
// native sidecars (restartable init containers), which injection uses by
// default; older clusters need `weft inject --legacy-sidecar`.
const MinKubernetesMinor = 29

// RootExpiryFail and RootExpiryWarn: a built-in root with less than 30
// days left fails, with less than 180 days warns. A root rotation
// (weft ca rotate-root --wait) waits for every connected proxy at each of
// its three stages and re-issues every workload certificate: give it
// weeks, not hours, and months of notice.
const (
	RootExpiryFail = 30 * 24 * time.Hour
	RootExpiryWarn = 180 * 24 * time.Hour
)

// MaxListed caps how many objects one check names (10): enough to act on,
// short enough to read; the count says how many more there are.
const MaxListed = 10

// Status of one check.
type Status int

const (
	OK Status = iota
	// Warn: worth knowing, not a failure (the exit code stays 0).
	Warn
	Fail
)

// Result is one check.
type Result struct {
	Name    string
	Status  Status
	Message string
	// Fix is the command (or step) that fixes a failure or warning.
	Fix string
}

// Options are where weft is installed, and the injection check of the
// controller (internal/controller/injectcheck, wired in by cmd/weft: it
// sits on a higher floor).
type Options struct {
	Namespace string
	// MissingSidecar says whether a pod in namespace ns should have had
	// weft's sidecar and did not get it, and the command that recreates
	// it.
	MissingSidecar func(pod *corev1.Pod, ns *corev1.Namespace) (missing bool, fix string)
	// Now is the clock for the root's expiry (nil: time.Now).
	Now func() time.Time
	// ProbeNamespace is where the webhook probe's dry-run pod is created
	// (empty: DefaultProbeNamespace).
	ProbeNamespace string
	// Proxies reads every weft-controller replica's connected proxies
	// (proxystatus.FromReplicas, or the --address given); nil skips the
	// "Connected proxies" check.
	Proxies func(ctx context.Context) ([]proxystatus.Replica, error)
	// REST reaches the core API group (kubernetes.Clientset
	// .CoreV1().RESTClient()): each weft-controller replica's /metrics is
	// read through the API server's pod proxy. nil skips the "Workload
	// certificates" check.
	REST rest.Interface
}

// MaxPodsListed caps the pods one line names (3): a few to start from,
// the count says how many more.
const MaxPodsListed = 3

// DefaultProbeNamespace holds the webhook probe's dry-run pod: it exists
// in every cluster and weft does not exclude it.
const DefaultProbeNamespace = "default"

// Run runs every check against the cluster and returns the results in
// order. It never stops early: one failure does not hide the others.
func Run(ctx context.Context, c client.Client, d discovery.DiscoveryInterface, o Options) []Result {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.ProbeNamespace == "" {
		o.ProbeNamespace = DefaultProbeNamespace
	}
	r := []Result{apiServer(d)}
	if r[0].Status == Fail {
		return r // nothing else can answer
	}
	crds, served := crdCheck(d)
	r = append(r, crds,
		controller(ctx, c, o.Namespace),
		webhookCheck(ctx, c, o.Namespace, o.ProbeNamespace),
	)
	if o.Now == nil {
		o.Now = time.Now
	}
	if served[v1alpha1.GroupVersion.WithKind("MeshConfig")] {
		mc, res := meshConfig(ctx, c)
		r = append(r, res, rootCA(mc, o.Now()))
	}
	nsRes, labelled := namespaces(ctx, c)
	r = append(r, nsRes, pods(ctx, c, labelled, o.MissingSidecar))
	if o.Proxies != nil {
		r = append(r, connected(ctx, c, o.Namespace, o.Proxies, o.Now()))
	}
	if o.REST != nil {
		r = append(r, certificates(ctx, c, o.REST, o.Namespace))
	}
	r = append(r, policies(ctx, c, served, routesServed(d)))
	return r
}

// Failed counts the failures.
func Failed(rs []Result) int {
	n := 0
	for _, r := range rs {
		if r.Status == Fail {
			n++
		}
	}
	return n
}

// Print writes one line per check (✔, ! or ✖) and, under a failure or a
// warning, what to run.
func Print(w io.Writer, rs []Result) {
	for _, r := range rs {
		mark := map[Status]string{OK: "✔", Warn: "!", Fail: "✖"}[r.Status]
		fmt.Fprintf(w, "%s %s: %s\n", mark, r.Name, indent(r.Message))
		if r.Status != OK && r.Fix != "" {
			fmt.Fprintf(w, "    fix: %s\n", indent(r.Fix))
		}
	}
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n    ") }

func apiServer(d discovery.DiscoveryInterface) Result {
	r := Result{Name: "Kubernetes API"}
	v, err := d.ServerVersion()
	if err != nil {
		r.Status, r.Message = Fail, fmt.Sprintf("cannot reach the API server: %v", err)
		r.Fix = "check --kubeconfig (or $KUBECONFIG) and the current context: kubectl cluster-info"
		return r
	}
	r.Message = "reachable, " + v.GitVersion
	minor, err := strconv.Atoi(strings.TrimRight(v.Minor, "+"))
	if err == nil && v.Major == "1" && minor < MinKubernetesMinor {
		r.Status = Warn
		r.Message += fmt.Sprintf(": older than 1.%d, no native sidecars", MinKubernetesMinor)
		r.Fix = "inject with weft inject --legacy-sidecar, or upgrade the cluster"
	}
	return r
}

// crdCheck: every kind of mesh.weft.dev/v1alpha1 is served.
func crdCheck(d discovery.DiscoveryInterface) (Result, map[schema.GroupVersionKind]bool) {
	r := Result{Name: "CRDs"}
	served := map[schema.GroupVersionKind]bool{}
	gv := v1alpha1.GroupVersion.String()
	list, err := d.ServerResourcesForGroupVersion(gv)
	if err != nil && !apierrors.IsNotFound(err) {
		r.Status, r.Message = Fail, fmt.Sprintf("cannot list %s: %v", gv, err)
		return r, served
	}
	if list != nil {
		for _, res := range list.APIResources {
			if !strings.Contains(res.Name, "/") {
				served[v1alpha1.GroupVersion.WithKind(res.Kind)] = true
			}
		}
	}
	var missing, have []string
	for _, k := range Kinds() {
		if served[v1alpha1.GroupVersion.WithKind(k)] {
			have = append(have, k)
		} else {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		r.Status = Fail
		r.Message = fmt.Sprintf("%s not served at %s", strings.Join(missing, ", "), gv)
		if len(have) == 0 {
			r.Message = fmt.Sprintf("weft's CRDs are not installed (nothing served at %s)", gv)
		}
		r.Fix = InstallCommand
		return r, served
	}
	r.Message = fmt.Sprintf("%s served at %s", strings.Join(have, ", "), gv)
	return r, served
}

// Kinds are weft's API kinds, sorted.
func Kinds() []string {
	var out []string
	scheme := runtime.NewScheme()
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	for k := range scheme.KnownTypes(v1alpha1.GroupVersion) {
		if !strings.HasSuffix(k, "List") && k != "WatchEvent" && !strings.HasSuffix(k, "Options") && k != "Status" && k != "APIVersions" && k != "APIGroup" && k != "APIGroupList" && k != "APIResourceList" && k != "APIVersionInfo" {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func controller(ctx context.Context, c client.Client, ns string) Result {
	r := Result{Name: "weft-controller"}
	var d appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: ControllerName}, &d); err != nil {
		r.Status, r.Message, r.Fix = Fail, fmt.Sprintf("Deployment %s/%s: %v", ns, ControllerName, reason(err)), InstallCommand
		return r
	}
	logs := fmt.Sprintf("kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s", ns, ControllerName, ns, ControllerName)
	var avail *appsv1.DeploymentCondition
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == appsv1.DeploymentAvailable {
			avail = &d.Status.Conditions[i]
		}
	}
	switch {
	case avail == nil || avail.Status != corev1.ConditionTrue:
		msg := "no replica is available"
		if avail != nil && avail.Message != "" {
			msg += ": " + avail.Message
		}
		r.Status, r.Message, r.Fix = Fail, fmt.Sprintf("Deployment %s/%s: %s (%d of %d ready); the injection webhook fails closed, so pods in injected namespaces cannot be created", ns, ControllerName, msg, d.Status.ReadyReplicas, d.Status.Replicas), logs
	case d.Status.ReadyReplicas < 2:
		r.Status, r.Message = Warn, fmt.Sprintf("available, but %d replica ready: a node drain or a crash stops pod creation in injected namespaces (the webhook fails closed)", d.Status.ReadyReplicas)
		r.Fix = fmt.Sprintf("kubectl -n %s scale deployment %s --replicas=2", ns, ControllerName)
	default:
		r.Message = fmt.Sprintf("available, %d of %d replicas ready", d.Status.ReadyReplicas, d.Status.Replicas)
	}
	return r
}

func webhookCheck(ctx context.Context, c client.Client, ns, probeNS string) Result {
	r := Result{Name: "Injection webhook"}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: WebhookConfigName}, &mwc); err != nil {
		r.Status, r.Message, r.Fix = Fail, fmt.Sprintf("MutatingWebhookConfiguration %s: %v: no pod gets a sidecar", WebhookConfigName, reason(err)), InstallCommand
		return r
	}
	var noCA []string
	for _, w := range mwc.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			noCA = append(noCA, w.Name)
		}
	}
	if len(noCA) > 0 {
		r.Status = Fail
		r.Message = fmt.Sprintf("MutatingWebhookConfiguration %s has no caBundle for %s: the API server cannot call it, so pods in injected namespaces cannot be created", WebhookConfigName, strings.Join(noCA, ", "))
		r.Fix = fmt.Sprintf("weft-controller's leader writes it when it starts (with cert-manager, its CA injector does): kubectl -n %s logs deployment/%s", ns, ControllerName)
		return r
	}
	var slices discoveryv1.EndpointSliceList
	if err := c.List(ctx, &slices, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: WebhookService}); err != nil {
		r.Status, r.Message = Fail, fmt.Sprintf("EndpointSlices of Service %s/%s: %v", ns, WebhookService, reason(err))
		return r
	}
	ready := 0
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				ready++
			}
		}
	}
	if ready == 0 {
		r.Status = Fail
		r.Message = fmt.Sprintf("Service %s/%s has no ready endpoint: the webhook is unreachable, so pods in injected namespaces cannot be created", ns, WebhookService)
		r.Fix = fmt.Sprintf("kubectl -n %s get pods -l app.kubernetes.io/name=%s; kubectl -n %s logs deployment/%s", ns, ControllerName, ns, ControllerName)
		return r
	}
	r.Message = fmt.Sprintf("%s has a caBundle; Service %s has %d ready endpoint(s)", WebhookConfigName, WebhookService, ready)
	return probeWebhook(ctx, c, ns, probeNS, r)
}

// ProbePodName is the pod `weft check` creates as a server-side dry run
// (nothing is stored) to see the webhook inject it.
const ProbePodName = "weft-check-probe"

// probeWebhook creates a pod labelled weft.dev/inject=true in namespace
// probeNS as a server-side dry run: the API server calls the webhook as
// for a real pod (config/webhook matches the label in every namespace
// weft does not exclude, labelled or not), so this is the webhook reached
// over the network, its certificate verified against the caBundle, and
// its answer applied, end to end.
func probeWebhook(ctx context.Context, c client.Client, ns, probeNS string, r Result) Result {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: probeNS, Name: ProbePodName, Labels: map[string]string{dataplane.LabelInject: "true"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: ProbePodName}}},
	}
	logs := fmt.Sprintf("kubectl -n %s logs deployment/%s", ns, ControllerName)
	base := r.Message
	err := c.Create(ctx, pod, client.DryRunAll)
	switch {
	case err == nil:
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "PodSecurity"):
		// Pod Security admission validates after the mutating webhooks:
		// the pod it refuses is the injected one.
		r.Status = Warn
		r.Message += fmt.Sprintf("; Pod Security admission in %s refuses the injected probe pod (%s): pods injected there cannot start", probeNS, apiMessage(err))
		r.Fix = fmt.Sprintf("weft check --probe-namespace NAMESPACE (one whose pod-security.kubernetes.io/enforce level admits weft-init's NET_ADMIN and NET_RAW), or relax %s's level", probeNS)
		return r
	case apierrors.IsForbidden(err) && !strings.Contains(err.Error(), "admission webhook"):
		r.Status = Warn
		r.Message += fmt.Sprintf("; cannot probe it: a dry-run pod create in %s is forbidden to you", probeNS)
		r.Fix = fmt.Sprintf("run weft check as a user who may create pods in %s (nothing is stored: it is a dry run), or --probe-namespace NAMESPACE", probeNS)
		return r
	default:
		msg := reason(err)
		r.Status = Fail
		r.Message = fmt.Sprintf("a dry-run pod labelled %s=true in %s was refused: %s: pods in injected namespaces cannot be created", dataplane.LabelInject, probeNS, msg)
		switch {
		case strings.Contains(msg, "x509") || strings.Contains(msg, "certificate"):
			r.Fix = fmt.Sprintf("the webhook's certificate does not verify against %s's caBundle: weft-controller's leader rewrites the caBundle when it starts (with cert-manager, its CA injector does, from Secret %s/weft-webhook-tls): %s", WebhookConfigName, ns, logs)
		case strings.Contains(msg, "connection refused") || strings.Contains(msg, "no endpoints") || strings.Contains(msg, "no such host"):
			r.Fix = fmt.Sprintf("nothing listens behind Service %s/%s (port https → weft-controller's webhook port): kubectl -n %s get pods,endpointslices -l app.kubernetes.io/name=%s; %s", ns, WebhookService, ns, ControllerName, logs)
		case strings.Contains(msg, "deadline") || strings.Contains(msg, "timeout") || strings.Contains(msg, "Timeout"):
			r.Fix = fmt.Sprintf("the API server cannot reach weft-controller's webhook port in time: a NetworkPolicy in %s or a firewall between the control plane and the nodes (private GKE/EKS clusters need a rule for port 9443); %s", ns, logs)
		case strings.Contains(msg, "namespaces") && strings.Contains(msg, "not found"):
			r.Status = Warn
			r.Message = fmt.Sprintf("%s; cannot probe it: namespace %s not found", base, probeNS)
			r.Fix = "weft check --probe-namespace NAMESPACE (any namespace weft does not exclude)"
		default:
			r.Fix = logs
		}
		return r
	}
	if st := pod.Annotations[dataplane.AnnotationInjectStatus]; st != webhook.StatusInjected {
		r.Status = Fail
		r.Message = fmt.Sprintf("a dry-run pod labelled %s=true in %s was admitted without injection (%s=%q): the webhook is not called for it, or skipped it", dataplane.LabelInject, probeNS, dataplane.AnnotationInjectStatus, st)
		r.Fix = fmt.Sprintf("kubectl get mutatingwebhookconfiguration %s -o yaml (its selectors should match config/webhook's); %s", WebhookConfigName, logs)
		return r
	}
	r.Message += fmt.Sprintf("; it injected a dry-run pod in %s", probeNS)
	return r
}

func meshConfig(ctx context.Context, c client.Client) (*v1alpha1.MeshConfig, Result) {
	r := Result{Name: "MeshConfig"}
	var mc v1alpha1.MeshConfig
	if err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, &mc); err != nil {
		if apierrors.IsNotFound(err) {
			r.Message = fmt.Sprintf("none named %s: every default applies", v1alpha1.MeshConfigName)
			return nil, r
		}
		r.Status, r.Message = Fail, fmt.Sprintf("MeshConfig %s: %v", v1alpha1.MeshConfigName, reason(err))
		return nil, r
	}
	var problems []string
	// The translator's own reading of it, as weft-controller makes it.
	problems = append(problems, translator.Translate(&translator.Inputs{MeshConfig: &mc}).Warnings...)
	for _, cond := range mc.Status.Conditions {
		if cond.Status == metav1.ConditionFalse && cond.Type != v1alpha1.ConditionRootRotation {
			problems = append(problems, fmt.Sprintf("%s=False (%s): %s", cond.Type, cond.Reason, cond.Message))
		}
		if cond.Type == v1alpha1.ConditionRootRotation && cond.Reason == v1alpha1.ReasonRotationBlocked {
			problems = append(problems, fmt.Sprintf("root rotation blocked: %s", cond.Message))
		}
	}
	if len(problems) > 0 {
		r.Status, r.Message = Fail, strings.Join(problems, "\n")
		r.Fix = fmt.Sprintf("kubectl edit meshconfig %s (docs/api.md describes every field)", v1alpha1.MeshConfigName)
		return &mc, r
	}
	r.Message = fmt.Sprintf("%s is valid", v1alpha1.MeshConfigName)
	if rot := meta.FindStatusCondition(mc.Status.Conditions, v1alpha1.ConditionRootRotation); rot != nil && rot.Status == metav1.ConditionFalse {
		r.Message += fmt.Sprintf("; root rotation in progress (%s): weft ca status", rot.Reason)
	}
	return &mc, r
}

// rootCA: the built-in CA's root in effect (MeshConfig
// status.rootRotation.currentRoot, written by the leader) is far from its
// expiry.
func rootCA(mc *v1alpha1.MeshConfig, now time.Time) Result {
	r := Result{Name: "Root CA"}
	if mc == nil || mc.Status.RootRotation == nil || mc.Status.RootRotation.CurrentRoot == nil {
		r.Message = "no built-in root reported in MeshConfig status (the cert-manager provider, or weft-controller has not started yet)"
		return r
	}
	root := mc.Status.RootRotation.CurrentRoot
	left := root.NotAfter.Sub(now)
	days := int(left.Hours() / 24)
	r.Message = fmt.Sprintf("root sha256 %s expires %s (%d days left)", short(root.SHA256), root.NotAfter.UTC().Format(time.DateOnly), days)
	r.Fix = "weft ca rotate-root --wait   (every workload moves to a new root without a failed request)"
	switch {
	case left <= 0:
		r.Status, r.Message = Fail, fmt.Sprintf("root sha256 %s EXPIRED on %s: mutual TLS fails everywhere", short(root.SHA256), root.NotAfter.UTC().Format(time.DateOnly))
	case left < RootExpiryFail:
		r.Status = Fail
	case left < RootExpiryWarn:
		r.Status = Warn
	}
	return r
}

func short(sha string) string {
	if len(sha) > 16 {
		return sha[:16] + "…"
	}
	return sha
}

func namespaces(ctx context.Context, c client.Client) (Result, map[string]*corev1.Namespace) {
	r := Result{Name: "Injection namespaces"}
	var list corev1.NamespaceList
	if err := c.List(ctx, &list, client.MatchingLabels{dataplane.LabelInject: dataplane.InjectEnabled}); err != nil {
		r.Status, r.Message = Fail, fmt.Sprintf("listing namespaces: %v", reason(err))
		return r, nil
	}
	labelled := map[string]*corev1.Namespace{}
	var names []string
	for i := range list.Items {
		labelled[list.Items[i].Name] = &list.Items[i]
		names = append(names, list.Items[i].Name)
	}
	if len(names) == 0 {
		r.Status, r.Message = Warn, fmt.Sprintf("no namespace is labelled %s=%s: no pod gets a sidecar", dataplane.LabelInject, dataplane.InjectEnabled)
		r.Fix = fmt.Sprintf("kubectl label namespace NAMESPACE %s=%s", dataplane.LabelInject, dataplane.InjectEnabled)
		return r, labelled
	}
	r.Message = fmt.Sprintf("%d labelled %s=%s: %s", len(names), dataplane.LabelInject, dataplane.InjectEnabled, list3(names))
	return r, labelled
}

func pods(ctx context.Context, c client.Client, labelled map[string]*corev1.Namespace, missing func(*corev1.Pod, *corev1.Namespace) (bool, string)) Result {
	r := Result{Name: "Sidecars"}
	var bad, fixes []string
	total := 0
	nsNames := make([]string, 0, len(labelled))
	for n := range labelled {
		nsNames = append(nsNames, n)
	}
	sort.Strings(nsNames)
	for _, n := range nsNames {
		var list corev1.PodList
		if err := c.List(ctx, &list, client.InNamespace(n)); err != nil {
			r.Status, r.Message = Fail, fmt.Sprintf("listing pods in %s: %v", n, reason(err))
			return r
		}
		for i := range list.Items {
			p := &list.Items[i]
			total++
			if missing == nil {
				continue
			}
			if m, fix := missing(p, labelled[n]); m {
				bad = append(bad, p.Namespace+"/"+p.Name)
				fixes = append(fixes, fix)
			}
		}
	}
	if len(bad) > 0 {
		r.Status = Fail
		r.Message = fmt.Sprintf("%d pod(s) started without the sidecar (the webhook did not see them): they are outside the mesh: %s", len(bad), list3(bad))
		r.Fix = strings.Join(dedupe(fixes, MaxListed), "\n")
		return r
	}
	r.Message = fmt.Sprintf("every pod of the %d in injected namespaces has its sidecar or was skipped by the webhook for a named reason", total)
	return r
}

// Certificate metrics weft-controller exports (docs/metrics.md), and the
// port that serves them.
const (
	MetricIssued        = "weft_certificates_issued_total"
	MetricIssueFailures = "weft_certificates_issue_failures_total"
	MetricNearExpiry    = "weft_certificates_near_expiry"
	MonitoringPortName  = "monitoring"
	MonitoringPort      = 9090
)

// certificates: no replica serves a workload certificate near its expiry
// (less than 10 % of its lifetime left: renewal, which starts at 50 %, has
// been failing) and none has failed to issue one, read from each running
// replica's /metrics through the API server's pod proxy.
func certificates(ctx context.Context, c client.Client, rc rest.Interface, ns string) Result {
	r := Result{Name: "Workload certificates"}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns), proxystatus.ControllerSelector); err != nil {
		r.Status, r.Message = Fail, fmt.Sprintf("listing weft-controller pods: %v", reason(err))
		return r
	}
	var issued, failures, near float64
	var failing, nearOn, silent []string
	read := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		port := int32(MonitoringPort)
		for _, ct := range p.Spec.Containers {
			for _, cp := range ct.Ports {
				if cp.Name == MonitoringPortName {
					port = cp.ContainerPort
				}
			}
		}
		m, err := podMetrics(ctx, rc, p.Namespace, p.Name, port)
		if err != nil {
			silent = append(silent, fmt.Sprintf("%s (%v)", p.Name, err))
			continue
		}
		read++
		issued += m[MetricIssued]
		if f := m[MetricIssueFailures]; f > 0 {
			failures += f
			failing = append(failing, fmt.Sprintf("%s %.0f", p.Name, f))
		}
		if n := m[MetricNearExpiry]; n > 0 {
			near += n
			nearOn = append(nearOn, fmt.Sprintf("%s %.0f", p.Name, n))
		}
	}
	logs := fmt.Sprintf("kubectl -n %s logs deployment/%s | grep -i certificate; weft ca status   (with cert-manager: kubectl -n %s get certificaterequests, and the issuer's status)", ns, ControllerName, ns)
	unread := ""
	if len(silent) > 0 {
		unread = fmt.Sprintf("; /metrics of %s not read through the API server's pod proxy", strings.Join(silent, ", "))
	}
	switch {
	case read == 0 && len(silent) == 0:
		r.Status, r.Message = Warn, "no running weft-controller pod to read (the weft-controller check says why)"
		return r
	case read == 0:
		r.Status, r.Message = Warn, "cannot read any replica's certificate metrics"+unread
		r.Fix = fmt.Sprintf("kubectl auth can-i get pods --subresource=proxy -n %s", ns)
		return r
	case near > 0:
		r.Status = Fail
		r.Message = fmt.Sprintf("%.0f served certificate(s) with less than 10%% of their lifetime left (%s): renewal, due at half their lifetime, has been failing; %.0f issue failure(s) since the replicas started%s", near, strings.Join(nearOn, ", "), failures, unread)
		r.Fix = logs
		return r
	case failures > 0:
		r.Status = Warn
		r.Message = fmt.Sprintf("%.0f issue failure(s) since the replicas started (%s), retried with backoff; none near expiry yet; %.0f issued%s", failures, strings.Join(failing, ", "), issued, unread)
		r.Fix = logs
		return r
	}
	r.Message = fmt.Sprintf("%.0f issued, no issue failure, none near expiry, over %d replica(s)%s", issued, read, unread)
	if len(silent) > 0 {
		r.Status, r.Fix = Warn, fmt.Sprintf("kubectl auth can-i get pods --subresource=proxy -n %s", ns)
	}
	return r
}

// podMetrics reads the certificate series of one replica's /metrics
// through the API server's pod proxy, summed over their labels.
func podMetrics(ctx context.Context, rc rest.Interface, ns, pod string, port int32) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, proxystatus.FetchTimeout)
	defer cancel()
	body, err := rc.Get().Namespace(ns).Resource("pods").Name(pod + ":" + strconv.Itoa(int(port))).SubResource("proxy").Suffix("metrics").DoRaw(ctx)
	if err != nil {
		return nil, errors.New(reason(err))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("not Prometheus text: %w", err)
	}
	out := map[string]float64{}
	for _, name := range []string{MetricIssued, MetricIssueFailures, MetricNearExpiry} {
		for _, m := range families[name].GetMetric() {
			switch {
			case m.GetCounter() != nil:
				out[name] += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[name] += m.GetGauge().GetValue()
			case m.GetUntyped() != nil:
				out[name] += m.GetUntyped().GetValue()
			}
		}
	}
	return out, nil
}

// StartupGrace: a meshed pod that is not ready and started less than a
// minute ago is still starting, so its missing stream is not a failure
// yet (its proxy connects first thing, and the pod turns ready once it
// holds its configuration).
const StartupGrace = time.Minute

func starting(p *corev1.Pod, now time.Time) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return false
		}
	}
	return p.Status.StartTime != nil && now.Sub(p.Status.StartTime.Time) < StartupGrace
}

// meshed says whether a pod takes xDS from weft-controller: it has weft's
// sidecar, or it is a proxyless gRPC pod (weft.dev/proxyless) with weft's
// agent. Its proxy's node id is POD.NAMESPACE.
func meshed(p *corev1.Pod) (bool, string) {
	has := func(name string) bool {
		for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
			for _, ct := range cs {
				if ct.Name == name {
					return true
				}
			}
		}
		return false
	}
	if has(dataplane.SidecarContainerName) {
		return true, dataplane.SidecarContainerName
	}
	if _, ok := p.Annotations[dataplane.AnnotationProxyless]; ok && has(dataplane.AgentContainerName) {
		return true, dataplane.AgentContainerName
	}
	return false, ""
}

// connected: every running pod with weft's sidecar, and every proxyless
// pod, has an xDS stream to some weft-controller replica (their
// /debug/proxies, what weft proxy-status shows).
func connected(ctx context.Context, c client.Client, ns string, proxies func(context.Context) ([]proxystatus.Replica, error), now time.Time) Result {
	r := Result{Name: "Connected proxies"}
	var list corev1.PodList
	if err := c.List(ctx, &list); err != nil {
		r.Status, r.Message = Fail, fmt.Sprintf("listing pods: %v", reason(err))
		return r
	}
	forward := fmt.Sprintf("kubectl -n %s port-forward deployment/%s %d & weft check --address 127.0.0.1:%d", ns, ControllerName, proxystatus.DebugPort, proxystatus.DebugPort)
	rs, err := proxies(ctx)
	if err != nil {
		r.Status, r.Message = Fail, fmt.Sprintf("cannot read weft-controller's proxies: %v", err)
		r.Fix = "weft proxy-status says the same; or " + forward
		return r
	}
	streams := map[string]bool{}
	var silent []string
	for _, rep := range rs {
		if rep.Err != nil {
			silent = append(silent, fmt.Sprintf("%s (%v)", rep.Name, rep.Err))
			continue
		}
		for _, p := range rep.Proxies {
			streams[p.ID] = true
		}
	}
	if len(rs) > 0 && len(silent) == len(rs) {
		r.Status = Fail
		r.Message = fmt.Sprintf("no weft-controller replica answered, so no pod's stream can be checked: %s", strings.Join(silent, ", "))
		r.Fix = fmt.Sprintf("kubectl auth can-i create pods --subresource=portforward -n %s; or %s", ns, forward)
		return r
	}
	var missing []string
	var fix string
	total, proxyless, startingN := 0, 0, 0
	for i := range list.Items {
		p := &list.Items[i]
		ok, container := meshed(p)
		if !ok || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		connected := streams[p.Name+"."+p.Namespace]
		if !connected && starting(p, now) {
			startingN++
			continue
		}
		total++
		if container == dataplane.AgentContainerName {
			proxyless++
		}
		if connected {
			continue
		}
		if fix == "" {
			fix = fmt.Sprintf("weft proxy-status; kubectl -n %s logs %s -c %s   (it cannot reach weft-controller's xDS port, or was refused: look for the reason)", p.Namespace, p.Name, container)
		}
		missing = append(missing, p.Namespace+"/"+p.Name)
	}
	unread := ""
	if startingN > 0 {
		unread = fmt.Sprintf("; %d starting (not ready, started under %s ago) not counted yet", startingN, StartupGrace)
	}
	if len(silent) > 0 {
		unread += fmt.Sprintf("; replica %s did not answer, its proxies are not counted", strings.Join(silent, ", "))
	}
	if len(missing) > 0 {
		names := strings.Join(missing, ", ")
		if len(missing) > MaxPodsListed {
			names = strings.Join(missing[:MaxPodsListed], ", ") + fmt.Sprintf(" and %d more", len(missing)-MaxPodsListed)
		}
		r.Status = Fail
		r.Message = fmt.Sprintf("%d of %d running meshed pods have no xDS stream to any weft-controller replica (they keep their last configuration, or have none): %s%s", len(missing), total, names, unread)
		r.Fix = fix
		return r
	}
	r.Message = fmt.Sprintf("all %d running meshed pods (%d with a sidecar, %d proxyless) have an xDS stream, over %d replica(s)", total, total-proxyless, proxyless, len(rs)-len(silent))
	r.Message += unread
	if len(silent) > 0 {
		r.Status = Warn
		r.Fix = "weft proxy-status; kubectl -n " + ns + " logs deployment/" + ControllerName
	}
	return r
}

// policyKinds are the policies whose status weft-controller writes.
var policyKinds = []struct {
	kind string
	list func() client.ObjectList
	each func(client.ObjectList) []statusObject
}{
	{"AuthPolicy", func() client.ObjectList { return &v1alpha1.AuthPolicyList{} }, func(l client.ObjectList) []statusObject {
		var out []statusObject
		for i := range l.(*v1alpha1.AuthPolicyList).Items {
			o := &l.(*v1alpha1.AuthPolicyList).Items[i]
			out = append(out, statusObject{o, o.Status.Conditions})
		}
		return out
	}},
	{"BackendTrafficPolicy", func() client.ObjectList { return &v1alpha1.BackendTrafficPolicyList{} }, func(l client.ObjectList) []statusObject {
		var out []statusObject
		for i := range l.(*v1alpha1.BackendTrafficPolicyList).Items {
			o := &l.(*v1alpha1.BackendTrafficPolicyList).Items[i]
			out = append(out, statusObject{o, o.Status.Conditions})
		}
		return out
	}},
	{"RateLimitPolicy", func() client.ObjectList { return &v1alpha1.RateLimitPolicyList{} }, func(l client.ObjectList) []statusObject {
		var out []statusObject
		for i := range l.(*v1alpha1.RateLimitPolicyList).Items {
			o := &l.(*v1alpha1.RateLimitPolicyList).Items[i]
			out = append(out, statusObject{o, o.Status.Conditions})
		}
		return out
	}},
	{"RetryPolicy", func() client.ObjectList { return &v1alpha1.RetryPolicyList{} }, func(l client.ObjectList) []statusObject {
		var out []statusObject
		for i := range l.(*v1alpha1.RetryPolicyList).Items {
			o := &l.(*v1alpha1.RetryPolicyList).Items[i]
			out = append(out, statusObject{o, o.Status.Conditions})
		}
		return out
	}},
	{"TrafficSplit", func() client.ObjectList { return &v1alpha1.TrafficSplitList{} }, func(l client.ObjectList) []statusObject {
		var out []statusObject
		for i := range l.(*v1alpha1.TrafficSplitList).Items {
			o := &l.(*v1alpha1.TrafficSplitList).Items[i]
			out = append(out, statusObject{o, o.Status.Conditions})
		}
		return out
	}},
}

type statusObject struct {
	obj   client.Object
	conds []metav1.Condition
}

// policies: every policy is Accepted, ResolvedRefs and Programmed for its
// current generation.
func policies(ctx context.Context, c client.Client, served map[schema.GroupVersionKind]bool, routes []string) Result {
	r := Result{Name: "Policies"}
	var bad, fixes []string
	total := 0
	for _, pk := range policyKinds {
		if !served[v1alpha1.GroupVersion.WithKind(pk.kind)] {
			continue // the CRD check said so
		}
		l := pk.list()
		if err := c.List(ctx, l); err != nil {
			r.Status, r.Message = Fail, fmt.Sprintf("listing %s: %v", pk.kind, reason(err))
			return r
		}
		for _, so := range pk.each(l) {
			total++
			o := so.obj
			name := fmt.Sprintf("%s %s/%s", pk.kind, o.GetNamespace(), o.GetName())
			if problem := policyProblem(so.conds, o.GetGeneration()); problem != "" {
				bad = append(bad, name+": "+problem)
				fixes = append(fixes, fmt.Sprintf("kubectl describe %s %s -n %s   (weft translate -f shows the same status offline)", strings.ToLower(pk.kind), o.GetName(), o.GetNamespace()))
			}
		}
	}
	for _, kind := range routes {
		n, rbad, rfixes, err := meshRoutes(ctx, c, kind)
		if err != nil {
			r.Status, r.Message = Fail, fmt.Sprintf("listing %ss: %v", kind, reason(err))
			return r
		}
		total += n
		bad, fixes = append(bad, rbad...), append(fixes, rfixes...)
	}
	if len(bad) > 0 {
		r.Status = Fail
		more := ""
		if len(bad) > MaxListed {
			more = fmt.Sprintf("\n... and %d more", len(bad)-MaxListed)
			bad = bad[:MaxListed]
		}
		r.Message = fmt.Sprintf("%d of %d not in effect:\n%s%s", len(bad), total, strings.Join(bad, "\n"), more)
		r.Fix = strings.Join(dedupe(fixes, MaxListed), "\n")
		return r
	}
	r.Message = fmt.Sprintf("all %d Accepted, ResolvedRefs and Programmed", total)
	return r
}

// RouteController is the controllerName of the route parent statuses
// weft-controller writes (internal/controller/status.ControllerName, on a
// floor above this one).
const RouteController = "mesh.weft.dev/weft-controller"

// routesServed: the route kinds weft reads that gateway.networking.k8s.io/v1
// serves (Gateway API's CRDs are optional for weft, each on its own).
func routesServed(d discovery.DiscoveryInterface) []string {
	list, err := d.ServerResourcesForGroupVersion(gatewayv1.GroupVersion.String())
	if err != nil || list == nil {
		return nil
	}
	var out []string
	for _, kind := range []string{"HTTPRoute", "GRPCRoute"} {
		for _, res := range list.APIResources {
			if res.Name == strings.ToLower(kind)+"s" {
				out = append(out, kind)
			}
		}
	}
	return out
}

// meshRoute is what meshRoutes reads of an HTTPRoute or a GRPCRoute.
type meshRoute struct {
	meta    metav1.ObjectMeta
	parents []gatewayv1.ParentReference
	status  []gatewayv1.RouteParentStatus
}

// meshRoutes: every mesh route of kind (HTTPRoute or GRPCRoute; one with a
// Service parentRef, GAMMA) has weft's parent status (controllerName
// RouteController) for each Service parent, Accepted, ResolvedRefs and
// Programmed for its current generation. Routes attached only to Gateways
// are not weft's.
func meshRoutes(ctx context.Context, c client.Client, kind string) (total int, bad, fixes []string, _ error) {
	var routes []meshRoute
	switch kind {
	case "HTTPRoute":
		var list gatewayv1.HTTPRouteList
		if err := c.List(ctx, &list); err != nil {
			return 0, nil, nil, err
		}
		for _, rt := range list.Items {
			routes = append(routes, meshRoute{rt.ObjectMeta, rt.Spec.ParentRefs, rt.Status.Parents})
		}
	case "GRPCRoute":
		var list gatewayv1.GRPCRouteList
		if err := c.List(ctx, &list); err != nil {
			return 0, nil, nil, err
		}
		for _, rt := range list.Items {
			routes = append(routes, meshRoute{rt.ObjectMeta, rt.Spec.ParentRefs, rt.Status.Parents})
		}
	}
	for _, rt := range routes {
		var services []gatewayv1.ParentReference
		for _, p := range rt.parents {
			if (p.Group == nil || *p.Group == "" || *p.Group == "core") && p.Kind != nil && *p.Kind == "Service" {
				services = append(services, p)
			}
		}
		if len(services) == 0 {
			continue
		}
		total++
		name := fmt.Sprintf("%s %s/%s", kind, rt.meta.Namespace, rt.meta.Name)
		fix := fmt.Sprintf("kubectl describe %s %s -n %s   (weft translate -f shows the same status offline)", strings.ToLower(kind), rt.meta.Name, rt.meta.Namespace)
		var problems []string
		for _, p := range services {
			var st *gatewayv1.RouteParentStatus
			for j := range rt.status {
				ps := &rt.status[j]
				if string(ps.ControllerName) == RouteController && sameParent(ps.ParentRef, p, rt.meta.Namespace) {
					st = ps
				}
			}
			parent := "parent Service " + string(p.Name)
			if p.Port != nil {
				parent += fmt.Sprintf(":%d", *p.Port)
			}
			switch {
			case st == nil:
				problems = append(problems, parent+": no status from weft-controller yet: it has not processed it (is it running?)")
			default:
				if problem := policyProblem(st.Conditions, rt.meta.Generation); problem != "" {
					problems = append(problems, parent+": "+problem)
				}
			}
		}
		if len(problems) > 0 {
			bad = append(bad, name+": "+strings.Join(problems, "; "))
			fixes = append(fixes, fix)
		}
	}
	return total, bad, fixes, nil
}

// sameParent compares a status's parentRef with a spec's, as the status
// writer keys them (namespace defaults to the route's; port and section
// must match).
func sameParent(a, b gatewayv1.ParentReference, routeNS string) bool {
	ns := func(p gatewayv1.ParentReference) string {
		if p.Namespace == nil || *p.Namespace == "" {
			return routeNS
		}
		return string(*p.Namespace)
	}
	port := func(p gatewayv1.ParentReference) int32 {
		if p.Port == nil {
			return 0
		}
		return int32(*p.Port)
	}
	sec := func(p gatewayv1.ParentReference) string {
		if p.SectionName == nil {
			return ""
		}
		return string(*p.SectionName)
	}
	return a.Name == b.Name && ns(a) == ns(b) && port(a) == port(b) && sec(a) == sec(b)
}

// policyProblem is why a policy is not in effect, or "".
func policyProblem(conds []metav1.Condition, generation int64) string {
	for _, t := range []string{v1alpha1.ConditionAccepted, v1alpha1.ConditionResolvedRefs, v1alpha1.ConditionProgrammed} {
		cond := meta.FindStatusCondition(conds, t)
		switch {
		case cond == nil:
			return fmt.Sprintf("no %s condition yet: weft-controller has not processed it (is it running?)", t)
		case cond.ObservedGeneration < generation:
			return fmt.Sprintf("%s describes generation %d, not the current %d: weft-controller has not caught up", t, cond.ObservedGeneration, generation)
		case cond.Status != metav1.ConditionTrue:
			return fmt.Sprintf("%s=%s (%s): %s", t, cond.Status, cond.Reason, cond.Message)
		}
	}
	return ""
}

// reason shortens API errors to what a user acts on.
func reason(err error) string {
	var s apierrors.APIStatus
	switch {
	case apierrors.IsNotFound(err):
		return "not found"
	case apierrors.IsForbidden(err):
		return "forbidden (your user lacks the right to read it): " + err.Error()
	case errors.As(err, &s):
		return s.Status().Message
	}
	return err.Error()
}

// apiMessage is the API server's own message for err.
func apiMessage(err error) string {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		return s.Status().Message
	}
	return err.Error()
}

// list3 joins names, at most MaxListed of them.
func list3(names []string) string {
	if len(names) > MaxListed {
		return strings.Join(names[:MaxListed], ", ") + fmt.Sprintf(" and %d more", len(names)-MaxListed)
	}
	return strings.Join(names, ", ")
}

func dedupe(ss []string, max int) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] && len(out) < max {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
