package sim_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/dataplane/sim"
)

// Locality-aware routing (docs/design/171) as the caller's sidecar applies
// it: the walk takes the highest priority of the cluster's assignment
// (Envoy sends a level all its traffic while it is healthy: "Priority
// levels", Envoy's load balancing docs). api has one pod in zone-a and one
// in zone-b; web-a and web-b are callers in those zones (their pods'
// topology label: no Nodes offline).
const localityMesh = `apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: shop, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.1.1.1], zone: zone-a, conditions: {ready: A_READY}, targetRef: {kind: Pod, name: api-a, namespace: shop}}
- {addresses: [10.1.2.1], zone: zone-b, targetRef: {kind: Pod, name: api-b, namespace: shop}}
---
apiVersion: v1
kind: Pod
metadata: {name: api-a, namespace: shop, labels: {app: api, topology.kubernetes.io/zone: zone-a}}
spec: {serviceAccountName: api, initContainers: [{name: weft-proxy, image: envoy}], containers: [{name: app, image: api}]}
status: {podIPs: [{ip: 10.1.1.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api-b, namespace: shop, labels: {app: api, topology.kubernetes.io/zone: zone-b}}
spec: {serviceAccountName: api, initContainers: [{name: weft-proxy, image: envoy}], containers: [{name: app, image: api}]}
status: {podIPs: [{ip: 10.1.2.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-a, namespace: shop, labels: {app: web, topology.kubernetes.io/zone: zone-a}}
spec: {serviceAccountName: web, initContainers: [{name: weft-proxy, image: envoy}], containers: [{name: app, image: web}]}
status: {podIPs: [{ip: 10.2.1.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, namespace: shop, labels: {app: web, topology.kubernetes.io/zone: zone-b}}
spec: {serviceAccountName: web, initContainers: [{name: weft-proxy, image: envoy}], containers: [{name: app, image: web}]}
status: {podIPs: [{ip: 10.2.2.1}]}
`

const preferLocalZone = `apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: api, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: api}]
  loadBalancer: {locality: PreferLocalZone}`

func localityWorld(t *testing.T, apiAReady bool, extra ...string) *sim.World {
	t.Helper()
	ready := "true"
	if !apiAReady {
		ready = "false"
	}
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(localityMesh, "A_READY", ready, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return weftWorld(t, path, extra...)
}

func TestPreferLocalZoneReachesTheCallersZone(t *testing.T) {
	call := func(w *sim.World, from string) string {
		t.Helper()
		v := walk(t, w, sim.Call{From: from, To: "api.shop:80"})
		if v.Kind != sim.Delivered {
			t.Fatalf("%s -> api.shop:80: %s, want delivered", from, v)
		}
		return v.Pod
	}
	t.Run("each caller reaches its own zone", func(t *testing.T) {
		w := localityWorld(t, true, preferLocalZone)
		if got := call(w, "shop/web-a"); got != "shop/api-a" {
			t.Errorf("zone-a caller reached %s, want shop/api-a", got)
		}
		if got := call(w, "shop/web-b"); got != "shop/api-b" {
			t.Errorf("zone-b caller reached %s, want shop/api-b", got)
		}
	})
	t.Run("without the policy both callers share one endpoint set", func(t *testing.T) {
		w := localityWorld(t, true)
		if a, b := call(w, "shop/web-a"), call(w, "shop/web-b"); a != b {
			t.Errorf("without the policy the callers reached %s and %s: the walk should see one priority for both", a, b)
		}
	})
	t.Run("zone-a's pod not ready: its caller fails over to zone-b", func(t *testing.T) {
		w := localityWorld(t, false, preferLocalZone)
		if got := call(w, "shop/web-a"); got != "shop/api-b" {
			t.Errorf("zone-a caller reached %s, want shop/api-b", got)
		}
	})
}
