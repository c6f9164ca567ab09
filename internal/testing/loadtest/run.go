// Package loadtest measures weft-controller as Envoy fleets see it: it
// creates a mesh in a real API server, runs the real weft-controller
// binary, connects simulated Delta xDS proxies (internal/testing/xdsload), and
// times every step from the API write to the proxies' ACKs. hack/load is
// its command line; its numbers are in hack/load/README.md.
package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/testmesh"
)

// Mesh is the cluster a run creates.
type Mesh struct {
	// Services in all (svc-i in namespace ns-(i mod Namespaces)), each
	// with Endpoints ready endpoints backed by meshed Pods.
	Services, Endpoints, Namespaces int
	// ExportAll exports every Service to every namespace, so that every
	// proxy receives every Service (the peer's setup: Istio without
	// Sidecar scoping). Otherwise a proxy sees its namespace's Services
	// and the two shared ones.
	ExportAll bool
	// Scoped scopes every proxy to its own namespace on both control
	// planes (--scoped): weft's Services and the mesh's namespaces say
	// weft.dev/export-to "." and, with VirtualServices, istiod gets a
	// Sidecar in its root namespace whose egress is "./*" (IstioSidecar).
	// Then only the proxies of the changed object's namespace wait for a
	// weight change or a new Service (both in namespace ns-0). It excludes
	// ExportAll.
	Scoped bool
	// Splits is the number of TrafficSplits among the port-80 Services
	// (--splits): every (Services/Splits)-th Service sends a share to
	// another in its namespace, as real meshes split among Services on one
	// common port; split 0's weight is the one the runs change. Zero puts
	// a single split between global and global-next on a port of their own.
	// Splits need ExportAll or Scoped (the proxies that wait for a weight
	// change must see split 0).
	Splits int
	// AltPort gives every second Service a second HTTP port, AltPort
	// (--alt-port), as real meshes have a second common port; the
	// measured split's pair stays on port 80.
	AltPort bool
	// VirtualServices also writes every split as an Istio VirtualService
	// (weighted destinations on the two hosts), labels the Pods as having
	// Istio's sidecar and creates istiod's namespace: the mesh for runs
	// that include istiod (its CRDs must be installed).
	VirtualServices bool
}

// Config is one run. Field comments name hack/load's flags.
type Config struct {
	Mesh
	// Proxies: one fleet per entry, each against a freshly started
	// controller (--proxies).
	Proxies []int
	// Groups of identical proxies (distinct namespace, service account and
	// labels) per fleet (--groups); at most Services.
	Groups int
	// ByName makes the simulated proxies subscribe to endpoints and routes
	// by name, as Envoy does (--by-name); istiod serves nothing to a
	// wildcard EDS or RDS subscription.
	ByName bool
	// NewServices is how many times a new Service is created and timed
	// until every proxy holds its cluster and a route to it (--new-services).
	NewServices int
	// Conns is the number of gRPC connections a fleet's streams share; 0
	// is one per proxy, as Envoys have (--conns).
	Conns int
	// Repeats of the weight change (--repeats), at most 80.
	Repeats int
	// Fraction of the Services whose endpoints change at once (--fraction).
	Fraction float64
	// ChurnRate endpoint changes per second for ChurnFor (--churn-rate,
	// --churn-for); a zero rate skips the phase.
	ChurnRate float64
	ChurnFor  time.Duration
	// Timeout bounds every wait (--timeout).
	Timeout time.Duration
	// MemoryWait is how long a memory reading may wait for each of the
	// controller's next MemoryGCs garbage collections (--memory-wait,
	// --memory-gcs; 0 counts as 1); a MemoryWait of 0 reads at once.
	MemoryWait time.Duration
	MemoryGCs  int
	// HeapProfile, if set, is where weft's heap profile is written after
	// the cold start's memory reading (--heap-profile; "-N" is added
	// before the extension for the fleet of N proxies), and before the
	// fleet connects (FILE-N-before.pb.gz: go tool pprof -base).
	HeapProfile string `json:",omitempty"`
	// ChurnCPUProfile, if set, is where weft's CPU profile over the
	// endpoint churn window is written (--churn-cpu-profile; "-N" added
	// as for HeapProfile).
	ChurnCPUProfile string `json:",omitempty"`
	// HarnessCPUProfile, if set, is where the harness's own CPU profile
	// over the cold start is written (FILE-N.pb.gz, weft's fleets only):
	// the simulated proxies share the measured control plane's cores.
	HarnessCPUProfile string `json:",omitempty"`
	// ColdCPUProfile, if set, is where weft's CPU profile over the first
	// ColdCPUFor of the cold start is written (--cold-cpu-profile,
	// --cold-cpu-for; "-N" added as for HeapProfile): pprof's endpoint
	// profiles a fixed window, so it should outlast the cold start.
	ColdCPUProfile string        `json:",omitempty"`
	ColdCPUFor     time.Duration `json:",omitempty"`
	// Workers write to the API server in parallel while creating the mesh.
	Workers int
	// Progress receives one line per step; ControllerLog the controller's
	// output. Either may be nil.
	Progress, ControllerLog io.Writer `json:"-"`
}

