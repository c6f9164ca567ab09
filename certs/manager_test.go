package certs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/certs/builtin"
)

var (
	t0   = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cart = certs.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}
	web  = certs.Identity{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "web"}
)

// flakyIssuer is the built-in CA with a switch that makes it fail, and a
// count of calls.
type flakyIssuer struct {
	*builtin.Issuer
	fail  atomic.Bool
	calls atomic.Int32
	// wrongIdentity makes it sign for another identity than asked.
	wrongIdentity atomic.Bool
}

func (f *flakyIssuer) Sign(ctx context.Context, req certs.SignRequest) (*certs.Issued, error) {
	f.calls.Add(1)
	if f.fail.Load() {
		return nil, errors.New("issuer unavailable")
	}
	if f.wrongIdentity.Load() {
		key, _ := certs.NewWorkloadKey()
		csr, _ := certs.NewCSR(web, key)
		return f.Issuer.Sign(ctx, certs.SignRequest{Identity: web, CSR: csr, Lifetime: req.Lifetime})
	}
	return f.Issuer.Sign(ctx, req)
}

func newCA(t *testing.T, clk *clocktesting.FakeClock) *builtin.Issuer {
	t.Helper()
	root, err := builtin.NewRoot("cluster.local", clk.Now(), builtin.DefaultRootLifetime)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := builtin.NewIssuer(root, builtin.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

type harness struct {
	t      *testing.T
	clk    *clocktesting.FakeClock
	iss    *flakyIssuer
	m      *certs.Manager
	events chan certs.Event
}

func newHarness(t *testing.T, rnd float64, mutate ...func(*certs.ManagerOptions)) *harness {
	t.Helper()
	clk := clocktesting.NewFakeClock(t0)
	h := &harness{t: t, clk: clk, iss: &flakyIssuer{Issuer: newCA(t, clk)}, events: make(chan certs.Event, 100)}
	o := certs.ManagerOptions{Issuer: h.iss, Lifetime: 24 * time.Hour, Clock: clk, Rand: func() float64 { return rnd }}
	for _, f := range mutate {
		f(&o)
	}
	m, err := certs.NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	m.Subscribe(func(ev certs.Event) { h.events <- ev })
	t.Cleanup(m.Stop)
	return h
}

func (h *harness) event() certs.Event {
	h.t.Helper()
	select {
	case ev := <-h.events:
		return ev
	case <-time.After(10 * time.Second):
		h.t.Fatal("no certificate event within 10s")
		return certs.Event{}
	}
}

func (h *harness) noEvent() {
	h.t.Helper()
	select {
	case ev := <-h.events:
		h.t.Fatalf("unexpected event %v for %s", ev.Secret, ev.Identity)
	case <-time.After(50 * time.Millisecond):
	}
}

// settle waits until n renewal loops wait on the fake clock, so that a Step
// is seen by all of them.
func (h *harness) settle(n int) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.clk.Waiters() < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("%d timers waiting, want %d", h.clk.Waiters(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func verifySecret(t *testing.T, s *certs.Secret, id certs.Identity, root *x509.Certificate, now time.Time) {
	t.Helper()
	is := &certs.Issued{Chain: s.Chain, Roots: s.Roots}
	if err := is.Verify(id, s.PrivateKey().Public(), []*x509.Certificate{root}, now); err != nil {
		t.Fatal(err)
	}
	chain, err := certs.ParseCertificatesPEM(s.ChainPEM)
	if err != nil || len(chain) != len(s.Chain) || !chain[0].Equal(s.Leaf()) {
		t.Fatalf("ChainPEM does not match Chain: %v", err)
	}
	if !strings.Contains(string(s.PrivateKeyPEM()), "BEGIN PRIVATE KEY") {
		t.Fatal("no PEM private key")
	}
}

func TestManagerAcquireReleaseRefcounts(t *testing.T) {
	h := newHarness(t, 0.5)
	if err := h.m.Acquire(certs.Identity{TrustDomain: "cluster.local"}); err == nil {
		t.Fatal("Acquire of an invalid identity succeeded")
	}
	if err := h.m.Acquire(cart); err != nil {
		t.Fatal(err)
	}
	ev := h.event()
	if ev.Identity != cart || ev.Secret == nil {
		t.Fatalf("first event = %+v", ev)
	}
	verifySecret(t, ev.Secret, cart, h.iss.Root(), t0)
	if got, ok := h.m.Get(cart); !ok || got != ev.Secret {
		t.Fatal("Get does not return the announced secret")
	}
	// A second proxy of the same identity shares the certificate.
	if err := h.m.Acquire(cart); err != nil {
		t.Fatal(err)
	}
	h.noEvent()
	if n := h.iss.calls.Load(); n != 1 {
		t.Fatalf("issuer called %d times for one identity, want 1", n)
	}
	h.m.Release(cart)
	h.noEvent()
	if _, ok := h.m.Get(cart); !ok {
		t.Fatal("secret dropped while a proxy still holds it")
	}
	h.m.Release(cart)
	if ev := h.event(); ev.Identity != cart || ev.Secret != nil {
		t.Fatalf("last release: event %+v, want a withdrawal", ev)
	}
	if _, ok := h.m.Get(cart); ok {
		t.Fatal("secret kept after the last release")
	}
	// No renewal loop is left behind.
	h.clk.Step(48 * time.Hour)
	h.noEvent()
	if n := h.iss.calls.Load(); n != 1 {
		t.Fatalf("issuer called %d times after release", n)
	}
	h.m.Release(web) // releasing what was never acquired is a no-op
}

func TestManagerSecretNeverPrintsKey(t *testing.T) {
	h := newHarness(t, 0.5)
	_ = h.m.Acquire(cart)
	s := h.event().Secret
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, s)
		if strings.Contains(out, "PRIVATE KEY") || !strings.Contains(out, "redacted") {
			t.Errorf("%s printed %q", verb, out)
		}
	}
	if out := fmt.Sprintf("%+v", certs.Event{Identity: cart, Secret: s}); strings.Contains(out, "PRIVATE") {
		t.Errorf("Event printed %q", out)
	}
}

func TestManagerRenewsAtHalfLifetimeWithJitter(t *testing.T) {
	for _, c := range []struct {
		rnd  float64
		want time.Duration // renewal point after issue
	}{
		{0.5, 12 * time.Hour},                            // exactly half
		{0, time.Duration(0.45 * float64(24*time.Hour))}, // earliest: half − 5%
		{0.999999, time.Duration((0.5 + 0.05*(2*0.999999-1)) * float64(24*time.Hour))},
	} {
		t.Run(fmt.Sprint(c.rnd), func(t *testing.T) {
			h := newHarness(t, c.rnd)
			_ = h.m.Acquire(cart)
			first := h.event().Secret
			if got := first.RenewAt.Sub(t0); got != c.want {
				t.Fatalf("RenewAt = issue + %s, want + %s", got, c.want)
			}
			h.settle(1)
			h.clk.Step(c.want - time.Second)
			h.noEvent()
			h.clk.Step(time.Second)
			second := h.event().Secret
			if second == nil || second.Version <= first.Version {
				t.Fatalf("renewal event %v after %v", second, first)
			}
			if second.PrivateKey().Public().(*ecdsa.PublicKey).Equal(first.PrivateKey().Public()) {
				t.Fatal("renewal reused the key; every certificate gets a new key")
			}
			if !second.IssuedAt.Equal(t0.Add(c.want)) {
				t.Fatalf("renewed at %s, want %s", second.IssuedAt, t0.Add(c.want))
			}
			verifySecret(t, second, cart, h.iss.Root(), h.clk.Now())
		})
	}
	// Jitter spreads identities issued at the same instant.
	clk := clocktesting.NewFakeClock(t0)
	var r atomic.Int32
	seq := []float64{0.1, 0.9}
	m, err := certs.NewManager(certs.ManagerOptions{Issuer: newCA(t, clk), Clock: clk, Rand: func() float64 { return seq[int(r.Add(1)-1)%2] }, MaxConcurrentIssues: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	var got sync.Map
	var n atomic.Int32
	m.Subscribe(func(ev certs.Event) { got.Store(ev.Identity, ev.Secret.RenewAt); n.Add(1) })
	_ = m.Acquire(cart)
	_ = m.Acquire(web)
	for deadline := time.Now().Add(10 * time.Second); n.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no secrets")
		}
	}
	a, _ := got.Load(cart)
	b, _ := got.Load(web)
	if a.(time.Time).Equal(b.(time.Time)) {
		t.Fatal("two identities issued together renew at the same instant")
	}
}

func TestManagerRetriesWithBackoffAndServesOldUntilExpiry(t *testing.T) {
	h := newHarness(t, 0.5, func(o *certs.ManagerOptions) { o.MaxBackoff = 8 * time.Second })
	_ = h.m.Acquire(cart)
	first := h.event().Secret

	h.iss.fail.Store(true)
	h.settle(1)
	h.clk.Step(12 * time.Hour) // renewal time: the issuer fails
	// Backoff 1s, 2s, 4s, 8s, 8s (capped) with the mid-point jitter.
	for i, d := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		for deadline := time.Now().Add(10 * time.Second); h.iss.calls.Load() != int32(i+2); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("attempt %d: issuer called %d times", i+2, h.iss.calls.Load())
			}
		}
		h.settle(1)
		// Still serving the old certificate.
		if got, ok := h.m.Get(cart); !ok || got != first {
			t.Fatalf("attempt %d: the old certificate is no longer served", i+2)
		}
		h.clk.Step(d - time.Millisecond)
		time.Sleep(20 * time.Millisecond)
		if n := h.iss.calls.Load(); n != int32(i+2) {
			t.Fatalf("retried after %s, before the %s backoff", d-time.Millisecond, d)
		}
		h.clk.Step(time.Millisecond)
	}
	h.noEvent()

	// Until expiry: the retry timer is cut to wake exactly at expiry, where
	// the certificate is withdrawn.
	h.settle(1)
	h.clk.SetTime(first.NotAfter.Add(-time.Second))
	h.settle(1)
	h.clk.SetTime(first.NotAfter)
	ev := h.event()
	if ev.Secret != nil {
		t.Fatalf("expired certificate still served: %v", ev.Secret)
	}
	if _, ok := h.m.Get(cart); ok {
		t.Fatal("Get returns an expired certificate")
	}

	// The issuer recovers: the next retry delivers, and backoff resets.
	h.iss.fail.Store(false)
	h.settle(1)
	h.clk.Step(8 * time.Second)
	second := h.event().Secret
	if second == nil {
		t.Fatal("no certificate after the issuer recovered")
	}
	verifySecret(t, second, cart, h.iss.Root(), h.clk.Now())
	if !second.RenewAt.Equal(h.clk.Now().Add(12 * time.Hour)) {
		t.Fatalf("after recovery RenewAt = %s, want now + 12h", second.RenewAt)
	}
}

