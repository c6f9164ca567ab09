package offline

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/dataplane/sim"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
)

// Protocols are the values of `weft explain --protocol`, by the
// simulator's protocol.
var Protocols = map[string]sim.Protocol{
	"http":         sim.HTTP1,
	"h2c":          sim.H2C,
	"grpc":         sim.GRPC,
	"websocket":    sim.WebSocket,
	"tcp":          sim.TCP,
	"server-first": sim.ServerFirst,
}

// ProtocolNames lists Protocols' keys, sorted, for help and errors.
func ProtocolNames() []string {
	var out []string
	for k := range Protocols {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Explanation is one walk and the mesh it walked.
type Explanation struct {
	Call   sim.Call
	Result sim.Result
	// Notes are translation warnings and policies that are not Accepted or
	// not ResolvedRefs: they may be why the walk went as it did.
	Notes []string
	// AuthPolicies are the AuthPolicies that select the pod where the walk
	// ended (its namespace's, and its Services'), as "Allow AuthPolicy
	// ns/name".
	AuthPolicies []string
	// Passthrough: the caller's own sidecar sent the request out through its
	// passthrough cluster (in plaintext), not as a mesh call.
	Passthrough bool
}

// Explain walks call through the World of in, built as weft-controller
// would configure it.
func Explain(in *translator.Inputs, call sim.Call) (*Explanation, error) {
	out := translator.Translate(in)
	w, err := World(in, out.Mesh)
	if err != nil {
		return nil, err
	}
	if call.From != "" && !hasPod(w, call.From) {
		return nil, fmt.Errorf("--from %s: no such pod in the manifests (pods: %s)", call.From, strings.Join(podKeys(w), ", "))
	}
	if pod := podByKey(in, call.From); pod != nil && isProxyless(pod) {
		return nil, fmt.Errorf("--from %s is a proxyless gRPC pod (%s): its gRPC library applies weft's configuration itself — no sidecar, no capture rules — and weft explain walks sidecars only. What it was sent: weft proxy-config %s routes (live) or weft translate -f ... --proxy %s; whether it took it: weft proxy-status",
			call.From, dataplane.AnnotationProxyless, call.From, call.From)
	}
	e := &Explanation{Call: call, Result: w.Walk(call)}
	if pod := podByKey(in, e.Result.Verdict.Pod); pod != nil {
		e.AuthPolicies = authPolicies(out.Mesh, pod.Namespace, pod.Labels)
	}
	for _, h := range e.Result.Trace {
		if call.From != "" && strings.HasPrefix(h, call.From+" envoy: cluster \"PassthroughCluster\"") {
			e.Passthrough = true
		}
	}
	e.Notes = append(e.Notes, out.Warnings...)
	var keys []translator.PolicyKey
	for k := range out.Status {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		return a.Kind+"/"+a.Namespace+"/"+a.Name < b.Kind+"/"+b.Namespace+"/"+b.Name
	})
	for _, k := range keys {
		for _, c := range out.Status[k] {
			if c.Status != "True" {
				e.Notes = append(e.Notes, fmt.Sprintf("%s %s/%s is %s=%s (%s): %s", k.Kind, k.Namespace, k.Name, c.Type, c.Status, c.Reason, c.Message))
			}
		}
	}
	return e, nil
}

func podByKey(in *translator.Inputs, key string) *corev1.Pod {
	for _, p := range in.Pods {
		if p.Namespace+"/"+p.Name == key {
			return p
		}
	}
	return nil
}

// authPolicies are the AuthPolicies a pod's sidecar enforces: its
// namespace's and those of the Services that select it (as translator/envoy
// gathers them).
func authPolicies(mesh *ir.Mesh, ns string, labels map[string]string) []string {
	var pols []*ir.AuthPolicy
	if n := mesh.Namespaces[ns]; n != nil {
		pols = append(pols, n.AuthPolicies...)
	}
	for _, svc := range mesh.Services {
		if svc.Key.Namespace == ns && len(svc.Selector) > 0 && selects(svc.Selector, labels) {
			pols = append(pols, svc.AuthPolicies...)
		}
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range pols {
		s := fmt.Sprintf("%s AuthPolicy %s/%s", p.Action, p.Source.Namespace, p.Source.Name)
		if p.DryRun {
			s += " (dry run: logged, not enforced)"
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func hasPod(w *sim.World, key string) bool {
	for _, p := range w.Pods {
		if p.Key() == key {
			return true
		}
	}
	return false
}

func podKeys(w *sim.World) []string {
	var out []string
	for _, p := range w.Pods {
		out = append(out, p.Key())
	}
	sort.Strings(out)
	return out
}

// Print writes the explanation for a person: the call, each hop, the
// verdict in words, and notes.
func (e *Explanation) Print(w io.Writer) {
	c := e.Call
	what := strings.ToUpper(string(c.Protocol))
	if c.Protocol == sim.HTTP1 || c.Protocol == sim.H2C || c.Protocol == sim.GRPC || c.Protocol == sim.WebSocket {
		what = fmt.Sprintf("%s %s %s", what, orDefault(c.Method, "GET"), orDefault(c.Path, "/"))
	}
	fmt.Fprintf(w, "%s from %s to %s\n\n", what, c.From, c.To)
	fmt.Fprintln(w, "Hops:")
	for i, line := range e.Result.Trace {
		fmt.Fprintf(w, "%3d. %s\n", i+1, line)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Verdict: %s\n", Headline(e.Result.Verdict))
	if d := Detail(e.Result.Verdict); d != "" {
		fmt.Fprintf(w, "  %s\n", d)
	}
	if e.Passthrough {
		fmt.Fprintf(w, "  %s's sidecar holds no mesh Service at %s and passed the call through (PassthroughCluster): it left without mutual TLS and without an identity.\n", c.From, c.To)
	}
	if len(e.AuthPolicies) > 0 {
		fmt.Fprintf(w, "  AuthPolicies enforced at %s: %s.\n", e.Result.Verdict.Pod, strings.Join(e.AuthPolicies, ", "))
	}
	if len(e.Result.Verdict.Split) > 0 {
		fmt.Fprintf(w, "  Weighted split at the first hop: %s (the walk follows the heaviest).\n", strings.Join(e.Result.Verdict.Split, ", "))
	}
	if len(e.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range e.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// authRule matches the name weft gives an AuthPolicy rule in its RBAC
// filters: "namespace/name[index]".
var authRule = regexp.MustCompile(`([a-z0-9][-a-z0-9.]*)/([a-z0-9][-a-z0-9.]*)\[(\d+)\]`)

// Headline is the verdict in one line a user reads first.
func Headline(v sim.Verdict) string {
	switch v.Kind {
	case sim.Delivered:
		if v.Pod == "" {
			return fmt.Sprintf("DELIVERED to %s, outside the mesh's pods", v.Addr)
		}
		if v.MTLS {
			return fmt.Sprintf("DELIVERED to %s port %d over mutual TLS", v.Pod, v.Port)
		}
		return fmt.Sprintf("DELIVERED to %s port %d in plaintext", v.Pod, v.Port)
	case sim.PassthroughPlaintext:
		return fmt.Sprintf("DELIVERED to %s port %d in PLAINTEXT, outside the mesh (the caller's sidecar passed it through)", v.Pod, v.Port)
	case sim.Denied:
		s := "DENIED"
		if v.Status != 0 {
			s += fmt.Sprintf(" (HTTP %d)", v.Status)
		} else {
			s += " (connection closed)"
		}
		if v.Pod != "" {
			s += " at " + v.Pod
		}
		if m := authRule.FindStringSubmatch(v.Policy); m != nil {
			return fmt.Sprintf("%s by AuthPolicy %s/%s, spec.rules[%s]", s, m[1], m[2], m[3])
		}
		if strings.Contains(v.Policy, "rbac") {
			return s + ": no rule of the AuthPolicies that select the destination allows it"
		}
		if v.Policy != "" {
			return s + " by " + v.Policy
		}
		return s
	case sim.NoRoute:
		return "NO ROUTE: a sidecar found no filter chain, route or cluster for it"
	case sim.Blackholed:
		return "NO ENDPOINTS: the destination has no ready endpoint"
	case sim.TLSFailure:
		return "TLS HANDSHAKE FAILS"
	case sim.Loop:
		return "LOOP: the connection comes back to a sidecar it already passed"
	case sim.Refused:
		return "CONNECTION REFUSED: nothing listens there"
	case sim.Reset:
		return "CONNECTION RESET"
	case sim.Responded:
		if pod, ok := strings.CutSuffix(v.Reason, ": direct response"); ok && v.Status == 403 {
			return fmt.Sprintf("REFUSED (HTTP 403) by the sidecar of %s, not forwarded", pod)
		}
		if v.Status != 0 {
			return fmt.Sprintf("ANSWERED BY THE SIDECAR (HTTP %d), not forwarded", v.Status)
		}
		return "ANSWERED BY THE SIDECAR, not forwarded"
	case sim.Invalid:
		return "CANNOT WALK"
	}
	return string(v.Kind)
}

// Detail is the verdict's second line: who the server saw, or why.
func Detail(v sim.Verdict) string {
	switch v.Kind {
	case sim.Delivered, sim.PassthroughPlaintext:
		if v.MTLS {
			return fmt.Sprintf("The destination's sidecar saw the caller as %s.", v.ClientIdentity)
		}
		if v.Kind == sim.Delivered {
			return "No mutual TLS on the last leg: the destination sees no caller identity."
		}
		return "Not encrypted, no identity: AuthPolicy rules on identities cannot match it."
	}
	if v.Body != "" {
		return "Response body: " + strings.TrimSpace(v.Body)
	}
	if v.Reason != "" && v.Kind != sim.Denied {
		return "Why: " + v.Reason
	}
	return ""
}
