package stat

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/weftmesh/weft/translator/ir"
)

func read(t *testing.T, path string) Scrape {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := Parse(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return s
}

func parse(t *testing.T, text string) Scrape {
	t.Helper()
	s, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const (
	v1 = "outbound|80||checkout-v1.shop.svc.cluster.local"
	v2 = "outbound|80||checkout-v2.shop.svc.cluster.local"
)

func TestParse(t *testing.T) {
	s := read(t, "testdata/frontend-a.after.txt")
	got := s[v2]
	want := &Counters{
		Requests: 200, HasRequests: true,
		Responses:   map[string]float64{"2": 175, "5": 25},
		Buckets:     []Bucket{{1, 30}, {5, 120}, {10, 175}, {math.Inf(1), 200}},
		Connections: 1, HasConnections: true,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s (-want +got):\n%s", v2, d)
	}
	// Only the four series: envoy_cluster_upstream_cx_connect_ms (another
	// histogram of the same cluster) is not latency; a series without a
	// cluster name is skipped.
	if b := s["outbound|80||checkout-v1.shop.svc.cluster.local"].Buckets; len(b) != 4 || b[0].Count != 850 {
		t.Errorf("checkout-v1 latency buckets %v, want le=1 850 … +Inf 1900", b)
	}
	if c := s["outbound|5432|10.1.0.2|db.shop.svc.cluster.local"]; c == nil || c.Connections != 4 || c.HasRequests {
		t.Errorf("db endpoint: %+v, want 4 connections and no request counter", c)
	}
	// Without "# TYPE" lines the samples are untyped, the buckets a series
	// of their own: read the same.
	u := parse(t, `envoy_cluster_upstream_rq_total{envoy_cluster_name="inbound|8080||"} 3
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="inbound|8080||",le="0.5"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="inbound|8080||",le="+Inf"} 3
`)
	if c := u["inbound|8080||"]; c == nil || c.Requests != 3 || len(c.Buckets) != 2 || c.Buckets[0] != (Bucket{0.5, 1}) {
		t.Errorf("untyped: %+v", c)
	}
	if _, err := Parse(strings.NewReader("<html>not found</html>\n")); err == nil {
		t.Error("Parse read HTML without an error")
	}
}

func TestDelta(t *testing.T) {
	w := Delta(read(t, "testdata/frontend-a.before.txt"), read(t, "testdata/frontend-a.after.txt"), 10*time.Second)
	if w.Seconds != 10 {
		t.Errorf("Seconds %v", w.Seconds)
	}
	for _, c := range []struct {
		cluster string
		want    *Counters
	}{
		// 1900-1000 requests; buckets 850-400, 1755-900, 1881-990, 1900-1000.
		{v1, &Counters{Requests: 900, HasRequests: true, Responses: map[string]float64{"2": 900},
			Buckets: []Bucket{{1, 450}, {5, 855}, {10, 891}, {math.Inf(1), 900}}, Connections: 3, HasConnections: true}},
		// web's counters went from 500 to 30: reset, so 30 are new.
		{"outbound|80||web.shop.svc.cluster.local", &Counters{Requests: 30, HasRequests: true, Responses: map[string]float64{"2": 30}}},
		// Not in the first read: all 10 are new.
		{"outbound|80|ipv6|catalog.shop.svc.cluster.local", &Counters{Requests: 10, HasRequests: true, Responses: map[string]float64{"2": 10}}},
	} {
		if d := cmp.Diff(c.want, w.Clusters[c.cluster]); d != "" {
			t.Errorf("%s (-want +got):\n%s", c.cluster, d)
		}
	}
}

func TestParseCluster(t *testing.T) {
	for name, want := range map[string]Cluster{
		"outbound|80||checkout.shop.svc.cluster.local":             {Direction: Outbound, Port: 80, Namespace: "shop", Service: "checkout"},
		"outbound|9090|ipv6|web.shop.svc.cluster.local":            {Direction: Outbound, Port: 9090, Namespace: "shop", Service: "web", IPv6: true},
		"outbound|6379|tcp-split|cache.bank.svc.cluster.local":     {Direction: Outbound, Port: 6379, Namespace: "bank", Service: "cache", TCPSplit: true},
		"outbound|6379|tcp-split|ipv6|cache.bank.svc.corp.example": {Direction: Outbound, Port: 6379, Namespace: "bank", Service: "cache", TCPSplit: true, IPv6: true},
		"outbound|5432|10.1.1.30|db.bank.svc.cluster.local":        {Direction: Outbound, Port: 5432, Namespace: "bank", Service: "db", Endpoint: "10.1.1.30"},
		"outbound|5432|fd00::1e|db.bank.svc.cluster.local":         {Direction: Outbound, Port: 5432, Namespace: "bank", Service: "db", Endpoint: "fd00::1e"},
		"inbound|8080||": {Direction: Inbound, Port: 8080},
	} {
		got, ok := ParseCluster(name)
		if !ok || got != want {
			t.Errorf("ParseCluster(%q) = %+v, %v; want %+v", name, got, ok, want)
		}
	}
	for _, name := range []string{"PassthroughCluster", "BlackHoleCluster", "InboundPassthroughCluster", "admin",
		"app-probe|8080|http", "outbound|http|80", "outbound|80||checkout", "outbound|0||a.b.svc.cluster.local",
		"outbound|80||a.b.cluster.local", "inbound|8080|x|", "outbound|80|a|b|c.d.svc.cluster.local"} {
		if c, ok := ParseCluster(name); ok {
			t.Errorf("ParseCluster(%q) = %+v, want not a Service's cluster", name, c)
		}
	}
}

// TestQuantile: Prometheus' histogram_quantile, worked by hand.
func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	bs := []Bucket{{5, 159.5}, {inf, 170}, {1, 65}, {10, 167.1}} // unsorted on purpose
	for _, c := range []struct{ q, want float64 }{
		// rank 85 in (1,5]: 1 + 4×(85−65)/(159.5−65)
		{0.5, 1 + 4*20/94.5},
		// rank 161.5 in (5,10]: 5 + 5×(161.5−159.5)/(167.1−159.5)
		{0.95, 5 + 5*2/7.6},
		// rank 168.3 above 167.1: the +Inf bucket gives the highest finite bound
		{0.99, 10},
		// rank 42.5 in the lowest bucket, from 0: 1×42.5/65
		{0.25, 42.5 / 65},
	} {
		if got := Quantile(c.q, bs); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	// Two layouts summed by le (1,+Inf from one source, 1,2,+Inf from
	// another): le=2 counts one source only and falls below le=1; the
	// monotonic envelope lifts it to le=1's 6. Rank 0.5×10 = 5 is in
	// (0,1]: 5/6.
	mixed := []Bucket{{1, 4}, {inf, 6}, {1, 2}, {2, 3}, {inf, 4}}
	if got := Quantile(0.5, mixed); math.Abs(got-5.0/6) > 1e-9 {
		t.Errorf("mixed layouts: %v, want %v", got, 5.0/6)
	}
	for _, c := range []struct {
		name string
		bs   []Bucket
	}{
		{"no observations", []Bucket{{1, 0}, {inf, 0}}},
		{"no +Inf bucket", []Bucket{{1, 3}, {2, 4}}},
		{"one bucket", []Bucket{{inf, 3}}},
		{"none", nil},
	} {
		if got := Quantile(0.5, c.bs); !math.IsNaN(got) {
			t.Errorf("%s: %v, want NaN", c.name, got)
		}
	}
}

// sources are the tests' reads: two callers of the checkout split (a
// sidecar over 10 s, a proxyless client over 5 s), two pods serving
// checkout-v1, and a pod that could not be read.
func sources(t *testing.T) []Source {
	frontendA := Delta(read(t, "testdata/frontend-a.before.txt"), read(t, "testdata/frontend-a.after.txt"), 10*time.Second)
	frontendB := Delta(read(t, "testdata/frontend-b.before.txt"), read(t, "testdata/frontend-b.after.txt"), 5*time.Second)
	inbound := func(before, after string) *Window {
		return Delta(parse(t, before), parse(t, after), 10*time.Second)
	}
	c := inbound(`# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="inbound|8080||"} 1000
# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="inbound|8080||"} 990
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="inbound|8080||"} 10
`, `# TYPE envoy_cluster_upstream_cx_active gauge
envoy_cluster_upstream_cx_active{envoy_cluster_name="inbound|8080||"} 5
# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="inbound|8080||"} 1300
# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="inbound|8080||"} 1287
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="inbound|8080||"} 13
`)
	d := inbound(`# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="inbound|8080||"} 0
`, `# TYPE envoy_cluster_upstream_cx_active gauge
envoy_cluster_upstream_cx_active{envoy_cluster_name="inbound|8080||"} 1
# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="inbound|8080||"} 200
# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="inbound|8080||"} 200
`)
	return []Source{
		{Name: "shop/frontend-a", Pod: &Pod{Namespace: "shop", Name: "frontend-a", Deployment: "frontend"}, Window: frontendA},
		{Name: "http://127.0.0.1:9102/metrics", Window: frontendB},
		{Name: "shop/checkout-v1-xyz", Pod: &Pod{Namespace: "shop", Name: "checkout-v1-xyz", Deployment: "checkout-v1"}, Window: c},
		{Name: "shop/checkout-v1-uvw", Pod: &Pod{Namespace: "shop", Name: "checkout-v1-uvw", Deployment: "checkout-v1"}, Window: d},
		{Name: "shop/frontend-c", Err: errors.New("stats port 15090 refused the connection")},
	}
}

var canary = []Split{{Namespace: "shop", Root: "checkout", Port: 80, Backends: []SplitBackend{{Service: "checkout-v1", Weight: 90}, {Service: "checkout-v2", Weight: 10}}}}

// TestComputeServices works the canary split out by hand.
//
// Request rates, each source's increase over its own window: frontend-a
// (10 s) sent 900 to checkout-v1 and 100 to checkout-v2, 90/s and 10/s;
// the proxyless client (5 s) 400 and 50, 80/s and 10/s. checkout-v1:
// 90+80 = 170/s, checkout-v2: 10+10 = 20/s, the root checkout 190/s; its
// own cluster counted nothing and is no backend: no row.
//
// Success: responses per second — v1: 90 + 80, all 2xx; v2: a 80/10 = 8
// and 20/10 = 2 (5xx), b 45/5 = 9 and 5/5 = 1 (5xx): 17 of 20 = 85 %; the
// root 187 of 190 = 98.42 %.
//
// Latency, bucket rates summed by le — v1: le=1 45+20 = 65, le=5
// 85.5+74 = 159.5, le=10 89.1+78 = 167.1, +Inf 90+80 = 170. p50: rank 85
// in (1,5]: 1+4×20/94.5 = 1.85 ms; p95: rank 161.5 in (5,10]:
// 5+5×2/7.6 = 6.32 ms; p99: rank 168.3 above le=10: 10 ms.
// v2: le=1 2+0 = 2, le=5 6+8 = 14, le=10 8.5+10 = 18.5, +Inf 20. p50: rank
// 10 in (1,5]: 1+4×8/12 = 3.67 ms; p95 (19) and p99 (19.8) above 18.5: 10.
// The root: 67, 173.5, 185.6, 190. p50: rank 95: 1+4×28/106.5 = 2.05 ms;
// p95: rank 180.5: 5+5×7/12.1 = 7.89 ms; p99: rank 188.1: 10.
//
// Observed split: 170/190 = 89.5 % and 20/190 = 10.5 % against 90/10.
// Connections at the later reads: v1 3+2, v2 1+1.
//
// catalog: 200 over IPv4 and 10 over IPv6 in 10 s: 21/s, 4xx is no
// failure: 100 %. web: its counters restarted at 30: 3/s. db: a headless
// endpoint with 4 connections and no requests. idle: nothing in the
// window: left out.
func TestComputeServices(t *testing.T) {
	tab := Compute(sources(t), Options{Kind: Services, Namespace: "shop", Splits: canary})
	f := func(v float64) *float64 { return &v }
	want := &Table{
		Kind: Services, Namespace: "shop", Seconds: 10, Sources: 4, Idle: 1,
		Problems: []string{"shop/frontend-c: stats port 15090 refused the connection"},
		Rows: []Row{
			{Namespace: "shop", Name: "catalog", RequestsPerSecond: 21, SuccessRate: f(1), Connections: 2, Ports: []int{80}, Sources: 1},
			{Namespace: "shop", Name: "checkout", RequestsPerSecond: 190, SuccessRate: f(187.0 / 190),
				P50: f(1 + 4*28/106.5), P95: f(5 + 5*7/12.1), P99: f(10), Connections: 7, Ports: []int{80}, Sources: 2,
				Backends: []Row{
					{Namespace: "shop", Name: "checkout-v1", RequestsPerSecond: 170, SuccessRate: f(1),
						P50: f(1 + 4*20/94.5), P95: f(5 + 5*2/7.6), P99: f(10), Connections: 5, Ports: []int{80}, Sources: 2,
						Share: f(170.0 / 190), Weight: f(0.9)},
					{Namespace: "shop", Name: "checkout-v2", RequestsPerSecond: 20, SuccessRate: f(17.0 / 20),
						P50: f(1 + 4*8/12.0), P95: f(10), P99: f(10), Connections: 2, Ports: []int{80}, Sources: 2,
						Share: f(20.0 / 190), Weight: f(0.1)},
				}},
			{Namespace: "shop", Name: "db", Connections: 4, Ports: []int{5432}, Sources: 1},
			{Namespace: "shop", Name: "web", RequestsPerSecond: 3, SuccessRate: f(1), Ports: []int{80}, Sources: 1},
		},
	}
	if d := cmp.Diff(want, tab, approx); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}

	// The table, as a person reads it.
	var out bytes.Buffer
	if err := Render(&out, tab, FormatTable); err != nil {
		t.Fatal(err)
	}
	wantText := `NAME             SUCCESS   RPS     P50      P95      P99      TCP   SPLIT   WEIGHT
catalog          100.00%   21.0    -        -        -        2     -       -
checkout         98.42%    190.0   2.05ms   7.89ms   10.0ms   7     -       -
├─ checkout-v1   100.00%   170.0   1.85ms   6.32ms   10.0ms   5     89.5%   90%
└─ checkout-v2   85.00%    20.0    3.67ms   10.0ms   10.0ms   2     10.5%   10%
db               -         0.0     -        -        -        4     -       -
web              100.00%   3.0     -        -        -        0     -       -
(1 idle Service not shown: no requests or connections; name one to see it)
! shop/frontend-c: stats port 15090 refused the connection
`
	if d := cmp.Diff(wantText, out.String()); d != "" {
		t.Errorf("table (-want +got):\n%s", d)
	}

	// JSON carries the same numbers.
	out.Reset()
	if err := Render(&out, tab, FormatJSON); err != nil {
		t.Fatal(err)
	}
	var back Table
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(tab, &back, approx); d != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", d)
	}
	for _, key := range []string{`"requestsPerSecond": 190`, `"observedShare": 0.8947`, `"p99Ms": 10`, `"weightShare": 0.9`} {
		if !strings.Contains(out.String(), key) {
			t.Errorf("JSON lacks %s:\n%s", key, out.String())
		}
	}

	// Every namespace: a NAMESPACE column; -o wide: ports and sources.
	out.Reset()
	all := Compute(sources(t), Options{Kind: Services, Name: "checkout-v2", Splits: canary})
	if err := Render(&out, all, FormatWide); err != nil {
		t.Fatal(err)
	}
	wantWide := `NAMESPACE   NAME             SUCCESS   RPS     P50      P95      P99      TCP   SPLIT   WEIGHT   PORTS   SOURCES
shop        checkout         98.42%    190.0   2.05ms   7.89ms   10.0ms   7     -       -        80      2
shop        ├─ checkout-v1   100.00%   170.0   1.85ms   6.32ms   10.0ms   5     89.5%   90%      80      2
shop        └─ checkout-v2   85.00%    20.0    3.67ms   10.0ms   10.0ms   2     10.5%   10%      80      2
! shop/frontend-c: stats port 15090 refused the connection
`
	if d := cmp.Diff(wantWide, out.String()); d != "" {
		t.Errorf("wide, naming a backend (-want +got):\n%s", d)
	}
}

