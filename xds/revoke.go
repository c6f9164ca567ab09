package xds

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PodGone ends the authenticated streams of the pod namespace/name (node
// id "<pod>.<namespace>"), which the cluster no longer has: a stream must
// not keep receiving its identity's freshly renewed keys after its pod is
// deleted (issue 13). Its proxy, if it still runs, reconnects and is
// authenticated again (a pod-bound token of a deleted pod is refused).
// It returns how many streams it ended.
func (a *ADS) PodGone(namespace, name string) int {
	id := name + "." + namespace
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for c := range a.conns {
		if c.node.Authenticated && c.node.ID == id {
			c.end(status.Errorf(codes.Unauthenticated, "node %s: pod %s/%s no longer exists", id, namespace, name))
			n++
		}
	}
	return n
}
