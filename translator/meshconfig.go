package translator

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator/ir"
)

// Defaults applied when a MeshConfig field is unset (or there is none).
// They equal the CRD's +kubebuilder:default markers; defaults_test.go reads
// the generated CRD to keep the two in step.
const (
	DefaultTrustDomain           = "cluster.local"
	DefaultMTLSMode              = v1alpha1.MTLSModePermissive
	DefaultAccessLogFormat       = v1alpha1.AccessLogFormatJSON
	DefaultTracingSamplingRate   = 1
	DefaultOutboundTrafficPolicy = v1alpha1.OutboundAllowAny
)

func (t *translation) meshConfig() {
	m := t.mesh
	m.TrustDomain = DefaultTrustDomain
	m.DefaultMTLS = ir.MTLSMode(DefaultMTLSMode)
	m.Outbound = ir.OutboundAllowAny
	m.AccessLog = ir.AccessLog{JSON: true}

	mc := t.in.MeshConfig
	if mc == nil {
		return
	}
	spec := mc.Spec
	if spec.TrustDomain != "" {
		m.TrustDomain = spec.TrustDomain
	}
	if spec.MTLS.Mode != "" {
		m.DefaultMTLS = ir.MTLSMode(spec.MTLS.Mode)
	}
	if spec.OutboundTrafficPolicy == v1alpha1.OutboundRegistryOnly {
		m.Outbound = ir.OutboundRegistryOnly
	}
	if spec.AccessLog.Enabled != nil {
		m.AccessLog.Enabled = *spec.AccessLog.Enabled
	}
	if spec.AccessLog.Format != "" {
		m.AccessLog.JSON = spec.AccessLog.Format == v1alpha1.AccessLogFormatJSON
	}
	if c := spec.Tracing.CollectorAddress; c != nil && *c != "" {
		// The schema checks the form host:port but lets the port exceed
		// 65535 (or be 0), which Envoy's cluster validation refuses: one
		// bad MeshConfig would stop every proxy's configuration.
		if _, port, err := net.SplitHostPort(*c); err != nil || !validPort(port) {
			t.warnings = append(t.warnings, fmt.Sprintf("MeshConfig %s: spec.tracing.collectorAddress %q needs a port from 1 to 65535, such as otel-collector.observability:4317; tracing is off until it is fixed", mc.Name, *c))
			return
		}
		rate := float64(DefaultTracingSamplingRate)
		if spec.Tracing.SamplingPercent != nil {
			rate = float64(*spec.Tracing.SamplingPercent)
		}
		m.Tracing = &ir.Tracing{Collector: *c, SamplingPercent: rate}
	}
}

func (t *translation) namespaces() {
	for _, ns := range t.in.Namespaces {
		// An unusable label value keeps the mesh default (a typo must not
		// turn Strict into Permissive) and is reported as a warning.
		mode, warning := v1alpha1.ResolveMTLSMode(v1alpha1.MTLSMode(t.mesh.DefaultMTLS), ns.Name, ns.Labels)
		if warning != "" {
			t.warnings = append(t.warnings, warning)
		}
		t.mesh.Namespaces[ns.Name] = &ir.Namespace{Name: ns.Name, MTLS: ir.MTLSMode(mode)}
	}
}

// namespace returns the settings of ns, with mesh defaults for a namespace
// the inputs do not list.
func (t *translation) namespace(ns string) *ir.Namespace {
	n := t.mesh.Namespaces[ns]
	if n == nil {
		n = &ir.Namespace{Name: ns, MTLS: t.mesh.DefaultMTLS}
		t.mesh.Namespaces[ns] = n
	}
	return n
}

// duration parses an API duration; empty or invalid means 0 (the CRD's
// validation rejects invalid ones before they reach us).
func duration(d *v1alpha1.Duration) ir.Duration {
	if d == nil || *d == "" {
		return 0
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil || v < 0 {
		return 0
	}
	return ir.Duration(v)
}

func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= 65535
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
