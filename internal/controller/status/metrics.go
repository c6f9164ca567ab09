package status

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The queue's depth, latency and retries are the workqueue metrics named
// weft_status (workqueue_depth{name="weft_status"}, ...), which
// controller-runtime exports on the same registry.
var (
	writes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_status_writes_total",
		Help: "Policy status updates written to the API server, by kind.",
	}, []string{"kind"})
	skipped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_status_writes_skipped_total",
		Help: "Status writes avoided, by kind and reason: unchanged (the object already says it) or stale_generation (the object's spec moved past the translated generation).",
	}, []string{"kind", "reason"})
	conflicts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_status_write_conflicts_total",
		Help: "Status writes refused for a stale resourceVersion, then re-read and retried, by kind.",
	}, []string{"kind"})
	writeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_status_write_errors_total",
		Help: "Status writes that failed and were requeued with backoff, by kind.",
	}, []string{"kind"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(writes, skipped, conflicts, writeErrors)
}
