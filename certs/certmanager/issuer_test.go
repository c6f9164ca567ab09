package certmanager_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/certs/certmanager"
	"github.com/weftmesh/weft/internal/testing/testenv"
)

// These tests run against a real API server with cert-manager's real CRDs,
// and cert-manager's own controllers (issuers, certificaterequests-approver,
// certificaterequests-issuer-ca from the cert-manager v1.21.2 module) in a
// separate process built by hack/build-cert-manager.sh. Nothing here signs
// or approves on cert-manager's behalf, except where a test plays an
// external approver (approver-policy) to deny a request.

const (
	// meshNS runs the standard cert-manager setup: the internal approver
	// approves every request, the CA issuer signs.
	meshNS = "weft-system"
	// policyNS runs cert-manager the way it runs beside approver-policy:
	// the internal approver is disabled, so requests wait for an external
	// approver — played by TestDenied.
	policyNS = "policy"
)

var (
	env *testenv.Env
	wc  client.WithWatch
	id  = certs.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if env, err = testenv.New(testenv.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, "starting the test API server:", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if wc, err = client.NewWithWatch(env.Config, client.Options{Scheme: testenv.Scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	for _, ns := range []string{meshNS, policyNS} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	build := exec.Command("bash", filepath.Join(env.Root, "hack", "build-cert-manager.sh"))
	build.Env = append(os.Environ(), "WEFT_BIN_DIR="+env.BinDir)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "hack/build-cert-manager.sh: %v\n%s", err, out)
		return 1
	}
	logDir, _ := os.MkdirTemp("", "weft-cert-manager-")
	defer os.RemoveAll(logDir)
	stops := []func(){}
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	for _, p := range []struct{ ns, controllers string }{
		{meshNS, "issuers,certificaterequests-approver,certificaterequests-issuer-ca"},
		{policyNS, "issuers,certificaterequests-issuer-ca"},
	} {
		stop, err := startCertManager(logDir, p.ns, p.controllers)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		stops = append(stops, stop)
	}
	code := m.Run()
	if code != 0 {
		// Show what cert-manager said.
		logs, _ := filepath.Glob(filepath.Join(logDir, "*.log"))
		for _, l := range logs {
			data, _ := os.ReadFile(l)
			if len(data) > 8000 {
				data = data[len(data)-8000:]
			}
			fmt.Fprintf(os.Stderr, "--- %s (tail) ---\n%s\n", filepath.Base(l), data)
		}
	}
	return code
}

// startCertManager runs bin/cert-manager-controller for one namespace.
func startCertManager(logDir, ns, controllers string) (stop func(), err error) {
	logf, err := os.Create(filepath.Join(logDir, ns+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(env.BinDir, "cert-manager-controller"),
		"--kubeconfig", env.Kubeconfig,
		"--namespace", ns,
		"--controllers", controllers,
		"--leader-elect=false",
		"-v=2",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting cert-manager-controller: %w", err)
	}
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	}, nil
}

// newCA makes a CA key pair the way an operator would with openssl, stores
// it as the Secret a cert-manager CA Issuer reads, creates the Issuer and
// waits until cert-manager's issuers controller marks it Ready.
func newCA(t *testing.T, ctx context.Context, ns, name string) *x509.Certificate {
	t.Helper()
	kp, err := builtin.NewCA("test mesh CA "+name, time.Now(), 24*time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	ca := kp.Cert
	keyPEM, _ := certs.EncodeKeyPEM(kp.Signer())
	certPEM := certs.EncodeCertificatesPEM([]*x509.Certificate{ca})
	if err := env.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-key"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM},
	}); err != nil {
		t.Fatal(err)
	}
	createIssuer(t, ctx, ns, name, name+"-key")
	waitIssuerReady(t, ctx, ns, name)
	return ca
}

func createIssuer(t *testing.T, ctx context.Context, ns, name, secret string) {
	t.Helper()
	if err := env.Client.Create(ctx, &cmapi.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: secret}}},
	}); err != nil {
		t.Fatal(err)
	}
}

