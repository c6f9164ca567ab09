package xds

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Limits: every cap on what a client can make the server hold or do. Each
// is sized for the largest honest client and says why; docs/design/070
// (the threat model) says whom each one stops.

// MaxNackMessageBytes bounds a proxy's NACK message as the server keeps it
// (registry, logs) and reports it (policy status). Envoy's own messages are
// a few hundred bytes; a condition message may be 32,768 bytes at most
// (metav1.Condition), and one policy collects messages from every replica.
const MaxNackMessageBytes = 1024

// maxNackResources is how many rejected resource names a NACK's
// attribution lists.
const maxNackResources = 5

// truncate cuts s to at most n bytes on a rune boundary, saying so.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "… (truncated)"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// describe attributes a NACK: which proxy, which type and resources.
func (n *Nack) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "proxy %s rejected %s", n.Node, shortType(n.Type))
	if len(n.Resources) > 0 {
		fmt.Fprintf(&b, " %s", strings.Join(n.Resources, ", "))
		if n.MoreResources > 0 {
			fmt.Fprintf(&b, " and %d more", n.MoreResources)
		}
	}
	fmt.Fprintf(&b, ": %s", n.Message)
	return b.String()
}

// nackResources lists up to maxNackResources names of a rejected response,
// sorted, and how many more there were.
func nackResources(set []*encoded, removed []string) ([]string, int) {
	names := make([]string, 0, len(set)+len(removed))
	for _, e := range set {
		names = append(names, e.name())
	}
	names = append(names, removed...)
	sort.Strings(names)
	if len(names) > maxNackResources {
		return names[:maxNackResources], len(names) - maxNackResources
	}
	return names, 0
}

// Caps on streams, groups and what a stream subscribes to. A request or
// stream over a cap is refused with ResourceExhausted (InvalidArgument for
// a malformed one), naming the cap, so an honest client that hits one
// tells its operator which constant to raise.
const (
	// MaxGroups bounds the proxy groups (distinct identity, labels and
	// probes) one replica builds for. A group is a workload (every replica
	// of a Deployment shares one); 20,000 is four times the largest mesh
	// measured here, and each group costs a build per relevant change.
	MaxGroups = 20000
	// MaxGroupsPerIdentity bounds the groups of one namespace and service
	// account: an authenticated pod proves its identity, not its labels, so
	// without it one token could create a group per made-up label set. 256
	// workloads sharing one ServiceAccount (the namespace's default) is
	// already a large namespace.
	MaxGroupsPerIdentity = 256
	// MaxAnonymousGroups and MaxAnonymousStreams cap the anonymous
	// (plaintext, opt-in) endpoint, which proves nothing: a few proxyless
	// gRPC applications use it, not a mesh.
	MaxAnonymousGroups  = 256
	MaxAnonymousStreams = 1024
	// MaxStreamsPerConnection: Envoy, gRPC-Go and weft agent each open one
	// ADS stream per connection (plus a health check); more on one
	// connection is a client multiplying its cost. Streams over it are
	// refused at once with ResourceExhausted; maxConcurrentStreams, the
	// HTTP/2 setting, bounds what the transport holds beyond that.
	MaxStreamsPerConnection = 8
	maxConcurrentStreams    = 64
	// MaxSubscribedNames bounds the names one stream subscribes to (or says
	// it holds) per type: a proxy that sees 10,000 Services × several
	// ports asks for tens of thousands of endpoint names at most.
	MaxSubscribedNames = 65536
	// MaxResourceNameBytes bounds one subscribed name; weft's longest
	// (outbound|<port>|<subset>|<253-byte host>) stay far below.
	MaxResourceNameBytes = 1024
	// MaxUnackedResponses is how many responses of one type may wait for
	// the proxy's answer: beyond it, pushes of that type wait for an ACK or
	// NACK (and then send the newest state), so a client that never
	// answers holds at most this many responses' bookkeeping. Envoy and
	// gRPC answer each response within milliseconds.
	MaxUnackedResponses = 8
	// ProxyAckTimeout: a proxy that has not answered (ACK or NACK) a
	// response within it counts as having rejected the policies its
	// configuration carries, so Programmed turns False (ProxyRejected,
	// naming it) instead of Pending forever (issue 13; docs/design/153).
	// Envoy answers after applying, which waits at most for cluster and
	// listener warming (initial_fetch_timeout, 15 s by default); gRPC
	// answers within milliseconds. The stream stays open: a late answer
	// counts as usual.
	ProxyAckTimeout = 5 * time.Minute
	// MaxRequestBytes bounds one request message: a reconnecting Delta
	// Envoy that lists 10,000 endpoint names with their versions sends
	// under 1 MiB.
	MaxRequestBytes = 4 << 20
	// ResponseChunkBytes: a Delta push of one type is split into responses
	// carrying at most this many bytes of resources (a single larger
	// resource goes alone). Envoy's Google gRPC client (the sidecar's xDS
	// channel) and gRPC-Go refuse messages over 4 MiB unless told
	// otherwise; 3 MiB leaves room for the envelope. (EDS alone was 1.74
	// MiB for a proxy that sees 2,000 Services.) State-of-the-World
	// endpoints and route configurations are split the same way (the
	// protocol lets a response carry some of them); SotW listeners and
	// clusters must come whole, bounded by dataplane.MaxXDSMessageBytes,
	// which the sidecar bootstrap raises Envoy's receive limit to
	// (docs/design/151).
	ResponseChunkBytes = 3 << 20
	// WriteBufferBytes and ReadBufferBytes are gRPC's per-connection
	// write and read buffers, kept at gRPC's 32 KiB: a push of 3 MiB is
	// written in 32 KiB batches. Every proxy opens its own connection, so
	// what a connection holds idle is per-proxy memory; grpc-go 1.85
	// pools both buffers between reads and writes (the shared write
	// buffer is its default; the read buffer pool is on unless
	// GRPC_GO_EXPERIMENTAL_HTTP_FRAMER_READ_BUFFER_POOLING=false), so an
	// idle connection holds neither. Measured (BenchmarkHeapPerProxy,
	// 2,000 Services, 100 proxies, 200 splits, docs/design/181): each
	// added proxy costs 20 KiB of live heap with 32 KiB buffers and 20
	// KiB with 8 KiB ones; 52 KiB with grpc.SharedWriteBuffer(false).
	// Smaller buffers would only cost syscalls (a 3 MiB response in 8 KiB
	// writes is 4x the writes). TestHeapPerProxyIsSmall's bound (40 KiB)
	// fails should an upgrade stop sharing the write buffer.
	WriteBufferBytes = 32 << 10
	ReadBufferBytes  = 32 << 10
	// MaxHeaderBytes bounds a stream's request headers (gRPC's default is
	// 16 MiB): a projected ServiceAccount token is 1-2 KiB.
	MaxHeaderBytes = 32 << 10
	// FirstRequestTimeout: a client must say who it is this soon after
	// opening a stream (Envoy and gRPC send their first request at once);
	// an idle stream would otherwise hold its slot forever.
	FirstRequestTimeout = 15 * time.Second
	// failedBuildRetry and failedBuildRetryMax: a group whose build failed
	// keeps its last good configuration and is retried at this interval,
	// doubling to the maximum, not on every update (a proxy whose own
	// input makes its build fail would otherwise cost a full build on
	// every change of the mesh).
	failedBuildRetry    = time.Second
	failedBuildRetryMax = 5 * time.Minute
)

