package translator

import (
	"fmt"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator/ir"
)

// serviceTarget is what a BackendTrafficPolicy or RateLimitPolicy holds:
// a Service, or one port of it.
type serviceTarget struct {
	svc  ir.ServiceKey
	port string // "" for the whole Service
}

// serviceAttachment is a resolved target.
type serviceAttachment struct {
	key  serviceTarget
	svc  *ir.Service
	port *ir.Port // nil for the whole Service
}

// targetRef is one entry of such a policy's targetRefs; each kind has its
// own type of the same shape.
type targetRef struct {
	v1alpha1.PolicyTargetReference
	sectionName *string
}

// resolveServiceTargets resolves the targets of a policy of kind in
// namespace ns, with the rules of docs/design/110 that both kinds share: a
// target that does not exist (a Service, or a port by sectionName) is
// reported and skipped; a target another policy of the kind already holds
// (owner, filled in age order by the caller) makes this one Conflicted, and
// it then applies to none of its targets (ok false), as a target of the
// wrong kind does.
func (t *translation) resolveServiceTargets(kind, ns string, refs []targetRef, owner map[serviceTarget]ir.PolicyRef, ps *policyStatus) (apply []serviceAttachment, ok bool) {
	for i, tr := range refs {
		field := fmt.Sprintf("spec.targetRefs[%d]", i)
		if tr.Group != v1alpha1.GroupCore || tr.Kind != "Service" {
			ps.reject(v1alpha1.ReasonInvalid, "%s: a %s targets a Service (group \"\"), not %s %q", field, kind, tr.Kind, tr.Group)
			return nil, false
		}
		key := serviceTarget{svc: ir.ServiceKey{Namespace: ns, Name: tr.Name}}
		if tr.sectionName != nil {
			key.port = *tr.sectionName
		}
		svc := t.byKey[key.svc]
		if svc == nil {
			ps.unresolved(v1alpha1.ReasonTargetNotFound, "%s: Service %q does not exist in namespace %s; the policy applies to its other targets", field, tr.Name, ns)
			continue
		}
		r := serviceAttachment{key: key, svc: svc}
		if key.port != "" {
			for _, p := range svc.Ports {
				if p.Name == key.port {
					r.port = p
				}
			}
			if r.port == nil {
				ps.unresolved(v1alpha1.ReasonPortNotFound, "%s.sectionName: Service %s has no port named %q (its port names: %s); the policy applies to its other targets", field, tr.Name, key.port, portNames(svc))
				continue
			}
		}
		if prev, taken := owner[key]; taken {
			what := "Service " + tr.Name
			if key.port != "" {
				what = fmt.Sprintf("port %s of Service %s", key.port, tr.Name)
			}
			ps.reject(v1alpha1.ReasonConflicted, "%s: %s already has the older %s; one %s per target: this one applies nowhere until it no longer targets what the other does", field, what, prev, kind)
			return nil, false
		}
		apply = append(apply, r)
	}
	return apply, true
}

// ports records the attachment in owner and returns the ports it gives
// the policy: its port, or every port of its Service that no port target
// holds (a port target beats a Service target, whatever their ages).
func (r serviceAttachment) ports(owner map[serviceTarget]ir.PolicyRef, ref ir.PolicyRef) []*ir.Port {
	owner[r.key] = ref
	if r.port != nil {
		return []*ir.Port{r.port}
	}
	var out []*ir.Port
	for _, p := range r.svc.Ports {
		if _, byPort := owner[serviceTarget{r.key.svc, p.Name}]; byPort && p.Name != "" {
			continue
		}
		out = append(out, p)
	}
	return out
}
