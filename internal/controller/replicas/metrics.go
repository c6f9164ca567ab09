package replicas

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	reportWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_replica_report_writes_total",
		Help: "Writes of this replica's report (its Lease), by result (written, error).",
	}, []string{"result"})
	reportBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "weft_replica_report_bytes",
		Help: "Size of this replica's last written report (its annotations' values).",
	})
	lastWritten = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "weft_replica_report_last_write_timestamp_seconds",
		Help: "When this replica last wrote its report, by its own clock (Unix seconds).",
	})
	staleGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "weft_replica_report_stale",
		Help: "1 while this replica has failed to write its report for longer than the deadline (by its own clock): the leader no longer counts it, although it may still serve proxies. Alert on it.",
	})
	peersGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "weft_replica_reports_live",
		Help: "Other replicas whose reports this replica counts (every replica watches them; the leader's count decides policy status).",
	})
	expired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "weft_replica_reports_expired_total",
		Help: "Replica reports this replica stopped counting because they were not renewed within the deadline (the leader also deletes them).",
	})
)

func init() {
	ctrlmetrics.Registry.MustRegister(reportWrites, reportBytes, lastWritten, staleGauge, peersGauge, expired)
}
