package xds

import (
	"fmt"
	"runtime/debug"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// Panics: a bug in building one group's configuration must not take the
// process down — every replica would crash on the same input and loop, and
// with them the fail-closed injection webhook. A panic in a build or patch
// becomes a failed build (the group keeps its last good configuration and
// backs off, like any failed build); one in an update keeps the previous
// model's configurations. Each is counted (weft_panics_total{stage}),
// logged with its stack, and reported to OnPanic (weft-controller makes it
// an Event).

// OnPanic registers fn to hear of each recovered panic: the stage
// (build, patch, update), the group's key if any, and the panic's value.
// Call it before serving; fn must not block.
func (a *ADS) OnPanic(fn func(stage, group string, v any)) { a.onPanic = fn }

// recoverPanic, deferred, records a panic of stage and stops it.
func (a *ADS) recoverPanic(stage, group string) {
	if v := recover(); v != nil {
		a.recordPanic(stage, group, v)
	}
}

// RecoverPanic, deferred by a caller (weft-controller's translation,
// stage "translate"), records a panic as the ADS records its own (metric,
// log, OnPanic) and stops it.
func (a *ADS) RecoverPanic(stage, group string) {
	if v := recover(); v != nil {
		a.recordPanic(stage, group, v)
	}
}

func (a *ADS) recordPanic(stage, group string, v any) {
	a.metrics.panics.WithLabelValues(stage).Inc()
	a.log.Error(fmt.Errorf("panic: %v", v), "recovered a panic; the last good configuration stays", "stage", stage, "group", group, "stack", string(debug.Stack()))
	if a.onPanic != nil {
		a.onPanic(stage, group, v)
	}
}

// buildGroup builds, validates and encodes g's configuration; a panic is
// an error.
func (a *ADS) buildGroup(shared *envoy.Shared, g *group, secrets []*tlsv3.Secret, prev *snapshot) (next *snapshot, changed bool, err error) {
	defer func() {
		if v := recover(); v != nil {
			a.recordPanic("build", string(g.key), v)
			next, changed, err = nil, false, fmt.Errorf("panic while building: %v", v)
		}
	}()
	return encodeSnapshot(a.build(shared, g.proxy), secrets, prev, a.enc)
}

// applyPatch applies a patch to g's snapshot; a panic is an error.
func (a *ADS) applyPatch(pt patcher, prev *snapshot, g *group) (next *snapshot, ok bool, err error) {
	defer func() {
		if v := recover(); v != nil {
			a.recordPanic("patch", string(g.key), v)
			next, ok, err = nil, false, fmt.Errorf("panic while patching: %v", v)
		}
	}()
	next, ok = pt.apply(prev, g.proxy)
	return next, ok, nil
}

// prepareServices is the package's prepareServices; a panic is recorded
// and the change is built in full instead.
func (a *ADS) prepareServices(prev, next *ir.Mesh, ch *ir.Change, shared *envoy.Shared) (pt *servicePatch) {
	defer func() {
		if v := recover(); v != nil {
			a.recordPanic("patch", "", v)
			pt = nil
		}
	}()
	return prepareServices(prev, next, ch, shared, a.enc)
}

// prepareRoutes is the package's prepareRoutes; a panic is recorded and
// the change is built in full instead.
func (a *ADS) prepareRoutes(prev, next *ir.Mesh, ch *ir.Change) (pt *routePatch) {
	defer func() {
		if v := recover(); v != nil {
			a.recordPanic("patch", "", v)
			pt = nil
		}
	}()
	return prepareRoutes(prev, next, ch, a.enc)
}
