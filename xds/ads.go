package xds

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// ADS serves the aggregated discovery service, Delta and State of the
// World, from weft's own cache:
//
//   - Proxies with the same identity and labels form a group; a group's
//     configuration is built, validated and encoded once per change.
//   - A change rebuilds only groups with connected proxies whose
//     configuration can depend on what changed (deps.go), and wakes only
//     the proxies whose group's configuration changed; each is sent only
//     the resources whose content changed (Delta), or the types that did
//     (SotW).
//   - A NACK is recorded (registry, metrics, policy status) and never
//     answered by re-sending the rejected version: the proxy keeps its last
//     good configuration until the next change.
type ADS struct {
	log     logr.Logger
	metrics *metrics

	// updating serializes Update and UpdateEndpoints: each compares the
	// new model with the one installed before it.
	updating sync.Mutex

	mu   sync.Mutex
	mesh *ir.Mesh
	// seq numbers the models installed (update): a group's builtSeq says
	// which one its last build read.
	seq uint64
	// shared builds groups' configurations from mesh, sharing what groups
	// with the same view have in common (envoy.Shared); replaced with mesh.
	// It is held weakly: an update holds it while it builds its groups, and
	// each build while it runs, but between builds the messages it keeps
	// (tens of MB for 2,000 Services) are not worth holding; the next
	// build makes a new one (builder).
	shared weak.Pointer[envoy.Shared]
	event  time.Time // when the change that produced mesh happened
	groups map[groupKey]*group
	conns  map[*conn]struct{}
	nextID atomic.Uint64
	// anonStreams counts the anonymous endpoint's streams
	// (MaxAnonymousStreams); anonGroups its groups and identityGroups the
	// groups of each namespace/service account (guarded by mu).
	anonStreams atomic.Int64
	// maxAnonStreams and maxAnonGroups cap the anonymous endpoint
	// (MaxAnonymousStreams, MaxAnonymousGroups unless SetAnonymousLimits).
	maxAnonStreams, maxAnonGroups int
	// onPanic hears of a recovered panic (OnPanic); build is
	// envoy.Shared.BuildGroup (the group's part: each stream adds its
	// proxy's own listeners, conn.own), replaced in tests that make it
	// panic.
	onPanic func(stage, group string, v any)
	build   func(*envoy.Shared, dataplane.Proxy) *envoy.Resources
	// maxResponseBytes is ResponseChunkBytes (tests shorten it).
	maxResponseBytes int
	// firstRequest is FirstRequestTimeout (tests shorten it).
	firstRequest time.Duration
	// ackTimeout is ProxyAckTimeout (tests shorten it).
	ackTimeout     time.Duration
	anonGroups     int
	identityGroups map[string]int
	builds         atomic.Uint64
	patches        atomic.Uint64
	onAck          func([]ir.PolicyRef)
	secrets        SecretSource
	auth           Authenticator
	// enc shares encodings between groups.
	enc *encoder
	// locator says where proxies run (SetLocator); localityOn: some
	// Service of the mesh prefers the caller's zone, so the zone joins
	// the group key (locality.go; guarded by mu).
	locator    Locator
	localityOn bool
	// nacked are the policy labels this ADS gave a series of the per-policy
	// NACK counter, guarded by mu: their series go when the policy leaves
	// the mesh, so the metric's size follows the policies that exist.
	nacked map[string]bool
}

// admit parses the node of a stream's first request and, on an
// authenticating endpoint, authenticates it.
func (a *ADS) admit(ctx context.Context, n *corev3.Node, authenticate bool) (NodeInfo, error) {
	node, err := ParseNode(n)
	if err != nil {
		return NodeInfo{}, status.Error(codes.InvalidArgument, err.Error())
	}
	a.mu.Lock()
	node.TrustDomain = a.mesh.TrustDomain
	a.mu.Unlock()
	node.Auth = AuthNone
	if authenticate && a.auth != nil {
		p, err := authenticateWith(ctx, a.auth, node)
		if err != nil {
			a.log.Info("refused a proxy", "node", node.ID, "reason", err.Error())
			return NodeInfo{}, err
		}
		node.Authenticated, node.Auth, node.CredentialExpires = true, p.method, p.expires
	}
	a.locate(&node)
	return node, nil
}

