package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/cli/stat"
	"github.com/weftmesh/weft/internal/testing/testenv"
)

// statsServer serves Prometheus text: the first read gets before, every
// later one after; it records the paths asked for.
type statsServer struct {
	*httptest.Server
	mu      sync.Mutex
	reads   int
	paths   []string
	queries []string
}

func newStatsServer(t *testing.T, l net.Listener, before, after string) *statsServer {
	s := &statsServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reads++
		n := s.reads
		s.paths = append(s.paths, r.URL.Path)
		s.queries = append(s.queries, r.URL.RawQuery)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		if n == 1 {
			_, _ = w.Write([]byte(before))
		} else {
			_, _ = w.Write([]byte(after))
		}
	}))
	if l != nil {
		s.Listener.Close()
		s.Listener = l
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func runStat(ctx context.Context, args ...string) (string, error) {
	cmd := statCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceErrors = true
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String() + errOut.String(), err
}

// TestStatMetricsURL runs `weft stat --metrics-url` against two small HTTP
// servers serving the texts internal/cli/stat's tests work out by hand (a
// sidecar's /stats/prometheus and a proxyless client's /metrics), with the
// canary TrafficSplit read from the real API server. The window is the
// real time between the reads, so rates are checked for being there; the
// numbers that do not depend on it (success within one source, the
// declared weights, connections) exactly.
func TestStatMetricsURL(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&v1alpha1.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: "shop"}, Spec: v1alpha1.TrafficSplitSpec{
			RootService: v1alpha1.RootServiceReference{Name: "checkout", Port: ptr.To[int32](80)},
			Backends:    []v1alpha1.Backend{{Name: "checkout-v1", Weight: ptr.To[int32](90)}, {Name: "checkout-v2", Weight: ptr.To[int32](10)}},
		}},
	} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	td := "../../internal/cli/stat/testdata/"
	// Each run reads fresh servers: a server answers its first read with
	// the earlier text.
	sources := func() (a, b *statsServer) {
		return newStatsServer(t, nil, readFile(t, td+"frontend-a.before.txt"), readFile(t, td+"frontend-a.after.txt")),
			newStatsServer(t, nil, readFile(t, td+"frontend-b.before.txt"), readFile(t, td+"frontend-b.after.txt"))
	}
	a, b := sources()
	gone := "http://127.0.0.1:1/metrics"

	out, err := runStat(ctx, "svc", "-n", "shop", "--interval", "300ms", "--kubeconfig", env.Kubeconfig,
		"--metrics-url", a.URL+"/stats/prometheus", "--metrics-url", b.URL+"/metrics", "--metrics-url", gone)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("weft stat:\n%s", out)
	rows := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			rows[strings.TrimLeft(f[0], "├└─")] = f
			if f[0] == "├─" || f[0] == "└─" {
				rows[f[1]] = f[1:]
			}
		}
	}
	// NAME SUCCESS RPS P50 P95 P99 TCP SPLIT WEIGHT
	for name, want := range map[string]map[int]string{
		"catalog":     {1: "100.00%", 6: "2", 7: "-", 8: "-"},
		"checkout":    {6: "7", 7: "-", 8: "-"},
		"checkout-v1": {1: "100.00%", 6: "5", 8: "90%"},
		"checkout-v2": {6: "2", 8: "10%"},
		"db":          {1: "-", 2: "0.0", 6: "4"},
		"web":         {1: "100.00%"},
	} {
		f := rows[name]
		if len(f) != 9 {
			t.Errorf("row %s: %q, want 9 columns", name, f)
			continue
		}
		for i, v := range want {
			if f[i] != v {
				t.Errorf("row %s column %d: %s, want %s", name, i, f[i], v)
			}
		}
		if name != "db" {
			if r, err := strconv.ParseFloat(f[2], 64); err != nil || r <= 0 {
				t.Errorf("row %s: RPS %s", name, f[2])
			}
		}
	}
	if !strings.Contains(out, "! "+gone+": ") || !strings.Contains(out, "nothing listens there") {
		t.Errorf("the URL that refuses is not reported with a hint:\n%s", out)
	}
	if rows["idle"] != nil {
		t.Error("an idle Service is shown")
	}

	// JSON, for one Service; the same split.
	a, b = sources()
	out, err = runStat(ctx, "svc/checkout", "-o", "json", "--interval", "300ms", "--kubeconfig", env.Kubeconfig,
		"--metrics-url", a.URL+"/stats/prometheus", "--metrics-url", b.URL+"/metrics")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var tab stat.Table
	if err := json.Unmarshal([]byte(out), &tab); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(tab.Rows) != 1 || tab.Rows[0].Name != "checkout" || len(tab.Rows[0].Backends) != 2 || tab.Sources != 2 {
		t.Fatalf("JSON: %s", out)
	}
	v2 := tab.Rows[0].Backends[1]
	// checkout-v2 failed 20 of 100 at one source and 5 of 50 at the other:
	// between 80 % and 90 %, whatever the windows.
	if v2.Name != "checkout-v2" || v2.SuccessRate == nil || *v2.SuccessRate < 0.8 || *v2.SuccessRate > 0.9 || *v2.Weight != 0.1 {
		t.Errorf("checkout-v2: %+v", v2)
	}

	// Offline splits; every source gone: an error that says so.
	out, err = runStat(ctx, "--metrics-url", gone, "--interval", "10ms", "--splits", "../../config/samples/canary.yaml")
	if err == nil || !strings.Contains(err.Error(), "no source could be read") || !strings.Contains(out, "nothing listens there") {
		t.Errorf("all sources gone: %v\n%s", err, out)
	}
}

