package webhookserver

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
)

// caKeyPair is the webhook CA: it signs only webhook serving certificates,
// never workload ones, so it is separate from the mesh root.
type caKeyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
	// bundle is what the API server must trust (ca.crt): the CA itself.
	bundle []byte
}

// newCA makes a self-signed ECDSA P-256 CA.
func newCA(now time.Time, lifetime time.Duration) (*caKeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "weft-webhook-ca", Organization: []string{"weft"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &caKeyPair{cert: cert, key: key, bundle: certs.EncodeCertificatesPEM([]*x509.Certificate{cert})}, nil
}

// issueServing signs a serving certificate for dnsNames with a new key,
// never outliving the CA (certs/builtin does the signing).
func issueServing(ca *caKeyPair, dnsNames []string, now time.Time, lifetime time.Duration) (*tls.Certificate, error) {
	kp, err := builtin.NewKeyPair(ca.cert, ca.key)
	if err != nil {
		return nil, err
	}
	return builtin.SignServing(kp, dnsNames, now, lifetime)
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// caSecret is the CA as a kubernetes.io/tls Secret with ca.crt.
func caSecret(ns, name string, ca *caKeyPair) (*corev1.Secret, error) {
	keyPEM, err := certs.EncodeKeyPEM(ca.key)
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
	key, err := parseKey(sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, bad("%s: %v", corev1.TLSPrivateKeyKey, err)
	}
	if !publicKeysEqual(chain[0].PublicKey, key.Public()) {
		return nil, bad("%s does not match %s", corev1.TLSPrivateKeyKey, corev1.TLSCertKey)
	}
	bundle := sec.Data["ca.crt"]
	if _, err := certs.ParseCertificatesPEM(bundle); err != nil {
		bundle = certs.EncodeCertificatesPEM(chain[:1])
	}
	return &caKeyPair{cert: chain[0], key: key, bundle: bundle}, nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block of type %q, want PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, errors.New("cannot be parsed as a private key")
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", key)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
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
