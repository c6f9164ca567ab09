package translator

import (
	"fmt"
	"strings"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

func (t *translation) trafficSplit(ts *v1alpha1.TrafficSplit, ps *policyStatus, ref *ir.PolicyRef) {
	root := t.byKey[ir.ServiceKey{Namespace: ts.Namespace, Name: ts.Spec.RootService.Name}]
	if root == nil {
		ps.unresolved(v1alpha1.ReasonTargetNotFound, "spec.rootService.name: Service %q does not exist in namespace %s; create it or correct the name",
			ts.Spec.RootService.Name, ts.Namespace)
		return
	}
	ports := root.Ports
	if p := ts.Spec.RootService.Port; p != nil {
		rp := root.Port(*p)
		if rp == nil {
			ps.unresolved(v1alpha1.ReasonPortNotFound, "spec.rootService.port: Service %s has no port %d; use one of %s", root.Key.Name, *p, portList(root))
			return
		}
		ports = []*ir.Port{rp}
	}
	matches, err := splitMatches(ts.Spec.Matches)
	if err != nil {
		// The split is the TrafficSplit's only rule: it is left out whole,
		// since dropping one match condition would widen it.
		ps.reject(v1alpha1.ReasonInvalid, "%v; until it is fixed, this TrafficSplit routes nothing", err)
		return
	}
	fault := splitFault(ts.Spec.Fault)
	if (fault != nil || ts.Spec.Mirror != nil) && len(ports) == 1 && !ports[0].Protocol.IsHTTP() {
		// Said rather than silently ignored, as for matches.
		ps.reject(v1alpha1.ReasonInvalid, "%s: port %d of Service %s is TCP, where faults and mirrors cannot apply; remove them or set the port's appProtocol to http",
			faultOrMirror(ts), ports[0].Port, root.Key.Name)
		return
	}
	var mirrorless []string
	for _, port := range ports {
		if !port.Protocol.IsHTTP() && len(matches) > 0 {
			if len(ports) == 1 {
				ps.reject(v1alpha1.ReasonInvalid, "spec.matches: port %d of Service %s is TCP, where HTTP matches cannot apply; remove the matches or set the port's appProtocol to http",
					port.Port, root.Key.Name)
				return
			}
			continue // matches split the root's HTTP ports only
		}
		var backends []ir.Backend
		var missing uint32
		for i, b := range ts.Spec.Backends {
			weight := v1alpha1.DefaultBackendWeight
			if b.Weight != nil {
				weight = *b.Weight
			}
			field := fmt.Sprintf("spec.backends[%d]", i)
			bp := port.Port
			if b.Port != nil {
				bp = *b.Port
			}
			svc := t.byKey[ir.ServiceKey{Namespace: ts.Namespace, Name: b.Name}]
			switch {
			case svc == nil:
				ps.unresolved(v1alpha1.ReasonBackendNotFound, "%s.name: Service %q does not exist in namespace %s; its share of requests gets HTTP 503 until it does",
					field, b.Name, ts.Namespace)
				missing += uint32(max(weight, 0))
				continue
			case svc.Port(bp) == nil:
				ps.unresolved(v1alpha1.ReasonPortNotFound, "%s.port: Service %s has no port %d; use one of %s (its share of requests gets HTTP 503 meanwhile)",
					field, b.Name, bp, portList(svc))
				missing += uint32(max(weight, 0))
				continue
			case weight <= 0:
				continue // a weight-0 backend receives nothing: leave it out
			}
			backends = append(backends, ir.Backend{Service: svc.Key, Port: bp, Weight: uint32(weight)})
		}
		if missing > 0 {
			backends = append(backends, ir.Backend{Unresolved: true, Weight: missing})
		}
		if len(backends) == 0 {
			ps.reject(v1alpha1.ReasonInvalid, "spec.backends: no backend has a weight above 0; give the version that should serve traffic a positive weight")
			return
		}
		route := &ir.Route{Source: ref, Matches: matches, Backends: backends}
		if port.Protocol.IsHTTP() {
			// A TCP port of a split over every port keeps its weights
			// (tcp_proxy); faults and mirrors are HTTP's.
			route.Fault = fault
			m := t.splitMirror(ts, ps, port)
			if !ps.ok() {
				return
			}
			if m != nil {
				route.Mirrors = []ir.Mirror{*m}
				mirrorless = append(mirrorless, fmt.Sprintf("Service %s port %d", root.Key.Name, port.Port))
			}
		}
		t.addSplit(ps, root, port, route)
	}
	if len(mirrorless) > 0 {
		// gRPC-Go's xDS client has no request mirroring (its RouteAction
		// reading, unmarshal_rds.go, skips request_mirror_policies).
		ps.proxyless = fmt.Sprintf("Proxyless gRPC clients (pods annotated %s: grpc) calling %s do not apply spec.mirror: gRPC has no request mirroring, so their calls are not copied to Service %s. Sidecars apply the whole split; proxyless clients apply the rest (backends, spec.fault).",
			dataplane.AnnotationProxyless, strings.Join(mirrorless, ", "), ts.Spec.Mirror.Backend.Name)
	}
}

func faultOrMirror(ts *v1alpha1.TrafficSplit) string {
	if ts.Spec.Fault != nil {
		return "spec.fault"
	}
	return "spec.mirror"
}

// splitFault is a TrafficSplit's fault injection; nil when it injects
// nothing (no fault, or every percentage 0).
func splitFault(f *v1alpha1.FaultInjection) *ir.Fault {
	if f == nil {
		return nil
	}
	out := &ir.Fault{}
	if d := f.Delay; d != nil && d.Percent > 0 {
		fd := d.FixedDelay
		out.DelayPercent, out.Delay = uint32(d.Percent), duration(&fd)
		if out.Delay == 0 {
			out.DelayPercent = 0
		}
	}
	if a := f.Abort; a != nil && a.Percent > 0 {
		switch {
		case a.GRPCStatus != nil:
			code, ok := v1alpha1.GRPCStatusCodes[*a.GRPCStatus]
			if ok {
				out.AbortPercent, out.GRPCStatus = uint32(a.Percent), &code
			}
		case a.HTTPStatus != nil:
			out.AbortPercent, out.HTTPStatus = uint32(a.Percent), uint32(*a.HTTPStatus)
		}
	}
	if out.DelayPercent == 0 && out.AbortPercent == 0 {
		return nil
	}
	return out
}

// splitMirror resolves a TrafficSplit's mirror for one root port. A
// missing Service or port turns mirroring off for it (ResolvedRefs=False,
// naming the field); the split itself still applies.
func (t *translation) splitMirror(ts *v1alpha1.TrafficSplit, ps *policyStatus, port *ir.Port) *ir.Mirror {
	m := ts.Spec.Mirror
	if m == nil {
		return nil
	}
	pct := uint32(100)
	if m.Percent != nil {
		pct = uint32(max(*m.Percent, 0))
	}
	if pct == 0 {
		return nil
	}
	bp := port.Port
	if m.Backend.Port != nil {
		bp = *m.Backend.Port
	}
	svc := t.byKey[ir.ServiceKey{Namespace: ts.Namespace, Name: m.Backend.Name}]
	switch {
	case svc == nil:
		ps.unresolved(v1alpha1.ReasonBackendNotFound, "spec.mirror.backend.name: Service %q does not exist in namespace %s; nothing is mirrored until it does (the split applies)", m.Backend.Name, ts.Namespace)
		return nil
	case svc.Port(bp) == nil:
		ps.unresolved(v1alpha1.ReasonPortNotFound, "spec.mirror.backend.port: Service %s has no port %d; use one of %s (nothing is mirrored meanwhile; the split applies)", m.Backend.Name, bp, portList(svc))
		return nil
	case !svc.Port(bp).Protocol.IsHTTP():
		ps.reject(v1alpha1.ReasonInvalid, "spec.mirror.backend: port %d of Service %s is TCP; mirrored requests are HTTP: pick an HTTP port or set its appProtocol to http", bp, m.Backend.Name)
		return nil
	}
	return &ir.Mirror{Service: svc.Key, Port: bp, Numerator: pct, Denominator: 100}
}

func splitMatches(in []v1alpha1.HTTPMatch) ([]ir.Match, error) {
	var out []ir.Match
	for i, m := range in {
		var im ir.Match
		if m.Path != nil {
			switch m.Path.Type {
			case v1alpha1.PathMatchExact:
				im.PathExact = m.Path.Value
			case v1alpha1.PathMatchPathPrefix, "":
				if err := pathPrefixProblem(fmt.Sprintf("spec.matches[%d].path.value", i), m.Path.Value); err != nil {
					return nil, err
				}
				im.PathPrefix = m.Path.Value
			default:
				return nil, fmt.Errorf("spec.matches[%d].path.type: %q is not Exact or PathPrefix", i, m.Path.Type)
			}
		}
		if m.Method != nil {
			im.Method = string(*m.Method)
		}
		for j, h := range m.Headers {
			regex := h.Type == v1alpha1.HeaderMatchRegularExpression
			if regex {
				// A regex a proxy refuses would make it reject the whole
				// route configuration, every other route included.
				if err := regexProblem(fmt.Sprintf("spec.matches[%d].headers[%d].value", i, j), h.Value); err != nil {
					return nil, err
				}
			}
			im.Headers = append(im.Headers, ir.HeaderMatch{Name: strings.ToLower(h.Name), Value: h.Value, Regex: regex})
		}
		out = append(out, im)
	}
	return out, nil
}