// approx compares float64s to 1e-9 (the hand-worked quotients are not
// exact in binary).
var approx = cmp.Comparer(func(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(a))
})

func TestComputeSplits(t *testing.T) {
	w := func(clusters map[string]float64) []Source {
		s := Scrape{}
		for name, n := range clusters {
			s[name] = &Counters{Requests: n, HasRequests: true}
		}
		return []Source{{Name: "a", Window: Delta(Scrape{}, s, time.Second)}}
	}
	host := func(svc string) string { return svc + ".shop.svc.cluster.local" }
	// The root is one of its own backends; a backend named with its own
	// port (8080); requests on another port of the root are not split.
	splits := []Split{{Namespace: "shop", Root: "web", Port: 80, Backends: []SplitBackend{
		{Service: "web", Weight: 1}, {Service: "web-next", Port: 8080, Weight: 3}}}}
	tab := Compute(w(map[string]float64{
		"outbound|80||" + host("web"):        10,
		"outbound|8080||" + host("web-next"): 30,
		"outbound|9090||" + host("web"):      5,
		"outbound|80||" + host("web-next"):   7, // not web-next's split port: its own row
	}), Options{Namespace: "shop", Splits: splits})
	var got []string
	for _, r := range tab.Rows {
		got = append(got, r.Name+" "+rps(r.RequestsPerSecond))
		for _, b := range r.Backends {
			got = append(got, "  "+b.Name+" "+rps(b.RequestsPerSecond)+" "+percent(b.Share, 0)+" of "+percent(b.Weight, 0))
		}
	}
	// web's row is every request to web: 10 + 30 + 5 on port 9090, which
	// the split (port 80) does not take. The observed split is over the
	// backends' requests: 10 and 30 of 40, against weights 1 and 3.
	want := []string{"web 45.0", "  web 10.0 25% of 25%", "  web-next 30.0 75% of 75%", "web-next 7.0"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}

	// Two unconditional splits of one root: no declared weights; a
	// conditional one (matches) is not the root's whole split either.
	two := append(splits, Split{Namespace: "shop", Root: "web", Port: 80, Backends: []SplitBackend{{Service: "web", Weight: 1}}})
	tab = Compute(w(map[string]float64{"outbound|80||" + host("web"): 10}), Options{Splits: two})
	if b := tab.Rows[0].Backends; len(b) != 1 || b[0].Weight != nil {
		t.Errorf("two splits: backends %+v, want web without a declared weight", b)
	}
}

