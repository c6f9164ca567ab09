// Package xdsload simulates proxies for load tests and benchmarks: raw Delta
// ADS streams that subscribe to every resource type and ACK every response,
// as Envoy does, while counting what they receive. One process runs
// thousands of them.
package xdsload

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// Types a simulated proxy subscribes to, all as wildcards.
var Types = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// Proxy is one simulated proxy.
type Proxy struct {
	Node *corev3.Node
	// Token, when set, is sent as "authorization: Bearer <token>", as
	// injected sidecars do.
	Token string
	// Reject, when set, decides per response whether to NACK it (reading
	// its values during the call only), with the message it returns (as
	// Envoy does for configuration it cannot use); a NACKed response is
	// not applied.
	Reject func(r *discoveryv3.DeltaDiscoveryResponse) string
	// OnAck, when set, hears every response the proxy accepted, with the
	// time its ACK was queued to be sent: the moment Envoy would have
	// applied it. Load tools use it to time when a change arrived. It runs
	// on the stream's goroutine, so it must be quick, and the resources'
	// values are valid only during the call.
	OnAck func(r *discoveryv3.DeltaDiscoveryResponse, acked time.Time)
	// ByName makes the proxy subscribe as Envoy does: clusters and
	// listeners as wildcards, endpoints by the names its EDS clusters give
	// and route configurations by the names its listeners' HTTP connection
	// managers give (RDS), each subscription following what it holds. A
	// server that serves EDS and RDS by name only (istiod) needs it;
	// without it every type is a wildcard.
	ByName bool

	mu          sync.Mutex
	versions    map[string]map[string]string // type → name → version held
	responses   int
	byType      map[string]int
	bytes       int
	bytesByType map[string]int
	streams     int
	changed     chan struct{} // signalled after every response
}

// Stats are what a proxy received.
type Stats struct {
	Responses, Bytes, Resources int
	// ByType counts responses per type URL; BytesByType the encoded
	// resource bytes.
	ByType, BytesByType map[string]int
	// Streams counts the streams the proxy opened (Keep reconnects).
	Streams int
}

// Run connects over conn and serves the stream until ctx ends or the
// stream fails.
func (p *Proxy) Run(ctx context.Context, conn grpc.ClientConnInterface) error {
	p.mu.Lock()
	// A new stream starts from nothing, as a restarted Envoy does (no
	// initial_resource_versions): the server sends everything.
	p.versions = map[string]map[string]string{}
	p.streams++
	if p.changed == nil {
		p.changed = make(chan struct{}, 1)
	}
	p.mu.Unlock()
	if p.Token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+p.Token)
	}
	// Ending the stream's context also ends a send waiting for flow control.
	outer := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// codec: responses decoded without copying their resources (codec.go).
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx, grpc.ForceCodecV2(codec))
	if err != nil {
		return err
	}
	out := startSending(ctx, cancel, stream)
	first := true
	for _, t := range Types {
		if p.ByName && !isWildcardType(t) {
			continue // subscribed to once CDS and LDS name them
		}
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: []string{"*"}}
		if first {
			req.Node, first = p.Node, false
		}
		if err := out.send(req); err != nil {
			return err
		}
	}
	var names *followed
	if p.ByName {
		names = newFollowed()
	}
	// The previous response's buffer goes back to gRPC's pool as the next
	// is read (codec.go): OnAck and Reject must not keep its values.
	var in received
	defer in.release()
	for {
		in.release()
		err := stream.RecvMsg(&in)
		r := in.r
		if err != nil {
			if outer.Err() != nil {
				return nil
			}
			// A send that failed (not at the stream's end, which Recv
			// reports with its status) ended the stream.
			if serr := out.failed(); serr != nil && !errors.Is(serr, io.EOF) {
				return serr
			}
			return err
		}
		if p.Reject != nil {
			if msg := p.Reject(r); msg != "" {
				nack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce,
					ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: msg}}
				if err := out.send(nack); err != nil {
					return err
				}
				continue
			}
		}
		p.mu.Lock()
		held := p.versions[r.TypeUrl]
		if held == nil {
			// Sized for the first response, which is most of what the
			// type will hold: growing to 2,000 names one by one was a
			// tenth of the harness's CPU in a 500-proxy cold start.
			held = make(map[string]string, len(r.Resources))
			p.versions[r.TypeUrl] = held
		}
		if p.bytesByType == nil {
			p.bytesByType = map[string]int{}
		}
		for _, res := range r.Resources {
			held[res.Name] = res.Version
			n := len(res.GetResource().GetValue())
			p.bytes += n
			p.bytesByType[r.TypeUrl] += n
		}
		for _, n := range r.RemovedResources {
			delete(held, n)
		}
		p.responses++
		if p.byType == nil {
			p.byType = map[string]int{}
		}
		p.byType[r.TypeUrl]++
		p.mu.Unlock()
		// As Envoy: a cluster or listener update first (un)subscribes the
		// endpoints and routes it names, then is ACKed.
		if names != nil {
			for _, req := range names.update(r) {
				if err := out.send(req); err != nil {
					return err
				}
			}
		}
		if err := out.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}); err != nil {
			return err
		}
		if p.OnAck != nil {
			p.OnAck(r, time.Now())
		}
		select {
		case p.changed <- struct{}{}:
		default:
		}
	}
}

