package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testing/testenv"
)

// TestInstallManifests applies config/default, the in-cluster install, to
// a real API server with the built kubectl: every object validates against
// the real schemas, and applying it again changes nothing (what GitOps
// tools need to show "in sync").
func TestInstallManifests(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := env.Root + "/config/default"
	out, err := env.Kubectl(ctx, nil, "apply", "--server-side", "--field-manager=install-test", "-k", dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"namespace/weft-system serverside-applied",
		"deployment.apps/weft-controller serverside-applied",
		"service/weft-controller serverside-applied",
		"service/weft-webhook serverside-applied",
		"mutatingwebhookconfiguration.admissionregistration.k8s.io/weft-sidecar-injector serverside-applied",
		"clusterrole.rbac.authorization.k8s.io/weft-controller serverside-applied",
		"customresourcedefinition.apiextensions.k8s.io/trafficsplits.mesh.weft.dev serverside-applied",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply did not report %q:\n%s", want, out)
		}
	}
	// The Deployment runs as the ServiceAccount the RBAC binds.
	sa, err := env.Kubectl(ctx, nil, "get", "deployment", "weft-controller", "-n", "weft-system", "-o", "jsonpath={.spec.template.spec.serviceAccountName}")
	if err != nil || sa != "weft-controller" {
		t.Fatalf("deployment service account = %q, %v", sa, err)
	}
	// The Go runtime's soft memory limit is the container's, which is set
	// (docs/design/189).
	jsonpath := `jsonpath={.spec.template.spec.containers[?(@.name=="weft-controller")].env[?(@.name=="GOMEMLIMIT")].valueFrom.resourceFieldRef.resource}` +
		`{" "}{.spec.template.spec.containers[?(@.name=="weft-controller")].resources.limits.memory}`
	if lim, err := env.Kubectl(ctx, nil, "get", "deployment", "weft-controller", "-n", "weft-system", "-o", jsonpath); err != nil || lim != "limits.memory 1Gi" {
		t.Fatalf("GOMEMLIMIT's source and the memory limit = %q, %v; want %q", lim, err, "limits.memory 1Gi")
	}
	if out, err := env.Kubectl(ctx, nil, "diff", "--server-side", "--field-manager=install-test", "-k", dir); err != nil {
		t.Fatalf("a second apply would change something:\n%s\n%v", out, err)
	}
}
