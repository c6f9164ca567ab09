package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"

	"github.com/weftmesh/weft/internal/cli/check"
	"github.com/weftmesh/weft/internal/cli/install"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
)

// TestCheckPre runs `weft check --pre` against the real API server and
// its real authorizer: a cluster weft can be installed in, then the same
// cluster with another mesh's injector, an earlier install, a user without
// the rights, and cert-manager missing — each said with its fix.
func TestCheckPre(t *testing.T) {
	env := testenv.Start(t)
	// Deleting CRDs waits for the API server to finalize them, which took
	// over two minutes on a 2-core machine running the whole suite: a
	// deadline for a hung test, not a speed goal.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	run := func(args ...string) (string, error) {
		cmd := checkCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SilenceErrors = true
		cmd.SetArgs(append([]string{"--kubeconfig", env.Kubeconfig, "--pre"}, args...))
		err := cmd.ExecuteContext(ctx)
		return out.String(), err
	}
	// eventually re-runs the check until its output holds every line, as
	// discovery follows CRD changes after a moment.
	eventually := func(args []string, wantErr bool, want ...string) string {
		t.Helper()
		var out string
		testkit.Eventually(t, fmt.Sprintf("weft check --pre %v printing %q", args, want), func() error {
			var err error
			out, err = run(args...)
			if (err != nil) != wantErr {
				return fmt.Errorf("error %v (want one: %v); printed:\n%s", err, wantErr, out)
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					return fmt.Errorf("no %q in:\n%s", w, out)
				}
			}
			return nil
		})
		return out
	}

	// The test API server serves weft's CRDs from the start; a cluster
	// that never had weft does not.
	if out, err := env.Kubectl(ctx, nil, "delete", "-k", filepath.Join(env.Root, "crds")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out := eventually([]string{"--cert-manager"}, false,
		"✔ Kubernetes API: reachable",
		"✔ Permissions: you may create everything the install holds",
		"✔ Earlier install: none: a fresh install",
		"✔ Other meshes: no other mesh's sidecar injector is registered",
		"✔ cert-manager: CertificateRequest, Issuer and ClusterIssuer served at cert-manager.io/v1")
	if strings.Contains(out, "✖") || strings.Contains(out, "!") {
		t.Errorf("a cluster weft can be installed in:\n%s", out)
	}
	// The install options: --webhook-cert-manager's Issuers and
	// Certificate (cert-manager serves them here), --pod-monitors'
	// PodMonitors (no Prometheus Operator here: a failure, exit 1).
	eventually([]string{"--webhook-cert-manager"}, false,
		fmt.Sprintf("✔ Permissions: you may create everything the install holds (%d kinds)", len(check.InstallRights)+2),
		"✔ cert-manager: Certificate and Issuer served at cert-manager.io/v1")
	eventually([]string{"--pod-monitors"}, true,
		fmt.Sprintf("✔ Permissions: you may create everything the install holds (%d kinds)", len(check.InstallRights)+1),
		"✖ Prometheus Operator: PodMonitor not served at monitoring.coreos.com/v1",
		"fix: install the Prometheus Operator (its CRDs) first, or install weft without --pod-monitors")
	if out, err := run("--pod-monitors"); err == nil || !strings.Contains(err.Error(), "1 of 5 checks failed") {
		t.Errorf("exit without the Prometheus Operator: %v\n%s", err, out)
	}

	// Another mesh's injector, and an earlier install: warnings, exit 0.
	ignore := admissionregistrationv1.Ignore
	none := admissionregistrationv1.SideEffectClassNone
	url := "https://istiod.istio-system.svc:443/inject"
	if err := env.Client.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "rev.namespace.sidecar-injector.istio.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			FailurePolicy: &ignore, SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"istio-injection": "enabled"}},
		}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: check.DefaultNamespace}}); err != nil {
		t.Fatal(err)
	}
	eventually(nil, false,
		"! Other meshes: another mesh injects sidecars: istio-sidecar-injector (Istio)",
		"fix: label each namespace for one mesh only",
		"! Earlier install: namespace weft-system exists: applying config/default again upgrades that install in place")

	// A user who may only create Services in weft-system: every other kind
	// is named, and the check fails.
	if err := env.Client.Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: check.DefaultNamespace, Name: "services"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"create"}}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: check.DefaultNamespace, Name: "dev-services"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "services"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "dev"}},
	}); err != nil {
		t.Fatal(err)
	}
	devCfg := rest.CopyConfig(env.Config)
	devCfg.Impersonate = rest.ImpersonationConfig{UserName: "dev", Groups: []string{"system:authenticated"}}
	dev, err := clientFor(devCfg)
	if err != nil {
		t.Fatal(err)
	}
	devDiscovery, err := discovery.NewDiscoveryClientForConfig(devCfg)
	if err != nil {
		t.Fatal(err)
	}
	var perms check.Result
	for _, r := range check.RunPre(ctx, dev, devDiscovery, check.PreOptions{}) {
		if r.Name == "Permissions" {
			perms = r
		}
	}
	if perms.Status != check.Fail || !strings.Contains(perms.Message, "you may not create customresourcedefinitions.apiextensions.k8s.io, namespaces") ||
		strings.Contains(perms.Message, "services in weft-system") || !strings.Contains(perms.Fix, "cluster administrator") {
		t.Errorf("a user who may create only Services: %+v", perms)
	}

	// A user who may create every kind config/default holds, and nothing
	// of cert-manager's or the Prometheus Operator's: fine for the default
	// install, not for one with --webhook-cert-manager --pod-monitors.
	if err := env.Client.Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "installer"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"", "apps", "policy", "rbac.authorization.k8s.io", "apiextensions.k8s.io", "admissionregistration.k8s.io"},
			Resources: []string{"*"}, Verbs: []string{"create"}}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "ops-installer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "installer"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "ops"}},
	}); err != nil {
		t.Fatal(err)
	}
	opsCfg := rest.CopyConfig(env.Config)
	opsCfg.Impersonate = rest.ImpersonationConfig{UserName: "ops", Groups: []string{"system:authenticated"}}
	ops, err := clientFor(opsCfg)
	if err != nil {
		t.Fatal(err)
	}
	opsDiscovery, err := discovery.NewDiscoveryClientForConfig(opsCfg)
	if err != nil {
		t.Fatal(err)
	}
	permissions := func(o check.PreOptions) check.Result {
		var perms check.Result
		testkit.Eventually(t, "the installer ClusterRole in effect", func() error {
			for _, r := range check.RunPre(ctx, ops, opsDiscovery, o) {
				if r.Name == "Permissions" {
					perms = r
				}
			}
			if o == (check.PreOptions{}) && perms.Status != check.OK {
				return fmt.Errorf("%+v", perms)
			}
			return nil
		})
		return perms
	}
	if p := permissions(check.PreOptions{}); p.Status != check.OK {
		t.Errorf("a user who may create config/default's kinds, default install: %+v", p)
	}
	p := permissions(check.PreOptions{WebhookCertManager: true, PodMonitors: true})
	if p.Status != check.Fail || p.Message != "you may not create issuers.cert-manager.io in weft-system, certificates.cert-manager.io in weft-system, podmonitors.monitoring.coreos.com in weft-system" ||
		!strings.Contains(p.Fix, "cluster administrator") {
		t.Errorf("a user who may create config/default's kinds, with --webhook-cert-manager --pod-monitors: %+v", p)
	}

	// cert-manager missing, when the install needs it: a failure, exit 1.
	out, err = env.Kubectl(ctx, nil, "delete", "crd", "certificaterequests.cert-manager.io", "issuers.cert-manager.io", "clusterissuers.cert-manager.io")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	eventually([]string{"--cert-manager"}, true,
		"✖ cert-manager: ",
		"not served at cert-manager.io/v1: the install asks cert-manager for workload certificates",
		"fix: install cert-manager first")
	eventually([]string{"--webhook-cert-manager"}, true,
		"✖ cert-manager: Issuer not served at cert-manager.io/v1: the install asks cert-manager for the webhook's certificate",
		"fix: install cert-manager first (https://cert-manager.io/docs/installation/), or install weft without --webhook-cert-manager")
	if out, err := run("--cert-manager"); err == nil || !strings.Contains(err.Error(), "1 of 5 checks failed") {
		t.Errorf("exit with cert-manager missing: %v\n%s", err, out)
	}
	// Without --cert-manager it is not asked for.
	if out, err := run(); err != nil || strings.Contains(out, "cert-manager") {
		t.Errorf("without --cert-manager: %v\n%s", err, out)
	}
}

