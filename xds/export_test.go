package xds

import "github.com/prometheus/client_golang/prometheus"

// PolicyNacks is the per-policy NACK counter, for tests.
func PolicyNacks() *prometheus.CounterVec { return newMetrics().policyNacks }