// Validate names the flag to fix.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Services >= 1, "--services must be at least 1")
	check(c.Endpoints >= 1 && c.Endpoints <= 16, "--endpoints must be between 1 and 16 (pod addresses are 16 per Service)")
	check(c.Namespaces >= 1 && c.Namespaces <= c.Services, "--namespaces must be between 1 and --services")
	check(len(c.Proxies) > 0, "--proxies needs at least one count")
	for _, n := range c.Proxies {
		check(n >= 1, "--proxies: %d is not a proxy count (at least 1)", n)
	}
	check(c.Groups >= 1 && c.Groups <= c.Services, "--groups must be between 1 and --services (group g is the workload of Service svc-g)")
	check(c.Conns >= 0, "--conns must be 0 (one per proxy) or more")
	check(c.Repeats >= 1 && c.Repeats <= 80, "--repeats must be between 1 and 80")
	check(c.Splits >= 0 && c.Splits <= c.Services/2, "--splits must be between 0 and half of --services")
	check(c.Splits == 0 || c.ExportAll || c.Scoped, "--splits needs --export-all or --scoped (the proxies that wait for a weight change must see split 0)")
	check(!c.Scoped || !c.ExportAll, "--scoped and --export-all exclude each other (--scoped: every proxy sees its own namespace only)")
	check(!c.Scoped || c.Splits > 0, "--scoped needs --splits (the measured split must be among the scoped Services; global is exported everywhere)")
	check(c.Splits == 0 || c.Services > c.Namespaces, "--splits needs more --services than --namespaces (a split's backends share a namespace)")
	check(c.NewServices >= 0 && c.NewServices <= 250, "--new-services must be between 0 and 250")
	check(c.Fraction > 0 && c.Fraction <= 1, "--fraction must be in (0, 1], e.g. 0.01")
	check(c.ChurnRate >= 0, "--churn-rate must not be negative")
	check(c.ChurnRate == 0 || c.ChurnFor > 0, "--churn-for must be positive when --churn-rate is set")
	check(int(c.ChurnRate*c.ChurnFor.Seconds())+c.Services < maxMarker/2, "--churn-rate × --churn-for is too many changes")
	check(c.Timeout > 0, "--timeout must be positive")
	check(c.MemoryWait >= 0, "--memory-wait must not be negative")
	check(c.MemoryGCs >= 0 && c.MemoryGCs <= 5, "--memory-gcs must be between 1 and 5 (2 reads the heap a quiet process keeps)")
	return errors.Join(errs...)
}

// Cluster is where a run happens.
type Cluster struct {
	// Client writes the mesh; give it a high QPS (the mesh is tens of
	// thousands of objects).
	Client client.Client
	// Kubeconfig is given to the controller.
	Kubeconfig string
	// Controller is the weft-controller binary.
	Controller string
	// Planes are the control planes to measure, one after the other on
	// each fleet size; empty means weft with Controller.
	Planes []Plane
}

// planes is what a run measures.
func (c Cluster) planes() []Plane {
	if len(c.Planes) > 0 {
		return c.Planes
	}
	return []Plane{{Flavor: Weft, Binary: c.Controller}}
}

// Report is what a run measured. Times are seconds, sizes bytes.
type Report struct {
	Config Config `json:"-"`
	// Setup is the time to create the mesh's objects; Objects how many.
	Setup   float64
	Objects int
	// LoadBefore and LoadAfter are the 1-minute load averages.
	LoadBefore, LoadAfter float64
	Fleets                []FleetReport
}

