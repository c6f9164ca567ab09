// Package builtin is weft's own certificate authority, the default Issuer.
//
// A self-signed root (ECDSA P-256, 10 years) is created once by the leader
// and kept in the Secret weft-system/weft-ca-root (type kubernetes.io/tls,
// the same layout a cert-manager CA Issuer reads). Every replica loads it and
// mints its own intermediate in memory; workload certificates are signed by
// the intermediate, so the root key signs only a few intermediates a year.
//
// Keys are never logged and never appear in errors: KeyPair formats itself
// without its key.
package builtin

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/weftmesh/weft/certs"
)

const (
	// DefaultRootLifetime is the validity of a new root.
	DefaultRootLifetime = 10 * 365 * 24 * time.Hour
	// DefaultIntermediateLifetime is the validity of an intermediate; a
	// replica mints a new one when half of it has passed.
	DefaultIntermediateLifetime = 365 * 24 * time.Hour
	// ClockSkew backdates NotBefore so that a peer whose clock is a little
	// behind accepts a certificate issued just now.
	ClockSkew = 5 * time.Minute
)

// KeyPair is a certificate and its private key. Printing it (%v, %+v, %#v)
// shows the certificate's subject and expiry, never the key.
type KeyPair struct {
	Cert *x509.Certificate
	key  crypto.Signer
}

// NewKeyPair pairs cert with key after checking that they match.
func NewKeyPair(cert *x509.Certificate, key crypto.Signer) (*KeyPair, error) {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("the private key does not match the certificate %q", cert.Subject)
	}
	return &KeyPair{Cert: cert, key: key}, nil
}

// Signer is the private key, for callers that must persist it.
func (k *KeyPair) Signer() crypto.Signer { return k.key }

func (k *KeyPair) String() string {
	return fmt.Sprintf("KeyPair{subject=%q notAfter=%s key=<redacted>}", k.Cert.Subject.String(), k.Cert.NotAfter.UTC().Format(time.RFC3339))
}

// GoString keeps %#v from printing the key.
func (k *KeyPair) GoString() string { return k.String() }

// Format keeps every verb (%v, %+v, %s, %#v) from reaching the key.
func (k *KeyPair) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// NewRoot creates a self-signed root CA for a trust domain.
func NewRoot(trustDomain string, now time.Time, lifetime time.Duration) (*KeyPair, error) {
	if err := certs.ValidateTrustDomain(trustDomain); err != nil {
		return nil, err
	}
	return NewCA("weft root CA "+trustDomain+" "+now.UTC().Format("2006-01-02T15:04:05Z"), now, lifetime, false)
}

// NewCA creates a self-signed ECDSA P-256 CA named commonName. A
// leavesOnly CA (MaxPathLen 0) may sign only leaves: the webhook's CA,
// which signs nothing but its serving certificates, is one.
func NewCA(commonName string, now time.Time, lifetime time.Duration, leavesOnly bool) (*KeyPair, error) {
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
		Subject:               pkix.Name{Organization: []string{"weft"}, CommonName: commonName},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        leavesOnly,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating the CA certificate %q: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, key: key}, nil
}

// NewIntermediate creates an intermediate CA signed by root. It may sign
// only leaves (MaxPathLen 0) and never outlives the root.
func NewIntermediate(root *KeyPair, now time.Time, lifetime time.Duration) (*KeyPair, error) {
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
		Subject:               pkix.Name{Organization: []string{"weft"}, CommonName: "weft intermediate CA " + now.UTC().Format("2006-01-02T15:04:05Z")},
		NotBefore:             clampNotBefore(now.Add(-ClockSkew), root.Cert),
		NotAfter:              clampNotAfter(now.Add(lifetime), root.Cert),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, key.Public(), root.key)
	if err != nil {
		return nil, fmt.Errorf("creating an intermediate certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, key: key}, nil
}

// SignLeaf signs a workload certificate for id with pub: the SPIFFE ID is
// its only SAN (URI), key usage is digitalSignature (keyEncipherment is
// meaningless for ECDSA and TLS 1.3), extended key usage serverAuth and
// clientAuth, NotBefore backdated by ClockSkew, NotAfter never beyond the
// issuer's.
func SignLeaf(issuer *KeyPair, id certs.Identity, pub crypto.PublicKey, now time.Time, lifetime time.Duration) (*x509.Certificate, error) {
	if lifetime <= 0 {
		return nil, fmt.Errorf("certificate lifetime must be positive, got %s", lifetime)
	}
	if !now.Before(issuer.Cert.NotAfter) {
		return nil, fmt.Errorf("the signing CA %q expired at %s", issuer.Cert.Subject, issuer.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             clampNotBefore(now.Add(-ClockSkew), issuer.Cert),
		NotAfter:              clampNotAfter(now.Add(lifetime), issuer.Cert),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer.Cert, pub, issuer.key)
	if err != nil {
		return nil, fmt.Errorf("signing the certificate for %s: %w", id, err)
	}
	return x509.ParseCertificate(der)
}

// newSerial is a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	if serial.Sign() == 0 {
		return nil, errors.New("random serial number is zero")
	}
	return serial, nil
}

func clampNotBefore(t time.Time, issuer *x509.Certificate) time.Time {
	if t.Before(issuer.NotBefore) {
		return issuer.NotBefore
	}
	return t
}

func clampNotAfter(t time.Time, issuer *x509.Certificate) time.Time {
	if t.After(issuer.NotAfter) {
		return issuer.NotAfter
	}
	return t
}
