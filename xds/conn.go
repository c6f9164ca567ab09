package xds

import (
	"strconv"
	"sync"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/weftmesh/weft/dataplane"
)

// conn is one proxy's stream. Only the stream's own goroutine changes it;
// mu guards the fields that status readers (registry, Programmed) read.
type conn struct {
	id   uint64
	node NodeInfo
	// anonymous: the stream came through the Anonymous endpoint. It
	// proved nothing, so it never counts toward a policy's status.
	anonymous   bool
	group       *group
	connectedAt time.Time
	delta       bool
	// notify wakes the stream when its group's snapshot changed.
	notify chan struct{}
	// kick ends the stream (closed once, by kickOnce): the identity it
	// was admitted under no longer holds (the trust domain changed).
	kick       chan struct{}
	kickOnce   sync.Once
	kickReason error // set before kick closes

	// own are the proxy's own listeners (envoy.ProxyListeners: readiness
	// and stats, bound to its pod's addresses), sorted by name, encoded
	// once when the stream joins (ownListeners): their content reads only
	// the proxy's addresses and probes, fixed for the stream's life (the
	// probes are in the group key). Every LDS response of a SotW stream
	// carries them beside the group's listeners; a Delta stream is sent
	// them once and they are never removed (docs/design/183). The group's
	// snapshot, shared by every replica, never holds them.
	own []*encoded

	mu    sync.Mutex
	types typeStates
	nonce uint64
}

// typeStates are a stream's states by type, at the type's index in
// pushOrder (nil: not subscribed). An array, not a map: a map of four
// entries is ~300 bytes per stream (docs/design/201).
type typeStates [len(pushOrder)]*typeState

// get returns type t's state, nil when the stream has none (or t is not
// served).
func (s *typeStates) get(t string) *typeState {
	if i := typeIndex(t); i >= 0 {
		return s[i]
	}
	return nil
}

// all yields each type's state, in pushOrder.
func (s *typeStates) all(yield func(string, *typeState) bool) {
	for i, ts := range s {
		if ts != nil && !yield(pushOrder[i], ts) {
			return
		}
	}
}

// typeState is the protocol state of one resource type on one stream.
type typeState struct {
	// Subscription: wildcard, or the names asked for.
	wildcard bool
	names    subscription
	// Delta: sent is the version of each resource last sent (or that the
	// proxy said it held when it connected): what is compared to decide
	// what to send, so a rejected version is never sent again. It is kept
	// as what differs from the snapshot last sent (versionMap): a stream
	// in sync with its group holds a pointer, not a copy.
	// held is what the proxy holds: a response's resources enter it only
	// when it is ACKed, so after a NACK it keeps the versions the proxy
	// kept. Only secrets need it (heldSecrets: which key material a proxy
	// holds), so other types keep none (held nil).
	// rejected names the resources whose latest response was NACKed and
	// not superseded by an ACKed one: while it is not empty the proxy
	// holds older content than was sent, and the NACK stands.
	sent     versionMap
	held     *versionMap
	rejected map[string]bool
	// SotW: the version and nonce of the last response.
	sentVersion string
	lastNonce   string
	// pending maps the nonce of each unanswered response to what it
	// carried; nil when none is (a map keeps its slots when emptied: ~800
	// bytes per type and stream in sync, docs/design/180).
	pending map[string]inFlight
	// deferred: a push found MaxUnackedResponses unanswered and waits for
	// the proxy's next answer to send the newest state.
	deferred bool
	// sentGen is the generation of the newest snapshot whose content for
	// this type the proxy has been sent; ackedGen the newest it accepted.
	sentGen, ackedGen uint64
	ackedAt           time.Time
	// lastNack is the proxy's last rejection, cleared by a later ACK.
	lastNack *Nack
	// ownSent (Delta, listeners): bit i is set once conn.own[i] was sent,
	// or the proxy said at connection that it holds that version. It is
	// never sent again (it cannot change), but after an unsubscribe.
	ownSent uint8
}

