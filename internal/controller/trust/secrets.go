package trust

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/xds"
)

// secretSource serves the certs Manager's key material to the xDS server
// (xds.SecretSource): a sidecar's SDS secrets are its identity's
// certificate and key, and the mesh's trust bundle.
//
// The bundle is the same for every identity on a replica: the built-in
// CA's roots for the current rotation phase (set by the trust follower;
// empty with cert-manager), plus every root that a certificate this
// replica serves chains to. The second part makes a change of issuer
// (cert-manager's CA rotated, or a switch of provider) trust the old and
// the new CA for as long as certificates from both are served here.
type secretSource struct {
	m   *certs.Manager
	ads *xds.ADS
	log logr.Logger

	mu      sync.Mutex
	base    []*x509.Certificate
	served  map[certs.Identity][]string // identity → its roots' fingerprints
	refs    map[string]int              // fingerprint → identities served from it
	byPrint map[string]*x509.Certificate
	bundle  certs.Bundle
	pem     []byte
}

func newSecretSource(m *certs.Manager, ads *xds.ADS, log logr.Logger) *secretSource {
	return &secretSource{m: m, ads: ads, log: log, served: map[certs.Identity][]string{}, refs: map[string]int{}, byPrint: map[string]*x509.Certificate{}}
}

func (s *secretSource) Acquire(id string) {
	ident, err := certs.ParseIdentity(id)
	if err != nil {
		s.log.Error(err, "cannot issue for this identity", "identity", id)
		return
	}
	if err := s.m.Acquire(ident); err != nil {
		s.log.Error(err, "acquiring a certificate", "identity", id)
	}
}

func (s *secretSource) Release(id string) {
	if ident, err := certs.ParseIdentity(id); err == nil {
		s.m.Release(ident)
	}
}

func (s *secretSource) Material(id string) (chain, key, bundle []byte, ok bool) {
	ident, err := certs.ParseIdentity(id)
	if err != nil {
		return nil, nil, nil, false
	}
	sec, ok := s.m.Get(ident)
	if !ok || sec == nil {
		return nil, nil, nil, false
	}
	s.mu.Lock()
	bundle = s.pem
	s.mu.Unlock()
	return sec.ChainPEM, sec.PrivateKeyPEM(), bundle, true
}

// Bundle is what this replica's proxies are given to trust.
func (s *secretSource) Bundle() certs.Bundle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bundle
}

// setBase sets the built-in CA's roots (nil with cert-manager) and pushes
// the new bundle to every proxy when it changed.
func (s *secretSource) setBase(roots []*x509.Certificate) {
	s.mu.Lock()
	s.base = roots
	changed := s.recomputeLocked()
	s.mu.Unlock()
	if changed {
		s.pushAll()
	}
}

// observe follows the Manager's events (its only subscriber, in order):
// the identity's new secret is pushed, and when the set of roots that
// served certificates chain to changed, every proxy's bundle is.
func (s *secretSource) observe(ev certs.Event) {
	s.mu.Lock()
	for _, fp := range s.served[ev.Identity] {
		if s.refs[fp]--; s.refs[fp] == 0 {
			delete(s.refs, fp)
			delete(s.byPrint, fp)
		}
	}
	delete(s.served, ev.Identity)
	if ev.Secret != nil {
		var fps []string
		for _, r := range ev.Secret.Roots {
			fp := certs.Fingerprint(r)
			fps = append(fps, fp)
			s.refs[fp]++
			s.byPrint[fp] = r
		}
		s.served[ev.Identity] = fps
	}
	changed := s.recomputeLocked()
	s.mu.Unlock()
	if changed {
		s.pushAll()
		return
	}
	s.ads.SecretsChanged(ev.Identity.String())
}

