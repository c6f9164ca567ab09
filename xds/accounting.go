package xds

import (
	"time"
)

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

// recordAck counts a proxy's answer, and tells the status writer about
// the policies it carries unless notify is false: an ACK of a proxy that
// was already settled (conn.settledLocked) changes no policy's state.
func (a *ADS) recordAck(c *conn, t string, accepted bool, msg string, notify bool) {
	if notify && a.onAck != nil && !c.anonymous { // an anonymous answer changes no policy's status
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
	a.log.Info("proxy rejected configuration", "node", c.node.ID, "type", t, "anonymous", c.anonymous, "error", truncate(msg, MaxNackMessageBytes))
}

// unresponsive tells the status writer that a proxy has not answered what
// it was sent at since within ProxyAckTimeout: the policies its
// configuration carries now count it as rejecting (PolicyState).
func (a *ADS) unresponsive(c *conn, since time.Time) {
	a.log.Info("proxy has not answered its configuration within xds.ProxyAckTimeout: it counts as rejecting the policies it carries",
		"node", c.node.ID, "sentAt", since, "timeout", a.ackTimeout, "anonymous", c.anonymous)
	if a.onAck != nil && !c.anonymous {
		if s := c.group.snap.Load(); s != nil && len(s.policies) > 0 {
			a.onAck(s.policies)
		}
	}
}

// caughtUp is recordAck for a proxy that became current with snap without
// an ACK: nothing it subscribes to of one type changed, so nothing was
// sent, and the type's acknowledged generation moved on by itself (a
// proxyless gRPC server carries its namespace's TrafficSplits but takes
// only its own listener). When that leaves the proxy current with snap for
// every type, the policies snap carries may now be programmed: the status
// writer must hear it, or a status it computed before (on another proxy's
// ACK, or when the translation arrived) waits for an ACK that never comes.
// Called without c.mu held.
func (a *ADS) caughtUp(c *conn, snap *snapshot) {
	if a.onAck == nil || c.anonymous || len(snap.policies) == 0 || c.fullyAcked() < snap.generation {
		return
	}
	a.onAck(snap.policies)
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
