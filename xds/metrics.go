package xds

import (
	"sort"
	"strings"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/weftmesh/weft/translator/ir"
)

type metrics struct {
	connected     *prometheus.GaugeVec
	pushes        *prometheus.CounterVec
	resourcesSent *prometheus.CounterVec
	bytesSent     *prometheus.CounterVec
	nacks         *prometheus.CounterVec
	policyNacks   *prometheus.CounterVec
	pushLatency   prometheus.Histogram
	ackLatency    prometheus.Histogram
	buildSeconds  prometheus.Histogram
	buildErrors   prometheus.Counter
	// panics counts recovered panics by stage (build, patch, update).
	panics *prometheus.CounterVec
	// endpointPatches counts endpoint-only changes per group, by how they
	// were applied: "patched" or "rebuilt".
	endpointPatches *prometheus.CounterVec
	// routePatches likewise counts routing-only changes per group.
	routePatches *prometheus.CounterVec
	// servicePatches likewise counts changes that only add Services.
	servicePatches *prometheus.CounterVec
}

// Latency buckets from 1 ms to 30 s: weft aims for tens of milliseconds,
// the peer measured here took seconds.
var latencyBuckets = prometheus.ExponentialBucketsRange(0.001, 30, 16)

var (
	metricsOnce sync.Once
	shared      *metrics
)

// newMetrics registers the xDS metrics once per process (tests create many
// servers) on controller-runtime's registry, which weft-controller serves.
func newMetrics() *metrics {
	metricsOnce.Do(func() {
		m := &metrics{
			connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_xds_connected_proxies",
				Help: "Proxies connected to this replica's xDS server, by kind (sidecar, grpc)."}, []string{"kind"}),
			pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_pushes_total",
				Help: "xDS responses sent, by resource type."}, []string{"type"}),
			resourcesSent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_resources_sent_total",
				Help: "Resources sent in xDS responses, by type."}, []string{"type"}),
			bytesSent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_sent_bytes_total",
				Help: "Encoded resource bytes sent, by type."}, []string{"type"}),
			nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_nacks_total",
				Help: "Responses that proxies rejected, by type."}, []string{"type"}),
			policyNacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_policy_nacks_total",
				Help: "Responses that proxies rejected, by type and by each policy (Kind/namespace/name) the rejected configuration carries. A policy's series goes when the policy leaves the mesh."},
				[]string{"type", "policy"}),
			pushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_xds_push_latency_seconds",
				Help: "From the cluster event to an xDS response carrying its result.", Buckets: latencyBuckets}),
			ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_xds_ack_latency_seconds",
				Help: "From the cluster event to a proxy's ACK of a response carrying its result.", Buckets: latencyBuckets}),
			buildSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_xds_build_seconds",
				Help: "Time to build, validate and encode one proxy group's configuration.", Buckets: latencyBuckets}),
			buildErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_xds_build_errors_total",
				Help: "Group builds that failed validation (a weft bug); the last good configuration stays in service."}),
			panics: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_panics_total",
				Help: "Panics recovered in the control plane, by stage (translate, build, patch, update): a weft bug; the last good configuration stays in service."}, []string{"stage"}),
			endpointPatches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_endpoint_patches_total",
				Help: "Endpoint-only changes applied to a proxy group, by result: patched (the changed Services' endpoints, encoded once, replaced in the group's configuration) or rebuilt (the change reaches further for that group: a full build)."},
				[]string{"result"}),
			routePatches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_route_patches_total",
				Help: "Routing-only changes (TrafficSplit, RetryPolicy, HTTPRoute) applied to a proxy group, by result: patched (the changed Services' route configurations, encoded once, replaced in the group's configuration) or rebuilt (the change reaches further for that group — a backend removed, a retry budget, a proxyless gRPC client: a full build)."},
				[]string{"result"}),
			servicePatches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_service_patches_total",
				Help: "Changes that only add Services applied to a proxy group, by result: patched (the new Services' clusters, endpoints, listeners and route configurations added to the group's configuration) or rebuilt (the addition reaches further for that group — a new HTTP port number, a Service it serves or may not reach, a proxyless gRPC client: a full build)."},
				[]string{"result"}),
		}
		ctrlmetrics.Registry.MustRegister(m.connected, m.pushes, m.resourcesSent, m.bytesSent, m.nacks, m.policyNacks,
			m.pushLatency, m.ackLatency, m.buildSeconds, m.buildErrors, m.endpointPatches, m.routePatches, m.servicePatches, m.panics)
		shared = m
	})
	return shared
}

// policyLabel is a policy's "policy" label: Kind/namespace/name, without
// the generation, so a policy has one series however often it changes.
func policyLabel(r ir.PolicyRef) string { return r.Kind + "/" + r.Namespace + "/" + r.Name }

// meshPolicies lists the labels of every policy the model carries: the
// routing, retry and backend traffic policies on Service ports and routes, and the
// AuthPolicies of Services and namespaces (as envoy's view collects them).
func meshPolicies(m *ir.Mesh) map[string]bool {
	out := map[string]bool{}
	for _, svc := range m.Services {
		for _, p := range svc.Ports {
			if p.Retry != nil {
				out[policyLabel(p.Retry.Source)] = true
			}
			if p.Backend != nil {
				out[policyLabel(p.Backend.Source)] = true
			}
			p.AllRoutes(func(r *ir.Route) {
				if r.Source != nil {
					out[policyLabel(*r.Source)] = true
				}
				if r.Retry != nil {
					out[policyLabel(r.Retry.Source)] = true
				}
			})
		}
		for _, a := range svc.AuthPolicies {
			out[policyLabel(a.Source)] = true
		}
	}
	for _, ns := range m.Namespaces {
		for _, a := range ns.AuthPolicies {
			out[policyLabel(a.Source)] = true
		}
	}
	return out
}

// shortType turns a type URL into a metric label: "Cluster", "Listener"...
func shortType(t string) string { return t[strings.LastIndex(t, ".")+1:] }

func sortDelta(r *discoveryv3.DeltaDiscoveryResponse) {
	sort.Slice(r.Resources, func(i, j int) bool { return r.Resources[i].Name < r.Resources[j].Name })
	sort.Strings(r.RemovedResources)
}
