package xds

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PodGone ends the authenticated streams of the pod namespace/name (node
// id "<pod>.<namespace>"), which the cluster no longer has: a stream must
// not keep receiving its identity's freshly renewed keys after its pod is
// deleted (issue 13). Its proxy, if it still runs, reconnects and is
// authenticated again (a pod-bound token of a deleted pod is refused).
// Token reviews cached for tokens bound to that pod are forgotten, so a
// reconnect within the cache's minute is reviewed again (and refused)
// rather than admitted from the cache. It returns how many streams it
// ended.
func (a *ADS) PodGone(namespace, name string) int {
	if f, ok := a.auth.(forgetter); ok {
		f.forgetPod(namespace, name)
	}
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

// ServiceAccountGone ends the authenticated streams of the service account
// namespace/name, which the cluster no longer has (issue 13): they would
// otherwise keep receiving that identity's renewed keys until their
// connection's age or their token's expiry. Token reviews cached for it
// are forgotten, so a reconnect is reviewed again (and the API server
// refuses the tokens of a deleted service account). It returns how many
// streams it ended.
func (a *ADS) ServiceAccountGone(namespace, name string) int {
	if f, ok := a.auth.(forgetter); ok {
		f.forgetServiceAccount(namespace, name)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for c := range a.conns {
		if c.node.Authenticated && c.node.Proxy.Namespace == namespace && c.node.Proxy.ServiceAccount == name {
			c.end(status.Errorf(codes.Unauthenticated, "node %s: service account %s/%s no longer exists", c.node.ID, namespace, name))
			n++
		}
	}
	return n
}

// forgetter is an authenticator that caches what it vouched for.
type forgetter interface {
	forgetServiceAccount(namespace, name string)
	forgetPod(namespace, name string)
}

func (c Chain) forgetServiceAccount(namespace, name string) {
	for _, a := range c {
		if f, ok := a.(forgetter); ok {
			f.forgetServiceAccount(namespace, name)
		}
	}
}

func (c Chain) forgetPod(namespace, name string) {
	for _, a := range c {
		if f, ok := a.(forgetter); ok {
			f.forgetPod(namespace, name)
		}
	}
}

// forgetPod drops the cached reviews of tokens bound to the pod
// namespace/name (the API server names the pod in the review's extra).
func (t *TokenAuthenticator) forgetPod(namespace, name string) {
	t.init()
	prefix := "system:serviceaccount:" + namespace + ":"
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, c := range t.cache {
		pods := c.status.User.Extra[podNameExtra]
		if len(pods) > 0 && pods[0] == name && strings.HasPrefix(c.status.User.Username, prefix) {
			delete(t.cache, k)
		}
	}
}

// forgetServiceAccount drops the cached reviews of the service account's
// tokens.
func (t *TokenAuthenticator) forgetServiceAccount(namespace, name string) {
	t.init()
	user := "system:serviceaccount:" + namespace + ":" + name
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, c := range t.cache {
		if c.status.User.Username == user {
			delete(t.cache, k)
		}
	}
}

// EndSecretHolders ends the authenticated streams, of groups served
// secrets, whose node id is in ids, with Unavailable and msg: a root
// rotation phase that timed out closes the streams of the proxies that have
// not ACKed it, so that they reconnect and are sent the current secrets
// at once (docs/design/076). It returns how many streams it ended.
func (a *ADS) EndSecretHolders(ids map[string]bool, msg string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, g := range a.groups {
		if !a.servesSecrets(g) {
			continue
		}
		for c := range g.conns {
			if c.node.Authenticated && ids[c.node.ID] {
				c.end(status.Errorf(codes.Unavailable, "node %s: %s", c.node.ID, msg))
				n++
			}
		}
	}
	return n
}