func waitIssuerReady(t *testing.T, ctx context.Context, ns, name string) {
	t.Helper()
	for {
		var iss cmapi.Issuer
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &iss); err != nil {
			t.Fatal(err)
		}
		for _, c := range iss.Status.Conditions {
			if c.Type == cmapi.IssuerConditionReady && c.Status == cmmeta.ConditionTrue {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Issuer %s/%s never became Ready: %+v", ns, name, iss.Status.Conditions)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// newIssuer makes weft's issuer for a cert-manager Issuer, pinned to
// anchors (MeshConfig's trustBundle); with none, to a CA of its own (for
// tests where cert-manager answers no certificate).
func newIssuer(t *testing.T, ns, issuer string, timeout time.Duration, anchors ...*x509.Certificate) *certmanager.Issuer {
	t.Helper()
	if len(anchors) == 0 {
		kp, err := builtin.NewCA("unused anchor", time.Now(), time.Hour, false)
		if err != nil {
			t.Fatal(err)
		}
		anchors = []*x509.Certificate{kp.Cert}
	}
	iss, err := certmanager.New(certmanager.Options{Client: wc, Namespace: ns, IssuerRef: cmmeta.IssuerReference{Name: issuer}, Timeout: timeout,
		TrustAnchors: anchors, TrustSource: "Secret " + ns + "/" + issuer + "-key key ca.crt"})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func newRequest(t *testing.T, lifetime time.Duration) (certs.SignRequest, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := certs.NewWorkloadKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(id, key)
	if err != nil {
		t.Fatal(err)
	}
	return certs.SignRequest{Identity: id, CSR: csr, Lifetime: lifetime}, key
}

// requestsLeft lists weft's CertificateRequests in ns.
func requestsLeft(t *testing.T, ctx context.Context, ns string) []string {
	t.Helper()
	var list cmapi.CertificateRequestList
	if err := env.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{certmanager.ManagedByLabel: "weft"}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, cr := range list.Items {
		if cr.DeletionTimestamp == nil {
			names = append(names, cr.Name)
		}
	}
	return names
}

func TestIssuesThroughCertManagerCAIssuer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ca := newCA(t, ctx, meshNS, "mesh-ca")
	iss := newIssuer(t, meshNS, "mesh-ca", 30*time.Second, ca)

	req, key := newRequest(t, 3*time.Hour)
	start := time.Now()
	issued, err := iss.Sign(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cert-manager answered in %s", time.Since(start).Round(time.Millisecond))

	leaf := issued.Leaf()
	// The chain verifies against the test's CA, for both TLS directions.
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range issued.Chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("chain does not verify against the CA: %v", err)
	}
	// status.ca is reported as the root.
	if len(issued.Roots) != 1 || !issued.Roots[0].Equal(ca) {
		t.Fatalf("roots = %d certs, want the CA", len(issued.Roots))
	}
	if err := issued.Verify(id, key.Public(), issued.Roots, time.Now()); err != nil {
		t.Fatal(err)
	}
	// SPIFFE URI SAN only, our key, usages as asked, lifetime as asked.
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() || len(leaf.DNSNames) != 0 {
		t.Fatalf("SANs: URIs %v DNS %v", leaf.URIs, leaf.DNSNames)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		t.Fatal("leaf does not carry the CSR's key")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.IsCA {
		t.Fatalf("key usage %b, IsCA %v", leaf.KeyUsage, leaf.IsCA)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 3*time.Hour-time.Minute || got > 3*time.Hour+time.Minute {
		t.Fatalf("lifetime %s, want 3h", got)
	}
	if leaf.NotAfter.Before(start.Add(3*time.Hour-time.Minute)) || leaf.NotAfter.After(time.Now().Add(3*time.Hour+time.Minute)) {
		t.Fatalf("NotAfter %s, want about now+3h", leaf.NotAfter)
	}
	// The request is gone: no CertificateRequest piles up per workload.
	if left := requestsLeft(t, ctx, meshNS); len(left) != 0 {
		t.Fatalf("requests left behind: %v", left)
	}

	t.Run("through the Manager", func(t *testing.T) {
		m, err := certs.NewManager(certs.ManagerOptions{Issuer: iss, Lifetime: 2 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Stop()
		events := make(chan certs.Event, 4)
		m.Subscribe(func(ev certs.Event) { events <- ev })
		if err := m.Acquire(id); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-events:
			if ev.Secret == nil || !ev.Secret.Roots[0].Equal(ca) {
				t.Fatalf("event %v", ev.Secret)
			}
			if d := ev.Secret.RenewAt.Sub(ev.Secret.IssuedAt); d < 54*time.Minute || d > 66*time.Minute {
				t.Fatalf("renews after %s, want about half of 2h", d)
			}
		case <-ctx.Done():
			t.Fatal("no secret from the Manager")
		}
	})
}

func TestDenied(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	policyCA := newCA(t, ctx, policyNS, "policy-ca")
	iss := newIssuer(t, policyNS, "policy-ca", 30*time.Second, policyCA)

	// The external approver: deny every weft request it sees, through the
	// status subresource, as approver-policy and `cmctl deny` do.
	const msg = "denied by test policy: shop/cart may not use policy-ca"
	denied := make(chan string, 1)
	go func() {
		for ctx.Err() == nil {
			var list cmapi.CertificateRequestList
			_ = env.Client.List(ctx, &list, client.InNamespace(policyNS))
			for i := range list.Items {
				cr := &list.Items[i]
				if len(cr.Status.Conditions) > 0 && hasCondition(cr, cmapi.CertificateRequestConditionDenied) {
					continue
				}
				cr.Status.Conditions = append(cr.Status.Conditions, cmapi.CertificateRequestCondition{
					Type: cmapi.CertificateRequestConditionDenied, Status: cmmeta.ConditionTrue,
					Reason: "policy.cert-manager.io", Message: msg, LastTransitionTime: &metav1.Time{Time: time.Now()},
				})
				if err := env.Client.Status().Update(ctx, cr); err == nil {
					denied <- cr.Name
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	req, _ := newRequest(t, time.Hour)
	_, err := iss.Sign(ctx, req)
	var rerr *certmanager.RequestError
	if !errors.As(err, &rerr) {
		t.Fatalf("err = %v, want a RequestError", err)
	}
	name := <-denied
	if rerr.Reason != "Denied" || rerr.Message != msg || rerr.Request != policyNS+"/"+name {
		t.Fatalf("RequestError = %+v, want Denied with the approver's message, naming %s", rerr, name)
	}
	if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "Issuer policy-ca") {
		t.Fatalf("error %q does not name the request and issuer", err)
	}
	waitGone(t, ctx, policyNS, name)
}

func hasCondition(cr *cmapi.CertificateRequest, typ cmapi.CertificateRequestConditionType) bool {
	for _, c := range cr.Status.Conditions {
		if c.Type == typ {
			return true
		}
	}
	return false
}

func waitGone(t *testing.T, ctx context.Context, ns, name string) {
	t.Helper()
	for {
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cmapi.CertificateRequest{})
		if apierrors.IsNotFound(err) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("CertificateRequest %s/%s not deleted", ns, name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFailed: cert-manager's CA issuer refuses a CSR that asks to be a CA
// while the request says isCA: false, and marks the request Failed.
func TestFailed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	strict := newCA(t, ctx, meshNS, "strict-ca")
	iss := newIssuer(t, meshNS, "strict-ca", 30*time.Second, strict)

	key, _ := certs.NewWorkloadKey()
	bc, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs:            []*url.URL{id.URL()},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = iss.Sign(ctx, certs.SignRequest{Identity: id, CSR: csr, Lifetime: time.Hour})
	var rerr *certmanager.RequestError
	if !errors.As(err, &rerr) {
		t.Fatalf("err = %v, want a RequestError", err)
	}
	if rerr.Reason != "Failed" || !strings.Contains(rerr.Message, "IsCA true does not match expected value false") || !strings.HasPrefix(rerr.Request, meshNS+"/weft-shop-cart-") {
		t.Fatalf("RequestError = %+v", rerr)
	}
	waitGone(t, ctx, meshNS, strings.TrimPrefix(rerr.Request, meshNS+"/"))
}

// TestTimeout: an Issuer whose CA Secret is missing never becomes Ready, so
// cert-manager leaves the request Pending; Sign gives up at its deadline,
// names the request and says why it waited.
func TestTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	createIssuer(t, ctx, meshNS, "broken-ca", "no-such-secret")
	iss := newIssuer(t, meshNS, "broken-ca", 3*time.Second)

	req, _ := newRequest(t, time.Hour)
	start := time.Now()
	_, err := iss.Sign(ctx, req)
	var terr *certmanager.TimeoutError
	if !errors.As(err, &terr) {
		t.Fatalf("err = %v, want a TimeoutError", err)
	}
	if took := time.Since(start); took < 3*time.Second || took > 10*time.Second {
		t.Fatalf("gave up after %s, want the 3s deadline", took)
	}
	if !strings.HasPrefix(terr.Request, meshNS+"/weft-shop-cart-") || !strings.Contains(err.Error(), "Issuer broken-ca") ||
		!strings.Contains(terr.LastCondition, "Ready=False Pending: Referenced issuer does not have a Ready status condition") {
		t.Fatalf("timeout error %q: want the request, the issuer and cert-manager's Pending reason", err)
	}
	t.Log(err)
	waitGone(t, ctx, meshNS, strings.TrimPrefix(terr.Request, meshNS+"/"))

	// The caller's own cancellation is not reported as cert-manager's
	// timeout.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := iss.Sign(cctx, req); err == nil || errors.As(err, &terr) {
		t.Fatalf("cancelled Sign: err = %v", err)
	}
}

func TestRefusesForeignCSRsBeforeAskingCertManager(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	iss := newIssuer(t, meshNS, "mesh-ca", 5*time.Second)
	key, _ := certs.NewWorkloadKey()
	other := certs.Identity{TrustDomain: "cluster.local", Namespace: "kube-system", ServiceAccount: "admin"}
	csr, _ := certs.NewCSR(other, key)
	_, err := iss.Sign(ctx, certs.SignRequest{Identity: id, CSR: csr, Lifetime: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "asks for URI SAN spiffe://cluster.local/ns/kube-system/sa/admin") {
		t.Fatalf("err = %v", err)
	}
	if left := requestsLeft(t, ctx, meshNS); len(left) != 0 {
		t.Fatalf("a request was created: %v", left)
	}
	if _, err := certmanager.New(certmanager.Options{Client: wc}); err == nil {
		t.Fatal("New without issuerRef.name succeeded")
	}
	if _, err := certmanager.New(certmanager.Options{Client: wc, IssuerRef: cmmeta.IssuerReference{Name: "mesh-ca"}}); err == nil || !strings.Contains(err.Error(), "spec.certificates.certManager.trustBundle") {
		t.Fatalf("New without trust anchors: %v; want it refused naming the field", err)
	}
}

// TestTrustsOnlyThePinnedCA (issue 13, item 6): weft trusts cert-manager's
// certificates through the CAs MeshConfig pins, never through the roots
// the issuer reports. The mesh's CA Issuer signs with an intermediate
// under a corporate root that other teams' issuers share; cert-manager
// reports that root. Pinned to the mesh intermediate, the certificate is
// served with the intermediate as its only root, so a certificate with
// the same SPIFFE ID from another team's intermediate does not verify;
// pinned to a CA the issuer does not use, Sign refuses the answer naming
// the field and the fix.
func TestTrustsOnlyThePinnedCA(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	corp, err := builtin.NewCA("corporate root", time.Now(), 24*time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	meshInter, err := builtin.NewIntermediate(corp, time.Now(), 12*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherTeam, err := builtin.NewIntermediate(corp, time.Now(), 12*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := certs.EncodeKeyPEM(meshInter.Signer())
	if err := env.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: meshNS, Name: "mesh-inter-key"},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": certs.EncodeCertificatesPEM([]*x509.Certificate{meshInter.Cert, corp.Cert}), "tls.key": keyPEM,
			"ca.crt": certs.EncodeCertificatesPEM([]*x509.Certificate{corp.Cert})},
	}); err != nil {
		t.Fatal(err)
	}
	createIssuer(t, ctx, meshNS, "mesh-inter", "mesh-inter-key")
	waitIssuerReady(t, ctx, meshNS, "mesh-inter")

	req, key := newRequest(t, time.Hour)
	issued, err := newIssuer(t, meshNS, "mesh-inter", 30*time.Second, meshInter.Cert).Sign(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(issued.Roots) != 1 || !issued.Roots[0].Equal(meshInter.Cert) {
		var got []string
		for _, r := range issued.Roots {
			got = append(got, r.Subject.String())
		}
		t.Fatalf("roots %v; want only the pinned mesh intermediate, not what cert-manager reported", got)
	}
	if err := issued.Verify(id, key.Public(), issued.Roots, time.Now()); err != nil {
		t.Fatal(err)
	}
	// Another team's certificate with the same SPIFFE ID, under the same
	// corporate root, does not verify against what weft now trusts.
	forged, err := builtin.SignLeaf(otherTeam, id, key.Public(), time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range issued.Roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	inter.AddCert(otherTeam.Cert)
	if _, err := forged.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("another team's certificate for the same identity verifies against the bundle weft serves")
	}

	// Pinned to a CA the issuer does not sign with: refused, naming why.
	unrelated := newCA(t, ctx, meshNS, "unrelated-ca")
	req, _ = newRequest(t, time.Hour)
	_, err = newIssuer(t, meshNS, "mesh-inter", 30*time.Second, unrelated).Sign(ctx, req)
	if err == nil || !strings.Contains(err.Error(), "does not chain to a CA of MeshConfig spec.certificates.certManager.trustBundle") ||
		!strings.Contains(err.Error(), "Secret weft-system/mesh-inter-key key ca.crt") || !strings.Contains(err.Error(), "Issuer mesh-inter") {
		t.Fatalf("a certificate outside the pinned bundle: %v; want it refused naming the field, the bundle and the issuer", err)
	}
	t.Log(err)
	if left := requestsLeft(t, ctx, meshNS); len(left) != 0 {
		t.Fatalf("requests left behind: %v", left)
	}
}
