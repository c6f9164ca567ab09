package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"

	"github.com/weftmesh/weft/internal/testing/testenv"
)

// runInstall runs `weft install ARGS` and returns what it printed.
func runInstall(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := installCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// objects keys a YAML stream's objects by kind/namespace/name.
func objects(t *testing.T, stream string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, doc := range strings.Split("\n"+stream, "\n---") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("a document does not parse: %v\n%s", err, doc)
		}
		if len(o) == 0 {
			continue
		}
		md, _ := o["metadata"].(map[string]any)
		key := fmt.Sprintf("%v/%v/%v", o["kind"], md["namespace"], md["name"])
		if _, dup := out[key]; dup {
			t.Fatalf("%s printed twice", key)
		}
		out[key] = o
	}
	return out
}

// kustomize renders a kustomization with the kubectl the tests build
// (kustomize v5.8.1, as hack/tools pins for make generate).
func kustomize(t *testing.T, dir string) map[string]map[string]any {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := testenv.EnsureBinaries(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "kubectl"), "kustomize", filepath.Join(root, dir))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	return objects(t, string(out))
}

func sameObjects(t *testing.T, what string, got, want map[string]map[string]any) {
	t.Helper()
	keys := func(m map[string]map[string]any) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	if d := cmp.Diff(keys(want), keys(got)); d != "" {
		t.Errorf("%s: weft install prints other objects than kustomize (-kustomize +weft install):\n%s", what, d)
	}
	for k, w := range want {
		if g, ok := got[k]; ok {
			if d := cmp.Diff(w, g); d != "" {
				t.Errorf("%s: %s differs (-kustomize +weft install):\n%s", what, k, d)
			}
		}
	}
}

func installed(t *testing.T, args ...string) map[string]map[string]any {
	t.Helper()
	out, _, err := runInstall(t, args...)
	if err != nil {
		t.Fatalf("weft install %s: %v", strings.Join(args, " "), err)
	}
	return objects(t, out)
}

// TestInstallDefaultIsConfigDefault: with no flag, weft install prints
// config/default's objects, field for field (the embedded copy is not
// stale).
func TestInstallDefaultIsConfigDefault(t *testing.T) {
	want := kustomize(t, "config/default")
	if len(want) < 10 {
		t.Fatalf("config/default rendered only %d objects", len(want))
	}
	sameObjects(t, "defaults", installed(t), want)
}

// TestInstallOptions: each option prints what its kustomize component adds
// (alone and all together), and each value changes its field and nothing
// else.
func TestInstallOptions(t *testing.T) {
	for flag, dir := range map[string]string{
		"--plaintext-xds":        "charts/testdata/plaintext-xds",
		"--webhook-cert-manager": "charts/testdata/webhook-cert-manager",
		"--pod-monitors":         "charts/testdata/monitoring",
	} {
		sameObjects(t, flag, installed(t, flag), kustomize(t, dir))
	}
	sameObjects(t, "every component", installed(t, "--plaintext-xds", "--webhook-cert-manager", "--pod-monitors"), kustomize(t, "cmd/weft/testdata/install-all"))

	want := installed(t)
	deploy := want["Deployment/weft-system/weft-controller"]
	spec := deploy["spec"].(map[string]any)
	spec["replicas"] = float64(3)
	c := spec["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	c["image"] = "registry.example.com/weft-controller:v9.9.9"
	c["args"] = append(c["args"].([]any), "--init-image=registry.example.com/weft-init:v9.9.9", "--agent-image=registry.example.com/weft@sha256:"+strings.Repeat("ab", 32), "--proxy-image=docker.io/envoyproxy/envoy-distroless:v1.41.0")
	c["resources"] = map[string]any{
		"requests": map[string]any{"cpu": "500m", "memory": "512Mi"},
		"limits":   map[string]any{"memory": "2Gi", "cpu": "2"},
	}
	got := installed(t, "--replicas", "3", "--image", "registry.example.com/weft-controller:v9.9.9",
		"--init-image", "registry.example.com/weft-init:v9.9.9", "--agent-image", "registry.example.com/weft@sha256:"+strings.Repeat("ab", 32),
		"--proxy-image", "docker.io/envoyproxy/envoy-distroless:v1.41.0",
		"--requests", "cpu=500m,memory=512Mi", "--limits", "memory=2Gi,cpu=2")
	sameObjects(t, "values", got, want)

	// A named request joins the default limit, and the reverse.
	got = installed(t, "--requests", "memory=1Gi")
	r := got["Deployment/weft-system/weft-controller"]["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["resources"]
	if d := cmp.Diff(map[string]any{"requests": map[string]any{"cpu": "200m", "memory": "1Gi"}, "limits": map[string]any{"memory": "1Gi"}}, r); d != "" {
		t.Errorf("--requests memory=1Gi (-want +got):\n%s", d)
	}

	_, stderr, err := runInstall(t, "--replicas", "1")
	if err != nil || !strings.Contains(stderr, "--replicas 1: while that replica restarts") {
		t.Errorf("--replicas 1: %v; stderr %q; want a warning about the fail-closed webhook", err, stderr)
	}
	out, _, _ := runInstall(t, "--replicas", "3", "--plaintext-xds")
	if !strings.HasPrefix(out, "# weft install --plaintext-xds --replicas 3 (weft ") {
		t.Errorf("the header does not say how it was made:\n%.200s", out)
	}
}

// TestInstallRefusesBadValues: a wrong value fails with the flag's name
// and what to write instead, and prints nothing.
func TestInstallRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--image", "ghcr.io/weftmesh/weft-controller"}, "--image ghcr.io/weftmesh/weft-controller: names no version, so Kubernetes pulls :latest and replicas can run different code: add a tag or a digest, such as ghcr.io/weftmesh/weft-controller:v0.1.0"},
		{[]string{"--image", "ghcr.io/weftmesh/weft-controller:latest"}, "--image ghcr.io/weftmesh/weft-controller:latest: latest names no version"},
		{[]string{"--init-image", "Registry/Weft-Init:v1"}, "--init-image Registry/Weft-Init:v1: not an image reference: write REPOSITORY:TAG or REPOSITORY@sha256:DIGEST"},
		{[]string{"--agent-image", "weft agent:v1"}, "--agent-image weft agent:v1: not an image reference"},
		{[]string{"--proxy-image", "envoy@sha256:abc"}, "--proxy-image envoy@sha256:abc: not an image reference"},
		{[]string{"--replicas", "0"}, "--replicas 0: weft-controller needs at least one replica: give 2 or more"},
		{[]string{"--replicas", "-2"}, "--replicas -2: weft-controller needs at least one replica"},
		{[]string{"--requests", "cpu"}, `--requests cpu: "cpu" is not NAME=QUANTITY: write pairs such as cpu=200m,memory=256Mi`},
		{[]string{"--requests", "gpu=1"}, `--requests gpu=1: "gpu" is not a resource weft-controller can ask for: use cpu, memory or ephemeral-storage`},
		{[]string{"--limits", "memory=lots"}, "--limits memory=lots: memory=lots is not a positive quantity: write quantities as Kubernetes does"},
		{[]string{"--limits", "memory=0"}, "--limits memory=0: memory=0 is not a positive quantity"},
		{[]string{"--requests", "cpu=1,cpu=2"}, "--requests cpu=1,cpu=2: cpu is named twice"},
		{[]string{"--requests", ""}, `--requests "": names no resource`},
		{[]string{"--requests", "memory=2Gi"}, "--requests memory=2Gi: is above weft-controller's default limit memory=1Gi: the API server refuses a request above its limit: lower it, or raise the limit too: --limits memory=2Gi"},
		{[]string{"--limits", "memory=128Mi"}, "--limits memory=128Mi: is below weft-controller's default request memory=256Mi: the API server refuses a request above its limit: raise it, or lower the request too: --requests memory=128Mi"},
		{[]string{"--requests", "cpu=2", "--limits", "cpu=1"}, "--requests cpu=2: is above --limits cpu=1: the API server refuses a request above its limit: raise --limits cpu or lower --requests cpu"},
		{[]string{"--replicas", "two"}, `invalid argument "two" for "--replicas"`},
	} {
		out, _, err := runInstall(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("weft install %q: %v; want an error with %q", tc.args, err, tc.want)
		}
		if out != "" {
			t.Errorf("weft install %q printed manifests beside its error", tc.args)
		}
	}
}

