package xdsload_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/xdsload"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/testmesh"
	"github.com/weftmesh/weft/xds"
)

// These tests run the simulated proxy against weft's real ADS server over
// loopback gRPC.

func serveOn(t *testing.T, addr string, ads *xds.ADS) *grpc.Server {
	t.Helper()
	var lis net.Listener
	var err error
	// A port just released by a stopped server can take a moment to free.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if lis, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, ads.Anonymous())
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return g
}

func newProxy() *xdsload.Proxy {
	md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: "ns-0", dataplane.MetaServiceAccount: "svc-0",
		dataplane.MetaLabels: map[string]any{"app": "svc-0"}})
	return &xdsload.Proxy{Node: &corev3.Node{Id: "p-0.ns-0", Metadata: md}}
}

func holdsAll(v map[string]map[string]string) bool {
	for _, t := range xdsload.Types {
		if len(v[t]) == 0 {
			return false
		}
	}
	return true
}

// TestOnAckAndBytes: OnAck hears every accepted response after its ACK
// was sent, and the byte counters add up per type.
func TestOnAckAndBytes(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.Update(translator.Translate(testmesh.Generate(testmesh.Options{Services: 10, Namespaces: 2, EndpointsPerService: 3})).Mesh, time.Now())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	serveOn(t, addr, ads)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	var mu sync.Mutex
	acked := map[string]int{} // type → responses heard
	bytes := map[string]int{} // type → resource bytes heard
	var last time.Time
	p := newProxy()
	p.OnAck = func(r *discoveryv3.DeltaDiscoveryResponse, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		acked[r.TypeUrl]++
		for _, res := range r.Resources {
			bytes[r.TypeUrl] += len(res.GetResource().GetValue())
		}
		if at.Before(last) {
			t.Errorf("ACK times go backwards: %v after %v", at, last)
		}
		last = at
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	go func() { _ = p.Run(ctx, conn) }()
	if !p.WaitFor(ctx, holdsAll) {
		t.Fatal("the proxy never held every type")
	}
	s := p.Stats()
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, typ := range xdsload.Types {
		if acked[typ] != s.ByType[typ] || bytes[typ] != s.BytesByType[typ] {
			t.Errorf("%s: OnAck heard %d responses, %d bytes; Stats say %d, %d", typ, acked[typ], bytes[typ], s.ByType[typ], s.BytesByType[typ])
		}
		total += s.BytesByType[typ]
	}
	if total != s.Bytes || total == 0 {
		t.Errorf("bytes by type add up to %d, Bytes = %d", total, s.Bytes)
	}
	if last.Before(start) {
		t.Errorf("last ACK at %v, before the stream started at %v", last, start)
	}
	if held := p.Held(xdsload.Types[0]); len(held) == 0 {
		t.Errorf("Held(%s) is empty", xdsload.Types[0])
	}
	if s.Streams != 1 {
		t.Errorf("Streams = %d, want 1", s.Streams)
	}
}

// TestKeepReconnects: when the server goes away and comes back, Keep opens
// a new stream and the proxy holds a full configuration again.
func TestKeepReconnects(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.Update(translator.Translate(testmesh.Generate(testmesh.Options{Services: 4, Namespaces: 1, EndpointsPerService: 1})).Mesh, time.Now())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	first := serveOn(t, addr, ads)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := newProxy()
	done := make(chan struct{})
	go func() { p.Keep(ctx, conn, time.Second); close(done) }()
	if !p.WaitFor(ctx, holdsAll) {
		t.Fatal("the proxy never held every type")
	}
	before := p.Stats().Responses

	first.Stop()
	serveOn(t, addr, ads)
	for p.Stats().Streams < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("Keep never opened a second stream")
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Run starts each stream from nothing, so holding everything now means
	// the second stream delivered it.
	if !p.WaitFor(ctx, holdsAll) {
		t.Fatalf("no full configuration after the server came back (streams %d)", p.Stats().Streams)
	}
	if got := p.Stats().Responses; got <= before {
		t.Errorf("responses %d after reconnecting, %d before: the new stream received nothing", got, before)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Keep did not return after its context ended")
	}
}

// TestByName: a proxy that subscribes as Envoy does (clusters and
// listeners as wildcards, endpoints and routes by the names they give)
// ends up holding the same resources as one that subscribes to every type
// as a wildcard: an EDS resource for every EDS cluster and every route
// configuration a listener names.
func TestByName(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.Update(translator.Translate(testmesh.Generate(testmesh.Options{Services: 10, Namespaces: 2, EndpointsPerService: 3})).Mesh, time.Now())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	serveOn(t, addr, ads)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wild, named := newProxy(), newProxy()
	named.ByName = true
	for _, p := range []*xdsload.Proxy{wild, named} {
		go func() { _ = p.Run(ctx, conn) }()
		if !p.WaitFor(ctx, holdsAll) {
			t.Fatalf("proxy (ByName %t) never held every type", p.ByName)
		}
	}
	// The named proxy's subscriptions follow its clusters and listeners a
	// response or two behind: wait until both hold the same names.
	same := func() bool {
		for _, typ := range xdsload.Types {
			w, n := wild.Held(typ), named.Held(typ)
			if len(w) != len(n) {
				return false
			}
			for k := range w {
				if _, ok := n[k]; !ok {
					return false
				}
			}
		}
		return true
	}
	for !same() {
		select {
		case <-ctx.Done():
			for _, typ := range xdsload.Types {
				t.Errorf("%s: wildcard proxy holds %d, named proxy %d", typ, len(wild.Held(typ)), len(named.Held(typ)))
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// floodServer answers a proxy's first request with a cluster response
// that makes it subscribe to many endpoint names (a large request), then
// writes more than every flow-control window holds before it reads again,
// as weft's stream loop does (it reads the next request after its write):
// a proxy that stopped reading while its request waited would deadlock
// with it. done hears what the server saw once it read again.
type floodServer struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	clusters, flood int
	done            chan floodResult
}

type floodResult struct {
	subscribed, acked int
	err               error
}

func (s floodServer) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	res := floodResult{}
	defer func() {
		if res.err != nil {
			s.done <- res
		}
	}()
	if _, res.err = stream.Recv(); res.err != nil {
		return res.err
	}
	var clusters []*discoveryv3.Resource
	for i := range s.clusters {
		name := fmt.Sprintf("%s-%05d", strings.Repeat("c", 90), i)
		a, err := anypb.New(&clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}})
		if err != nil {
			res.err = err
			return err
		}
		clusters = append(clusters, &discoveryv3.Resource{Name: name, Version: "1", Resource: a})
	}
	if res.err = stream.Send(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.ClusterType, Nonce: "clusters", Resources: clusters}); res.err != nil {
		return res.err
	}
	value := make([]byte, 256<<10)
	for i := range s.flood {
		name := fmt.Sprintf("route-%d", i)
		r := &discoveryv3.Resource{Name: name, Version: "1", Resource: &anypb.Any{TypeUrl: resourcev3.RouteType, Value: value}}
		if res.err = stream.Send(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.RouteType, Nonce: name, Resources: []*discoveryv3.Resource{r}}); res.err != nil {
			return res.err
		}
	}
	for res.acked < s.flood+1 {
		req, err := stream.Recv()
		if err != nil {
			res.err = err
			return err
		}
		if req.ResponseNonce != "" && req.ErrorDetail == nil {
			res.acked++
		}
		if req.TypeUrl == resourcev3.EndpointType {
			res.subscribed += len(req.ResourceNamesSubscribe)
		}
	}
	s.done <- res
	<-stream.Context().Done()
	return nil
}

// TestProxyReadsWhileItsRequestsWait: a proxy keeps reading responses
// while a request of its waits for flow control, as Envoy does. Windows
// are fixed at gRPC's 64 KiB on both sides (no BDP growth): the proxy's
// subscription (~290 KB of names) cannot go out until the server reads,
// and the server writes 2 MiB before it reads. The proxy that sent inline
// deadlocked here (and at 5,000 Services in `make bench --large`).
func TestProxyReadsWhileItsRequestsWait(t *testing.T) {
	const clusters, flood = 3000, 8
	srv := floodServer{clusters: clusters, flood: flood, done: make(chan floodResult, 1)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := newProxy()
	p.ByName = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = p.Run(ctx, conn) }()
	// Generous: a deadlock never ends, a slow machine does.
	select {
	case res := <-srv.done:
		if res.err != nil {
			t.Fatal(res.err)
		}
		if res.subscribed != clusters {
			t.Errorf("the proxy subscribed to %d endpoint names, want %d", res.subscribed, clusters)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the proxy and the server wait for each other: the proxy stopped reading while its request waited")
	}
	if got := len(p.Held(resourcev3.RouteType)); got != flood {
		t.Errorf("the proxy holds %d of the %d route configurations sent", got, flood)
	}
}