// inFlight is an unanswered response: the snapshot generation it carried
// and, on Delta, its resources and removals.
type inFlight struct {
	gen uint64
	at  time.Time // when it was sent (ProxyAckTimeout runs from it)
	// set is the response's resources, their names and versions read
	// from the encodings when answered. On Delta it is the very list the
	// response's deltaOut carries, shared: a copy of names and versions
	// (32 bytes per resource) was the largest thing a cold start held,
	// 64 MB of 280 at the peak of 500 proxies' (docs/design/200).
	set     []*encoded
	removed []string
}

// Nack is a rejected response, as the proxy reported it.
type Nack struct {
	Nonce string
	// Message is the proxy's, cut to MaxNackMessageBytes.
	Message string
	At      time.Time
	// Node is the proxy's id, Type the rejected response's type URL,
	// Resources the first names it carried (Delta; SotW responses carry
	// all of a type) and MoreResources how many more.
	Node          string   `json:"node"`
	Type          string   `json:"type"`
	Resources     []string `json:"resources,omitempty"`
	MoreResources int      `json:"moreResources,omitempty"`
}

// sending records an unanswered response.
func (ts *typeState) sending(nonce string, fl inFlight) {
	if ts.pending == nil {
		ts.pending = map[string]inFlight{}
	}
	ts.pending[nonce] = fl
}

// answered drops an unanswered response, and the map with the last.
func (ts *typeState) answered(nonce string) {
	delete(ts.pending, nonce)
	if len(ts.pending) == 0 {
		ts.pending = nil
	}
}

func newTypeState(t string) *typeState {
	// names and rejected are made on their first entry: a wildcard
	// subscription in sync (most of them) needs neither.
	ts := &typeState{}
	if t == resourcev3.SecretType {
		ts.held = &versionMap{}
	}
	return ts
}

// isWildcardType: Envoy asks for every listener and cluster by default.
func isWildcardType(t string) bool {
	return t == resourcev3.ListenerType || t == resourcev3.ClusterType
}

func (c *conn) state(t string) *typeState {
	i := typeIndex(t)
	if i < 0 {
		panic("xds: state of a type not served: " + t) // serve refuses them first
	}
	ts := c.types[i]
	if ts == nil {
		ts = newTypeState(t)
		c.types[i] = ts
	}
	return ts
}

// end ends the stream with err (once; later calls do nothing).
func (c *conn) end(err error) {
	c.kickOnce.Do(func() { c.kickReason = err; close(c.kick) })
}

// namesOrNil is the subscribed names of a type state that may not exist.
func (ts *typeState) namesOrNil() *subscription {
	if ts == nil {
		return nil
	}
	return &ts.names
}

func (c *conn) nextNonce() string {
	c.nonce++
	return strconv.FormatUint(c.nonce, 10)
}

// ack records the proxy's answer to a response. It returns false for a
// nonce this stream never sent or already saw answered (a stale request).
// A Delta ACK moves the response's resources into held; a NACK leaves
// held as it was (the proxy keeps its last good versions) and marks the
// resources rejected. The type counts as accepted up to the response's
// generation only when no rejected resource remains.
func (ts *typeState) ack(node, typ, nonce string, errDetail *status.Status, now time.Time) (accepted, known bool) {
	r, ok := ts.pending[nonce]
	if !ok {
		return false, false
	}
	ts.answered(nonce)
	if errDetail != nil {
		names, more := nackResources(r.set, r.removed)
		ts.lastNack = &Nack{Nonce: nonce, Message: truncate(errDetail.GetMessage(), MaxNackMessageBytes), At: now,
			Node: node, Type: typ, Resources: names, MoreResources: more}
		if ts.rejected == nil && len(r.set)+len(r.removed) > 0 {
			ts.rejected = map[string]bool{}
		}
		for _, e := range r.set {
			ts.rejected[e.name()] = true
		}
		for _, name := range r.removed {
			ts.rejected[name] = true
		}
		return false, true
	}
	// Only a rejection to lift or held secrets need the names: most
	// ACKs need neither, and skip the parse.
	if len(ts.rejected) > 0 || ts.held != nil {
		for _, e := range r.set {
			name := e.name()
			delete(ts.rejected, name)
			if ts.held != nil && (ts.wildcard || ts.names.has(name)) { // not unsubscribed meanwhile
				ts.held.set(name, e.version())
			}
		}
	}
	for _, name := range r.removed {
		delete(ts.rejected, name)
		if ts.held != nil {
			ts.held.del(name)
		}
	}
	ts.ackedAt = now
	if len(ts.rejected) > 0 {
		return true, true // accepted, but an earlier rejection still stands
	}
	for _, other := range ts.pending {
		if other.gen == r.gen {
			// Another part of the same push (a split response) or an
			// older one is unanswered: the generation is not held yet.
			return true, true
		}
	}
	if r.gen > ts.ackedGen {
		ts.ackedGen = r.gen
	}
	ts.lastNack = nil
	return true, true
}