func TestManagerRefusesUnusableCertificates(t *testing.T) {
	var failures []string
	var mu sync.Mutex
	h := newHarness(t, 0.5, func(o *certs.ManagerOptions) {
		o.Observer = func(p string, err error) {
			mu.Lock()
			defer mu.Unlock()
			failures = append(failures, fmt.Sprint(p, ": ", err))
		}
	})
	h.iss.wrongIdentity.Store(true)
	_ = h.m.Acquire(cart)
	for deadline := time.Now().Add(10 * time.Second); h.iss.calls.Load() < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("issuer never called")
		}
	}
	h.settle(1)
	h.noEvent()
	mu.Lock()
	got := strings.Join(failures, "\n")
	mu.Unlock()
	if !strings.Contains(got, "unusable certificate: issued certificate is for spiffe://cluster.local/ns/shop/sa/web, want spiffe://cluster.local/ns/shop/sa/cart") {
		t.Fatalf("observer saw %q", got)
	}
	h.iss.wrongIdentity.Store(false)
	h.clk.Step(time.Second)
	if ev := h.event(); ev.Secret == nil {
		t.Fatal("no certificate after the issuer was fixed")
	}
}

func TestManagerSetIssuerRenewAll(t *testing.T) {
	h := newHarness(t, 0.5)
	_ = h.m.Acquire(cart)
	_ = h.m.Acquire(web)
	old := map[certs.Identity]*certs.Secret{}
	for range 2 {
		ev := h.event()
		old[ev.Identity] = ev.Secret
	}
	next := newCA(t, h.clk)
	h.m.SetIssuer(next)
	h.m.RenewAll()
	for range 2 {
		ev := h.event()
		verifySecret(t, ev.Secret, ev.Identity, next.Root(), h.clk.Now())
		if ev.Secret.Version <= old[ev.Identity].Version {
			t.Fatal("version did not increase")
		}
	}
	for _, s := range h.m.Secrets() {
		if !s.Roots[0].Equal(next.Root()) {
			t.Fatalf("%s still from the old root", s.Identity)
		}
	}
}