// FleetReport is one fleet's numbers.
type FleetReport struct {
	// Plane is the control plane measured ("weft", "istiod").
	Plane                  Flavor
	Proxies, Groups, Conns int
	// ControllerReady: process start to /readyz.
	ControllerReady float64
	// ColdStart: from opening every stream at once to each proxy holding
	// a full configuration (every type ACKed, the split's route included).
	ColdStart Dist
	// CPU seconds the controller (and this process, the simulated
	// proxies) used from opening the streams until all held their
	// configuration: less noisy than times on a shared machine.
	ColdStartCPU, ColdStartHarnessCPU float64
	// Streams opened in all (more than Proxies means reconnects).
	Streams int
	// ConfigBytes, Resources and Endpoints (EDS resources: the Services
	// it sees) per proxy after the cold start; ConfigBytesByType their
	// mean by type (short names).
	ConfigBytes, Resources, Endpoints Dist
	ConfigBytesByType                 map[string]float64
	// HeapBefore and HeapAfter: the controller's heap before connecting
	// and after the cold start; HeapAfterGC says they are live heaps read
	// right after garbage collections (see MemoryWait), not the smallest
	// heap in use of 5 samples, and HeapGCs how many collections each
	// reading waited for (2: pooled buffers are gone; 1: counted as live).
	// HeapPerProxy and RSSPerProxy: the growth of the heap and of
	// process_resident_memory_bytes, per proxy.
	HeapBefore, HeapAfter     float64
	RSSAfter                  float64
	HeapAfterGC               bool
	HeapGCs                   int
	HeapPerProxy, RSSPerProxy float64
	// RSSBefore is the RSS before connecting; RuntimeBefore and
	// RuntimeAfter the runtime's account of both readings.
	RSSBefore                   float64
	RuntimeBefore, RuntimeAfter RuntimeMemory
	// Weight: a TrafficSplit weight change, from just before the API write
	// to each proxy's ACK of the route carrying it: per repeat and over all.
	// WeightProxies is how many proxies were timed: those whose scope holds
	// the split (every proxy unless Scoped).
	Weight        []Dist
	WeightAll     Dist
	WeightProxies int
	WeightMissed  int // proxy × repeat pairs that never converged
	// WeightBytes and WeightPushes per proxy per change (means over every
	// proxy of the fleet, whether it sees the split or not);
	// WeightCPU the controller's CPU seconds per change.
	WeightBytes, WeightPushes, WeightCPU float64
	// NewService: from just before a new Service's creation to each
	// proxy's ACK of the last of its cluster and a route to it, over
	// every repeat (NewServices) and proxy whose scope holds it
	// (NewServiceProxies: every proxy unless Scoped); NewServiceMissed the
	// pairs that never converged.
	NewService        Dist
	NewServiceProxies int
	NewServiceMissed  int
	OnePercent        Change
	Churn             Churn
}

// Change is a burst of endpoint changes to a fraction of the Services.
type Change struct {
	Services int
	// Dependents: proxies that hold one of the changed Services.
	// Receivers: proxies that received anything at all.
	Dependents, Receivers int
	// Means over receivers, and bytes over every proxy.
	PushesPerReceiver, BytesPerReceiver, BytesPerProxy float64
	// ServerPushes: the growth of the control plane's push counter
	// (weft_xds_pushes_total, istiod's pilot_xds_pushes; -1 without one); CPU the controller's
	// CPU seconds from the writes until the proxies went quiet.
	ServerPushes, CPU float64
	// Latency: write → ACK per (change, dependent proxy).
	Latency Dist
	Missed  int
}

// Churn is a steady stream of endpoint changes.
type Churn struct {
	Rate    float64
	For     float64
	Changes int
	// Failed writes (not measured).
	Failed int
	// CPU: the controller's CPU seconds per second of churn (cores
	// busy); CPUSeconds in the whole window, from the first write to the
	// last.
	CPU, CPUSeconds float64
	// CPUToDelivery: its CPU seconds from the first write until every
	// change has reached every dependent proxy (or was given up), and
	// DeliveredAfter that time in seconds. A plane that holds changes back
	// longer (istiod batches for up to 10 s) does part of the window's work
	// after the last write: CPUSeconds would not count it.
	CPUToDelivery, DeliveredAfter float64
	// Latency: write → ACK per (change, dependent proxy).
	Latency Dist
	Missed  int
}

// runner holds the state shared by the phases of a run.
type runner struct {
	cfg     Config
	cl      Cluster
	objs    objects
	weight  int32 // the measured split's current weight for its second backend
	seq     int   // next endpoint marker
	created int   // new Services created so far
}

// Run creates the mesh, then for each fleet starts the controller,
// connects the proxies and measures.
func Run(ctx context.Context, cfg Config, cl Cluster) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	r := &runner{cfg: cfg, cl: cl, weight: 10}
	rep := &Report{Config: cfg, LoadBefore: loadAverage()}
	r.objs = build(cfg.Mesh, r.weight)
	rep.Objects = len(r.objs.namespaces) + len(r.objs.serviceAccounts) + len(r.objs.services) + len(r.objs.slices) + len(r.objs.pods) + len(r.objs.splits) + len(r.objs.vss) + len(r.objs.sidecars)
	r.say("creating %d objects (%d Services × %d endpoints in %d namespaces, %d Pods)", rep.Objects, cfg.Services, cfg.Endpoints, cfg.Namespaces, len(r.objs.pods))
	start := time.Now()
	if err := r.objs.create(ctx, cl.Client, cfg.Workers); err != nil {
		return nil, fmt.Errorf("creating the mesh: %w", err)
	}
	rep.Setup = time.Since(start).Seconds()
	for i, n := range cfg.Proxies {
		for _, p := range cl.planes() {
			fr, err := r.fleet(ctx, i, n, p)
			if err != nil {
				return rep, fmt.Errorf("%s, fleet of %d proxies: %w", p.Flavor, n, err)
			}
			rep.Fleets = append(rep.Fleets, *fr)
		}
	}
	rep.LoadAfter = loadAverage()
	return rep, nil
}

