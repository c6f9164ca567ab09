package trust

import (
	"testing"

	"github.com/weftmesh/weft/crds/v1alpha1"
)

func TestWorkloadIssuerFollowsMeshConfig(t *testing.T) {
	cm := &v1alpha1.MeshConfig{}
	cm.Spec.Certificates.Provider = v1alpha1.CertificateProviderCertManager
	cm.Spec.Certificates.CertManager = &v1alpha1.CertManagerConfig{IssuerRef: v1alpha1.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"}}
	noRef := &v1alpha1.MeshConfig{}
	noRef.Spec.Certificates.Provider = v1alpha1.CertificateProviderCertManager
	for _, tc := range []struct {
		name string
		mc   *v1alpha1.MeshConfig
		want string
	}{
		{"no MeshConfig", nil, providerBuiltIn},
		{"defaults", &v1alpha1.MeshConfig{}, providerBuiltIn},
		{"cert-manager", cm, providerCertManager},
		// The CRD requires the reference; should one be missing, keep the
		// built-in CA rather than stop issuing.
		{"cert-manager without issuerRef", noRef, providerBuiltIn},
	} {
		got, ref := workloadIssuer(tc.mc)
		if got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
		if got == providerCertManager && (ref.Name != "mesh-ca" || ref.Kind != "ClusterIssuer") {
			t.Errorf("%s: issuer ref %+v", tc.name, ref)
		}
	}
}
