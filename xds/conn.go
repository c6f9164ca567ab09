package xds

import (
	"strconv"
	"sync"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/weftmesh/weft/translator/envoy"
)

// conn is one proxy's stream. Only the stream's own goroutine changes it;
// mu guards the fields that status readers (registry, Programmed) read.
type conn struct {
	id          uint64
	node        NodeInfo
	group       *group
	connectedAt time.Time
	delta       bool
	// notify wakes the stream when its group's snapshot changed.
	notify chan struct{}

	mu    sync.Mutex
	types map[string]*typeState
	nonce uint64
}

// typeState is the protocol state of one resource type on one stream.
type typeState struct {
	// Subscription: wildcard, or the names asked for.
	wildcard bool
	names    map[string]bool
	// Delta: the version of each resource the proxy holds, as sent.
	sent map[string]string
	// SotW: the version and nonce of the last response.
	sentVersion string
	lastNonce   string
	// pending maps the nonce of each unanswered response to the snapshot
	// generation it carried.
	pending map[string]uint64
	// sentGen is the generation of the newest snapshot whose content for
	// this type the proxy has been sent; ackedGen the newest it accepted.
	sentGen, ackedGen uint64
	ackedAt           time.Time
	// lastNack is the proxy's last rejection, cleared by a later ACK.
	lastNack *Nack
}

// Nack is a rejected response, as the proxy reported it.
type Nack struct {
	Nonce   string
	Message string
	At      time.Time
}

func newTypeState() *typeState {
	return &typeState{names: map[string]bool{}, sent: map[string]string{}, pending: map[string]uint64{}}
}

// isWildcardType: Envoy asks for every listener and cluster by default.
func isWildcardType(t string) bool {
	return t == resourcev3.ListenerType || t == resourcev3.ClusterType
}

func (c *conn) state(t string) *typeState {
	ts := c.types[t]
	if ts == nil {
		ts = newTypeState()
		c.types[t] = ts
	}
	return ts
}

func (c *conn) nextNonce() string {
	c.nonce++
	return strconv.FormatUint(c.nonce, 10)
}

// ack records the proxy's answer to a response. It returns false for a
// nonce this stream never sent or already saw answered (a stale request).
func (ts *typeState) ack(nonce string, errDetail *status.Status, now time.Time) (accepted, known bool) {
	gen, ok := ts.pending[nonce]
	if !ok {
		return false, false
	}
	delete(ts.pending, nonce)
	if errDetail != nil {
		ts.lastNack = &Nack{Nonce: nonce, Message: errDetail.GetMessage(), At: now}
		return false, true
	}
	if gen > ts.ackedGen {
		ts.ackedGen = gen
	}
	ts.ackedAt = now
	ts.lastNack = nil
	return true, true
}

// fullyAcked is the newest snapshot generation that the proxy has accepted
// for every type it subscribes to.
func (c *conn) fullyAcked() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var min uint64
	first := true
	for _, ts := range c.types {
		if first || ts.ackedGen < min {
			min, first = ts.ackedGen, false
		}
	}
	return min
}

// configures reports whether the stream subscribes to a configuration
// type, not only to secrets (weft agent's stream, internal/certagent).
func (c *conn) configures() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t := range c.types {
		if t != resourcev3.SecretType {
			return true
		}
	}
	return false
}

// nack returns the proxy's outstanding rejection, if any type has one.
func (c *conn) nack() *Nack {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range pushOrder {
		if ts := c.types[t]; ts != nil && ts.lastNack != nil {
			return ts.lastNack
		}
	}
	return nil
}

func kindName(k envoy.ProxyKind) string {
	if k == envoy.KindGRPC {
		return "grpc"
	}
	return "sidecar"
}