func (r *runner) say(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "load: "+format+"\n", args...)
	}
}

func (r *runner) fleet(ctx context.Context, index, n int, plane Plane) (*FleetReport, error) {
	cfg := r.cfg
	groups := min(cfg.Groups, n)
	if plane.Flavor == "" {
		plane.Flavor = Weft
	}
	fr := &FleetReport{Plane: plane.Flavor, Proxies: n, Groups: groups, Conns: cfg.Conns}
	if fr.Conns <= 0 || fr.Conns > n {
		fr.Conns = n
	}
	logs := cfg.ControllerLog
	if logs == nil {
		logs = io.Discard
	}
	// The split in the form this plane reads carries the current weight
	// (the previous plane changed only its own form).
	if obj, body, err := r.weightPatch(plane.Flavor, r.weight); err != nil {
		return nil, err
	} else if err := r.cl.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, body)); err != nil {
		return nil, fmt.Errorf("setting the split's weight to %d: %w", r.weight, err)
	}
	r.say("fleet %d: starting %s", n, plane.Flavor)
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	ctrl, err := startController(sctx, plane, r.cl.Kubeconfig, logs)
	cancel()
	if err != nil {
		return nil, err
	}
	defer ctrl.stop()
	fr.ControllerReady = time.Since(start).Seconds()

	// A probe of its own identity waits for the controller's first
	// translation of the whole mesh, then leaves.
	if err := r.probe(ctx, ctrl.xds, plane.Flavor); err != nil {
		return nil, err
	}
	r.say("fleet %d: reading the controller's memory (waiting up to %v for each of %d garbage collections)", n, cfg.MemoryWait, cfg.MemoryGCs)
	mem0, err := ctrl.memory(ctx, time.Now(), cfg.MemoryWait, cfg.MemoryGCs)
	if err != nil {
		return nil, err
	}
	if cfg.HeapProfile != "" && plane.Flavor != Istiod {
		// The baseline, for go tool pprof -base.
		path := numbered(cfg.HeapProfile, n)
		path = strings.TrimSuffix(path, ".pb.gz") + "-before.pb.gz"
		if err := ctrl.heapProfile(ctx, path); err != nil {
			return nil, fmt.Errorf("heap profile: %w", err)
		}
	}

	// Cold start: every stream at once.
	r.say("fleet %d: connecting %d proxies in %d groups over %d connections", n, n, groups, fr.Conns)
	f := newFleet(fleetSpec{mesh: cfg.Mesh, flavor: plane.Flavor, id: fmt.Sprintf("load-%d", index), n: n, groups: groups, byName: cfg.ByName})
	cpu0, err := ctrl.cpu(ctx)
	if err != nil {
		return nil, err
	}
	own0 := ownCPU()
	var profile *os.File
	if cfg.HarnessCPUProfile != "" && plane.Flavor != Istiod {
		if profile, err = os.Create(numbered(cfg.HarnessCPUProfile, n)); err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(profile); err != nil {
			profile.Close()
			return nil, err
		}
		defer func() { // on a failed cold start
			if profile != nil {
				pprof.StopCPUProfile()
				profile.Close()
			}
		}()
	}
	coldProfiled := make(chan error, 1)
	if cfg.ColdCPUProfile != "" && plane.Flavor == Weft {
		go func() {
			coldProfiled <- ctrl.cpuProfile(ctx, numbered(cfg.ColdCPUProfile, n), max(cfg.ColdCPUFor, time.Second))
		}()
		time.Sleep(100 * time.Millisecond) // the profile starts before the first stream
	} else {
		coldProfiled <- nil
	}
	if err := f.start(ctrl.xds, cfg.Conns); err != nil {
		return nil, err
	}
	defer f.stop()
	wctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	err = f.each(func(mb *member) error {
		if !mb.wait(wctx, func() bool { return !mb.complete.IsZero() }) {
			return fmt.Errorf("proxy %s: no full configuration within %v", mb.Node.Id, cfg.Timeout)
		}
		return nil
	})
	cancel()
	if err != nil {
		return nil, err
	}
	if profile != nil {
		pprof.StopCPUProfile()
		name, err := profile.Name(), profile.Close()
		profile = nil
		if err != nil {
			return nil, err
		}
		r.say("fleet %d: wrote the harness's CPU profile of the cold start to %s", n, name)
	}
	cpu1, err := ctrl.cpu(ctx)
	if err != nil {
		return nil, err
	}
	if err := <-coldProfiled; err != nil {
		return nil, fmt.Errorf("cold start CPU profile: %w", err)
	}
	if cfg.ColdCPUProfile != "" && plane.Flavor == Weft {
		r.say("fleet %d: wrote weft's CPU profile of the cold start to %s", n, numbered(cfg.ColdCPUProfile, n))
	}
	fr.ColdStartCPU, fr.ColdStartHarnessCPU = cpu1-cpu0, ownCPU()-own0
	var cold, bytes, resources, eds []float64
	byType := map[string]float64{}
	f.settle(ctx, time.Second)
	for _, mb := range f.members {
		mb.mu.Lock()
		cold = append(cold, mb.complete.Sub(f.started).Seconds())
		mb.mu.Unlock()
		s := mb.Stats()
		bytes = append(bytes, float64(s.Bytes))
		resources = append(resources, float64(s.Resources))
		eds = append(eds, float64(len(mb.Held(resourcev3.EndpointType))))
		fr.Streams += s.Streams
		for t, b := range s.BytesByType {
			byType[shortType(t)] += float64(b) / float64(n)
		}
	}
	fr.ColdStart, fr.ConfigBytes, fr.Resources, fr.ConfigBytesByType = distOf(cold), distOf(bytes), distOf(resources), byType
	fr.Endpoints = distOf(eds)
	r.say("fleet %d: all hold a full configuration after %.2fs (p50 %.2fs); %.0f bytes each", n, fr.ColdStart.Max, fr.ColdStart.P50, fr.ConfigBytes.Mean)

	mem1, err := ctrl.memory(ctx, time.Now(), cfg.MemoryWait, cfg.MemoryGCs)
	if err != nil {
		return nil, err
	}
	fr.HeapBefore, fr.HeapAfter, fr.HeapAfterGC = mem0.heap, mem1.heap, mem0.afterGC && mem1.afterGC
	fr.HeapGCs = min(mem0.gcs, mem1.gcs)
	fr.RSSBefore, fr.RSSAfter = mem0.rss, mem1.rss
	fr.RuntimeBefore, fr.RuntimeAfter = mem0.runtime, mem1.runtime
	fr.HeapPerProxy, fr.RSSPerProxy = (mem1.heap-mem0.heap)/float64(n), (mem1.rss-mem0.rss)/float64(n)
	r.say("fleet %d: controller heap %.1f MiB → %.1f MiB (after %d collections: %t)", n, mem0.heap/(1<<20), mem1.heap/(1<<20), fr.HeapGCs, fr.HeapAfterGC)
	if cfg.HeapProfile != "" && plane.Flavor != Istiod {
		path := numbered(cfg.HeapProfile, n)
		if err := ctrl.heapProfile(ctx, path); err != nil {
			return nil, fmt.Errorf("heap profile: %w", err)
		}
		r.say("fleet %d: wrote weft's heap profile to %s (go tool pprof -sample_index=inuse_space %s)", n, path, path)
	}

	if err := r.weights(ctx, f, ctrl, fr); err != nil {
		return nil, err
	}
	if err := r.newServices(ctx, f, fr); err != nil {
		return nil, err
	}
	f.tracking.Store(true)
	if err := r.onePercent(ctx, f, ctrl, fr); err != nil {
		return nil, err
	}
	if cfg.ChurnRate > 0 {
		if err := r.churn(ctx, f, ctrl, fr); err != nil {
			return nil, err
		}
	}
	if err := f.decodeErrors(); err != nil {
		return nil, fmt.Errorf("proxies could not decode what they received: %w", err)
	}
	return fr, nil
}

