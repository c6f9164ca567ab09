package store

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics live on controller-runtime's registry, which weft-controller
// serves on /metrics. They are package-level because a process has one
// store; tests that build several share them.
var (
	pendingEvents = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "weft_store_pending_events",
		Help: "Significant watch events received and not yet flushed in a batch (the holdoff queue's depth).",
	})
	batchEvents = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "weft_store_batch_events",
		Help:    "Significant watch events coalesced into one batch.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 8), // 1 .. 16384
	})
	batchHoldoff = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "weft_store_batch_holdoff_seconds",
		Help:    "Time from a batch's first event to its flush: the delay the holdoff added (at most spec.push.maxDelay while the consumer keeps up).",
		Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	})
	events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_store_events_total",
		Help: "Watch events by kind; significant=false counts updates that cannot change a translation (status-only writes, resyncs, stripped fields), which are dropped.",
	}, []string{"kind", "significant"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(pendingEvents, batchEvents, batchHoldoff, events)
}
