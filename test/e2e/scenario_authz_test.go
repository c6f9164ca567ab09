package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testing/localmesh"
	"github.com/weftmesh/weft/internal/testing/testkit"
)

// testAuthorization is scenario 3: AuthPolicies by SPIFFE identity over
// mutual TLS, with two proxyless clients of the Service api (namespace
// authz): web/frontend and other/client.
//
//  1. The user's policy, Allow web/frontend: frontend's calls succeed;
//     other/client's are refused. For a proxyless client, refused means
//     the Service is not in its configuration at all: weft leaves a
//     Service out of a caller's configuration when its AuthPolicies
//     certainly deny that caller's identity (docs/api.md, "What a call
//     outside the scope gets"), and gRPC cannot resolve it — the calls
//     fail with UNAVAILABLE without reaching the server, not with
//     PERMISSION_DENIED (a sidecar would answer 403 itself).
//  2. Deny other/client the gRPC service weft.demo.Demo (a path rule, so
//     the deny is not certain for every request and the Service stays in
//     other/client's configuration): its calls reach the server, whose RBAC
//     sees its certificate's SPIFFE ID and answers PERMISSION_DENIED;
//     frontend's calls succeed.
//  3. The same Deny in DryRun: it denies nothing (other/client succeeds
//     again). docs/api.md says DryRun "records what it would deny (access
//     log, metrics)": sidecars count it under the RBAC filter's shadow
//     statistics (docs/metrics.md), but gRPC-Go evaluates no shadow rules,
//     so for a proxyless server weft leaves DryRun policies out
//     (docs/design/003) and nothing counts the would-be denials — the
//     test checks the policy is Accepted and Programmed, that it denies
//     nothing, and that its ProxylessLimited condition says it counts
//     nothing here; there is no counter to read.
func testAuthorization(t *testing.T, s *scenarios) {
	phase := time.Now()
	took := func() time.Duration {
		d := time.Since(phase).Round(100 * time.Millisecond)
		phase = time.Now()
		return d
	}
	for _, ns := range []string{"authz", "web", "other"} {
		s.namespace(t, ns)
	}
	s.kubectl(t, serviceYAML("authz", "api", "api")+`apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: api-from-web, namespace: authz}
spec:
  targetRefs: [{group: "", kind: Service, name: api}]
  action: Allow
  rules:
  - from: {serviceAccounts: [web/frontend]}
`, "apply", "-f", "-")
	// other/client first: gRPC waits 15 s for the listener it will never
	// get (below), while the others start.
	client := s.start(t, localmesh.Spec{Namespace: "other", Pod: "client-0", ServiceAccount: "client", Labels: map[string]string{"app": "client"},
		Targets: []string{"api.authz:80"}, Rate: 50, Refused: true})
	s.start(t, localmesh.Spec{Namespace: "authz", Pod: "api-0", ServiceAccount: "api", Labels: map[string]string{"app": "api"}, Services: []string{"api"}})
	frontend := s.start(t, localmesh.Spec{Namespace: "web", Pod: "frontend-0", ServiceAccount: "frontend", Labels: map[string]string{"app": "frontend"},
		Targets: []string{"api.authz:80"}, Rate: 50})
	s.waitCondition(t, "authz", "authpolicy/api-from-web", "Programmed")

	s.expectCode(t, frontend, "OK")
	s.expectCode(t, client, "Unavailable")
	if strings.Contains(client.App.Logs(1<<20), "first DeadlineExceeded: ") {
		// gRPC-Go waits 15 s for a listener it never received before it
		// calls it missing (its watch expiry timer, gRFC A27); calls with a
		// shorter deadline meanwhile end DEADLINE_EXCEEDED.
		t.Logf("other/client before gRPC gave up on the listener: %s", firstError(t, client, "DeadlineExceeded"))
	}
	msg := firstError(t, client, "Unavailable")
	if !strings.Contains(msg, `"api.authz:80"`) {
		t.Errorf("other/client's calls fail with %q; want gRPC saying it has no listener api.authz:80", msg)
	}
	t.Logf("Allow web/frontend (%v): web/frontend OK; other/client UNAVAILABLE (api is not in its configuration): %s", took(), msg)

	s.kubectl(t, "", "delete", "-n", "authz", "authpolicy", "api-from-web")
	s.kubectl(t, `apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: deny-other, namespace: authz}
spec:
  targetRefs: [{group: "", kind: Service, name: api}]
  action: Deny
  rules:
  - from: {serviceAccounts: [other/client]}
    to: {paths: [{type: PathPrefix, value: /weft.demo.Demo}]}
`, "apply", "-f", "-")
	s.waitCondition(t, "authz", "authpolicy/deny-other", "Programmed")
	s.expectCode(t, client, "PermissionDenied")
	s.expectCode(t, frontend, "OK")
	t.Logf("Deny other/client (%v): web/frontend OK; other/client PERMISSION_DENIED by the server's RBAC: %s", took(), firstError(t, client, "PermissionDenied"))

	s.kubectl(t, "", "patch", "-n", "authz", "authpolicy", "deny-other", "--type=merge", "-p", `{"spec":{"mode":"DryRun"}}`)
	s.waitCondition(t, "authz", "authpolicy/deny-other", "Programmed")
	s.expectCode(t, client, "OK")
	s.expectCode(t, frontend, "OK")
	conds, gen := s.conditions(t, "authz", "authpolicy/deny-other")
	for _, c := range []string{"Accepted", "Programmed"} {
		if conds[c].Status != "True" || conds[c].ObservedGeneration != gen {
			t.Errorf("the DryRun AuthPolicy's %s: %+v; want True for generation %d", c, conds[c], gen)
		}
	}
	// ... and its status says what docs/api.md says: here it counts nothing.
	if pl := conds["ProxylessLimited"]; pl.Status != "True" || pl.Reason != "UnsupportedByGRPC" || !strings.Contains(pl.Message, "spec.mode DryRun") {
		t.Errorf("the DryRun AuthPolicy's ProxylessLimited: %+v; want True, UnsupportedByGRPC, naming spec.mode DryRun", pl)
	}
	t.Logf("DryRun (%v): other/client OK (nothing denied); the policy's conditions: %+v — a proxyless server records no would-be denial (no shadow rules in gRPC)", took(), conds)
}

// firstError is the first failure with code that a weft-demo client
// logged.
func firstError(t *testing.T, w *localmesh.Workload, code string) string {
	t.Helper()
	prefix := "first " + code + ": "
	var msg string
	testkit.EventuallyTrue(t, w.Pod+" logging its first "+code, func() bool {
		for _, line := range strings.Split(w.App.Logs(1<<20), "\n") {
			if _, m, ok := strings.Cut(line, prefix); ok {
				msg = m
				return true
			}
		}
		return false
	})
	return msg
}

// expectCode waits until a client's calls all end with code (a policy
// change reached it), then checks that 100 more do.
func (s *scenarios) expectCode(t *testing.T, w *localmesh.Workload, code string) {
	t.Helper()
	url := w.MetricsURL()
	other := func(k callKey) bool { return k.Code != code }
	testkit.Eventually(t, fmt.Sprintf("%s's calls all ending %s", w.Pod, code), func() error {
		got := awaitCalls(t, url, demoCalls(t, url), 10, nil)
		if got.count(other) > 0 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
	got := awaitCalls(t, url, demoCalls(t, url), 100, nil)
	if got.count(other) > 0 {
		t.Errorf("%s.%s: %v of %v calls did not end %s: %v", w.Pod, w.Namespace, got.count(other), got.count(nil), code, got)
	}
}