// probe connects one proxy of an identity no fleet uses and waits until it
// holds the split at the current weight: the controller has translated
// the whole mesh (it was created before the controller started). It sits
// in the shared namespace, or with Scoped in split 0's (whose scope holds
// the split).
func (r *runner) probe(ctx context.Context, addr string, flavor Flavor) error {
	p := newFleet(fleetSpec{mesh: r.cfg.Mesh, flavor: flavor, id: "probe", n: 1, groups: 1, byName: r.cfg.ByName})
	mb := p.members[0]
	ns := SharedNamespace
	if r.cfg.Scoped {
		ns = mb.namespace // group 0, svc-0's namespace: split 0's root
	}
	if !r.cfg.splitVisibleFrom(ns) {
		return fmt.Errorf("the probe proxy in %s cannot see the measured split", ns)
	}
	mb.seesSplit = true
	if flavor == Istiod {
		mb.Node = IstioSidecarNode("load-probe", ns, "load-probe", "10.248.0.1", map[string]string{"app": "load-probe"})
	} else {
		md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: "load-probe"})
		mb.Node.Id, mb.Node.Metadata = "load-probe."+ns, md
	}
	if err := p.start(addr, 1); err != nil {
		return err
	}
	defer p.stop()
	wctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	if !mb.wait(wctx, func() bool { _, ok := mb.weightAt(int(r.weight)); return ok && !mb.complete.IsZero() }) {
		return fmt.Errorf("the probe proxy never received the split at weight %d within %v", r.weight, r.cfg.Timeout)
	}
	return nil
}

