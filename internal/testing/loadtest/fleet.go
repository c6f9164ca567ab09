package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/xdsload"
	"github.com/weftmesh/weft/translator/testmesh"
)

// stamp is a value a proxy accepted, and when it sent the ACK.
type stamp struct {
	value int
	at    time.Time
}

// member is one simulated proxy and what it recorded.
type member struct {
	*xdsload.Proxy
	group     int
	namespace string
	// seesSplit: the proxy's scope holds the measured split (always,
	// unless Mesh.Scoped puts it in another namespace); own is the
	// cluster (and EDS resource) of its own workload's Service, which
	// every scope holds. Both are set before the proxy connects.
	seesSplit bool
	own       string

	mu       sync.Mutex
	types    map[string]bool // types ACKed at least once
	ownHeld  bool            // own's endpoints accepted
	complete time.Time       // first ACK after which it held every type and the split (or, without it in scope, own)
	weights  []stamp         // the measured split's weight for its second backend, as accepted
	markers  map[string][]stamp
	// newCluster and newRoute: when the proxy first accepted the cluster of
	// the watched new Service, and a route configuration with a virtual
	// host for it (or, from weft, its own route configuration).
	newCluster, newRoute time.Time
	// newListener: when the proxy first accepted the watched new
	// Service's own listener (weft, docs/design/182: without it a
	// connection to the Service's address stays on the capture listener
	// and passes through).
	newListener time.Time
	errs        []error
	notify      chan struct{}
}

// fleet is a set of simulated proxies connected to one xDS address.
type fleet struct {
	members []*member
	conns   []*grpc.ClientConn
	// next is the cluster whose weight in a route tells the measured
	// split's weight, and nextBytes the same as bytes (a quick test
	// before decoding).
	next      string
	nextBytes []byte
	// tracking turns on decoding of endpoints (the marker of every
	// ClusterLoadAssignment), off while the cold start is timed.
	tracking atomic.Bool
	// watch is the new Service being timed, if any.
	watch   atomic.Pointer[newService]
	flavor  Flavor
	cancel  context.CancelFunc
	done    sync.WaitGroup
	started time.Time
}

// newService is a Service created while the proxies are connected: its
// cluster, and the host its virtual host names.
type newService struct {
	cluster, host string
	hostBytes     []byte
	// listener is the Service port's own listener, which the proxy needs
	// too (weft); "" when it needs none (istiod's per-port listener
	// already routes by Host).
	listener string
}

// fleetSpec is what newFleet lays out.
type fleetSpec struct {
	mesh   Mesh
	flavor Flavor
	// id is every proxy's node cluster (weft) — a name per fleet.
	id        string
	n, groups int
	byName    bool
}

// newFleet prepares n proxies in groups groups: proxy i belongs to group
// i mod groups, and group g is the workload of Service svc-g (its
// namespace, service account and app label), the way replicas of one
// Deployment share a configuration; replica r is the Pod svc-g-r (its
// address). Each presents itself as the flavor's sidecars do. Nothing
// connects until start.
func newFleet(sp fleetSpec) *fleet {
	f := &fleet{next: measuredCluster(sp.mesh), flavor: sp.flavor}
	f.nextBytes = []byte(f.next)
	for i := range sp.n {
		g, r := i%sp.groups, i/sp.groups
		ns := testmesh.Namespace(g % sp.mesh.Namespaces)
		app := fmt.Sprintf("svc-%d", g)
		mb := &member{group: g, namespace: ns, seesSplit: sp.mesh.splitVisibleFrom(ns), own: ClusterName(sp.mesh, g),
			types: map[string]bool{}, markers: map[string][]stamp{}, notify: make(chan struct{}, 1)}
		var node *corev3.Node
		if sp.flavor == Istiod {
			labels := map[string]string{"app": app}
			if sp.mesh.VirtualServices {
				labels[IstioTLSModeLabel] = "istio"
			}
			node = IstioSidecarNode(fmt.Sprintf("%s-%d", app, r), ns, app, testmesh.PodIP(g, r), labels)
		} else {
			md, _ := structpb.NewStruct(dataplane.NodeMetadata(dataplane.NodeMeta{
				Namespace: ns, ServiceAccount: app,
				Labels: map[string]string{"app": app},
				PodIPs: testmesh.PodIP(g, r),
				Kind:   dataplane.KindNameSidecar,
			}))
			node = &corev3.Node{Id: fmt.Sprintf("%s-%d-%d.%s", app, r, i, ns), Cluster: sp.id, Metadata: md}
		}
		mb.Proxy = &xdsload.Proxy{Node: node, ByName: sp.byName,
			OnAck: func(r *discoveryv3.DeltaDiscoveryResponse, at time.Time) { mb.acked(f, r, at) }}
		f.members = append(f.members, mb)
	}
	return f
}

