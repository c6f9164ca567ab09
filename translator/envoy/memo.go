package envoy

import (
	"runtime"
	"sync"
	"weak"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/weftmesh/weft/translator/ir"
)

// A Service port's endpoints (its ClusterLoadAssignment) are the same for
// every proxy that sees the port, so they are built once per *ir.Port and
// shared by every Build that needs them: 100 groups that see a Service
// hold one message, and the xDS encoder, handed the same pointer again,
// reuses its encoding without marshalling (DESIGN rule 4: a resource
// shared by many proxies is built and marshalled once).
//
// This is memoization, not state: the model is immutable — a translation,
// or translator.UpdateEndpoints for the Services it changes, makes new
// *ir.Port values for whatever changed — so a port's pointer names its
// content, and the result is what loadAssignment would build. Entries are
// weak on the port (one goes when its port is collected) and on the
// message: a message lives while a build, a Shared or a change holds it,
// not for as long as the model — the whole model's endpoints would
// otherwise stay in memory twice (as the model and as messages), 20 MiB
// for 2,000 Services of 10 endpoints, most of a scoped mesh's heap. The
// shared
// messages must never be modified; nothing in weft does (Build's results
// are validated, encoded and compared, never edited).
var claMemo = struct {
	sync.Mutex
	m map[claKey]weak.Pointer[endpointv3.ClusterLoadAssignment]
}{m: map[claKey]weak.Pointer[endpointv3.ClusterLoadAssignment]{}}

// A port whose callers prefer their own zone (ir.Port.PrefersLocalZone)
// has one more variant per caller locality (PreferLocality of the shared
// one): the key names the caller's region and zone, empty for the shared
// assignment every other caller holds.
type claKey struct {
	port         weak.Pointer[ir.Port]
	name         string
	fam          family
	region, zone string
}

// portLoadAssignment is loadAssignment(name, port.Endpoints) with the
// endpoints of family f (famAny: all), built once per port, name and
// family.
func portLoadAssignment(name string, port *ir.Port, f family) *endpointv3.ClusterLoadAssignment {
	return callerLoadAssignment(name, port, f, "", "")
}

// callerLoadAssignment is portLoadAssignment as a caller at (region,
// zone) holds it: with priorities by locality (PreferLocality) when the
// port prefers the caller's zone and the zone is known, the shared one
// otherwise. Each variant is built once per port, name, family and
// locality.
func callerLoadAssignment(name string, port *ir.Port, f family, region, zone string) *endpointv3.ClusterLoadAssignment {
	if zone == "" || !port.PrefersLocalZone() {
		region, zone = "", ""
	}
	k := claKey{weak.Make(port), name, f, region, zone}
	claMemo.Lock()
	w, ok := claMemo.m[k]
	claMemo.Unlock()
	if c := w.Value(); ok && c != nil {
		return c
	}
	var c *endpointv3.ClusterLoadAssignment
	if zone != "" {
		c = PreferLocality(portLoadAssignment(name, port, f), region, zone)
	} else {
		eps := port.Endpoints
		if f != famAny {
			eps = nil
			for _, e := range port.Endpoints {
				if f.keep(e.Address) {
					eps = append(eps, e)
				}
			}
		}
		c = loadAssignment(name, eps)
	}
	claMemo.Lock()
	defer claMemo.Unlock()
	w, ok = claMemo.m[k]
	if prev := w.Value(); ok && prev != nil {
		return prev // another build got there first: share its
	}
	if !ok {
		runtime.AddCleanup(port, forgetLoadAssignment, k)
	}
	claMemo.m[k] = weak.Make(c)
	return c
}

func forgetLoadAssignment(k claKey) {
	claMemo.Lock()
	defer claMemo.Unlock()
	delete(claMemo.m, k)
}

// memoizedLoadAssignments counts the entries (for tests).
func memoizedLoadAssignments() int {
	claMemo.Lock()
	defer claMemo.Unlock()
	return len(claMemo.m)
}
