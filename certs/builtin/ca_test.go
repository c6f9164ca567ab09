package builtin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/certs"
)

var (
	t0   = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cart = certs.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}
)

func newTestIssuer(t testing.TB, clk *clocktesting.FakeClock) *Issuer {
	t.Helper()
	root, err := NewRoot("cluster.local", clk.Now(), DefaultRootLifetime)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewIssuer(root, Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func signFor(t testing.TB, iss *Issuer, id certs.Identity, lifetime time.Duration) (*certs.Issued, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := certs.NewWorkloadKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(id, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := iss.Sign(context.Background(), certs.SignRequest{Identity: id, CSR: csr, Lifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	return got, key
}

func TestSignedLeafIsAWorkloadCertificate(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	iss := newTestIssuer(t, clk)
	issued, key := signFor(t, iss, cart, 24*time.Hour)

	if len(issued.Chain) != 2 || len(issued.Roots) != 1 {
		t.Fatalf("chain %d certs, roots %d; want leaf+intermediate and one root", len(issued.Chain), len(issued.Roots))
	}
	leaf, inter, root := issued.Chain[0], issued.Chain[1], issued.Roots[0]

	// The chain verifies against the root alone, for both TLS directions.
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	inters.AddCert(inter)
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{eku}})
		if err != nil {
			t.Fatalf("verify for %v: %v", eku, err)
		}
		if len(chains) != 1 || len(chains[0]) != 3 || !chains[0][2].Equal(root) {
			t.Fatalf("verified chain = %v, want leaf → intermediate → root", chains)
		}
	}
	// Without the intermediate it does not verify: the root never signs leaves.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: t0}); err == nil {
		t.Fatal("leaf verified without its intermediate")
	}

	// SPIFFE URI SAN only.
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Fatalf("URI SANs = %v", leaf.URIs)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.Subject.String() != "" {
		t.Fatalf("leaf has extra names: subject %q, DNS %v, IP %v, email %v", leaf.Subject, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	// Key usages.
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage = %b, want digitalSignature only", leaf.KeyUsage)
	}
	if fmt.Sprint(leaf.ExtKeyUsage) != fmt.Sprint([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ext key usage = %v, want serverAuth, clientAuth", leaf.ExtKeyUsage)
	}
	if !leaf.BasicConstraintsValid || leaf.IsCA {
		t.Error("leaf must carry CA:FALSE")
	}
	// Validity: backdated for clock skew, lifetime as asked.
	if !leaf.NotBefore.Equal(t0.Add(-ClockSkew)) || !leaf.NotAfter.Equal(t0.Add(24*time.Hour)) {
		t.Errorf("validity %s – %s, want %s – %s", leaf.NotBefore, leaf.NotAfter, t0.Add(-ClockSkew), t0.Add(24*time.Hour))
	}
	// The leaf carries the requester's key, P-256.
	if !key.PublicKey.Equal(leaf.PublicKey) {
		t.Error("leaf does not carry the CSR's public key")
	}
	if err := issued.Verify(cart, key.Public(), issued.Roots, t0); err != nil {
		t.Errorf("Issued.Verify: %v", err)
	}
	// Intermediate: CA for leaves only; root: self-signed P-256 CA.
	if !inter.IsCA || !inter.MaxPathLenZero || inter.MaxPathLen != 0 || inter.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("intermediate: IsCA %v MaxPathLen %d/%v usage %b", inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero, inter.KeyUsage)
	}
	if err := root.CheckSignatureFrom(root); err != nil || !root.IsCA {
		t.Errorf("root is not a self-signed CA: %v", err)
	}
	if pk, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || pk.Curve != elliptic.P256() {
		t.Errorf("root key %T, want ECDSA P-256", root.PublicKey)
	}
	// A leaf of another identity is not accepted as this one.
	other := certs.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "other"}
	if err := issued.Verify(other, key.Public(), issued.Roots, t0); err == nil || !strings.Contains(err.Error(), "want spiffe://cluster.local/ns/shop/sa/other") {
		t.Errorf("Verify for another identity: %v", err)
	}
	// An expired leaf does not verify.
	if err := issued.Verify(cart, key.Public(), issued.Roots, t0.Add(25*time.Hour)); err == nil {
		t.Error("Verify after expiry succeeded")
	}
}

func TestSignRejectsBadCSRs(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	iss := newTestIssuer(t, clk)
	key, _ := certs.NewWorkloadKey()
	other := certs.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "admin"}
	wrongSAN, _ := certs.NewCSR(other, key)
	dns, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"evil.example.com"}}, key)
	u1, u2 := cart.URL(), other.URL()
	twoURIs, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u1, u2}}, key)
	noSAN, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	good, _ := certs.NewCSR(cart, key)
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-3] ^= 0xff // corrupt the signature
	smallRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	weak, _ := certs.NewCSR(cart, smallRSA)

	cases := []struct {
		name string
		csr  []byte
		want string
	}{
		{"another identity's URI", wrongSAN, "asks for URI SAN spiffe://cluster.local/ns/shop/sa/admin"},
		{"DNS SAN", dns, "DNS, email or IP SANs"},
		{"two URIs", twoURIs, "2 URI SANs"},
		{"bad signature", tampered, "bad self-signature"},
		{"weak RSA key", weak, "RSA key of 1024 bits"},
		{"not a CSR", []byte("hello"), "parsing the CSR"},
	}
	for _, c := range cases {
		_, err := iss.Sign(context.Background(), certs.SignRequest{Identity: cart, CSR: c.csr, Lifetime: time.Hour})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	// A CSR without SANs is fine: the identity comes from the request.
	got, err := iss.Sign(context.Background(), certs.SignRequest{Identity: cart, CSR: noSAN, Lifetime: time.Hour})
	if err != nil || got.Leaf().URIs[0].String() != cart.String() {
		t.Fatalf("CSR without SAN: %v", err)
	}
	if _, err := iss.Sign(context.Background(), certs.SignRequest{Identity: certs.Identity{TrustDomain: "cluster.local"}, CSR: noSAN, Lifetime: time.Hour}); err == nil {
		t.Error("signed for an invalid identity")
	}
}

