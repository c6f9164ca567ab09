package bootstrap

import (
	"regexp"

	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/translator/ir"
)

// ClusterNameTag is the tag that carries a cluster's name; Prometheus sees
// it as the label envoy_cluster_name (Envoy's /stats/prometheus replaces
// every character outside [a-zA-Z0-9_] in a tag name with '_').
const ClusterNameTag = "envoy.cluster_name"

// ClusterNameRegex extracts the whole weft cluster name from a cluster
// statistic's name, such as
//
//	cluster.outbound|80||checkout.shop.svc.cluster.local.upstream_rq_2xx
//
// Envoy's default extractor for envoy.cluster_name takes only the first
// dot-separated token after "cluster." (well_known_names.cc:
// "cluster.$.**", "^cluster\.(([^\.]+)\.)" before it), which cuts weft's
// names — "outbound|80||checkout" — and folds the rest of the host name
// into the metric name (envoy_cluster_shop_svc_cluster_local_upstream_rq_xx).
// The lazy name is extended over a ".<namespace>.svc.<domain>" suffix when
// one follows, as Istio's bootstrap does for its cluster_name tag. The
// first group is what Envoy removes from the name, the second the tag's
// value (TagSpecifier.regex); Envoy evaluates a custom tag regex with
// std::regex_search (ECMAScript), which these constructs mean the same in
// as in Go's RE2.
var ClusterNameRegex = `^cluster\.((.+?(?:\..+?` + regexp.QuoteMeta(".svc."+ir.ClusterDomain) + `)?)\.)`

// defaultTags are Envoy's default tag extractors the sidecar keeps, named
// so that Envoy uses its own regexes for them (TagProducerImpl:
// addExtractorsMatching). use_all_default_tags is off because two
// extractors of one tag name leave it unspecified which value wins
// (TagSpecifier's documentation), and the default envoy.cluster_name would
// compete with ClusterNameRegex. Envoy refuses a bootstrap that names a
// tag it has no default regex for ("No regex specified for tag specifier
// and no default regex for name"), so every name here is one that Envoy's
// well_known_names.cc has defined from its regex-table versions through
// today's tokenized one; add a name only after checking the pinned Envoy
// has it. Left out: the extractors of filters weft never configures
// (Mongo, DynamoDB, Redis, Thrift, rate limits, client SSL auth).
var defaultTags = []string{
	"envoy.response_code",            // *_rq_<code>: upstream_rq{envoy_response_code="503"}
	"envoy.response_code_class",      // *_rq_<class>xx: upstream_rq_xx{envoy_response_code_class="5"}
	"envoy.http_conn_manager_prefix", // http.<stat_prefix>.*: inbound_8080, outbound_80, RBAC's
	"envoy.listener_address",         // listener.<address>.*
	"envoy.tcp_prefix",               // tcp.<stat_prefix>.*
	"envoy.udp_prefix",               // udp.<stat_prefix>.*
	"envoy.worker_id",                // listener_manager.worker_<id>.*
	"envoy.virtual_host",             // vhost.<name>.*
	"envoy.virtual_cluster",          // vhost.*.vcluster.<name>.*
	"envoy.rds_route_config",         // http.*.rds.<route_config>.*
	"envoy.ssl_cipher",               // listener.*.ssl.cipher(s).<cipher>
	"cipher_suite",                   // cluster.*.ssl.ciphers.<cipher>
	"envoy.http_user_agent",          // http.*.user_agent.<agent>.*
	"envoy.fault_downstream_cluster", // http.*.fault.<cluster>.*
	"envoy.grpc_bridge_service",      // cluster.*.grpc.<service>.*
	"envoy.grpc_bridge_method",       // cluster.*.grpc.*.<method>.*
}

// statsConfig tags the sidecar's statistics so that `weft stat`, Prometheus
// queries and dashboards read one series per weft cluster
// (docs/design/120-request-metrics.md). Histogram buckets stay Envoy's
// defaults, so that a sum by le over sidecars and proxyless workloads
// adds like to like.
func statsConfig() *metricsv3.StatsConfig {
	tags := []*metricsv3.TagSpecifier{{
		TagName:  ClusterNameTag,
		TagValue: &metricsv3.TagSpecifier_Regex{Regex: ClusterNameRegex},
	}}
	for _, n := range defaultTags {
		tags = append(tags, &metricsv3.TagSpecifier{TagName: n})
	}
	return &metricsv3.StatsConfig{UseAllDefaultTags: wrapperspb.Bool(false), StatsTags: tags}
}
