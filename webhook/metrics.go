package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

const (
	resultInjected = "injected"
	resultSkipped  = "skipped"
	resultRejected = "rejected"
)

// injections counts the webhook's decisions. reason is a SkipReason name for
// skipped pods, "Invalid" for rejected ones, empty for injected ones.
var injections = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "weft_webhook_injections_total",
	Help: "Pods seen by the injection webhook, by result (injected, skipped, rejected) and reason (a skip reason such as HostNetwork or OptedOut; Invalid for rejected pods).",
}, []string{"result", "reason"})

func init() {
	metrics.Registry.MustRegister(injections)
	// Start every series at zero so that rate() and alerts see the first
	// occurrence.
	injections.WithLabelValues(resultInjected, "")
	injections.WithLabelValues(resultRejected, "Invalid")
	for r := range skipMessages {
		injections.WithLabelValues(resultSkipped, string(r))
	}
}

func record(result, reason string) { injections.WithLabelValues(result, reason).Inc() }
