package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/certs/builtin"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/localmesh"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/internal/testing/xdsload"
	"github.com/weftmesh/weft/translator"
)

// TestCLI runs every `weft` command that reads a cluster against a running
// local mesh (internal/testing/localmesh, what `make run` starts): the
// built weft binary, the mesh's kubeconfig, two weft-controller replicas
// reached at their debug addresses (--address: no kubelet here serves the
// port-forward the CLI uses in a cluster, docs/design/140), the demo's
// proxyless workloads carrying calls. One mesh, subtests in order; each
// failure weft check detects is made for real, asserted (its ✖ line, its
// fix, exit 1), and undone before the next.
func TestCLI(t *testing.T) {
	suite := time.Now()
	m := startMesh(t, localmesh.Options{Replicas: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if out, err := m.ApplyDemoSamples(ctx); err != nil {
		t.Fatalf("applying the demo's samples: %v\n%s", err, out)
	}
	demo, err := m.StartDemo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &cli{m: m, ctx: ctx, demo: demo}
	for _, r := range m.Controllers() {
		c.addresses = append(c.addresses, "--address", r.Debug)
	}
	t.Logf("mesh (2 replicas) and demo up in %v", time.Since(suite).Round(100*time.Millisecond))
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *cli)
	}{
		{"check-healthy", testCheckHealthy},
		{"proxy-status", testProxyStatus},
		{"proxy-config", testProxyConfig},
		{"stat", testStat},
		{"explain", testExplainLive},
		{"check-webhook-down", testCheckWebhookDown},
		{"check-missing-sidecar", testCheckMissingSidecar},
		{"check-nack", testCheckNACK},
	} {
		start, ran := time.Now(), false
		t.Run(sc.name, func(t *testing.T) { ran = true; sc.run(t, c) })
		if ran {
			t.Logf("%s: %v", sc.name, time.Since(start).Round(100*time.Millisecond))
		}
	}
	t.Logf("TestCLI: %v in all", time.Since(suite).Round(100*time.Millisecond))
}

type cli struct {
	m         *localmesh.Mesh
	ctx       context.Context
	demo      *localmesh.Demo
	addresses []string // --address DEBUG for every replica
}

// weft runs the built weft with the mesh's kubeconfig and returns its
// standard output, standard error and exit code.
func (c *cli) weft(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runWeft(t, c.ctx, c.m, args...)
}

func runWeft(t *testing.T, ctx context.Context, m *localmesh.Mesh, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin("weft"), append([]string{"--kubeconfig", m.Env.Kubeconfig}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errOut.String(), 0
	case errors.As(err, &exit):
		return out.String(), errOut.String(), exit.ExitCode()
	}
	t.Fatalf("weft %v: %v", args, err)
	return "", "", -1
}

// check runs weft check (reaching the replicas at --address) and returns
// its lines by check name, the whole output and the exit code.
func (c *cli) check(t *testing.T) (map[string]checkLine, string, int) {
	t.Helper()
	out, stderr, code := c.weft(t, append([]string{"check"}, c.addresses...)...)
	return parseCheck(out), out + stderr, code
}

// checkLine is one check's mark (✔, ! or ✖), message and fix.
type checkLine struct{ Mark, Message, Fix string }

func parseCheck(out string) map[string]checkLine {
	lines := map[string]checkLine{}
	var last string
	for _, l := range strings.Split(out, "\n") {
		if len(l) > 0 && (strings.HasPrefix(l, "✔ ") || strings.HasPrefix(l, "! ") || strings.HasPrefix(l, "✖ ")) {
			mark, rest, _ := strings.Cut(l, " ")
			name, msg, _ := strings.Cut(rest, ": ")
			lines[name] = checkLine{Mark: mark, Message: msg}
			last = name
			continue
		}
		if last == "" {
			continue
		}
		cl := lines[last]
		if f, ok := strings.CutPrefix(l, "    fix: "); ok {
			cl.Fix = f
		} else if cl.Fix != "" {
			cl.Fix += "\n" + strings.TrimPrefix(l, "    ")
		} else {
			cl.Message += "\n" + strings.TrimPrefix(l, "    ")
		}
		lines[last] = cl
	}
	return lines
}

