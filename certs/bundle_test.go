package certs_test

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
)

func newRoot(t *testing.T) *x509.Certificate {
	t.Helper()
	r, err := builtin.NewRoot("cluster.local", t0, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return r.Cert
}

func fps(b certs.Bundle) string { return strings.Join(b.Fingerprints(), ",") }

func TestBundle(t *testing.T) {
	a, b := newRoot(t), newRoot(t)
	bundle, err := certs.NewBundle(a, b, a)
	if err != nil {
		t.Fatal(err)
	}
	if got := bundle.Roots(); len(got) != 2 || !got[0].Equal(a) || !got[1].Equal(b) {
		t.Fatalf("roots = %d, want a, b without the duplicate", len(got))
	}
	parsed, err := certs.ParseCertificatesPEM(bundle.PEM())
	if err != nil || len(parsed) != 2 {
		t.Fatalf("PEM round trip: %v", err)
	}
	if fps(bundle) != certs.Fingerprint(a)+","+certs.Fingerprint(b) {
		t.Fatal("fingerprints out of order")
	}
	// A leaf from either root verifies against the pool.
	clk := clocktesting.NewFakeClock(t0)
	iss := newCA(t, clk)
	two, _ := certs.NewBundle(a, iss.Root())
	s, _ := signWith(t, iss)
	if _, err := s.Leaf().Verify(x509.VerifyOptions{Roots: two.Pool(), Intermediates: poolOf(s.Chain[1:]), CurrentTime: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.NewBundle(s.Leaf()); err == nil {
		t.Fatal("a leaf was accepted as a trust anchor")
	}
}

func poolOf(cs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}

func signWith(t *testing.T, iss certs.Issuer) (*certs.Issued, error) {
	t.Helper()
	key, _ := certs.NewWorkloadKey()
	csr, _ := certs.NewCSR(cart, key)
	is, err := iss.Sign(t.Context(), certs.SignRequest{Identity: cart, CSR: csr, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return is, nil
}

func TestRootRotationIsStaged(t *testing.T) {
	oldRoot, newRoot := newRoot(t), newRoot(t)
	both := certs.Fingerprint(oldRoot) + "," + certs.Fingerprint(newRoot)
	r := certs.NewRotation(oldRoot)
	if r.Phase != certs.PhaseStable || fps(r.Bundle()) != certs.Fingerprint(oldRoot) || !r.Signing().Equal(oldRoot) {
		t.Fatalf("initial state %+v", r)
	}
	// Nothing to wait for when Stable.
	if next, waiting := r.Advance(certs.Acks{TrustNext: true, ServeFromNext: true, DroppedCurrent: true}); next.Phase != certs.PhaseStable || waiting != "" {
		t.Fatalf("Stable advanced to %s", next.Phase)
	}
	if _, err := r.Start(oldRoot); err == nil {
		t.Fatal("rotating to the same root was accepted")
	}

	// 1. AddNewRoot: both trusted, old still signs.
	r, err := r.Start(newRoot)
	if err != nil {
		t.Fatal(err)
	}
	if r.Phase != certs.PhaseAddNewRoot || fps(r.Bundle()) != both || !r.Signing().Equal(oldRoot) {
		t.Fatalf("AddNewRoot: phase %s, bundle %s, signing new %v", r.Phase, fps(r.Bundle()), r.Signing().Equal(newRoot))
	}
	if _, err := r.Start(newRoot); err == nil || !strings.Contains(err.Error(), "already in progress") {
		t.Fatalf("second Start: %v", err)
	}
	// It waits for every proxy to trust the new root; the other facts do
	// not count.
	same, waiting := r.Advance(certs.Acks{ServeFromNext: true, DroppedCurrent: true})
	if same.Phase != certs.PhaseAddNewRoot || !strings.Contains(waiting, "bundle with the new root") {
		t.Fatalf("advanced without TrustNext: %s %q", same.Phase, waiting)
	}

	// 2. SwitchSigning: new root signs, both still trusted.
	r, waiting = r.Advance(certs.Acks{TrustNext: true})
	if r.Phase != certs.PhaseSwitchSigning || waiting != "" || fps(r.Bundle()) != both || !r.Signing().Equal(newRoot) {
		t.Fatalf("SwitchSigning: phase %s bundle %s", r.Phase, fps(r.Bundle()))
	}
	if _, err := r.Abort(); err == nil || !strings.Contains(err.Error(), "let it finish") {
		t.Fatalf("Abort after switching: %v", err)
	}
	// Retirement of the old root waits until every proxy serves a
	// certificate from the new root.
	same, waiting = r.Advance(certs.Acks{TrustNext: true, DroppedCurrent: true})
	if same.Phase != certs.PhaseSwitchSigning || !strings.Contains(waiting, "certificate issued from the new root") {
		t.Fatalf("old root retired while old certificates are served: %s", same.Phase)
	}

	// 3. RetireOldRoot: only the new root in the bundle.
	r, _ = r.Advance(certs.Acks{TrustNext: true, ServeFromNext: true})
	if r.Phase != certs.PhaseRetireOldRoot || fps(r.Bundle()) != certs.Fingerprint(newRoot) || !r.Signing().Equal(newRoot) {
		t.Fatalf("RetireOldRoot: phase %s bundle %s", r.Phase, fps(r.Bundle()))
	}
	// The rotation is over only when every proxy ACKed the bundle without
	// the old root; until then a new rotation cannot start.
	same, waiting = r.Advance(certs.Acks{TrustNext: true, ServeFromNext: true})
	if same.Phase != certs.PhaseRetireOldRoot || !strings.Contains(waiting, "without the old root") {
		t.Fatalf("finished without the ACK: %s", same.Phase)
	}
	if _, err := same.Start(oldRoot); err == nil {
		t.Fatal("a new rotation started before the last one finished")
	}
	r, _ = r.Advance(certs.Acks{DroppedCurrent: true})
	if r.Phase != certs.PhaseStable || !r.Current.Equal(newRoot) || r.Next != nil || fps(r.Bundle()) != certs.Fingerprint(newRoot) {
		t.Fatalf("final state %+v", r)
	}
}

func TestRootRotationAbortBeforeSwitch(t *testing.T) {
	oldRoot, newRoot := newRoot(t), newRoot(t)
	r, _ := certs.NewRotation(oldRoot).Start(newRoot)
	r, err := r.Abort()
	if err != nil || r.Phase != certs.PhaseStable || !r.Current.Equal(oldRoot) || fps(r.Bundle()) != certs.Fingerprint(oldRoot) {
		t.Fatalf("abort: %+v %v", r, err)
	}
}

// TestRotationWithRealCertificates walks a rotation with the built-in CA and
// the Manager, checking at every phase that any two workloads, each holding
// whatever certificate it has at that moment and the phase's bundle,
// accept each other: the property that makes the rotation lossless.
func TestRotationWithRealCertificates(t *testing.T) {
	h := newHarness(t, 0.5)
	oldCA := h.iss.Issuer
	newCA := newCA(t, h.clk)
	_ = h.m.Acquire(cart)
	_ = h.m.Acquire(web)
	h.event()
	h.event()

	mutual := func(r certs.Rotation, served []*certs.Secret) {
		t.Helper()
		pool := r.Bundle().Pool()
		for _, s := range served {
			if _, err := s.Leaf().Verify(x509.VerifyOptions{Roots: pool, Intermediates: poolOf(s.Chain[1:]), CurrentTime: h.clk.Now()}); err != nil {
				t.Fatalf("phase %s: %s's certificate rejected by peers: %v", r.Phase, s.Identity, err)
			}
		}
	}
	servedFrom := func(root *x509.Certificate) bool {
		for _, s := range h.m.Secrets() {
			if !s.Roots[0].Equal(root) {
				return false
			}
		}
		return true
	}

	r := certs.NewRotation(oldCA.Root())
	mutual(r, h.m.Secrets())
	r, _ = r.Start(newCA.Root())
	mutual(r, h.m.Secrets())
	r, _ = r.Advance(certs.Acks{TrustNext: true})
	// Apply SwitchSigning: the Manager re-issues everything from the new root.
	h.m.SetIssuer(newCA)
	h.m.RenewAll()
	old := h.m.Secrets()[0]
	ev := h.event()
	// Mid-switch: one workload renewed, one not; both accepted.
	mutual(r, []*certs.Secret{old, ev.Secret})
	h.event()
	if !servedFrom(newCA.Root()) {
		t.Fatal("not every workload serves a certificate from the new root")
	}
	r, _ = r.Advance(certs.Acks{TrustNext: true, ServeFromNext: true})
	if r.Phase != certs.PhaseRetireOldRoot {
		t.Fatal(r.Phase)
	}
	mutual(r, h.m.Secrets())
	// An old-root certificate would now be rejected: that is why the
	// retirement waited for ServeFromNext.
	pool := r.Bundle().Pool()
	if _, err := old.Leaf().Verify(x509.VerifyOptions{Roots: pool, Intermediates: poolOf(old.Chain[1:]), CurrentTime: h.clk.Now()}); err == nil {
		t.Fatal("old-root certificate still accepted after retirement")
	}
	r, _ = r.Advance(certs.Acks{DroppedCurrent: true})
	if r.Phase != certs.PhaseStable {
		t.Fatal(r.Phase)
	}
}
