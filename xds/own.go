package xds

import (
	"fmt"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/envoy"
)

// A sidecar's readiness and stats listeners are bound to its pod's own
// addresses (envoy.ProxyListeners, docs/design/183), which replicas do
// not share: the group key has no addresses, so that every replica of a
// workload shares one build and one encoding (issue 14). Each stream
// therefore holds its proxy's two listeners (conn.own), built and
// encoded once when it joins, and serves them beside its group's
// listeners (sendDelta, sendSotW).

// ownListeners builds and encodes the proxy's own listeners, sorted by
// name (envoy.ProxyListeners sorts them), through the encoder, which
// validates them (a failure is a weft bug: the stream is refused rather
// than served an invalid listener).
func (a *ADS) ownListeners(p dataplane.Proxy) ([]*encoded, error) {
	ls := envoy.ProxyListeners(p)
	if len(ls) > 8 {
		return nil, fmt.Errorf("%d own listeners: typeState.ownSent holds 8", len(ls))
	}
	out := make([]*encoded, 0, len(ls))
	for _, l := range ls {
		e, err := a.enc.encode(resourcev3.ListenerType, l.Name, l, nil)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", l.Name, err)
		}
		out = append(out, e)
	}
	for i := 1; i < len(out); i++ {
		if out[i-1].name() >= out[i].name() {
			return nil, fmt.Errorf("own listeners %s and %s are not sorted by name", out[i-1].name(), out[i].name())
		}
	}
	return out, nil
}

// ownIndex is the index of name in c.own, or -1.
func (c *conn) ownIndex(t, name string) int {
	if t != resourcev3.ListenerType {
		return -1
	}
	for i, e := range c.own {
		if e.name() == name {
			return i
		}
	}
	return -1
}

// ownFor returns the stream's own resources of type t that it
// subscribes to (names nil: every one).
func (c *conn) ownFor(t string, wildcard bool, names *subscription) []*encoded {
	if t != resourcev3.ListenerType || len(c.own) == 0 {
		return nil
	}
	var out []*encoded
	for _, e := range c.own {
		if wildcard || names.has(e.name()) {
			out = append(out, e)
		}
	}
	return out
}
