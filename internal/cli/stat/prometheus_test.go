package stat

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPrometheus answers the HTTP API's instant queries with vectors
// written by hand (the documented JSON) and checks the queries asked and
// the table they give.
func TestPrometheus(t *testing.T) {
	type series struct {
		labels map[string]string
		value  string
	}
	c1 := "outbound|80||checkout-v1.shop.svc.cluster.local"
	c2 := "outbound|80||checkout-v2.shop.svc.cluster.local"
	answers := map[string][]series{
		"sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_total[5m]))": {
			{map[string]string{LabelCluster: c1}, "45"}, {map[string]string{LabelCluster: c2}, "5"},
		},
		"sum by (envoy_cluster_name,envoy_response_code_class) (rate(envoy_cluster_upstream_rq_xx[5m]))": {
			{map[string]string{LabelCluster: c1, LabelCodeClass: "2"}, "45"},
			{map[string]string{LabelCluster: c2, LabelCodeClass: "2"}, "4"},
			{map[string]string{LabelCluster: c2, LabelCodeClass: "5"}, "1"},
		},
		"sum by (envoy_cluster_name,le) (rate(envoy_cluster_upstream_rq_time_bucket[5m]))": {
			{map[string]string{LabelCluster: c1, "le": "1"}, "20"}, {map[string]string{LabelCluster: c1, "le": "5"}, "40"},
			{map[string]string{LabelCluster: c1, "le": "+Inf"}, "45"},
			{map[string]string{LabelCluster: c2, "le": "1"}, "0"}, {map[string]string{LabelCluster: c2, "le": "5"}, "5"},
			{map[string]string{LabelCluster: c2, "le": "+Inf"}, "5"},
		},
		"sum by (envoy_cluster_name) (envoy_cluster_upstream_cx_active)": {
			{map[string]string{LabelCluster: c1}, "3"}, {map[string]string{LabelCluster: c2}, "NaN"},
		},
	}
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query().Get("query")
		mu.Lock()
		asked = append(asked, r.URL.Path+" "+q)
		mu.Unlock()
		a, ok := answers[q]
		if !ok {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "error", "errorType": "bad_data", "error": "unexpected query"})
			return
		}
		var result []map[string]any
		for _, s := range a {
			result = append(result, map[string]any{"metric": s.labels, "value": []any{1767225600.0, s.value}})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": "vector", "result": result}})
	}))
	defer srv.Close()
	p := Prometheus{URL: srv.URL + "/", Window: 5 * time.Minute}
	srcs, err := p.Sources(context.Background(), Services)
	if err != nil {
		t.Fatal(err)
	}
	if len(asked) != 4 || !strings.HasPrefix(asked[0], "/api/v1/query ") {
		t.Errorf("asked %q", asked)
	}
	tab := Compute(srcs, Options{Kind: Services, Splits: canary})
	// 45 + 5 per second; 49 of 50 responses not 5xx; v1's p50: rank 22.5
	// in (1,5]: 1 + 4×2.5/20 = 1.5 ms; connections 3 (v2's NaN dropped).
	if len(tab.Rows) != 1 {
		t.Fatalf("%+v", tab)
	}
	r := tab.Rows[0]
	if r.Name != "checkout" || r.RequestsPerSecond != 50 || *r.SuccessRate != 0.98 || r.Connections != 3 || len(r.Backends) != 2 {
		t.Errorf("checkout: %+v", r)
	}
	if b := r.Backends[0]; math.Abs(*b.P50-1.5) > 1e-9 || *b.Share != 0.9 {
		t.Errorf("checkout-v1: p50 %v, share %v", *b.P50, *b.Share)
	}
	if _, err := p.Sources(context.Background(), Deployments); err == nil {
		t.Error("deploy read from Prometheus")
	}
	if _, err := (Prometheus{URL: srv.URL, Window: time.Minute}).Sources(context.Background(), Services); err == nil || !strings.Contains(err.Error(), "unexpected query") {
		t.Errorf("a refused query: %v", err)
	}
}
