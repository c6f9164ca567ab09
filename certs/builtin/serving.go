package builtin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"
)

// ServingCertificate issues a TLS server certificate for dnsNames from the
// intermediate: weft-controller's own xDS endpoint, which sidecars verify
// against the mesh root (the weft-root-ca ConfigMap). It carries DNS names
// only and serverAuth only: it can never pass for a workload identity.
func (i *Issuer) ServingCertificate(dnsNames []string, lifetime time.Duration) (*tls.Certificate, error) {
	if len(dnsNames) == 0 || lifetime <= 0 {
		return nil, fmt.Errorf("a serving certificate needs DNS names and a positive lifetime")
	}
	now := i.clock.Now()
	inter, err := i.intermediate(now)
	if err != nil {
		return nil, err
	}
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
		DNSNames:              dnsNames,
		NotBefore:             clampNotBefore(now.Add(-ClockSkew), inter.Cert),
		NotAfter:              clampNotAfter(now.Add(lifetime), inter.Cert),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter.Cert, &key.PublicKey, inter.key)
	if err != nil {
		return nil, fmt.Errorf("signing the serving certificate for %v: %w", dnsNames, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, inter.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}