// checkNames are every line weft check prints on this mesh.
var checkNames = []string{"Kubernetes API", "CRDs", "weft-controller", "Injection webhook", "MeshConfig", "Root CA",
	"Injection namespaces", "Sidecars", "Connected proxies", "Workload certificates", "Policies"}

// wantHealthy fails unless every check is ✔ and the exit code 0.
func wantHealthy(t *testing.T, lines map[string]checkLine, out string, code int) {
	t.Helper()
	for _, n := range checkNames {
		if l, ok := lines[n]; !ok || l.Mark != "✔" {
			t.Errorf("check %q: %+v; want ✔", n, l)
		}
	}
	if code != 0 || len(lines) != len(checkNames) {
		t.Errorf("weft check: exit %d, %d lines; want 0 and %d lines, all ✔", code, len(lines), len(checkNames))
	}
	if t.Failed() {
		t.Logf("weft check:\n%s", out)
	}
}

// wantFailure fails unless check name is ✖ with a message and a fix that
// contain the given strings, and the exit code is 1.
func wantFailure(t *testing.T, lines map[string]checkLine, out string, code int, name string, message, fix []string) {
	t.Helper()
	l := lines[name]
	ok := l.Mark == "✖" && code == 1
	for _, s := range message {
		ok = ok && strings.Contains(l.Message, s)
	}
	for _, s := range fix {
		ok = ok && strings.Contains(l.Fix, s)
	}
	if !ok {
		t.Errorf("weft check, exit %d, %q: %+v; want ✖ with a message containing %q and a fix containing %q, exit 1\n%s", code, name, l, message, fix, out)
	}
}

func testCheckHealthy(t *testing.T, c *cli) {
	var lines map[string]checkLine
	var out string
	var code int
	// Workload certificates are issued as the demo starts; the healthy
	// state is the settled one.
	testkit.EventuallyTrue(t, "weft check all ✔", func() bool {
		lines, out, code = c.check(t)
		return code == 0
	})
	wantHealthy(t, lines, out, code)
	for name, want := range map[string]string{
		"weft-controller":   "available, 2 of 2 replicas ready",
		"Injection webhook": "Service weft-webhook has 2 ready endpoint(s); it injected a dry-run pod in default",
		"Connected proxies": "all 4 running meshed pods (0 with a sidecar, 4 proxyless) have an xDS stream, over 2 replica(s)",
		"Policies":          "all 3 Accepted, ResolvedRefs and Programmed",
	} {
		if !strings.Contains(lines[name].Message, want) {
			t.Errorf("%s: %q; want it to say %q", name, lines[name].Message, want)
		}
	}
	if !regexp.MustCompile(`^[1-9][0-9]* issued, no issue failure, none near expiry, over 2 replica\(s\)$`).MatchString(lines["Workload certificates"].Message) {
		t.Errorf("Workload certificates: %q; want both replicas' /metrics read through the pod proxy", lines["Workload certificates"].Message)
	}
	t.Logf("weft check:\n%s", out)
}

// proxyRow is one row of weft proxy-status: the proxy, its replica and
// per type (CDS, EDS, LDS, RDS, SDS) its state with generations.
type proxyRow struct {
	Proxy, Replica string
	Types          map[string]string
}

var proxyRowRE = regexp.MustCompile(`^(\S+) \(stream (\d+)\)\s+(\S+)\s+(\S+)\s+(\d+)\s+(.*)$`)

