package loadtest

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/testing/testenv"
)

// TestRun runs the whole harness small, end to end: the real API server,
// the real weft-controller binary, simulated Delta proxies that behave
// like Envoy (Envoy itself cannot run here). It asserts what must hold
// whatever the machine's speed — every proxy converges, counts agree, the
// scoping holds — and never a timing.
func TestRun(t *testing.T) {
	env := testenv.Start(t)
	bin, err := BuildController(env.Root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	var logs, progress bytes.Buffer
	conf := Config{
		Mesh:    Mesh{Services: 20, Endpoints: 3, Namespaces: 5},
		Proxies: []int{10}, Groups: 5, Repeats: 2, Fraction: 0.1,
		ChurnRate: 10, ChurnFor: 2 * time.Second,
		Timeout:  2 * time.Minute,
		Progress: &progress, ControllerLog: &logs,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	rep, err := Run(ctx, conf, Cluster{Client: c, Kubeconfig: env.Kubeconfig, Controller: bin})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("progress:\n%s\ncontroller:\n%s", progress.String(), logs.String())
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	rep.Print(&table)
	t.Logf("\n%s", table.String())

	if len(rep.Fleets) != 1 {
		t.Fatalf("%d fleet reports, want 1", len(rep.Fleets))
	}
	f := rep.Fleets[0]
	n := conf.Proxies[0]
	if f.ColdStart.N != n {
		t.Errorf("cold start: %d proxies timed, want %d", f.ColdStart.N, n)
	}
	// Scoping: a proxy sees its namespace's Services, the two shared ones
	// and the API server's own Service default/kubernetes (visible
	// mesh-wide, as every Service without weft.dev/export-to), whatever
	// its group.
	if want := float64(conf.Services/conf.Namespaces + 2 + 1); f.Endpoints.P50 != want || f.Endpoints.Max != want || f.Endpoints.Mean != want {
		t.Errorf("EDS resources per proxy: %+v, want %v for every proxy", f.Endpoints, want)
	}
	if f.ConfigBytes.Mean <= 0 || f.Resources.Mean < f.Endpoints.Mean {
		t.Errorf("config per proxy: %+v bytes, %+v resources", f.ConfigBytes, f.Resources)
	}
	if f.WeightMissed != 0 || len(f.Weight) != conf.Repeats || f.WeightAll.N != conf.Repeats*n {
		t.Errorf("weight changes: %d repeats, %d samples, %d missed; want %d, %d, 0", len(f.Weight), f.WeightAll.N, f.WeightMissed, conf.Repeats, conf.Repeats*n)
	}
	// Every proxy sees the split's route: each change reaches each once.
	if f.WeightPushes < 1 || f.WeightBytes <= 0 {
		t.Errorf("per proxy per weight change: %.1f pushes, %.0f bytes; want at least one push", f.WeightPushes, f.WeightBytes)
	}
	o := f.OnePercent
	if o.Services != 2 || o.Missed != 0 || o.Dependents == 0 || o.Latency.N < o.Dependents {
		t.Errorf("endpoint burst: %+v", o)
	}
	// Push only to proxies whose view changed.
	if o.Receivers != o.Dependents {
		t.Errorf("endpoint burst: %d proxies received something, %d depend on the changed Services", o.Receivers, o.Dependents)
	}
	if o.ServerPushes < float64(o.Receivers) {
		t.Errorf("endpoint burst: the server counted %.0f pushes for %d receiving proxies", o.ServerPushes, o.Receivers)
	}
	ch := f.Churn
	if ch.Changes != 20 || ch.Failed != 0 || ch.Missed != 0 || ch.Latency.N < ch.Changes {
		t.Errorf("churn: %+v; want 20 changes, each delivered to at least one proxy", ch)
	}
}

// TestRunBenchShape is `make bench`'s harness small and weft only (the
// peer, istiod, is never built by the tests): splits among the port-80
// Services, every proxy its own workload, every second Service also on
// port 8080, subscriptions by name as Envoy makes them, new Services
// timed — first with every Service visible to every proxy, then at the
// same sizes with every proxy scoped to its namespace (--scoped), where
// only the proxies of a change's namespace wait for it. Behaviour only:
// every proxy that sees a change converges on it, and scoping shrinks
// what each proxy is sent.
func TestRunBenchShape(t *testing.T) {
	base := Config{
		Mesh:    Mesh{Services: 12, Endpoints: 2, Namespaces: 3, Splits: 3, AltPort: true},
		Proxies: []int{6}, Groups: 6, ByName: true, Repeats: 2, NewServices: 2, Fraction: 0.1,
		ChurnRate: 10, ChurnFor: time.Second,
		Timeout: 2 * time.Minute,
	}
	n := base.Proxies[0]
	var all, scoped FleetReport
	t.Run("every Service visible", func(t *testing.T) {
		conf := base
		conf.ExportAll = true
		f := runBenchShape(t, conf)
		all = f
		// Every proxy sees every Service port: the 12 on port 80, the 6
		// also on 8080, and the API server's own default/kubernetes (the
		// new ones are created after the count).
		if want := float64(conf.Services + conf.Services/2 + 1); f.Endpoints.P50 != want || f.Endpoints.Max != want || f.Endpoints.Mean != want {
			t.Errorf("EDS resources per proxy: %+v, want %v for every proxy", f.Endpoints, want)
		}
		if f.WeightProxies != n || f.WeightMissed != 0 || f.WeightAll.N != conf.Repeats*n {
			t.Errorf("weight changes: %d samples from %d proxies, %d missed; want %d, %d, 0", f.WeightAll.N, f.WeightProxies, f.WeightMissed, conf.Repeats*n, n)
		}
		if f.NewServiceProxies != n || f.NewServiceMissed != 0 || f.NewService.N != conf.NewServices*n {
			t.Errorf("new Services: %d samples from %d proxies, %d missed; want %d, %d, 0", f.NewService.N, f.NewServiceProxies, f.NewServiceMissed, conf.NewServices*n, n)
		}
		if ch := f.Churn; ch.Changes != 10 || ch.Failed != 0 || ch.Missed != 0 || ch.Latency.N < ch.Changes*n {
			t.Errorf("churn: %+v; want 10 changes, each delivered to every proxy", ch)
		}
	})
	t.Run("scoped", func(t *testing.T) {
		conf := base
		conf.Scoped = true
		f := runBenchShape(t, conf)
		scoped = f
		// A proxy sees its namespace's Service ports — here 4 on port 80,
		// 2 of them also on 8080, whatever the namespace — and
		// default/kubernetes, which says nothing and stays visible
		// mesh-wide.
		perNS := conf.Services / conf.Namespaces
		if want := float64(perNS + perNS/2 + 1); f.Endpoints.P50 != want || f.Endpoints.Max != want || f.Endpoints.Mean != want {
			t.Errorf("EDS resources per proxy: %+v, want %v for every proxy", f.Endpoints, want)
		}
		// Split 0 and the new Services are in ns-0, where groups 0 and 3
		// live: those two proxies, and only they, are waited for.
		inNS0 := n / conf.Namespaces
		if f.ColdStart.N != n {
			t.Errorf("cold start: %d proxies timed, want %d", f.ColdStart.N, n)
		}
		if f.WeightProxies != inNS0 || f.WeightMissed != 0 || f.WeightAll.N != conf.Repeats*inNS0 {
			t.Errorf("weight changes: %d samples from %d proxies, %d missed; want %d, %d, 0", f.WeightAll.N, f.WeightProxies, f.WeightMissed, conf.Repeats*inNS0, inNS0)
		}
		if f.NewServiceProxies != inNS0 || f.NewServiceMissed != 0 || f.NewService.N != conf.NewServices*inNS0 {
			t.Errorf("new Services: %d samples from %d proxies, %d missed; want %d, %d, 0", f.NewService.N, f.NewServiceProxies, f.NewServiceMissed, conf.NewServices*inNS0, inNS0)
		}
		// Each Service is held by the proxies of its namespace only.
		if ch := f.Churn; ch.Changes != 10 || ch.Failed != 0 || ch.Missed != 0 || ch.Latency.N != ch.Changes*n/conf.Namespaces {
			t.Errorf("churn: %+v; want 10 changes, each delivered to the %d proxies of its Service's namespace", ch, n/conf.Namespaces)
		}
		if o := f.OnePercent; o.Missed != 0 || o.Dependents == 0 || o.Dependents >= n || o.Receivers != o.Dependents {
			t.Errorf("endpoint burst: %+v; want only the proxies of the changed Services' namespaces to depend on them and receive anything", o)
		}
	})
	if t.Failed() {
		return
	}
	// The point of scoping: each proxy is sent less.
	if scoped.ConfigBytes.Mean >= all.ConfigBytes.Mean || scoped.Resources.Mean >= all.Resources.Mean {
		t.Errorf("config per proxy: scoped %.0f bytes in %.0f resources, every Service visible %.0f bytes in %.0f resources; want less scoped",
			scoped.ConfigBytes.Mean, scoped.Resources.Mean, all.ConfigBytes.Mean, all.Resources.Mean)
	}
	t.Logf("config per proxy: %.0f bytes (%.0f resources) scoped, %.0f bytes (%.0f resources) with every Service visible",
		scoped.ConfigBytes.Mean, scoped.Resources.Mean, all.ConfigBytes.Mean, all.Resources.Mean)
}

// runBenchShape runs conf against a fresh API server and weft-controller
// and returns its one fleet's report.
func runBenchShape(t *testing.T, conf Config) FleetReport {
	t.Helper()
	env := testenv.Start(t)
	bin, err := BuildController(env.Root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	var logs, progress bytes.Buffer
	conf.Progress, conf.ControllerLog = &progress, &logs
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	rep, err := Run(ctx, conf, Cluster{Client: c, Kubeconfig: env.Kubeconfig, Planes: []Plane{{Flavor: Weft, Binary: bin}}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("progress:\n%s\ncontroller:\n%s", progress.String(), logs.String())
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	rep.PrintComparison(&table)
	t.Logf("\n%s", table.String())
	if len(rep.Fleets) != 1 || rep.Fleets[0].Plane != Weft {
		t.Fatalf("fleets %+v, want one of weft", rep.Fleets)
	}
	return rep.Fleets[0]
}
