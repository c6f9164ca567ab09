package rootrotation_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/cli/rootrotation"
	"github.com/weftmesh/weft/internal/testing/testenv"
)

// TestRequestAndWait checks the client side against the real API server:
// what Request writes, that it never asks twice for one rotation, the
// CRD's refusal to lower the field, and what Wait waits for. The
// controller's side (status written by the rotation driver) is
// internal/controller's TestRootRotation; here the test writes the
// status the driver would.
func TestRequestAndWait(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Client
	const ns = "weft-system"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// A root of generation 2 and no MeshConfig (deleted, say): the request
	// goes past the root's generation.
	root, err := (&builtin.RootStore{Client: c, Namespace: ns, TrustDomain: "cluster.local"}).Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: builtin.DefaultSecretName}, &sec); err != nil {
		t.Fatal(err)
	}
	sec.Annotations[builtin.GenerationAnnotation] = "2"
	if err := c.Update(ctx, &sec); err != nil {
		t.Fatal(err)
	}
	gen, err := rootrotation.Request(ctx, c, ns)
	if err != nil || gen != 3 {
		t.Fatalf("Request without MeshConfig = %d, %v; want 3", gen, err)
	}
	mc := get(ctx, t, c)
	if mc.Spec.Certificates.BuiltIn.RootGeneration != 3 {
		t.Fatalf("spec.certificates.builtIn = %+v", mc.Spec.Certificates.BuiltIn)
	}
	if again, err := rootrotation.Request(ctx, c, ns); err != nil || again != 3 {
		t.Fatalf("second Request = %d, %v; want 3 again (one rotation)", again, err)
	}

	// The CRD refuses to lower it, with a message naming the field.
	mc.Spec.Certificates.BuiltIn.RootGeneration = 1
	if err := c.Update(ctx, mc); err == nil || !strings.Contains(err.Error(), "spec.certificates.builtIn.rootGeneration may only increase") {
		t.Fatalf("lowering rootGeneration: %v", err)
	}

	// Wait: nothing reported yet, it times out saying so.
	short, stop := context.WithTimeout(ctx, time.Second)
	err = rootrotation.Wait(short, c, 3, nil)
	stop()
	if err == nil || !strings.Contains(err.Error(), "has not written MeshConfig status.rootRotation") {
		t.Fatalf("Wait without status: %v", err)
	}
	// The driver's status as it goes: Wait reports each change and returns
	// once generation 3 is Stable.
	seen := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		done <- rootrotation.Wait(ctx, c, 3, func(p rootrotation.Progress) { seen <- p.Status.Phase + ":" + rootrotation.Describe(p) })
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-seen:
			if got != want {
				t.Fatalf("progress %q, want %q", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("no progress %q", want)
		}
	}
	setStatus := func(phase string, rootGen int64, waiting string) {
		t.Helper()
		mc := get(ctx, t, c)
		mc.Status.RootRotation = &v1alpha1.RootRotationStatus{Phase: phase, RootGeneration: rootGen, WaitingFor: waiting,
			CurrentRoot: &v1alpha1.RootCertificateStatus{SHA256: "ab", NotAfter: metav1.NewTime(root.Cert.NotAfter).Rfc3339Copy()}}
		if err := c.Status().Update(ctx, mc); err != nil {
			t.Fatal(err)
		}
	}
	setStatus("AddNewRoot", 2, "waiting for X: 1 of 2 proxies have")
	expect("AddNewRoot:waiting for X: 1 of 2 proxies have")
	setStatus("SwitchSigning", 2, "waiting for Y")
	expect("SwitchSigning:waiting for Y")
	select {
	case err := <-done:
		t.Fatalf("Wait returned during the rotation: %v", err)
	default:
	}
	// A stable status of an older generation is not the end either.
	setStatus("Stable", 2, "")
	expect("Stable:")
	setStatus("Stable", 3, "")
	expect("Stable:")
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The next request goes one past the root in effect.
	if gen, err := rootrotation.Request(ctx, c, ns); err != nil || gen != 4 {
		t.Fatalf("Request after the rotation = %d, %v; want 4", gen, err)
	}

	// With cert-manager issuing, there is nothing to rotate here.
	mc = get(ctx, t, c)
	mc.Spec.Certificates.Provider = v1alpha1.CertificateProviderCertManager
	mc.Spec.Certificates.CertManager = &v1alpha1.CertManagerConfig{IssuerRef: v1alpha1.IssuerReference{Name: "ca"}, TrustBundle: &v1alpha1.TrustBundleSource{Secret: &v1alpha1.KeyReference{Name: "ca", Key: "ca.crt"}}}
	if err := c.Update(ctx, mc); err != nil {
		t.Fatal(err)
	}
	if _, err := rootrotation.Request(ctx, c, ns); err == nil || !strings.Contains(err.Error(), "spec.certificates.provider is CertManager") {
		t.Fatalf("Request with cert-manager: %v", err)
	}
}

func get(ctx context.Context, t *testing.T, c client.Client) *v1alpha1.MeshConfig {
	t.Helper()
	var mc v1alpha1.MeshConfig
	if err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, &mc); err != nil {
		t.Fatal(err)
	}
	return &mc
}

// TestDescribeNamesWaitingProxies: what `weft ca rotate-root --wait` and
// `weft ca status` print names the proxies a phase waits for and when it
// is forced on, also when status.rootRotation.waitingFor was cut to its
// 1,024 bytes.
func TestDescribeNamesWaitingProxies(t *testing.T) {
	deadline := metav1.NewTime(time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC))
	p := rootrotation.Progress{Status: v1alpha1.RootRotationStatus{Phase: "AddNewRoot",
		WaitingFor:        "waiting for every connected proxy to ACK a trust bundle with the new root: 40 of 42 proxies have (on 2 controller replicas); not yet: a-0.s...",
		WaitingForProxies: []string{"a-0.shop", "b-1.shop"}, WaitingForProxyCount: 2, PhaseDeadline: &deadline}}
	got := rootrotation.Describe(p)
	for _, want := range []string{"40 of 42", "not yet: a-0.shop, b-1.shop", "their streams are closed at 2026-12-02T18:00:00Z and the phase is forced on without them 30s later"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q does not say %q", got, want)
		}
	}
}