// hostAddress is one of this machine's global unicast IPv4 addresses: the
// API server's pod proxy refuses loopback pod IPs.
func hostAddress() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

// TestStatPodProxy reads sidecars through the real API server's pod proxy.
// The test API server has no kubelet, but its pod proxy does not need
// one: it dials the pod's IP and port itself (pkg/registry/core/pod
// ResourceLocation). The pods' status carries this machine's address and
// their sidecars' weft-stats port is a small HTTP server's, so the path
// runs end to end: the request weft stat builds, the API server's proxy,
// the path the "sidecar" is asked for. Without a routable address on the
// machine, only the request is checked.
func TestStatPodProxy(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	sc := stat.Sidecars{Client: env.Client, REST: cs.CoreV1().RESTClient()}
	u := sc.StatsRequest(stat.SidecarPod{Pod: stat.Pod{Namespace: "shop", Name: "web-0"}, StatsPort: 15090}).URL()
	if want := "/api/v1/namespaces/shop/pods/web-0:15090/proxy/stats/prometheus"; u.Path != want {
		t.Errorf("request path %s, want %s", u.Path, want)
	}
	if q := u.Query(); !q.Has("usedonly") || q.Get("filter") != stat.StatsFilter {
		t.Errorf("request query %s, want usedonly and filter=%s", u.RawQuery, stat.StatsFilter)
	}

	// No sidecar anywhere yet: say how to turn injection on.
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}}}); err != nil {
		t.Fatal(err)
	}
	_, err = runStat(ctx, "deploy", "-n", "shop", "--kubeconfig", env.Kubeconfig, "--interval", "10ms")
	if err == nil || !strings.Contains(err.Error(), "kubectl label namespace shop weft.dev/inject=enabled") {
		t.Errorf("no sidecar: %v", err)
	}

	ip := hostAddress()
	if ip == "" {
		t.Skip("this machine has no global unicast IPv4 address for a pod IP; the request path was checked")
	}
	inbound := func(total, ok, fail, conns int) string {
		return "# TYPE envoy_cluster_upstream_cx_active gauge\n" +
			`envoy_cluster_upstream_cx_active{envoy_cluster_name="inbound|8080||"} ` + strconv.Itoa(conns) + "\n" +
			"# TYPE envoy_cluster_upstream_rq_total counter\n" +
			`envoy_cluster_upstream_rq_total{envoy_cluster_name="inbound|8080||"} ` + strconv.Itoa(total) + "\n" +
			"# TYPE envoy_cluster_upstream_rq_xx counter\n" +
			`envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="inbound|8080||"} ` + strconv.Itoa(ok) + "\n" +
			`envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="inbound|8080||"} ` + strconv.Itoa(fail) + "\n"
	}
	listen := func() net.Listener {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// Two pods of Deployment checkout-v1: 300 requests (3 failed) and 200.
	servers := map[string]*statsServer{
		"checkout-v1-5d8f9-aaaaa": newStatsServer(t, listen(), inbound(1000, 990, 10, 0), inbound(1300, 1287, 13, 5)),
		"checkout-v1-5d8f9-bbbbb": newStatsServer(t, listen(), inbound(0, 0, 0, 0), inbound(200, 200, 0, 1)),
	}
	pod := func(name string, port int, sidecar bool, phase corev1.PodPhase) {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{"app": "checkout", "pod-template-hash": "5d8f9"},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "checkout-v1-5d8f9", UID: "6b1c0b43-0000-4000-8000-000000000001", Controller: ptr.To(true)}}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}
		if sidecar {
			p.Spec.InitContainers = []corev1.Container{{Name: dataplane.SidecarContainerName, Image: "envoy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
				Ports: []corev1.ContainerPort{{Name: dataplane.StatsPortName, ContainerPort: int32(port)}}}}
		}
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		p.Status = corev1.PodStatus{Phase: phase, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		if err := env.Client.Status().Update(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for name, s := range servers {
		pod(name, s.Listener.Addr().(*net.TCPAddr).Port, true, corev1.PodRunning)
	}
	pod("no-sidecar", 0, false, corev1.PodRunning)
	pod("checkout-v1-5d8f9-pending", 1, true, corev1.PodPending) // not read: port 1 would refuse

	out, err := runStat(ctx, "pod", "-n", "shop", "-o", "json", "--interval", "300ms", "--kubeconfig", env.Kubeconfig)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var tab stat.Table
	if err := json.Unmarshal([]byte(out), &tab); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := map[string]string{}
	for _, r := range tab.Rows {
		got[r.Name] = strconv.FormatFloat(*r.SuccessRate, 'f', 4, 64) + " " + strconv.FormatFloat(r.Connections, 'f', 0, 64)
	}
	want := map[string]string{"checkout-v1-5d8f9-aaaaa": "0.9900 5", "checkout-v1-5d8f9-bbbbb": "1.0000 1"}
	if len(got) != 2 || got["checkout-v1-5d8f9-aaaaa"] != want["checkout-v1-5d8f9-aaaaa"] || got["checkout-v1-5d8f9-bbbbb"] != want["checkout-v1-5d8f9-bbbbb"] || len(tab.Problems) != 0 {
		t.Errorf("pods: %v, want %v\n%s", got, want, out)
	}
	for name, s := range servers {
		s.mu.Lock()
		paths := strings.Join(s.paths, ",")
		queries := s.queries
		s.mu.Unlock()
		if paths != "/stats/prometheus,/stats/prometheus" {
			t.Errorf("%s's sidecar was asked for %s, want /stats/prometheus twice", name, paths)
		}
		// The query reaches Envoy's admin through the API server's proxy.
		for _, q := range queries {
			if v, err := url.ParseQuery(q); err != nil || !v.Has("usedonly") || v.Get("filter") != stat.StatsFilter {
				t.Errorf("%s's sidecar was asked ?%s, want usedonly and the filter", name, q)
			}
		}
	}

	// The Deployment: both pods, grouped by their ReplicaSet's owner.
	out, err = runStat(ctx, "deploy", "-n", "shop", "--interval", "300ms", "--kubeconfig", env.Kubeconfig, "-o", "wide")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME ") {
		t.Fatalf("deploy:\n%s", out)
	}
	// NAME SUCCESS RPS P50 P95 P99 TCP PORTS SOURCES
	f := strings.Fields(lines[1])
	if len(f) != 9 || f[0] != "checkout-v1" || f[6] != "6" || f[7] != "8080" || f[8] != "2" {
		t.Errorf("deploy row %q", f)
	}
}
