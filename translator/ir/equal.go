package ir

import (
	"maps"
	"reflect"
	"slices"
)

// Equal says whether s and o are the same Service: what reflect.DeepEqual
// says, at a fraction of its cost. Diff compares every Service of two
// models on every change that is not of endpoints alone; with 2,000
// Services reflect.DeepEqual took about half of a weight change's time
// in the xDS server (docs/design/145). The comparable parts (keys,
// endpoints, backends, policy references) are compared with ==, so a
// field added to those types is compared too (or, if it makes the type
// not comparable, this file stops compiling; Backend's header
// modifications are pointers, compared by value in backendsEqual); the
// rarely set, nested
// parts (matches, retries, traffic, rate and auth policies) keep
// reflect.DeepEqual. A field added to Service, Port or Route must be
// added here: TestEqualCoversEveryField fails until it is, and
// TestEqualAgreesWithDeepEqual checks every field at every depth.
func (s *Service) Equal(o *Service) bool {
	if s == o {
		return true
	}
	if s == nil || o == nil {
		return false
	}
	if s.Key != o.Key || s.Headless != o.Headless || len(s.Ports) != len(o.Ports) || (s.Ports == nil) != (o.Ports == nil) ||
		!sliceEqual(s.ClusterIPs, o.ClusterIPs) || !sliceEqual(s.ExportTo, o.ExportTo) ||
		!maps.Equal(s.Selector, o.Selector) || (s.Selector == nil) != (o.Selector == nil) ||
		!deepSlice(s.AuthPolicies, o.AuthPolicies) {
		return false
	}
	for i, p := range s.Ports {
		if !p.Equal(o.Ports[i]) {
			return false
		}
	}
	return true
}

// Equal says whether p and o are the same Port, as reflect.DeepEqual does.
func (p *Port) Equal(o *Port) bool {
	if p == o {
		return true
	}
	if p == nil || o == nil {
		return false
	}
	return p.Name == o.Name && p.Port == o.Port && p.Protocol == o.Protocol &&
		p.TargetPort == o.TargetPort && p.TargetPortName == o.TargetPortName &&
		sliceEqual(p.Endpoints, o.Endpoints) && backendsEqual(p.TCPBackends, o.TCPBackends) &&
		routesEqual(p.Routes, o.Routes) && consumersEqual(p.Consumers, o.Consumers) && deepPtr(p.Retry, o.Retry) && deepPtr(p.Backend, o.Backend) &&
		deepPtr(p.RateLimit, o.RateLimit)
}

// Equal says whether r and o are the same Route, as reflect.DeepEqual
// does. Every port has one (its default route), so this is the hot part.
func (r *Route) Equal(o *Route) bool {
	if r == o {
		return true
	}
	if r == nil || o == nil {
		return false
	}
	return r.Timeout == o.Timeout && backendsEqual(r.Backends, o.Backends) &&
		(r.Source == o.Source || r.Source != nil && o.Source != nil && *r.Source == *o.Source) &&
		deepPtr(r.Retry, o.Retry) && deepSlice(r.Matches, o.Matches) &&
		deepPtr(r.RequestHeaders, o.RequestHeaders) && deepPtr(r.ResponseHeaders, o.ResponseHeaders) &&
		deepPtr(r.Redirect, o.Redirect) && deepPtr(r.Rewrite, o.Rewrite) && sliceEqual(r.Mirrors, o.Mirrors) &&
		r.BackendTimeout == o.BackendTimeout && deepPtr(r.Fault, o.Fault) &&
		r.NoTimeout == o.NoTimeout && r.NoBackendTimeout == o.NoBackendTimeout
}

// backendsEqual compares backends as reflect.DeepEqual does: their
// header modifications (set by HTTPRoute backendRef filters, rarely) by
// value, the rest with ==.
func backendsEqual(a, b []Backend) bool {
	if len(a) != len(b) || (a == nil) != (b == nil) {
		return false
	}
	for i, x := range a {
		y := b[i]
		if x.Unresolved != y.Unresolved || x.Service != y.Service || x.Port != y.Port || x.Weight != y.Weight ||
			!deepPtr(x.RequestHeaders, y.RequestHeaders) || !deepPtr(x.ResponseHeaders, y.ResponseHeaders) {
			return false
		}
	}
	return true
}

func routesEqual(a, b []*Route) bool {
	if len(a) != len(b) || (a == nil) != (b == nil) {
		return false
	}
	for i, r := range a {
		if !r.Equal(b[i]) {
			return false
		}
	}
	return true
}

func consumersEqual(a, b []*ConsumerRoutes) bool {
	if len(a) != len(b) || (a == nil) != (b == nil) {
		return false
	}
	for i, c := range a {
		d := b[i]
		if (c == nil) != (d == nil) || c != nil && (c.Namespace != d.Namespace || !routesEqual(c.Routes, d.Routes)) {
			return false
		}
	}
	return true
}

// sliceEqual is slices.Equal that, as reflect.DeepEqual, tells a nil
// slice from an empty one.
func sliceEqual[T comparable](a, b []T) bool {
	return (a == nil) == (b == nil) && slices.Equal(a, b)
}

// deepSlice is reflect.DeepEqual of two slices, without reflection for
// the usual case of both empty.
func deepSlice[T any](a, b []T) bool {
	if len(a) == 0 && len(b) == 0 {
		return (a == nil) == (b == nil)
	}
	return reflect.DeepEqual(a, b)
}

// deepPtr is reflect.DeepEqual of two pointers, without reflection (and
// its allocation) when they are the same or either is nil.
func deepPtr[T any](a, b *T) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	return reflect.DeepEqual(a, b)
}

// Reuse returns next with every Service (and every Port of a changed
// Service) that equals its predecessor in prev replaced by that
// predecessor: unchanged parts of the model keep their pointers from one
// translation to the next. Diff then skips them without comparing, and
// what is memoized per *Service or *Port (envoy's endpoints, the xDS
// encoder's encodings) is found again instead of built anew. next must be
// a fresh translation that nobody else holds yet: its Services slice and
// changed Services' Ports slices are updated in place.
func Reuse(prev, next *Mesh) *Mesh {
	if prev == nil || next == nil || prev == next {
		return next
	}
	i := 0
	for j, n := range next.Services {
		for i < len(prev.Services) && prev.Services[i].Key.Less(n.Key) {
			i++
		}
		if i == len(prev.Services) || prev.Services[i].Key != n.Key {
			continue
		}
		o := prev.Services[i]
		if o.Equal(n) {
			next.Services[j] = o
			continue
		}
		for k, np := range n.Ports {
			if op := o.Port(np.Port); op != nil && op.Equal(np) {
				n.Ports[k] = op
			}
		}
	}
	for name, n := range next.Namespaces {
		if o := prev.Namespaces[name]; o != nil && reflect.DeepEqual(o, n) {
			next.Namespaces[name] = o
		}
	}
	return next
}
