package gamma

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane/sim"
	"github.com/weftmesh/weft/internal/testing/meshgen"
	"github.com/weftmesh/weft/translator"
)

var update = flag.Bool("update", false, "rewrite docs/conformance.md from this run")

// knownFailures are conformance tests of features weft claims that fail
// today, each with the issue item that fixes it. Whoever fixes the item
// deletes the line; a failing test not listed fails TestGAMMAConformance.
var knownFailures = map[string]string{}

// weightTolerance: a weight test passes when each backend's share of the
// route's weights is within this of the expected share. The distribution
// is read from the configuration, not sampled, so only rounding differs.
const weightTolerance = 0.01

// Result of one conformance test.
type Result struct {
	Test *Test
	// Outcome: "pass", "fail" or "unsupported".
	Outcome string
	// Status is what weft says of the test's routes (conditions that are
	// not plainly True), or what it cannot read.
	Status []string
	// Passed cases out of all, and why the others failed.
	Passed, Cases int
	Failures      []string
	// Notes on passing cases (how they passed).
	Notes []string
}

func root(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// conformanceVersion is the version of the conformance module that
// matches the Gateway API version weft builds against (go.mod's
// sigs.k8s.io/gateway-api): they are released together.
func conformanceVersion(t *testing.T) string {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "sigs.k8s.io/gateway-api")
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m sigs.k8s.io/gateway-api: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestGAMMAConformance(t *testing.T) {
	version := conformanceVersion(t)
	dir, err := ModuleDir(version)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := ReadTests(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(tests) == 0 {
		t.Fatalf("no mesh conformance test found in %s", dir)
	}
	var results []*Result
	for _, ct := range tests {
		r := replay(t, dir, ct)
		results = append(results, r)
		t.Logf("%s: %s (%d/%d cases) %s %s", ct.ShortName, r.Outcome, r.Passed, r.Cases, strings.Join(r.Status, "; "), strings.Join(r.Failures, "; "))
		if r.Outcome == "fail" {
			if item, ok := knownFailures[ct.ShortName]; ok {
				t.Logf("%s fails, known: %s", ct.ShortName, item)
			} else {
				t.Errorf("%s fails: %s", ct.ShortName, strings.Join(r.Failures, "; "))
			}
		}
		if len(ct.Unread) > 0 {
			t.Errorf("%s: the reader did not understand %v; teach suite.go", ct.ShortName, ct.Unread)
		}
	}
	doc := table(version, results)
	path := filepath.Join(root(t), "docs", "conformance.md")
	if *update {
		if err := os.WriteFile(path, doc, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	old, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(old, doc) {
		t.Errorf("docs/conformance.md is not this run's table: run go test ./internal/testing/gamma -run TestGAMMAConformance -update, and read the diff")
	}
}

// replay applies the test's manifests, builds what weft serves, and walks
// each expected request from its client pod.
func replay(t *testing.T, dir string, ct *Test) *Result {
	r := &Result{Test: ct, Cases: len(ct.Cases)}
	cl, err := Load(dir, append([]string{BaseManifests}, ct.Manifests...)...)
	if err != nil {
		t.Fatalf("%s: %v", ct.ShortName, err)
	}
	r.Status = append(r.Status, cl.Unsupported...)
	out := translator.Translate(cl.In)
	weftDropped := len(cl.Unsupported) > 0
	var routes []translator.PolicyKey
	for _, hr := range cl.In.HTTPRoutes {
		routes = append(routes, translator.PolicyKey{Kind: translator.KindHTTPRoute, Namespace: hr.Namespace, Name: hr.Name})
	}
	for _, gr := range cl.In.GRPCRoutes {
		routes = append(routes, translator.PolicyKey{Kind: translator.KindGRPCRoute, Namespace: gr.Namespace, Name: gr.Name})
	}
	for _, k := range routes {
		for _, c := range out.Status[k] {
			// ProxylessLimited speaks of proxyless gRPC clients; the
			// replay's clients have sidecars.
			plain := (c.Type != translator.ConditionPartiallyInvalid && c.Status == metav1.ConditionTrue) || c.Type == translator.ConditionProxylessLimited
			if !plain {
				r.Status = append(r.Status, fmt.Sprintf("%s %s: %s=%s %s: %s", k.Kind, k.Name, c.Type, c.Status, c.Reason, c.Message))
				// ResolvedRefs=False names a reference to something the
				// test's manifests do not create (MeshGRPCRouteWeight's
				// echo-v3, weight 0): reported, but it is no feature
				// weft lacks, and the cases say whether traffic is right.
				weftDropped = weftDropped || c.Type != v1alpha1.ConditionResolvedRefs
			}
		}
	}
	w, err := meshgen.BuildWorld(cl.In, func(p *corev1.Pod) []sim.AppSocket { return cl.Apps[p.Namespace+"/"+p.Name] })
	if err != nil {
		t.Fatalf("%s: %v", ct.ShortName, err)
	}
	for i, c := range ct.Cases {
		ok, why := runCase(cl, w, ct, c)
		name := c.Name
		if name == "" {
			name = fmt.Sprintf("case %d (%s %s%s)", i, c.Host, c.Path, headersString(c.Headers))
		}
		switch {
		case ok:
			r.Passed++
			if why != "" {
				r.Notes = append(r.Notes, name+" passes, but "+why)
			}
		default:
			r.Failures = append(r.Failures, name+": "+why)
		}
	}
	switch {
	case weftDropped:
		// weft says it does not implement what the test uses: the
		// cases' results say what users get instead.
		r.Outcome = "unsupported"
	case r.Passed == r.Cases:
		r.Outcome = "pass"
	default:
		r.Outcome = "fail"
	}
	return r
}

func headersString(h map[string]string) string {
	if len(h) == 0 {
		return ""
	}
	var parts []string
	for k, v := range h {
		parts = append(parts, k+": "+v)
	}
	sort.Strings(parts)
	return " [" + strings.Join(parts, ", ") + "]"
}

// runCase walks one expected response as the echo client would send it:
// Host defaults to "echo", the method to GET, the status to 200; the
// client's namespace completes short names (its resolv.conf search path).
func runCase(cl *Cluster, w *sim.World, ct *Test, c Case) (bool, string) {
	pod := cl.Pod(c.Client)
	if pod == nil {
		return false, fmt.Sprintf("no pod for client %+v", c.Client)
	}
	host := c.Host
	if c.HostPod != nil {
		p := cl.Pod(*c.HostPod)
		if p == nil {
			return false, fmt.Sprintf("no pod for %+v", *c.HostPod)
		}
		host = p.Status.PodIP + c.HostSuffix
	}
	if host == "" {
		host = "echo"
	}
	name, port := host, "80"
	if h, p, err := net.SplitHostPort(host); err == nil {
		name, port = h, p
	}
	to := name
	if _, err := netip.ParseAddr(name); err != nil && !strings.Contains(name, ".") {
		to = name + "." + c.Client.Namespace
	}
	call := sim.Call{From: pod.Namespace + "/" + pod.Name, To: net.JoinHostPort(to, port), Host: host, Method: c.Method, Path: c.Path, Protocol: sim.HTTP1, Headers: map[string]string{}}
	for k, v := range c.Headers {
		if strings.EqualFold(k, "host") {
			call.Host = v
			continue
		}
		call.Headers[k] = v
	}
	if call.Method == "" {
		call.Method = "GET"
	}
	if call.Path == "" {
		call.Path = "/"
	}
	if strings.EqualFold(c.Protocol, "grpc") {
		call.Protocol = sim.GRPC
	}
	v := w.Walk(call).Verdict
	codes := c.StatusCodes
	if len(codes) == 0 {
		codes = []int{200}
	}
	if ct.Weights != nil {
		return weights(v, ct.Weights)
	}
	note := ""
	if v.Kind == sim.PassthroughPlaintext {
		// The echo client sees the backend's answer; the conformance
		// test cannot tell that it left the mesh.
		note = "in plaintext outside the mesh (" + v.Reason + ")"
	}
	switch {
	case slices.Contains(codes, 200) && (v.Kind == sim.Delivered || v.Kind == sim.PassthroughPlaintext):
		backend, ns := podOf(v.Pod)
		if c.Backend != "" && !strings.HasPrefix(backend, c.Backend) {
			return false, fmt.Sprintf("reached %s, want a pod of %s", v.Pod, c.Backend)
		}
		if c.Namespace != "" && ns != c.Namespace {
			return false, fmt.Sprintf("reached %s, want namespace %s", v.Pod, c.Namespace)
		}
		if why := headersDiffer("request", c.RequestHeaders, c.AbsentRequestHeaders, v.RequestHeaders); why != "" {
			return false, fmt.Sprintf("reached %s, but %s", v.Pod, why)
		}
		if why := headersDiffer("response", c.ResponseHeaders, c.AbsentResponseHeaders, v.ResponseHeaders); why != "" {
			return false, fmt.Sprintf("reached %s, but %s", v.Pod, why)
		}
		return true, note
	case v.Status != 0 && slices.Contains(codes, v.Status):
		if c.Redirect != nil && v.Status >= 300 && v.Status < 400 {
			if why := redirectDiffers(call, c.Redirect, v.Location); why != "" {
				return false, why
			}
		}
		return true, ""
	}
	return false, fmt.Sprintf("want status %v from a pod of %q, got %s", codes, c.Backend, v)
}

// headersDiffer compares headers as the suite does (utils/http:
// CompareRoundTrip): each expected header's values joined with ","
// equal the expected value; names case-insensitive; absent ones absent.
func headersDiffer(what string, want map[string]string, absent []string, got map[string]string) string {
	low := map[string]string{}
	for k, v := range got {
		low[strings.ToLower(k)] = v
	}
	for k, v := range want {
		if g, ok := low[strings.ToLower(k)]; !ok || g != v {
			return fmt.Sprintf("%s header %s is %q, want %q", what, k, g, v)
		}
	}
	for _, k := range absent {
		if g, ok := low[strings.ToLower(k)]; ok {
			return fmt.Sprintf("%s header %s is %q, want it absent", what, k, g)
		}
	}
	return ""
}

// redirectDiffers compares a Location with the expected redirect as the
// suite does (utils/http: CompareRoundTrip, setRedirectRequestDefaults):
// an empty expected host is not compared, an empty scheme is the
// request's (http), an empty path the request's path; an empty port
// accepts the scheme's default or none.
func redirectDiffers(call sim.Call, want *Redirect, location string) string {
	u, err := url.Parse(location)
	if err != nil || location == "" {
		return fmt.Sprintf("redirect Location %q is not a URL", location)
	}
	exp := *want
	if exp.Host == "" {
		exp.Host = u.Hostname()
	}
	if exp.Scheme == "" {
		exp.Scheme = "http"
	}
	if exp.Path == "" {
		exp.Path, _, _ = strings.Cut(call.Path, "?")
	}
	port := u.Port()
	switch {
	case exp.Host != u.Hostname():
		return fmt.Sprintf("redirect Location %s: host %q, want %q", location, u.Hostname(), exp.Host)
	case exp.Port == "" && u.Scheme == "http" && port != "" && port != "80":
		return fmt.Sprintf("redirect Location %s: port %q, want 80 or none", location, port)
	case exp.Port == "" && u.Scheme == "https" && port != "" && port != "443":
		return fmt.Sprintf("redirect Location %s: port %q, want 443 or none", location, port)
	case exp.Port != "" && exp.Port != port:
		return fmt.Sprintf("redirect Location %s: port %q, want %q", location, port, exp.Port)
	case exp.Scheme != u.Scheme:
		return fmt.Sprintf("redirect Location %s: scheme %q, want %q", location, u.Scheme, exp.Scheme)
	case exp.Path != u.Path:
		return fmt.Sprintf("redirect Location %s: path %q, want %q", location, u.Path, exp.Path)
	}
	return ""
}

func podOf(key string) (name, ns string) {
	ns, name, _ = strings.Cut(key, "/")
	return name, ns
}

// weights compares the split the walk reports with the expected shares.
// A split member is a backend's when its cluster names the backend's
// Service (<name>.<namespace>...).
func weights(v sim.Verdict, want map[string]float64) (bool, string) {
	if v.Kind != sim.Delivered {
		return false, "not delivered: " + v.String()
	}
	got := map[string]float64{}
	total := 0.0
	for _, s := range v.Split {
		i := strings.LastIndex(s, "=")
		n, err := strconv.ParseFloat(s[i+1:], 64)
		if err != nil {
			return false, "unreadable split " + s
		}
		total += n
		for b := range want {
			if strings.Contains(s[:i], "|"+b+".") || strings.HasPrefix(s[:i], b+".") {
				got[b] += n
			}
		}
	}
	if total == 0 {
		return false, "no weighted split: " + v.String()
	}
	for b, share := range want {
		if math.Abs(got[b]/total-share) > weightTolerance {
			return false, fmt.Sprintf("split %v, want shares %v", v.Split, want)
		}
	}
	return true, ""
}

// table renders docs/conformance.md.
func table(version string, results []*Result) []byte {
	var b bytes.Buffer
	count := map[string]int{}
	for _, r := range results {
		count[r.Outcome]++
	}
	fmt.Fprintf(&b, `# Gateway API mesh (GAMMA) conformance

Generated by `+"`go test ./internal/testing/gamma -run TestGAMMAConformance -update`"+`: every
test of `+"`%s@%s`"+` (`+"`tests/mesh`"+`) replayed through weft's translator
and the traffic simulator (`+"`dataplane/sim`"+`). The tests, their manifests and
their expected request → backend results are read from the module's own
source (go/ast), not copied; the module version follows go.mod's
`+"`sigs.k8s.io/gateway-api`"+`. Each test's client is its echo pod with weft's
sidecar; a case passes when the walk ends where the test expects (the
backend's pod, or the expected status).

- **pass**: every case passes.
- **fail**: weft accepts everything the test applies, and a case fails.
- **unsupported**: weft reports (in the route's status, Accepted=False or
  PartiallyInvalid, or by refusing a kind) that it does not implement
  something the test uses; the cases say what a user gets instead. A
  ResolvedRefs=False (a reference to something the manifests do not
  create) is listed, and leaves the outcome to the cases.

Summary: %d tests — %d pass, %d fail, %d unsupported.

| test | weft | cases passed | weft's status, and the failing cases |
| --- | --- | --- | --- |
`, ConformanceModule, version, len(results), count["pass"], count["fail"], count["unsupported"])
	for _, r := range results {
		name := r.Test.ShortName
		if r.Test.Provisional {
			name += " (provisional)"
		}
		notes := append(append(append([]string(nil), r.Status...), r.Failures...), r.Notes...)
		if item, ok := knownFailures[r.Test.ShortName]; ok && r.Outcome == "fail" {
			notes = append([]string{"**known: " + item + "**"}, notes...)
		}
		fmt.Fprintf(&b, "| %s | %s | %d/%d | %s |\n", name, r.Outcome, r.Passed, r.Cases, cell(strings.Join(notes, "<br>")))
	}
	return b.Bytes()
}

func cell(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	return strings.ReplaceAll(s, "\n", " ")
}