// weights changes the split's weight Repeats times and times each change
// from just before the API write to the ACK of the route that carries it
// by every proxy whose scope holds the split.
func (r *runner) weights(ctx context.Context, f *fleet, ctrl *controller, fr *FleetReport) error {
	var all []float64
	waiters := f.seeing(func(mb *member) bool { return mb.seesSplit })
	fr.WeightProxies = len(waiters)
	var bytes, pushes float64
	cpu0, err := ctrl.cpu(ctx)
	if err != nil {
		return err
	}
	for rep := range r.cfg.Repeats {
		w := (r.weight-10+1)%89 + 10 // 10..98, never the current one
		obj, body, err := r.weightPatch(ctrl.flavor, w)
		if err != nil {
			return err
		}
		before := f.snapshot()
		t0 := time.Now()
		if err := r.cl.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, body)); err != nil {
			return fmt.Errorf("changing the split's weight: %w", err)
		}
		r.weight = w
		lat, missed := latencies(ctx, r.cfg.Timeout, t0, waiters, func(mb *member) (time.Time, bool) { return mb.weightAt(int(w)) })
		fr.WeightMissed += missed
		f.settle(ctx, 500*time.Millisecond)
		after := f.snapshot()
		for i := range after {
			bytes += float64(after[i].Bytes - before[i].Bytes)
			pushes += float64(after[i].Responses - before[i].Responses)
		}
		d := distOf(lat)
		fr.Weight = append(fr.Weight, d)
		all = append(all, lat...)
		r.say("fleet %d: weight change %d/%d → %d%%: p50 %.1fms p99 %.1fms max %.1fms (%d of the %d proxies that see it)", len(f.members), rep+1, r.cfg.Repeats, w, d.P50*1e3, d.P99*1e3, d.Max*1e3, d.N, len(waiters))
	}
	fr.WeightAll = distOf(all)
	cpu1, err := ctrl.cpu(ctx)
	if err != nil {
		return err
	}
	fr.WeightCPU = (cpu1 - cpu0) / float64(r.cfg.Repeats)
	changes := float64(r.cfg.Repeats * len(f.members))
	fr.WeightBytes, fr.WeightPushes = bytes/changes, pushes/changes
	return nil
}

// endpointChange is one write of a marker to a Service's endpoints.
type endpointChange struct {
	service int
	seq     int
	at      time.Time
	err     error
}

// writeMarker gives Service i's first endpoint the marker address of seq.
func (r *runner) writeMarker(ctx context.Context, i, seq int) endpointChange {
	slice := r.objs.slices[i]
	eps := make([]discoveryv1.Endpoint, len(slice.Endpoints))
	for k, e := range slice.Endpoints {
		eps[k] = *e.DeepCopy()
	}
	eps[0].Addresses = []string{markerAddr(seq)}
	body, err := json.Marshal(map[string]any{"endpoints": eps})
	if err != nil {
		return endpointChange{service: i, seq: seq, err: err}
	}
	target := &discoveryv1.EndpointSlice{}
	target.Name, target.Namespace = slice.Name, slice.Namespace
	c := endpointChange{service: i, seq: seq, at: time.Now()}
	c.err = r.cl.Client.Patch(ctx, target, client.RawPatch(types.MergePatchType, body))
	return c
}

func (r *runner) nextSeq() int {
	s := r.seq
	r.seq++
	return s
}

// dependents maps each Service (by index) to the proxies holding its
// endpoints now.
func dependents(m Mesh, f *fleet) map[int][]*member {
	holders := map[string][]*member{}
	for _, mb := range f.members {
		for name := range mb.Held(resourcev3.EndpointType) {
			holders[name] = append(holders[name], mb)
		}
	}
	out := map[int][]*member{}
	for i := range m.Services {
		if h := holders[ClusterName(m, i)]; len(h) > 0 {
			out[i] = h
		}
	}
	return out
}

// latencies waits for every dependent of every change to accept it and
// returns write → ACK times and how many never arrived.
func (r *runner) latencies(ctx context.Context, changes []endpointChange, deps map[int][]*member) ([]float64, int) {
	wctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	var lat []float64
	missed := 0
	for _, c := range changes {
		if c.err != nil {
			continue
		}
		cluster := ClusterName(r.cfg.Mesh, c.service)
		for _, mb := range deps[c.service] {
			var at time.Time
			if !mb.wait(wctx, func() bool { var ok bool; at, ok = mb.markerAt(cluster, c.seq); return ok }) {
				missed++
				continue
			}
			lat = append(lat, at.Sub(c.at).Seconds())
		}
	}
	return lat, missed
}

