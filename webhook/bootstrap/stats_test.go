package bootstrap

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"

	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	"google.golang.org/protobuf/encoding/protojson"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
)

// envoyDefaultRegex are Envoy's default regexes (source/common/config/
// well_known_names.cc) for the tags this test reaches; the others never
// match a cluster statistic.
var envoyDefaultRegex = map[string]string{
	"envoy.response_code":       `_rq(_(\d{3}))$`,
	"envoy.response_code_class": `_rq_((\d))xx$`,
}

// promLine emulates how Envoy turns a statistic into a Prometheus series:
// every tag specifier runs on the whole name (regex_search; the first group
// is removed from the name, the second is the value: TagExtractorStdRegexImpl
// and TagProducerImpl::produceTags), then /stats/prometheus prefixes
// "envoy_" and replaces every character outside [a-zA-Z0-9_] in the name and
// the tag names with '_' (PrometheusStatsFormatter::metricName and
// formattedTags). Labels are sorted here; Envoy writes them in extraction
// order, which Prometheus ignores.
func promLine(t *testing.T, sc *metricsv3.StatsConfig, stat string) string {
	t.Helper()
	if sc.GetUseAllDefaultTags() == nil || sc.GetUseAllDefaultTags().GetValue() {
		t.Fatal("use_all_default_tags is not off: Envoy's default envoy.cluster_name would compete with weft's")
	}
	type cut struct{ from, to int }
	var cuts []cut
	var labels []string
	seen := map[string]bool{}
	for _, ts := range sc.GetStatsTags() {
		re := ts.GetRegex()
		if re == "" {
			re = envoyDefaultRegex[ts.GetTagName()]
		}
		if re == "" || seen[ts.GetTagName()] {
			continue
		}
		m := regexp.MustCompile(re).FindStringSubmatchIndex(stat)
		if m == nil || m[2] < 0 {
			continue
		}
		seen[ts.GetTagName()] = true
		value := stat[m[2]:m[3]]
		if len(m) > 5 && m[4] >= 0 {
			value = stat[m[4]:m[5]]
		}
		cuts = append(cuts, cut{m[2], m[3]})
		labels = append(labels, fmt.Sprintf("%s=%q", sanitize(ts.GetTagName()), value))
	}
	keep := make([]bool, len(stat))
	for i := range keep {
		keep[i] = true
	}
	for _, c := range cuts {
		for i := c.from; i < c.to; i++ {
			keep[i] = false
		}
	}
	var name strings.Builder
	for i := range stat {
		if keep[i] {
			name.WriteByte(stat[i])
		}
	}
	sort.Strings(labels)
	return "envoy_" + sanitize(name.String()) + "{" + strings.Join(labels, ",") + "}"
}

var nonProm = regexp.MustCompile(`[^a-zA-Z0-9_]`)

func sanitize(s string) string { return nonProm.ReplaceAllString(s, "_") }

