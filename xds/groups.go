package xds

import (
	"runtime"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sync"
	"time"
	"weak"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// Groups: proxies with one identity and view share a group, built and
// encoded once; an update rebuilds or patches the groups it affects and
// wakes their streams.

// Update installs a new mesh model and pushes what changed. event is when
// the earliest change it contains happened, for latency metrics. Only the
// groups whose configuration the difference from the previous model can
// alter are rebuilt (affects); of those, only the ones whose configuration
// did change are woken.
func (a *ADS) Update(mesh *ir.Mesh, event time.Time) {
	a.updating.Lock()
	defer a.updating.Unlock()
	defer a.recoverPanic("update", "")
	a.mu.Lock()
	prev := a.mesh
	a.mu.Unlock()
	ch := ir.Diff(prev, mesh)
	now := time.Now()
	apply := func(g *group) bool { return a.rebuildIfAffected(g, &ch) }
	shared := envoy.NewShared(mesh)
	// A change of routing alone is patched into each group's
	// configuration (routepatch.go), and so is one that only adds
	// Services (servicepatch.go); any other is built.
	if pt := a.prepareRoutes(prev, mesh, &ch); pt != nil {
		apply = func(g *group) bool { return a.patch(g, pt, a.metrics.routePatches) }
	} else if sp := a.prepareServices(prev, mesh, &ch, shared); sp != nil {
		apply = func(g *group) bool { return a.patch(g, sp, a.metrics.servicePatches) }
	}
	a.update(mesh, shared, event, func(g *group) bool {
		if g.failed.Load() {
			return g.retryDue(now) // backs off; its last good configuration stays
		}
		return affects(&ch, g.proxy, g.snap.Load())
	}, apply)
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
	defer a.recoverPanic("update", "")
	a.mu.Lock()
	prev := a.mesh
	a.mu.Unlock()
	if prev != nil && refusalChanged(prev, mesh, changed) {
		// Rare: a Service moved between unmeshed and meshed workloads. Sidecars that do not hold it refuse or pass it by address
		// (envoy.SameRefusal): every group is built again.
		a.update(mesh, nil, event, func(g *group) bool { return true }, a.rebuild)
		return
	}
	pt := prepareEndpoints(prev, mesh, changed, a.enc)
	now := time.Now()
	a.update(mesh, nil, event,
		func(g *group) bool {
			if g.failed.Load() {
				return g.retryDue(now)
			}
			return dependsOn(g.snap.Load(), changed)
		},
		func(g *group) bool { return a.patch(g, pt, a.metrics.endpointPatches) })
}

// update installs mesh and runs apply (a rebuild or a patch; true if the
// group's configuration changed) on every affected group, waking those
// that changed. Builds share shared, a Shared of mesh (nil: a new one).
func (a *ADS) update(mesh *ir.Mesh, shared *envoy.Shared, event time.Time, affected, apply func(*group) bool) {
	if shared == nil {
		shared = envoy.NewShared(mesh)
	}
	a.mu.Lock()
	if a.mesh.TrustDomain != "" && mesh.TrustDomain != a.mesh.TrustDomain {
		// Every authenticated stream proved an identity of the old
		// domain, and its group's secrets are of it: end them, so that
		// each reconnects, is authenticated and acquires its secrets
		// under the new one (issue 13: a change left references to the
		// old identities and released the new ones, going negative).
		a.log.Info("the trust domain changed: closing authenticated streams so they reconnect under it", "from", a.mesh.TrustDomain, "to", mesh.TrustDomain)
		for c := range a.conns {
			if c.node.Authenticated {
				c.end(status.Errorf(codes.Unavailable, "node %s: the mesh's trust domain changed since the stream was admitted; reconnect to be authenticated under the new one", c.node.ID))
			}
		}
	}
	a.setLocality(mesh)
	a.mesh, a.shared, a.event = mesh, weak.Make(shared), event
	a.seq++
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

// Patches counts changes applied to a group by patching its snapshot
// rather than building it: endpoint-only changes (UpdateEndpoints) and
// routing-only ones (Update, routepatch.go).
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

// rebuildIfAffected is rebuild for an Update whose difference from the
// model before it is ch. The group was chosen before its build lock was
// taken (affects), some while it had no snapshot yet: a proxy had just
// joined and its group's first build was running. Once the lock is held,
// a group built from this model meanwhile is left as it is, and one built
// from the model before it is built again only if ch affects it. Streams
// open at once in a cold start: a model that arrived meanwhile built every
// group whose first build was under way twice (docs/design/184).
func (a *ADS) rebuildIfAffected(g *group, ch *ir.Change) bool {
	g.build.Lock()
	defer g.build.Unlock()
	if !g.failed.Load() && g.builtSeq != 0 {
		a.mu.Lock()
		seq := a.seq
		a.mu.Unlock()
		if g.builtSeq == seq {
			return false // built from this model already
		}
		if s := g.snap.Load(); s != nil && g.builtSeq == seq-1 && !affects(ch, g.proxy, s) {
			g.builtSeq = seq // what this model would build
			return false
		}
	}
	return a.rebuildLocked(g)
}

func (a *ADS) rebuildLocked(g *group) bool {
	mesh, shared, seq := a.builder()
	a.builds.Add(1)
	start := time.Now()
	prev := g.snap.Load()
	var secrets []*tlsv3.Secret
	if a.servesSecrets(g) {
		a.mu.Lock()
		id := g.secretID // what the group acquired, under the domain of that moment
		a.mu.Unlock()
		if id == "" {
			id = g.proxy.Identity(mesh.TrustDomain)
		}
		if chain, key, bundle, ok := a.secrets.Material(id); ok {
			secrets = sdsSecrets(chain, key, bundle)
		}
	}
	next, changed, err := a.buildGroup(shared, g, secrets, prev)
	a.metrics.buildSeconds.Observe(time.Since(start).Seconds())
	g.failed.Store(err != nil)
	if err != nil {
		g.failures++
		backoff := failedBuildRetryMax
		if g.failures < 20 {
			backoff = min(failedBuildRetry<<(g.failures-1), failedBuildRetryMax)
		}
		g.retryAt.Store(time.Now().Add(backoff).UnixNano())
		a.metrics.buildErrors.Inc()
		a.log.Error(err, "keeping the last good configuration", "group", string(g.key), "retryIn", backoff.String())
		return false
	}
	g.failures = 0
	g.builtSeq = seq
	if next != prev {
		g.snap.Store(next)
	}
	return changed
}

// patcher is a change prepared once for every group (endpointPatch,
// routePatch): apply derives a group's next snapshot from its current
// one, or says (ok false) that the group must be built.
type patcher interface {
	apply(s *snapshot, p dataplane.Proxy) (next *snapshot, ok bool)
}

// patch applies a prepared change to g's snapshot, or builds g when the
// patch cannot (pt.apply); true if its configuration changed. results
// counts each group as patched or rebuilt. The snapshot it patches was
// built for the model before the change: updates are serialized, every
// update brings each group it affects up to date, and a group that
// joined meanwhile was built for the new model already, which the patch
// then leaves as it is (the same encodings).
func (a *ADS) patch(g *group, pt patcher, results *prometheus.CounterVec) bool {
	g.build.Lock()
	defer g.build.Unlock()
	prev := g.snap.Load()
	if prev == nil || g.failed.Load() {
		return a.rebuildLocked(g)
	}
	next, ok, perr := a.applyPatch(pt, prev, g)
	if perr != nil {
		return false // recorded; the snapshot in service stays
	}
	if !ok {
		results.WithLabelValues("rebuilt").Inc()
		return a.rebuildLocked(g)
	}
	a.patches.Add(1)
	g.builtSeq = 0 // no model's build: never taken for one (rebuildIfAffected)
	results.WithLabelValues("patched").Inc()
	if next == prev {
		return false
	}
	g.snap.Store(next)
	return true
}

// builder returns the current mesh, the Shared that builds from it, and
// its number (seq).
func (a *ADS) builder() (*ir.Mesh, *envoy.Shared, uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.shared.Value()
	if s == nil {
		s = envoy.NewShared(a.mesh)
		a.shared = weak.Make(s)
	}
	return a.mesh, s, a.seq
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
// it is the first. It refuses a stream whose new group would exceed a cap
// (MaxGroups, MaxGroupsPerIdentity, MaxAnonymousGroups).
func (a *ADS) join(c *conn) error {
	// The proxy's own listeners, beside the group's (conn.own).
	own, err := a.ownListeners(c.node.Proxy)
	if err != nil {
		a.log.Error(err, "refusing to serve a proxy an invalid listener", "node", c.node.ID)
		return status.Errorf(codes.Internal, "node %s: its own listeners failed validation (a weft bug): %v", c.node.ID, err)
	}
	c.own = own
	identity := c.node.Proxy.Namespace + "/" + c.node.Proxy.ServiceAccount
	a.mu.Lock()
	// The group's proxy carries its zone only while the mesh routes by
	// locality (locality.go): otherwise replicas in every zone share it.
	proxy := c.node.Proxy
	if !a.localityOn {
		proxy.Region, proxy.Zone = "", ""
	}
	key := keyOf(proxy, c.node.Authenticated)
	g := a.groups[key]
	if g == nil {
		switch {
		case len(a.groups) >= MaxGroups:
			a.mu.Unlock()
			return exhausted("this replica already builds for %d proxy groups (xds.MaxGroups)", MaxGroups)
		case c.anonymous && a.anonGroups >= a.maxAnonGroups:
			a.mu.Unlock()
			return exhausted("the anonymous endpoint already has %d proxy groups (--xds-plaintext-max-groups): use the authenticated port", a.maxAnonGroups)
		case !c.anonymous && a.identityGroups[identity] >= MaxGroupsPerIdentity:
			a.mu.Unlock()
			return exhausted("%s already has %d proxy groups (distinct label sets; xds.MaxGroupsPerIdentity)", identity, MaxGroupsPerIdentity)
		}
		g = &group{key: key, proxy: proxy, authenticated: c.node.Authenticated, anonymous: c.anonymous, conns: map[*conn]struct{}{}}
		a.groups[key] = g
		// Anonymous groups count only toward their own cap: an anonymous
		// client must not use up a real identity's groups.
		if g.anonymous {
			a.anonGroups++
		} else {
			a.identityGroups[identity]++
		}
	}
	first := len(g.conns) == 0
	g.conns[c] = struct{}{}
	a.conns[c] = struct{}{}
	c.group = g
	acquire := ""
	if first && a.servesSecrets(g) {
		acquire = c.node.Proxy.Identity(a.mesh.TrustDomain)
		g.secretID = acquire
	}
	a.mu.Unlock()
	if acquire != "" {
		a.secrets.Acquire(acquire)
	}
	if g.snap.Load() == nil {
		a.firstBuild(g)
	}
	a.metrics.connected.WithLabelValues(kindName(c.node.Proxy.Kind)).Inc()
	return nil
}

// firstBuild builds a group that has no configuration yet, unless another
// member built it meanwhile or its last build failed and its backoff has
// not passed: members joining a failing group do not rebuild it each.
func (a *ADS) firstBuild(g *group) {
	g.build.Lock()
	defer g.build.Unlock()
	if g.snap.Load() != nil || g.failed.Load() && !g.retryDue(time.Now()) {
		return
	}
	a.rebuildLocked(g)
}

// leave removes a connection; the last one out drops its group.
func (a *ADS) leave(c *conn) {
	a.mu.Lock()
	delete(a.conns, c)
	var release string
	grp := c.group
	if g := grp; g != nil {
		delete(g.conns, c)
		if len(g.conns) == 0 {
			delete(a.groups, g.key)
			if g.anonymous {
				a.anonGroups--
			} else {
				identity := g.proxy.Namespace + "/" + g.proxy.ServiceAccount
				if a.identityGroups[identity]--; a.identityGroups[identity] <= 0 {
					delete(a.identityGroups, identity)
				}
			}
			// The identity acquired, even if the trust domain changed since.
			release, g.secretID = g.secretID, ""
		}
	}
	a.mu.Unlock()
	if release != "" {
		a.secrets.Release(release)
	}
	a.metrics.connected.WithLabelValues(kindName(c.node.Proxy.Kind)).Dec()
	// A proxy that held its policies back (not yet ACKed, or NACKed)
	// no longer counts: the status writer must hear it now (a silent
	// node dropped by keepalive, a stream past its age), or they stay
	// Pending until another proxy answers. One that was current changes
	// no verdict, and a mass disconnect costs no status recompute.
	if a.onAck != nil && !c.anonymous && grp != nil {
		if s := grp.snap.Load(); s != nil && len(s.policies) > 0 && c.configures() && (c.nack() != nil || c.fullyAcked() < s.generation) {
			a.onAck(s.policies)
		}
	}
}
