package xds

import (
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
)

// TestPolicyStateWhileAcking: a stream records an ACK holding its own lock
// (recordAck takes the ADS lock), while the status writer asks
// PolicyState; the two must not wait on each other's locks. (Under this
// load a lock-order inversion deadlocked weft-controller's streams.)
func TestPolicyStateWhileAcking(t *testing.T) {
	a := NewADS(logr.Discard())
	a.Update(depsMesh(t, depsBase), time.Now())
	c := a.newConn(true, NodeInfo{ID: "web.shop", Proxy: depsProxies["web"]})
	a.join(c) // never left: after a deadlock, leaving would hang too
	s := c.group.snap.Load()
	if len(s.policies) == 0 {
		t.Fatal("the proxy carries no policy")
	}
	ref := s.policies[0]
	c.mu.Lock()
	c.state(resourcev3.ClusterType)
	c.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 20000; i++ {
			c.mu.Lock() // as the stream's request handler does
			a.recordAck(c, resourcev3.ClusterType, true, "", true)
			c.mu.Unlock()
		}
	}()
	go func() {
		for {
			select {
			case <-done:
				return
			default:
				a.PolicyState(ref)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("recordAck and PolicyState deadlocked")
	}
}
