package xds

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PolicyNacks is the per-policy NACK counter, for tests.
func PolicyNacks() *prometheus.CounterVec { return newMetrics().policyNacks }

// SetFirstRequestTimeout shortens FirstRequestTimeout for a test.
func SetFirstRequestTimeout(a *ADS, d time.Duration) { a.firstRequest = d }
