package certs

import (
	"crypto/x509"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
)

// NearExpiryFraction: a certificate with less than this share of its
// lifetime left counts as near expiry. The Manager renews at half the
// lifetime, so reaching the last 10 % means renewal has failed for 40 % of
// it: worth an alert, while there is still time to act.
const NearExpiryFraction = 0.1

// Metrics exports certificate facts for Prometheus: issue attempts by
// provider (fed by ManagerOptions.Observer), and, read from the Manager
// and the trust bundle at every scrape, the earliest workload certificate
// expiry, the roots' expiry, the count of certificates near expiry and the
// root rotation phase. Register it once; Watch points it at the current
// Manager.
type Metrics struct {
	clock  clock.PassiveClock
	issued *prometheus.CounterVec
	failed *prometheus.CounterVec

	earliest, nearExpiry, certificates, rootExpiry, phase *prometheus.Desc

	mu     sync.Mutex
	mgr    *Manager
	bundle func() ([]*x509.Certificate, RotationPhase)
}

// NewMetrics makes the collectors; clk is the real clock when nil.
func NewMetrics(clk clock.PassiveClock) *Metrics {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Metrics{
		clock: clk,
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_certificates_issued_total",
			Help: "Workload certificates issued, by provider (builtin, cert-manager).",
		}, []string{"provider"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_certificates_issue_failures_total",
			Help: "Workload certificate issues that failed (retried with backoff while the current certificate is served), by provider.",
		}, []string{"provider"}),
		earliest: prometheus.NewDesc("weft_certificate_earliest_expiry_seconds",
			"Seconds until the earliest expiry among the workload certificates this replica serves (absent when it serves none).", nil, nil),
		nearExpiry: prometheus.NewDesc("weft_certificates_near_expiry",
			"Workload certificates this replica serves with less than 10% of their lifetime left. Renewal starts at 50%, so anything here means renewal has been failing: alert when above 0.", nil, nil),
		certificates: prometheus.NewDesc("weft_certificates",
			"Workload certificates this replica serves (one per identity with connected proxies).", nil, nil),
		rootExpiry: prometheus.NewDesc("weft_ca_root_expiry_seconds",
			"Seconds until a trusted root CA expires, by the root's SHA-256 fingerprint (its first 16 hex digits).", []string{"root"}, nil),
		phase: prometheus.NewDesc("weft_ca_root_rotation_phase",
			"1 for the built-in CA's current root rotation phase (Stable, AddNewRoot, SwitchSigning, RetireOldRoot).", []string{"phase"}, nil),
	}
}

// Observe records one issue attempt; use it as ManagerOptions.Observer.
func (m *Metrics) Observe(provider string, err error) {
	if err != nil {
		m.failed.WithLabelValues(provider).Inc()
		return
	}
	m.issued.WithLabelValues(provider).Inc()
}

// Watch makes scrapes read mgr's certificates and bundle's roots and phase
// (the phase may be empty: not exported). Either may be nil.
func (m *Metrics) Watch(mgr *Manager, bundle func() ([]*x509.Certificate, RotationPhase)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mgr, m.bundle = mgr, bundle
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.issued.Describe(ch)
	m.failed.Describe(ch)
	for _, d := range []*prometheus.Desc{m.earliest, m.nearExpiry, m.certificates, m.rootExpiry, m.phase} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.issued.Collect(ch)
	m.failed.Collect(ch)
	m.mu.Lock()
	mgr, bundle := m.mgr, m.bundle
	m.mu.Unlock()
	now := m.clock.Now()
	if mgr != nil {
		secrets := mgr.Secrets()
		var earliest time.Time
		near := 0
		for _, s := range secrets {
			if earliest.IsZero() || s.NotAfter.Before(earliest) {
				earliest = s.NotAfter
			}
			if NearExpiry(s.Leaf(), now) {
				near++
			}
		}
		ch <- prometheus.MustNewConstMetric(m.certificates, prometheus.GaugeValue, float64(len(secrets)))
		ch <- prometheus.MustNewConstMetric(m.nearExpiry, prometheus.GaugeValue, float64(near))
		if !earliest.IsZero() {
			ch <- prometheus.MustNewConstMetric(m.earliest, prometheus.GaugeValue, earliest.Sub(now).Seconds())
		}
	}
	if bundle != nil {
		roots, phase := bundle()
		for _, r := range roots {
			ch <- prometheus.MustNewConstMetric(m.rootExpiry, prometheus.GaugeValue, r.NotAfter.Sub(now).Seconds(), Fingerprint(r)[:16])
		}
		if phase != "" {
			for _, p := range []RotationPhase{PhaseStable, PhaseAddNewRoot, PhaseSwitchSigning, PhaseRetireOldRoot} {
				v := 0.0
				if p == phase {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(m.phase, prometheus.GaugeValue, v, string(p))
			}
		}
	}
}

// NearExpiry reports whether c has less than NearExpiryFraction of its
// lifetime (NotBefore to NotAfter) left at now.
func NearExpiry(c *x509.Certificate, now time.Time) bool {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotAfter.Sub(now) < time.Duration(float64(life)*NearExpiryFraction)
}
