package stat

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// Prometheus reads the same series from a Prometheus server instead of the
// sidecars: rate() over Window, summed over every scraped pod, through
// the HTTP API's instant queries (/api/v1/query). For Kind Pods the sums
// keep the `namespace` and `pod` labels, which Prometheus' Kubernetes
// discovery jobs usually add (docs/metrics.md's job does); Deployments are
// not read this way (nothing in the series names a pod's Deployment).
type Prometheus struct {
	Client *http.Client
	// URL is the server's base URL (http://prometheus.monitoring:9090).
	URL    string
	Window time.Duration
}

// Sources queries the server once: one Source holding every cluster's
// per-second rates (a Window of one second), or one per pod for Kind
// Pods.
func (p Prometheus) Sources(ctx context.Context, kind Kind) ([]Source, error) {
	if kind == Deployments {
		return nil, fmt.Errorf("weft stat deploy does not read --prometheus (the series name pods, not their Deployments): use svc or pod")
	}
	by := LabelCluster
	if kind == Pods {
		by += ",namespace,pod"
	}
	w := model.Duration(p.Window).String()
	queries := []struct {
		promql string
		add    func(c *Counters, m map[string]string, v float64)
	}{
		{fmt.Sprintf("sum by (%s) (rate(%s[%s]))", by, MetricRequests, w), func(c *Counters, _ map[string]string, v float64) {
			c.Requests += v
			c.HasRequests = true
		}},
		{fmt.Sprintf("sum by (%s,%s) (rate(%s[%s]))", by, LabelCodeClass, MetricResponses, w), func(c *Counters, m map[string]string, v float64) {
			if c.Responses == nil {
				c.Responses = map[string]float64{}
			}
			c.Responses[m[LabelCodeClass]] += v
		}},
		{fmt.Sprintf("sum by (%s,le) (rate(%s_bucket[%s]))", by, MetricLatency, w), func(c *Counters, m map[string]string, v float64) {
			if le, err := strconv.ParseFloat(m["le"], 64); err == nil {
				c.Buckets = addBucket(c.Buckets, le, v)
			}
		}},
		{fmt.Sprintf("sum by (%s) (%s)", by, MetricConnections), func(c *Counters, _ map[string]string, v float64) {
			c.Connections += v
			c.HasConnections = true
		}},
	}
	sources := map[string]*Source{}
	var order []string
	for _, q := range queries {
		samples, err := p.query(ctx, q.promql)
		if err != nil {
			return nil, err
		}
		for _, s := range samples {
			name := p.URL
			var pod *Pod
			if kind == Pods {
				if s.metric["pod"] == "" {
					continue
				}
				name = s.metric["namespace"] + "/" + s.metric["pod"]
				pod = &Pod{Namespace: s.metric["namespace"], Name: s.metric["pod"]}
			}
			src := sources[name]
			if src == nil {
				src = &Source{Name: name, Pod: pod, Window: &Window{Seconds: 1, Clusters: map[string]*Counters{}}}
				sources[name] = src
				order = append(order, name)
			}
			c := src.Window.Clusters[s.metric[LabelCluster]]
			if c == nil {
				c = &Counters{}
				src.Window.Clusters[s.metric[LabelCluster]] = c
			}
			q.add(c, s.metric, s.value)
		}
	}
	var out []Source
	for _, n := range order {
		out = append(out, *sources[n])
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("Prometheus at %s has none of weft's series (%s …): is it scraping the sidecars? (docs/metrics.md, Scraping the sidecars)", p.URL, MetricRequests)
	}
	return out, nil
}

type sample struct {
	metric map[string]string
	value  float64
}

// query runs one instant query (the HTTP API's documented JSON:
// {"status":"success","data":{"resultType":"vector","result":[{"metric":{…},"value":[t,"v"]}]}}).
func (p Prometheus) query(ctx context.Context, promql string) ([]sample, error) {
	ctx, cancel := context.WithTimeout(ctx, ReadTimeout)
	defer cancel()
	u := strings.TrimSuffix(p.URL, "/") + "/api/v1/query?" + url.Values{"query": {promql}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	c := p.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("querying Prometheus: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("Prometheus at %s answered %s, not its API's JSON: %s", p.URL, resp.Status, snippet(body))
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("Prometheus refused %s: %s", promql, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("Prometheus answered %s with a %s, want a vector", promql, r.Data.ResultType)
	}
	var out []sample
	for _, x := range r.Data.Result {
		s, _ := x.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		out = append(out, sample{metric: x.Metric, value: v})
	}
	return out, nil
}
