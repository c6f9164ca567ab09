package xds

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// ADS serves the aggregated discovery service, Delta and State of the
// World, from weft's own cache:
//
//   - Proxies with the same identity and labels form a group; a group's
//     configuration is built, validated and encoded once per change.
//   - A change rebuilds only groups with connected proxies whose
//     configuration can depend on what changed (deps.go), and wakes only
//     the proxies whose group's configuration changed; each is sent only
//     the resources whose content changed (Delta), or the types that did
//     (SotW).
//   - A NACK is recorded (registry, metrics, policy status) and never
//     answered by re-sending the rejected version: the proxy keeps its last
//     good configuration until the next change.
type ADS struct {
	log     logr.Logger
	metrics *metrics

	// updating serializes Update and UpdateEndpoints: each compares the
	// new model with the one installed before it.
	updating sync.Mutex

	mu   sync.Mutex
	mesh *ir.Mesh
	// shared builds groups' configurations from mesh, sharing what groups
	// with the same view have in common (envoy.Shared); replaced with mesh.
	// It is held weakly: an update holds it while it builds its groups, and
	// each build while it runs, but between builds the messages it keeps
	// (tens of MB for 2,000 Services) are not worth holding; the next
	// build makes a new one (builder).
	shared  weak.Pointer[envoy.Shared]
	event   time.Time // when the change that produced mesh happened
	groups  map[groupKey]*group
	conns   map[*conn]struct{}
	nextID  atomic.Uint64
	builds  atomic.Uint64
	patches atomic.Uint64
	onAck   func([]ir.PolicyRef)
	secrets SecretSource
	auth    Authenticator
	// enc shares encodings between groups.
	enc *encoder
	// nacked are the policy labels this ADS gave a series of the per-policy
	// NACK counter, guarded by mu: their series go when the policy leaves
	// the mesh, so the metric's size follows the policies that exist.
	nacked map[string]bool
}

// admit parses the node of a stream's first request and, on an
// authenticating endpoint, authenticates it.
func (a *ADS) admit(ctx context.Context, n *corev3.Node, authenticate bool) (NodeInfo, error) {
	node, err := ParseNode(n)
	if err != nil {
		return NodeInfo{}, status.Error(codes.InvalidArgument, err.Error())
	}
	a.mu.Lock()
	node.TrustDomain = a.mesh.TrustDomain
	a.mu.Unlock()
	node.Auth = AuthNone
	if authenticate && a.auth != nil {
		method, err := authenticateWith(ctx, a.auth, node)
		if err != nil {
			a.log.Info("refused a proxy", "node", node.ID, "reason", err.Error())
			return NodeInfo{}, err
		}
		node.Authenticated, node.Auth = true, method
	}
	return node, nil
}

// servesSecrets: only to groups of authenticated streams (a group is one
// identity, so only its own key). Sidecars take them by SDS; gRPC-Go never
// subscribes to SDS, so in a gRPC-kind group only weft's certificate agent
// (internal/certagent) receives them, and writes the files gRPC reads.
func (a *ADS) servesSecrets(g *group) bool {
	return a.secrets != nil && g.authenticated
}

// Anonymous is the ADS for an endpoint that does not authenticate (the
// plaintext port, for proxyless gRPC clients, as Istio's 15010): its
// streams get configuration, never secrets, and never share a group with
// authenticated streams of the same identity.
func (a *ADS) Anonymous() discoveryv3.AggregatedDiscoveryServiceServer { return anonymous{a} }

type anonymous struct{ a *ADS }

func (x anonymous) StreamAggregatedResources(s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return x.a.sotw(s, false)
}

func (x anonymous) DeltaAggregatedResources(s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return x.a.delta(s, false)
}

// OnAck registers fn to hear, after each ACK or NACK, the policies the
// answering proxy's configuration carries: their programmed state may have
// changed. Call it before serving; fn must not block.
func (a *ADS) OnAck(fn func([]ir.PolicyRef)) { a.onAck = fn }