func TestComputeWorkloads(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	// checkout-v1's pods: 300 and 200 requests in 10 s, 3 of them 5xx.
	tab := Compute(sources(t), Options{Kind: Deployments, Namespace: "shop"})
	want := []Row{{Namespace: "shop", Name: "checkout-v1", RequestsPerSecond: 50, SuccessRate: f(497.0 / 500), Connections: 6, Ports: []int{8080}, Sources: 2}}
	if d := cmp.Diff(want, tab.Rows, approx); d != "" {
		t.Errorf("deploy (-want +got):\n%s", d)
	}
	// frontend served nothing (idle); the URL source is no pod.
	if tab.Idle != 1 || len(tab.Problems) != 2 || !strings.Contains(strings.Join(tab.Problems, "\n"), "http://127.0.0.1:9102/metrics: not a pod") {
		t.Errorf("idle %d, problems %q", tab.Idle, tab.Problems)
	}
	tab = Compute(sources(t), Options{Kind: Pods, Namespace: "shop", Name: "checkout-v1-xyz"})
	want = []Row{{Namespace: "shop", Name: "checkout-v1-xyz", RequestsPerSecond: 30, SuccessRate: f(297.0 / 300), Connections: 5, Ports: []int{8080}, Sources: 1}}
	if d := cmp.Diff(want, tab.Rows, approx); d != "" {
		t.Errorf("pod (-want +got):\n%s", d)
	}
	var out bytes.Buffer
	if err := Render(&out, Compute(nil, Options{Kind: Pods, Namespace: "shop"}), FormatTable); err != nil {
		t.Fatal(err)
	}
	if want := "No calls served by a pod in namespace shop over the last 0.0s, from 0 sources read.\n"; out.String() != want {
		t.Errorf("empty: %q, want %q", out.String(), want)
	}
}

