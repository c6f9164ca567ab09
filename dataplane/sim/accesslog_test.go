package sim_test

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/dataplane/sim"
)

// accessLogMesh is shop.in.yaml with access logs on, a DryRun Deny on
// /admin beside web's Allow (shop/client) and Deny (DELETE), and on the
// TCP Service mysql an enforced Deny of stranger and a DryRun Deny of
// client.
func accessLogMesh(t *testing.T, format string) *sim.World {
	return weftWorld(t, "testdata/shop.in.yaml", `apiVersion: mesh.weft.dev/v1alpha1
kind: MeshConfig
metadata: {name: weft}
spec:
  accessLog: {enabled: true, format: `+format+`}`, `apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: audit-admin, namespace: shop, generation: 1}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  action: Deny
  mode: DryRun
  rules: [{to: {paths: [{type: PathPrefix, value: /admin}]}}]`, `apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: no-strangers, namespace: shop, generation: 1}
spec:
  targetRefs: [{group: "", kind: Service, name: mysql}]
  action: Deny
  rules: [{from: {serviceAccounts: [shop/stranger]}, to: {ports: [3306]}}]`, `apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: audit-client, namespace: shop, generation: 1}
spec:
  targetRefs: [{group: "", kind: Service, name: mysql}]
  action: Deny
  mode: DryRun
  rules: [{from: {serviceAccounts: [shop/client]}}]`)
}

// logOf returns the access log line pod wrote, failing unless it wrote
// exactly one and it rendered.
func logOf(t *testing.T, r sim.Result, pod string) sim.AccessLogLine {
	t.Helper()
	var out []sim.AccessLogLine
	for _, l := range r.AccessLog {
		if l.Pod == pod {
			out = append(out, l)
		}
		if l.Err != "" {
			t.Errorf("%s %s: %s", l.Pod, l.Filter, l.Err)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%s wrote %d access log lines, want 1:\n%s", pod, len(out), r)
	}
	t.Logf("%s %s: %s", pod, out[0].Filter, strings.TrimSpace(out[0].Line))
	return out[0]
}

// expect compares fields: "" wants null (or a missing key).
func expect(t *testing.T, l sim.AccessLogLine, get func(string) string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := get(k); got != v {
			t.Errorf("%s %s: %s = %q, want %q\n%s", l.Pod, l.Filter, k, got, v, l.Line)
		}
	}
}

// TestAccessLogRBAC: the line the server's sidecar writes names the
// authorization decision and the AuthPolicy rule that made it, enforced
// and DryRun, as the docs promise; the caller's sidecar logs the cluster
// it chose and the same request id.
func TestAccessLogRBAC(t *testing.T) {
	w := accessLogMesh(t, "JSON")
	web := "outbound|80||web.shop.svc.cluster.local"
	for _, tc := range []struct {
		name           string
		call           sim.Call
		kind           sim.Kind
		server, client map[string]string
	}{
		{"allowed by the Allow policy", sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/orders"}, sim.Delivered,
			map[string]string{"response_code": "200", "response_code_details": "via_upstream", "rbac": "allowed", "rbac_policy": "shop/clients-only[0]",
				"dry_run_deny": "allowed", "dry_run_deny_policy": "", "dry_run_allow": "", "downstream_peer": clientID, "path": "/orders", "method": "GET"},
			map[string]string{"response_code": "200", "upstream_cluster": web, "rbac": "", "response_flags": ""}},
		{"enforced Deny names its rule", sim.Call{From: "shop/client-0", To: "web.shop:80", Method: "DELETE", Path: "/orders/1"}, sim.Denied,
			map[string]string{"response_code": "403", "response_code_details": "rbac_access_denied_matched_policy[shop/no-deletes[0]]",
				"rbac": "denied", "rbac_policy": "shop/no-deletes[0]", "upstream_cluster": "", "dry_run_deny": "allowed"},
			map[string]string{"response_code": "403", "response_code_details": "via_upstream", "upstream_cluster": web}},
		{"no Allow rule matches (an unmeshed caller): denied by none", sim.Call{From: "shop/legacy-0", To: "web.shop:80", Path: "/orders"}, sim.Denied,
			map[string]string{"response_code": "403", "response_code_details": "rbac_access_denied_matched_policy[none]", "rbac": "denied", "rbac_policy": "", "downstream_peer": ""},
			nil},
		{"DryRun Deny on /admin: served, and logged as a would-be denial", sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/admin/users"}, sim.Delivered,
			map[string]string{"response_code": "200", "rbac": "allowed", "rbac_policy": "shop/clients-only[0]",
				"dry_run_deny": "denied", "dry_run_deny_policy": "shop/audit-admin[0]"},
			map[string]string{"response_code": "200", "upstream_cluster": web}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.Walk(tc.call)
			if r.Verdict.Kind != tc.kind {
				t.Fatalf("verdict %s, want %s\n%s", r.Verdict, tc.kind, r)
			}
			srv := logOf(t, r, "shop/web-0")
			expect(t, srv, srv.Field, tc.server)
			if tc.client == nil {
				return
			}
			cl := logOf(t, r, tc.call.From)
			expect(t, cl, cl.Field, tc.client)
			if id := srv.Field("request_id"); id == "" || id != cl.Field("request_id") {
				t.Errorf("request ids: server %q, client %q: want one, the same", id, cl.Field("request_id"))
			}
			if r.AccessLog[0].Pod != "shop/web-0" {
				t.Errorf("the server's sidecar ends its stream first; got %s first", r.AccessLog[0].Pod)
			}
		})
	}
}

