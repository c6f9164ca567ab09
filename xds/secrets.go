package xds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/dataplane"
)

// SecretSource supplies the key material of identities (SPIFFE IDs). The
// ADS acquires an identity when its first proxy connects and releases it
// when its last one leaves, and asks for the current material whenever it
// builds that identity's configuration. A group is one identity, so a proxy
// can only ever receive its own identity's key.
type SecretSource interface {
	Acquire(identity string)
	Release(identity string)
	// Material returns PEM: the certificate chain (leaf first), its private
	// key, and the trust bundle; ok is false while none is available yet.
	Material(identity string) (chain, key, bundle []byte, ok bool)
}

// SetSecrets makes the ADS serve SDS secrets from src. Call it before
// serving.
func (a *ADS) SetSecrets(src SecretSource) { a.secrets = src }

// SecretsChanged rebuilds and pushes the configuration of the proxies of
// identity, after its key material changed.
func (a *ADS) SecretsChanged(identity string) {
	a.mu.Lock()
	mesh := a.mesh
	var groups []*group
	for _, g := range a.groups {
		if g.secretID == identity || g.secretID == "" && g.proxy.Identity(mesh.TrustDomain) == identity {
			groups = append(groups, g)
		}
	}
	a.mu.Unlock()
	for _, g := range groups {
		if a.rebuild(g) {
			a.wake(g)
		}
	}
}

// sdsSecrets are the two secrets the translator's resources name, for one
// identity. They never reach a log, a metric or the debug endpoint.
func sdsSecrets(chain, key, bundle []byte) []*tlsv3.Secret {
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	return []*tlsv3.Secret{
		{Name: dataplane.WorkloadCertSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(chain), PrivateKey: inline(key),
		}}},
		{Name: dataplane.TrustBundleSecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(bundle),
		}}},
	}
}