// group is the proxies that share a configuration.
type group struct {
	key   groupKey
	proxy dataplane.Proxy // the first member: the group's configuration is built for it
	// authenticated groups hold streams whose identity was proven; only
	// they are served secrets.
	authenticated bool
	// build serializes builds of this group.
	build sync.Mutex
	snap  atomic.Pointer[snapshot]
	// failed is set while the last build failed: the snapshot in service
	// is older than the model, so its dependencies may be too, and every
	// update retries the group.
	failed atomic.Bool
	conns  map[*conn]struct{} // guarded by ADS.mu
}

// NewADS makes an ADS with an empty mesh: proxies connect and receive
// nothing until the first Update.
func NewADS(log logr.Logger) *ADS {
	empty := &ir.Mesh{}
	return &ADS{
		log:     log,
		metrics: newMetrics(),
		mesh:    empty,
		groups:  map[groupKey]*group{},
		conns:   map[*conn]struct{}{},
		enc:     newEncoder(),
		nacked:  map[string]bool{},
	}
}

// Update installs a new mesh model and pushes what changed. event is when
// the earliest change it contains happened, for latency metrics. Only the
// groups whose configuration the difference from the previous model can
// alter are rebuilt (affects); of those, only the ones whose configuration
// did change are woken.
func (a *ADS) Update(mesh *ir.Mesh, event time.Time) {
	a.updating.Lock()
	defer a.updating.Unlock()
	a.mu.Lock()
	prev := a.mesh
	a.mu.Unlock()
	ch := ir.Diff(prev, mesh)
	a.update(mesh, event, func(g *group) bool { return g.failed.Load() || affects(&ch, g.proxy, g.snap.Load()) }, a.rebuild)
	if !ch.Empty() {
		a.forgetPolicyNacks(mesh)
	}
}

// forgetPolicyNacks deletes the per-policy NACK series of policies that
// are no longer in the mesh.
func (a *ADS) forgetPolicyNacks(mesh *ir.Mesh) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.nacked) == 0 {
		return
	}
	present := meshPolicies(mesh)
	for label := range a.nacked {
		if !present[label] {
			a.metrics.policyNacks.DeletePartialMatch(prometheus.Labels{"policy": label})
			delete(a.nacked, label)
		}
	}
}

// UpdateEndpoints installs a mesh model that differs from the previous one
// only in the endpoints of the changed Services (translator.UpdateEndpoints).
// Only the groups whose configuration depends on one of them are touched,
// and those are patched, not built (endpoints.go): the changed Services'
// ClusterLoadAssignments are built and encoded once and replace the old
// ones in each group's snapshot. So the most frequent change costs what it
// touches, not the whole mesh, however many groups see it.
func (a *ADS) UpdateEndpoints(mesh *ir.Mesh, changed []ir.ServiceKey, event time.Time) {
	a.updating.Lock()
	defer a.updating.Unlock()
	a.mu.Lock()
	prev := a.mesh
	a.mu.Unlock()
	pt := prepareEndpoints(prev, mesh, changed, a.enc)
	a.update(mesh, event,
		func(g *group) bool { return g.failed.Load() || dependsOn(g.snap.Load(), changed) },
		func(g *group) bool { return a.patch(g, pt) })
}

// update installs mesh and runs apply (a rebuild or a patch; true if the
// group's configuration changed) on every affected group, waking those
// that changed.
func (a *ADS) update(mesh *ir.Mesh, event time.Time, affected, apply func(*group) bool) {
	a.mu.Lock()
	shared := envoy.NewShared(mesh)
	a.mesh, a.shared, a.event = mesh, weak.Make(shared), event
	groups := make([]*group, 0, len(a.groups))
	for _, g := range a.groups {
		if affected(g) {
			groups = append(groups, g)
		}
	}
	a.mu.Unlock()
	// Groups build independently: spread them over the cores.
	work := make(chan *group)
	var wg sync.WaitGroup
	for i := 0; i < min(runtime.GOMAXPROCS(0), len(groups)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := range work {
				if apply(g) {
					a.wake(g)
				}
			}
		}()
	}
	for _, g := range groups {
		work <- g
	}
	close(work)
	wg.Wait()
	runtime.KeepAlive(shared) // every group of this update shared it
}