// servedTypes are the type URLs weft serves; a request for any other is
// refused, so a client cannot grow per-stream state or metric series by
// naming types.
var servedTypes = func() map[string]bool {
	m := map[string]bool{}
	for _, t := range pushOrder {
		m[t] = true
	}
	return m
}()

func exhausted(format string, args ...any) error {
	return status.Errorf(codes.ResourceExhausted, format, args...)
}

// checkNames refuses a request that would make a stream subscribe to (or
// claim to hold) more than MaxSubscribedNames names of one type, or names a
// resource with an over-long name.
func checkNames(t string, have int, names []string) error {
	if have+len(names) > MaxSubscribedNames {
		return exhausted("subscribing to %d more %s names would exceed %d per stream (xds.MaxSubscribedNames)", len(names), shortType(t), MaxSubscribedNames)
	}
	for _, n := range names {
		if len(n) > MaxResourceNameBytes {
			return status.Errorf(codes.InvalidArgument, "resource name of %d bytes exceeds %d (xds.MaxResourceNameBytes)", len(n), MaxResourceNameBytes)
		}
	}
	return nil
}

// connStreams counts the streams of one HTTP/2 connection: a stats.Handler
// tags each connection's context, and the stream interceptor refuses
// streams over MaxStreamsPerConnection.
type connStreams struct{}

type connStreamsKey struct{}

func (connStreams) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, connStreamsKey{}, new(atomic.Int32))
}
func (connStreams) HandleConn(context.Context, stats.ConnStats)                     {}
func (connStreams) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (connStreams) HandleRPC(context.Context, stats.RPCStats)                       {}

func limitStreamsPerConnection(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if n, ok := ss.Context().Value(connStreamsKey{}).(*atomic.Int32); ok {
		if n.Add(1) > MaxStreamsPerConnection {
			n.Add(-1)
			return exhausted("this connection already has %d streams (xds.MaxStreamsPerConnection): open one ADS stream per connection", MaxStreamsPerConnection)
		}
		defer n.Add(-1)
	}
	return handler(srv, ss)
}
