package xds

import (
	"reflect"
	"unsafe"
)

// versionMap is a name → version map that a Delta stream keeps per type
// (what it was sent; for secrets also what the proxy holds), stored as
// what differs from a snapshot: base is the type's resources in a snapshot
// (immutable, shared with the group and with every stream in sync with
// it), own the differences — a version, or tombstone for a name of base
// that the map does not hold. A stream in sync with its group's snapshot
// holds an empty own: its bookkeeping is a pointer, not a copy of 4,000
// names (docs/design/095).
type versionMap struct {
	base map[string]*encoded
	own  map[string]string
}

// tombstone marks, in own, a name of base that the map does not hold. A
// version a client sends empty is kept as emptyVersion, which no snapshot
// version (hex) equals either.
const (
	tombstone    = ""
	emptyVersion = "\x00"
)

func (m *versionMap) get(name string) (string, bool) {
	if v, ok := m.own[name]; ok {
		return v, v != tombstone
	}
	if e, ok := m.base[name]; ok {
		return e.version(), true
	}
	return "", false
}

func (m *versionMap) set(name, v string) {
	if v == tombstone {
		v = emptyVersion
	}
	if e, ok := m.base[name]; ok && e.version() == v {
		m.forget(name)
		return
	}
	if m.own == nil {
		m.own = map[string]string{}
	}
	m.own[name] = v
}

func (m *versionMap) del(name string) {
	if _, ok := m.base[name]; ok {
		if m.own == nil {
			m.own = map[string]string{}
		}
		m.own[name] = tombstone
		return
	}
	m.forget(name)
}

// forget drops name from own, and own itself once empty: a Go map keeps
// the room it grew to, and a stream catching up fills own with what it
// has not been sent yet (a proxy subscribes to endpoints and routes a
// chunk of clusters and listeners at a time), then empties it name by
// name as they are sent. Kept, that room was ~100 KiB per stream and type
// at 5,000 Services (make bench --large: 542 KiB of heap per proxy).
func (m *versionMap) forget(name string) {
	delete(m.own, name)
	if len(m.own) == 0 {
		m.own = nil
	}
}

// each calls fn for every name the map holds, in no order.
func (m *versionMap) each(fn func(name, version string)) {
	for n, v := range m.own {
		if v != tombstone {
			fn(n, v)
		}
	}
	for n, e := range m.base {
		if _, ok := m.own[n]; !ok {
			fn(n, e.version())
		}
	}
}

// diff calls send for every resource of have whose version the map does
// not hold (a name it lacks, or holds at another version), and gone for
// every name it holds that have lacks. A map over have itself (a stream
// that was sent have but for a few names: a catch-up in steps, a
// subscription that grew) differs from it only in own, so only own is
// walked, not all of have.
func (m *versionMap) diff(have map[string]*encoded, send func(name string, e *encoded), gone func(name string)) {
	if sameMap(m.base, have) {
		for n, v := range m.own {
			e, ok := have[n]
			switch {
			case !ok:
				if v != tombstone {
					gone(n)
				}
			case v != e.version():
				send(n, e)
			}
		}
		return
	}
	for n, e := range have {
		if v, _ := m.get(n); v != e.version() {
			send(n, e)
		}
	}
	m.each(func(n, _ string) {
		if _, ok := have[n]; !ok {
			gone(n)
		}
	})
}

// empty says whether the map holds nothing.
func (m *versionMap) empty() bool { return len(m.own) == 0 && len(m.base) == 0 }

// isBase says whether the map is exactly base.
func (m *versionMap) isBase(base map[string]*encoded) bool {
	return len(m.own) == 0 && sameMap(m.base, base)
}

// rebase re-expresses the map over base (a newer snapshot's resources of
// the type): the same content, with own holding only what differs from
// base. When the differences would outnumber the map's own entries (a
// stream that subscribes to a few of many names, as proxyless gRPC
// clients do), the map keeps a plain copy instead (base nil).
func (m *versionMap) rebase(base map[string]*encoded) {
	if sameMap(m.base, base) {
		return
	}
	var own map[string]string
	held := 0
	for n, e := range base {
		v, ok := m.get(n)
		if ok {
			held++
		}
		if ok && v == e.version() {
			continue
		}
		if own == nil {
			own = map[string]string{}
		}
		if ok {
			own[n] = v
		} else {
			own[n] = tombstone
		}
	}
	m.each(func(n, v string) {
		if _, ok := base[n]; !ok {
			held++
			if own == nil {
				own = map[string]string{}
			}
			own[n] = v
		}
	})
	if len(own) > held {
		plain := make(map[string]string, held)
		m.each(func(n, v string) { plain[n] = v })
		m.base, m.own = nil, plain
		return
	}
	m.base, m.own = base, own
}

// sameMap says whether a and b are the same map (not equal content: the
// same one), as snapshots share them.
func sameMap[V any](a, b map[string]V) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if len(a) != len(b) {
		return false
	}
	// Maps are references: writing through one shows in the other only
	// if they are the same. Snapshot maps are immutable, so compare the
	// references without writing.
	return mapPointer(a) == mapPointer(b)
}

func mapPointer[V any](m map[string]V) unsafe.Pointer { return reflect.ValueOf(m).UnsafePointer() }
