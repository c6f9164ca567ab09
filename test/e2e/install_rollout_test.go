package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/testing/testenv"
)

// TestInstallSurvivesDrainAndSyncsInOrder reads what config/default renders
// (kubectl kustomize, the same as kubectl apply -k and Argo CD) for what a
// cluster operator relies on during a node drain and a GitOps sync: two
// weft-controller replicas that a PodDisruptionBudget lets go one at a time,
// spread over nodes; requests and limits; and Argo CD sync waves that apply
// the CRDs, the Namespace and the RBAC before weft-controller, and the
// fail-closed injection webhook only after it.
func TestInstallSurvivesDrainAndSyncsInOrder(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := env.Kubectl(ctx, nil, "kustomize", env.Root+"/config/default")
	if err != nil {
		t.Fatal(err)
	}
	type object struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name        string            `json:"name"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec map[string]any `json:"spec"`
	}
	var objs []object
	for _, doc := range strings.Split(out, "\n---\n") {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered document does not parse: %v\n%s", err, doc)
		}
		objs = append(objs, o)
	}
	wave := func(o object) int {
		w, ok := o.Metadata.Annotations["argocd.argoproj.io/sync-wave"]
		if !ok {
			return 0
		}
		n, err := strconv.Atoi(w)
		if err != nil {
			t.Fatalf("%s/%s: sync-wave %q is not a number", o.Kind, o.Metadata.Name, w)
		}
		return n
	}
	var deployment, pdb *object
	for i, o := range objs {
		switch o.Kind {
		case "Deployment":
			deployment = &objs[i]
		case "PodDisruptionBudget":
			pdb = &objs[i]
		}
	}
	if deployment == nil || pdb == nil {
		t.Fatalf("config/default renders no weft-controller Deployment (%v) or PodDisruptionBudget (%v)", deployment != nil, pdb != nil)
	}
	for _, o := range objs {
		switch o.Kind {
		case "CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if wave(o) >= wave(*deployment) {
				t.Errorf("%s %s syncs in wave %d, not before weft-controller's %d", o.Kind, o.Metadata.Name, wave(o), wave(*deployment))
			}
		case "MutatingWebhookConfiguration":
			if wave(o) <= wave(*deployment) {
				t.Errorf("the injection webhook %s syncs in wave %d, not after weft-controller's %d: registered first, it blocks meshed pods until a replica serves it", o.Metadata.Name, wave(o), wave(*deployment))
			}
		}
	}

	replicas, _ := deployment.Spec["replicas"].(float64)
	if replicas < 2 {
		t.Errorf("weft-controller runs %v replicas; the fail-closed webhook needs two to survive a drain", replicas)
	}
	podLabels := func(sel map[string]any) map[string]any {
		m, _ := sel["matchLabels"].(map[string]any)
		return m
	}
	sel, _ := deployment.Spec["selector"].(map[string]any)
	pdbSel, _ := pdb.Spec["selector"].(map[string]any)
	if got, want := podLabels(pdbSel), podLabels(sel); len(want) == 0 || !sameLabels(got, want) {
		t.Errorf("the PodDisruptionBudget selects %v, weft-controller's pods are %v", got, want)
	}
	if mu, _ := pdb.Spec["maxUnavailable"].(float64); mu != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable = %v, want 1 (one replica at a time)", pdb.Spec["maxUnavailable"])
	}
	pod, _ := deployment.Spec["template"].(map[string]any)["spec"].(map[string]any)
	hostSpread := false
	constraints, _ := pod["topologySpreadConstraints"].([]any)
	for _, c := range constraints {
		c, _ := c.(map[string]any)
		if c["topologyKey"] == "kubernetes.io/hostname" && c["whenUnsatisfiable"] == "DoNotSchedule" && sameLabels(podLabels(c["labelSelector"].(map[string]any)), podLabels(sel)) {
			hostSpread = true
		}
	}
	if !hostSpread {
		t.Errorf("weft-controller's replicas are not spread over nodes (topologySpreadConstraints %v)", constraints)
	}
	for _, c := range pod["containers"].([]any) {
		c := c.(map[string]any)
		res, _ := c["resources"].(map[string]any)
		if res["requests"] == nil || res["limits"] == nil {
			t.Errorf("container %v has resources %v; want requests and limits", c["name"], res)
		}
	}

	// The API server accepts the PodDisruptionBudget as rendered.
	if out, err := env.Kubectl(ctx, nil, "apply", "--server-side", "--field-manager=install-test", "-k", env.Root+"/config/default"); err != nil || !strings.Contains(out, "poddisruptionbudget.policy/weft-controller serverside-applied") {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

func sameLabels(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
