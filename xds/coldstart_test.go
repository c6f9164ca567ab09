package xds

import (
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/translator/testmesh"
)

// A model that arrives while a group's first build runs (a proxy had just
// joined) rebuilds the group once that build is done only if the change
// from the model the build read can alter it (rebuildIfAffected). Whatever
// is skipped, the group ends with what a fresh build of the new model
// gives it: each case changes one input the group reads, or one it does
// not.
func TestUpdateDuringFirstBuildEqualsFreshBuild(t *testing.T) {
	in := testmesh.Generate(testmesh.Options{Services: 20, Namespaces: 2, EndpointsPerService: 3})
	proxy := dataplane.Proxy{Namespace: "ns-0", ServiceAccount: "svc-0", Labels: map[string]string{"app": "svc-0"}, IPs: []string{"10.1.0.1"}}
	// withService returns m with the Service of key replaced by edit's copy.
	withService := func(m *ir.Mesh, key ir.ServiceKey, edit func(*ir.Service)) *ir.Mesh {
		n := *m
		n.Services = append([]*ir.Service(nil), m.Services...)
		for i, s := range n.Services {
			if s.Key == key {
				c := *s
				c.Ports = append([]*ir.Port(nil), s.Ports...)
				edit(&c)
				n.Services[i] = &c
			}
		}
		return &n
	}
	addEndpoint := func(s *ir.Service) {
		p := *s.Ports[0]
		p.Endpoints = append(append([]ir.Endpoint(nil), p.Endpoints...), ir.Endpoint{Address: "10.9.9.9", Port: p.TargetPort, Ready: true})
		s.Ports[0] = &p
	}
	for _, c := range []struct {
		name    string
		next    func(*ir.Mesh) *ir.Mesh
		rebuild bool // the change can alter the group
	}{
		{"same content", func(m *ir.Mesh) *ir.Mesh { return ir.Reuse(m, translator.Translate(in).Mesh) }, false},
		{"another namespace's unexported Service's endpoints", func(m *ir.Mesh) *ir.Mesh {
			return withService(m, ir.ServiceKey{Namespace: "ns-1", Name: "svc-1"}, addEndpoint)
		}, false},
		{"a visible Service's endpoints", func(m *ir.Mesh) *ir.Mesh {
			return withService(m, ir.ServiceKey{Namespace: "ns-0", Name: "svc-2"}, addEndpoint)
		}, true},
		{"a visible Service's export", func(m *ir.Mesh) *ir.Mesh {
			return withService(m, ir.ServiceKey{Namespace: "ns-1", Name: "svc-3"}, func(s *ir.Service) { s.ExportTo = []string{"*"} })
		}, true},
		{"the namespace's mTLS mode", func(m *ir.Mesh) *ir.Mesh {
			n := *m
			n.Namespaces = map[string]*ir.Namespace{}
			for k, v := range m.Namespaces {
				n.Namespaces[k] = v
			}
			n.Namespaces["ns-0"] = &ir.Namespace{Name: "ns-0", MTLS: ir.MTLSStrict}
			return &n
		}, true},
		{"the mesh's outbound policy", func(m *ir.Mesh) *ir.Mesh {
			n := *m
			n.Outbound = ir.OutboundRegistryOnly
			return &n
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			mesh := translator.Translate(in).Mesh
			next := c.next(mesh)
			a := NewADS(logr.Discard())
			a.Update(mesh, time.Now())
			started, release := make(chan struct{}), make(chan struct{})
			first, build := true, a.build
			a.build = func(s *envoy.Shared, p dataplane.Proxy) *envoy.Resources {
				if first {
					first = false
					close(started)
					<-release
				}
				return build(s, p)
			}
			conn := a.newConn(true, NodeInfo{ID: "p-0.ns-0", Proxy: proxy})
			joined := make(chan error)
			go func() { joined <- a.join(conn) }()
			<-started // the first build read the first model
			updated := make(chan struct{})
			go func() { a.Update(next, time.Now()); close(updated) }()
			for {
				a.mu.Lock()
				installed := a.mesh == next
				a.mu.Unlock()
				if installed {
					break
				}
				time.Sleep(time.Millisecond)
			}
			close(release)
			if err := <-joined; err != nil {
				t.Fatal(err)
			}
			<-updated
			defer a.leave(conn)
			builds := a.Builds()
			if want := uint64(1 + b2u(c.rebuild)); builds != want {
				t.Errorf("the group was built %d times, want %d", builds, want)
			}
			want, _, err := buildSnapshot(next, proxy, nil, nil, newEncoder())
			if err != nil {
				t.Fatal(err)
			}
			got := conn.group.snap.Load()
			for _, typ := range pushOrder {
				if len(got.resources.of(typ)) != len(want.resources.of(typ)) {
					t.Errorf("%s: %d resources, a fresh build of the new model has %d", shortType(typ), len(got.resources.of(typ)), len(want.resources.of(typ)))
				}
				for name, w := range want.resources.of(typ) {
					if g := got.resources.of(typ)[name]; g == nil || g.version() != w.version() {
						t.Errorf("%s %s differs from a fresh build of the new model", shortType(typ), name)
					}
				}
			}
		})
	}
}

func b2u(b bool) int {
	if b {
		return 1
	}
	return 0
}