// TestParseClusterReadsTheTranslator: every cluster the translator's
// goldens hold (translator/envoy/testdata, sidecars and proxyless gRPC
// clients) that is a Service's or the pod's own port parses, and only
// weft's own non-Service clusters do not.
func TestParseClusterReadsTheTranslator(t *testing.T) {
	files, err := filepath.Glob("../../../translator/envoy/testdata/*.clusters.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no cluster goldens: %v", err)
	}
	notService := regexp.MustCompile(`^(PassthroughCluster|BlackHoleCluster|InboundPassthroughCluster|admin|tracing-collector|app-probe\|\d+\|https?)$`)
	seen := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			name, ok := strings.CutPrefix(line, "name: ") // a resource's top-level name
			if !ok || seen[name] {
				continue
			}
			seen[name] = true
			c, ok := ParseCluster(name)
			switch {
			case notService.MatchString(name):
				if ok {
					t.Errorf("%s: %s parsed as %+v", f, name, c)
				}
			case !ok:
				t.Errorf("%s: weft stat cannot read cluster %q", f, name)
			}
		}
	}
	for _, want := range []string{"inbound|8080||", "outbound|80||checkout-v1.shop.svc.cluster.local", "outbound|3306|ipv6|web.shop.svc.cluster.local",
		"outbound|6379|tcp-split|cache.bank.svc.cluster.local", "outbound|5432|10.1.1.30|db.bank.svc.cluster.local"} {
		if !seen[want] {
			t.Errorf("the goldens no longer hold %s: check what the translator names it now", want)
		}
	}
	if c, _ := ParseCluster(ir.ClusterName(ir.ServiceKey{Namespace: "shop", Name: "web"}, 8080)); c != (Cluster{Direction: Outbound, Port: 8080, Namespace: "shop", Service: "web"}) {
		t.Errorf("ir.ClusterName reads as %+v", c)
	}
}

