package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Issuer signs workload certificates. Implementations: certs/builtin
// (weft's CA) and certs/certmanager (cert-manager CertificateRequests).
//
// Sign may block on the network (cert-manager); callers run it outside any
// lock and never from translation.
type Issuer interface {
	// Sign signs req.CSR for req.Identity. The returned leaf carries the
	// identity as its only URI SAN and the CSR's public key.
	Sign(ctx context.Context, req SignRequest) (*Issued, error)
	// Name is a short provider name for metrics and logs: "builtin",
	// "cert-manager".
	Name() string
}

// SignRequest asks an Issuer for a workload certificate.
type SignRequest struct {
	Identity Identity
	// CSR is a PKCS#10 certificate request in DER, signed by the workload
	// key (proof of possession). Its subject is ignored; its SANs must be
	// empty or exactly the identity.
	CSR []byte
	// Lifetime is the requested validity. Issuers may shorten it (never
	// beyond their own certificate's expiry).
	Lifetime time.Duration
}

// Issued is a signed workload certificate.
type Issued struct {
	// Chain is the leaf first, then the intermediates up to (not including)
	// a root.
	Chain []*x509.Certificate
	// Roots are the trust anchors the issuer reports for this chain. Empty
	// when the issuer does not know them (some cert-manager issuers leave
	// status.ca empty): the trust bundle must then be configured.
	Roots []*x509.Certificate
}

// Leaf is Chain[0].
func (i *Issued) Leaf() *x509.Certificate { return i.Chain[0] }

// ChainPEM encodes the chain, leaf first.
func (i *Issued) ChainPEM() []byte { return EncodeCertificatesPEM(i.Chain) }

// Verify checks that the chain is a valid workload certificate for id whose
// public key is pub: it chains to one of roots (when given) at now, for
// client and server authentication, and carries exactly the identity as
// URI SAN. Issuers' answers pass through it before they are served.
func (i *Issued) Verify(id Identity, pub crypto.PublicKey, roots []*x509.Certificate, now time.Time) error {
	if len(i.Chain) == 0 {
		return errors.New("issuer returned an empty certificate chain")
	}
	leaf := i.Leaf()
	got, err := IdentityFromCertificate(leaf)
	if err != nil {
		return fmt.Errorf("issued certificate: %w", err)
	}
	if got != id {
		return fmt.Errorf("issued certificate is for %s, want %s", got, id)
	}
	if leaf.IsCA {
		return errors.New("issued certificate is a CA certificate")
	}
	if k, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
		return errors.New("issued certificate does not carry the requested public key")
	}
	if len(roots) == 0 {
		return nil
	}
	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	for _, c := range i.Chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return fmt.Errorf("issued certificate for %s does not verify against the trust roots: %w", id, err)
	}
	return nil
}

// NewWorkloadKey makes the key of a workload certificate: ECDSA P-256.
func NewWorkloadKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCSR makes a DER CSR for id signed by key, with the identity as its only
// URI SAN and an empty subject (SPIFFE X509-SVIDs are identified by the URI
// SAN alone).
func NewCSR(id Identity, key crypto.Signer) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
}

// ParseCSR parses a DER CSR, checks its self-signature (proof that the
// requester holds the key), its key type and its SANs: none at all, or
// exactly id as URI. Issuers call it before signing.
func ParseCSR(der []byte, id Identity) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the CSR for %s: %w", id, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR for %s: bad self-signature: %w", id, err)
	}
	if err := checkWorkloadKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("CSR for %s: %w", id, err)
	}
	if len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses) > 0 {
		return nil, fmt.Errorf("CSR for %s asks for DNS, email or IP SANs; workload certificates carry only the SPIFFE ID", id)
	}
	switch len(csr.URIs) {
	case 0:
	case 1:
		if csr.URIs[0].String() != id.String() {
			return nil, fmt.Errorf("CSR asks for URI SAN %s, want %s", csr.URIs[0], id)
		}
	default:
		return nil, fmt.Errorf("CSR for %s asks for %d URI SANs, want only the SPIFFE ID", id, len(csr.URIs))
	}
	return csr, nil
}

func checkWorkloadKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA key on curve %s: want P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits: want at least 2048", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("unsupported public key type %T", pub)
	}
	return nil
}

// EncodeCertificatesPEM encodes certificates as consecutive CERTIFICATE
// blocks.
func EncodeCertificatesPEM(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// ParseCertificatesPEM parses every CERTIFICATE block, in order. Anything
// else in the input is an error, so a private key pasted into a certificate
// field is refused rather than ignored (and never echoed back).
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block of type %q where certificates were expected", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// EncodeKeyPEM encodes a private key as PKCS#8 "PRIVATE KEY" PEM.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding a %T private key: %w", key, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKeyPEM reads a PEM private key (PKCS#8, SEC 1 or PKCS#1)
// that can sign. Its errors describe the structure, never the key
// material, so they may be logged and shown in status.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("holds no PEM block")
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
		return nil, fmt.Errorf("holds a PEM block of type %q, want PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, errors.New("cannot be parsed as a private key")
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("holds a %T, which cannot sign", key)
	}
	return signer, nil
}
