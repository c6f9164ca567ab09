package xds

import (
	"slices"
	"sort"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
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
					ts.answered(n)
				}
			}
		}
		accepted, known := ts.ack(c.node.ID, r.TypeUrl, r.ResponseNonce, r.ErrorDetail, time.Now())
		if known && r.ResponseNonce != ts.lastNonce && r.ErrorDetail != nil {
			// A part of a split response, or an older response, was
			// rejected: counted now (the rejection stands until its
			// resources are accepted), answered by nothing.
			c.mu.Unlock()
			a.recordAck(c, r.TypeUrl, false, r.ErrorDetail.GetMessage(), true)
			return nil
		}
		if r.ResponseNonce != ts.lastNonce {
			c.mu.Unlock()
			return nil // answers an older response: the protocol says ignore it
		}
		// The latest nonce again, already answered: a change of
		// subscription (gRPC-Go asks for the clusters of a new route
		// configuration with the nonce of the last CDS response it ACKed),
		// or a repeat. Not an ACK; its names are read below.
		if known {
			a.recordAck(c, r.TypeUrl, accepted, r.ErrorDetail.GetMessage(), true)
		}
	}
	// Expressed over the snapshot's resources (subscription): a stream
	// in step holds no names of its own.
	var have map[string]*encoded
	if snap := c.group.snap.Load(); snap != nil {
		have = snap.resources.of(r.TypeUrl)
	}
	names := newSubscription(r.ResourceNames, have)
	wildcard := len(r.ResourceNames) == 0 && isWildcardType(r.TypeUrl) || slices.Contains(r.ResourceNames, "*")
	if wildcard != ts.wildcard || !names.equal(&ts.names) {
		respond = true
	}
	ts.wildcard, ts.names = wildcard, *names
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
	var names *subscription
	if !ts.wildcard {
		names = &ts.names
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
	if own := c.ownFor(t, ts.wildcard, names); len(own) > 0 {
		// The stream's own listeners (conn.own) beside the group's: a
		// listener response is the whole state. The version stays the
		// group's: they never change while the stream lives.
		res = append(res, own...)
		sort.Slice(res, func(i, j int) bool { return res[i].name() < res[j].name() })
	}
	// Endpoints and route configurations may be split over several
	// responses (the xDS protocol requires the whole state in each
	// response only for listeners and clusters; a client keeps the
	// endpoints and routes a response does not mention): a proxy that
	// sees thousands of Services would otherwise be sent one EDS message
	// over gRPC's default 4 MiB receive limit (gRPC-Go's, and Envoy's
	// Google gRPC without weft's bootstrap), refuse it, reconnect and be
	// sent it again, forever. Each part carries the type's version, its
	// own nonce, and its names, so that a NACK of one part stands until
	// those resources are accepted (typeState.ack).
	var parts [][]*encoded
	sizes := []int{}
	cur, curSize := []*encoded(nil), 0
	for _, e := range res {
		n := e.size() + len(e.name()) + 16
		if splittable(t) && curSize > 0 && curSize+n > a.maxResponseBytes {
			parts, sizes = append(parts, cur), append(sizes, curSize)
			cur, curSize = nil, 0
		}
		cur = append(cur, e)
		curSize += n
	}
	parts, sizes = append(parts, cur), append(sizes, curSize)
	now := time.Now()
	resps := make([]*discoveryv3.DiscoveryResponse, 0, len(parts))
	for _, part := range parts {
		resp := &discoveryv3.DiscoveryResponse{TypeUrl: t, VersionInfo: version, Nonce: c.nextNonce()}
		fl := inFlight{gen: snap.generation, at: now}
		if len(parts) > 1 {
			fl.set = part
		}
		for _, e := range part {
			resp.Resources = append(resp.Resources, e.asAny(t))
		}
		ts.sending(resp.Nonce, fl)
		resps = append(resps, resp)
	}
	ts.sentVersion, ts.lastNonce, ts.sentGen = version, resps[len(resps)-1].Nonce, snap.generation
	c.mu.Unlock()
	for i, resp := range resps {
		a.recordSend(t, len(resp.Resources), sizes[i])
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	return nil
}

// splittable says whether a State-of-the-World response of type t may be
// split: endpoints and route configurations. Listeners and clusters must
// come whole (a client drops those a response leaves out); secrets are
// small, and their ACKs track what a proxy holds (heldSecrets).
func splittable(t string) bool {
	return t == resourcev3.EndpointType || t == resourcev3.RouteType
}
