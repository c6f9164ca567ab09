package certagent

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/weftmesh/weft/certs"
)

// Material is one workload's key material as PEM: its certificate chain
// (leaf first), the chain's private key, and the trust bundle it validates
// peers with. Printing it never shows the key.
type Material struct {
	Chain, Key, Bundle []byte
}

// Equal reports whether a and b hold the same bytes.
func (m Material) Equal(o Material) bool {
	return bytes.Equal(m.Chain, o.Chain) && bytes.Equal(m.Key, o.Key) && bytes.Equal(m.Bundle, o.Bundle)
}

// Check verifies what gRPC's file_watcher will verify, and a little more,
// before anything reaches the disk: the chain parses, the key belongs to
// its leaf, the leaf is the expected workload's (namespace and service
// account; the agent does not know the trust domain), and the bundle holds
// at least one certificate. Errors name the problem, never key content.
func (m Material) Check(namespace, serviceAccount string) (*x509.Certificate, error) {
	chain, err := certs.ParseCertificatesPEM(m.Chain)
	if err != nil {
		return nil, fmt.Errorf("the certificate chain does not parse: %w", err)
	}
	if len(chain) == 0 {
		return nil, errors.New("the certificate chain is empty")
	}
	if _, err := tls.X509KeyPair(m.Chain, m.Key); err != nil {
		// X509KeyPair's errors describe the mismatch, not the key.
		return nil, fmt.Errorf("the private key does not match the certificate: %v", err)
	}
	leaf := chain[0]
	id, err := certs.IdentityFromCertificate(leaf)
	if err != nil {
		return nil, fmt.Errorf("the certificate carries no workload identity: %w", err)
	}
	if id.Namespace != namespace || id.ServiceAccount != serviceAccount {
		return nil, fmt.Errorf("the certificate is %s's, not namespace %s service account %s's", id, namespace, serviceAccount)
	}
	roots, err := certs.ParseCertificatesPEM(m.Bundle)
	if err != nil {
		return nil, fmt.Errorf("the trust bundle does not parse: %w", err)
	}
	if len(roots) == 0 {
		return nil, errors.New("the trust bundle is empty: peers could not be verified")
	}
	return leaf, nil
}

func (m Material) String() string {
	leaf := "unparsable"
	if c, err := certs.ParseCertificatesPEM(m.Chain); err == nil && len(c) > 0 {
		leaf = fmt.Sprintf("serial %s notAfter %s", c[0].SerialNumber, c[0].NotAfter.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("Material{leaf %s, key=<redacted>, bundle %d bytes}", leaf, len(m.Bundle))
}

// GoString keeps %#v from printing the key.
func (m Material) GoString() string { return m.String() }

// Format keeps every verb from reaching the key.
func (m Material) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(m.String())) }