// recomputeLocked rebuilds the bundle: base first, then the served roots
// oldest first (a stable order, so an unchanged set is an unchanged PEM).
func (s *secretSource) recomputeLocked() bool {
	extra := make([]*x509.Certificate, 0, len(s.byPrint))
	for _, r := range s.byPrint {
		extra = append(extra, r)
	}
	slices.SortFunc(extra, func(a, b *x509.Certificate) int {
		if c := a.NotBefore.Compare(b.NotBefore); c != 0 {
			return c
		}
		return strings.Compare(certs.Fingerprint(a), certs.Fingerprint(b))
	})
	b, err := certs.NewBundle(append(slices.Clone(s.base), extra...)...)
	if err != nil {
		s.log.Error(err, "building the trust bundle; keeping the current one")
		return false
	}
	pem := b.PEM()
	if bytes.Equal(pem, s.pem) {
		return false
	}
	s.bundle, s.pem = b, pem
	return true
}

// pushAll rebuilds the configuration of every identity that is served a
// certificate (the others get no secrets at all).
func (s *secretSource) pushAll() {
	for _, sec := range s.m.Secrets() {
		s.ads.SecretsChanged(sec.Identity.String())
	}
}

// pendingIssuer stands in until the root CA is loaded: the Manager retries
// with backoff, and RenewAll after SetIssuer issues at once.
type pendingIssuer struct{}

var errNoRoot = errors.New("the mesh root CA is not loaded yet")

func (pendingIssuer) Sign(context.Context, certs.SignRequest) (*certs.Issued, error) {
	return nil, errNoRoot
}
func (pendingIssuer) Name() string { return "pending" }

// servingLifetime of the xDS server's own certificate, renewed at half.
const servingLifetime = 24 * time.Hour

// ServingCert holds the xDS TLS listener's current certificate.
type ServingCert struct {
	p atomic.Pointer[tls.Certificate]
}

func (s *ServingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.p.Load(); c != nil {
		return c, nil
	}
	return nil, errNoRoot
}

func (s *ServingCert) Ready() error {
	if s.p.Load() == nil {
		return errNoRoot
	}
	return nil
}

// certMetrics exports the certificates of the running control plane.
var certMetrics = certs.NewMetrics(nil)

func init() { ctrlmetrics.Registry.MustRegister(certMetrics) }

// New makes the certificate Manager, connects it to the xDS server,
// and returns the trust follower (for every replica: it loads the built-in
// CA's roots, which the leader creates, follows MeshConfig's provider and
// the root rotation, keeps the xDS server's own certificate for dnsNames
// current in serving, and reports its proxies' ACKs in the trust section of
// reports) and the rotation driver (for the leader; it reads every
// replica's trust section with reports' collector).
func New(ads *xds.ADS, c client.WithWatch, namespace, trustDomain string, dnsNames []string, serving *ServingCert, reports *Reports, log logr.Logger) (*certs.Manager, *Follower, *RotationDriver, error) {
	m, err := certs.NewManager(certs.ManagerOptions{Issuer: pendingIssuer{}, Log: log, Observer: func(provider string, err error) {
		if provider != (pendingIssuer{}).Name() {
			certMetrics.Observe(provider, err)
		}
	}})
	if err != nil {
		return nil, nil, nil, err
	}
	src := newSecretSource(m, ads, log)
	ads.SetSecrets(src)
	m.Subscribe(src.observe)
	store := &builtin.RootStore{Client: c, Namespace: namespace, TrustDomain: trustDomain}
	f := &Follower{ads: ads, m: m, src: src, store: store, c: c, facts: reports.Trust, serving: serving, dnsNames: dnsNames, namespace: namespace, log: log}
	certMetrics.Watch(m, f.metricsBundle)
	d := &RotationDriver{c: c, store: store, reports: reports.Col, reportsChanged: reports.Col.Subscribe(), namespace: namespace, log: log.WithName("rotation")}
	return m, f, d, nil
}

const (
	providerBuiltIn     = string(v1alpha1.CertificateProviderBuiltIn)
	providerCertManager = string(v1alpha1.CertificateProviderCertManager)
)