// TestStatsFilter: the filter keeps the four series of weft's Service and
// inbound clusters (full statistic names, as Envoy matches them) and
// nothing else.
func TestStatsFilter(t *testing.T) {
	re := regexp.MustCompile(StatsFilter)
	for name, keep := range map[string]bool{
		"cluster.outbound|80||checkout.shop.svc.cluster.local.upstream_rq_total":              true,
		"cluster.outbound|80||checkout.shop.svc.cluster.local.upstream_rq_5xx":                true,
		"cluster.outbound|80||checkout.shop.svc.cluster.local.upstream_rq_time":               true,
		"cluster.outbound|5432|10.1.0.2|db.shop.svc.cluster.local.upstream_cx_active":         true,
		"cluster.outbound|6379|tcp-split|ipv6|cache.bank.svc.cluster.local.upstream_rq_total": true,
		"cluster.inbound|8080||.upstream_rq_2xx":                                              true,
		"cluster.outbound|80||checkout.shop.svc.cluster.local.upstream_rq_503":                false,
		"cluster.outbound|80||checkout.shop.svc.cluster.local.upstream_cx_total":              false,
		"cluster.outbound|80||checkout.shop.svc.cluster.local.retry.upstream_rq_5xx":          true, // harmless: tagged envoy_cluster_retry_upstream_rq_xx, not read
		"cluster.PassthroughCluster.upstream_rq_total":                                        false,
		"http.outbound_80.downstream_rq_2xx":                                                  false,
	} {
		if got := re.MatchString(name); got != keep {
			t.Errorf("%s: kept %v, want %v", name, got, keep)
		}
	}
}