// Stats returns counters so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{Responses: p.responses, Bytes: p.bytes, ByType: map[string]int{}, BytesByType: map[string]int{}, Streams: p.streams}
	for t, n := range p.byType {
		s.ByType[t] = n
	}
	for t, n := range p.bytesByType {
		s.BytesByType[t] = n
	}
	for _, m := range p.versions {
		s.Resources += len(m)
	}
	return s
}

// WaitFor blocks until cond holds for the versions the proxy holds (type →
// name → version), or ctx ends; it reports whether cond held.
func (p *Proxy) WaitFor(ctx context.Context, cond func(map[string]map[string]string) bool) bool {
	for {
		p.mu.Lock()
		if p.changed == nil {
			p.changed = make(chan struct{}, 1)
		}
		ok := p.versions != nil && cond(p.versions)
		ch := p.changed
		p.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond): // a missed signal costs at most this
		}
	}
}

// Keep runs the proxy over conn until ctx ends, opening a new stream after
// every failure with a growing pause (100 ms doubling to retry's bound), as
// Envoy does when its control plane restarts or refuses it. Streams in
// Stats counts the attempts.
func (p *Proxy) Keep(ctx context.Context, conn grpc.ClientConnInterface, retry time.Duration) {
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		_ = p.Run(ctx, conn)
		if time.Since(start) > retry {
			pause = 100 * time.Millisecond // it held for a while: not a refusal loop
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, retry)
	}
}

// Held returns the names and versions of one type the proxy holds now.
func (p *Proxy) Held(typeURL string) map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.versions[typeURL]))
	for n, v := range p.versions[typeURL] {
		out[n] = v
	}
	return out
}

// sendQueue sends one stream's requests, in order, from a goroutine of
// its own, so that the proxy never stops reading while a request waits
// for flow control. Envoy's gRPC client buffers what it sends and keeps
// reading; a proxy that sent inline deadlocked against a server blocked
// writing to it: at 5,000 Services a subscription request (~200 KB of
// names) outgrew the stream's window while the server, which reads the
// next request only after its write, waited for the proxy to read
// (TestProxyReadsWhileItsRequestsWait).
type sendQueue struct {
	mu    sync.Mutex
	queue []*discoveryv3.DeltaDiscoveryRequest
	err   error
	wake  chan struct{}
}

// startSending sends on stream until ctx ends or a send fails, which
// calls cancel (ending the stream, so that the proxy's Recv returns).
func startSending(ctx context.Context, cancel context.CancelFunc, stream grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) *sendQueue {
	q := &sendQueue{wake: make(chan struct{}, 1)}
	go q.run(ctx, cancel, stream)
	return q
}

func (q *sendQueue) run(ctx context.Context, cancel context.CancelFunc, stream grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) {
	for {
		select {
		case <-q.wake:
		case <-ctx.Done():
			return
		}
		for {
			q.mu.Lock()
			if len(q.queue) == 0 {
				q.mu.Unlock()
				break
			}
			r := q.queue[0]
			q.queue[0], q.queue = nil, q.queue[1:]
			q.mu.Unlock()
			if err := stream.Send(r); err != nil {
				q.mu.Lock()
				q.err = err
				q.mu.Unlock()
				cancel()
				return
			}
		}
	}
}

// send queues r; it fails only once a send has failed.
func (q *sendQueue) send(r *discoveryv3.DeltaDiscoveryRequest) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return q.err
	}
	q.queue = append(q.queue, r)
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// failed is the error a send failed with, if any.
func (q *sendQueue) failed() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}