// workloadIssuer reads which issuer MeshConfig selects: the built-in CA
// unless the provider is CertManager with an issuer reference.
func workloadIssuer(mc *v1alpha1.MeshConfig) (string, cmmeta.IssuerReference) {
	if mc == nil || mc.Spec.Certificates.Provider != v1alpha1.CertificateProviderCertManager || mc.Spec.Certificates.CertManager == nil {
		return providerBuiltIn, cmmeta.IssuerReference{}
	}
	r := mc.Spec.Certificates.CertManager.IssuerRef
	return providerCertManager, cmmeta.IssuerReference{Name: r.Name, Kind: r.Kind, Group: r.Group}
}

func readMeshConfig(ctx context.Context, c client.Client) *v1alpha1.MeshConfig {
	var mc v1alpha1.MeshConfig
	if err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.MeshConfigName}, &mc); err != nil {
		return nil
	}
	return &mc
}

// trustAnchors is MeshConfig's cert-manager trust bundle as read: the CA
// certificates, where they came from, or why they cannot be used.
type trustAnchors struct {
	certs  []*x509.Certificate
	source string // "Secret weft-system/mesh-ca key ca.crt"
	err    error
}

// key identifies the anchors' content (or the error) for the issuer key:
// a changed bundle makes a new issuer and re-issues every certificate.
func (a trustAnchors) key() string {
	if a.err != nil {
		return "error"
	}
	fps := make([]string, 0, len(a.certs))
	for _, c := range a.certs {
		fps = append(fps, certs.Fingerprint(c))
	}
	return strings.Join(fps, ",")
}

// readTrustBundle reads spec.certificates.certManager.trustBundle: the
// CA certificates (PEM) in one key of a Secret or ConfigMap in namespace.
// Errors name the field, the object and the fix, never the content.
func readTrustBundle(ctx context.Context, c client.Client, namespace string, src *v1alpha1.TrustBundleSource) trustAnchors {
	const field = "MeshConfig spec.certificates.certManager.trustBundle"
	if src == nil || (src.Secret == nil) == (src.ConfigMap == nil) {
		return trustAnchors{err: fmt.Errorf("%s is not set (or names both or neither of secret and configMap): weft trusts no CA for cert-manager's certificates until it names the Secret or ConfigMap key in %s holding the CA certificate(s) that sign them", field, namespace)}
	}
	ref, kind := src.Secret, "Secret"
	if ref == nil {
		ref, kind = src.ConfigMap, "ConfigMap"
	}
	key := ref.Key
	if key == "" {
		key = "ca.crt"
	}
	desc := fmt.Sprintf("%s %s/%s key %s", kind, namespace, ref.Name, key)
	var data []byte
	var found bool
	var err error
	if kind == "Secret" {
		var s corev1.Secret
		if err = c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, &s); err == nil {
			data, found = s.Data[key]
		}
	} else {
		var cm corev1.ConfigMap
		if err = c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, &cm); err == nil {
			var str string
			if str, found = cm.Data[key]; found {
				data = []byte(str)
			} else {
				data, found = cm.BinaryData[key]
			}
		}
	}
	switch {
	case err != nil:
		return trustAnchors{source: desc, err: fmt.Errorf("%s: reading %s: %w", field, desc, err)}
	case !found:
		return trustAnchors{source: desc, err: fmt.Errorf("%s: %s has no key %s: put the PEM CA certificate(s) there, or set trustBundle's key", field, strings.TrimSuffix(desc, " key "+key), key)}
	}
	roots, perr := certs.ParseCertificatesPEM(data)
	if perr == nil {
		for _, r := range roots {
			if !r.IsCA {
				perr = fmt.Errorf("certificate %q is not a CA certificate", r.Subject.String())
				break
			}
		}
	}
	if perr != nil {
		return trustAnchors{source: desc, err: fmt.Errorf("%s: %s does not hold PEM CA certificates: %v", field, desc, perr)}
	}
	return trustAnchors{certs: roots, source: desc}
}
