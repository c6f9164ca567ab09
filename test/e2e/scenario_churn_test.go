package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testing/localmesh"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/translator/ir"
)

// testEndpointChurn is scenario 6: a backend is scaled up and down while a
// client calls it, and no call fails; once the client has acknowledged an
// endpoint's removal, no call reaches that pod.
//
// The removed pod that is watched keeps serving after its endpoint is
// removed (a terminating pod in its grace period), so a client still
// routing to it would reach it and be counted, by the client
// (weft_demo_calls_total's pod) and by the pod (weft_demo_served_total):
// both must stand still from the ACK on. When the client ACKed is read
// from the controller (/debug/config_dump shows the endpoints it was last
// sent without the pod, /debug/proxies that it ACKed that generation), as
// `weft proxy-config` and `weft proxy-status` do. Another pod is removed
// as a pod deletion without a preStop delay does it — endpoints deleted,
// then SIGTERM at once (localmesh.Workload.Stop) — and still no call
// fails: the server drains (GracefulStop) and the client moves on.
func testEndpointChurn(t *testing.T, s *scenarios) {
	const ns = "churn"
	s.namespace(t, ns)
	s.kubectl(t, serviceYAML(ns, "api", "api"), "apply", "-f", "-")
	server := func(pod string) *localmesh.Workload {
		return s.start(t, localmesh.Spec{Namespace: ns, Pod: pod, ServiceAccount: "api", Labels: map[string]string{"app": "api"}, Services: []string{"api"}})
	}
	api0 := server("api-0")
	client := s.start(t, localmesh.Spec{Namespace: ns, Pod: "client-0", ServiceAccount: "client", Labels: map[string]string{"app": "client"},
		Targets: []string{"api." + ns + ":80"}, Rate: 200, Concurrency: 4})
	url := client.MetricsURL()
	start := demoCalls(t, url)
	onPod := func(pod string) func(callKey) bool { return func(k callKey) bool { return k.Pod == pod } }

	// Up: two more pods join (listed not ready, then ready) and take calls.
	api1, api2 := server("api-1"), server("api-2")
	for _, p := range []string{"api-1", "api-2"} {
		awaitCalls(t, url, start, 20, onPod(p))
	}
	t.Logf("up: api-1 and api-2 take calls: %v", demoCalls(t, url).since(start))

	// Down, watched: api-1's endpoint goes; its server stays up.
	removed := time.Now()
	if err := api1.Unpublish(s.ctx); err != nil {
		t.Fatal(err)
	}
	acked := s.awaitEndpointRemovalACK(t, client, ir.ClusterName(ir.ServiceKey{Namespace: ns, Name: "api"}, 80), api1.Port)
	t.Logf("down: the client ACKed endpoints without api-1 %v after the EndpointSlice was deleted", acked.Sub(removed).Round(time.Millisecond))
	c1, s1 := demoCalls(t, url).count(onPod("api-1")), served(t, api1)["OK"]
	time.Sleep(3 * time.Second) // about 600 calls
	c2, s2 := demoCalls(t, url).count(onPod("api-1")), served(t, api1)["OK"]
	if c2 != c1 || s2 != s1 {
		t.Errorf("after the client ACKed api-1's removal: the client's calls answered by api-1 went %v -> %v, api-1 served %v -> %v in 3 s; want no call to reach it", c1, c2, s1, s2)
	}
	if err := api1.Stop(s.ctx); err != nil {
		t.Fatal(err)
	}

	// Down, as a pod deletion: endpoints deleted, SIGTERM at once.
	if err := api2.Stop(s.ctx); err != nil {
		t.Fatal(err)
	}
	before := demoCalls(t, url)
	awaitCalls(t, url, before, 400, onPod("api-0"))

	got := demoCalls(t, url).since(start)
	checkAllOK(t, "through scale up and down", got)
	t.Logf("through scale up and down: %v calls, none failed: %v", got.count(nil), got)
	if n := served(t, api0)["OK"]; n == 0 {
		t.Error("api-0 served nothing")
	}
}

// awaitEndpointRemovalACK waits until the controller last sent the
// client's application stream endpoints of cluster without port, and the
// client ACKed that generation; it returns when it saw the ACK.
func (s *scenarios) awaitEndpointRemovalACK(t *testing.T, client *localmesh.Workload, cluster string, port int) time.Time {
	t.Helper()
	var gen uint64
	testkit.Eventually(t, fmt.Sprintf("the controller sending %s's %s without port %d", client.Pod, cluster, port), func() error {
		p, ok := s.appStream(t, client)
		if !ok {
			return fmt.Errorf("no application stream of %s.%s", client.Pod, client.Namespace)
		}
		ports, found := endpointPorts(t, s.configDump(t, p), cluster)
		if !found {
			return fmt.Errorf("no ClusterLoadAssignment %s in its configuration", cluster)
		}
		if slices.Contains(ports, port) {
			return fmt.Errorf("endpoints still %v", ports)
		}
		if q, ok := s.appStream(t, client); ok && q.Stream == p.Stream {
			gen = q.Generation // at least the generation just dumped
			return nil
		}
		return fmt.Errorf("stream %d of %s ended", p.Stream, p.ID)
	})
	testkit.Eventually(t, fmt.Sprintf("%s ACKing endpoints of generation %d", client.Pod, gen), func() error {
		p, ok := s.appStream(t, client)
		if !ok {
			return fmt.Errorf("no application stream of %s.%s", client.Pod, client.Namespace)
		}
		eds := p.Types["ClusterLoadAssignment"]
		if eds.AckedGen < gen {
			return fmt.Errorf("endpoints: %s, ACKed generation %d", eds.State, eds.AckedGen)
		}
		return nil
	})
	return time.Now()
}

// endpointPorts lists the ports of a ClusterLoadAssignment's endpoints in
// a /debug/config_dump.
func endpointPorts(t *testing.T, dump map[string][]json.RawMessage, cluster string) ([]int, bool) {
	t.Helper()
	for _, raw := range dump["ClusterLoadAssignment"] {
		var cla struct {
			ClusterName string `json:"clusterName"`
			Endpoints   []struct {
				LbEndpoints []struct {
					Endpoint struct {
						Address struct {
							SocketAddress struct {
								PortValue int `json:"portValue"`
							} `json:"socketAddress"`
						} `json:"address"`
					} `json:"endpoint"`
				} `json:"lbEndpoints"`
			} `json:"endpoints"`
		}
		if err := json.Unmarshal(raw, &cla); err != nil {
			t.Fatal(err)
		}
		if cla.ClusterName != cluster {
			continue
		}
		var ports []int
		for _, l := range cla.Endpoints {
			for _, e := range l.LbEndpoints {
				ports = append(ports, e.Endpoint.Address.SocketAddress.PortValue)
			}
		}
		return ports, true
	}
	return nil, false
}