func parseProxyStatus(t *testing.T, out string) []proxyRow {
	t.Helper()
	var rows []proxyRow
	for _, l := range strings.Split(out, "\n") {
		m := proxyRowRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		cells := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(m[6]), -1)
		if len(cells) != 5 {
			t.Fatalf("proxy-status row %q: %d type cells, want 5", l, len(cells))
		}
		r := proxyRow{Proxy: m[1], Replica: m[4], Types: map[string]string{}}
		for i, typ := range []string{"CDS", "EDS", "LDS", "RDS", "SDS"} {
			r.Types[typ] = cells[i]
		}
		rows = append(rows, r)
	}
	return rows
}

func testProxyStatus(t *testing.T, c *cli) {
	// A push (a workload certificate renewed, the trust bundle published)
	// leaves a stream STALE until its proxy answers: wait until none is.
	var out, stderr string
	var code int
	start, stale := time.Now(), 0
	testkit.EventuallyTrue(t, "weft proxy-status with every stream SYNCED", func() bool {
		out, stderr, code = c.weft(t, append([]string{"proxy-status"}, c.addresses...)...)
		if strings.Contains(out, "STALE ") {
			stale++
			return false
		}
		return code == 0
	})
	t.Logf("every stream SYNCED after %v (%d reads saw a STALE type)", time.Since(start).Round(10*time.Millisecond), stale)
	if code != 0 {
		t.Fatalf("weft proxy-status: exit %d\n%s%s", code, out, stderr)
	}
	rows := parseProxyStatus(t, out)
	// Every stream each replica reports is a row, under its replica.
	want := 0
	replicas := map[string]bool{}
	for _, r := range c.m.Controllers() {
		ps, err := debugProxies(r.Debug)
		if err != nil {
			t.Fatal(err)
		}
		want += len(ps)
	}
	pods := map[string]bool{}
	synced := regexp.MustCompile(`^SYNCED (\d+)/(\d+)$`)
	for _, r := range rows {
		replicas[r.Replica] = true
		pods[r.Proxy] = true
		held := 0
		for typ, st := range r.Types {
			if st == "-" {
				continue
			}
			held++
			m := synced.FindStringSubmatch(st)
			if m == nil || m[1] != m[2] || m[1] == "0" {
				t.Errorf("%s on %s, %s: %q; want SYNCED n/n", r.Proxy, r.Replica, typ, st)
			}
		}
		if held == 0 {
			t.Errorf("%s on %s: no type held", r.Proxy, r.Replica)
		}
	}
	if len(rows) != want {
		t.Errorf("weft proxy-status: %d rows; the replicas' /debug/proxies list %d streams\n%s", len(rows), want, out)
	}
	for _, w := range []string{"frontend-0", "checkout-v1-0", "checkout-v2-0", "catalog-0"} {
		if !pods[w+"."+localmesh.DemoNamespace] {
			t.Errorf("weft proxy-status lists no stream of %s\n%s", w, out)
		}
	}
	// The forwarder spreads the streams over both replicas.
	if len(replicas) != 2 {
		t.Errorf("weft proxy-status shows streams on %d replicas (%v); want both\n%s", len(replicas), replicas, out)
	}
	// The frontend (a client) holds every type but secrets on its
	// application's stream, and secrets on its agent's.
	types := map[string]bool{}
	for _, r := range rows {
		if r.Proxy == "frontend-0.shop" {
			for typ, st := range r.Types {
				if st != "-" {
					types[typ] = true
				}
			}
		}
	}
	if len(types) != 5 {
		t.Errorf("frontend-0's streams hold %v; want all five types SYNCED\n%s", types, out)
	}
	t.Logf("weft proxy-status: %d streams of %d pods over %d replicas\n%s", len(rows), len(pods), len(replicas), out)
}