// TestInstallRightsMatchConfigDefault: the rights --pre checks are the
// kinds config/default creates, no more and no fewer.
func TestInstallRightsMatchConfigDefault(t *testing.T) {
	env := testenv.Start(t)
	out, err := env.Kubectl(context.Background(), nil, "kustomize", filepath.Join(env.Root, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	rendered := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if k, ok := strings.CutPrefix(line, "kind: "); ok {
			rendered[k] = true
		}
	}
	resourceOf := map[string]string{
		"CustomResourceDefinition": "customresourcedefinitions", "Namespace": "namespaces", "ClusterRole": "clusterroles",
		"ClusterRoleBinding": "clusterrolebindings", "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
		"ServiceAccount": "serviceaccounts", "Service": "services", "Deployment": "deployments",
		"PodDisruptionBudget": "poddisruptionbudgets", "Role": "roles", "RoleBinding": "rolebindings",
	}
	checked := map[string]bool{}
	for _, r := range check.InstallRights {
		checked[r.Resource] = true
	}
	for kind := range rendered {
		res, known := resourceOf[kind]
		if !known {
			t.Errorf("config/default renders a %s, which weft check --pre does not know: add it to check.InstallRights and this test's map", kind)
			continue
		}
		if !checked[res] {
			t.Errorf("config/default renders a %s, but weft check --pre does not check the right to create %s", kind, res)
		}
		delete(checked, res)
	}
	for res := range checked {
		t.Errorf("weft check --pre checks the right to create %s, which config/default does not hold", res)
	}
}

// TestInstallOptionRightsMatchInstall: the rights --pre adds for
// --webhook-cert-manager and --pod-monitors are the kinds those weft
// install options add, no more and no fewer.
func TestInstallOptionRightsMatchInstall(t *testing.T) {
	kinds := func(o install.Options) map[string]bool {
		objs, err := install.Objects(o)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, obj := range objs {
			out[obj["kind"].(string)] = true
		}
		return out
	}
	base := kinds(install.Options{})
	resourceOf := map[string]string{"Issuer": "issuers", "Certificate": "certificates", "PodMonitor": "podmonitors"}
	for _, c := range []struct {
		flag   string
		o      install.Options
		rights []check.InstallRight
	}{
		{"--webhook-cert-manager", install.Options{WebhookCertManager: true}, check.WebhookCertManagerRights},
		{"--pod-monitors", install.Options{PodMonitors: true}, check.PodMonitorRights},
	} {
		checked := map[string]bool{}
		for _, r := range c.rights {
			checked[r.Resource] = true
		}
		for kind := range kinds(c.o) {
			if base[kind] {
				continue
			}
			res, known := resourceOf[kind]
			if !known || !checked[res] {
				t.Errorf("weft install %s adds a %s, whose create right weft check --pre %s does not check", c.flag, kind, c.flag)
			}
			delete(checked, res)
		}
		for res := range checked {
			t.Errorf("weft check --pre %s checks the right to create %s, which weft install %s does not add", c.flag, res, c.flag)
		}
	}
}
