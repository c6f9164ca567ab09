package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testing/localmesh"
	"github.com/weftmesh/weft/translator/ir"
)

// startMesh runs a local mesh (internal/testing/localmesh: the launcher
// `make run` uses) for one test, and shows every process's log when the
// test fails.
func startMesh(t *testing.T, o localmesh.Options) *localmesh.Mesh {
	t.Helper()
	requireHostIP(t)
	o.Dir, o.BinDir = t.TempDir(), binDir
	if testing.Verbose() {
		o.Progress = os.Stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m, err := localmesh.Start(ctx, o)
	if err != nil {
		t.Fatalf("starting the local mesh: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, m)
		}
		if err := m.Stop(); err != nil {
			t.Errorf("stopping the local mesh: %v", err)
		}
	})
	return m
}

// requireHostIP skips a test on a machine without a non-loopback IPv4
// address: EndpointSlices refuse loopback addresses, so the webhook and the
// workloads would have nowhere to listen (localmesh.HostIP says so).
func requireHostIP(t *testing.T) {
	t.Helper()
	if _, err := localmesh.HostIP(); err != nil {
		t.Skip(err)
	}
}

func dumpLogs(t *testing.T, m *localmesh.Mesh) {
	entries, _ := os.ReadDir(m.LogDir())
	for _, e := range entries {
		b, _ := os.ReadFile(m.LogDir() + "/" + e.Name())
		if len(b) > 12000 {
			b = append([]byte("…"), b[len(b)-12000:]...)
		}
		t.Logf("=== %s\n%s", e.Name(), b)
	}
}

// calls is what a client's /metrics says it sent to each cluster, by
// response code class ("2", "5", …).
type calls map[string]map[string]float64

// scrape reads a weft-demo client's statistics (Envoy's names: see
// hack/weft-demo).
func scrape(t *testing.T, url string) calls {
	t.Helper()
	out := calls{}
	for _, mt := range metricFamily(t, url, "envoy_cluster_upstream_rq_xx") {
		l := labels(mt.Label)
		cluster, class := l["envoy_cluster_name"], l["envoy_response_code_class"]
		if out[cluster] == nil {
			out[cluster] = map[string]float64{}
		}
		out[cluster][class] += mt.GetCounter().GetValue()
	}
	return out
}

// since is c minus an earlier scrape.
func (c calls) since(before calls) calls {
	out := calls{}
	for cl, byClass := range c {
		out[cl] = map[string]float64{}
		for k, v := range byClass {
			out[cl][k] = v - before[cl][k]
		}
	}
	return out
}

func (c calls) total(cluster string) (n float64) {
	for _, v := range c[cluster] {
		n += v
	}
	return n
}

func demoCluster(svc string) string {
	return ir.ClusterName(ir.ServiceKey{Namespace: localmesh.DemoNamespace, Name: svc}, 80)
}
