package e2e

import (
	"net"
	"strconv"
	"testing"

	"github.com/weftmesh/weft/internal/testing/localmesh"
)

// testMTLSModes is scenario 4: a namespace labelled
// weft.dev/mtls-mode=Strict refuses a plaintext client, and one in
// Permissive mode (MeshConfig's, from the samples) accepts mesh mTLS.
//
// What Permissive means for a proxyless gRPC server: weft makes it mTLS
// only in both modes (docs/design/003, docs/api.md MeshConfig): gRPC-Go
// serves one transport per listener and cannot tell mTLS from plaintext on
// one port, so a plaintext client is refused there too, and the test
// checks that. "Permissive accepts both" holds for a workload with a
// sidecar, whose inbound listener has a plaintext chain beside the mTLS
// one (docs/design/003's sidecar layout); no Envoy runs here, so that is
// shown by the traffic simulator's walks (dataplane/sim), not here.
//
// The plaintext clients are pods of an unmeshed namespace whose weft-demo
// calls the server's address with no xDS and no certificate
// (localmesh.StartOutsideClient); the mesh clients are proxyless
// workloads of a third namespace.
func testMTLSModes(t *testing.T, s *scenarios) {
	s.namespace(t, "mtls-strict", "weft.dev/mtls-mode=Strict")
	s.namespace(t, "mtls-permissive")
	s.namespace(t, "mtls-client")
	servers := map[string]*localmesh.Workload{}
	for _, ns := range []string{"mtls-strict", "mtls-permissive"} {
		s.kubectl(t, serviceYAML(ns, "api", "api"), "apply", "-f", "-")
		servers[ns] = s.start(t, localmesh.Spec{Namespace: ns, Pod: "api-0", ServiceAccount: "api", Labels: map[string]string{"app": "api"}, Services: []string{"api"}})
	}
	mesh := s.start(t, localmesh.Spec{Namespace: "mtls-client", Pod: "client-0", ServiceAccount: "client", Labels: map[string]string{"app": "client"},
		Targets: []string{"api.mtls-strict:80", "api.mtls-permissive:80"}, Rate: 50})
	for _, ns := range []string{"mtls-strict", "mtls-permissive"} {
		plain, err := s.m.StartOutsideClient(s.ctx, localmesh.OutsideSpec{Namespace: "outside", Pod: "plain-" + ns, Target: "api." + ns + ":80",
			Address: net.JoinHostPort(s.m.HostIP, strconv.Itoa(servers[ns].Port)), Rate: 50})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = plain.Stop(s.ctx) })
		got := awaitCalls(t, plain.MetricsURL(), nil, 50, nil)
		if ok := got.count(func(k callKey) bool { return k.Code == "OK" }); ok > 0 {
			t.Errorf("%s: a plaintext client's calls succeeded %v times: %v; want every one refused", ns, ok, got)
		}
		msg := firstError(t, plain, "Unavailable")
		t.Logf("%s: a plaintext client: %v calls, all refused: %v; gRPC says: %s", ns, got.count(nil), got, msg)
	}
	// The mesh client's calls to both succeed, over mutual TLS (each
	// server's listener requires a client certificate).
	got := awaitCalls(t, mesh.MetricsURL(), nil, 200, nil)
	checkAllOK(t, "the mesh client", got)
	for _, ns := range []string{"mtls-strict", "mtls-permissive"} {
		if n := served(t, servers[ns])["OK"]; n == 0 {
			t.Errorf("%s's api-0 served no call of the mesh client", ns)
		}
	}
	t.Logf("the mesh client: %v calls to both, all OK", got.count(nil))
}