// forget drops a resource the proxy unsubscribed from; a rejection that
// concerned only such resources no longer stands.
func (ts *typeState) forget(name string) {
	ts.sent.del(name)
	if ts.held != nil {
		ts.held.del(name)
	}
	if ts.rejected[name] {
		delete(ts.rejected, name)
		if len(ts.rejected) == 0 {
			ts.lastNack = nil
		}
	}
}

// fullyAcked is the newest snapshot generation that the proxy has accepted
// for every type it subscribes to.
func (c *conn) fullyAcked() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fullyAckedLocked()
}

// fullyAckedLocked is fullyAcked with c.mu held.
func (c *conn) fullyAckedLocked() uint64 {
	var min uint64
	first := true
	for _, ts := range c.types.all {
		if first || ts.ackedGen < min {
			min, first = ts.ackedGen, false
		}
	}
	return min
}

// streamFacts are what a policy's state reads of one stream
// (PolicyStates), read under one hold of its lock: whether it
// configures (not only secrets: weft agent's stream,
// internal/certagent), its rejection (nack), fullyAcked, and when the
// oldest response it has not answered was sent (zero: none).
type streamFacts struct {
	configures bool
	nack       *Nack
	acked      uint64
	unanswered time.Time
}

func (c *conn) facts() streamFacts {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := streamFacts{nack: c.nackLocked()}
	first := true
	for t, ts := range c.types.all { // one walk; fullyAckedLocked's minimum too
		if first || ts.ackedGen < f.acked {
			f.acked, first = ts.ackedGen, false
		}
		if t != resourcev3.SecretType {
			f.configures = true
		}
		for _, fl := range ts.pending {
			if f.unanswered.IsZero() || fl.at.Before(f.unanswered) {
				f.unanswered = fl.at
			}
		}
	}
	return f
}

// configures reports whether the stream subscribes to a configuration
// type, not only to secrets (weft agent's stream, internal/certagent).
func (c *conn) configures() bool { return c.facts().configures }

// unansweredSince is when the oldest response the proxy has not answered
// was sent, over every type; zero when it has answered everything.
func (c *conn) unansweredSince() time.Time { return c.facts().unanswered }

// nack returns the proxy's outstanding rejection, if any type has one.
func (c *conn) nack() *Nack {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nackLocked()
}

// nackLocked is nack with c.mu held.
func (c *conn) nackLocked() *Nack {
	for _, ts := range c.types.all {
		if ts.lastNack != nil {
			return ts.lastNack
		}
	}
	return nil
}

func kindName(k dataplane.ProxyKind) string {
	if k == dataplane.KindGRPC {
		return "grpc"
	}
	return "sidecar"
}

// settledLocked says whether the proxy counts as having programmed every
// policy s carries (PolicyState): no rejection stands and every type is
// accepted up to where each policy arrived. An accepted answer only
// raises accepted generations and clears rejections, so a settled proxy
// stays settled and its ACK changes no policy's state: the status writer
// need not hear of it. Under endpoint churn that is nearly every ACK, and
// each one told the writer (and the replica report) about every policy the
// proxy carries. Called with c.mu held.
func (c *conn) settledLocked(s *snapshot) bool {
	if s == nil || c.nackLocked() != nil {
		return false
	}
	acked := c.fullyAckedLocked()
	for _, since := range s.since {
		if acked < since {
			return false
		}
	}
	return true
}
