package localmesh

import (
	"context"
	"fmt"
	"path/filepath"
)

// DemoNamespace is where config/samples/canary.yaml puts the demo.
const DemoNamespace = "shop"

// ApplySamples applies config/samples as `kubectl apply -k` would: one of
// each kind, the GAMMA HTTPRoute and the canary example in namespace shop,
// which the demo's workloads join.
func (m *Mesh) ApplySamples(ctx context.Context) (string, error) {
	return m.Env.Kubectl(ctx, nil, "apply", "-k", filepath.Join(m.Env.Root, "config", "samples"))
}

// DemoSamples are the samples the demo runs on: MeshConfig and the canary
// example. The other samples show one kind each with placeholder names
// (reviews, ratings) that no workload here serves, so weft rightly reports
// them not in effect; `make run` leaves them out (docs/design/140).
var DemoSamples = []string{"meshconfig.yaml", "canary.yaml"}

// ApplyDemoSamples applies DemoSamples, as `kubectl apply -f` would.
func (m *Mesh) ApplyDemoSamples(ctx context.Context) (string, error) {
	args := []string{"apply"}
	for _, f := range DemoSamples {
		args = append(args, "-f", filepath.Join(m.Env.Root, "config", "samples", f))
	}
	return m.Env.Kubectl(ctx, nil, args...)
}

// catalogYAML adds the Service the frontend calls besides checkout.
var catalogYAML = serviceYAML(DemoNamespace, "catalog", map[string]string{"app": "catalog"})

// Demo is the canary sample carrying traffic: the frontend calls checkout
// (split 90/10 between checkout-v1 and checkout-v2 by the sample's
// TrafficSplit, retried by its RetryPolicy, authorized by its AuthPolicy)
// and catalog, 20 calls per second each, over mutual TLS.
type Demo struct {
	Frontend, CheckoutV1, CheckoutV2, Catalog *Workload
}

// StartDemo applies the catalog Service beside the samples (apply them
// first) and starts the four workloads, servers first.
func (m *Mesh) StartDemo(ctx context.Context) (*Demo, error) {
	if _, err := m.ApplyYAML(ctx, catalogYAML); err != nil {
		return nil, err
	}
	specs := []Spec{
		{Namespace: DemoNamespace, Pod: "checkout-v1-0", ServiceAccount: "checkout", Labels: map[string]string{"app": "checkout", "version": "v1"}, Services: []string{"checkout", "checkout-v1"}},
		{Namespace: DemoNamespace, Pod: "checkout-v2-0", ServiceAccount: "checkout", Labels: map[string]string{"app": "checkout", "version": "v2"}, Services: []string{"checkout", "checkout-v2"}},
		{Namespace: DemoNamespace, Pod: "catalog-0", ServiceAccount: "catalog", Labels: map[string]string{"app": "catalog"}, Services: []string{"catalog"}},
		{Namespace: DemoNamespace, Pod: "frontend-0", ServiceAccount: "frontend", Labels: map[string]string{"app": "frontend"}, Targets: []string{"checkout." + DemoNamespace + ":80", "catalog." + DemoNamespace + ":80"}},
	}
	ws := make([]*Workload, len(specs))
	for i, s := range specs {
		m.say("starting %s/%s (weft agent and weft-demo)", s.Namespace, s.Pod)
		w, err := m.StartWorkload(ctx, s)
		if err != nil {
			return nil, err
		}
		ws[i] = w
	}
	return &Demo{CheckoutV1: ws[0], CheckoutV2: ws[1], Catalog: ws[2], Frontend: ws[3]}, nil
}

// Describe is what a person needs to poke the demo.
func (d *Demo) Describe() string {
	return fmt.Sprintf(`  frontend's calls:   %s
  make v2 fail half:  curl -X POST 'http://%s/fail?percent=50'`, d.Frontend.MetricsURL(), d.CheckoutV2.Admin)
}