// TestInstallApplies: what weft install prints is accepted by a real API
// server, as `weft install | kubectl apply --server-side -f -` (the
// defaults), and applied again with options it upgrades the install in
// place. PodMonitors are left out: the test API server has no
// monitoring.coreos.com CRDs (TestInstallOptions compares them with the
// component instead).
func TestInstallApplies(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	out, _, err := runInstall(t)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := env.Kubectl(ctx, []byte(out), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply --server-side of weft install's output: %v\n%s", err, res)
	}
	var d appsv1.Deployment
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-controller"}, &d); err != nil {
		t.Fatal(err)
	}
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas %d; want config/default's 2", *d.Spec.Replicas)
	}

	out, _, err = runInstall(t, "--replicas", "3", "--plaintext-xds", "--webhook-cert-manager", "--image", "registry.example.com/weft-controller:v9.9.9", "--limits", "memory=2Gi")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := env.Kubectl(ctx, []byte(out), "apply", "--server-side", "--dry-run=server", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply --server-side --dry-run=server with options: %v\n%s", err, res)
	}
	if res, err := env.Kubectl(ctx, []byte(out), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply --server-side with options: %v\n%s", err, res)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-controller"}, &d); err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if *d.Spec.Replicas != 3 || c.Image != "registry.example.com/weft-controller:v9.9.9" || !strings.Contains(strings.Join(c.Args, " "), "--xds-address=:15010") ||
		c.Resources.Limits.Memory().String() != "2Gi" {
		t.Errorf("upgraded Deployment: replicas %d, image %s, args %v, limits %v", *d.Spec.Replicas, c.Image, c.Args, c.Resources.Limits)
	}
	var svc corev1.Service
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-controller"}, &svc); err != nil || len(svc.Spec.Ports) != 3 {
		t.Errorf("Service weft-controller: %v, ports %v; want the plaintext xDS port added", err, svc.Spec.Ports)
	}
	var cert certmanagerv1.Certificate
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-webhook"}, &cert); err != nil || cert.Spec.SecretName != "weft-webhook-tls" {
		t.Errorf("Certificate weft-webhook: %v, secret %q", err, cert.Spec.SecretName)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "weft-sidecar-injector"}, &mwc); err != nil || mwc.Annotations["cert-manager.io/inject-ca-from"] != "weft-system/weft-webhook" {
		t.Errorf("webhook configuration: %v, annotations %v", err, mwc.Annotations)
	}
}
