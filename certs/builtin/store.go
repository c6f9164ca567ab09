package builtin

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
)

const (
	// DefaultNamespace holds the root Secret.
	DefaultNamespace = "weft-system"
	// DefaultSecretName is the root Secret's name.
	DefaultSecretName = "weft-ca-root"
	// TrustDomainAnnotation records the trust domain the root was made for.
	TrustDomainAnnotation = "weft.dev/trust-domain"
)

// ErrRootNotFound is returned by RootStore.Load while the leader has not yet
// created the root. Replicas retry.
var ErrRootNotFound = errors.New("the weft root CA Secret does not exist yet (the leader creates it)")

// RootStore keeps the root CA in a kubernetes.io/tls Secret: tls.crt and
// ca.crt hold the root certificate, tls.key its PKCS#8 key. That is the
// layout a cert-manager CA Issuer reads, so the same Secret can back one.
type RootStore struct {
	Client      client.Client
	Namespace   string // default DefaultNamespace
	Name        string // default DefaultSecretName
	TrustDomain string
	// Lifetime of a root created by Ensure; default DefaultRootLifetime.
	Lifetime time.Duration
	Clock    clock.PassiveClock // default the real clock
}

func (s *RootStore) key() client.ObjectKey {
	ns, name := s.Namespace, s.Name
	if ns == "" {
		ns = DefaultNamespace
	}
	if name == "" {
		name = DefaultSecretName
	}
	return client.ObjectKey{Namespace: ns, Name: name}
}

func (s *RootStore) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock.Now()
}

// Load reads the root; ErrRootNotFound when the Secret does not exist. For
// replicas that are not the leader.
func (s *RootStore) Load(ctx context.Context) (*KeyPair, error) {
	var sec corev1.Secret
	if err := s.Client.Get(ctx, s.key(), &sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: Secret %s", ErrRootNotFound, s.key())
		}
		return nil, fmt.Errorf("reading the root CA Secret %s: %w", s.key(), err)
	}
	return s.decode(&sec)
}

// Ensure returns the root, creating it when the Secret does not exist. Only
// the leader calls it. Create is the arbiter: if another replica created the
// Secret between our read and our create, the create fails with
// AlreadyExists and we read the winner's root, so every replica ends up with
// the same one.
func (s *RootStore) Ensure(ctx context.Context) (*KeyPair, error) {
	kp, err := s.Load(ctx)
	if !errors.Is(err, ErrRootNotFound) {
		return kp, err
	}
	lifetime := s.Lifetime
	if lifetime == 0 {
		lifetime = DefaultRootLifetime
	}
	root, err := NewRoot(s.TrustDomain, s.now(), lifetime)
	if err != nil {
		return nil, err
	}
	sec, err := s.encode(root)
	if err != nil {
		return nil, err
	}
	if err := s.Client.Create(ctx, sec); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return s.Load(ctx)
		}
		return nil, fmt.Errorf("creating the root CA Secret %s: %w", s.key(), err)
	}
	return root, nil
}

func (s *RootStore) encode(root *KeyPair) (*corev1.Secret, error) {
	keyPEM, err := certs.EncodeKeyPEM(root.key)
	if err != nil {
		return nil, err
	}
	certPEM := certs.EncodeCertificatesPEM([]*x509.Certificate{root.Cert})
	k := s.key()
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   k.Namespace,
			Name:        k.Name,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "weft", "app.kubernetes.io/component": "ca"},
			Annotations: map[string]string{TrustDomainAnnotation: s.TrustDomain},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       certPEM,
			corev1.TLSPrivateKeyKey: keyPEM,
			"ca.crt":                certPEM,
		},
	}, nil
}

// decode parses and checks the Secret. Errors name the Secret and the field,
// never its content.
func (s *RootStore) decode(sec *corev1.Secret) (*KeyPair, error) {
	k := s.key()
	bad := func(format string, a ...any) error {
		return fmt.Errorf("root CA Secret %s: %s", k, fmt.Sprintf(format, a...))
	}
	chain, err := certs.ParseCertificatesPEM(sec.Data[corev1.TLSCertKey])
	if err != nil {
		return nil, bad("%s: %v", corev1.TLSCertKey, err)
	}
	cert := chain[0]
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, bad("%s is not a CA certificate (needs CA:TRUE and keyCertSign)", corev1.TLSCertKey)
	}
	signer, err := certs.ParsePrivateKeyPEM(sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, bad("%s %v", corev1.TLSPrivateKeyKey, err)
	}
	kp, err := NewKeyPair(cert, signer)
	if err != nil {
		return nil, bad("%v", err)
	}
	if now := s.now(); !now.Before(cert.NotAfter) {
		return nil, bad("the root expired at %s; rotate the root", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return kp, nil
}
