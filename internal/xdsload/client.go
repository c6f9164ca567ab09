// Package xdsload simulates proxies for load tests and benchmarks: raw Delta
// ADS streams that subscribe to every resource type and ACK every response,
// as Envoy does, while counting what they receive. One process runs
// thousands of them.
package xdsload

import (
	"context"
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
	// Reject, when set, decides per response whether to NACK it, with the
	// message it returns (as Envoy does for configuration it cannot use);
	// a NACKed response is not applied.
	Reject func(r *discoveryv3.DeltaDiscoveryResponse) string

	mu        sync.Mutex
	versions  map[string]map[string]string // type → name → version held
	responses int
	byType    map[string]int
	bytes     int
	changed   chan struct{} // signalled after every response
}

// Stats are what a proxy received.
type Stats struct {
	Responses, Bytes, Resources int
	// ByType counts responses per type URL.
	ByType map[string]int
}

// Run connects over conn and serves the stream until ctx ends or the
// stream fails.
func (p *Proxy) Run(ctx context.Context, conn grpc.ClientConnInterface) error {
	p.mu.Lock()
	p.versions = map[string]map[string]string{}
	if p.changed == nil {
		p.changed = make(chan struct{}, 1)
	}
	p.mu.Unlock()
	if p.Token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+p.Token)
	}
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	for i, t := range Types {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: []string{"*"}}
		if i == 0 {
			req.Node = p.Node
		}
		if err := stream.Send(req); err != nil {
			return err
		}
	}
	for {
		r, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if p.Reject != nil {
			if msg := p.Reject(r); msg != "" {
				nack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce,
					ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: msg}}
				if err := stream.Send(nack); err != nil {
					return err
				}
				continue
			}
		}
		p.mu.Lock()
		held := p.versions[r.TypeUrl]
		if held == nil {
			held = map[string]string{}
			p.versions[r.TypeUrl] = held
		}
		for _, res := range r.Resources {
			held[res.Name] = res.Version
			p.bytes += len(res.GetResource().GetValue())
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
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}); err != nil {
			return err
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
	s := Stats{Responses: p.responses, Bytes: p.bytes, ByType: map[string]int{}}
	for t, n := range p.byType {
		s.ByType[t] = n
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