func testProxyConfig(t *testing.T, c *cli) {
	for typ, want := range map[string][]string{
		"listeners": {"listeners:", "checkout.shop:80", "catalog.shop:80"},
		"routes":    {"routes:", "outbound|80||checkout-v1.shop.svc.cluster.local", "outbound|80||checkout-v2.shop.svc.cluster.local", "weight: 90", "weight: 10"},
		"clusters":  {"clusters:", "outbound|80||checkout-v1.shop.svc.cluster.local", "outbound|80||catalog.shop.svc.cluster.local"},
		"endpoints": {"endpoints:", "clusterName: outbound|80||checkout-v2.shop.svc.cluster.local", c.m.HostIP},
		"secrets":   {"secrets:", "name: workload-cert", "name: trust-bundle", "REDACTED"},
	} {
		out, stderr, code := c.weft(t, append([]string{"proxy-config", "shop/frontend-0", typ}, c.addresses...)...)
		if code != 0 {
			t.Errorf("weft proxy-config shop/frontend-0 %s: exit %d\n%s%s", typ, code, out, stderr)
			continue
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("weft proxy-config shop/frontend-0 %s: no %q in\n%s", typ, w, out)
			}
		}
		for _, other := range []string{"listeners:", "routes:", "clusters:", "endpoints:", "secrets:"} {
			if other != typ+":" && strings.Contains(out, "\n"+other) || (other != typ+":" && strings.HasPrefix(out, other)) {
				t.Errorf("weft proxy-config shop/frontend-0 %s also prints %s", typ, other)
			}
		}
		t.Logf("weft proxy-config shop/frontend-0 %s: %d lines", typ, strings.Count(out, "\n"))
	}
	// Everything, every pod: no private key, no certificate.
	for _, pod := range []string{"frontend-0", "checkout-v1-0", "catalog-0"} {
		out, stderr, code := c.weft(t, append([]string{"proxy-config", "shop/" + pod, "all", "-o", "json"}, c.addresses...)...)
		if code != 0 {
			t.Errorf("weft proxy-config shop/%s all: exit %d\n%s", pod, code, stderr)
		}
		for _, secret := range []string{"PRIVATE KEY", "BEGIN CERTIFICATE", "privateKey", "inlineBytes"} {
			if strings.Contains(out, secret) {
				t.Errorf("weft proxy-config shop/%s all shows %q: secrets must be redacted", pod, secret)
			}
		}
	}
	// A pod that has no stream is named as such.
	_, stderr, code := c.weft(t, append([]string{"proxy-config", "shop/nothere-0", "routes"}, c.addresses...)...)
	if code == 0 || !strings.Contains(stderr, "connected to no weft-controller replica") {
		t.Errorf("weft proxy-config of a pod without a stream: exit %d, %q; want an error naming it not connected", code, stderr)
	}
}

var statRowRE = regexp.MustCompile(`(?m)^(?:[├└]─ )?(\S+)\s+([0-9.]+)%\s+([0-9.]+)\s`)

func testStat(t *testing.T, c *cli) {
	url := c.demo.Frontend.MetricsURL()
	out, stderr, code := c.weft(t, "stat", "svc", "-n", localmesh.DemoNamespace, "--metrics-url", url, "--interval", "3s")
	if code != 0 {
		t.Fatalf("weft stat: exit %d\n%s%s", code, out, stderr)
	}
	got := map[string][2]float64{}
	for _, m := range statRowRE.FindAllStringSubmatch(out, -1) {
		success, _ := strconv.ParseFloat(m[2], 64)
		rps, _ := strconv.ParseFloat(m[3], 64)
		got[m[1]] = [2]float64{success, rps}
	}
	for _, svc := range []string{"checkout", "checkout-v1", "checkout-v2", "catalog"} {
		if g, ok := got[svc]; !ok || g[1] <= 0 || g[0] != 100 {
			t.Errorf("weft stat svc: %s %v; want a row with RPS > 0 and 100%% success\n%s", svc, g, out)
		}
	}
	// The frontend calls each Service 20 times a second (weft-demo's
	// default rate): the two reads 3 s apart see that rate.
	if r := got["checkout"][1]; r < 10 || r > 40 {
		t.Errorf("weft stat svc: checkout at %v RPS; the frontend calls it 20 times a second", r)
	}
	t.Logf("weft stat svc -n shop --metrics-url ...:\n%s", out)

	// Without --metrics-url, weft stat reads sidecars through the pod
	// proxy; the demo's pods are proxyless: it says so, and what to give.
	_, stderr, code = c.weft(t, "stat", "-n", localmesh.DemoNamespace)
	if code == 0 || !strings.Contains(stderr, "4 meshed pods are proxyless gRPC") || !strings.Contains(stderr, "--metrics-url") || strings.Contains(stderr, "is injection enabled?") {
		t.Errorf("weft stat -n shop on proxyless pods: exit %d, %q; want an error saying its 4 meshed pods are proxyless and pointing at --metrics-url/--prometheus", code, stderr)
	}
}