// onePercent changes the endpoints of a fraction of the Services at once
// and counts who received what.
func (r *runner) onePercent(ctx context.Context, f *fleet, ctrl *controller, fr *FleetReport) error {
	m := max(1, int(math.Round(float64(r.cfg.Services)*r.cfg.Fraction)))
	// The same Services every run: a fixed seed.
	pick := rand.New(rand.NewPCG(1, 2)).Perm(r.cfg.Services)[:m]
	deps := dependents(r.cfg.Mesh, f)
	affected := map[*member]bool{}
	for _, i := range pick {
		for _, mb := range deps[i] {
			affected[mb] = true
		}
	}
	f.settle(ctx, 500*time.Millisecond)
	// A control plane that does not count pushes (yet) is measured anyway.
	pushes0, err := ctrl.metric(ctx, ctrl.pushesMetric())
	if err != nil {
		r.say("fleet %d: no push count: %v", len(f.members), err)
		pushes0 = -1
	}
	cpu0, err := ctrl.cpu(ctx)
	if err != nil {
		return err
	}
	before := f.snapshot()
	changes := make([]endpointChange, m)
	seqs := make([]int, m)
	for k := range pick {
		seqs[k] = r.nextSeq()
	}
	var wg sync.WaitGroup
	for k, i := range pick {
		wg.Add(1)
		go func() { defer wg.Done(); changes[k] = r.writeMarker(ctx, i, seqs[k]) }()
	}
	wg.Wait()
	for _, c := range changes {
		if c.err != nil {
			return fmt.Errorf("changing the endpoints of svc-%d: %w", c.service, c.err)
		}
	}
	lat, missed := r.latencies(ctx, changes, deps)
	f.settle(ctx, 2*time.Second)
	after := f.snapshot()
	pushes1, err := ctrl.metric(ctx, ctrl.pushesMetric())
	if err != nil || pushes0 < 0 {
		pushes0, pushes1 = 0, -1
	}
	cpu1, err := ctrl.cpu(ctx)
	if err != nil {
		return err
	}
	c := Change{Services: m, Dependents: len(affected), Latency: distOf(lat), Missed: missed, ServerPushes: pushes1 - pushes0, CPU: cpu1 - cpu0}
	var pushes, bytes float64
	for i := range after {
		dr, db := after[i].Responses-before[i].Responses, after[i].Bytes-before[i].Bytes
		if dr > 0 {
			c.Receivers++
			pushes += float64(dr)
		}
		bytes += float64(db)
	}
	if c.Receivers > 0 {
		c.PushesPerReceiver, c.BytesPerReceiver = pushes/float64(c.Receivers), bytes/float64(c.Receivers)
	}
	c.BytesPerProxy = bytes / float64(len(f.members))
	fr.OnePercent = c
	r.say("fleet %d: %d Services' endpoints changed: %d proxies depend on them, %d received anything, %.1f pushes and %.0f bytes each; p99 %.1fms",
		len(f.members), m, c.Dependents, c.Receivers, c.PushesPerReceiver, c.BytesPerReceiver, c.Latency.P99*1e3)
	return nil
}

