package xdsload_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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
