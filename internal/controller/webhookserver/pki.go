package webhookserver

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
)

// caKeyPair is the webhook CA: it signs only webhook serving certificates,
// never workload ones, so it is separate from the mesh root.
type caKeyPair struct {
	kp   *builtin.KeyPair
	cert *x509.Certificate
	// bundle is what the API server must trust (ca.crt): the CA itself.
	bundle []byte
}

func newCAKeyPair(kp *builtin.KeyPair, bundle []byte) *caKeyPair {
	if bundle == nil {
		bundle = certs.EncodeCertificatesPEM([]*x509.Certificate{kp.Cert})
	}
	return &caKeyPair{kp: kp, cert: kp.Cert, bundle: bundle}
}

// newCA makes a self-signed CA that may sign only leaves.
func newCA(now time.Time, lifetime time.Duration) (*caKeyPair, error) {
	kp, err := builtin.NewCA("weft-webhook-ca", now, lifetime, true)
	if err != nil {
		return nil, err
	}
	return newCAKeyPair(kp, nil), nil
}

// issueServing signs a serving certificate for dnsNames with a new key,
// never outliving the CA.
func issueServing(ca *caKeyPair, dnsNames []string, now time.Time, lifetime time.Duration) (*tls.Certificate, error) {
	return builtin.SignServing(ca.kp, dnsNames, now, lifetime)
}

// caSecret is the CA as a kubernetes.io/tls Secret with ca.crt.
func caSecret(ns, name string, ca *caKeyPair) (*corev1.Secret, error) {
	keyPEM, err := certs.EncodeKeyPEM(ca.kp.Signer())
	if err != nil {
		return nil, err
	}
	certPEM := certs.EncodeCertificatesPEM([]*x509.Certificate{ca.cert})
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns,
			Name:      name,
			Labels:    map[string]string{"app.kubernetes.io/managed-by": "weft", "app.kubernetes.io/component": "sidecar-injector"},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       certPEM,
			corev1.TLSPrivateKeyKey: keyPEM,
			"ca.crt":                ca.bundle,
		},
	}, nil
}

// decodeCA parses the CA Secret. Errors name the Secret and field, never
// content.
func decodeCA(sec *corev1.Secret) (*caKeyPair, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("webhook CA Secret %s/%s: %s", sec.Namespace, sec.Name, fmt.Sprintf(format, a...))
	}
	chain, err := certs.ParseCertificatesPEM(sec.Data[corev1.TLSCertKey])
	if err != nil {
		return nil, bad("%s: %v", corev1.TLSCertKey, err)
	}
	if !chain[0].IsCA || chain[0].KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, bad("%s is not a CA certificate", corev1.TLSCertKey)
	}
	key, err := certs.ParsePrivateKeyPEM(sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, bad("%s %v", corev1.TLSPrivateKeyKey, err)
	}
	kp, err := builtin.NewKeyPair(chain[0], key)
	if err != nil {
		return nil, bad("%s does not match %s", corev1.TLSPrivateKeyKey, corev1.TLSCertKey)
	}
	bundle := sec.Data["ca.crt"]
	if _, err := certs.ParseCertificatesPEM(bundle); err != nil {
		bundle = nil
	}
	return newCAKeyPair(kp, bundle), nil
}

// decodeServing parses a kubernetes.io/tls Secret (cert-manager's) into a
// serving certificate.
func decodeServing(sec *corev1.Secret) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("serving certificate Secret %s/%s: %s and %s do not form a key pair", sec.Namespace, sec.Name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	}
	return &c, nil
}
