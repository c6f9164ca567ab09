package promql

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// root is the repository's root: this module sits at hack/promql.
const root = "../.."

// metric is a series docs/metrics.md documents: its type and its own
// labels.
type metric struct {
	typ    string // counter, gauge, histogram
	labels map[string]bool
}

// targetLabels are the labels a scrape adds to every series: job and
// instance (Prometheus), namespace and pod (the Kubernetes discovery
// relabeling of docs/metrics.md's scrape job, and of a PodMonitor or
// ServiceMonitor), container and endpoint (the Prometheus Operator).
var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "endpoint"}

var (
	// | `name` | type | labels | ... — every metric table of docs/metrics.md.
	row = regexp.MustCompile("(?m)^\\| `([a-zA-Z_:][a-zA-Z0-9_:]*)` \\| ([^|]+) \\|((?:[^|\\\\]|\\\\\\|)*)\\|")
	// a label in the labels column: backquoted, an identifier.
	labelName = regexp.MustCompile("`([a-zA-Z_][a-zA-Z0-9_]*)`")
)

// documented reads docs/metrics.md. internal/testing/docscheck keeps its
// weft_* rows equal to the metrics weft-controller's code declares; its
// envoy_* rows are the sidecars' series weft documents (and the demo
// workloads export); its other rows are the Go, process and
// controller-runtime series weft-controller serves beside its own.
func documented(t *testing.T) map[string]metric {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(root, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]metric{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		typ := strings.TrimSpace(strings.SplitN(m[2], ",", 2)[0])
		switch typ {
		case "counter", "gauge", "histogram":
		default:
			continue // another table's header (`envoy_cluster_name` | counts)
		}
		got, ok := out[m[1]]
		if !ok {
			got = metric{typ: typ, labels: map[string]bool{}}
		} else if got.typ != typ {
			t.Fatalf("docs/metrics.md documents %s as a %s and as a %s", m[1], got.typ, typ)
		}
		for _, l := range labelName.FindAllStringSubmatch(m[3], -1) {
			got.labels[l[1]] = true
		}
		out[m[1]] = got
	}
	if len(out) < 30 {
		t.Fatalf("read only %d metrics from docs/metrics.md: the table format changed?", len(out))
	}
	return out
}