func testExplainLive(t *testing.T, c *cli) {
	out, stderr, code := c.weft(t, "explain", "--from", "shop/frontend-0", "--to", "checkout.shop:80")
	// frontend-0 is a proxyless gRPC client: no sidecar and no capture
	// rules, its gRPC library applies what weft sends. The simulator
	// walks sidecars; explain must not present the call as a plaintext
	// call outside the mesh.
	if strings.Contains(out, "plaintext") || strings.Contains(out, "not captured") {
		t.Errorf("weft explain --from shop/frontend-0 (proxyless) walks it as an unmeshed pod:\n%s%s", out, stderr)
	}
	if code == 0 || !strings.Contains(stderr, "proxyless gRPC") || !strings.Contains(stderr, "weft proxy-config shop/frontend-0 routes") {
		t.Errorf("weft explain --from a proxyless pod: exit %d, %q; want an error saying it is proxyless and pointing at weft proxy-config", code, stderr)
	}

	// A sidecar pod the real webhook injects, and a Service with a
	// sidecar server: explain walks both sidecars over the live cluster.
	const ns = "explain"
	c.namespaceMeshed(t, ns)
	for _, p := range []struct {
		name, app, ip string
		port          int32
	}{{"client-0", "client", "10.244.7.10", 0}, {"web-0", "web", "10.244.7.20", 8080}} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: ns, Labels: map[string]string{"app": p.app}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		if p.port != 0 {
			pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: p.port}}
		}
		created, err := c.m.Clientset().CoreV1().Pods(ns).Create(c.ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Not ready, just started: weft check's Connected proxies does
		// not count it yet (no sidecar runs here for it).
		created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.ip, PodIPs: []corev1.PodIP{{IP: p.ip}}, StartTime: ptr.To(metav1.Now())}
		if _, err := c.m.Clientset().CoreV1().Pods(ns).UpdateStatus(c.ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = c.m.Clientset().CoreV1().Pods(ns).Delete(context.Background(), p.name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
		})
	}
	y := serviceYAML(ns, "web", "web")
	if out, err := c.m.ApplyYAML(c.ctx, y); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.7.20"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web-0"}}}}
	if _, err := c.m.Clientset().DiscoveryV1().EndpointSlices(ns).Create(c.ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = c.weft(t, "explain", "--from", ns+"/client-0", "--to", "web."+ns+":80")
	if code != 0 || !strings.Contains(out, "Verdict: DELIVERED to explain/web-0 port 8080 over mutual TLS") {
		t.Errorf("weft explain --from explain/client-0 --to web.explain:80: exit %d; want DELIVERED over mutual TLS to explain/web-0\n%s%s", code, out, stderr)
	}
	t.Logf("weft explain (live, sidecars):\n%s", out)
}

