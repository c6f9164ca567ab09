// Package testpki makes throwaway certificate authorities and SPIFFE
// workload certificates for tests, written as the files gRPC's
// file_watcher certificate provider reads.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/certs/builtin"
)

// CA is a self-signed root valid for an hour.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
	PEM  []byte
}

var serial atomic.Int64

// NewCA makes a root.
func NewCA(t testing.TB) *CA {
	t.Helper()
	kp, err := builtin.NewCA("weft test root", time.Now(), time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{cert: kp.Cert, key: kp.Signer(), PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kp.Cert.Raw})}
}

// Files are a workload's certificate, key and the root, on disk.
type Files struct{ Cert, Key, CA string }

// Issue writes a certificate for the SPIFFE ID id into dir.
func (ca *CA) Issue(t testing.TB, dir, id string) Files {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs:        []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, filepath.Base(u.Path))
	f := Files{Cert: base + ".crt", Key: base + ".key", CA: filepath.Join(dir, "ca.crt")}
	for path, data := range map[string][]byte{
		f.Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		f.Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
		f.CA:   ca.PEM,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// IssueDNS writes a TLS server certificate for dnsNames into dir.
func (ca *CA) IssueDNS(t testing.TB, dir string, dnsNames []string) Files {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames:    dnsNames,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := Files{Cert: filepath.Join(dir, "server.crt"), Key: filepath.Join(dir, "server.key"), CA: filepath.Join(dir, "ca.crt")}
	for path, data := range map[string][]byte{
		f.Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		f.Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
		f.CA:   ca.PEM,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// GRPCBootstrap is a gRPC xDS bootstrap for node id with the given node
// metadata, talking plaintext to the xDS server at xdsAddr, with a
// file_watcher certificate provider named provider for files, and the
// server listener name template.
func GRPCBootstrap(xdsAddr, id string, metadata map[string]any, provider string, f Files, listenerTemplate string) map[string]any {
	return map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      xdsAddr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []any{"xds_v3"},
		}},
		"node": map[string]any{"id": id, "locality": map[string]any{}, "metadata": metadata},
		"certificate_providers": map[string]any{provider: map[string]any{
			"plugin_name": "file_watcher",
			"config":      map[string]any{"certificate_file": f.Cert, "private_key_file": f.Key, "ca_certificate_file": f.CA, "refresh_interval": "600s"},
		}},
		"server_listener_resource_name_template": listenerTemplate,
	}
}