// Builds counts group builds since the ADS started (for tests and
// benchmarks: what a change cost).
func (a *ADS) Builds() uint64 { return a.builds.Load() }

// Patches counts endpoint-only changes applied to a group by patching its
// snapshot rather than building it (UpdateEndpoints).
func (a *ADS) Patches() uint64 { return a.patches.Load() }

// rebuild builds g for the current mesh; true if its configuration
// changed. The mesh is read after taking the group's build lock, so
// concurrent builds (a proxy joining during an Update) can finish in any
// order without an older mesh overwriting a newer one.
func (a *ADS) rebuild(g *group) bool {
	g.build.Lock()
	defer g.build.Unlock()
	return a.rebuildLocked(g)
}

func (a *ADS) rebuildLocked(g *group) bool {
	mesh, shared := a.builder()
	a.builds.Add(1)
	start := time.Now()
	prev := g.snap.Load()
	var secrets []*tlsv3.Secret
	if a.servesSecrets(g) {
		if chain, key, bundle, ok := a.secrets.Material(g.proxy.Identity(mesh.TrustDomain)); ok {
			secrets = sdsSecrets(chain, key, bundle)
		}
	}
	next, changed, err := encodeSnapshot(shared.Build(g.proxy), secrets, prev, a.enc)
	a.metrics.buildSeconds.Observe(time.Since(start).Seconds())
	g.failed.Store(err != nil)
	if err != nil {
		a.metrics.buildErrors.Inc()
		a.log.Error(err, "keeping the last good configuration", "group", string(g.key))
		return false
	}
	if next != prev {
		g.snap.Store(next)
	}
	return changed
}

// patch applies an endpoint-only change to g's snapshot, or builds g when
// the patch cannot (pt.apply); true if its configuration changed. The
// snapshot it patches was built for the model before the change: updates
// are serialized, every update brings each group it affects up to date,
// and a group that joined meanwhile was built for the new model already,
// which the patch then leaves as it is (the same encodings).
func (a *ADS) patch(g *group, pt *endpointPatch) bool {
	g.build.Lock()
	defer g.build.Unlock()
	prev := g.snap.Load()
	if prev == nil || g.failed.Load() {
		return a.rebuildLocked(g)
	}
	next, ok := pt.apply(prev, g.proxy)
	if !ok {
		a.metrics.endpointPatches.WithLabelValues("rebuilt").Inc()
		return a.rebuildLocked(g)
	}
	a.patches.Add(1)
	a.metrics.endpointPatches.WithLabelValues("patched").Inc()
	if next == prev {
		return false
	}
	g.snap.Store(next)
	return true
}

// builder returns the current mesh and the Shared that builds from it.
func (a *ADS) builder() (*ir.Mesh, *envoy.Shared) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.shared.Value()
	if s == nil {
		s = envoy.NewShared(a.mesh)
		a.shared = weak.Make(s)
	}
	return a.mesh, s
}

func (a *ADS) wake(g *group) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for c := range g.conns {
		select {
		case c.notify <- struct{}{}:
		default: // already woken; it will read the newest snapshot
		}
	}
}

// join adds a connection to its group, creating and building the group if
// it is the first.
func (a *ADS) join(c *conn) {
	key := keyOf(c.node.Proxy, c.node.Authenticated)
	a.mu.Lock()
	g := a.groups[key]
	if g == nil {
		g = &group{key: key, proxy: c.node.Proxy, authenticated: c.node.Authenticated, conns: map[*conn]struct{}{}}
		a.groups[key] = g
	}
	first := len(g.conns) == 0
	g.conns[c] = struct{}{}
	a.conns[c] = struct{}{}
	c.group = g
	mesh := a.mesh
	a.mu.Unlock()
	if first && a.servesSecrets(g) {
		a.secrets.Acquire(c.node.Proxy.Identity(mesh.TrustDomain))
	}
	if g.snap.Load() == nil {
		a.rebuild(g)
	}
	a.metrics.connected.WithLabelValues(kindName(c.node.Proxy.Kind)).Inc()
}

