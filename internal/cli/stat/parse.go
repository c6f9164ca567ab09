// Package stat is `weft stat`: requests per second, success rate,
// p50/p95/p99 latency, TCP connections and the observed split of a
// TrafficSplit, per Service or workload, computed from two reads of Envoy's
// cluster statistics (docs/design/120-request-metrics.md).
//
// The core is pure: Parse reads Prometheus text, Delta turns two reads into
// a Window, Compute sums windows into a Table, Render prints it. The edges
// (scrape.go: URLs, and pods through the API server's pod proxy; watch.go:
// a table every interval) feed it.
package stat

import (
	"fmt"
	"io"
	"sort"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The series `weft stat` reads, as Envoy's /stats/prometheus renders a
// sidecar's cluster statistics with weft's bootstrap tags
// (webhook/bootstrap/stats.go), and as proxyless workloads export them for
// the clusters they call.
const (
	// MetricRequests counts requests sent to a cluster (a retry is another
	// request).
	MetricRequests = "envoy_cluster_upstream_rq_total"
	// MetricResponses counts responses by LabelCodeClass.
	MetricResponses = "envoy_cluster_upstream_rq_xx"
	// MetricLatency is a histogram of request times in milliseconds
	// (_bucket with le, _sum, _count).
	MetricLatency = "envoy_cluster_upstream_rq_time"
	// MetricConnections is a gauge of open connections to a cluster.
	MetricConnections = "envoy_cluster_upstream_cx_active"

	// LabelCluster holds weft's cluster name (cluster.go).
	LabelCluster = "envoy_cluster_name"
	// LabelCodeClass is a response's class: "1" … "5".
	LabelCodeClass = "envoy_response_code_class"
)

// LatencyBuckets are Envoy's default histogram buckets in milliseconds
// (HistogramSettingsImpl::defaultBuckets), which weft's sidecars keep: a
// proxyless workload that exports MetricLatency with these buckets adds up
// with sidecars bucket for bucket.
var LatencyBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Counters are one cluster's statistics in one read.
type Counters struct {
	// Requests is MetricRequests; HasRequests says whether it was present.
	Requests    float64
	HasRequests bool
	// Responses is MetricResponses by class ("2", "5", ...).
	Responses map[string]float64
	// Buckets is MetricLatency's cumulative buckets, by upper bound, the
	// last +Inf.
	Buckets []Bucket
	// Connections is MetricConnections; HasConnections whether present.
	Connections    float64
	HasConnections bool
}

// Bucket is one cumulative histogram bucket: Count observations at most
// UpperBound.
type Bucket struct {
	UpperBound float64
	Count      float64
}

// Scrape is one read of a source: its clusters' Counters by cluster name.
type Scrape map[string]*Counters

func (s Scrape) cluster(name string) *Counters {
	c := s[name]
	if c == nil {
		c = &Counters{}
		s[name] = c
	}
	return c
}

// Parse reads Prometheus text exposition (Envoy's /stats/prometheus, or a
// client library's /metrics) with Prometheus' own parser and keeps the
// four series above; every other series is skipped. Series without a
// cluster name are skipped too.
func Parse(r io.Reader) (Scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("not Prometheus text: %w", err)
	}
	s := Scrape{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			cluster := labels[LabelCluster]
			if cluster == "" {
				continue
			}
			switch name {
			case MetricRequests:
				c := s.cluster(cluster)
				c.Requests += value(m)
				c.HasRequests = true
			case MetricResponses:
				class := labels[LabelCodeClass]
				if class == "" {
					continue
				}
				c := s.cluster(cluster)
				if c.Responses == nil {
					c.Responses = map[string]float64{}
				}
				c.Responses[class] += value(m)
			case MetricConnections:
				c := s.cluster(cluster)
				c.Connections += value(m)
				c.HasConnections = true
			case MetricLatency:
				if h := m.GetHistogram(); h != nil {
					c := s.cluster(cluster)
					for _, b := range h.GetBucket() {
						n := b.GetCumulativeCountFloat()
						if n == 0 {
							n = float64(b.GetCumulativeCount())
						}
						c.Buckets = addBucket(c.Buckets, b.GetUpperBound(), n)
					}
				}
			case MetricLatency + "_bucket":
				// An exposition without "# TYPE ... histogram": the buckets
				// arrive as a series of their own.
				le, err := strconv.ParseFloat(labels[model.BucketLabel], 64)
				if err != nil {
					continue
				}
				c := s.cluster(cluster)
				c.Buckets = addBucket(c.Buckets, le, value(m))
			}
		}
	}
	for _, c := range s {
		sort.Slice(c.Buckets, func(i, j int) bool { return c.Buckets[i].UpperBound < c.Buckets[j].UpperBound })
	}
	return s, nil
}

// value reads a counter, gauge or untyped sample.
func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return m.GetUntyped().GetValue()
}

// addBucket adds n to the bucket with upper bound le (series that differ
// only in labels weft does not read, such as a source's own labels, add
// up).
func addBucket(bs []Bucket, le, n float64) []Bucket {
	for i := range bs {
		if bs[i].UpperBound == le {
			bs[i].Count += n
			return bs
		}
	}
	return append(bs, Bucket{UpperBound: le, Count: n})
}