// servesSecrets: only to groups of authenticated streams (a group is one
// identity, so only its own key). Sidecars take them by SDS; gRPC-Go never
// subscribes to SDS, so in a gRPC-kind group only weft's certificate agent
// (internal/certagent) receives them, and writes the files gRPC reads.
func (a *ADS) servesSecrets(g *group) bool {
	return a.secrets != nil && g.authenticated
}

// Anonymous is the ADS for an endpoint that does not authenticate (the
// plaintext port, for proxyless gRPC clients, as Istio's 15010): its
// streams get configuration, never secrets, and never share a group with
// authenticated streams of the same identity.
func (a *ADS) Anonymous() discoveryv3.AggregatedDiscoveryServiceServer { return anonymous{a} }

type anonymous struct{ a *ADS }

func (x anonymous) StreamAggregatedResources(s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return x.a.sotw(s, false)
}

func (x anonymous) DeltaAggregatedResources(s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return x.a.delta(s, false)
}

// SetAnonymousLimits replaces the anonymous endpoint's caps
// (MaxAnonymousStreams, MaxAnonymousGroups): the operator who turns the
// endpoint on sizes it (weft-controller --xds-plaintext-max-streams,
// --xds-plaintext-max-groups). Call it before serving.
func (a *ADS) SetAnonymousLimits(streams, groups int) {
	a.maxAnonStreams, a.maxAnonGroups = streams, groups
}

// OnAck registers fn to hear, after each ACK or NACK, the policies the
// answering proxy's configuration carries: their programmed state may have
// changed. Call it before serving; fn must not block.
func (a *ADS) OnAck(fn func([]ir.PolicyRef)) { a.onAck = fn }

// group is the proxies that share a configuration.
type group struct {
	key   groupKey
	proxy dataplane.Proxy // the first member: the group's configuration is built for it
	// authenticated groups hold streams whose identity was proven; only
	// they are served secrets.
	authenticated bool
	// build serializes builds of this group.
	build sync.Mutex
	snap  atomic.Pointer[snapshot]
	// failed is set while the last build failed: the snapshot in service
	// is older than the model, so its dependencies may be too, and every
	// update retries the group.
	failed atomic.Bool
	// failures counts consecutive failed builds, and retryAt (Unix
	// nanoseconds) is when a failed group is next built: failed groups
	// back off (failedBuildRetry) instead of building on every update.
	failures int // guarded by build
	// builtSeq is the ADS.seq of the model the group's snapshot was built
	// from, 0 when unknown (patched since); guarded by build.
	builtSeq uint64
	retryAt  atomic.Int64
	// anonymous: made by a stream of the anonymous endpoint
	// (MaxAnonymousGroups).
	anonymous bool
	// secretID is the identity whose secrets the group acquired (under
	// the trust domain of that moment), which leaving releases.
	secretID string             // guarded by ADS.mu
	conns    map[*conn]struct{} // guarded by ADS.mu
}

// retryDue says whether a failed group's backoff has passed.
func (g *group) retryDue(now time.Time) bool { return now.UnixNano() >= g.retryAt.Load() }

// NewADS makes an ADS with an empty mesh: proxies connect and receive
// nothing until the first Update.
func NewADS(log logr.Logger) *ADS {
	empty := &ir.Mesh{}
	return &ADS{
		log:     log,
		metrics: newMetrics(),
		mesh:    empty,
		groups:  map[groupKey]*group{},
		conns:   map[*conn]struct{}{},
		enc:     newEncoder(),
		nacked:  map[string]bool{},

		identityGroups:   map[string]int{},
		firstRequest:     FirstRequestTimeout,
		ackTimeout:       ProxyAckTimeout,
		maxResponseBytes: ResponseChunkBytes,
		build:            (*envoy.Shared).BuildGroup,
		maxAnonStreams:   MaxAnonymousStreams,
		maxAnonGroups:    MaxAnonymousGroups,
	}
}