// leave removes a connection; the last one out drops its group.
func (a *ADS) leave(c *conn) {
	a.mu.Lock()
	delete(a.conns, c)
	var release string
	if g := c.group; g != nil {
		delete(g.conns, c)
		if len(g.conns) == 0 {
			delete(a.groups, g.key)
			if a.servesSecrets(g) {
				release = g.proxy.Identity(a.mesh.TrustDomain)
			}
		}
	}
	a.mu.Unlock()
	if release != "" {
		a.secrets.Release(release)
	}
	a.metrics.connected.WithLabelValues(kindName(c.node.Proxy.Kind)).Dec()
}

func (a *ADS) newConn(delta bool, node NodeInfo) *conn {
	return &conn{id: a.nextID.Add(1), node: node, connectedAt: time.Now(), delta: delta,
		notify: make(chan struct{}, 1), types: map[string]*typeState{}}
}

// receive reads requests into a channel, so the stream's goroutine can also
// wait for pushes.
func receive[T any](ctx context.Context, recv func() (T, error)) (<-chan T, <-chan error) {
	reqs, errc := make(chan T), make(chan error, 1)
	go func() {
		for {
			r, err := recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return reqs, errc
}

func streamEnd(err error) error {
	if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

// StreamAggregatedResources serves State-of-the-World ADS, authenticating
// streams when an Authenticator is set.
func (a *ADS) StreamAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return a.sotw(stream, true)
}

func (a *ADS) sotw(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, authenticate bool) error {
	handle := func(c *conn, r *discoveryv3.DiscoveryRequest) error {
		c.mu.Lock()
		ts := c.state(r.TypeUrl)
		var respond bool
		if r.ResponseNonce != "" {
			accepted, known := ts.ack(r.ResponseNonce, r.ErrorDetail, time.Now())
			if !known || r.ResponseNonce != ts.lastNonce {
				c.mu.Unlock()
				return nil // answers an older response: the protocol says ignore it
			}
			a.recordAck(c, r.TypeUrl, accepted, r.ErrorDetail.GetMessage())
		}
		names := map[string]bool{}
		for _, n := range r.ResourceNames {
			names[n] = true
		}
		wildcard := len(r.ResourceNames) == 0 && isWildcardType(r.TypeUrl) || names["*"]
		if wildcard != ts.wildcard || !sameSet(names, ts.names) {
			ts.wildcard, ts.names = wildcard, names
			respond = true
		}
		if r.ResponseNonce == "" {
			respond = true // a new subscription (or a reconnect) always gets an answer
		}
		c.mu.Unlock()
		if respond || r.ErrorDetail == nil {
			return a.sendSotW(stream, c, r.TypeUrl, respond)
		}
		return nil
	}
	push := func(c *conn, t string) error { return a.sendSotW(stream, c, t, false) }
	return serve(a, stream.Context(), false, authenticate, stream.Recv, (*discoveryv3.DiscoveryRequest).GetNode, (*discoveryv3.DiscoveryRequest).GetTypeUrl, handle, push)
}

// sendSotW sends the subscribed resources of one type when their version
// differs from what the proxy was last sent (or always, when force).
func (a *ADS) sendSotW(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, c *conn, t string, force bool) error {
	snap := c.group.snap.Load()
	if snap == nil {
		return nil
	}
	c.mu.Lock()
	ts := c.state(t)
	var names map[string]bool
	if !ts.wildcard {
		names = ts.names
	}
	version := snap.typeVersion(t, names)
	if version == ts.sentVersion && !force {
		if len(ts.pending) == 0 && ts.lastNack == nil {
			// Same content as already accepted: the proxy is current.
			ts.sentGen, ts.ackedGen = snap.generation, snap.generation
		}
		c.mu.Unlock()
		return nil
	}
	if version == ts.sentVersion && force && ts.lastNack != nil && len(ts.pending) == 0 {
		// The proxy rejected exactly this; answering again would loop.
		c.mu.Unlock()
		return nil
	}
	res := snap.sorted(t, names)
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: t, VersionInfo: version, Nonce: c.nextNonce()}
	size := 0
	for _, e := range res {
		resp.Resources = append(resp.Resources, e.any)
		size += e.size
	}
	ts.sentVersion, ts.lastNonce, ts.sentGen = version, resp.Nonce, snap.generation
	ts.pending[resp.Nonce] = inFlight{gen: snap.generation}
	c.mu.Unlock()
	a.recordSend(t, len(res), size)
	return stream.Send(resp)
}

// DeltaAggregatedResources serves incremental ADS, authenticating streams
// when an Authenticator is set.
func (a *ADS) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.delta(stream, true)
}