// churn writes ChurnRate endpoint changes per second for ChurnFor, each
// to a different Service that some proxy depends on (round robin), and
// times each from its write to every dependent's ACK.
func (r *runner) churn(ctx context.Context, f *fleet, ctrl *controller, fr *FleetReport) error {
	deps := dependents(r.cfg.Mesh, f)
	var candidates []int
	for _, i := range rand.New(rand.NewPCG(3, 4)).Perm(r.cfg.Services) {
		if len(deps[i]) > 0 {
			candidates = append(candidates, i)
		}
	}
	if len(candidates) == 0 {
		return errors.New("no proxy depends on any Service: nothing to churn")
	}
	total := int(r.cfg.ChurnRate * r.cfg.ChurnFor.Seconds())
	r.say("fleet %d: %d endpoint changes at %.0f/s over %d Services", len(f.members), total, r.cfg.ChurnRate, min(total, len(candidates)))
	changes := make([]endpointChange, total)
	tick := time.NewTicker(time.Duration(float64(time.Second) / r.cfg.ChurnRate))
	defer tick.Stop()
	var wg sync.WaitGroup
	cpu0, err := ctrl.cpu(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	profiled := make(chan error, 1)
	if r.cfg.ChurnCPUProfile != "" && ctrl.flavor == Weft {
		go func() {
			profiled <- ctrl.cpuProfile(ctx, numbered(r.cfg.ChurnCPUProfile, len(f.members)), r.cfg.ChurnFor)
		}()
	} else {
		profiled <- nil
	}
	for k := range total {
		if k > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		i, seq := candidates[k%len(candidates)], r.nextSeq()
		wg.Add(1)
		go func() { defer wg.Done(); changes[k] = r.writeMarker(ctx, i, seq) }()
	}
	wg.Wait()
	if err := <-profiled; err != nil {
		return fmt.Errorf("churn CPU profile: %w", err)
	}
	c := Churn{Rate: r.cfg.ChurnRate, For: time.Since(start).Seconds(), Changes: total}
	cpu1, err := ctrl.cpu(ctx)
	if err != nil {
		return err
	}
	c.CPUSeconds = cpu1 - cpu0
	c.CPU = c.CPUSeconds / c.For
	for _, ch := range changes {
		if ch.err != nil {
			c.Failed++
		}
	}
	lat, missed := r.latencies(ctx, changes, deps)
	c.Latency, c.Missed = distOf(lat), missed
	cpu2, err := ctrl.cpu(ctx)
	if err != nil {
		return err
	}
	c.CPUToDelivery, c.DeliveredAfter = cpu2-cpu0, time.Since(start).Seconds()
	fr.Churn = c
	r.say("fleet %d: endpoint churn: EDS p50 %.1fms p99 %.1fms max %.1fms over %d deliveries (%d failed writes, %d missed)",
		len(f.members), c.Latency.P50*1e3, c.Latency.P99*1e3, c.Latency.Max*1e3, c.Latency.N, c.Failed, c.Missed)
	f.settle(ctx, time.Second)
	return nil
}

// shortType turns a type URL into "Cluster", "Listener"...
func shortType(t string) string {
	for i := len(t) - 1; i >= 0; i-- {
		if t[i] == '.' {
			return t[i+1:]
		}
	}
	return t
}

// weightPatch is the object to patch and the merge patch that gives the
// measured split weight w for its second backend, in the form the
// control plane reads: weft's TrafficSplit or Istio's VirtualService.
func (r *runner) weightPatch(flavor Flavor, w int32) (client.Object, []byte, error) {
	m := r.cfg.Mesh
	var obj client.Object
	var spec any
	switch {
	case flavor == Istiod:
		if m.Splits == 0 || !m.VirtualServices {
			return nil, nil, errors.New("istiod needs the splits as VirtualServices (Splits > 0, VirtualServices)")
		}
		root, next := splitPair(m, 0)
		obj, spec = virtualService(m, root, next, w), vsSpec(m, root, next, w)
	case m.Splits > 0:
		root, next := splitPair(m, 0)
		ts := &v1alpha1.TrafficSplit{}
		ts.Name, ts.Namespace = splitObjectName(root), testmesh.Namespace(root%m.Namespaces)
		obj, spec = ts, pairSpec(root, next, w)
	default:
		ts := &v1alpha1.TrafficSplit{}
		ts.Name, ts.Namespace = SplitName, SharedNamespace
		obj, spec = ts, splitSpec(w)
	}
	body, err := json.Marshal(map[string]any{"spec": spec})
	return obj, body, err
}

// newServices creates NewServices Services, one at a time, each on port
// 80 in the first namespace with one endpoint, and times each from just
// before its creation to the ACK of the last of its cluster, a virtual
// host for it (in whichever route configuration carries it) and, from
// weft, its own listener by every proxy whose scope holds it.
func (r *runner) newServices(ctx context.Context, f *fleet, fr *FleetReport) error {
	var all []float64
	waiters := f.seeing(func(mb *member) bool { return r.cfg.newServiceVisibleFrom(mb.namespace) })
	fr.NewServiceProxies = len(waiters)
	for range r.cfg.NewServices {
		k := r.created
		r.created++
		ns := newServiceNamespace
		name := fmt.Sprintf("new-%d", k)
		host := name + "." + ns + ".svc.cluster.local"
		watch := &newService{cluster: "outbound|80||" + host, host: host, hostBytes: []byte(host)}
		if f.flavor != Istiod {
			// weft: the Service port's own listener, named like its
			// cluster (docs/design/182).
			watch.listener = watch.cluster
		}
		f.watch.Store(watch)
		svc, slice := newServiceObjects(r.cfg.Mesh, name, ns, k)
		t0 := time.Now()
		if err := r.cl.Client.Create(ctx, svc); err != nil {
			return fmt.Errorf("creating Service %s: %w", name, err)
		}
		if err := r.cl.Client.Create(ctx, slice); err != nil {
			return fmt.Errorf("creating EndpointSlice %s: %w", slice.Name, err)
		}
		lat, missed := latencies(ctx, r.cfg.Timeout, t0, waiters, func(mb *member) (time.Time, bool) { return mb.hasNew(watch.listener != "") })
		fr.NewServiceMissed += missed
		f.watch.Store(nil)
		for _, mb := range f.members {
			mb.mu.Lock()
			mb.newCluster, mb.newRoute, mb.newListener = time.Time{}, time.Time{}, time.Time{}
			mb.mu.Unlock()
		}
		d := distOf(lat)
		all = append(all, lat...)
		r.say("fleet %d: new Service %s: p50 %.1fms p99 %.1fms max %.1fms (%d of the %d proxies that see it)", len(f.members), name, d.P50*1e3, d.P99*1e3, d.Max*1e3, d.N, len(waiters))
		f.settle(ctx, 500*time.Millisecond)
	}
	fr.NewService = distOf(all)
	return nil
}

// numbered is path with "-n" before its extension (pprof's own, .pb.gz,
// kept whole): weft-heap.pb.gz for 100 proxies is weft-heap-100.pb.gz.
func numbered(path string, n int) string {
	ext := filepath.Ext(path)
	if strings.HasSuffix(path, ".pb.gz") {
		ext = ".pb.gz"
	}
	return fmt.Sprintf("%s-%d%s", strings.TrimSuffix(path, ext), n, ext)
}