// IstioVersion is what the simulated Istio sidecars say they run.
const IstioVersion = "1.31.0"

// IstioSidecarNode is the node an Istio sidecar (istio-agent) sends for
// Pod pod in namespace ns: the ID sidecar~IP~POD.NS~NS.svc.cluster.local
// (pilot/pkg/model.ParseServiceNodeWithMetadata) and the metadata istiod
// reads to place it (pkg/model.NodeMetadata: CLUSTER_ID, NAMESPACE,
// INSTANCE_IPS, LABELS, ISTIO_VERSION, NAME, SERVICE_ACCOUNT,
// WORKLOAD_NAME, INTERCEPTION_MODE).
func IstioSidecarNode(pod, ns, serviceAccount, ip string, labels map[string]string) *corev3.Node {
	l := map[string]any{}
	for k, v := range labels {
		l[k] = v
	}
	md, _ := structpb.NewStruct(map[string]any{
		"CLUSTER_ID":        IstioClusterID,
		"NAMESPACE":         ns,
		"INSTANCE_IPS":      ip,
		"LABELS":            l,
		"ISTIO_VERSION":     IstioVersion,
		"NAME":              pod,
		"SERVICE_ACCOUNT":   serviceAccount,
		"WORKLOAD_NAME":     labels["app"],
		"INTERCEPTION_MODE": "REDIRECT",
	})
	return &corev3.Node{
		Id:       fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", ip, pod, ns, ns),
		Cluster:  labels["app"] + "." + ns,
		Metadata: md,
	}
}

// acked records what an accepted response changed: the measured split's
// weight (read from whichever route configuration carries the weighted
// pair), endpoint markers (when tracking), the watched new Service, and
// completion.
func (mb *member) acked(f *fleet, r *discoveryv3.DeltaDiscoveryResponse, at time.Time) {
	tracking, watch := f.tracking.Load(), f.watch.Load()
	mb.mu.Lock()
	defer mb.mu.Unlock()
	mb.types[r.TypeUrl] = true
	for _, res := range r.Resources {
		var err error
		raw := res.GetResource().GetValue()
		if r.TypeUrl == resourcev3.EndpointType && res.Name == mb.own {
			mb.ownHeld = true
		}
		switch {
		case r.TypeUrl == resourcev3.RouteType:
			if bytes.Contains(raw, f.nextBytes) {
				var w int
				if w, err = clusterWeight(res, f.next); w >= 0 {
					mb.weights = append(mb.weights, stamp{w, at})
				}
			}
			switch {
			case watch == nil || !mb.newRoute.IsZero():
			case res.Name == watch.cluster:
				// weft: the Service port's own route configuration,
				// named like its cluster, routes any Host
				// (docs/design/090).
				mb.newRoute = at
			case bytes.Contains(raw, watch.hostBytes):
				var ok bool
				if ok, err = hasVirtualHost(res, watch.host); ok {
					mb.newRoute = at
				}
			}
		case r.TypeUrl == resourcev3.ListenerType && watch != nil && watch.listener != "" && res.Name == watch.listener && mb.newListener.IsZero():
			mb.newListener = at
		case r.TypeUrl == resourcev3.ClusterType && watch != nil && res.Name == watch.cluster && mb.newCluster.IsZero():
			mb.newCluster = at
		case r.TypeUrl == resourcev3.EndpointType && tracking:
			var seq int
			if seq, err = loadAssignmentMarker(res); seq >= 0 {
				if h := mb.markers[res.Name]; len(h) == 0 || h[len(h)-1].value < seq {
					mb.markers[res.Name] = append(h, stamp{seq, at})
				}
			}
		}
		if err != nil && len(mb.errs) < 10 {
			mb.errs = append(mb.errs, err)
		}
	}
	// Complete: every type accepted and, as a sign that the whole
	// configuration arrived, the split's route — or, for a proxy whose
	// scope does not hold the split, its own Service's endpoints.
	if mb.complete.IsZero() && len(mb.types) == len(xdsload.Types) && (len(mb.weights) > 0 || !mb.seesSplit && mb.ownHeld) {
		mb.complete = at
	}
	select {
	case mb.notify <- struct{}{}:
	default:
	}
}

// hasNew is when the proxy held the new Service's cluster, a route to it
// and, when listener is set, its own listener; or false.
func (mb *member) hasNew(listener bool) (time.Time, bool) {
	if mb.newCluster.IsZero() || mb.newRoute.IsZero() || (listener && mb.newListener.IsZero()) {
		return time.Time{}, false
	}
	t := mb.newCluster
	for _, u := range []time.Time{mb.newRoute, mb.newListener} {
		if u.After(t) {
			t = u
		}
	}
	return t, true
}

