package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/testing/testenv"
)

// TestCACommands runs `weft ca rotate-root` and `weft ca status` against
// the real API server. The rotation itself (weft-controller's side) is
// tested in internal/controller; here the test writes the status.
func TestCACommands(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(args ...string) (string, error) {
		cmd := caCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append(args, "--kubeconfig", env.Kubeconfig))
		err := cmd.ExecuteContext(ctx)
		return out.String(), err
	}
	if _, err := run("status"); err == nil || !strings.Contains(err.Error(), "no status.rootRotation yet") {
		t.Fatalf("status before the controller wrote any: %v", err)
	}
	out, err := run("rotate-root")
	if err != nil || !strings.Contains(out, "root rotation to generation 1 requested") {
		t.Fatalf("rotate-root: %v\n%s", err, out)
	}
	var mc v1alpha1.MeshConfig
	if err := env.Client.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, &mc); err != nil || mc.Spec.Certificates.BuiltIn.RootGeneration != 1 {
		t.Fatalf("MeshConfig after rotate-root: %+v, %v", mc.Spec.Certificates, err)
	}
	mc.Status.RootRotation = &v1alpha1.RootRotationStatus{Phase: "AddNewRoot", TargetGeneration: 1, WaitingFor: "waiting for every connected proxy to ACK a trust bundle with the new root: 2 of 3 proxies have",
		CurrentRoot: &v1alpha1.RootCertificateStatus{SHA256: "aa11", NotAfter: metav1.NewTime(time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC))},
		NextRoot:    &v1alpha1.RootCertificateStatus{SHA256: "bb22", NotAfter: metav1.NewTime(time.Date(2037, 1, 1, 0, 0, 0, 0, time.UTC))}}
	if err := env.Client.Status().Update(ctx, &mc); err != nil {
		t.Fatal(err)
	}
	out, err = run("status")
	for _, want := range []string{"Phase:            AddNewRoot", "Root:             sha256 aa11, expires 2036-01-01T00:00:00Z", "Incoming root:    sha256 bb22", "(generation 1)", "2 of 3 proxies have"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("status output lacks %q (%v):\n%s", want, err, out)
		}
	}
	// --wait gives up at --timeout, saying where the rotation stands.
	out, err = run("rotate-root", "--wait", "--timeout", "1s")
	if err == nil || !strings.Contains(err.Error(), "last phase AddNewRoot") || !strings.Contains(out, "AddNewRoot") {
		t.Fatalf("rotate-root --wait during a rotation: %v\n%s", err, out)
	}
}