// dashboard is what the test reads of a Grafana dashboard.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		Expr         string          `json:"expr"`
		LegendFormat string          `json:"legendFormat"`
		Datasource   json.RawMessage `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Definition string          `json:"definition"`
	Query      json.RawMessage `json:"query"`
}

func dashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "config", "grafana", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("config/grafana holds %d dashboards; want the control plane's and the mesh traffic's", len(files))
	}
	out := map[string]dashboard{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = d
	}
	return out
}

func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// Grafana's own variables, and the values the test gives them.
var builtins = map[string]string{"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

var legendLabel = regexp.MustCompile(`\{\{ *([a-zA-Z_][a-zA-Z0-9_]*) *\}\}`)

var varRef = regexp.MustCompile(`\$(?:\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}|([a-zA-Z_][a-zA-Z0-9_]*))`)

// substitute replaces Grafana's variables with values PromQL accepts: an
// interval for the built-in ones, a plain word for the dashboard's (they
// stand in label values and regexes).
func substitute(expr string, defined map[string]bool) (string, error) {
	var err error
	out := varRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := varRef.FindStringSubmatch(ref)
		name := m[1] + m[2]
		if v, ok := builtins[name]; ok {
			return v
		}
		if !defined[name] {
			err = fmt.Errorf("names $%s, which the dashboard does not define", name)
		}
		return "weft_var"
	})
	return out, err
}

// TestDashboards: every dashboard is well formed, every PromQL expression
// (panels' and variables') parses with Prometheus' own parser, and names
// only documented series, used as their type allows, with labels they
// have.
func TestDashboards(t *testing.T) {
	metrics := documented(t)
	p := parser.NewParser(parser.Options{})
	uids := map[string]string{}
	exprs := 0
	used := map[string]bool{}
	for file, d := range dashboards(t) {
		t.Run(file, func(t *testing.T) {
			if d.UID == "" || d.Title == "" {
				t.Errorf("no uid or title")
			}
			if other, dup := uids[d.UID]; dup {
				t.Errorf("uid %q is also %s's", d.UID, other)
			}
			uids[d.UID] = file
			defined := map[string]bool{}
			for _, v := range d.Templating.List {
				defined[v.Name] = true
			}
			if !defined["datasource"] {
				t.Error("no datasource variable: the dashboard would be tied to one Prometheus")
			}
			for _, v := range d.Templating.List {
				if v.Type != "query" {
					continue
				}
				var q struct{ Query string }
				if err := json.Unmarshal(v.Query, &q); err != nil {
					_ = json.Unmarshal(v.Query, &q.Query)
				}
				if q.Query != v.Definition {
					t.Errorf("variable %s: query %q and definition %q differ", v.Name, q.Query, v.Definition)
				}
				checkLabelValues(t, p, metrics, v.Name, q.Query, defined, used)
				exprs++
			}
			ids := map[int]bool{}
			for _, pn := range allPanels(d.Panels) {
				where := fmt.Sprintf("panel %d %q", pn.ID, pn.Title)
				if ids[pn.ID] {
					t.Errorf("%s: id used twice", where)
				}
				ids[pn.ID] = true
				if pn.GridPos.W <= 0 || pn.GridPos.X+pn.GridPos.W > 24 || pn.GridPos.H <= 0 {
					t.Errorf("%s: gridPos %+v outside Grafana's 24 columns", where, pn.GridPos)
				}
				if pn.Type == "row" {
					continue
				}
				if len(pn.Targets) == 0 {
					t.Errorf("%s: no query", where)
				}
				for _, ds := range append([]json.RawMessage{pn.Datasource}, func() (out []json.RawMessage) {
					for _, tg := range pn.Targets {
						out = append(out, tg.Datasource)
					}
					return
				}()...) {
					if !strings.Contains(string(ds), `"${datasource}"`) {
						t.Errorf("%s: datasource %s; want the ${datasource} variable", where, ds)
					}
				}
				for _, tg := range pn.Targets {
					exprs++
					s, err := substitute(tg.Expr, defined)
					if err != nil {
						t.Errorf("%s: %v", where, err)
						continue
					}
					e, err := p.ParseExpr(s)
					if err != nil {
						t.Errorf("%s: %q does not parse: %v", where, tg.Expr, err)
						continue
					}
					out, problems := check(e, metrics, used)
					for _, pr := range problems {
						t.Errorf("%s: %s\n  in %s", where, pr, tg.Expr)
					}
					for _, m := range legendLabel.FindAllStringSubmatch(tg.LegendFormat, -1) {
						if !out[m[1]] {
							t.Errorf("%s: legend names {{%s}}, which the result does not carry (it has %v)\n  in %s", where, m[1], sorted(out), tg.Expr)
						}
					}
				}
			}
		})
	}
	if exprs < 40 {
		t.Errorf("checked only %d expressions", exprs)
	}
	// The list: connected proxies, pushes, convergence and ACK
	// latency, NACKs by policy, certificate expiry, rotation phase; and
	// the sidecars' four request series.
	for _, m := range []string{
		"weft_xds_connected_proxies", "weft_xds_pushes_total", "weft_xds_ack_latency_seconds", "weft_xds_push_latency_seconds",
		"weft_xds_policy_nacks_total", "weft_certificate_earliest_expiry_seconds", "weft_ca_root_expiry_seconds", "weft_ca_root_rotation_phase",
		"envoy_cluster_upstream_rq_total", "envoy_cluster_upstream_rq_xx", "envoy_cluster_upstream_rq_time", "envoy_cluster_upstream_cx_active",
	} {
		if !used[m] {
			t.Errorf("no dashboard shows %s", m)
		}
	}
}

// checkLabelValues checks a variable's label_values(selector, label).
func checkLabelValues(t *testing.T, p parser.Parser, metrics map[string]metric, name, q string, defined, used map[string]bool) {
	t.Helper()
	m := regexp.MustCompile(`^label_values\((.*), *([a-zA-Z_][a-zA-Z0-9_]*)\)$`).FindStringSubmatch(q)
	if m == nil {
		t.Errorf("variable %s: %q is not label_values(SELECTOR, LABEL)", name, q)
		return
	}
	s, err := substitute(m[1], defined)
	if err != nil {
		t.Errorf("variable %s: %v", name, err)
		return
	}
	e, err := p.ParseExpr(s)
	if err != nil {
		t.Errorf("variable %s: %q does not parse: %v", name, m[1], err)
		return
	}
	vs, ok := e.(*parser.VectorSelector)
	if !ok {
		t.Errorf("variable %s: %q is not a series selector", name, m[1])
		return
	}
	info, problems := series(vs, metrics, used)
	for _, pr := range problems {
		t.Errorf("variable %s: %s", name, pr)
	}
	if info != nil && !info[m[2]] {
		t.Errorf("variable %s: %s has no label %s (it has %v)", name, vs.Name, m[2], sorted(info))
	}
}

// series resolves a selector's metric — a documented one, or a
// histogram's _bucket, _sum or _count — and checks its matchers. It
// returns the labels its series carry.
func series(vs *parser.VectorSelector, metrics map[string]metric, used map[string]bool) (map[string]bool, []string) {
	if vs.Name == "" {
		return nil, []string{fmt.Sprintf("%s selects no metric by name", vs)}
	}
	m, base, suffix := resolve(vs.Name, metrics)
	if base == "" {
		return nil, []string{fmt.Sprintf("%s is not a series weft-controller or the sidecars export (docs/metrics.md has no row for it)", vs.Name)}
	}
	used[base] = true
	labels := map[string]bool{}
	for l := range m.labels {
		labels[l] = true
	}
	delete(labels, "le")
	if suffix == "_bucket" {
		labels["le"] = true
	}
	for _, l := range targetLabels {
		labels[l] = true
	}
	var problems []string
	for _, mt := range vs.LabelMatchers {
		if mt.Name != "__name__" && !labels[mt.Name] {
			problems = append(problems, fmt.Sprintf("%s has no label %s (it has %v)", vs.Name, mt.Name, sorted(labels)))
		}
	}
	return labels, problems
}

func resolve(name string, metrics map[string]metric) (metric, string, string) {
	if m, ok := metrics[name]; ok {
		if m.typ == "histogram" {
			return m, "", "" // a histogram is read through its _bucket, _sum or _count
		}
		return m, name, ""
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if m, ok := metrics[strings.TrimSuffix(name, suffix)]; ok && strings.HasSuffix(name, suffix) && m.typ == "histogram" {
			return m, strings.TrimSuffix(name, suffix), suffix
		}
	}
	return metric{}, "", ""
}

// rangeFuncs turn a counter's samples into a rate.
var rangeFuncs = map[string]bool{"rate": true, "irate": true, "increase": true}

// check walks an expression: its series (documented, counters and
// histograms only through rate/irate/increase, gauges never), and every
// label it groups, matches or relabels by. It returns the labels of the
// expression's result.
func check(e parser.Expr, metrics map[string]metric, used map[string]bool) (map[string]bool, []string) {
	var problems []string
	var walk func(e parser.Expr, inRate string) map[string]bool
	walk = func(e parser.Expr, inRate string) map[string]bool {
		switch e := e.(type) {
		case *parser.VectorSelector:
			labels, ps := series(e, metrics, used)
			problems = append(problems, ps...)
			if labels == nil {
				return nil // unknown: reported once, its labels not checked
			}
			m, _, _ := resolve(e.Name, metrics)
			switch {
			case (m.typ == "counter" || m.typ == "histogram") && inRate == "":
				problems = append(problems, fmt.Sprintf("%s is a %s: read it through rate() or increase()", e.Name, m.typ))
			case m.typ == "gauge" && inRate != "":
				problems = append(problems, fmt.Sprintf("%s is a gauge: %s() of it is meaningless", e.Name, inRate))
			}
			return labels
		case *parser.MatrixSelector:
			return walk(e.VectorSelector, inRate)
		case *parser.Call:
			var labels map[string]bool
			for i, a := range e.Args {
				r := ""
				if rangeFuncs[e.Func.Name] {
					r = e.Func.Name
				}
				l := walk(a, r)
				if i == 0 || labels == nil {
					labels = l
				} else if e.Func.Name == "histogram_quantile" {
					labels = l
				}
			}
			if labels == nil {
				return nil
			}
			switch e.Func.Name {
			case "histogram_quantile":
				if !labels["le"] {
					problems = append(problems, "histogram_quantile over a vector without le: sum by (le, ...) the _bucket rates")
				}
				delete(labels, "le")
			case "label_replace":
				dst := e.Args[1].(*parser.StringLiteral).Val
				src := e.Args[3].(*parser.StringLiteral).Val
				if !labels[src] {
					problems = append(problems, fmt.Sprintf("label_replace reads label %s, which the vector does not carry (it has %v)", src, sorted(labels)))
				}
				labels = with(labels, dst)
			}
			return labels
		case *parser.AggregateExpr:
			inner := walk(e.Expr, inRate)
			if e.Param != nil {
				walk(e.Param, inRate)
			}
			if inner == nil {
				return nil
			}
			for _, g := range e.Grouping {
				if !inner[g] {
					problems = append(problems, fmt.Sprintf("%s by %s: the vector has no label %s (it has %v)", e.Op, g, g, sorted(inner)))
				}
			}
			if e.Without {
				out := with(inner)
				for _, g := range e.Grouping {
					delete(out, g)
				}
				return out
			}
			return with(map[string]bool{}, e.Grouping...)
		case *parser.BinaryExpr:
			l, r := walk(e.LHS, inRate), walk(e.RHS, inRate)
			if l == nil || r == nil {
				return nil
			}
			if _, scalar := e.LHS.(*parser.NumberLiteral); scalar {
				return r
			}
			if m := e.VectorMatching; m != nil {
				for _, lbl := range m.MatchingLabels {
					if !l[lbl] {
						problems = append(problems, fmt.Sprintf("%s on/ignoring %s: the left side has no such label (it has %v)", e.Op, lbl, sorted(l)))
					}
					if m.On && !r[lbl] {
						problems = append(problems, fmt.Sprintf("%s on %s: the right side has no such label (it has %v)", e.Op, lbl, sorted(r)))
					}
				}
				if m.Card == parser.CardManyToOne {
					return with(l, m.Include...)
				}
			}
			return l
		case *parser.ParenExpr:
			return walk(e.Expr, inRate)
		case *parser.UnaryExpr:
			return walk(e.Expr, inRate)
		case *parser.NumberLiteral, *parser.StringLiteral:
			return map[string]bool{}
		case *parser.SubqueryExpr:
			return walk(e.Expr, inRate)
		}
		problems = append(problems, fmt.Sprintf("the test does not know %T", e))
		return map[string]bool{}
	}
	out := walk(e, "")
	return out, problems
}

func with(m map[string]bool, add ...string) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	for _, a := range add {
		out[a] = true
	}
	return out
}

func sorted(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return slices.Clip(out)
}

// TestCheckRefuses: the checks above catch each mistake they are for.
func TestCheckRefuses(t *testing.T) {
	metrics := documented(t)
	p := parser.NewParser(parser.Options{})
	for expr, want := range map[string]string{
		`sum(weft_xds_pushes)`:                                             "weft_xds_pushes is not a series",
		`sum(weft_xds_pushes_total)`:                                       "is a counter: read it through rate()",
		`rate(weft_xds_connected_proxies[5m])`:                             "is a gauge: rate() of it",
		`histogram_quantile(0.99, rate(weft_xds_ack_latency_seconds[5m]))`: "weft_xds_ack_latency_seconds is not a series",
		`histogram_quantile(0.99, sum by (type) (rate(weft_xds_ack_latency_seconds_bucket[5m])))`:                "sum by type: the vector has no label type",
		`histogram_quantile(0.99, sum(rate(weft_xds_ack_latency_seconds_bucket[5m])))`:                           "histogram_quantile over a vector without le",
		`sum by (envoy_cluster) (rate(envoy_cluster_upstream_rq_total[5m]))`:                                     "no label envoy_cluster",
		`weft_xds_connected_proxies{type="Cluster"}`:                                                             "weft_xds_connected_proxies has no label type",
		`label_replace(weft_xds_connected_proxies, "x", "$1", "policy", "(.*)")`:                                 "label_replace reads label policy",
		`sum by (kind) (weft_xds_connected_proxies) / on (type) sum by (type) (rate(weft_xds_pushes_total[5m]))`: "on/ignoring type: the left side has no such label",
	} {
		e, err := p.ParseExpr(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		_, problems := check(e, metrics, map[string]bool{})
		if !strings.Contains(strings.Join(problems, "\n"), want) {
			t.Errorf("%s: problems %q; want one with %q", expr, problems, want)
		}
	}
	if _, err := substitute(`rate(x{a="$nope"}[$__rate_interval])`, map[string]bool{}); err == nil || !strings.Contains(err.Error(), "$nope") {
		t.Errorf("an undefined variable: %v", err)
	}
}