// wait blocks until cond (called with mb.mu held) returns true, or ctx
// ends.
func (mb *member) wait(ctx context.Context, cond func() bool) bool {
	for {
		mb.mu.Lock()
		ok := cond()
		mb.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-mb.notify:
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond): // another waiter took the signal
		}
	}
}

// weightAt is when the proxy first accepted weight w, or false.
func (mb *member) weightAt(w int) (time.Time, bool) {
	for _, s := range mb.weights {
		if s.value == w {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// markerAt is when the proxy first accepted endpoints of cluster that
// reflect change seq or a later one, or false.
func (mb *member) markerAt(cluster string, seq int) (time.Time, bool) {
	for _, s := range mb.markers[cluster] {
		if s.value >= seq {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// start connects every proxy at once (a reconnect storm), over conns gRPC
// connections (0: one per proxy, as every Envoy has its own), each proxy
// reconnecting after failures as Envoy does.
func (f *fleet) start(addr string, conns int) error {
	if conns <= 0 || conns > len(f.members) {
		conns = len(f.members)
	}
	// What each flavor's sidecars accept in one message: weft's bootstrap
	// raises Envoy's limit to dataplane.MaxXDSMessageBytes; Istio's
	// pilot-agent, which relays istiod's xDS to Envoy, takes up to
	// math.MaxInt32 (pkg/istio-agent/xds_proxy.go). gRPC-Go's default, 4
	// MiB, refused istiod's cluster responses at 5,000 Services (--large)
	// and its proxies never converged.
	maxRecv := dataplane.MaxXDSMessageBytes
	if f.flavor == Istiod {
		maxRecv = math.MaxInt32
	}
	for range conns {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecv)))
		if err != nil {
			f.stop()
			return err
		}
		f.conns = append(f.conns, c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.started = time.Now()
	for i, mb := range f.members {
		f.done.Add(1)
		go func() {
			defer f.done.Done()
			mb.Keep(ctx, f.conns[i%len(f.conns)], 5*time.Second)
		}()
	}
	return nil
}

// stop disconnects every proxy.
func (f *fleet) stop() {
	if f.cancel != nil {
		f.cancel()
	}
	f.done.Wait()
	for _, c := range f.conns {
		_ = c.Close()
	}
	f.conns = nil
}

// latencies waits (at most timeout) until every member of waiters holds a
// change, which at reports with the time it arrived, and returns the
// delays from t0 of those that did and how many never did.
func latencies(ctx context.Context, timeout time.Duration, t0 time.Time, waiters []*member, at func(*member) (time.Time, bool)) (lat []float64, missed int) {
	var mu sync.Mutex
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_ = each(waiters, func(mb *member) error {
		var t time.Time
		ok := mb.wait(wctx, func() bool { var ok bool; t, ok = at(mb); return ok })
		mu.Lock()
		defer mu.Unlock()
		if !ok {
			missed++
			return nil
		}
		lat = append(lat, t.Sub(t0).Seconds())
		return nil
	})
	return lat, missed
}

// each runs fn for every member in parallel and joins the errors.
func (f *fleet) each(fn func(*member) error) error { return each(f.members, fn) }

func each(members []*member, fn func(*member) error) error {
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, mb := range members {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = fn(mb) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// seeing is the members whose scope holds what sees says.
func (f *fleet) seeing(sees func(*member) bool) []*member {
	var out []*member
	for _, mb := range f.members {
		if sees(mb) {
			out = append(out, mb)
		}
	}
	return out
}

// decodeErrors returns what proxies could not decode (a weft bug or a
// harness bug; either way the numbers are suspect).
func (f *fleet) decodeErrors() error {
	var errs []error
	for _, mb := range f.members {
		mb.mu.Lock()
		errs = append(errs, mb.errs...)
		mb.mu.Unlock()
	}
	return errors.Join(errs...)
}

// totals sums responses and bytes over the fleet.
func (f *fleet) totals() (responses, bytes int) {
	for _, mb := range f.members {
		s := mb.Stats()
		responses += s.Responses
		bytes += s.Bytes
	}
	return responses, bytes
}

// settle waits until no proxy received anything for quiet, or ctx ends.
func (f *fleet) settle(ctx context.Context, quiet time.Duration) {
	last, _ := f.totals()
	since := time.Now()
	for time.Since(since) < quiet {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		if n, _ := f.totals(); n != last {
			last, since = n, time.Now()
		}
	}
}

// snapshot is every member's Stats at one moment.
func (f *fleet) snapshot() []xdsload.Stats {
	out := make([]xdsload.Stats, len(f.members))
	for i, mb := range f.members {
		out[i] = mb.Stats()
	}
	return out
}
