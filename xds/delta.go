package xds

import (
	"slices"
	"sort"
	"strings"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// DeltaAggregatedResources serves incremental ADS, authenticating streams
// when an Authenticator is set.
func (a *ADS) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.delta(stream, true)
}

func (a *ADS) delta(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, authenticate bool) error {
	handle := func(c *conn, r *discoveryv3.DeltaDiscoveryRequest) error { return a.deltaRequest(stream, c, r) }
	push := func(c *conn, t string) error { return a.sendDelta(stream, c, t) }
	return serve(a, stream.Context(), true, authenticate, stream.Recv, (*discoveryv3.DeltaDiscoveryRequest).GetNode, (*discoveryv3.DeltaDiscoveryRequest).GetTypeUrl, handle, push)
}

// deltaRequest handles one request of a Delta stream.
func (a *ADS) deltaRequest(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, c *conn, r *discoveryv3.DeltaDiscoveryRequest) error {
	c.mu.Lock()
	ts := c.types.get(r.TypeUrl)
	existed := ts != nil
	if err := checkNames(r.TypeUrl, ts.namesOrNil().len(), r.ResourceNamesSubscribe); err != nil {
		c.mu.Unlock()
		return err
	}
	if !existed && len(r.InitialResourceVersions) > MaxSubscribedNames {
		c.mu.Unlock()
		return exhausted("%d initial resource versions of %s exceed %d per stream (xds.MaxSubscribedNames)", len(r.InitialResourceVersions), shortType(r.TypeUrl), MaxSubscribedNames)
	}
	if !existed {
		ts = c.state(r.TypeUrl)
		// The first request of a type without names subscribes to
		// everything of a wildcard type (Envoy's LDS and CDS).
		ts.wildcard = len(r.ResourceNamesSubscribe) == 0 && isWildcardType(r.TypeUrl)
		// A reconnecting proxy says what it already holds. Its own
		// listeners are kept apart (ownSent): they are never in a
		// group's snapshot, so sent would list them as removed.
		for n, v := range r.InitialResourceVersions {
			if i := c.ownIndex(r.TypeUrl, n); i >= 0 {
				if c.own[i].version() == v {
					ts.ownSent |= 1 << i
				}
				continue
			}
			ts.sent.set(n, v)
			if ts.held != nil {
				ts.held.set(n, v)
			}
		}
	}
	if r.ResponseNonce != "" {
		settled := c.settledLocked(c.group.snap.Load())
		accepted, known := ts.ack(c.node.ID, r.TypeUrl, r.ResponseNonce, r.ErrorDetail, time.Now())
		if known {
			a.recordAck(c, r.TypeUrl, accepted, r.ErrorDetail.GetMessage(), !(accepted && settled))
		}
	}
	// Names are kept as the snapshot's own strings where it has them
	// (subscription.add): the request's are not held.
	var have map[string]*encoded
	if snap := c.group.snap.Load(); snap != nil {
		have = snap.resources.of(r.TypeUrl)
	}
	subscribe := r.ResourceNamesSubscribe
	if slices.Contains(subscribe, "*") {
		ts.wildcard = true
		subscribe = slices.DeleteFunc(slices.Clone(subscribe), func(n string) bool { return n == "*" })
	}
	ts.names.addAll(subscribe, have)
	for _, n := range r.ResourceNamesUnsubscribe {
		if n == "*" {
			ts.wildcard = false
		}
		ts.names.del(n)
		ts.forget(n)
		if i := c.ownIndex(r.TypeUrl, n); i >= 0 {
			ts.ownSent &^= 1 << i
		}
	}
	deferred := ts.deferred
	c.mu.Unlock()
	if r.ErrorDetail != nil && len(r.ResourceNamesSubscribe) == 0 && !deferred {
		return nil // a NACK: never answered by re-sending the rejected version
	}
	return a.sendDelta(stream, c, r.TypeUrl)
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
	if len(ts.pending) >= MaxUnackedResponses {
		ts.deferred = true // the next answer sends the newest state
		c.mu.Unlock()
		return nil
	}
	ts.deferred = false
	type item struct {
		enc  *encoded
		name string // enc.name(), read once
	}
	var items []item
	var removed []string
	have := snap.resources.of(t)
	// A stream that was sent exactly this snapshot's resources (in sync
	// with its group) has nothing to compare; one that was sent exactly
	// the map this one was patched from (an endpoint change) has only the
	// patched resources to compare.
	var ordered bool // items hold have's in name order (inOrder)
	d, derived := snap.derived[t]
	ts.names.rebase(have, d, derived)
	derived = derived && ts.sent.isBase(d.from)
	// subscribed says whether the stream subscribes to a name of have.
	subscribed := ts.names.hasOf(have)
	if ts.wildcard {
		subscribed = func(string) bool { return true }
	}
	// first: nothing was sent of the type (and it is no patch of what
	// was): every subscribed resource of have is sent, and sent becomes
	// have but the names in unsent.
	first := !derived && !ts.sent.isBase(have) && ts.sent.empty()
	var unsent []string
	// skipped: patched names the stream does not subscribe to (a new
	// Service's endpoints, before its cluster reached the proxy): not
	// sent, and recorded so (derivedSent).
	var skipped []string
	derivedSent := func() {
		ts.sent = versionMap{base: have} // d.from but the names just sent
		for _, name := range skipped {
			if old := d.from[name]; old != nil {
				ts.sent.set(name, old.version())
			} else {
				ts.sent.del(name)
			}
		}
	}
	switch {
	case ts.sent.isBase(have):
	case derived:
		for _, name := range d.changed {
			e := have[name]
			if !subscribed(name) {
				skipped = append(skipped, name)
				continue
			}
			if old := d.from[name]; old != nil && e.version() == old.version() {
				continue // (a name the derivation added has no old version)
			}
			items = append(items, item{e, name})
		}
	case first:
		// Nothing sent, so nothing to compare or remove. unsent: the
		// names of have not subscribed to, what sent will lack.
		items = make([]item, 0, len(have)) // most of have
		take := func(name string, e *encoded) {
			if subscribed(name) {
				items = append(items, item{e, name})
			} else {
				unsent = append(unsent, name)
			}
		}
		// Walked in name order when the map came from a Part with the
		// group's own merged in: no sort of ~2,000 names per type per
		// proxy (docs/design/190).
		if i := typeIndex(t); i >= 0 { // (any type URL may be asked for)
			ordered = snap.order[i].inOrder(have, func(e *encoded) { take(e.name(), e) })
		}
		if !ordered {
			for name, e := range have {
				take(name, e)
			}
		}
	default:
		// Only what sent lacks or holds at another version: when sent
		// is over have (a catch-up in steps), only its own differences
		// are walked (versionMap.diff).
		ts.sent.diff(have, func(name string, e *encoded) {
			if subscribed(name) {
				items = append(items, item{e, name})
			}
		}, func(name string) { removed = append(removed, name) })
	}
	fromHave := len(items)
	// The stream's own listeners (conn.own): sent once, when subscribed,
	// never listed as removed. A wildcard stream that unsubscribes from
	// "*" keeps those it holds, as it keeps the group's.
	for i, e := range c.own {
		if ts.ownSent&(1<<i) == 0 && (ts.wildcard || ts.names.has(e.name())) && t == resourcev3.ListenerType {
			items = append(items, item{e, e.name()})
		}
	}
	if len(items) == 0 && len(removed) == 0 {
		if derived {
			derivedSent()
		} else {
			ts.sent.rebase(have)
		}
		caughtUp := false
		if len(ts.pending) == 0 && ts.lastNack == nil {
			caughtUp = ts.ackedGen < snap.generation
			ts.sentGen, ts.ackedGen = snap.generation, snap.generation
		}
		c.mu.Unlock()
		if caughtUp {
			a.caughtUp(c, snap)
		}
		return nil
	}
	if ordered {
		// The stream's own listeners, into their places.
		extra := slices.Clone(items[fromHave:])
		items = items[:fromHave]
		for _, it := range extra {
			i, _ := slices.BinarySearchFunc(items, it.name, func(x item, n string) int { return strings.Compare(x.name, n) })
			items = slices.Insert(items, i, it)
		}
	} else {
		slices.SortFunc(items, func(a, b item) int { return strings.Compare(a.name, b.name) }) // not sort.Slice: docs/design/184
	}
	sort.Strings(removed)
	// Split into responses of at most maxResponseBytes of resources
	// (ResponseChunkBytes): Envoy's Google gRPC client and gRPC-Go refuse
	// a message over 4 MiB by default. Removals ride in the first.
	var outs []*deltaOut
	sizes := []int{}
	starts := []int{0} // outs[k] carries items[starts[k]:starts[k+1]]
	cur := &deltaOut{resp: &discoveryv3.DeltaDiscoveryResponse{TypeUrl: t, RemovedResources: removed}, encs: make([]*encoded, 0, len(items))}
	curSize := 0
	for i, it := range items {
		// The encoded resource in its envelope (name, version, type
		// URL and field headers) is what the response message carries.
		size := it.enc.deltaSize(t)
		if curSize > 0 && curSize+size > a.maxResponseBytes {
			outs, sizes, starts = append(outs, cur), append(sizes, curSize), append(starts, i)
			cur, curSize = &deltaOut{resp: &discoveryv3.DeltaDiscoveryResponse{TypeUrl: t}}, 0
		}
		cur.encs = append(cur.encs, it.enc)
		curSize += size
	}
	outs, sizes, starts = append(outs, cur), append(sizes, curSize), append(starts, len(items))
	// sent changes now, so that nothing is sent twice (a NACKed version
	// included); held only when the proxy ACKs (typeState.ack).
	now := time.Now()
	version := snap.typeVersion(t, nil)
	// A first send leaves sent exactly have but the names not subscribed
	// to: made so at once, not name by name and rebased
	// (docs/design/184). Unless those are most of have (a proxyless gRPC
	// client naming a few of many): then sent is a plain map, as rebase
	// keeps it.
	whole := first && len(unsent) <= fromHave
	for k, out := range outs {
		resp := out.resp
		for _, it := range items[starts[k]:starts[k+1]] {
			if i := c.ownIndex(t, it.name); i >= 0 {
				ts.ownSent |= 1 << i
			} else if !whole {
				ts.sent.set(it.name, it.enc.version())
			}
		}
		for _, n := range resp.RemovedResources {
			ts.sent.del(n)
		}
		resp.Nonce = c.nextNonce()
		resp.SystemVersionInfo = version
		ts.sending(resp.Nonce, inFlight{gen: snap.generation, at: now, set: out.encs, removed: resp.RemovedResources})
	}
	// What was sent is now the snapshot's resources of the type, but for
	// names the stream does not subscribe to: keep it as what differs.
	switch {
	case derived:
		derivedSent()
	case whole:
		ts.sent = versionMap{base: have}
		if len(unsent) > 0 {
			ts.sent.own = make(map[string]string, len(unsent))
			for _, n := range unsent {
				ts.sent.own[n] = tombstone // as del does for a name of base
			}
		}
	default:
		ts.sent.rebase(have)
	}
	ts.sentGen = snap.generation
	c.mu.Unlock()
	for i, out := range outs {
		a.recordSend(t, len(out.encs), sizes[i])
		// SendMsg, not Send: the codec writes the resources from their
		// encodings (deltaOut).
		if err := stream.SendMsg(out); err != nil {
			return err
		}
	}
	return nil
}
