package builtin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"time"
)

// ServingCertificate issues a TLS server certificate for dnsNames from the
// intermediate: weft-controller's own xDS endpoint, which sidecars verify
// against the mesh root (the weft-root-ca ConfigMap). The chain carries the
// intermediate.
func (i *Issuer) ServingCertificate(dnsNames []string, lifetime time.Duration) (*tls.Certificate, error) {
	now := i.clock.Now()
	inter, err := i.intermediate(now)
	if err != nil {
		return nil, err
	}
	c, err := SignServing(inter, dnsNames, now, lifetime)
	if err != nil {
		return nil, err
	}
	c.Certificate = append(c.Certificate, inter.Cert.Raw)
	return c, nil
}

// SignServing signs a TLS server certificate for dnsNames with a new
// ECDSA P-256 key, never outliving issuer. It carries DNS names only and
// serverAuth only, so it can never pass for a workload identity. The chain
// holds the leaf alone; callers add intermediates.
func SignServing(issuer *KeyPair, dnsNames []string, now time.Time, lifetime time.Duration) (*tls.Certificate, error) {
	if len(dnsNames) == 0 || lifetime <= 0 {
		return nil, fmt.Errorf("a serving certificate needs DNS names and a positive lifetime")
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
		Subject:               pkix.Name{CommonName: dnsNames[0]},
		DNSNames:              dnsNames,
		NotBefore:             clampNotBefore(now.Add(-ClockSkew), issuer.Cert),
		NotAfter:              clampNotAfter(now.Add(lifetime), issuer.Cert),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer.Cert, &key.PublicKey, issuer.key)
	if err != nil {
		return nil, fmt.Errorf("signing the serving certificate for %v: %w", dnsNames, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