func (a *ADS) delta(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, authenticate bool) error {
	handle := func(c *conn, r *discoveryv3.DeltaDiscoveryRequest) error {
		c.mu.Lock()
		ts, existed := c.types[r.TypeUrl]
		if !existed {
			ts = c.state(r.TypeUrl)
			// The first request of a type without names subscribes to
			// everything of a wildcard type (Envoy's LDS and CDS).
			ts.wildcard = len(r.ResourceNamesSubscribe) == 0 && isWildcardType(r.TypeUrl)
			// A reconnecting proxy says what it already holds.
			for n, v := range r.InitialResourceVersions {
				ts.sent[n], ts.held[n] = v, v
			}
		}
		if r.ResponseNonce != "" {
			accepted, known := ts.ack(r.ResponseNonce, r.ErrorDetail, time.Now())
			if known {
				a.recordAck(c, r.TypeUrl, accepted, r.ErrorDetail.GetMessage())
			}
		}
		for _, n := range r.ResourceNamesSubscribe {
			if n == "*" {
				ts.wildcard = true
			} else {
				ts.names[n] = true
			}
		}
		for _, n := range r.ResourceNamesUnsubscribe {
			if n == "*" {
				ts.wildcard = false
			}
			delete(ts.names, n)
			ts.forget(n)
		}
		c.mu.Unlock()
		if r.ErrorDetail != nil && len(r.ResourceNamesSubscribe) == 0 {
			return nil // a NACK: never answered by re-sending the rejected version
		}
		return a.sendDelta(stream, c, r.TypeUrl)
	}
	push := func(c *conn, t string) error { return a.sendDelta(stream, c, t) }
	return serve(a, stream.Context(), true, authenticate, stream.Recv, (*discoveryv3.DeltaDiscoveryRequest).GetNode, (*discoveryv3.DeltaDiscoveryRequest).GetTypeUrl, handle, push)
}

// serve runs one stream of either protocol: it admits the node of the
// first request, joins the proxy to its group, then handles requests and
// pushes (in make-before-break order) whenever the group's configuration
// changes, until the stream ends.
func serve[Req any](a *ADS, ctx context.Context, delta, authenticate bool, recv func() (Req, error),
	nodeOf func(Req) *corev3.Node, typeOf func(Req) string,
	handle func(*conn, Req) error, push func(*conn, string) error) error {
	first, err := recv()
	if err != nil {
		return streamEnd(err)
	}
	node, err := a.admit(ctx, nodeOf(first), authenticate)
	if err != nil {
		return err
	}
	c := a.newConn(delta, node)
	a.join(c)
	defer a.leave(c)
	a.log.V(1).Info("proxy connected", "node", node.ID, "delta", delta)

	check := func(r Req) error {
		if typeOf(r) == "" {
			return status.Error(codes.InvalidArgument, "type_url is empty: weft serves ADS only, name the resource type")
		}
		return handle(c, r)
	}
	if err := check(first); err != nil {
		return err
	}
	reqs, errc := receive(ctx, recv)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return streamEnd(err)
		case r := <-reqs:
			if err := check(r); err != nil {
				return err
			}
		case <-c.notify:
			for _, t := range pushOrder {
				c.mu.Lock()
				_, subscribed := c.types[t]
				c.mu.Unlock()
				if subscribed {
					if err := push(c, t); err != nil {
						return err
					}
				}
			}
		}
	}
}

