// Package promql holds the tests of weft's Grafana dashboards
// (config/grafana): every PromQL expression parses with Prometheus' own
// parser and names only series weft-controller or the sidecars export, as
// docs/metrics.md documents them. A nested module, so that
// github.com/prometheus/prometheus and its dependencies stay out of weft's
// go.mod; `make test` runs it (go -C hack/promql test ./...).
package promql