func TestIntermediateRenewsAtHalfLifeAndNeverOutlivesRoot(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	root, err := NewRoot("cluster.local", t0, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewIssuer(root, Options{Clock: clk, IntermediateLifetime: 10 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	first := iss.Intermediate()
	clk.Step(4 * 24 * time.Hour)
	signFor(t, iss, cart, time.Hour)
	if !iss.Intermediate().Equal(first) {
		t.Fatal("intermediate replaced before half of its life")
	}
	clk.Step(24*time.Hour + time.Minute) // past half of 10 days (+ backdating)
	issued, _ := signFor(t, iss, cart, time.Hour)
	second := iss.Intermediate()
	if second.Equal(first) || !issued.Chain[1].Equal(second) {
		t.Fatal("intermediate not renewed after half of its life")
	}
	// A leaf never outlives its intermediate.
	issued, _ = signFor(t, iss, cart, 12*24*time.Hour)
	if !issued.Chain[1].Equal(second) || !issued.Leaf().NotAfter.Equal(second.NotAfter) {
		t.Fatalf("12-day leaf valid until %s, intermediate until %s", issued.Leaf().NotAfter, second.NotAfter)
	}
	// Near the end of the root, leaves and intermediates are cut to the
	// root's expiry instead of outliving it.
	clk.SetTime(root.Cert.NotAfter.Add(-48 * time.Hour))
	issued, _ = signFor(t, iss, cart, 7*24*time.Hour)
	if !issued.Leaf().NotAfter.Equal(root.Cert.NotAfter) || issued.Chain[1].NotAfter.After(root.Cert.NotAfter) {
		t.Fatalf("leaf until %s, intermediate until %s; root until %s", issued.Leaf().NotAfter, issued.Chain[1].NotAfter, root.Cert.NotAfter)
	}
	clk.SetTime(root.Cert.NotAfter)
	key, _ := certs.NewWorkloadKey()
	csr, _ := certs.NewCSR(cart, key)
	if _, err := iss.Sign(context.Background(), certs.SignRequest{Identity: cart, CSR: csr, Lifetime: time.Hour}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("signing after the root expired: %v", err)
	}
}

func TestKeyPairNeverPrintsItsKey(t *testing.T) {
	root, err := NewRoot("cluster.local", t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := certs.EncodeKeyPEM(root.Signer())
	d := root.Signer().(*ecdsa.PrivateKey).D.String()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, root)
		if strings.Contains(out, d) || strings.Contains(out, string(keyPEM[30:60])) || !strings.Contains(out, "redacted") {
			t.Errorf("%s printed %q", verb, out)
		}
	}
	// Structs that embed it print redacted too.
	if out := fmt.Sprintf("%+v", struct{ K *KeyPair }{root}); strings.Contains(out, d) {
		t.Errorf("embedding struct printed the key: %q", out)
	}
	if _, err := NewRoot("Not A Domain", t0, time.Hour); err == nil {
		t.Error("root for an invalid trust domain")
	}
	other, _ := NewRoot("cluster.local", t0, time.Hour)
	if _, err := NewKeyPair(root.Cert, other.Signer()); err == nil || strings.Contains(err.Error(), d) {
		t.Errorf("mismatched key: %v", err)
	}
}

// BenchmarkSign measures one workload certificate from the built-in CA:
// CSR parse and signature check, and an ECDSA P-256 leaf signature (the
// workload key is made outside the loop, as the Manager makes it before
// calling Sign).
func BenchmarkSign(b *testing.B) {
	clk := clocktesting.NewFakeClock(t0)
	iss := newTestIssuer(b, clk)
	key, _ := certs.NewWorkloadKey()
	csr, err := certs.NewCSR(cart, key)
	if err != nil {
		b.Fatal(err)
	}
	req := certs.SignRequest{Identity: cart, CSR: csr, Lifetime: 24 * time.Hour}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := iss.Sign(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeyCSRSign is the whole cost of one certificate: key, CSR, sign.
func BenchmarkKeyCSRSign(b *testing.B) {
	clk := clocktesting.NewFakeClock(t0)
	iss := newTestIssuer(b, clk)
	b.ReportAllocs()
	for b.Loop() {
		key, _ := certs.NewWorkloadKey()
		csr, _ := certs.NewCSR(cart, key)
		if _, err := iss.Sign(context.Background(), certs.SignRequest{Identity: cart, CSR: csr, Lifetime: 24 * time.Hour}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestServingCertificate(t *testing.T) {
	root, err := NewRoot("cluster.local", time.Now(), time.Hour*24)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewIssuer(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := iss.ServingCertificate([]string{"weft-controller.weft-system.svc"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	inter := x509.NewCertPool()
	inter.AddCert(iss.Intermediate())
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "weft-controller.weft-system.svc", Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("serving certificate does not verify: %v", err)
	}
	if len(c.Leaf.URIs) != 0 {
		t.Fatal("a serving certificate must not carry a workload identity")
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "weft-controller.weft-system.svc", Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("a serving certificate must not be usable as a client certificate")
	}
}
