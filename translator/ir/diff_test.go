package ir

import (
	"reflect"
	"testing"
)

func TestDiff(t *testing.T) {
	key := func(ns, name string) ServiceKey { return ServiceKey{Namespace: ns, Name: name} }
	svc := func(ns, name string, weight uint32) *Service {
		k := key(ns, name)
		return &Service{Key: k, ClusterIPs: []string{"10.0.0.1"}, Ports: []*Port{{Port: 80, Protocol: ProtocolHTTP,
			Routes: []*Route{{Backends: []Backend{{Service: k, Port: 80, Weight: weight}}}}}}}
	}
	base := func() *Mesh {
		return &Mesh{
			TrustDomain: "cluster.local",
			Services:    []*Service{svc("a", "one", 100), svc("a", "two", 100), svc("b", "three", 100)},
			Namespaces:  map[string]*Namespace{"a": {Name: "a", MTLS: MTLSPermissive}, "b": {Name: "b", MTLS: MTLSPermissive}},
			Tracing:     &Tracing{Collector: "otel:4317", SamplingPercent: 1},
		}
	}
	shared := base()
	cases := []struct {
		name     string
		old, new *Mesh
		meshWide bool
		services []ServiceChange
		ns       []string
	}{
		{name: "the same model", old: shared, new: shared},
		{name: "an equal model, translated again", old: base(), new: base()},
		{name: "from nothing", old: nil, new: &Mesh{Services: []*Service{svc("a", "one", 100)}},
			services: []ServiceChange{{Key: key("a", "one"), New: svc("a", "one", 100)}}},
		{name: "a weight", old: base(), new: func() *Mesh {
			m := base()
			m.Services[1] = svc("a", "two", 90)
			return m
		}(), services: []ServiceChange{{Key: key("a", "two"), Old: svc("a", "two", 100), New: svc("a", "two", 90)}}},
		{name: "added first, removed last", old: base(), new: func() *Mesh {
			m := base()
			m.Services = append([]*Service{svc("a", "aaa", 1)}, m.Services[:2]...)
			return m
		}(), services: []ServiceChange{{Key: key("a", "aaa"), New: svc("a", "aaa", 1)}, {Key: key("b", "three"), Old: svc("b", "three", 100)}}},
		{name: "a namespace's mode, another added", old: base(), new: func() *Mesh {
			m := base()
			m.Namespaces["b"] = &Namespace{Name: "b", MTLS: MTLSStrict}
			m.Namespaces["c"] = &Namespace{Name: "c"}
			return m
		}(), ns: []string{"b", "c"}},
		{name: "a namespace's AuthPolicy", old: base(), new: func() *Mesh {
			m := base()
			m.Namespaces["a"].AuthPolicies = []*AuthPolicy{{Source: PolicyRef{Kind: "AuthPolicy", Namespace: "a", Name: "deny"}, Action: AuthDeny}}
			return m
		}(), ns: []string{"a"}},
		{name: "a namespace removed", old: base(), new: func() *Mesh {
			m := base()
			delete(m.Namespaces, "a")
			return m
		}(), ns: []string{"a"}},
		{name: "tracing, equal but not shared", old: base(), new: func() *Mesh {
			m := base()
			m.Tracing = &Tracing{Collector: "otel:4317", SamplingPercent: 1}
			return m
		}()},
		{name: "tracing", old: base(), new: func() *Mesh { m := base(); m.Tracing.SamplingPercent = 5; return m }(), meshWide: true},
		{name: "outbound policy", old: base(), new: func() *Mesh { m := base(); m.Outbound = OutboundRegistryOnly; return m }(), meshWide: true},
		{name: "default mTLS", old: base(), new: func() *Mesh { m := base(); m.DefaultMTLS = MTLSStrict; return m }(), meshWide: true},
		{name: "trust domain", old: base(), new: func() *Mesh { m := base(); m.TrustDomain = "example.org"; return m }(), meshWide: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Diff(c.old, c.new)
			if got.MeshWide != c.meshWide {
				t.Errorf("MeshWide = %v, want %v", got.MeshWide, c.meshWide)
			}
			if !reflect.DeepEqual(got.Services, c.services) {
				t.Errorf("Services:\n got %+v\nwant %+v", got.Services, c.services)
			}
			if !reflect.DeepEqual(got.Namespaces, c.ns) {
				t.Errorf("Namespaces = %v, want %v", got.Namespaces, c.ns)
			}
			if empty := !c.meshWide && c.services == nil && c.ns == nil; got.Empty() != empty {
				t.Errorf("Empty() = %v, want %v", got.Empty(), empty)
			}
		})
	}
}

// Every Mesh field is either compared per part (Services, Namespaces) or a
// mesh-wide setting: a field added to Mesh is mesh-wide by default.
func TestDiffSeesEverySetting(t *testing.T) {
	m := reflect.TypeOf(Mesh{})
	for f := 0; f < m.NumField(); f++ {
		field := m.Field(f)
		if !field.IsExported() || field.Name == "Services" || field.Name == "Namespaces" {
			continue
		}
		old, new := &Mesh{}, &Mesh{}
		v := reflect.ValueOf(new).Elem().Field(f)
		switch v.Kind() {
		case reflect.String:
			v.SetString("x")
		case reflect.Pointer:
			v.Set(reflect.New(v.Type().Elem()))
		case reflect.Struct:
			// Set its first settable field to a non-zero value.
			s := v.Field(0)
			switch s.Kind() {
			case reflect.Bool:
				s.SetBool(true)
			case reflect.String:
				s.SetString("x")
			default:
				t.Fatalf("extend this test for Mesh.%s", field.Name)
			}
		default:
			t.Fatalf("extend this test for Mesh.%s (%s)", field.Name, v.Kind())
		}
		if d := Diff(old, new); !d.MeshWide {
			t.Errorf("a change of Mesh.%s is not mesh-wide", field.Name)
		}
	}
}
