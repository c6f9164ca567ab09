package trust

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/xds"
)

// TestMeshConfigResolvedRefs: what spec.certificates names shows in
// MeshConfig's ResolvedRefs condition, written by the leader's driver as
// weft-controller (its RBAC applied): a missing issuer (IssuerNotFound, as
// docs/api.md promises), one not Ready yet, an unreadable trust bundle
// (InvalidTrustBundle), then everything resolved, and the built-in CA.
func TestMeshConfigResolvedRefs(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ns = "weft-system"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	_, c, cs := asController(t, env)
	if _, err := (&builtin.RootStore{Client: c, Namespace: ns, TrustDomain: translator.DefaultTrustDomain}).Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	mc := &v1alpha1.MeshConfig{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.MeshConfigName},
		Spec: v1alpha1.MeshConfigSpec{Certificates: v1alpha1.CertificatesConfig{Provider: v1alpha1.CertificateProviderCertManager,
			CertManager: &v1alpha1.CertManagerConfig{IssuerRef: v1alpha1.IssuerReference{Name: "mesh", Kind: "Issuer", Group: "cert-manager.io"},
				TrustBundle: &v1alpha1.TrustBundleSource{Secret: &v1alpha1.KeyReference{Name: "mesh-ca", Key: "ca.crt"}}}}}}
	if err := env.Client.Create(ctx, mc); err != nil {
		t.Fatal(err)
	}
	ads := xds.NewADS(logr.Discard())
	reports := startReports(t, ctx, cs, ns, "weft-controller-0")
	_, _, d, err := New(ads, c, ns, translator.DefaultTrustDomain, []string{"weft-controller"}, &ServingCert{}, reports, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	d.clock = clock.RealClock{} // as Start sets it
	expect := func(status metav1.ConditionStatus, reason string, inMessage ...string) {
		t.Helper()
		d.step(ctx)
		var got v1alpha1.MeshConfig
		if err := env.Client.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, &got); err != nil {
			t.Fatal(err)
		}
		cond := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionResolvedRefs)
		if cond == nil || cond.Status != status || cond.Reason != reason || cond.ObservedGeneration != got.Generation {
			t.Fatalf("ResolvedRefs %+v, want %s/%s at generation %d", cond, status, reason, got.Generation)
		}
		for _, want := range inMessage {
			if !strings.Contains(cond.Message, want) {
				t.Fatalf("ResolvedRefs message %q lacks %q", cond.Message, want)
			}
		}
		if meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionRootRotation) == nil {
			t.Fatal("the RootRotation condition is gone")
		}
	}

	expect(metav1.ConditionFalse, v1alpha1.ReasonIssuerNotFound, "spec.certificates.certManager.issuerRef", "Issuer weft-system/mesh does not exist")

	iss := &cmapi.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mesh"},
		Spec: cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: "mesh-ca"}}}}
	if err := env.Client.Create(ctx, iss); err != nil {
		t.Fatal(err)
	}
	expect(metav1.ConditionFalse, v1alpha1.ReasonIssuerNotFound, "has no Ready condition yet")
	// What cert-manager writes once the issuer works.
	iss.Status.Conditions = []cmapi.IssuerCondition{{Type: cmapi.IssuerConditionReady, Status: cmmeta.ConditionTrue, Reason: "KeyPairVerified", Message: "Signing CA verified"}}
	if err := env.Client.Status().Update(ctx, iss); err != nil {
		t.Fatal(err)
	}
	expect(metav1.ConditionFalse, v1alpha1.ReasonInvalidTrustBundle, "spec.certificates.certManager.trustBundle", "Secret weft-system/mesh-ca")

	ca := newTestCA(t, "mesh CA")
	if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mesh-ca"},
		Data: map[string][]byte{"ca.crt": certs.EncodeCertificatesPEM([]*x509.Certificate{ca.Cert})}}); err != nil {
		t.Fatal(err)
	}
	expect(metav1.ConditionTrue, v1alpha1.ReasonResolvedRefs, "Issuer weft-system/mesh is Ready", "1 CA certificate(s)")

	var cur v1alpha1.MeshConfig
	if err := env.Client.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, &cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.Certificates = v1alpha1.CertificatesConfig{Provider: v1alpha1.CertificateProviderBuiltIn}
	if err := env.Client.Update(ctx, &cur); err != nil {
		t.Fatal(err)
	}
	expect(metav1.ConditionTrue, v1alpha1.ReasonResolvedRefs, "built-in CA")
}
