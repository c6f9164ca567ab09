package translator_test

import (
	"os"
	"reflect"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/translator"
)

// TestDefaultsMatchTheCRDs: the translator applies defaults itself (a
// missing MeshConfig, objects that never passed the API server's
// defaulting, as in offline translation). They must be the ones the CRDs
// declare, or a field left out would mean two different things.
func TestDefaultsMatchTheCRDs(t *testing.T) {
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