// TestClusterStatsTags: the sidecar's cluster statistics reach Prometheus
// as the series `weft stat` and docs/metrics.md name, with every form of
// cluster name the translator emits whole in envoy_cluster_name — read
// from the bootstrap as Envoy parses it.
func TestClusterStatsTags(t *testing.T) {
	s, err := JSON(Config{})
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal([]byte(s), &b); err != nil {
		t.Fatal(err)
	}
	sc := b.GetStatsConfig()
	for _, c := range []struct{ stat, want string }{
		{"cluster.outbound|80||checkout.shop.svc.cluster.local.upstream_rq_total",
			`envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|80||checkout.shop.svc.cluster.local"}`},
		{"cluster.outbound|80||checkout-v2.shop.svc.cluster.local.upstream_rq_2xx",
			`envoy_cluster_upstream_rq_xx{envoy_cluster_name="outbound|80||checkout-v2.shop.svc.cluster.local",envoy_response_code_class="2"}`},
		{"cluster.outbound|80||checkout.shop.svc.cluster.local.upstream_rq_503",
			`envoy_cluster_upstream_rq{envoy_cluster_name="outbound|80||checkout.shop.svc.cluster.local",envoy_response_code="503"}`},
		{"cluster.outbound|80||checkout.shop.svc.cluster.local.upstream_rq_time",
			`envoy_cluster_upstream_rq_time{envoy_cluster_name="outbound|80||checkout.shop.svc.cluster.local"}`},
		{"cluster.outbound|3306|ipv6|web.shop.svc.cluster.local.upstream_cx_active",
			`envoy_cluster_upstream_cx_active{envoy_cluster_name="outbound|3306|ipv6|web.shop.svc.cluster.local"}`},
		{"cluster.outbound|6379|tcp-split|cache.bank.svc.cluster.local.upstream_cx_active",
			`envoy_cluster_upstream_cx_active{envoy_cluster_name="outbound|6379|tcp-split|cache.bank.svc.cluster.local"}`},
		{"cluster.outbound|6379|tcp-split|ipv6|cache.bank.svc.cluster.local.upstream_cx_total",
			`envoy_cluster_upstream_cx_total{envoy_cluster_name="outbound|6379|tcp-split|ipv6|cache.bank.svc.cluster.local"}`},
		// A headless Service's endpoint: an address with dots in the subset.
		{"cluster.outbound|5432|10.1.1.30|db.bank.svc.cluster.local.upstream_rq_5xx",
			`envoy_cluster_upstream_rq_xx{envoy_cluster_name="outbound|5432|10.1.1.30|db.bank.svc.cluster.local",envoy_response_code_class="5"}`},
		// Deeper statistics keep their own dots after the cluster's name.
		{"cluster.outbound|80||web.shop.svc.cluster.local.circuit_breakers.default.cx_open",
			`envoy_cluster_circuit_breakers_default_cx_open{envoy_cluster_name="outbound|80||web.shop.svc.cluster.local"}`},
		{"cluster.inbound|8080||.upstream_rq_total",
			`envoy_cluster_upstream_rq_total{envoy_cluster_name="inbound|8080||"}`},
		{"cluster.inbound|8080||.upstream_rq_4xx",
			`envoy_cluster_upstream_rq_xx{envoy_cluster_name="inbound|8080||",envoy_response_code_class="4"}`},
		{"cluster.PassthroughCluster.upstream_cx_active",
			`envoy_cluster_upstream_cx_active{envoy_cluster_name="PassthroughCluster"}`},
		{"cluster.app-probe|8080|http.upstream_rq_total",
			`envoy_cluster_upstream_rq_total{envoy_cluster_name="app-probe|8080|http"}`},
		// Not a cluster statistic.
		{"cluster_manager.cds.update_success", `envoy_cluster_manager_cds_update_success{}`},
	} {
		if got := promLine(t, sc, c.stat); got != c.want {
			t.Errorf("%s\n got %s\nwant %s", c.stat, got, c.want)
		}
	}

	// Why weft sets its own: Envoy's default cluster_name extractor
	// ("cluster.$.**", one token) cuts the name at its first dot.
	def := &metricsv3.StatsConfig{StatsTags: []*metricsv3.TagSpecifier{{TagName: ClusterNameTag, TagValue: &metricsv3.TagSpecifier_Regex{Regex: `^cluster\.(([^\.]+)\.)`}}}}
	def.UseAllDefaultTags = sc.GetUseAllDefaultTags()
	if got, want := promLine(t, def, "cluster.outbound|80||checkout.shop.svc.cluster.local.upstream_rq_total"),
		`envoy_cluster_shop_svc_cluster_local_upstream_rq_total{envoy_cluster_name="outbound|80||checkout"}`; got != want {
		t.Errorf("Envoy's default extractor gives %s, want %s", got, want)
	}

	// Every default tag is named without a regex (Envoy uses its own), and
	// none twice.
	names := map[string]bool{}
	for _, ts := range sc.GetStatsTags() {
		if names[ts.GetTagName()] {
			t.Errorf("tag %s named twice", ts.GetTagName())
		}
		names[ts.GetTagName()] = true
		if ts.GetTagName() != ClusterNameTag && ts.GetTagValue() != nil {
			t.Errorf("default tag %s carries its own value: %v", ts.GetTagName(), ts.GetTagValue())
		}
	}
	for _, n := range []string{ClusterNameTag, "envoy.response_code_class", "envoy.http_conn_manager_prefix"} {
		if !names[n] {
			t.Errorf("tag %s is missing", n)
		}
	}
}
