package envoy

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// memoMesh is two Services with two endpoints each, in one namespace.
func memoMesh() *ir.Mesh {
	svc := func(name, ip string) *ir.Service {
		return &ir.Service{Key: ir.ServiceKey{Namespace: "shop", Name: name}, ClusterIPs: []string{"10.0.0." + ip}, ExportTo: []string{"*"}, Ports: []*ir.Port{{
			Name: "http", Port: 80, Protocol: ir.ProtocolHTTP, TargetPort: 8080,
			Endpoints: []ir.Endpoint{{Address: "10.1.0." + ip, Port: 8080, Ready: true}, {Address: "10.1.1." + ip, Port: 8080, Ready: true, Zone: "b"}},
			Routes:    []*ir.Route{{Backends: []ir.Backend{{Service: ir.ServiceKey{Namespace: "shop", Name: name}, Port: 80, Weight: 1}}}},
		}}}
	}
	return &ir.Mesh{TrustDomain: "cluster.local", Services: []*ir.Service{svc("api", "1"), svc("web", "2")}}
}

// Every proxy that sees a Service port gets the same endpoints message,
// equal to what loadAssignment builds; a new port (changed endpoints) gets
// its own; an entry goes when its port is collected.
func TestLoadAssignmentsAreBuiltOncePerPort(t *testing.T) {
	mesh := memoMesh()
	a := Build(mesh, dataplane.Proxy{Namespace: "shop", ServiceAccount: "a", Labels: map[string]string{"app": "a"}})
	b := Build(mesh, dataplane.Proxy{Namespace: "shop", ServiceAccount: "b", Labels: map[string]string{"app": "b"}})
	if len(a.Endpoints) != 2 || len(b.Endpoints) != 2 {
		t.Fatalf("endpoints: %d and %d, want 2 each", len(a.Endpoints), len(b.Endpoints))
	}
	for i := range a.Endpoints {
		if a.Endpoints[i] != b.Endpoints[i] {
			t.Errorf("%s: two proxies got two messages", a.Endpoints[i].ClusterName)
		}
		port := mesh.Services[i].Ports[0]
		if want := loadAssignment(ir.ClusterName(mesh.Services[i].Key, 80), port.Endpoints); !proto.Equal(a.Endpoints[i], want) {
			t.Errorf("%s: the shared message differs from a fresh build:\n%v\n%v", want.ClusterName, a.Endpoints[i], want)
		}
	}
	grpc := Build(mesh, dataplane.Proxy{Kind: dataplane.KindGRPC, Namespace: "shop", ServiceAccount: "c", IPs: []string{"10.1.9.9"}})
	shared := 0
	for _, e := range grpc.Endpoints {
		for _, s := range a.Endpoints {
			if e == s {
				shared++
			}
		}
	}
	if shared != 2 {
		t.Errorf("a gRPC proxy shares %d of the sidecar's endpoint messages, want 2", shared)
	}

	// New endpoints, a new port: a new message.
	next := *mesh
	web := *mesh.Services[1]
	port := *web.Ports[0]
	port.Endpoints = port.Endpoints[:1]
	web.Ports = []*ir.Port{&port}
	next.Services = []*ir.Service{mesh.Services[0], &web}
	c := Build(&next, dataplane.Proxy{Namespace: "shop", ServiceAccount: "a", Labels: map[string]string{"app": "a"}})
	if c.Endpoints[0] != a.Endpoints[0] || c.Endpoints[1] == a.Endpoints[1] || len(c.Endpoints[1].Endpoints[0].LbEndpoints) != 1 {
		t.Fatalf("after web's endpoints changed: api shared %t, web new %t with %d endpoints in its first locality",
			c.Endpoints[0] == a.Endpoints[0], c.Endpoints[1] != a.Endpoints[1], len(c.Endpoints[1].Endpoints[0].LbEndpoints))
	}

	// Dropping the models drops their entries.
	keys := []claKey{
		{weak.Make(mesh.Services[0].Ports[0]), a.Endpoints[0].ClusterName, famAny, "", ""},
		{weak.Make(mesh.Services[1].Ports[0]), a.Endpoints[1].ClusterName, famAny, "", ""},
		{weak.Make(&port), c.Endpoints[1].ClusterName, famAny, "", ""},
	}
	held := func() (n int) {
		claMemo.Lock()
		defer claMemo.Unlock()
		for _, k := range keys {
			if _, ok := claMemo.m[k]; ok {
				n++
			}
		}
		return n
	}
	if n := held(); n != 3 {
		t.Fatalf("%d of the 3 ports' messages are memoized", n)
	}
	mesh, a, b, grpc, next, c = nil, nil, nil, nil, ir.Mesh{}, nil
	web = ir.Service{}
	deadline := time.Now().Add(30 * time.Second)
	for held() > 0 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := held(); n > 0 {
		t.Fatalf("%d memoized endpoint messages stay after their ports were dropped", n)
	}
}

// Concurrent callers of one memo key build once and share the result (the
// groups of a cold start reach the outbound listener together); a build
// that panics leaves the key for the next caller.
func TestMemoBuildsOncePerKey(t *testing.T) {
	var mu sync.Mutex
	m := map[string]*cell[*int]{}
	var builds atomic.Int32
	const n = 32
	got := make([]*int, n)
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			got[i] = memo(&mu, m, "k", func() *int {
				builds.Add(1)
				time.Sleep(20 * time.Millisecond) // a build takes a while
				return new(int)
			})
		}()
	}
	start.Done()
	done.Wait()
	if b := builds.Load(); b != 1 {
		t.Errorf("%d concurrent callers of one key built %d times, want 1", n, b)
	}
	for i := range got {
		if got[i] == nil || got[i] != got[0] {
			t.Fatalf("caller %d got another value", i)
		}
	}
	func() {
		defer func() { _ = recover() }()
		memo(&mu, m, "p", func() *int { panic("build failed") })
	}()
	if v := memo(&mu, m, "p", func() *int { return new(int) }); v == nil {
		t.Error("after a build panicked, the next caller got nothing")
	}
}
