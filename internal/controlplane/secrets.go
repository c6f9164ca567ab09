package controlplane

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"sync/atomic"
	"time"

	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/certs/certmanager"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/xds"
)

// secretSource serves the certs Manager's key material to the xDS server
// (xds.SecretSource): a sidecar's SDS secrets are its identity's
// certificate and key, and the issuer's roots as the trust bundle.
type secretSource struct {
	m   *certs.Manager
	log logr.Logger
}

func (s secretSource) Acquire(id string) {
	ident, err := certs.ParseIdentity(id)
	if err != nil {
		s.log.Error(err, "cannot issue for this identity", "identity", id)
		return
	}
	if err := s.m.Acquire(ident); err != nil {
		s.log.Error(err, "acquiring a certificate", "identity", id)
	}
}

func (s secretSource) Release(id string) {
	if ident, err := certs.ParseIdentity(id); err == nil {
		s.m.Release(ident)
	}
}

func (s secretSource) Material(id string) (chain, key, bundle []byte, ok bool) {
	ident, err := certs.ParseIdentity(id)
	if err != nil {
		return nil, nil, nil, false
	}
	sec, ok := s.m.Get(ident)
	if !ok || sec == nil {
		return nil, nil, nil, false
	}
	for _, r := range sec.Roots {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	return sec.ChainPEM, sec.PrivateKeyPEM(), bundle, true
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

// servingCert holds the xDS TLS listener's current certificate.
type servingCert struct {
	p atomic.Pointer[tls.Certificate]
}

func (s *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.p.Load(); c != nil {
		return c, nil
	}
	return nil, errNoRoot
}

func (s *servingCert) ready() error {
	if s.p.Load() == nil {
		return errNoRoot
	}
	return nil
}

// newSecrets makes the certificate Manager, connects it to the xDS server,
// and returns a runnable (for every replica) that loads the built-in CA's
// root, which the leader creates, installs the issuer, and keeps the xDS
// server's own certificate (for dnsNames) current in serving.
func newSecrets(ads *xds.ADS, c client.WithWatch, namespace, trustDomain string, dnsNames []string, serving *servingCert, log logr.Logger) (*certs.Manager, func(context.Context) error, error) {
	m, err := certs.NewManager(certs.ManagerOptions{Issuer: pendingIssuer{}, Log: log})
	if err != nil {
		return nil, nil, err
	}
	ads.SetSecrets(secretSource{m: m, log: log})
	m.Subscribe(func(ev certs.Event) { ads.SecretsChanged(ev.Identity.String()) })
	load := func(ctx context.Context) error {
		store := &builtin.RootStore{Client: c, TrustDomain: trustDomain}
		var root *builtin.KeyPair
		for root == nil {
			var err error
			if root, err = store.Load(ctx); err != nil {
				if !errors.Is(err, builtin.ErrRootNotFound) {
					log.Error(err, "loading the mesh root CA")
				}
				select {
				case <-ctx.Done():
					m.Stop()
					return nil
				case <-time.After(2 * time.Second):
				}
			}
		}
		builtinIssuer, err := builtin.NewIssuer(root, builtin.Options{})
		if err != nil {
			return err
		}
		log.Info("loaded the mesh root CA")
		// The workload issuer follows MeshConfig, checked every
		// reconcile period; the xDS serving certificate always comes from
		// the mesh root, which sidecars trust for the control plane.
		var current string
		nextServing := time.Now()
		for {
			want, ref := workloadIssuer(readMeshConfig(ctx, c))
			if want != current {
				var iss certs.Issuer = builtinIssuer
				if want == providerCertManager {
					cm, err := certmanager.New(certmanager.Options{Client: c, Namespace: namespace, IssuerRef: ref, Log: log})
					if err != nil {
						log.Error(err, "MeshConfig selects cert-manager but its issuer cannot be used; keeping the current issuer")
						want = current
					} else {
						iss = cm
					}
				}
				if want != current {
					m.SetIssuer(iss)
					m.RenewAll()
					log.Info("issuing workload certificates", "provider", iss.Name())
					current = want
				}
			}
			if !time.Now().Before(nextServing) {
				cert, err := builtinIssuer.ServingCertificate(dnsNames, servingLifetime)
				if err != nil {
					log.Error(err, "issuing the xDS serving certificate")
					nextServing = time.Now().Add(10 * time.Second)
				} else {
					serving.p.Store(cert)
					nextServing = time.Now().Add(servingLifetime / 2)
				}
			}
			select {
			case <-ctx.Done():
				m.Stop()
				return nil
			case <-time.After(10 * time.Second):
			}
		}
	}
	return m, load, nil
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