// sendDelta sends the resources of one type whose version differs from
// what the proxy holds, and the names it holds that no longer exist.
func (a *ADS) sendDelta(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, c *conn, t string) error {
	snap := c.group.snap.Load()
	if snap == nil {
		return nil
	}
	c.mu.Lock()
	ts := c.state(t)
	resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: t}
	size := 0
	have := snap.resources[t]
	for name, e := range have {
		if !ts.wildcard && !ts.names[name] {
			continue
		}
		if ts.sent[name] == e.version {
			continue
		}
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: e.name, Version: e.version, Resource: e.any})
		size += e.size
	}
	for name := range ts.sent {
		if _, ok := have[name]; !ok {
			resp.RemovedResources = append(resp.RemovedResources, name)
		}
	}
	if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 {
		if len(ts.pending) == 0 && ts.lastNack == nil {
			ts.sentGen, ts.ackedGen = snap.generation, snap.generation
		}
		c.mu.Unlock()
		return nil
	}
	sortDelta(resp)
	// sent changes now, so that nothing is sent twice (a NACKed version
	// included); held only when the proxy ACKs (typeState.ack).
	fl := inFlight{gen: snap.generation, set: make(map[string]string, len(resp.Resources)), removed: resp.RemovedResources}
	for _, r := range resp.Resources {
		ts.sent[r.Name] = r.Version
		fl.set[r.Name] = r.Version
	}
	for _, n := range resp.RemovedResources {
		delete(ts.sent, n)
	}
	resp.Nonce = c.nextNonce()
	resp.SystemVersionInfo = snap.typeVersion(t, nil)
	ts.sentGen = snap.generation
	ts.pending[resp.Nonce] = fl
	c.mu.Unlock()
	a.recordSend(t, len(resp.Resources), size)
	return stream.Send(resp)
}

func (a *ADS) recordSend(t string, n, size int) {
	a.metrics.pushes.WithLabelValues(shortType(t)).Inc()
	a.metrics.resourcesSent.WithLabelValues(shortType(t)).Add(float64(n))
	a.metrics.bytesSent.WithLabelValues(shortType(t)).Add(float64(size))
	a.mu.Lock()
	event := a.event
	a.mu.Unlock()
	if !event.IsZero() {
		a.metrics.pushLatency.Observe(time.Since(event).Seconds())
	}
}

func (a *ADS) recordAck(c *conn, t string, accepted bool, msg string) {
	if a.onAck != nil {
		if s := c.group.snap.Load(); s != nil && len(s.policies) > 0 {
			a.onAck(s.policies)
		}
	}
	if accepted {
		a.mu.Lock()
		event := a.event
		a.mu.Unlock()
		if !event.IsZero() {
			a.metrics.ackLatency.Observe(time.Since(event).Seconds())
		}
		return
	}
	a.metrics.nacks.WithLabelValues(shortType(t)).Inc()
	// By policy: each one the rejected configuration carries (the group's
	// current snapshot: what the proxy was last sent or is about to be).
	if s := c.group.snap.Load(); s != nil && len(s.policies) > 0 {
		a.mu.Lock()
		for _, p := range s.policies {
			label := policyLabel(p)
			a.metrics.policyNacks.WithLabelValues(shortType(t), label).Inc()
			a.nacked[label] = true
		}
		a.mu.Unlock()
	}
	a.log.Info("proxy rejected configuration", "node", c.node.ID, "type", t, "error", msg)
}

func sameSet[K comparable](a, b map[K]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