// TestAccessLogTCP: a TCP connection's line carries the network RBAC
// filter's DryRun result, and an enforced denial in its termination
// details.
func TestAccessLogTCP(t *testing.T) {
	w := accessLogMesh(t, "JSON")
	t.Run("DryRun Deny of client: delivered, logged", func(t *testing.T) {
		r := w.Walk(sim.Call{From: "shop/client-0", To: "mysql.shop:3306", Protocol: sim.TCP})
		if r.Verdict.Kind != sim.Delivered {
			t.Fatalf("verdict %s\n%s", r.Verdict, r)
		}
		l := logOf(t, r, "shop/mysql-0")
		expect(t, l, l.Field, map[string]string{"dry_run_deny": "denied", "dry_run_deny_policy": "shop/audit-client[0]", "connection_termination_details": "", "upstream_cluster": "inbound|3306||"})
		if _, ok := l.Fields["rbac"]; ok {
			t.Errorf("a TCP line has an rbac field; the network RBAC filter writes no enforced result")
		}
	})
	t.Run("a caller scoped out of web gets its own sidecar's 403, logged as a direct response", func(t *testing.T) {
		r := w.Walk(sim.Call{From: "shop/stranger-0", To: "web.shop:80"})
		l := logOf(t, r, "shop/stranger-0")
		expect(t, l, l.Field, map[string]string{"response_code": "403", "response_code_details": "direct_response", "upstream_cluster": ""})
	})
	t.Run("enforced Deny of stranger: closed, the rule in the termination details", func(t *testing.T) {
		r := w.Walk(sim.Call{From: "shop/stranger-0", To: "mysql.shop:3306", Protocol: sim.TCP})
		if r.Verdict.Kind != sim.Denied {
			t.Fatalf("verdict %s\n%s", r.Verdict, r)
		}
		l := logOf(t, r, "shop/mysql-0")
		expect(t, l, l.Field, map[string]string{"connection_termination_details": "rbac_access_denied_matched_policy[shop/no-strangers[0]]", "dry_run_deny": "allowed"})
	})
}

// TestAccessLogText: the text format carries the same fields as
// key=value words.
func TestAccessLogText(t *testing.T) {
	w := accessLogMesh(t, "Text")
	r := w.Walk(sim.Call{From: "shop/client-0", To: "web.shop:80", Method: "DELETE", Path: "/admin"})
	if r.Verdict.Kind != sim.Denied {
		t.Fatalf("verdict %s\n%s", r.Verdict, r)
	}
	srv := logOf(t, r, "shop/web-0")
	f := sim.TextFields(srv.Line)
	expect(t, srv, func(k string) string { return f[k] }, map[string]string{
		"response_code_details": "rbac_access_denied_matched_policy[shop/no-deletes[0]]",
		"rbac":                  "denied", "rbac_policy": "shop/no-deletes[0]",
		"dry_run_deny": "denied", "dry_run_deny_policy": "shop/audit-admin[0]", "dry_run_allow": "-",
	})
	if !strings.Contains(srv.Line, `"DELETE /admin HTTP/1.1" 403 -`) {
		t.Errorf("line %q: want the request, 403 and no response flags", srv.Line)
	}
	cl := logOf(t, r, "shop/client-0")
	if !strings.Contains(cl.Line, " outbound|80||web.shop.svc.cluster.local ") || sim.TextFields(cl.Line)["request_id"] != f["request_id"] {
		t.Errorf("client line %q: want the upstream cluster and request id %s", cl.Line, f["request_id"])
	}
}