func TestNewManagerValidates(t *testing.T) {
	if _, err := certs.NewManager(certs.ManagerOptions{}); err == nil {
		t.Fatal("no issuer accepted")
	}
	clk := clocktesting.NewFakeClock(t0)
	if _, err := certs.NewManager(certs.ManagerOptions{Issuer: newCA(t, clk), RenewFraction: 0.97}); err == nil {
		t.Fatal("renewal past the lifetime accepted")
	}
}

// TestManagerRefusesRenewalForAGoneIdentity (issue 13, item 3): once
// Admit says an identity's ServiceAccount is gone, its certificate is not
// renewed — the issuer is not even asked — and the one it had is withdrawn
// at once rather than served until it expires; if the ServiceAccount comes
// back, the next retry issues again.
func TestManagerRefusesRenewalForAGoneIdentity(t *testing.T) {
	var gone atomic.Bool
	h := newHarness(t, 0.5, func(o *certs.ManagerOptions) {
		o.Admit = func(_ context.Context, id certs.Identity) error {
			if gone.Load() {
				return fmt.Errorf("service account %s/%s does not exist: %w", id.Namespace, id.ServiceAccount, certs.ErrIdentityGone)
			}
			return nil
		}
	})
	_ = h.m.Acquire(cart)
	if h.event().Secret == nil {
		t.Fatal("no certificate while the service account exists")
	}
	calls := h.iss.calls.Load()

	gone.Store(true)
	h.settle(1)
	h.clk.Step(12 * time.Hour) // renewal time
	if ev := h.event(); ev.Secret != nil || ev.Identity != cart {
		t.Fatalf("event %v for %s; want cart's certificate withdrawn", ev.Secret, ev.Identity)
	}
	if _, ok := h.m.Get(cart); ok {
		t.Fatal("the gone identity's certificate is still served")
	}
	h.settle(1)
	h.clk.Step(time.Second) // a retry: still gone
	h.settle(1)
	if n := h.iss.calls.Load(); n != calls {
		t.Fatalf("the issuer was asked %d times for a gone identity", n-calls)
	}
	h.noEvent()

	gone.Store(false)
	h.clk.Step(2 * time.Second)
	if ev := h.event(); ev.Secret == nil {
		t.Fatal("no certificate after the service account came back")
	}
}
