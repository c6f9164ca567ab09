package xds

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// PolicyNacks is the per-policy NACK counter, for tests.
func PolicyNacks() *prometheus.CounterVec { return newMetrics().policyNacks }

// SetFirstRequestTimeout shortens FirstRequestTimeout for a test.
func SetFirstRequestTimeout(a *ADS, d time.Duration) { a.firstRequest = d }

// Authenticate runs auth as the ADS does, returning the method and the
// credential's expiry.
func Authenticate(ctx context.Context, auth Authenticator, node NodeInfo) (string, time.Time, error) {
	p, err := authenticateWith(ctx, auth, node)
	return p.method, p.expires, err
}

// TokenCacheKeys returns the token cache's keys, printed, and its size.
func TokenCacheKeys(t *TokenAuthenticator) (string, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprint(t.cache), len(t.cache)
}

// SetProxyAckTimeout shortens ProxyAckTimeout for a test.
func SetProxyAckTimeout(a *ADS, d time.Duration) { a.ackTimeout = d }

// SetResponseChunkBytes shortens ResponseChunkBytes for a test.
func SetResponseChunkBytes(a *ADS, n int) { a.maxResponseBytes = n }

// SetMaxConnectionAge shortens the connection age of the servers NewServer
// makes from now on, until the returned function restores it.
func SetMaxConnectionAge(age, grace time.Duration) (restore func()) {
	a, g := maxConnectionAge, maxConnectionAgeGrace
	maxConnectionAge, maxConnectionAgeGrace = age, grace
	return func() { maxConnectionAge, maxConnectionAgeGrace = a, g }
}

// SetTokenCacheTTL shortens how long t trusts a token review.
func SetTokenCacheTTL(t *TokenAuthenticator, d time.Duration) { t.cacheTTL = d }

// ResponseCodec is the codec NewServer serves with (codec.go), for tests
// that serve an ADS on their own gRPC server.
func ResponseCodec() grpc.ServerOption { return grpc.ForceServerCodecV2(newResponseCodec()) }

// set gives the stream a state of type t (tests build conns by hand).
func (s *typeStates) set(t string, ts *typeState) { s[typeIndex(t)] = ts }
