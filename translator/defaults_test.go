package translator_test

import (
	"os"
	"reflect"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
)

// TestDefaultsMatchTheCRDs: the translator applies defaults itself (a
// missing MeshConfig, objects that never passed the API server's
// defaulting, as in offline translation). They must be the ones the CRDs
// declare, or a field left out would mean two different things.
func TestDefaultsMatchTheCRDs(t *testing.T) {
	const btp = "mesh.weft.dev_backendtrafficpolicies.yaml"
	if got := ir.DefaultBackend.IdleTimeout.D(); got != time.Hour {
		t.Errorf("ir.DefaultBackend.IdleTimeout %v, the CRD's default is 1h", got)
	}
	cases := []struct {
		crd  string
		path []string
		want any
	}{
		{"mesh.weft.dev_meshconfigs.yaml", []string{"spec", "trustDomain"}, translator.DefaultTrustDomain},
		{"mesh.weft.dev_meshconfigs.yaml", []string{"spec", "outboundTrafficPolicy"}, string(translator.DefaultOutboundTrafficPolicy)},
		{"mesh.weft.dev_meshconfigs.yaml", []string{"spec", "mtls", "mode"}, string(translator.DefaultMTLSMode)},
		{"mesh.weft.dev_meshconfigs.yaml", []string{"spec", "accessLog", "format"}, string(translator.DefaultAccessLogFormat)},
		{"mesh.weft.dev_meshconfigs.yaml", []string{"spec", "tracing", "samplingPercent"}, float64(translator.DefaultTracingSamplingRate)},
		{"mesh.weft.dev_retrypolicies.yaml", []string{"spec", "retryOn"}, toAny(translator.DefaultRetryOn)},
		{"mesh.weft.dev_retrypolicies.yaml", []string{"spec", "attempts"}, float64(translator.DefaultRetryAttempts)},
		{"mesh.weft.dev_retrypolicies.yaml", []string{"spec", "backoff", "baseInterval"}, string(translator.DefaultRetryBase)},
		{"mesh.weft.dev_retrypolicies.yaml", []string{"spec", "backoff", "maxInterval"}, string(translator.DefaultRetryMax)},
		{"mesh.weft.dev_retrypolicies.yaml", []string{"spec", "budget", "percent"}, float64(translator.DefaultBudgetPercent)},
		{"mesh.weft.dev_retrypolicies.yaml", []string{"spec", "budget", "minConcurrency"}, float64(translator.DefaultBudgetMinConc)},
		{btp, []string{"spec", "circuitBreaker", "maxConnections"}, float64(ir.DefaultBackend.MaxConnections)},
		{btp, []string{"spec", "circuitBreaker", "maxPendingRequests"}, float64(ir.DefaultBackend.MaxPendingRequests)},
		{btp, []string{"spec", "circuitBreaker", "maxRequests"}, float64(ir.DefaultBackend.MaxRequests)},
		{btp, []string{"spec", "outlierDetection", "consecutive5xx"}, float64(ir.DefaultBackend.Consecutive5xx)},
		{btp, []string{"spec", "outlierDetection", "interval"}, ir.DefaultBackend.Interval.D().String()},
		{btp, []string{"spec", "outlierDetection", "baseEjectionTime"}, ir.DefaultBackend.BaseEjectionTime.D().String()},
		{btp, []string{"spec", "outlierDetection", "maxEjectionPercent"}, float64(ir.DefaultBackend.MaxEjectionPercent)},
		{btp, []string{"spec", "outlierDetection", "failurePercentage", "minimumHosts"}, float64(translator.DefaultFailurePercentageMinimumHosts)},
		{btp, []string{"spec", "outlierDetection", "failurePercentage", "requestVolume"}, float64(translator.DefaultFailurePercentageRequestVolume)},
		{btp, []string{"spec", "loadBalancer", "type"}, string(ir.DefaultBackend.LB)},
		{btp, []string{"spec", "loadBalancer", "locality"}, "None"},
		{btp, []string{"spec", "connection", "connectTimeout"}, ir.DefaultBackend.ConnectTimeout.D().String()},
		{btp, []string{"spec", "connection", "idleTimeout"}, "1h"},
	}
	for _, tc := range cases {
		data, err := os.ReadFile("../crds/" + tc.crd)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(data, &crd); err != nil {
			t.Fatal(err)
		}
		schema := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
		for _, p := range tc.path {
			next, ok := schema.Properties[p]
			if !ok {
				t.Fatalf("%s: no field %v", tc.crd, tc.path)
			}
			schema = &next
		}
		if schema.Default == nil {
			t.Errorf("%s %v: the CRD declares no default; the translator uses %v", tc.crd, tc.path, tc.want)
			continue
		}
		var got any
		if err := yaml.Unmarshal(schema.Default.Raw, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s %v: CRD default %v, translator default %v", tc.crd, tc.path, got, tc.want)
		}
	}
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
