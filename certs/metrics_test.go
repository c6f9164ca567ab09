package certs_test

import (
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/certs"
)

// TestMetrics: issue counts by provider, the earliest expiry, the count
// of certificates near expiry (renewal failing), the roots' expiry and the
// rotation phase, all read with a fake clock.
func TestMetrics(t *testing.T) {
	var met *certs.Metrics
	h := newHarness(t, 0.5, func(o *certs.ManagerOptions) {
		o.Observer = func(p string, err error) { met.Observe(p, err) }
	})
	met = certs.NewMetrics(h.clk)
	root := h.iss.Root()
	met.Watch(h.m, func() ([]*x509.Certificate, certs.RotationPhase) {
		return []*x509.Certificate{root}, certs.PhaseAddNewRoot
	})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(met)

	// Nothing served yet: no earliest-expiry sample (no certificate is not
	// "expires now").
	expect(t, reg, `
# HELP weft_certificates Workload certificates this replica serves (one per identity with connected proxies).
# TYPE weft_certificates gauge
weft_certificates 0
# HELP weft_certificates_near_expiry Workload certificates this replica serves with less than 10% of their lifetime left. Renewal starts at 50%, so anything here means renewal has been failing: alert when above 0.
# TYPE weft_certificates_near_expiry gauge
weft_certificates_near_expiry 0
`, "weft_certificates", "weft_certificates_near_expiry", "weft_certificate_earliest_expiry_seconds")

	_ = h.m.Acquire(cart)
	first := h.event().Secret
	h.settle(1)
	h.clk.Step(6 * time.Hour)
	_ = h.m.Acquire(web)
	h.event()
	if got := sample(t, reg, "weft_certificates_issued_total"); got != 2 {
		t.Fatalf("issued{builtin} = %v, want 2", got)
	}
	// cart's certificate expires first.
	wantLeft := first.NotAfter.Sub(h.clk.Now()).Seconds()
	expect(t, reg, fmt.Sprintf(`
# HELP weft_certificate_earliest_expiry_seconds Seconds until the earliest expiry among the workload certificates this replica serves (absent when it serves none).
# TYPE weft_certificate_earliest_expiry_seconds gauge
weft_certificate_earliest_expiry_seconds %v
`, wantLeft), "weft_certificate_earliest_expiry_seconds")

	// The issuer fails from now on: renewals at half life fail, the
	// certificates stay served, and once within the last 10% of their
	// lifetime they count as near expiry.
	h.iss.fail.Store(true)
	life := first.NotAfter.Sub(first.Leaf().NotBefore)
	for h.clk.Now().Before(first.NotAfter.Add(-life / 20)) {
		h.settle(2)
		h.clk.Step(10 * time.Minute)
	}
	if got := sample(t, reg, "weft_certificates_issue_failures_total"); got == 0 {
		t.Fatal("no failure counted while the issuer failed")
	}
	if near := sample(t, reg, "weft_certificates_near_expiry"); near != 1 {
		t.Fatalf("near expiry = %v at %s before cart's expiry, want 1 (web, issued 6h later, has more than 10%% left)", near, first.NotAfter.Sub(h.clk.Now()))
	}

	expect(t, reg, fmt.Sprintf(`
# HELP weft_ca_root_expiry_seconds Seconds until a trusted root CA expires, by the root's SHA-256 fingerprint (its first 16 hex digits).
# TYPE weft_ca_root_expiry_seconds gauge
weft_ca_root_expiry_seconds{root="%s"} %v
# HELP weft_ca_root_rotation_phase 1 for the built-in CA's current root rotation phase (Stable, AddNewRoot, SwitchSigning, RetireOldRoot).
# TYPE weft_ca_root_rotation_phase gauge
weft_ca_root_rotation_phase{phase="AddNewRoot"} 1
weft_ca_root_rotation_phase{phase="RetireOldRoot"} 0
weft_ca_root_rotation_phase{phase="Stable"} 0
weft_ca_root_rotation_phase{phase="SwitchSigning"} 0
`, certs.Fingerprint(root)[:16], root.NotAfter.Sub(h.clk.Now()).Seconds()), "weft_ca_root_expiry_seconds", "weft_ca_root_rotation_phase")
}

func expect(t *testing.T, reg *prometheus.Registry, text string, names ...string) {
	t.Helper()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(text), names...); err != nil {
		t.Fatal(err)
	}
}

// sample gathers the value of a metric with one sample.
func sample(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			m := mf.Metric[0]
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no single sample of %s", name)
	return 0
}

func TestNearExpiry(t *testing.T) {
	c := &x509.Certificate{NotBefore: t0, NotAfter: t0.Add(100 * time.Hour)}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{
		{0, false}, {50 * time.Hour, false}, {90 * time.Hour, false},
		{90*time.Hour + time.Second, true}, {100 * time.Hour, true}, {200 * time.Hour, true},
	} {
		if got := certs.NearExpiry(c, t0.Add(tc.at)); got != tc.want {
			t.Errorf("at +%s: near expiry %v, want %v", tc.at, got, tc.want)
		}
	}
}