// namespaceMeshed creates namespace ns labelled weft.dev/inject=enabled.
func (c *cli) namespaceMeshed(t *testing.T, ns string) {
	t.Helper()
	y := fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels:\n    weft.dev/inject: enabled\n", ns)
	if out, err := c.m.ApplyYAML(c.ctx, y); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// testCheckWebhookDown: the webhook's endpoints are gone, then name a
// port where nothing listens (its pods died and their endpoints are
// stale): weft check fails Injection webhook, with the fix for each.
func testCheckWebhookDown(t *testing.T, c *cli) {
	slices := c.m.Clientset().DiscoveryV1().EndpointSlices(localmesh.SystemNamespace)
	list, err := slices.List(c.ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=weft-webhook"})
	if err != nil || len(list.Items) == 0 {
		t.Fatalf("the webhook's EndpointSlices: %v (%d)", err, len(list.Items))
	}
	t.Cleanup(func() {
		if err := c.m.ControllerGone(context.Background()); err != nil { // rewrites them from the live replicas
			t.Error(err)
		}
	})
	// Nothing listens on a port handed out and closed.
	dead := freeAddr(t)
	_, deadPort, _ := strings.Cut(dead, ":")
	n, _ := strconv.Atoi(deadPort)
	for i := range list.Items {
		s := list.Items[i]
		s.Ports[0].Port = ptr.To(int32(n))
		if _, err := slices.Update(c.ctx, &s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lines, out, code := c.check(t)
	wantFailure(t, lines, out, code, "Injection webhook",
		[]string{"a dry-run pod labelled weft.dev/inject=true in default was refused", "connection refused", "pods in injected namespaces cannot be created"},
		[]string{"nothing listens behind Service weft-system/weft-webhook"})
	t.Logf("webhook endpoints on a dead port: %s: %s\n    fix: %s", lines["Injection webhook"].Mark, lines["Injection webhook"].Message, lines["Injection webhook"].Fix)

	for i := range list.Items {
		if err := slices.Delete(c.ctx, list.Items[i].Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lines, out, code = c.check(t)
	wantFailure(t, lines, out, code, "Injection webhook",
		[]string{"Service weft-system/weft-webhook has no ready endpoint: the webhook is unreachable"},
		[]string{"kubectl -n weft-system get pods -l app.kubernetes.io/name=weft-controller"})
	t.Logf("no webhook endpoints: %s: %s\n    fix: %s", lines["Injection webhook"].Mark, lines["Injection webhook"].Message, lines["Injection webhook"].Fix)
	for name, l := range lines {
		if name != "Injection webhook" && l.Mark == "✖" {
			t.Errorf("with the webhook down, %s also fails: %+v", name, l)
		}
	}

	if err := c.m.ControllerGone(c.ctx); err != nil {
		t.Fatal(err)
	}
	lines, out, code = c.check(t)
	wantHealthy(t, lines, out, code)
}

// testCheckMissingSidecar: a pod created before its namespace was
// labelled for injection runs without the sidecar; weft check names it
// and the command that recreates it.
func testCheckMissingSidecar(t *testing.T, c *cli) {
	const ns = "late"
	if out, err := c.m.ApplyYAML(c.ctx, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: late\n"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	pods := c.m.Clientset().CoreV1().Pods(ns)
	p, err := pods.Create(c.ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "legacy-0", Labels: map[string]string{"app": "legacy"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.8.10", PodIPs: []corev1.PodIP{{IP: "10.244.8.10"}}}
	if _, err := pods.UpdateStatus(c.ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.namespaceMeshed(t, ns)
	defer func() {
		_ = pods.Delete(context.Background(), "legacy-0", metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
		// Unlabelled: the namespace cannot be deleted here (no namespace
		// controller finalizes it).
		_, _ = c.m.Env.Kubectl(context.Background(), nil, "label", "namespace", ns, dataplane.LabelInject+"-")
	}()
	lines, out, code := c.check(t)
	wantFailure(t, lines, out, code, "Sidecars",
		[]string{"1 pod(s) started without the sidecar", "late/legacy-0"},
		[]string{"kubectl delete pod legacy-0 -n late"})
	t.Logf("%s Sidecars: %s\n    fix: %s", lines["Sidecars"].Mark, lines["Sidecars"].Message, lines["Sidecars"].Fix)
}

// testCheckNACK: a simulated Envoy (as scenario 5: no Envoy runs here and
// gRPC-Go accepts everything weft sends) rejects a TrafficSplit's route
// configuration; weft check fails Policies with the proxy's reason and
// weft proxy-status shows RDS NACKED for it, with the reason; the revert
// makes both healthy again.
func testCheckNACK(t *testing.T, c *cli) {
	const ns = "cli"
	c.namespaceMeshed(t, ns)
	if out, err := c.m.ApplyYAML(c.ctx, serviceYAML(ns, "cart", "cart")+serviceYAML(ns, "cart-v1", "cart,v1")+serviceYAML(ns, "cart-v2", "cart,v2")+
		trafficSplitYAML(ns, "cart", "cart-v1", 80, "cart-v2", 20)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	const route = "outbound|80||cart.cli.svc.cluster.local"
	const refusal = "simulated Envoy (weft's e2e test): refusing route configuration " + route + ": it splits cart 50/50"
	md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: "envoy",
		dataplane.MetaLabels: map[string]any{"app": "envoy"}})
	envoy := &xdsload.Proxy{Node: &corev3.Node{Id: "envoy-0." + ns, Metadata: md}, Token: saToken(t, c.m.Env, ns, "envoy"),
		Reject: func(r *discoveryv3.DeltaDiscoveryResponse) string {
			if r.TypeUrl == resourcev3.RouteType && splitsEvenly(t, r, route) {
				return refusal
			}
			return ""
		}}
	ctx, stop := context.WithCancel(c.ctx)
	defer stop()
	go envoy.Keep(ctx, dialSidecarPort(t, c.m.Env, c.m.XDSTLSAddress), time.Second)
	kubectlWait(t, c.ctx, c.m, ns, "trafficsplit/cart", "Programmed")

	if out, err := c.m.Env.Kubectl(c.ctx, nil, "patch", "-n", ns, "trafficsplit", "cart", "--type=merge", "-p",
		`{"spec":{"backends":[{"name":"cart-v1","weight":50},{"name":"cart-v2","weight":50}]}}`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	kubectlWait(t, c.ctx, c.m, ns, "trafficsplit/cart", "Programmed=False")
	lines, out, code := c.check(t)
	wantFailure(t, lines, out, code, "Policies",
		[]string{"1 of 4 not in effect", "TrafficSplit cli/cart: Programmed=False (ProxyRejected)", "envoy-0.cli", refusal},
		[]string{"kubectl describe trafficsplit cart -n cli"})
	for name, l := range lines {
		if name != "Policies" && l.Mark != "✔" {
			t.Errorf("with one NACK, %s is %+v; want ✔", name, l)
		}
	}
	t.Logf("%s Policies: %s\n    fix: %s", lines["Policies"].Mark, lines["Policies"].Message, lines["Policies"].Fix)

	psOut, stderr, psCode := c.weft(t, append([]string{"proxy-status"}, c.addresses...)...)
	var envoyRow *proxyRow
	rows := parseProxyStatus(t, psOut)
	for i, r := range rows {
		if r.Proxy == "envoy-0."+ns {
			envoyRow = &rows[i]
		}
	}
	switch {
	case psCode != 0:
		t.Errorf("weft proxy-status: exit %d\n%s%s", psCode, psOut, stderr)
	case envoyRow == nil:
		t.Errorf("weft proxy-status lists no envoy-0.%s\n%s", ns, psOut)
	default:
		if !regexp.MustCompile(`^NACKED \d+/\d+$`).MatchString(envoyRow.Types["RDS"]) {
			t.Errorf("envoy-0.%s RDS: %q; want NACKED", ns, envoyRow.Types["RDS"])
		}
		for _, typ := range []string{"CDS", "EDS", "LDS"} {
			if !strings.HasPrefix(envoyRow.Types[typ], "SYNCED ") {
				t.Errorf("envoy-0.%s %s: %q; want SYNCED (only its routes were refused)", ns, typ, envoyRow.Types[typ])
			}
		}
		if !strings.Contains(psOut, "envoy-0."+ns+" RDS NACKED at ") || !strings.Contains(psOut, refusal) {
			t.Errorf("weft proxy-status does not list envoy-0.%s's rejection with its reason\n%s", ns, psOut)
		}
		for _, r := range rows {
			if r.Proxy != envoyRow.Proxy && strings.Contains(strings.Join(mapValues(r.Types), " "), "NACKED") {
				t.Errorf("%s on %s shows a NACK: %v", r.Proxy, r.Replica, r.Types)
			}
		}
	}
	t.Logf("weft proxy-status with the NACK:\n%s", psOut)

	if out, err := c.m.Env.Kubectl(c.ctx, nil, "patch", "-n", ns, "trafficsplit", "cart", "--type=merge", "-p",
		`{"spec":{"backends":[{"name":"cart-v1","weight":80},{"name":"cart-v2","weight":20}]}}`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	kubectlWait(t, c.ctx, c.m, ns, "trafficsplit/cart", "Programmed")
	lines, out, code = c.check(t)
	wantHealthy(t, lines, out, code)
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func kubectlWait(t *testing.T, ctx context.Context, m *localmesh.Mesh, ns, object, condition string) {
	t.Helper()
	if out, err := m.Env.Kubectl(ctx, nil, "wait", "-n", ns, object, "--for=condition="+condition, "--timeout=120s"); err != nil {
		st, _ := m.Env.Kubectl(ctx, nil, "get", "-n", ns, object, "-o", "yaml")
		t.Fatalf("%v\n%s\n%s", err, out, st)
	}
}

// TestCLICheckExpiringRoot: a mesh whose built-in root has 20 days left
// (its root Secret written before weft-controller starts, exactly as the
// leader writes one: builtin.RootStore, with a 20-day lifetime) — weft
// check fails Root CA with the days left and the rotation command. A mesh
// of its own: the root is read at start, and the shared one's root must
// stay healthy.
func TestCLICheckExpiringRoot(t *testing.T) {
	m := startMesh(t, localmesh.Options{BeforeControllers: func(ctx context.Context, m *localmesh.Mesh) error {
		store := &builtin.RootStore{Client: m.Env.Client, Namespace: localmesh.SystemNamespace, TrustDomain: translator.DefaultTrustDomain, Lifetime: 20 * 24 * time.Hour}
		_, err := store.Ensure(ctx)
		return err
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var lines map[string]checkLine
	var out string
	var code int
	// The leader reports the root in MeshConfig's status; create the
	// MeshConfig and wait for it.
	if o, err := m.Env.Kubectl(ctx, nil, "apply", "-f", m.Env.Root+"/config/samples/meshconfig.yaml"); err != nil {
		t.Fatalf("%v\n%s", err, o)
	}
	testkit.EventuallyTrue(t, "weft check reports the root", func() bool {
		o, e, c := runWeft(t, ctx, m, "check", "--address", m.Controllers()[0].Debug)
		lines, out, code = parseCheck(o), o+e, c
		return !strings.Contains(lines["Root CA"].Message, "no built-in root reported")
	})
	wantFailure(t, lines, out, code, "Root CA",
		[]string{"days left)"},
		[]string{"weft ca rotate-root --wait"})
	if !regexp.MustCompile(`\((19|20) days left\)$`).MatchString(lines["Root CA"].Message) {
		t.Errorf("Root CA: %q; want 19 or 20 days left", lines["Root CA"].Message)
	}
	t.Logf("%s Root CA: %s\n    fix: %s", lines["Root CA"].Mark, lines["Root CA"].Message, lines["Root CA"].Fix)
}
