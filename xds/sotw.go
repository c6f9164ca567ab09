package xds

import (
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// StreamAggregatedResources serves State-of-the-World ADS, authenticating
// streams when an Authenticator is set.
func (a *ADS) StreamAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return a.sotw(stream, true)
}

func (a *ADS) sotw(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, authenticate bool) error {
	handle := func(c *conn, r *discoveryv3.DiscoveryRequest) error { return a.sotwRequest(stream, c, r) }
	push := func(c *conn, t string) error { return a.sendSotW(stream, c, t, false) }
	return serve(a, stream.Context(), false, authenticate, stream.Recv, (*discoveryv3.DiscoveryRequest).GetNode, (*discoveryv3.DiscoveryRequest).GetTypeUrl, handle, push)
}

// sotwRequest handles one request of a State-of-the-World stream.
func (a *ADS) sotwRequest(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, c *conn, r *discoveryv3.DiscoveryRequest) error {
	if err := checkNames(r.TypeUrl, 0, r.ResourceNames); err != nil {
		return err
	}
	c.mu.Lock()
	ts := c.state(r.TypeUrl)
	var respond bool
	if r.ResponseNonce != "" {
		if r.ResponseNonce == ts.lastNonce {
			// Each SotW response carries the type's whole state, so the
			// answer to the latest supersedes the unanswered older ones.
			for n := range ts.pending {
				if n != r.ResponseNonce {
					delete(ts.pending, n)
				}
			}
		}
		accepted, known := ts.ack(c.node.ID, r.TypeUrl, r.ResponseNonce, r.ErrorDetail, time.Now())
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
	deferred := ts.deferred
	c.mu.Unlock()
	if respond || r.ErrorDetail == nil || deferred {
		return a.sendSotW(stream, c, r.TypeUrl, respond)
	}
	return nil
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
	if len(ts.pending) >= MaxUnackedResponses {
		ts.deferred = true // the next answer sends the newest state
		c.mu.Unlock()
		return nil
	}
	ts.deferred = false
	var names map[string]bool
	if !ts.wildcard {
		names = ts.names
	}
	version := snap.typeVersion(t, names)
	if version == ts.sentVersion && !force {
		caughtUp := false
		if len(ts.pending) == 0 && ts.lastNack == nil {
			// Same content as already accepted: the proxy is current.
			caughtUp = ts.ackedGen < snap.generation
			ts.sentGen, ts.ackedGen = snap.generation, snap.generation
		}
		c.mu.Unlock()
		if caughtUp {
			a.caughtUp(c, snap)
		}
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
